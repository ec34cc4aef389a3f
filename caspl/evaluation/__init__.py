from .classification import Classification
from .results import (Experiment, find_experiments, harmonic_mean, log_accuracy, mean_std, run_accuracy,
                      seed_accuracies)

__all__ = ["Classification", "Experiment", "find_experiments", "harmonic_mean", "log_accuracy", "mean_std",
           "run_accuracy", "seed_accuracies"]
