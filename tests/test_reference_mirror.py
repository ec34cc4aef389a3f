"""bench/reference_steps.py, the baseline bench/class_count.py measures caspl against, computes
what caspl's trainers compute: from the same weights and prompt values, three training steps
on one batch give the same losses (so the benchmark compares equal work)."""
import os
import sys

import pytest

from caspl.clip import load_clip
from conftest import ROOT, build_trainer
from test_caspl import BOOST_CFG, SMALL, boosted, teacher_path  # noqa: F401 (fixtures)
from test_methods import CONFIGS, a_batch

sys.path.insert(0, os.path.join(ROOT, "bench"))
import reference_steps  # noqa: E402


def promptsrc_settings(c):
    return dict(n_ctx_text=c.N_CTX_TEXT, n_ctx_vision=c.N_CTX_VISION, depth_text=c.PROMPT_DEPTH_TEXT,
                depth_vision=c.PROMPT_DEPTH_VISION, ctx_init=c.CTX_INIT, text_loss_weight=c.TEXT_LOSS_WEIGHT,
                image_loss_weight=c.IMAGE_LOSS_WEIGHT)


@pytest.mark.parametrize("method", ["CoOp", "MaPLe", "PromptSRC", "CasPL_PromptSRC", "CasPL_Boost"])
def test_reference_steps_equal_caspl(tmp_path, boosted, tiny_clip_path, teacher_path, method):  # noqa: F811
    root, boost = boosted
    out, teacher = str(tmp_path / "o"), None
    if method == "CasPL_Boost":
        t = build_trainer(root, tiny_clip_path, out, trainer=method, config=BOOST_CFG,
                          TRAINER__CASPL__TEACHER=teacher_path, **SMALL)
        c = t.cfg.TRAINER.CASPL
        settings = dict(boost_text=c.N_CTX_TEXT, boost_vision=c.N_CTX_VISION, boost_depth_text=c.PROMPT_DEPTH_TEXT,
                        boost_depth_vision=c.PROMPT_DEPTH_VISION, temperature=c.TEMPERATURE,
                        teacher_template=t.dm.dataset.template, ctx_init="")
        teacher = load_clip(teacher_path)
    else:
        config, base = CONFIGS[method.replace("CasPL_", "")]
        extra = {"TRAINER__CASPL__BOOST_CKPT": boost} if method.startswith("CasPL") else {}
        t = build_trainer(root, tiny_clip_path, out, trainer=method, config=config, **base, **extra)
        if method == "CoOp":
            settings = dict(n_ctx=t.cfg.TRAINER.COOP.N_CTX, ctx_init=t.cfg.TRAINER.COOP.CTX_INIT)
        elif method == "MaPLe":
            c = t.cfg.TRAINER.MAPLE
            settings = dict(n_ctx=c.N_CTX, ctx_init=c.CTX_INIT, depth=c.PROMPT_DEPTH)
        else:
            settings = promptsrc_settings(t.cfg.TRAINER.PROMPTSRC)
            if method.startswith("CasPL"):
                m = t.boost_meta
                settings.update(boost_text=m["n_ctx_text"], boost_vision=m["n_ctx_vision"],
                                boost_depth_text=m["depth_text"], boost_depth_vision=m["depth_vision"])
    settings["lr"] = next(iter(t._optims.values())).param_groups[0]["lr"]
    ref = reference_steps.build(method, load_clip(tiny_clip_path), t.classnames, settings, teacher=teacher)
    reference_steps.copy_from_caspl(ref, t)
    assert sum(p.numel() for p in ref.params if p.requires_grad) == \
        sum(p.numel() for m in t._models.values() for p in m.parameters() if p.requires_grad)
    t.set_model_mode(True)
    batch = a_batch(t)
    for _ in range(3):
        ours = t.forward_backward(batch)["loss"]
        assert ref.step(batch["img"], batch["label"]) == pytest.approx(ours, rel=1e-4, abs=1e-5)
