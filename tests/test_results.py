"""Reading finished runs back: HM, mean and population std over seeds, and the base-to-new
table tool flagging a missing run instead of averaging over fewer seeds."""
import json
import os
import sys

import pytest

from caspl.evaluation import harmonic_mean, log_accuracy, mean_std, run_accuracy, seed_accuracies
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
    seed_hms = [harmonic_mean(80.0, 60.0), harmonic_mean(82.0, 64.0), harmonic_mean(84.0, 62.0)]
    assert a[4] == " ".join(f"{h:.1f}" for h in seed_hms) + f" (std {mean_std(seed_hms)[1]:.1f})"
    assert a[5] == "3 seeds"
    assert b[1:5] == ("-", "-", "-", "-") and str(tmp_path / "B/new/seed2") in b[5]

    args = [x for name, bg, ng in rows for x in ("--row", name, bg, ng)]
    assert base2new_table.main(args) == 1  # a flagged row fails the command
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:7] == ["Method", "base", "new", "HM", "HM", "per", "seed"]
    assert f"{harmonic_mean(82.0, 62.0):.1f}" in out and "missing or unfinished" in out
    assert base2new_table.main(args[:4] + ["--markdown"]) == 0
    assert capsys.readouterr().out.startswith("| Method")


def test_base2new_table_gap_and_lift_lines(tmp_path, capsys):
    """--gap: the share of the HM gap from one row to another that a third closes; --lift: a
    row's HM gain over another against twice the larger of their per-seed HM stds."""
    import base2new_table

    write_result(tmp_path / "student/base", 50.0)
    write_result(tmp_path / "student/new", 50.0)
    write_result(tmp_path / "teacher/base", 90.0)
    write_result(tmp_path / "teacher/new", 90.0)
    for seed, (b, n) in enumerate([(70.0, 70.0), (72.0, 72.0), (74.0, 74.0)], start=1):
        write_result(tmp_path / "boosted/base" / f"seed{seed}", b)
        write_result(tmp_path / "boosted/new" / f"seed{seed}", n)
    rows = []
    for name in ("student", "teacher"):
        rows += ["--row", name, str(tmp_path / name / "base"), str(tmp_path / name / "new")]
    rows += ["--row", "boosted", str(tmp_path / "boosted/base/seed*"), str(tmp_path / "boosted/new/seed*")]
    assert base2new_table.main(rows + ["--gap", "student", "boosted", "teacher",
                                       "--lift", "student", "boosted", "--lift", "boosted", "teacher"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "boosted closes 55% of the HM gap from student (50.0) to teacher (90.0)" in lines  # (72-50)/40
    noise = 2 * mean_std([70.0, 72.0, 74.0])[1]  # per-seed HM of equal base and new is that value
    assert f"boosted - student: +22.0 HM, more than twice the larger per-seed HM std ({noise:.1f})" in lines
    assert f"teacher - boosted: +18.0 HM, more than twice the larger per-seed HM std ({noise:.1f})" in lines
    with pytest.raises(SystemExit):
        base2new_table.main(rows + ["--lift", "student", "nobody"])
    capsys.readouterr()
    write_result(tmp_path / "close/base/seed1", 71.0)
    write_result(tmp_path / "close/new/seed1", 71.0)
    base2new_table.main(rows + ["--row", "close", str(tmp_path / "close/base/seed*"),
                                str(tmp_path / "close/new/seed*"), "--lift", "close", "boosted"])
    assert f"boosted - close: +1.0 HM, not more than twice the larger per-seed HM std ({noise:.1f})" \
        in capsys.readouterr().out


# ----------------------------------------------------------------------------- log parsing

DATASETS = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
            "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"]


def write_log(directory, accuracy, training=True, finished=True, finish_line="Finish training"):
    """A log.txt in the reference format: training progress, then the final result block."""
    os.makedirs(directory, exist_ok=True)
    lines = ["Loading trainer: X", "Evaluate on the *val* set", "=> result", "* accuracy: 11.1%"]
    if training:
        lines += ["epoch [1/5] batch [20/20] time 0.1 (0.1) loss 1.0 acc 50.0 lr 1e-3 eta 0:00:00"]
    if finished:
        lines += ([finish_line, "Deploy the last-epoch model"] if training else []) + [
            "Evaluate on the *test* set", "=> result", "* total: 1,000", "* correct: 800",
            f"* accuracy: {accuracy:.1f}%", "* error: 20.0%", "* macro_f1: 79.0%"]
    with open(os.path.join(directory, "log.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def test_parse_test_res_one_directory_as_the_reference_tool(tmp_path, capsys):
    import parse_test_res

    for seed, acc in [(1, 70.0), (2, 72.0), (3, 74.0)]:
        write_log(tmp_path / "exp" / f"seed{seed}", acc)
    assert parse_test_res.main([str(tmp_path / "exp")]) == 0
    assert f"* accuracy: 72.00% +- {(8 / 3) ** 0.5:.2f}%" in capsys.readouterr().out
    assert parse_test_res.main([str(tmp_path / "absent")]) == 2  # one line, no traceback
    assert capsys.readouterr().err.startswith("error: no folder")
    # a test log has no "Finish training": only --test-log reads it
    write_log(tmp_path / "ev" / "seed1", 61.0, training=False)
    assert parse_test_res.main([str(tmp_path / "ev")]) == 1
    assert "no finished run" in capsys.readouterr().out
    assert parse_test_res.main([str(tmp_path / "ev"), "--test-log"]) == 0
    assert "* accuracy: 61.00% +- 0.00%" in capsys.readouterr().out
    # logs of caspl before it wrote Dassl's line exactly are read too
    write_log(tmp_path / "old" / "seed1", 64.0, finish_line="Finish training (0:03:12)")
    assert log_accuracy(str(tmp_path / "old" / "seed1" / "log.txt")) == 64.0
    # the val block before training ended is never taken for the result
    write_log(tmp_path / "cut" / "seed1", 99.0, finished=False)
    assert log_accuracy(str(tmp_path / "cut" / "seed1" / "log.txt")) is None


def test_parse_test_res_tree_base_to_new_with_average_and_missing_run(tmp_path, capsys):
    import parse_test_res

    def accs(method, d):  # distinct, known accuracies per method, dataset and seed
        b = 60.0 + d + (5 if method == "B" else 0)
        return [(b + s, b - 10 + 2 * s) for s in (1, 2, 3)]

    for method in ("A", "B"):
        for d, dataset in enumerate(DATASETS):
            for seed, (base, new) in zip((1, 2, 3), accs(method, d)):
                cfg = f"shots_16/{method}/cfg/seed{seed}"
                write_log(tmp_path / "base2new/train_base" / dataset / cfg, base)
                if not (method == "B" and dataset == "dtd" and seed == 2):  # one evaluation never ran
                    write_log(tmp_path / "base2new/test_new" / dataset / cfg, new, training=False)

    tables = parse_test_res.base2new_tables(str(tmp_path), seeds=[1, 2, 3])
    a = {row[0]: row for row in tables["shots_16/A/cfg"]}
    base, new = a["eurosat"][1], a["eurosat"][2]
    d = DATASETS.index("eurosat")
    assert base == pytest.approx((60 + d + 2, (2 / 3) ** 0.5))  # mean, population std
    assert new == pytest.approx((50 + d + 4, (8 / 3) ** 0.5))
    rows = parse_test_res.base2new_rows(tables["shots_16/A/cfg"])
    dtd = [r for r in rows if r[0] == "dtd"][0]
    d = DATASETS.index("dtd")
    assert dtd[3] == f"{harmonic_mean(60 + d + 2, 50 + d + 4):.2f}"  # HM of the seed means
    mean_base, mean_new = 62 + sum(range(11)) / 11, 54 + sum(range(11)) / 11
    assert rows[-1] == ["Average (11)", f"{mean_base:.2f}", f"{mean_new:.2f}",
                        f"{harmonic_mean(mean_base, mean_new):.2f}", ""]
    # B: dtd's missing seed is flagged, dtd is not averaged over two seeds, no 11-dataset average
    rows_b = parse_test_res.base2new_rows(tables["shots_16/B/cfg"])
    dtd = [r for r in rows_b if r[0] == "dtd"][0]
    assert dtd[2] == "-" and dtd[3] == "-" and "new seed2 missing" in dtd[4]
    assert rows_b[-1][1:4] == ["-", "-", "-"] and "not averaged" in rows_b[-1][4]

    assert parse_test_res.main(["--tree", str(tmp_path)]) == 1  # something is flagged
    out = capsys.readouterr().out
    assert "Base-to-new: shots_16/A/cfg" in out and "Average (11)" in out and "seed2 missing" in out


# ----------------------------------------------------------------------------- the papers' tables

def test_make_tables_few_shot_transfer_published_and_plot(tmp_path, capsys):
    import make_tables
    from PIL import Image

    root = tmp_path / "out"
    for m, bonus in (("PromptSRC", 0.0), ("CasPL_PromptSRC", 2.0)):
        for d, dataset in enumerate(["dtd", "eurosat"]):
            for k, shots in enumerate([1, 2, 4, 8, 16]):
                for seed in (1, 2, 3):
                    write_log(root / f"few_shot/{dataset}/shots_{shots}/{m}/cfg/seed{seed}",
                              50 + 5 * k + d + bonus + seed)
        for seed in (1, 2, 3):
            write_log(root / f"cross_dataset/imagenet/{m}/cfg_16shots/seed{seed}", 70 + bonus)
            for t, target in enumerate(["imagenetv2", "imagenet_r", "dtd", "eurosat"]):
                if not (m == "PromptSRC" and target == "eurosat" and seed == 3):  # one evaluation missing
                    write_log(root / f"cross_dataset/evaluation/{m}/cfg_16shots/{target}/seed{seed}",
                              60 + t + bonus, training=False)

    few = make_tables.read_few_shot(str(root), [1, 2, 3])
    assert few.get(("CasPL_PromptSRC/cfg", "eurosat", "4")) == pytest.approx(50 + 10 + 1 + 2 + 2)
    headers, rows = make_tables.few_shot_table(few, json.load(open(make_tables.PUBLISHED)))
    assert headers == ["method", "dataset", "1 shots", "2 shots", "4 shots", "8 shots", "16 shots"]
    avg = [r for r in rows if r[0] == "PromptSRC/cfg" and r[1] == "Average (2)"][0]
    assert avg[2:] == [f"{50 + 5 * k + 0.5 + 2:.2f}" for k in range(5)]
    paper = [r for r in rows if r[0] == "CasPL_PromptSRC/cfg" and r[1] == "paper average"][0]
    assert paper[2:] == ["75.91", "77.94", "80.45", "82.22", "84.49"]  # CasPL's reported few-shot average
    diff = [r for r in rows if r[0] == "CasPL_PromptSRC/cfg" and r[1] == "diff"][0]
    assert diff[2] == f"{50 + 0.5 + 4 - 75.91:.2f}"

    source, target = make_tables.read_transfer(str(root), [1, 2, 3])
    headers, rows = make_tables.transfer_table(source, target, dg=True)
    assert headers == ["method", "source", "imagenet_r", "imagenetv2", "target avg"]
    assert rows[0] == ["CasPL_PromptSRC/cfg_16shots", "72.00", "63.00", "62.00", "62.50"]
    headers, rows = make_tables.transfer_table(source, target, dg=False)
    assert headers[2:] == ["dtd", "eurosat", "target avg"]
    assert rows[1] == ["PromptSRC/cfg_16shots", "70.00", "62.00", "-", "-"]  # missing seed: no mean, no average

    png = tmp_path / "shots.png"
    assert make_tables.main([str(root), "--table", "few_shot", "dg", "--published", "--plot", str(png)]) == 1
    out = capsys.readouterr().out
    assert "Few-shot classification" in out and "Domain generalisation" in out
    assert "PromptSRC/cfg_16shots/eurosat: seed3 missing" in out.replace(os.sep, "/").split("Not averaged")[1]
    assert Image.open(png).format == "PNG"
    fig = make_tables.few_shot_figure(few)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "shots per class" and ax.get_ylabel().startswith("accuracy (%)")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CasPL_PromptSRC", "PromptSRC"]
    assert list(ax.lines[1].get_ydata()) == pytest.approx([50 + 5 * k + 0.5 + 2 for k in range(5)])


def write_base2new(root, method, dataset, base, new, seeds=(1, 2, 3)):
    """Finished base-to-new runs of `method` (config "cfg") with these accuracies, every seed."""
    for seed in seeds:
        write_log(root / f"base2new/train_base/{dataset}/shots_16/{method}/cfg/seed{seed}", base)
        write_log(root / f"base2new/test_new/{dataset}/shots_16/{method}/cfg/seed{seed}", new, training=False)


def test_make_tables_base_to_new_with_published_difference(tmp_path, capsys):
    import make_tables

    root = tmp_path / "out"
    for dataset, (b, n) in (("dtd", (80.0, 60.0)), ("eurosat", (90.0, 70.0))):
        write_base2new(root, "PromptSRC", dataset, b, n)
    base, new = make_tables.read_base2new(str(root), [1, 2, 3])
    published = json.load(open(make_tables.PUBLISHED))
    headers, rows = make_tables.base2new_table(base, new, published)
    assert headers[:5] == ["method", "dataset", "base", "new", "HM"]
    dtd, eurosat, average = rows
    paper_hm = harmonic_mean(83.37, 62.97)  # PromptSRC on DTD as published
    assert dtd == ["PromptSRC/cfg", "dtd", "80.00", "60.00", f"{harmonic_mean(80, 60):.2f}",
                   "83.37", "62.97", f"{paper_hm:.2f}", f"{harmonic_mean(80, 60) - paper_hm:.2f}"]
    assert average[1:5] == ["Average (2)", "85.00", "65.00", f"{harmonic_mean(85, 65):.2f}"]
    assert average[5:7] == ["84.26", "76.10"]  # the published 11-dataset average
    assert make_tables.main([str(root), "--table", "base2new", "--markdown"]) == 0
    assert "| PromptSRC/cfg" in capsys.readouterr().out


def test_promptkd_rows_stand_next_to_caspl_with_their_paper_values(tmp_path):
    """PromptKD's runs (its own scripts' layout under base2new/) get PromptKD's published numbers."""
    import make_tables

    root = tmp_path / "out"
    for method, (b, n) in (("PromptKD", (85.0, 70.0)), ("CasPL_PromptSRC", (84.0, 69.0))):
        write_base2new(root, method, "dtd", b, n)
    base, new = make_tables.read_base2new(str(root), [1, 2, 3])
    published = json.load(open(make_tables.PUBLISHED))
    _, rows = make_tables.base2new_table(base, new, published)
    kd = [r for r in rows if r[0] == "PromptKD/cfg" and r[1] == "dtd"][0]
    assert kd[2:4] == ["85.00", "70.00"] and kd[5:7] == ["85.84", "71.37"]  # PromptKD's DTD in its Table 1
    assert [r for r in rows if r[0] == "CasPL_PromptSRC/cfg" and r[1] == "dtd"][0][5:7] == ["84.73", "69.63"]
    assert published["dg"]["PromptKD"]["imagenet_r"] == 87.01 and published["cross_dataset"]["PromptKD"]["dtd"] == 55.08
