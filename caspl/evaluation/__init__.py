from .classification import Classification
from .results import harmonic_mean, mean_std, run_accuracy, seed_accuracies

__all__ = ["Classification", "harmonic_mean", "mean_std", "run_accuracy", "seed_accuracies"]
