"""Data-parallel training (torchrun, gloo on the CPU): 2 processes with per-process batch B
end where one process with batch 2B ends, for CoOp, PromptSRC and CasPL_Boost."""
import os
import subprocess
import sys

import pytest
import torch

from caspl.clip.tiny import save_tiny_clip
from caspl.testing import make_eurosat
from conftest import ROOT, run_cli

# deterministic inputs (no random crop or flip), so both runs see the same pixels
COMMON = ["INPUT.SIZE", "(32, 32)", "INPUT.TRANSFORMS", "['normalize']", "DATALOADER.NUM_WORKERS", "0",
          "OPTIM.MAX_EPOCH", "2", "OPTIM.WARMUP_EPOCH", "0", "DATASET.NUM_SHOTS", "4", "TEST.NO_TEST", "True",
          "TRAIN.CHECKPOINT_FREQ", "1"]
BOOST = ("CasPL_Boost", "configs/trainers/CasPL_Boost/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml", "BoostPrompts",
         ["TRAINER.CASPL.PROMPT_DEPTH_TEXT", "2", "TRAINER.CASPL.PROMPT_DEPTH_VISION", "2",
          "TRAINER.CASPL.N_CTX_TEXT", "2", "TRAINER.CASPL.N_CTX_VISION", "2"])
RUNS = {  # name: trainer, config, checkpointed module, options
    "CoOp": ("CoOp", "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml", "prompt_learner", []),
    "PromptSRC": ("PromptSRC", "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", "VLPromptLearner",
                  ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2",
                   "TRAINER.PROMPTSRC.GPA_MEAN", "1.5"]),
    "CasPL_Boost": BOOST,
    # the teacher cache: each process fills its images' views, then all hold all of them
    "CasPL_Boost_cached": BOOST[:3] + (BOOST[3] + ["TRAINER.CASPL.TEACHER_CACHE", "True",
                                                   "TRAINER.CASPL.CACHE_VIEWS", "1"],),
}


def train(name, out, root, clip_path, teacher, batch, processes):
    """train.py with `processes` data-parallel processes (torchrun); one process runs in this one."""
    trainer, config, _, opts = RUNS[name]
    args = ["--root", root, "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
            "--config-file", os.path.join(ROOT, config), "--output-dir", out,
            "MODEL.BACKBONE.NAME", clip_path, "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch), *COMMON, *opts,
            *(["TRAINER.CASPL.TEACHER", teacher] if trainer.startswith("CasPL") else [])]
    if processes == 1:
        assert run_cli(args) == 0
        return
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(launcher + [os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_two_processes_equal_one_with_the_global_batch(tmp_path, tiny_clip_path, name):
    root = make_eurosat(str(tmp_path / "data"), per_class=10)  # 10 classes x 4 shots = 40 images
    teacher = save_tiny_clip(str(tmp_path / "teacher.pt"), embed_dim=48, vision_width=128, text_width=128,
                             vision_layers=3, text_layers=3, seed=5)
    module = RUNS[name][2]
    single, double = str(tmp_path / "single"), str(tmp_path / "ddp")
    train(name, single, root, tiny_clip_path, teacher, batch=8, processes=1)
    train(name, double, root, tiny_clip_path, teacher, batch=4, processes=2)
    a = torch.load(os.path.join(single, module, "model.pth.tar-2"), weights_only=True)
    b = torch.load(os.path.join(double, module, "model.pth.tar-2"), weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-4, atol=1e-5)
    start = torch.load(os.path.join(single, module, "model.pth.tar-1"), weights_only=True)
    assert any(not torch.equal(start["state_dict"][k], a["state_dict"][k]) for k in a["state_dict"])  # it learned
    log = open(os.path.join(double, "log.txt")).read()
    assert "2 processes" in log and log.count("Finish training") == 1  # rank 0 alone writes the log
    if name == "CasPL_Boost_cached":
        ddp, one = (torch.load(os.path.join(d, "teacher_cache.pt"), weights_only=True) for d in (double, single))
        assert torch.equal(ddp["filled"], one["filled"]) and ddp["filled"].sum() > len(ddp["filled"]) // 2
        torch.testing.assert_close(ddp["features"], one["features"])
