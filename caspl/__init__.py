"""caspl: Cascade Prompt Learning and the prompt-learning methods it plugs into, on OpenAI CLIP."""
from .errors import CasplError
from .registry import DATASET_REGISTRY, TRAINER_REGISTRY

__version__ = "0.1.0"
__all__ = ["CasplError", "DATASET_REGISTRY", "TRAINER_REGISTRY", "__version__"]
