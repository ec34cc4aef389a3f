"""Reading finished runs back: HM, mean and population std over seeds, and the base-to-new
table tool flagging a missing run instead of averaging over fewer seeds."""
import json
import os
import sys

import pytest

from caspl.evaluation import harmonic_mean, mean_std, run_accuracy, seed_accuracies
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))


def write_result(directory, accuracy):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump({"split": "test", "accuracy": accuracy}, f)


def test_harmonic_mean_and_population_std():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
    mean, std = mean_std([70.0, 72.0, 74.0])
    assert mean == pytest.approx(72.0) and std == pytest.approx((8 / 3) ** 0.5)  # population, not sample
    assert mean_std([5.0]) == (5.0, 0.0)


def test_run_accuracy_reads_results_and_reports_unfinished(tmp_path):
    write_result(tmp_path / "seed1", 81.25)
    os.makedirs(tmp_path / "seed2")  # started, no result yet
    assert run_accuracy(str(tmp_path / "seed1")) == 81.25
    assert run_accuracy(str(tmp_path / "seed2")) is None
    assert seed_accuracies(str(tmp_path / "seed*")) == {str(tmp_path / "seed1"): 81.25,
                                                        str(tmp_path / "seed2"): None}


def test_base2new_table_averages_seeds_and_flags_a_missing_run(tmp_path, capsys):
    import base2new_table

    for seed, (b, n) in enumerate([(80.0, 60.0), (82.0, 64.0), (84.0, 62.0)], start=1):
        write_result(tmp_path / "A/base" / f"seed{seed}", b)
        write_result(tmp_path / "A/new" / f"seed{seed}", n)
        write_result(tmp_path / "B/base" / f"seed{seed}", b + 1)
        if seed != 2:
            write_result(tmp_path / "B/new" / f"seed{seed}", n + 1)
    os.makedirs(tmp_path / "B/new/seed2")  # an unfinished evaluation
    rows = [["A", str(tmp_path / "A/base/seed*"), str(tmp_path / "A/new/seed*")],
            ["B", str(tmp_path / "B/base/seed*"), str(tmp_path / "B/new/seed*")]]
    a, b = base2new_table.table_rows(rows)
    assert a[:4] == ("A", "82.0 +- 1.6", "62.0 +- 1.6", f"{harmonic_mean(82.0, 62.0):.1f}")
    assert a[4] == "3 seeds"
    assert b[1:4] == ("-", "-", "-") and str(tmp_path / "B/new/seed2") in b[4]

    args = [x for name, bg, ng in rows for x in ("--row", name, bg, ng)]
    assert base2new_table.main(args) == 1  # a flagged row fails the command
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["Method", "base", "new", "HM"]
    assert f"{harmonic_mean(82.0, 62.0):.1f}" in out and "missing or unfinished" in out
    assert base2new_table.main(args[:4] + ["--markdown"]) == 0
    assert capsys.readouterr().out.startswith("| Method")
