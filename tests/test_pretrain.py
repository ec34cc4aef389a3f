"""tools/pretrain_tiny_clip.py: a few hundred contrastive steps give a tiny CLIP real zero-shot skill."""
import json
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))


@pytest.mark.slow
def test_pretraining_gives_zero_shot_accuracy_and_is_reused(tmp_path, capsys):
    import pretrain_tiny_clip as tool
    from caspl.clip import load_clip
    from datasets.synthshapes import class_names

    out = str(tmp_path / "student.pt")
    assert tool.main(["student", out, "--steps", "150"]) == 0
    record = json.load(open(out + ".json"))
    chance = 100.0 / len(class_names())
    assert record["zero_shot_accuracy"] > 5 * chance, record["zero_shot_accuracy"]
    model = load_clip(out)  # a state dict the engine loads like any CLIP
    assert model.visual.input_resolution == 32
    images, labels = tool.image_pool(class_names(), 4, seed=123)
    assert tool.zero_shot_accuracy(model, images, labels, class_names()) > 3 * chance
    capsys.readouterr()
    assert tool.main(["student", out, "--steps", "150"]) == 0
    assert "already pretrained with these settings, reused" in capsys.readouterr().out
