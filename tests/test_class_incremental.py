"""LAMM's class-incremental protocol (tools/class_incremental.py): Set 1, then Set 2 from Set
1's prompts, then Set 1 again; LAMM cannot forget Set 1, CoOp's shared context can."""
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from caspl.testing import make_eurosat
from conftest import ROOT, run_cli, snapshot

sys.path.insert(0, os.path.join(ROOT, "tools"))
import class_incremental  # noqa: E402

CONFIGS = {"LAMM": "configs/trainers/LAMM/vit_b16_ep50_ctxv1.yaml",
           "CoOp": "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml"}


@pytest.fixture(autouse=True)
def stages_in_this_process(monkeypatch):
    """The tool's train.py stages run in this process (a Python process takes seconds to start;
    the stages and their order are what is tested here)."""
    def run(cmd):
        return subprocess.CompletedProcess(cmd, run_cli(cmd[2:]))  # without the interpreter and train.py

    monkeypatch.setattr(class_incremental, "subprocess", types.SimpleNamespace(run=run))


def incremental(out, data, clip_path, trainer):
    return class_incremental.main([
        "--output-dir", str(out), "--root", data, "--trainer", trainer, "--seed", "1",
        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
        "--config-file", os.path.join(ROOT, CONFIGS[trainer]), "MODEL.BACKBONE.NAME", clip_path,
        "INPUT.SIZE", "(32, 32)", "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "2"])


def stage_log(run, stage):
    return (run / stage / "log.txt").read_text()


def state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_lamm_never_forgets_set_1_and_coop_continues_from_it(tmp_path, tiny_clip_path, capsys):
    data = make_eurosat(str(tmp_path / "data"), per_class=10)
    lamm, coop = tmp_path / "out/LAMM/seed1", tmp_path / "out/CoOp/seed1"

    assert incremental(lamm, data, tiny_clip_path, "LAMM") == 0
    printed = capsys.readouterr().out
    results = {s: json.loads((lamm / s / "results.json").read_text()) for s in class_incremental.STAGES}
    assert [r["subsample"] for r in results.values()] == ["base", "new", "base"]
    assert results["set1_after_set2"]["accuracy"] == results["set1"]["accuracy"]  # exactly: degradation 0
    assert "Set 1 before Set 2" in printed and "degradation" in printed
    assert printed.strip().splitlines()[-1].split()[-1] == "0.00"
    # by construction: Set 2 learns its own label embeddings, Set 1's are loaded as they were saved
    assert "learned for other classes" in stage_log(lamm, "set2")
    after = stage_log(lamm, "set1_after_set2")
    assert f"Loaded {lamm / 'set1' / 'label_learner' / 'model.pth.tar-2'}" in after
    set1, set2 = state(lamm / "set1/label_learner/model.pth.tar-2"), state(lamm / "set2/label_learner/model.pth.tar-2")
    assert not torch.equal(set1["labels"], set1["anchor"])  # Set 1's labels did learn
    assert not torch.equal(set2["anchor"], set1["anchor"])  # Set 2's start from their own class names

    assert incremental(coop, data, tiny_clip_path, "CoOp") == 0
    # Set 2 starts from Set 1's context and moves it; Set 1 is then tested with Set 2's context
    assert "prompt_learner: initialised from" in stage_log(coop, "set2")
    assert f"Loaded {coop / 'set2' / 'prompt_learner' / 'model.pth.tar-2'}" in stage_log(coop, "set1_after_set2")
    ctx1 = state(coop / "set1/prompt_learner/model.pth.tar-2")["ctx"]
    ctx2 = state(coop / "set2/prompt_learner/model.pth.tar-2")["ctx"]
    assert not torch.equal(ctx1, ctx2)

    # a second call skips every stage and changes nothing; the table reads both methods
    before = snapshot(tmp_path / "out")
    assert incremental(lamm, data, tiny_clip_path, "LAMM") == 0
    assert snapshot(tmp_path / "out") == before
    capsys.readouterr()
    assert class_incremental.main(["--table", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out.splitlines()
    lamm_row = next(line for line in table if line.startswith("LAMM"))
    assert lamm_row.split()[1] == "1/1" and lamm_row.split()[-1] == "0.00"
    assert any(line.startswith("CoOp") for line in table)


def test_missing_stage_is_flagged(tmp_path, capsys):
    run = tmp_path / "out/CoOp/seed1/set1"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"accuracy": 50.0}))
    assert class_incremental.main(["--table", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "0/1" in out and "no result for set2, set1_after_set2" in out
