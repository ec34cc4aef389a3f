"""PromptKD: a PromptSRC-tuned teacher CLIP (its own run), a student image encoder with visual
prompts and a projector, the distillation loss, and the base/new evaluation of its scripts."""
import os

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from caspl import CasplError
from caspl.clip import class_prompts, load_clip
from caspl.testing import make_eurosat
from conftest import ROOT, build_trainer, run_cli
from test_caspl import teacher_path  # noqa: F401  (fixture: a 3-layer, 128-wide tiny CLIP)
from test_open_clip_teacher import open_clip_teachers, reference  # noqa: F401  (fixture: tiny open_clip models)
from test_methods import a_batch

KD_CFG = "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml"
TEACHER_CFG = "configs/trainers/PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx.yaml"


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    return make_eurosat(str(tmp_path_factory.mktemp("promptkd_data")), per_class=6)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, domain, teacher_path):  # noqa: F811
    """The teacher's PromptSRC run on the larger CLIP: base classes, 2 shots, 2 epochs."""
    out = str(tmp_path_factory.mktemp("promptkd_teacher") / "run")
    t = build_trainer(domain, teacher_path, out, trainer="PromptSRC", config=TEACHER_CFG,
                      TRAINER__PROMPTSRC__PROMPT_DEPTH_VISION=3, TRAINER__PROMPTSRC__PROMPT_DEPTH_TEXT=3,
                      DATASET__NUM_SHOTS=2, DATASET__SUBSAMPLE_CLASSES="base", OPTIM__MAX_EPOCH=2,
                      OPTIM__LR=0.05, TEST__NO_TEST=True)
    t.train()
    return out


def student(domain, clip_path, teacher, run, out, **opts):
    return build_trainer(domain, clip_path, out, trainer="PromptKD", config=KD_CFG,
                         TRAINER__PROMPTKD__TEACHER_NAME=teacher, TRAINER__PROMPTKD__TEACHER_CKPT=run,
                         TRAINER__PROMPTKD__PROMPT_DEPTH_VISION=2, **opts)


def test_teacher_is_its_promptsrc_run(tmp_path, domain, tiny_clip_path, teacher_path, teacher_run):  # noqa: F811
    """Its class features and image logits equal the PromptSRC trainer's own on every class."""
    t = student(domain, tiny_clip_path, teacher_path, teacher_run, str(tmp_path / "s"))
    ref = build_trainer(domain, teacher_path, str(tmp_path / "r"), trainer="PromptSRC", config=TEACHER_CFG,
                        TRAINER__PROMPTSRC__PROMPT_DEPTH_VISION=3, TRAINER__PROMPTSRC__PROMPT_DEPTH_TEXT=3)
    ref.load_model(teacher_run, epoch=2)
    batch = a_batch(t, n=6)
    with torch.no_grad():
        torch.testing.assert_close(t.teacher_text, F.normalize(ref.text_features().float(), dim=-1))
        torch.testing.assert_close(t.teacher_logits(batch["img"]), ref.model_inference(batch["img"]).float())
    assert t.teacher_text.shape == (10, 48)  # all classes, base and new, in the teacher's embedding


def test_student_learnables_and_logits(tmp_path, domain, tiny_clip_path, teacher_path, teacher_run):  # noqa: F811
    t = student(domain, tiny_clip_path, teacher_path, teacher_run, str(tmp_path / "s"))
    learnable = {n: tuple(p.shape) for n, p in t.student.named_parameters() if p.requires_grad}
    assert learnable == {"prompts.ctx": (4, 64), "prompts.deep_ctx": (1, 4, 64),
                         "projector.0.weight": (48, 32), "projector.0.bias": (48,), "projector.1.weight": (48,),
                         "projector.1.bias": (48,), "projector.3.weight": (48, 48), "projector.3.bias": (48,)}
    assert not any(p.requires_grad for p in list(t.clip.parameters()) + list(t.teacher.model.parameters()))
    assert not any(p.requires_grad for p in t.teacher.prompts.parameters())
    images = a_batch(t, n=6)["img"]
    t.set_model_mode(False)
    with torch.no_grad():
        feature = t.image_encoder(images, {"vctx": t.student.prompts.group()})
        expected = t.clip.logit_scale.exp() * F.normalize(t.student.projector(feature), dim=-1) @ t.teacher_text.t()
        torch.testing.assert_close(t.student_logits(images), expected)


