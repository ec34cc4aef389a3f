"""LAMM's class-incremental protocol (LAMM paper, Table 2): the classes split into Set 1 (the
first half of the labels, "base") and Set 2 (the rest, "new"); a method trains on Set 1,
then continues on Set 2, and Set 1 is tested again.

    python tools/class_incremental.py --output-dir OUT/LAMM/seed1 TRAIN.PY-ARGUMENTS ...

runs three train.py stages in OUT (each skipped when its result exists; an interrupted
training resumes):
    set1/             trained and tested on Set 1                      -> Set 1 before Set 2
    set2/             trained on Set 2, starting from set1/'s modules   -> Set 2
                      (MODEL.INIT_WEIGHTS; per-class ones start afresh)
    set1_after_set2/  Set 1 tested with the model after Set 2           -> Set 1
                      (--model-dir set1/ --model-dir set2/: shared prompts from set2/,
                      per-class weights such as LAMM's label embeddings from set1/)
and prints Set 1 / Set 2 / Set 1 before Set 2 / degradation (Set 1 minus Set 1 before).
Methods whose learned weights are all per class (LAMM) cannot forget: degradation 0.

    python tools/class_incremental.py --table OUT [--markdown]

prints one row per experiment found under OUT (seed*/ runs averaged, missing stages flagged)."""
import argparse
import os
import subprocess
import sys

from tabulate import tabulate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from caspl.evaluation.results import SEED_DIR, run_accuracy  # noqa: E402

STAGES = ("set1", "set2", "set1_after_set2")
COLUMNS = ["Set 1", "Set 2", "Set 1 before Set 2", "degradation"]


def stage_commands(out, train_args):
    """The train.py argument lists of the three stages (train.py's flags go before the
    trailing KEY VALUE options, the stage's options after the user's)."""
    set1, set2, after = (os.path.join(out, s) for s in STAGES)
    return {
        "set1": ["--output-dir", set1, *train_args, "DATASET.SUBSAMPLE_CLASSES", "base"],
        "set2": ["--output-dir", set2, *train_args, "DATASET.SUBSAMPLE_CLASSES", "new", "MODEL.INIT_WEIGHTS", set1],
        "set1_after_set2": ["--output-dir", after, "--eval-only", "--model-dir", set1, "--model-dir", set2,
                            *train_args, "DATASET.SUBSAMPLE_CLASSES", "base"],
    }


def accuracies(out):
    """{stage: accuracy or None} of one run directory."""
    return {s: run_accuracy(os.path.join(out, s)) for s in STAGES}


def row(acc):
    """Set 1 (after Set 2), Set 2, Set 1 before Set 2, degradation; None where unknown."""
    before, set2, after = acc["set1"], acc["set2"], acc["set1_after_set2"]
    return [after, set2, before, None if None in (after, before) else after - before]


def run(out, train_args, python=sys.executable):
    for stage, args in stage_commands(out, train_args).items():
        if run_accuracy(os.path.join(out, stage)) is not None:
            print(f"[{stage}] finished in {os.path.join(out, stage)}, skipping", flush=True)
            continue
        print(f"[{stage}] train.py -> {os.path.join(out, stage)}", flush=True)
        done = subprocess.run([python, os.path.join(REPO, "train.py"), *args])
        if done.returncode != 0:
            sys.exit(f"error: stage {stage} failed (exit status {done.returncode}); "
                     f"see {os.path.join(out, stage, 'log.txt')}")
    return accuracies(out)


def experiments(root):
    """{experiment directory: {seed run directory: accuracies}} for every run under root
    (a run is a directory holding set1/; seed*/ runs group under their parent)."""
    found = {}
    for current, dirs, _ in os.walk(root):
        if "set1" in dirs:
            name = os.path.basename(current)
            experiment = os.path.dirname(current) if SEED_DIR.match(name) else current
            found.setdefault(experiment, {})[current] = accuracies(current)
            dirs[:] = []
    return dict(sorted(found.items()))


def table(root, markdown=False):
    rows, problems = [], []
    for experiment, runs in experiments(root).items():
        cells = [row(acc) for acc in runs.values()]
        for run_dir, acc in runs.items():
            missing = [s for s, a in acc.items() if a is None]
            if missing:
                problems.append(f"{run_dir}: no result for {', '.join(missing)}")
        complete = [c for c in cells if None not in c]
        means = [sum(c[i] for c in complete) / len(complete) for i in range(4)] if complete else [None] * 4
        label = os.path.relpath(experiment, root)
        rows.append([experiment if label.startswith("..") else label, f"{len(complete)}/{len(cells)}", *means])
    text = tabulate(rows, headers=["experiment", "seeds", *COLUMNS], floatfmt=".2f",
                    tablefmt="github" if markdown else "simple", missingval="-")
    return text, problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--output-dir", help="this run's folder (one method, dataset and seed)")
    parser.add_argument("--table", metavar="ROOT", help="print the table of every run under ROOT and stop")
    parser.add_argument("--markdown", action="store_true")
    args, train_args = parser.parse_known_args(argv)
    if args.table:
        if not os.path.isdir(args.table):
            sys.exit(f"error: no folder {args.table}")
        root = args.table
    elif args.output_dir:
        root = os.path.abspath(args.output_dir)
        run(root, train_args)
    else:
        parser.error("give --output-dir (and train.py's arguments) or --table ROOT")
    text, problems = table(root, args.markdown)
    print(text)
    for p in problems:
        print(f"  missing: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
