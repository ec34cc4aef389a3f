"""Linear-probe CLIP: the regularisation search, the classifier as a linear head, and runs
from the few-shot script (beats chance; the feature cache is reused, the result unchanged)."""
import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import torch
import torch.nn as nn
from sklearn.linear_model import LogisticRegression

from caspl.testing import make_eurosat
from conftest import ROOT, run_cli, snapshot
from trainers.linear_probe import LinearProbeCLIP, log_search

GRID = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]


def test_search_takes_the_grid_best_then_halves_towards_the_better_end():
    peak = 2.3  # val accuracy falls off with |log10 C - 2.3|
    best, tried = log_search(lambda c: -abs(math.log10(c) - peak), GRID, 8)
    assert [c for c, _ in tried[:7]] == GRID
    # grid best 1e2 -> [1e1, 1e3]: 1e3 wins -> [1e2, 1e3] (both known): 1e2 wins -> [1e2, 10^2.5]:
    # 10^2.5 wins -> [10^2.25, 10^2.5] ... (each value is fitted once)
    assert [round(math.log10(c), 4) for c, _ in tried[7:11]] == [1.0, 3.0, 2.5, 2.25]
    assert abs(math.log10(best) - peak) < 0.05
    flat, _ = log_search(lambda c: 1.0, GRID, 8)  # ties: the first grid value, then always the smaller end
    assert flat == 1e5
    assert log_search(lambda c: -abs(math.log10(c) - peak), GRID, 0)[0] == 1e2


def test_head_predicts_what_the_classifier_predicts():
    rng = np.random.default_rng(0)
    for n_classes in (2, 4):
        x = rng.normal(size=(40, 6)).astype(np.float32)
        y = np.arange(40) % n_classes
        x[np.arange(40), y] += 2.0
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
        stub = types.SimpleNamespace(head=nn.Linear(6, n_classes))
        LinearProbeCLIP.set_head(stub, clf)
        logits = stub.head(torch.from_numpy(x)).detach()
        assert (logits.argmax(1).numpy() == clf.predict(x)).all()
        if n_classes > 2:
            assert np.allclose(logits.numpy(), clf.decision_function(x), atol=1e-4)


def few_shot(tmp_path, data, backbone, shots):
    env = dict(os.environ, DATA=data, OUT=str(tmp_path / "out"), BACKBONE=backbone, PYTHON=sys.executable,
               EXTRA='INPUT.SIZE "(32, 32)" DATALOADER.NUM_WORKERS 0')
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts/LinearProbeCLIP/few_shot.sh"),
                           "eurosat", "1", str(shots)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = tmp_path / f"out/few_shot/eurosat/shots_{shots}/LinearProbeCLIP/vit_b16/seed1"
    return run, done.stdout


def test_linear_probe_beats_chance_and_reuses_its_feature_cache(tmp_path, tiny_clip_path):
    data = make_eurosat(str(tmp_path / "data"), per_class=10)  # 10 classes of distinct colours
    run, _ = few_shot(tmp_path, data, tiny_clip_path, 4)
    log = (run / "log.txt").read_text()
    result = json.loads((run / "results.json").read_text())
    assert result["total"] == 30 and result["accuracy"] > 3 * 10.0  # chance is 10 %
    assert log.count("Extracting features") == 3 and "Chosen C" in log and "Finish training" in log
    cache = os.path.join(data, "eurosat", "clip_feat", "tiny")
    files = snapshot(cache)
    assert sorted(f.split("-")[0] for f in files) == ["test", "train", "val"]

    # the same run again, in a new output folder: every feature from the cache, the same result
    (run.parent / "first").mkdir()
    for name in ("log.txt", "results.json"):
        os.replace(run / name, run.parent / "first" / name)
    few_shot(tmp_path, data, tiny_clip_path, 4)
    log = (run / "log.txt").read_text()
    assert "Extracting features" not in log and log.count("from the cache") == 3
    assert json.loads((run / "results.json").read_text())["accuracy"] == result["accuracy"]
    assert snapshot(cache) == files

    # other shots: new train and val features, the test split's reused
    other, _ = few_shot(tmp_path, data, tiny_clip_path, 2)
    log = (other / "log.txt").read_text()
    assert "Extracting features of the train split (20 images)" in log
    assert "Features of the test split (30 images) from the cache" in log
    assert len(snapshot(cache)) == 5

    # the saved classifier evaluates to the same accuracy
    assert run_cli(["--root", data, "--trainer", "LinearProbeCLIP", "--seed", "1",
                    "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                    "--config-file", os.path.join(ROOT, "configs/trainers/LinearProbeCLIP/vit_b16.yaml"),
                    "--output-dir", str(tmp_path / "eval"), "--eval-only", "--model-dir", str(run),
                    "MODEL.BACKBONE.NAME", tiny_clip_path, "INPUT.SIZE", "(32, 32)",
                    "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "4"]) == 0
    assert json.loads((tmp_path / "eval/results.json").read_text())["accuracy"] == result["accuracy"]