def test_loss_is_the_reference_kl_over_batch_times_classes(tmp_path, domain, tiny_clip_path, teacher_path,  # noqa: F811
                                                           teacher_run):
    t = student(domain, tiny_clip_path, teacher_path, teacher_run, str(tmp_path / "s"),
                TRAINER__PROMPTKD__TEMPERATURE=2.0, TRAINER__PROMPTKD__KD_WEIGHT=1000.0)
    batch = a_batch(t, n=6)
    t.set_model_mode(True)
    state = {k: v.clone() for k, v in t.student.state_dict().items()}
    with torch.no_grad():
        s, te = t.student_logits(batch["img"]).double(), t.teacher_logits(batch["img"]).double()
    t.student.load_state_dict(state)  # BatchNorm's running statistics as before
    p = torch.softmax(te / 2, 1)
    by_hand = (p * (torch.log(p) - torch.log_softmax(s / 2, 1))).sum() * 4 / s.numel() * 1000
    out = t.forward_backward(batch)
    assert out["loss"] == pytest.approx(by_hand.item(), rel=1e-5) and out["kd"] == out["loss"]
    assert s.shape == (6, 10)  # training logits cover every class


def test_student_learns_to_match_the_teacher(tmp_path, domain, tiny_clip_path, teacher_path, teacher_run):  # noqa: F811
    t = student(domain, tiny_clip_path, teacher_path, teacher_run, str(tmp_path / "s"), OPTIM__MAX_EPOCH=8,
                OPTIM__NAME="adam", OPTIM__LR=0.01, TEST__NO_TEST=True, DATALOADER__TRAIN_X__BATCH_SIZE=10)
    items = t.dm.dataset.train_x
    images = torch.stack([t.dm.tfm_test(Image.open(d.impath).convert("RGB")) for d in items])

    def loss():
        t.set_model_mode(False)
        with torch.no_grad():
            return F.kl_div(F.log_softmax(t.student_logits(images), 1), F.log_softmax(t.teacher_logits(images), 1),
                            reduction="batchmean", log_target=True).item()

    before = loss()
    t.train()
    assert loss() < 0.7 * before


@pytest.mark.parametrize("subsample", ["base", "new"])
def test_evaluation_is_the_half_with_its_own_logits(tmp_path, domain, tiny_clip_path, teacher_path,  # noqa: F811
                                                    teacher_run, subsample):
    t = student(domain, tiny_clip_path, teacher_path, teacher_run, str(tmp_path / "s"),
                DATASET__SUBSAMPLE_CLASSES=subsample)
    lo, hi = (0, 5) if subsample == "base" else (5, 10)
    assert t.classnames == t.all_classnames[lo:hi] and len(t.all_classnames) == 10
    assert len(t.dm.train_loader_x.dataset) == 10 * 3  # the student learns on every class
    labels = [d.label for d in t.dm.test_loader.dataset.items]
    assert sorted(set(labels)) == list(range(5))
    assert len(t.dm.val_loader.dataset) == 5 * len(labels) // 5  # the base half's test images choose the epoch
    images = next(iter(t.dm.test_loader))["img"]
    t.set_model_mode(False)
    with torch.no_grad():
        torch.testing.assert_close(t.model_inference(images), t.student_logits(images)[:, lo:hi])


