"""Print a base-to-new table (base, new, HM) from finished runs' results.json files.

    python tools/base2new_table.py \
        --row "PromptSRC" 'out/train_base/.../seed*' 'out/test_new/.../seed*' \
        --row "CasPL_PromptSRC" ... [--markdown]

Each row names the runs on the base and on the new classes by a glob (one directory per seed);
base and new are averaged over seeds (mean +- population std when there are several) and HM
is the harmonic mean of the two averages, as the papers compute it. A row with a missing or
unfinished run is flagged instead of averaged over fewer seeds, and the exit status is 1."""
import argparse
import os
import sys

from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caspl.evaluation import harmonic_mean, mean_std, seed_accuracies  # noqa: E402


def cell(values):
    mean, std = mean_std(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} +- {std:.1f}"


def table_rows(rows):
    """[(name, base cell, new cell, HM cell, note)] for rows of (name, base glob, new glob)."""
    out = []
    for name, base_glob, new_glob in rows:
        base, new = seed_accuracies(base_glob), seed_accuracies(new_glob)
        missing = [d for d, acc in {**base, **new}.items() if acc is None]
        if not base or not new or missing:
            what = ", ".join(missing) if missing else (base_glob if not base else new_glob)
            out.append((name, "-", "-", "-", f"missing or unfinished: {what}"))
            continue
        b, n = list(base.values()), list(new.values())
        seeds = f"{len(b)} seed{'s' * (len(b) > 1)}" if len(b) == len(n) else f"{len(b)} base / {len(n)} new runs"
        out.append((name, cell(b), cell(n), f"{harmonic_mean(mean_std(b)[0], mean_std(n)[0]):.1f}", seeds))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", nargs=3, action="append", required=True, metavar=("NAME", "BASE_GLOB", "NEW_GLOB"))
    ap.add_argument("--markdown", action="store_true", help="a Markdown table instead of plain text")
    args = ap.parse_args(argv)
    rows = table_rows(args.row)
    print(tabulate(rows, headers=["Method", "base", "new", "HM", ""], tablefmt="github" if args.markdown else "simple",
                   disable_numparse=True))
    return 1 if any(r[1] == "-" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
