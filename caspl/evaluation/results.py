"""Reading finished runs back: the test accuracy of an output directory (results.json) or of
a log in Dassl's format, experiments of several seeds, harmonic means and means over seeds. A
run that has no result yet is reported as missing, never silently skipped."""
import glob
import json
import os
import re
import statistics
from collections import OrderedDict


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


SEED_DIR = re.compile(r"^seed(-?\d+)$")
ACCURACY = re.compile(r"^\* accuracy: ([.\d]+)%", re.M)


def log_accuracy(path, test_log=None):
    """The final test accuracy in a log.txt, or None when the run has not finished. test_log
    None: a log with training progress lines ("epoch [") is a training log."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    if test_log is None:
        test_log = "epoch [" not in text
    if not test_log:
        end = text.rfind("Finish training")
        if end < 0:
            return None
        text = text[end:]
    start = text.rfind("=> result")
    if start < 0:
        return None
    found = ACCURACY.search(text, start)
    return float(found.group(1)) if found else None


class Experiment:
    """The seed runs of one directory: accuracies, and what is missing or unfinished."""

    def __init__(self, directory, test_log=None, seeds=None):
        self.directory = directory
        runs = {}
        for name in os.listdir(directory):
            m = SEED_DIR.match(name)
            if m and os.path.isdir(os.path.join(directory, name)):
                runs[int(m.group(1))] = log_accuracy(os.path.join(directory, name, "log.txt"), test_log)
        self.accuracies = OrderedDict((s, runs[s]) for s in sorted(runs))
        self.problems = [f"seed{s} unfinished" for s, acc in self.accuracies.items() if acc is None]
        self.problems += [f"seed{s} missing" for s in (seeds or []) if s not in runs]

    @property
    def complete(self):
        return bool(self.accuracies) and not self.problems

    def values(self):
        return [a for a in self.accuracies.values() if a is not None]

    def summary(self):
        """(mean, std) over the seeds, or None when a run is missing or unfinished."""
        return mean_std(self.values()) if self.complete else None


def find_experiments(root):
    """Directories under root (root included) that hold seed*/ run folders."""
    found = []
    for directory, subdirs, _ in os.walk(root):
        if any(SEED_DIR.match(d) for d in subdirs):
            found.append(directory)
            subdirs[:] = [d for d in subdirs if not SEED_DIR.match(d)]
    return sorted(found)
