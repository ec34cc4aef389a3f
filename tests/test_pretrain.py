"""tools/pretrain_tiny_clip.py: a few hundred contrastive steps give a tiny CLIP real zero-shot
skill in the domains it saw; its record says what it was made with; it is reused."""
import json
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
SMALL_POOL = 30  # photos per class instead of the presets' 300: rendering is the slow part here


STEPS = "200"  # the quickstart's premise holds by then (margins of 17 and 14 points, below)


def small_pools(patch):
    import pretrain_tiny_clip

    for preset in pretrain_tiny_clip.PRESETS:
        patch.setitem(pretrain_tiny_clip.PRESETS, preset,
                      dict(pretrain_tiny_clip.PRESETS[preset], pool_per_class=SMALL_POOL))
    return pretrain_tiny_clip


@pytest.fixture
def tool(monkeypatch):
    return small_pools(monkeypatch)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The student and the teacher, each pretrained once for the module: {preset: file}."""
    folder = tmp_path_factory.mktemp("pretrained")
    with pytest.MonkeyPatch.context() as patch:
        tool = small_pools(patch)
        for preset in ("student", "teacher"):
            assert tool.main([preset, str(folder / f"{preset}.pt"), "--steps", STEPS]) == 0
    return {preset: str(folder / f"{preset}.pt") for preset in ("student", "teacher")}


@pytest.mark.slow
def test_pretraining_gives_zero_shot_accuracy_and_is_reused(pretrained, capsys, tool):
    from caspl.clip import load_clip
    from datasets.synthshapes import DOMAINS, class_names

    out = pretrained["student"]
    record = json.load(open(out + ".json"))
    chance = 100.0 / len(class_names())
    assert set(record["zero_shot_accuracy"]) == set(DOMAINS)
    assert record["zero_shot_accuracy"]["daylight"] > 5 * chance, record["zero_shot_accuracy"]
    assert record["settings"]["steps"] == int(STEPS) and record["settings"]["pool_per_class"] == SMALL_POOL
    model = load_clip(out)  # a state dict the engine loads like any CLIP
    assert model.visual.input_resolution == 32
    images, labels = tool.image_pool(class_names(), 4, seed=123, domains={"daylight": 1.0})
    assert tool.zero_shot_accuracy(model, images, labels, class_names()) > 3 * chance
    weight = model.token_embedding.weight
    used = tool.caption_tokens(class_names())
    assert int((weight.norm(dim=1) > 0).sum()) == len(used[used > 0]) + int(weight[0].norm() > 0)
    capsys.readouterr()
    before = os.stat(out).st_mtime_ns
    assert tool.main(["student", out, "--steps", STEPS]) == 0
    assert "already pretrained with these settings, reused" in capsys.readouterr().out
    assert os.stat(out).st_mtime_ns == before


@pytest.mark.slow
def test_the_teacher_knows_the_lamp_and_the_student_does_not(pretrained):
    """The quickstart's premise, on briefly pretrained models (their records' zero-shot accuracy
    on held-out photos): under the lamp (the dataset's domain) the teacher, which saw it, beats
    the student, which saw only daylight and does worse there than in daylight."""
    acc = {preset: json.load(open(path + ".json"))["zero_shot_accuracy"] for preset, path in pretrained.items()}
    assert acc["student"]["daylight"] > acc["student"]["lamp"] + 10, acc
    assert acc["teacher"]["lamp"] > acc["student"]["lamp"] + 10, acc
