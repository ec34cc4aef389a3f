"""Read test accuracies out of run logs and average them over seeds.

One experiment, as the reference tool is used (DIR holds seed*/log.txt):

    python tools/parse_test_res.py output/base2new/train_base/dtd/shots_16/CoOp/vit_b16_ep50/
    python tools/parse_test_res.py output/base2new/test_new/dtd/shots_16/CoOp/vit_b16_ep50/ --test-log

prints each seed's accuracy and `* accuracy: M% +- S%` (population std over seeds; --ci95
prints the 95% confidence interval instead). A training log counts once it has
"Finish training" and a result block after it; with --test-log, the last "=> result" block.
(In --tree mode a log with training progress lines is read as a training log, others as
test logs.)

A whole results tree at once:

    python tools/parse_test_res.py --tree output/ [--seeds 1 2 3] [--markdown]

finds every experiment directory (one holding seed*/ runs) and prints one row each; runs
under base2new/train_base and base2new/test_new are paired into a base / new / HM table per
method with one row per dataset and the average over datasets. A seed in --seeds that is
missing, or a run without a result, is flagged and its experiment is not averaged over the
seeds that remain."""
import argparse
import math
import os
import sys

from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caspl.evaluation import Experiment, find_experiments, harmonic_mean, mean_std  # noqa: E402

def ci95(values):
    return 1.96 * mean_std(values)[1] / math.sqrt(len(values))


def fmt(summary):
    return "-" if summary is None else f"{summary[0]:.2f} +- {summary[1]:.2f}"


def base2new_tables(root, seeds):
    """{method path: [(dataset, base (mean, std) | None, new ... | None, problems)]} for runs laid
    out as base2new/{train_base,test_new}/DATASET/<method path>/seedS."""
    tables = {}
    base_root = os.path.join(root, "base2new", "train_base")
    new_root = os.path.join(root, "base2new", "test_new")
    for base_dir in find_experiments(base_root):
        rel = os.path.relpath(base_dir, base_root)
        dataset, _, method = rel.partition(os.sep)
        base = Experiment(base_dir, seeds=seeds)
        new_dir = os.path.join(new_root, rel)
        new = Experiment(new_dir, seeds=seeds) if os.path.isdir(new_dir) else None
        problems = [f"base {p}" for p in base.problems]
        problems += ["new: no runs"] if new is None else [f"new {p}" for p in new.problems]
        tables.setdefault(method, []).append((dataset, base.summary(), new and new.summary(), problems))
    return tables


def base2new_rows(entries):
    """Table rows (dataset, base, new, HM, flags) and the average row over the datasets; the
    average's HM is HM(mean base, mean new), as the papers compute it, and it is left out when
    any dataset is incomplete."""
    rows = []
    for dataset, base, new, problems in sorted(entries):
        hm = f"{harmonic_mean(base[0], new[0]):.2f}" if base and new else "-"
        rows.append([dataset, fmt(base), fmt(new), hm, "; ".join(problems)])
    complete = [(b, n) for _, b, n, p in entries if b and n and not p]
    if complete and len(complete) == len(entries):
        mb = sum(b[0] for b, _ in complete) / len(complete)
        mn = sum(n[0] for _, n in complete) / len(complete)
        rows.append([f"Average ({len(complete)})", f"{mb:.2f}", f"{mn:.2f}", f"{harmonic_mean(mb, mn):.2f}", ""])
    else:
        rows.append([f"Average ({len(entries)})", "-", "-", "-", "incomplete datasets: not averaged"])
    return rows


def parse_one(directory, test_log, use_ci95):
    if not os.path.isdir(directory):
        print(f"error: no folder {directory}", file=sys.stderr)
        return 2
    exp = Experiment(directory, test_log=test_log)
    if not exp.accuracies:
        print(f"error: no seed*/ folders in {directory}", file=sys.stderr)
        return 2
    for seed, acc in exp.accuracies.items():
        print(f"seed{seed}: " + ("no result (unfinished)" if acc is None else f"accuracy {acc:.2f}%"))
    values = exp.values()
    if not values:
        print("* no finished run")
        return 1
    mean, std = mean_std(values)
    spread = ci95(values) if use_ci95 else std
    print(f"===\nSummary of directory: {directory} ({len(values)} runs)")
    print(f"* accuracy: {mean:.2f}% +- {spread:.2f}%")
    if exp.problems:
        print("flagged: " + ", ".join(exp.problems))
    return 1 if exp.problems else 0


def parse_tree(root, seeds, markdown):
    style = "github" if markdown else "simple"
    flagged = False
    rows = []
    for directory in find_experiments(root):
        exp = Experiment(directory, seeds=seeds)
        flagged |= not exp.complete
        rows.append([os.path.relpath(directory, root), len(exp.values()), fmt(exp.summary()),
                     ", ".join(exp.problems)])
    if not rows:
        print(f"error: no experiment (a folder with seed*/ runs) under {root}", file=sys.stderr)
        return 2
    print(tabulate(rows, headers=["experiment", "runs", "accuracy", "flags"], tablefmt=style, disable_numparse=True))
    for method, entries in sorted(base2new_tables(root, seeds).items()):
        print(f"\nBase-to-new: {method}")
        table = base2new_rows(entries)
        flagged |= any(r[4] for r in table)
        print(tabulate(table, headers=["dataset", "base", "new", "HM", "flags"], tablefmt=style,
                       disable_numparse=True))
    return 1 if flagged else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory", nargs="?", help="an experiment directory holding seed*/log.txt")
    ap.add_argument("--test-log", action="store_true", help="the logs are --eval-only runs")
    ap.add_argument("--ci95", action="store_true", help="95%% confidence interval instead of the std")
    ap.add_argument("--tree", metavar="ROOT", help="parse every experiment under ROOT")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds every tree experiment must have")
    ap.add_argument("--markdown", action="store_true", help="Markdown tables (with --tree)")
    args = ap.parse_args(argv)
    if bool(args.tree) == bool(args.directory):
        ap.error("give either an experiment DIRECTORY or --tree ROOT")
    if args.tree:
        return parse_tree(args.tree, args.seeds, args.markdown)
    return parse_one(args.directory, args.test_log, args.ci95)


if __name__ == "__main__":
    sys.exit(main())
