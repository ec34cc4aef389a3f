"""The exact shortcuts that make training fast, and precision: frozen features computed once
per run (after the weights are loaded) and never per step, one CLIP in memory where the same
weights serve with and without prompts; amp's dtype choice; a NaN loss stops with the step
named, or is skipped and counted when the config says so."""
import clip
import pytest
import torch

from caspl import CasplError
from caspl.clip.tiny import save_tiny_clip
from conftest import ROOT, run_cli
from test_caspl import boost_trainer
from test_methods import a_batch, make


def clip_models(trainer):
    """Every clip.model.CLIP reachable from the trainer's attributes and their modules."""
    found = {}
    for value in vars(trainer).values():
        modules = value.modules() if isinstance(value, torch.nn.Module) else []
        for m in modules:
            if isinstance(m, clip.model.CLIP):
                found[id(m)] = m
    return list(found.values())


def count_calls(module, counter):
    return module.register_forward_hook(lambda *a: counter.append(1))


def test_promptsrc_anchor_is_computed_once_and_shares_the_clip(tmp_path, eurosat_root, tiny_clip_path):
    t = make("PromptSRC", eurosat_root, tiny_clip_path, str(tmp_path / "o"))
    anchor = t.frozen_text.clone()
    calls = []
    hook = count_calls(t.clip.model.transformer.resblocks[0].mlp, calls)  # the text transformer
    t.text_encoder.shared_prefix = False  # one pass = one call of each block
    t.frozen_text_features = lambda templates: pytest.fail("the text anchor was recomputed in a step")
    t.set_model_mode(True)
    t.forward_backward(a_batch(t))
    hook.remove()
    assert len(calls) == 1  # the prompted text pass alone (the anchor was not recomputed)
    assert torch.equal(t.frozen_text, anchor)
    assert len(clip_models(t)) == 1  # the frozen features come from the same CLIP, without prompts


def test_boost_teacher_text_is_computed_once(tmp_path, eurosat_root, tiny_clip_path):
    teacher = save_tiny_clip(str(tmp_path / "teacher.pt"), embed_dim=48, vision_width=128, text_width=128,
                             vision_layers=3, text_layers=3, seed=5)
    t = boost_trainer(eurosat_root, tiny_clip_path, teacher, str(tmp_path / "b"))
    calls = []
    hook = count_calls(t.teacher.model.transformer.resblocks[0].mlp, calls)
    t.set_model_mode(True)
    batch = next(iter(t.dm.train_loader_x))
    t.forward_backward(batch)
    hook.remove()
    assert calls == []  # the teacher's class features were computed at build time, after loading
    assert len(clip_models(t)) == 2  # student and teacher, no third copy


def test_amp_dtype_follows_the_device(tmp_path, eurosat_root, tiny_clip_path, monkeypatch):
    from caspl.engine.precision import amp_dtype

    assert amp_dtype(torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(torch.device("cuda")) == torch.float16  # then with a gradient scaler
    t = make("CoOp", eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__COOP__PREC="amp")
    assert t.amp_dtype == torch.bfloat16 and t.scaler is None
    t.set_model_mode(True)
    out = t.forward_backward(a_batch(t))
    assert torch.isfinite(torch.tensor(out["loss"]))
    assert all(p.dtype == torch.float32 for p in t.prompt_learner.parameters())


def test_nonfinite_loss_stops_naming_the_step_or_is_skipped(tmp_path, eurosat_root, tiny_clip_path):
    t = make("CoOp", eurosat_root, tiny_clip_path, str(tmp_path / "o"))
    t.epoch, t.batch_idx = 2, 6
    before = {k: v.clone() for k, v in t.prompt_learner.state_dict().items()}
    nan = t.prompt_learner.ctx.sum() * float("nan")
    with pytest.raises(CasplError, match=r"loss is nan at epoch 3, batch 7; stopping \(TRAIN.SKIP_NONFINITE_LOSS"):
        t.optimize(nan)
    skipping = make("CoOp", eurosat_root, tiny_clip_path, str(tmp_path / "s"), TRAIN__SKIP_NONFINITE_LOSS=True)
    assert skipping.optimize(skipping.prompt_learner.ctx.sum() * float("inf")) is False
    assert skipping.skipped_steps == 1
    assert all(torch.equal(before[k], v) for k, v in skipping.prompt_learner.state_dict().items())


PLUGIN = '''
import torch
from caspl import TRAINER_REGISTRY
from trainers.coop import CoOp


@TRAINER_REGISTRY.register()
class NaNAtBatch2(CoOp):
    """CoOp whose loss is NaN on the second batch of every epoch."""
    def forward_backward(self, batch):
        if self.batch_idx == 1:
            loss = self.prompt_learner.ctx.sum() * float("nan")
            return {"loss": loss.item()} if self.optimize(loss) else {"loss": float("nan")}
        return super().forward_backward(batch)
'''


@pytest.mark.parametrize("skip", [False, True])
def test_nan_loss_from_the_command_line(tmp_path, eurosat_root, tiny_clip_path, skip):
    import os

    plugin = tmp_path / "nan_plugin.py"
    name = f"NaNAtBatch2Skip{skip}"  # one registration per test in this process
    plugin.write_text(PLUGIN.replace("NaNAtBatch2", name))
    out = tmp_path / "run"
    code = run_cli(["--root", eurosat_root, "--seed", "1", "--trainer", name, "--plugin", str(plugin),
                    "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                    "--config-file", os.path.join(ROOT, "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml"),
                    "--output-dir", str(out), "MODEL.BACKBONE.NAME", tiny_clip_path, "INPUT.SIZE", "(32, 32)",
                    "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "8",
                    "OPTIM.MAX_EPOCH", "2", "TRAIN.SKIP_NONFINITE_LOSS", str(skip)])
    log = (out / "log.txt").read_text()
    if skip:
        assert code == 0
        assert "loss is nan at epoch 2, batch 2; step skipped (2 so far)" in log
        assert "2 steps skipped for a non-finite loss" in log and "* accuracy" in log
    else:
        assert code == 2
        assert "error: loss is nan at epoch 1, batch 2; stopping" in log
