from .optim import EpochLR, build_optimizer
from .trainer import Trainer, learnable_state, read_checkpoint

__all__ = ["EpochLR", "Trainer", "build_optimizer", "learnable_state", "read_checkpoint"]
