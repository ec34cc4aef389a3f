"""The papers' tables from a results tree written by the protocol scripts (scripts/<METHOD>/):

    python tools/make_tables.py output/ [--table base2new few_shot cross_dataset dg]
                                [--published] [--markdown] [--plot few_shot.png] [--seeds 1 2 3]

- base2new: base, new and HM per dataset and method, and the average over the datasets
  (HM of the averaged base and new, as the papers compute it);
- few_shot: accuracy per dataset and number of shots, and the average over the datasets;
- cross_dataset / dg: the ImageNet-trained models on the other datasets / on the ImageNet
  variants, with the source accuracy and the average over the targets.
Each cell is a mean over --seeds; a missing seed or an unfinished run leaves the cell "-"
(and the averages that need it) and is listed under the table. --published adds the
numbers the papers report (caspl/evaluation/published.json) and our difference to them.
--plot writes a PNG of average accuracy against shots, one line per method."""
import argparse
import json
import os
import sys

from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caspl.evaluation import Experiment, find_experiments, harmonic_mean  # noqa: E402

PUBLISHED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "caspl", "evaluation",
                         "published.json")
DG_TARGETS = ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
SHOTS = ["1", "2", "4", "8", "16"]


class Cells:
    """Mean accuracies keyed by (method, row, column), and the runs that kept a cell empty."""

    def __init__(self, seeds):
        self.seeds, self.values, self.problems = seeds, {}, []

    def add(self, key, directory):
        exp = Experiment(directory, seeds=self.seeds)
        if exp.complete:
            values = exp.values()
            self.values[key] = sum(values) / len(values)
        else:
            self.problems += [f"{directory}: {p}" for p in exp.problems or ["no runs"]]

    def get(self, key):
        return self.values.get(key)


def num(x):
    return "-" if x is None else f"{x:.2f}"


def mean_or_none(values):
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def trainer_of(method):
    return method.split("/")[0]


# ------------------------------------------------------------------ reading the tree

def read_base2new(root, seeds):
    base, new = Cells(seeds), Cells(seeds)
    for side, cells in (("train_base", base), ("test_new", new)):
        top = os.path.join(root, "base2new", side)
        for d in find_experiments(top):
            dataset, _shots, *method = os.path.relpath(d, top).split(os.sep)
            cells.add(("/".join(method), dataset), d)
    return base, new


def read_few_shot(root, seeds):
    cells = Cells(seeds)
    top = os.path.join(root, "few_shot")
    for d in find_experiments(top):
        dataset, shots, *method = os.path.relpath(d, top).split(os.sep)
        cells.add(("/".join(method), dataset, shots.replace("shots_", "")), d)
    return cells


def read_transfer(root, seeds):
    """(source accuracies {(method, source)}, target accuracies {(method, target)})."""
    top = os.path.join(root, "cross_dataset")
    source, target = Cells(seeds), Cells(seeds)
    for d in find_experiments(top):
        parts = os.path.relpath(d, top).split(os.sep)
        if parts[0] == "evaluation":  # evaluation/METHOD/CFG_Kshots/TARGET
            target.add(("/".join(parts[1:3]), parts[3]), d)
        else:  # SOURCE/METHOD/CFG_Kshots
            source.add(("/".join(parts[1:3]), "source"), d)
    return source, target


# ------------------------------------------------------------------ tables

def base2new_table(base, new, published=None):
    methods = sorted({k[0] for k in list(base.values) + list(new.values)})
    datasets = sorted({k[1] for k in list(base.values) + list(new.values)})
    headers = ["method", "dataset", "base", "new", "HM"] + (["paper base", "paper new", "paper HM", "HM diff"]
                                                           if published else [])
    rows = []
    for m in methods:
        b = [base.get((m, d)) for d in datasets]
        n = [new.get((m, d)) for d in datasets]
        for d, bd, nd in list(zip(datasets, b, n)) + [(f"Average ({len(datasets)})", mean_or_none(b), mean_or_none(n))]:
            hm = harmonic_mean(bd, nd) if bd is not None and nd is not None else None
            row = [m, d, num(bd), num(nd), num(hm)]
            if published:
                key = "average" if d.startswith("Average") else d
                paper = published.get("base2new", {}).get(trainer_of(m), {}).get(key)
                phm = harmonic_mean(*paper) if paper else None
                row += [num(paper and paper[0]), num(paper and paper[1]), num(phm),
                        num(hm - phm) if hm is not None and phm is not None else "-"]
            rows.append(row)
    return headers, rows