def test_cli_train_then_evaluate_new_finds_the_teacher(tmp_path, domain, tiny_clip_path, teacher_path,  # noqa: F811
                                                       teacher_run):
    def run(out, *args):
        return run_cli(["--root", domain, "--seed", "1", "--trainer", "PromptKD",
                        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                        "--config-file", os.path.join(ROOT, KD_CFG), "--output-dir", out, *args,
                        "MODEL.BACKBONE.NAME", tiny_clip_path, "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
                        "TRAINER.PROMPTKD.TEACHER_NAME", teacher_path, "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "2",
                        "OPTIM.MAX_EPOCH", "2", "DATASET.NUM_SHOTS", "0", "TRAINER.MODAL", "base2novel",
                        "TRAINER.PROMPTKD.KD_WEIGHT", "1000.0"])

    train, new = str(tmp_path / "train"), str(tmp_path / "new")
    assert run(train, "DATASET.SUBSAMPLE_CLASSES", "base", "TRAINER.PROMPTKD.TEACHER_CKPT", teacher_run) == 0
    assert os.path.isfile(os.path.join(train, "VLPromptLearner", "model-best.pth.tar"))
    assert run(new, "--eval-only", "--model-dir", train, "DATASET.SUBSAMPLE_CLASSES", "new") == 0
    with open(os.path.join(new, "log.txt")) as f:
        log = f.read()
    assert "model-best.pth.tar" in log and "* total: 10" in log  # 5 new classes x 2 test images


@pytest.mark.parametrize("opts,message", [
    ({"TRAINER__PROMPTKD__PROJECT_LAYER": 3}, "PromptKD's projector has 2 layers"),
    ({"TRAINER__MODAL": "fewshot"}, "TRAINER.MODAL must be one of base2novel, cross"),
    ({"TRAINER__PROMPTKD__TEACHER_NAME": "ViT-L/14"}, "was tuned on"),
    ({"TRAINER__MODAL": "cross", "DATASET__SUBSAMPLE_CLASSES": "base"}, "must be all"),
])
def test_bad_settings_are_one_clear_line(tmp_path, domain, tiny_clip_path, teacher_path, teacher_run,  # noqa: F811
                                         opts, message):
    with pytest.raises(CasplError, match=message):
        student(domain, tiny_clip_path, opts.pop("TRAINER__PROMPTKD__TEACHER_NAME", teacher_path), teacher_run,
                str(tmp_path / "s"), **opts)


def test_a_teacher_that_is_not_prompt_tuned_is_refused(tmp_path, domain, tiny_clip_path, teacher_path):  # noqa: F811
    out = str(tmp_path / "coop")
    build_trainer(domain, teacher_path, out, OPTIM__MAX_EPOCH=1, DATASET__NUM_SHOTS=1, TEST__NO_TEST=True).train()
    os.makedirs(os.path.join(out, "VLPromptLearner"))
    os.replace(os.path.join(out, "prompt_learner", "model.pth.tar-1"), os.path.join(out, "VLPromptLearner", "x.tar"))
    with pytest.raises(CasplError, match="written by CoOp; PromptKD's teacher is a PromptSRC"):
        student(domain, tiny_clip_path, teacher_path, os.path.join(out, "VLPromptLearner", "x.tar"),
                str(tmp_path / "s"))


def test_zero_shot_openai_teacher_is_the_clip_as_it_is(tmp_path, domain, tiny_clip_path, teacher_path):  # noqa: F811
    """TEACHER_CKPT zero_shot: the teacher CLIP's own features of the dataset's template, its own scale."""
    t = student(domain, tiny_clip_path, teacher_path, "zero_shot", str(tmp_path / "s"))
    clip = load_clip(teacher_path, device="cpu", fp16=False)
    images = a_batch(t, n=6)["img"]
    with torch.no_grad():
        text = F.normalize(clip.encode_text(clip_tokens(t.all_classnames)).float(), dim=-1)
        torch.testing.assert_close(t.teacher_text, text, rtol=1e-5, atol=1e-6)
        image = F.normalize(clip.encode_image(images).float(), dim=-1)
        torch.testing.assert_close(t.teacher_logits(images), clip.logit_scale.exp() * image @ text.t(),
                                   rtol=1e-5, atol=1e-4)
    assert t.student.projector[3].out_features == 48  # into the teacher's embedding
    assert "its own logit scale" in t.teacher.describe()


