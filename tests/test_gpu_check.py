"""bench/gpu_check.py without a GPU: it says so, runs its CPU dry run (every section's plumbing
on tiny CLIPs, the CPU as a GPU without bf16, gloo for data parallelism), prints one table,
writes its JSON and exits 0."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_dry_run_exercises_every_section(tmp_path):
    out = str(tmp_path / "gpu_check.json")
    cmd = [sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--json", out, "--work", str(tmp_path / "w")]
    if torch.cuda.is_available():  # the real check takes minutes; this test is about the plumbing
        cmd.append("--dry-run")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if not torch.cuda.is_available():
        assert "no CUDA GPU on this machine: running only a small CPU dry run" in done.stdout
    result = json.load(open(out))
    assert result["dry_run"] and result["sections"] == ["trainers", "loader", "ddp", "class_count", "attention"]

    rows = result["trainers"]["rows"]
    assert [(r["backbone"], r["trainer"], r["precision"], r["ran_as"]) for r in rows] == [
        (backbone, "CasPL_PromptSRC", prec, prec) for backbone in ("openai", "open_clip")
        for prec in ("fp16", "amp")]  # half weights: the GPU path, OpenAI's CLIP and open_clip's
    assert all(r["step_s"] > 0 and r["eval_img_s"] > 0 and r["step_img_s"] == r["batch"] / r["step_s"] for r in rows)

    loader = result["loader"]
    assert loader["images"] == 32 and loader["img_s"] > 0 and "RandomResizedCrop" in loader["transform"]

    ddp = result["ddp"]
    assert (ddp["processes"], ddp["backend"], ddp["global_batch"], ddp["steps_logged"]) == (2, "gloo", 4, 2)
    assert ddp["equal"] and ddp["max_abs_diff"] < 1e-5

    paths = {(r["method"], r["classes"], r["path"]) for r in result["class_count"]["rows"] if "step_s" in r}
    assert paths == {("CoOp", 10, "reference"), ("CoOp", 10, "caspl")}

    attention = result["attention"]["rows"]
    assert [(r["dtype"], r["classes"]) for r in attention] == [("float32", 10)] and attention[0]["max_abs_diff"] < 1e-4
    assert all(attention[0][f"{impl}_step_s"] > 0 for impl in ("written-out", "sdpa"))

    table = done.stdout[done.stdout.index("| section"):]
    for section in ("trainers", "loader", "ddp", "class_count", "attention"):
        assert f"| {section}" in table
    assert "| CasPL_PromptSRC (open_clip)" in table
    assert "failed" not in table
