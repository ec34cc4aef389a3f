"""The trainer base: checkpoint files kept, best-val selection, loading errors, results."""
import json
import os

import pytest
import torch

from caspl import CasplError
from caspl.engine import learnable_state
from caspl.testing import make_eurosat
from conftest import Killed, build_trainer, train_killed_at_save


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


# LAMM_CoOp learns two modules: the context (prompt_learner) and the label tokens (label_learner)
TWO_MODULES = dict(trainer="LAMM_CoOp", config="configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml",
                   TRAINER__COOP__N_CTX=2, DATASET__NUM_SHOTS=1, OPTIM__MAX_EPOCH=3, TEST__NO_TEST=True)


@pytest.fixture(scope="module")
def two_module_run(tmp_path_factory, tiny_clip_path):
    """Data and the learned values of an uninterrupted 3-epoch LAMM_CoOp run."""
    root = make_eurosat(str(tmp_path_factory.mktemp("data")), per_class=10)
    whole = build_trainer(root, tiny_clip_path, str(tmp_path_factory.mktemp("whole")), **TWO_MODULES)
    whole.train()
    return root, {name: learnable_state(module) for name, module in whole._models.items()}


@pytest.mark.parametrize("kill,resumed_epoch", [
    ("file of epoch 1", 0),  # the first module's saved, the second's not: no whole epoch yet
    ("file of epoch 2", 1),
    ("pointer of epoch 2", 2),
    ("removal of epoch 1", 2),
])
def test_a_kill_while_an_epoch_is_saved_resumes_from_the_last_epoch_every_module_saved(
        tmp_path, tiny_clip_path, two_module_run, monkeypatch, kill, resumed_epoch):
    """Killed at the second module's write (its file, its pointer, the removal of its old file),
    the run resumes from the last epoch both modules saved and ends as the uninterrupted run,
    its folder as Dassl leaves it."""
    import caspl.engine.checkpoints
    import caspl.engine.trainer

    root, whole = two_module_run
    out = str(tmp_path / "o")
    first = build_trainer(root, tiny_clip_path, out, **TWO_MODULES)
    second = os.path.join(out, list(first._models)[1])
    what, _, _, epoch = kill.split()
    doomed = {"file": os.path.join(second, f"model.pth.tar-{epoch}"), "pointer": os.path.join(second, "checkpoint"),
              "removal": os.path.join(second, f"model.pth.tar-{epoch}")}[what]
    module, name = {"file": (caspl.engine.trainer, "atomic_save"),
                    "pointer": (caspl.engine.checkpoints, "atomic_write_text"), "removal": (os, "remove")}[what]
    write = getattr(module, name)

    def killed(*args):
        path = args[-1]
        if path == doomed and (what != "pointer" or args[0].strip() == f"model.pth.tar-{epoch}"):
            raise Killed
        return write(*args)

    with monkeypatch.context() as patch:
        patch.setattr(module, name, killed)
        with pytest.raises(Killed):
            first.train()
    resumed = build_trainer(root, tiny_clip_path, out, **TWO_MODULES)
    resumed.train()
    assert resumed.start_epoch == resumed_epoch
    for name, module in resumed._models.items():
        assert all(torch.equal(v, whole[name][k]) for k, v in learnable_state(module).items()), name
        assert sorted(os.listdir(os.path.join(out, name))) == ["checkpoint", "model.pth.tar-3"]
        assert open(os.path.join(out, name, "checkpoint")).read() == "model.pth.tar-3\n"


def test_a_kill_between_two_modules_best_val_checkpoints_deploys_the_uninterrupted_runs_best(
        tmp_path, tiny_clip_path, two_module_run, monkeypatch):
    """Epoch 2 improves the val accuracy; killed between the modules' model-best files of epoch 2,
    the resumed run saves both again (the epoch-1 checkpoint records the best to beat) and
    deploys the model the uninterrupted run deploys."""
    root, _ = two_module_run
    opts = {**TWO_MODULES, "TEST__NO_TEST": False, "TEST__FINAL_MODEL": "best_val"}
    whole = build_trainer(root, tiny_clip_path, str(tmp_path / "whole"), **opts)
    whole.train()
    out = str(tmp_path / "o")
    first = build_trainer(root, tiny_clip_path, out, **opts)
    doomed = os.path.join(out, list(first._models)[1], "model-best.pth.tar")
    train_killed_at_save(first, monkeypatch, lambda ckpt, path: path == doomed and ckpt["epoch"] == 2)
    resumed = build_trainer(root, tiny_clip_path, out, **opts)
    resumed.train()
    assert resumed.start_epoch == 1
    for name, module in resumed._models.items():
        assert torch.load(os.path.join(out, name, "model-best.pth.tar"), weights_only=True)["epoch"] == 2
        expected = learnable_state(whole._models[name])
        assert all(torch.equal(v, expected[k]) for k, v in learnable_state(module).items()), name
