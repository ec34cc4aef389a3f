"""Reading finished runs back: the test accuracy of an output directory, harmonic means, and
means over seeds. A run that has no result yet is reported as missing, never silently skipped."""
import glob
import json
import os
import statistics


def harmonic_mean(base, new):
    """The base-to-new protocol's HM of base and new accuracy (0 when either is 0)."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def run_accuracy(output_dir):
    """The test accuracy (%) written by a finished run to results.json, or None if it has none."""
    path = os.path.join(output_dir, "results.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return float(json.load(f)["accuracy"])


def seed_accuracies(pattern):
    """{run directory: accuracy or None} for every directory matching a glob pattern."""
    return {d: run_accuracy(d) for d in sorted(glob.glob(pattern)) if os.path.isdir(d)}


def mean_std(values):
    """Mean and population standard deviation (the reference parser's convention)."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0