def few_shot_table(cells, published=None):
    methods = sorted({k[0] for k in cells.values})
    datasets = sorted({k[1] for k in cells.values})
    headers = ["method", "dataset"] + [f"{k} shots" for k in SHOTS]
    rows = []
    for m in methods:
        per = {d: [cells.get((m, d, k)) for k in SHOTS] for d in datasets}
        for d in datasets:
            rows.append([m, d] + [num(v) for v in per[d]])
        avg = [mean_or_none([per[d][i] for d in datasets]) for i in range(len(SHOTS))]
        rows.append([m, f"Average ({len(datasets)})"] + [num(v) for v in avg])
        if published:
            paper = published.get("few_shot", {}).get(trainer_of(m), {}).get("average")
            if paper:
                rows.append([m, "paper average"] + [num(paper.get(k)) for k in SHOTS])
                rows.append([m, "diff"] + [num(a - paper[k]) if a is not None and k in paper else "-"
                                           for a, k in zip(avg, SHOTS)])
    return headers, rows


def transfer_table(source, target, dg, published=None):
    targets = sorted({k[1] for k in target.values if (k[1] in DG_TARGETS) == dg})
    methods = sorted({k[0] for k in target.values if k[1] in targets})
    headers = ["method", "source"] + targets + ["target avg"]
    rows = []
    for m in methods:
        values = [source.get((m, "source"))] + [target.get((m, t)) for t in targets]
        rows.append([m] + [num(v) for v in values] + [num(mean_or_none(values[1:]))])
        if published:
            paper = published.get("dg" if dg else "cross_dataset", {}).get(trainer_of(m))
            if paper:
                pv = [paper.get("imagenet")] + [paper.get(t) for t in targets]
                rows.append(["  paper"] + [num(v) for v in pv] + [num(mean_or_none(pv[1:]))])
    return headers, rows


def few_shot_figure(cells):
    """A matplotlib figure of average accuracy against shots, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({k[1] for k in cells.values})
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for m in sorted({k[0] for k in cells.values}):
        points = [(int(k), mean_or_none([cells.get((m, d, k)) for d in datasets])) for k in SHOTS]
        points = [(k, v) for k, v in points if v is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=trainer_of(m))
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(k) for k in SHOTS], SHOTS)
    ax.set_xlabel("shots per class")
    ax.set_ylabel(f"accuracy (%), average over {len(datasets)} datasets")
    ax.set_title("Few-shot classification")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_few_shot(cells, path):
    import matplotlib.pyplot as plt

    fig = few_shot_figure(cells)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="the OUT folder of the protocol scripts")
    ap.add_argument("--table", nargs="+", choices=["base2new", "few_shot", "cross_dataset", "dg"],
                    default=["base2new", "few_shot", "cross_dataset", "dg"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--published", action="store_true", help="add the papers' numbers and the difference")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--plot", metavar="PNG", help="accuracy against shots, one line per method")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"error: no results folder {args.root}", file=sys.stderr)
        return 2
    published = None
    if args.published:
        with open(PUBLISHED) as f:
            published = json.load(f)
    style = "github" if args.markdown else "simple"
    problems = []

    def show(title, headers, rows, cells):
        print(f"\n{title}")
        print(tabulate(rows, headers=headers, tablefmt=style, disable_numparse=True) if rows else "(no runs)")
        problems.extend(p for c in cells for p in c.problems)

    if "base2new" in args.table:
        base, new = read_base2new(args.root, args.seeds)
        show("Base-to-new generalisation", *base2new_table(base, new, published), [base, new])
    few = None
    if "few_shot" in args.table or args.plot:
        few = read_few_shot(args.root, args.seeds)
    if "few_shot" in args.table:
        show("Few-shot classification (all classes)", *few_shot_table(few, published), [few])
    if {"cross_dataset", "dg"} & set(args.table):
        source, target = read_transfer(args.root, args.seeds)
        for table, dg, title in (("cross_dataset", False,
                                  "Cross-dataset transfer (trained on the source, all classes)"),
                                 ("dg", True, "Domain generalisation (trained on ImageNet)")):
            if table in args.table:
                show(title, *transfer_table(source, target, dg, published), [source, target])
    if args.plot:
        plot_few_shot(few, args.plot)
        print(f"\nwrote {args.plot}")
    if problems:
        print("\nNot averaged (missing or unfinished runs):")
        for p in sorted(set(problems)):  # a run missing from both transfer tables is listed once
            print(f"  {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
