from .optim import EpochLR, build_optimizer
from .prompt_trainer import PromptTrainer
from .trainer import Trainer, learnable_state, read_checkpoint

__all__ = ["EpochLR", "PromptTrainer", "Trainer", "build_optimizer", "learnable_state", "read_checkpoint"]
