"""The laptop world as shipped: the tiny student and teacher CLIPs in models/synthshapes are the
files their checksums name and the tool's presets describe, the premise holds on fresh photos
(the student knows daylight and not the lamp, the teacher knows both), a short boosting run
with the quickstart's config moves the student toward the teacher on held-out photos, and the
quickstart refuses an output folder whose finished runs another world made."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import datasets.synthshapes as S
from caspl.clip import load_clip
from caspl.data.manager import ImageDataset, collate_readable
from conftest import ROOT, build_trainer, snapshot

sys.path.insert(0, os.path.join(ROOT, "tools"))
MODELS = os.path.join(ROOT, "models", "synthshapes")
STUDENT, TEACHER = os.path.join(MODELS, "student.pt"), os.path.join(MODELS, "teacher.pt")


def test_shipped_models_match_their_checksums_and_the_tools_presets():
    import pretrain_tiny_clip as tool

    with open(os.path.join(MODELS, "SHA256SUMS")) as f:
        sums = dict(reversed(line.split()) for line in f if line.strip())
    assert set(sums) == {"student.pt", "teacher.pt", "student.pt.json", "teacher.pt.json"}
    for name, digest in sums.items():
        with open(os.path.join(MODELS, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
    for preset in ("student", "teacher"):
        with open(os.path.join(MODELS, f"{preset}.pt.json")) as f:
            settings = json.load(f)["settings"]
        assert settings["preset"] == preset and settings["classes"] == S.class_names()
        expected = json.loads(json.dumps(tool.PRESETS[preset]))
        assert {k: settings[k] for k in expected} == expected
        with open(os.path.join(MODELS, "README.md")) as f:
            assert f"python tools/pretrain_tiny_clip.py {preset} models/synthshapes/{preset}.pt" in f.read()


def test_unread_words_have_zero_embeddings():
    import pretrain_tiny_clip as tool

    weight = torch.load(STUDENT, weights_only=True)["token_embedding.weight"]
    used = tool.caption_tokens(S.class_names())
    assert (weight[used[used > 0]].norm(dim=1) > 0).all()
    unused = torch.ones(len(weight), dtype=torch.bool)
    unused[used] = False
    assert unused.sum() > 49000 and (weight[unused] == 0).all()


def test_the_premise_on_fresh_photos():
    """Zero-shot over all 48 classes on photos the models never saw: the student is good in
    daylight and poor under the lamp, where it gets about half of the colours wrong (each
    toward the next hue); the teacher is good in both."""
    import pretrain_tiny_clip as tool

    names = S.class_names()
    acc = {}
    for who, path in (("student", STUDENT), ("teacher", TEACHER)):
        model = load_clip(path).float().eval()
        for domain in S.DOMAINS:
            images, labels = tool.image_pool(names, 3, seed=4242, domains={domain: 1.0})
            acc[who, domain] = tool.zero_shot_accuracy(model, images, labels, names)
    assert acc["student", "daylight"] > 90 and acc["teacher", "daylight"] > 90, acc
    assert acc["student", "lamp"] < 65 and acc["teacher", "lamp"] > 90, acc


@pytest.fixture(scope="module")
def small_synthshapes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth"))
    S.generate(os.path.join(root, "synthshapes"), sizes={"train": 20, "val": 1, "test": 6}, log=lambda *a: None)
    return root


def agreement_and_kl(trainer, items, boosted):
    """Over `items` (test transform): the share of images on which the student's and the
    teacher's top classes agree, and the phase-1 loss KL(teacher || student)."""
    from trainers.caspl import distillation_loss

    loader = DataLoader(ImageDataset(items, trainer.dm.tfm_test), batch_size=100, collate_fn=collate_readable)
    agree, kl, n = 0.0, 0.0, 0
    with torch.no_grad():
        template_text = trainer.frozen_text_features([trainer.dm.dataset.template])[0]
        for b in loader:
            images = b["img"]
            if boosted:
                student = trainer.model_inference(images)
            else:
                student = trainer.logits(trainer.frozen_image_features(images), template_text)
            teacher = trainer.teacher_logits(b, images)
            agree += (student.argmax(1) == teacher.argmax(1)).float().sum().item()
            kl += distillation_loss(student.float(), teacher.float(), 1.0).item() * len(images)
            n += len(images)
    return 100 * agree / n, kl / n


def test_a_short_boosting_run_moves_the_student_toward_the_teacher(tmp_path, small_synthshapes):
    """The quickstart's phase-1 config for 12 epochs on 960 unlabeled photos (a third of its
    data): on the held-out test photos the KL to the teacher falls and the agreement with it
    rises, against both the untrained boosting prompts and the plain student."""
    t = build_trainer(small_synthshapes, STUDENT, str(tmp_path / "boost"), trainer="CasPL_Boost",
                      config="configs/quickstart/caspl_boost.yaml", dataset="synthshapes",
                      TRAINER__CASPL__TEACHER=TEACHER, OPTIM__MAX_EPOCH=12, TEST__NO_TEST=True)
    held_out = t.dm.dataset.test
    assert len(t.dm.dataset.train_x) == 48 * 20 and len(held_out) == 48 * 6
    plain = agreement_and_kl(t, held_out, boosted=False)
    start = agreement_and_kl(t, held_out, boosted=True)
    t.train()
    end = agreement_and_kl(t, held_out, boosted=True)
    for before in (plain, start):
        assert end[0] > before[0] + 10, (plain, start, end)
        assert end[1] < 0.75 * before[1], (plain, start, end)
    assert np.isfinite(end[1])


@pytest.mark.parametrize("stale", ["runs without a stamp", "another world's stamp"])
def test_the_quickstart_refuses_an_output_folder_of_another_world(tmp_path, stale):
    """Finished runs are skipped, so an OUT whose runs another world made (earlier models,
    configs or dataset code) is refused at once, with one line, and left as it was."""
    out = tmp_path / "out"
    (out / "zeroshot" / "student" / "base").mkdir(parents=True)
    (out / "zeroshot" / "student" / "base" / "results.json").write_text("{}")
    if stale == "another world's stamp":
        (out / "world").write_text("0123456789abcdef\n")
    before = snapshot(out)
    proc = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=ROOT, env={**os.environ, "OUT": str(out)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"error: {out} holds runs of ") and "another OUT" in errors[0]
    assert "zero-shot CLIP" not in proc.stdout  # stopped before any run
    assert snapshot(out) == before
