"""tools/pretrain_tiny_clip.py: a few hundred contrastive steps give a tiny CLIP real zero-shot skill."""
import json
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
STUDENT_STEPS, TEACHER_STEPS = 200, 300


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


@pytest.mark.slow
def test_teacher_beats_student_on_new_classes_and_both_beat_chance():
    """The quickstart's premise, on briefly pretrained models: zero-shot on the new half of
    SynthShapes (24 combinations, the dataset's textured backgrounds) works for the student
    and works better for the larger teacher, which saw that domain in pretraining."""
    import pretrain_tiny_clip as tool
    from datasets.synthshapes import class_names

    new = class_names()[len(class_names()) // 2:]
    images, labels = tool.image_pool(new, 6, seed=321)  # textured, like the dataset
    chance = 100.0 / len(new)
    acc = {}
    for preset, steps in (("student", STUDENT_STEPS), ("teacher", TEACHER_STEPS)):
        model, _ = tool.pretrain(preset, steps=steps, log=lambda *a: None)
        acc[preset] = tool.zero_shot_accuracy(model, images, labels, new)
    assert acc["student"] > 4 * chance, acc
    assert acc["teacher"] > acc["student"] + 5, acc
