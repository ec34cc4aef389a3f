"""Zero-shot CLIP with a prompt ensemble (ZeroshotCLIP2): which templates, the averaged
features against CLIP's own text pass, and a run from the command line."""
import os

import clip
import pytest
import torch
import torch.nn.functional as F

from caspl.clip.prompts import encode_token_ids
from caspl.clip.templates import IMAGENET_TEMPLATES, SELECTED_TEMPLATES
from conftest import ROOT, build_trainer, run_cli

ZS_CONFIG = "configs/trainers/ZeroshotCLIP/vit_b16.yaml"


def test_template_lists():
    assert len(IMAGENET_TEMPLATES) == len(set(IMAGENET_TEMPLATES)) == 80
    assert len(SELECTED_TEMPLATES) == 7 and set(SELECTED_TEMPLATES) <= set(IMAGENET_TEMPLATES)
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)


@pytest.mark.parametrize("which, count", [("select", 8), ("imagenet80", 81)])
def test_ensemble_is_the_mean_of_normalised_template_features(eurosat_root, tiny_clip_path, tmp_path, which, count):
    trainer = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "zs2"), trainer="ZeroshotCLIP2",
                            config=ZS_CONFIG, TRAINER__ZSCLIP2__TEMPLATES=which)
    templates = trainer.ensemble_templates()
    assert len(templates) == count and templates[-1] == "a centered satellite photo of {}."  # EuroSAT's own
    with torch.no_grad():
        per_template = [F.normalize(encode_token_ids(trainer.clip, clip.tokenize(
            [t.format(c) for c in trainer.classnames])).float(), dim=-1) for t in templates]
    expected = F.normalize(torch.stack(per_template).mean(0), dim=-1)
    assert torch.allclose(trainer.ensemble.float(), expected, atol=1e-5)
    assert trainer.text_features() is trainer.ensemble


def test_zeroshot_ensemble_from_the_command_line(eurosat_root, tiny_clip_path, tmp_path):
    args = ["--root", eurosat_root, "--trainer", "ZeroshotCLIP2", "--seed", "1",
            "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
            "--config-file", os.path.join(ROOT, ZS_CONFIG), "--eval-only",
            "MODEL.BACKBONE.NAME", tiny_clip_path, "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0"]
    assert run_cli(args[:6] + ["--output-dir", str(tmp_path / "ok")] + args[6:]) == 0
    log = open(tmp_path / "ok" / "log.txt").read()
    assert "Prompt ensemble: 8 templates (select)" in log and "* accuracy:" in log
    assert run_cli(args[:6] + ["--output-dir", str(tmp_path / "bad")] + args[6:] +
                   ["TRAINER.ZSCLIP2.TEMPLATES", "imagenet81"]) == 2