def clip_tokens(classnames):
    import clip

    return clip.tokenize(class_prompts("a centered satellite photo of {}.", classnames))


def test_zero_shot_open_clip_teacher_teaches_the_student(tmp_path, domain, tiny_clip_path,  # noqa: F811
                                                         open_clip_teachers):
    """An open_clip teacher (SigLIP-style, its own tokenizer, scale and bias) through train.py:
    the recorded teacher serves the evaluation, and the student comes closer to it."""
    arch = "caspl-test-sigmoid"
    spec = f"open_clip:{arch}/{open_clip_teachers[arch]}"
    t = student(domain, tiny_clip_path, spec, "zero_shot", str(tmp_path / "s"))
    model, tokenizer = reference(arch, open_clip_teachers[arch])
    images = a_batch(t, n=6)["img"]
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer(class_prompts("a centered satellite photo of {}.",
                                                                     t.all_classnames))), dim=-1)
        torch.testing.assert_close(t.teacher_text, text, rtol=1e-5, atol=1e-6)
        image = F.normalize(model.encode_image(images), dim=-1)  # same 32 px input and mean/std here
        expected = model.logit_scale.exp() * image @ text.t() + model.logit_bias
        torch.testing.assert_close(t.teacher_logits(images), expected, rtol=1e-5, atol=1e-4)
    assert t.student.projector[3].out_features == 32

    def run(out, *args):
        return run_cli(["--root", domain, "--seed", "1", "--trainer", "PromptKD",
                        "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                        "--config-file", os.path.join(ROOT, KD_CFG), "--output-dir", out, *args,
                        "MODEL.BACKBONE.NAME", tiny_clip_path, "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
                        "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "2", "DATASET.NUM_SHOTS", "0"])

    train, new = str(tmp_path / "train"), str(tmp_path / "new")
    assert run(train, "OPTIM.MAX_EPOCH", "6", "OPTIM.NAME", "adam", "OPTIM.LR", "0.01", "DATASET.SUBSAMPLE_CLASSES",
               "base", "TRAINER.PROMPTKD.TEACHER_NAME", spec, "TRAINER.PROMPTKD.TEACHER_CKPT", "zero_shot") == 0
    with open(os.path.join(train, "log.txt")) as f:
        losses = [float(line.split("loss ")[1].split(" ")[0]) for line in f if " loss " in line]
    assert losses[-1] < 0.7 * losses[0]
    assert run(new, "--eval-only", "--model-dir", train, "DATASET.SUBSAMPLE_CLASSES", "new") == 0
    with open(os.path.join(new, "log.txt")) as f:
        log = f.read()
    assert f"Teacher {spec} (open_clip)" in log and "* total: 10" in log


def test_an_open_clip_teacher_needs_a_run_or_zero_shot(tmp_path, domain, tiny_clip_path,  # noqa: F811
                                                        open_clip_teachers):
    spec = f"open_clip:caspl-test-clip48/{open_clip_teachers['caspl-test-clip48']}"
    with pytest.raises(CasplError, match="or zero_shot for the teacher as it is"):
        student(domain, tiny_clip_path, spec, "", str(tmp_path / "s2"))


def test_modal_is_a_promptkd_key(tmp_path, domain, tiny_clip_path):
    trainer = build_trainer(domain, tiny_clip_path, str(tmp_path / "o"), TRAINER__MODAL="cross")
    with pytest.raises(CasplError, match=r"TRAINER.MODAL 'cross' \(set in the config, default 'base2novel'; it "
                                         r"belongs to PromptKD\)"):
        trainer.train()
    assert not os.path.exists(tmp_path / "o")  # refused before anything was written


def test_promptkd_has_no_caspl_variant():
    from caspl import TRAINER_REGISTRY

    with pytest.raises(CasplError, match="PromptKD distils a teacher instead"):
        TRAINER_REGISTRY.get("CasPL_PromptKD")
