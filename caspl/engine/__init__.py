from .optim import EpochLR, build_optimizer
from .prompt_trainer import PromptTrainer
from .trainer import Trainer, checkpoint_file, evaluated_checkpoint, learnable_state, read_checkpoint

__all__ = ["EpochLR", "PromptTrainer", "Trainer", "build_optimizer", "checkpoint_file", "evaluated_checkpoint",
           "learnable_state", "read_checkpoint"]
