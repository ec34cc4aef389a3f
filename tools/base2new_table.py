"""Print a base-to-new table (base, new, HM) from finished runs' results.json files.

    python tools/base2new_table.py \
        --row "PromptSRC" 'out/train_base/.../seed*' 'out/test_new/.../seed*' \
        --row "CasPL_PromptSRC" ... [--markdown] \
        [--gap STUDENT BOOSTED TEACHER] [--lift PromptSRC CasPL_PromptSRC]

Each row names the runs on the base and on the new classes by a glob (one directory per seed);
base and new are averaged over seeds (mean +- population std when there are several) and HM
is the harmonic mean of the two averages, as the papers compute it. With several seeds the
last column lists each seed's HM (base and new runs paired by their directory name) and the
population std of those. A row with a missing or unfinished run is flagged instead of
averaged over fewer seeds, and the exit status is 1.

--gap A B C prints the share of the HM gap from row A to row C that row B closes; --lift X Y
prints HM(Y) - HM(X) next to twice the larger of their per-seed HM stds (repeatable)."""
import argparse
import os
import sys

from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caspl.evaluation import harmonic_mean, mean_std, seed_accuracies  # noqa: E402


def cell(values):
    mean, std = mean_std(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} +- {std:.1f}"


def seed_hms(base, new):
    """Per-seed HM, base and new runs paired by directory name (a single run each pairs too);
    None when they do not pair."""
    if len(base) == len(new) == 1:
        return [harmonic_mean(next(iter(base.values())), next(iter(new.values())))]
    by_name = {os.path.basename(d): acc for d, acc in new.items()}
    names = [os.path.basename(d) for d in base]
    if sorted(names) != sorted(by_name):
        return None
    return [harmonic_mean(acc, by_name[os.path.basename(d)]) for d, acc in base.items()]


class Row:
    """One method's runs: base and new accuracies per run, or what is missing."""

    def __init__(self, name, base_glob, new_glob):
        self.name = name
        base, new = seed_accuracies(base_glob), seed_accuracies(new_glob)
        missing = [d for d, acc in {**base, **new}.items() if acc is None]
        self.problem = None
        if not base or not new or missing:
            self.problem = ("missing or unfinished: "
                            f"{', '.join(missing) if missing else (base_glob if not base else new_glob)}")
            return
        self.base, self.new = list(base.values()), list(new.values())
        self.hm = harmonic_mean(mean_std(self.base)[0], mean_std(self.new)[0])
        self.seed_hm = seed_hms(base, new)

    @property
    def hm_std(self):
        return mean_std(self.seed_hm)[1] if self.seed_hm else 0.0

    def cells(self):
        if self.problem:
            return (self.name, "-", "-", "-", "-", self.problem)
        b, n = self.base, self.new
        seeds = f"{len(b)} seed{'s' * (len(b) > 1)}" if len(b) == len(n) else f"{len(b)} base / {len(n)} new runs"
        per_seed = "-"
        if self.seed_hm and len(self.seed_hm) > 1:
            per_seed = " ".join(f"{h:.1f}" for h in self.seed_hm) + f" (std {self.hm_std:.1f})"
        return (self.name, cell(b), cell(n), f"{self.hm:.1f}", per_seed, seeds)


def table_rows(rows):
    """[(name, base cell, new cell, HM cell, per-seed HM cell, note)] for rows of (name, base glob, new glob)."""
    return [Row(*r).cells() for r in rows]


def gap_line(student, boosted, teacher):
    if student.hm == teacher.hm:
        return f"{boosted.name}: no HM gap between {student.name} and {teacher.name} to close"
    share = 100 * (boosted.hm - student.hm) / (teacher.hm - student.hm)
    return (f"{boosted.name} closes {share:.0f}% of the HM gap from {student.name} ({student.hm:.1f}) "
            f"to {teacher.name} ({teacher.hm:.1f})")


def lift_line(method, cascaded):
    lift, noise = cascaded.hm - method.hm, 2 * max(method.hm_std, cascaded.hm_std)
    verdict = "more than" if lift > noise else "not more than"
    return (f"{cascaded.name} - {method.name}: {lift:+.1f} HM, {verdict} twice the larger per-seed HM std "
            f"({noise:.1f})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", nargs=3, action="append", required=True, metavar=("NAME", "BASE_GLOB", "NEW_GLOB"))
    ap.add_argument("--markdown", action="store_true", help="a Markdown table instead of plain text")
    ap.add_argument("--gap", nargs=3, metavar=("STUDENT", "BOOSTED", "TEACHER"),
                    help="print the share of the HM gap from STUDENT to TEACHER that BOOSTED closes")
    ap.add_argument("--lift", nargs=2, action="append", default=[], metavar=("METHOD", "CASCADED"),
                    help="print HM(CASCADED) - HM(METHOD) against their per-seed HM spread")
    args = ap.parse_args(argv)
    rows = {name: Row(name, b, n) for name, b, n in args.row}
    print(tabulate([r.cells() for r in rows.values()], headers=["Method", "base", "new", "HM", "HM per seed", ""],
                   tablefmt="github" if args.markdown else "simple", disable_numparse=True))
    for names in ([args.gap] if args.gap else []) + args.lift:
        unknown = [n for n in names if n not in rows]
        if unknown:
            ap.error(f"--gap/--lift name rows that are not in the table: {', '.join(unknown)}")
        if not any(rows[n].problem for n in names):
            print(gap_line(*(rows[n] for n in names)) if len(names) == 3 else lift_line(*(rows[n] for n in names)))
    return 1 if any(r.problem for r in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
