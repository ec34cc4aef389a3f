"""The protocol scripts: syntax, every method's folder, and base-to-new pairs run end to end
(a plain method, and CasPL with its boosting phase) with the skip-when-finished rule."""
import glob
import os
import subprocess
import sys

import pytest

from caspl.clip.tiny import save_tiny_clip
from caspl.testing import make_eurosat
from conftest import ROOT

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "scripts", "**", "*.sh"), recursive=True))


@pytest.mark.parametrize("script", SCRIPTS, ids=[os.path.relpath(s, ROOT) for s in SCRIPTS])
def test_script_syntax(script):
    assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0


METHODS = ["CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC", "LAMM"]


@pytest.mark.parametrize("method", METHODS + [f"CasPL_{m}" for m in METHODS])
def test_every_method_has_the_protocol_scripts(method):
    folder = os.path.join(ROOT, "scripts", method)
    for name in ("base2new_train.sh", "base2new_test.sh", "few_shot.sh", "xd_train.sh", "xd_test.sh",
                 "class_incremental.sh", "table.sh"):
        assert os.path.isfile(os.path.join(folder, name)), name


def run_script(path, args, env, cwd):
    return subprocess.run(["bash", os.path.join(ROOT, path), *args], env=env, capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_unknown_method_and_missing_training_are_clear_errors(tmp_path):
    env = dict(os.environ, DATA=str(tmp_path), OUT=str(tmp_path / "out"), PYTHON=sys.executable, METHOD="CoOOp")
    bad = run_script("scripts/protocols/base2new_train.sh", ["eurosat", "1"], env, str(tmp_path))
    assert bad.returncode == 2 and "unknown method CoOOp" in bad.stderr
    env["METHOD"] = "CoOp"
    untrained = run_script("scripts/CoOp/base2new_test.sh", ["eurosat", "1"], env, str(tmp_path))
    assert untrained.returncode == 2 and "no training in" in untrained.stderr
    usage = run_script("scripts/CoOp/few_shot.sh", ["eurosat"], env, str(tmp_path))
    assert usage.returncode == 2 and "few_shot.sh DATASET SEED SHOTS" in usage.stderr


@pytest.mark.slow
def test_coop_base_to_new_pair_in_the_reference_layout_then_skips(tmp_path, tiny_clip_path):
    data = make_eurosat(str(tmp_path / "data"), per_class=10)
    env = dict(os.environ, DATA=data, OUT=str(tmp_path / "out"), BACKBONE=tiny_clip_path, PYTHON=sys.executable,
               SHOTS="2", EXTRA='INPUT.SIZE "(32, 32)" OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0')
    for script in ("base2new_train.sh", "base2new_test.sh"):
        done = run_script(f"scripts/CoOp/{script}", ["eurosat", "1"], env, str(tmp_path))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = tmp_path / "out/base2new"
    train_log = (runs / "train_base/eurosat/shots_2/CoOp/vit_b16_ep50_ctxv1/seed1/log.txt").read_text()
    test_log = (runs / "test_new/eurosat/shots_2/CoOp/vit_b16_ep50_ctxv1/seed1/log.txt").read_text()
    assert "Finish training" in train_log and "* total: 15" in train_log  # 5 base classes x 3 test images
    assert "* total: 15" in test_log and "model.pth.tar-2" in test_log
    again = run_script("scripts/CoOp/base2new_train.sh", ["eurosat", "1"], env, str(tmp_path))
    assert again.returncode == 0 and "skipping" in again.stdout


@pytest.mark.slow
def test_caspl_base_to_new_scripts_run_both_phases_and_then_skip(tmp_path, tiny_clip_path):
    data = make_eurosat(str(tmp_path / "data"), per_class=10)
    teacher = save_tiny_clip(str(tmp_path / "teacher.pt"), embed_dim=48, vision_width=128, text_width=128,
                             vision_layers=3, text_layers=3, seed=5)
    env = dict(os.environ, DATA=data, OUT=str(tmp_path / "out"), BACKBONE=tiny_clip_path, TEACHER=teacher,
               PYTHON=sys.executable, SHOTS="2", LOAD_EPOCH="2",
               EXTRA='INPUT.SIZE "(32, 32)" TRAINER.CASPL.PROMPT_DEPTH_TEXT 2 TRAINER.CASPL.PROMPT_DEPTH_VISION 2 '
                     'TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT 2 TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION 2 '
                     'OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0')
    def pair():
        outs = [run_script(f"scripts/CasPL_PromptSRC/{s}", ["eurosat", "1"], env, str(tmp_path))
                for s in ("base2new_train.sh", "base2new_test.sh")]
        for done in outs:
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return "".join(done.stdout for done in outs)

    pair()
    out = tmp_path / "out"
    assert (out / "caspl_boost/eurosat/seed1/BoostPrompts/model.pth.tar-2").is_file()
    cfg = "CasPL_PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_l12/seed1"
    train_log = (out / "base2new/train_base/eurosat/shots_2" / cfg / "log.txt").read_text()
    test_log = (out / "base2new/test_new/eurosat/shots_2" / cfg / "log.txt").read_text()
    assert "* total: 15" in train_log and "* total: 15" in test_log and "Loaded " in test_log
    assert pair().count("skipping") == 3  # phase 1, phase 2 training, evaluation


@pytest.mark.slow
def test_context_length_sweep_runs_and_tabulates_from_one_command(tmp_path, tiny_clip_path):
    data = make_eurosat(str(tmp_path / "data"), per_class=10)
    env = dict(os.environ, DATA=data, OUT=str(tmp_path / "out"), BACKBONE=tiny_clip_path, PYTHON=sys.executable,
               KEY="TRAINER.COOP.N_CTX", VALUES="2 4",
               EXTRA='INPUT.SIZE "(32, 32)" OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0')
    done = run_script("scripts/sweep.sh", ["scripts/CoOp/few_shot.sh", "eurosat", "1", "2"], env, ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = done.stdout[done.stdout.index("experiment"):].splitlines()
    rows = [line.split()[0] for line in table[2:]]
    assert rows == [f"TRAINER.COOP.N_CTX={n}/few_shot/eurosat/shots_2/CoOp/vit_b16_ep100" for n in (2, 4)]
    for n in (2, 4):
        log = (tmp_path / "out/sweep" / f"TRAINER.COOP.N_CTX={n}" / "few_shot/eurosat/shots_2/CoOp/vit_b16_ep100/seed1"
               / "log.txt").read_text()
        assert f"with {n} context tokens" in log and "* accuracy:" in log
