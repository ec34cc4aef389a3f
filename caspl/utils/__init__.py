from .io import atomic_save, atomic_write_text
from .logging import setup_logger
from .seed import get_rng_state, set_random_seed, set_rng_state

__all__ = ["atomic_save", "atomic_write_text", "setup_logger", "get_rng_state", "set_random_seed", "set_rng_state"]
