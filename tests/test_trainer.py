"""The trainer base: checkpoint files kept, best-val selection, loading errors, results."""
import json
import os

import pytest
import torch

from caspl import CasplError
from conftest import build_trainer


def test_checkpoint_freq_keeps_dassls_files(tmp_path, eurosat_root, tiny_clip_path):
    out = str(tmp_path / "o")
    t = build_trainer(eurosat_root, tiny_clip_path, out, TRAINER__COOP__N_CTX=2, DATASET__NUM_SHOTS=1,
                      OPTIM__MAX_EPOCH=5, TRAIN__CHECKPOINT_FREQ=2)
    t.train()
    folder = os.path.join(out, "prompt_learner")
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-2", "model.pth.tar-4", "model.pth.tar-5"]
    assert open(os.path.join(folder, "checkpoint")).read().strip() == "model.pth.tar-5"
    assert not [f for f in os.listdir(folder) if f.startswith(".tmp")]
    record = json.load(open(os.path.join(out, "results.json")))
    assert record["epoch"] == 5 and record["split"] == "test" and record["total"] == 30
    assert record["accuracy"] == pytest.approx(100 - record["error_rate"])


def test_best_val_model_is_saved_and_deployed(tmp_path, eurosat_root, tiny_clip_path, capsys):
    out = str(tmp_path / "o")
    t = build_trainer(eurosat_root, tiny_clip_path, out, TRAINER__COOP__N_CTX=2, DATASET__NUM_SHOTS=1,
                      OPTIM__MAX_EPOCH=3, TEST__FINAL_MODEL="best_val")
    t.train()
    best = torch.load(os.path.join(out, "prompt_learner", "model-best.pth.tar"), weights_only=True)
    assert best["val_result"] == t.best_result and 1 <= best["epoch"] <= 3
    assert "Deploy the model with the best val performance" in capsys.readouterr().out
    assert torch.equal(t.prompt_learner.ctx.detach().cpu(), best["state_dict"]["ctx"])
    # evaluation without an epoch loads the best-val model, as Dassl's load_model does; with one, that epoch
    e = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "e"), TRAINER__COOP__N_CTX=2, DATASET__NUM_SHOTS=1)
    capsys.readouterr()
    e.load_model(out)
    assert f"Loaded {os.path.join(out, 'prompt_learner', 'model-best.pth.tar')}" in capsys.readouterr().out
    e.load_model(out, epoch=3)
    assert f"Loaded {os.path.join(out, 'prompt_learner', 'model.pth.tar-3')}" in capsys.readouterr().out


def test_loading_a_checkpoint_of_another_shape_is_a_clear_error(tmp_path, eurosat_root, tiny_clip_path):
    out = str(tmp_path / "o")
    t = build_trainer(eurosat_root, tiny_clip_path, out, TRAINER__COOP__CSC=True, TRAINER__COOP__N_CTX=2,
                      DATASET__NUM_SHOTS=1, OPTIM__MAX_EPOCH=1)
    t.train()
    new_classes = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "e"), TRAINER__COOP__CSC=True,
                                TRAINER__COOP__N_CTX=2, DATASET__NUM_SHOTS=1, DATASET__SUBSAMPLE_CLASSES="new")
    with pytest.raises(CasplError, match="holds per-class prompts learned for other classes"):
        new_classes.load_model(out, epoch=1)
    longer = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "l"), TRAINER__COOP__CSC=True,
                           TRAINER__COOP__N_CTX=3, DATASET__NUM_SHOTS=1)
    with pytest.raises(CasplError, match=r"ctx has shape \(10, 2, 64\) but this run needs \(10, 3, 64\)"):
        longer.load_model(out, epoch=1)
    shared = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "s"), TRAINER__COOP__N_CTX=2,
                           DATASET__NUM_SHOTS=1)
    with pytest.raises(CasplError, match=r"ctx has shape \(10, 2, 64\) but this run needs \(2, 64\)"):
        shared.load_model(out, epoch=1)
    with pytest.raises(CasplError, match="checkpoint not found"):
        new_classes.load_model(out, epoch=7)
    with pytest.raises(CasplError, match="was written by trainer Other, not CoOp"):
        ckpt = torch.load(os.path.join(out, "prompt_learner", "model.pth.tar-1"), weights_only=True)
        ckpt["meta"]["trainer"] = "Other"
        torch.save(ckpt, os.path.join(out, "prompt_learner", "model.pth.tar-1"))
        t.load_model(out, epoch=1)


def test_a_non_finite_loss_stops_with_the_step(tmp_path, eurosat_root, tiny_clip_path):
    t = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__COOP__N_CTX=2,
                      DATASET__NUM_SHOTS=1, OPTIM__MAX_EPOCH=2)
    t.epoch, t.batch_idx = 1, 2
    with pytest.raises(CasplError, match="loss is nan at epoch 2, batch 3"):
        t.optimize(torch.tensor(float("nan"), requires_grad=True))


def test_shared_context_evaluates_on_new_classes(tmp_path, eurosat_root, tiny_clip_path):
    """Base-to-new: shared prompts trained on base classes load into a run on the new classes."""
    out = str(tmp_path / "o")
    t = build_trainer(eurosat_root, tiny_clip_path, out, TRAINER__COOP__N_CTX=2, DATASET__NUM_SHOTS=1,
                      OPTIM__MAX_EPOCH=1, DATASET__SUBSAMPLE_CLASSES="base")
    t.train()
    assert t.classnames == ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
                            "Industrial Buildings"]
    e = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "e"), TRAINER__COOP__N_CTX=2,
                      DATASET__NUM_SHOTS=1, DATASET__SUBSAMPLE_CLASSES="new")
    e.load_model(out, epoch=1)
    assert torch.equal(e.prompt_learner.ctx, t.prompt_learner.ctx)
    assert e.classnames[0] == "Pasture Land" and e.num_classes == 5
    assert 0 <= e.test() <= 100
