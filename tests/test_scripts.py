"""The protocol scripts: syntax, and CasPL's base-to-new pair run end to end."""
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


@pytest.mark.slow
def test_caspl_base_to_new_script_runs_both_phases_and_then_skips(tmp_path, tiny_clip_path):
    data = make_eurosat(str(tmp_path / "data"), per_class=10)
    teacher = save_tiny_clip(str(tmp_path / "teacher.pt"), embed_dim=48, vision_width=128, text_width=128,
                             vision_layers=3, text_layers=3, seed=5)
    env = dict(os.environ, DATA=data, OUT=str(tmp_path / "out"), BACKBONE=tiny_clip_path, TEACHER=teacher,
               PYTHON=sys.executable, SHOTS="2", LOAD_EPOCH="2",
               EXTRA='INPUT.SIZE "(32, 32)" TRAINER.CASPL.PROMPT_DEPTH_TEXT 2 TRAINER.CASPL.PROMPT_DEPTH_VISION 2 '
                     'TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT 2 TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION 2 '
                     'OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0')
    cmd = ["bash", os.path.join(ROOT, "scripts/caspl/base2new.sh"), "eurosat", "1"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    out = tmp_path / "out"
    assert (out / "caspl_boost/eurosat/seed1/BoostPrompts/model.pth.tar-2").is_file()
    cfg = "CasPL_PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_l12/seed1"
    train_log = (out / "base2new/train_base/eurosat/shots_2" / cfg / "log.txt").read_text()
    test_log = (out / "base2new/test_new/eurosat/shots_2" / cfg / "log.txt").read_text()
    assert "* total: 15" in train_log and "* total: 15" in test_log and "Loaded " in test_log
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipping") == 3
