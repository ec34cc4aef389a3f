"""CasPL_Boost with an open_clip teacher (`open_clip:<architecture>/<tag or file>`): tiny
open_clip models from model configs with random weights, saved as local checkpoint files."""
import json
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from caspl import CasplError
from caspl.clip import class_prompts
from conftest import ROOT, run_cli
from test_caspl import BOOST_CFG, SMALL, boost_trainer, distillation_on
from test_methods import a_batch

CONFIGS = {
    # a CLIP at 48 px beside the 32 px student, OpenAI-style towers, a temperature (50) other than the student's (100)
    "caspl-test-clip48": {"embed_dim": 48, "init_logit_scale": math.log(50),
                          "vision_cfg": {"image_size": 48, "layers": 2, "width": 64, "patch_size": 8},
                          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1,
                                       "layers": 2}},
    # SigLIP-style: sigmoid-trained logit scale and bias, its own text tower (CustomTextCLIP)
    "caspl-test-sigmoid": {"embed_dim": 32, "init_logit_scale": math.log(10), "init_logit_bias": -10,
                           "custom_text": True,
                           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
                           "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1,
                                        "layers": 2, "no_causal_mask": True, "pool_type": "last",
                                        "proj_bias": True}},
}


@pytest.fixture(scope="session")
def open_clip_teachers(tmp_path_factory):
    """{architecture: checkpoint file} of tiny open_clip models registered from their configs."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip")
    files = {}
    for seed, (arch, config) in enumerate(CONFIGS.items()):
        with open(folder / f"{arch}.json", "w") as f:
            json.dump(config, f)
        open_clip.add_model_config(str(folder / f"{arch}.json"))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = open_clip.create_model(arch, pretrained=None)
        files[arch] = str(folder / f"{arch}.pt")
        torch.save(model.state_dict(), files[arch])
    return files


def spec(teachers, arch):
    return f"open_clip:{arch}/{teachers[arch]}"


def reference(arch, path):
    import open_clip

    model = open_clip.create_model(arch, pretrained=path).eval()
    return model, open_clip.get_tokenizer(arch)


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_features_and_logits_are_the_open_clip_models_own(tmp_path, eurosat_root, tiny_clip_path,
                                                          open_clip_teachers, arch):
    t = boost_trainer(eurosat_root, tiny_clip_path, spec(open_clip_teachers, arch), str(tmp_path / "o"))
    model, tokenizer = reference(arch, open_clip_teachers[arch])
    assert not any(p.requires_grad for p in t.teacher.parameters())
    size = CONFIGS[arch]["vision_cfg"]["image_size"]
    assert t.teacher_clip.size == (size, size)
    with torch.no_grad():
        # text: its own tokenizer, the dataset's template
        text = model.encode_text(tokenizer(class_prompts("a centered satellite photo of {}.", t.classnames)))
        text = F.normalize(text, dim=-1)
        torch.testing.assert_close(t.teacher_text, text, rtol=1e-5, atol=1e-6)
        # images: the student's normalised 32 px batch, un-normalised, resized to the teacher's size
        # (its interpolation, antialiased, clamped like a PIL image) and normalised with its mean/std
        batch = a_batch(t)
        assert batch["img"].shape[-1] == 32
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (t.cfg.INPUT.PIXEL_MEAN, t.cfg.INPUT.PIXEL_STD))
        pixels = batch["img"] * std + mean
        if size != 32:
            pixels = TF.resize(pixels, [size, size], InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
        pixels = TF.normalize(pixels, model.visual.image_mean, model.visual.image_std)
        image = F.normalize(model.encode_image(pixels), dim=-1)
        torch.testing.assert_close(t.teacher_image_features(batch["img"]), image, rtol=1e-5, atol=1e-5)
        # logits: its own scale, plus its bias (SigLIP)
        logits = model.logit_scale.exp() * image @ text.t()
        if CONFIGS[arch].get("init_logit_bias") is not None:
            logits = logits + model.logit_bias
        torch.testing.assert_close(t.teacher_logits(batch, batch["img"]), logits, rtol=1e-5, atol=1e-4)
    scale = math.exp(CONFIGS[arch]["init_logit_scale"])
    assert t.teacher_clip.scale.item() == pytest.approx(scale, rel=1e-6)
    assert t.teacher_clip.scale.item() != pytest.approx(t.clip.logit_scale.exp().item())  # not the student's
    bias = CONFIGS[arch].get("init_logit_bias")
    assert (t.teacher_clip.bias is None) if bias is None else t.teacher_clip.bias.item() == bias


def test_a_bias_constant_over_classes_leaves_the_distillation_loss_unchanged(tmp_path, eurosat_root, tiny_clip_path,
                                                                           open_clip_teachers):
    from trainers.caspl import distillation_loss

    t = boost_trainer(eurosat_root, tiny_clip_path, spec(open_clip_teachers, "caspl-test-sigmoid"), str(tmp_path / "o"))
    batch = a_batch(t)
    with torch.no_grad():
        student, teacher = t.model_inference(batch["img"]), t.teacher_logits(batch, batch["img"])
    assert distillation_loss(student, teacher, 1.0).item() == pytest.approx(
        distillation_loss(student, teacher - t.teacher_clip.bias, 1.0).item(), rel=1e-5)


def test_checkpoint_file_takes_the_preprocessing_its_architectures_tags_agree_on(
        tmp_path, eurosat_root, tiny_clip_path, open_clip_teachers, monkeypatch):
    """open_clip gives a checkpoint file its default (OpenAI) mean/std; a SigLIP file must get SigLIP's."""
    import open_clip.pretrained as pretrained

    monkeypatch.setitem(pretrained._PRETRAINED, "caspl-test-sigmoid", {"webli": pretrained._slpcfg(hf_hub="x/y/")})
    t = boost_trainer(eurosat_root, tiny_clip_path, spec(open_clip_teachers, "caspl-test-sigmoid"), str(tmp_path / "o"))
    assert t.teacher_clip.mean == (0.5, 0.5, 0.5) and t.teacher_clip.std == (0.5, 0.5, 0.5)


@pytest.mark.slow
def test_phase_one_through_train_py_learns_from_an_open_clip_teacher(tmp_path, eurosat_root, tiny_clip_path,
                                                                     open_clip_teachers):
    teacher = spec(open_clip_teachers, "caspl-test-clip48")
    out = str(tmp_path / "boost")
    code = run_cli(["--root", eurosat_root, "--seed", "1", "--trainer", "CasPL_Boost",
                    "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                    "--config-file", os.path.join(ROOT, BOOST_CFG), "--output-dir", out,
                    "MODEL.BACKBONE.NAME", tiny_clip_path, "TRAINER.CASPL.TEACHER", teacher,
                    "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "6", "OPTIM.NAME", "adam", "OPTIM.LR", "0.01",
                    "TRAINER.CASPL.TEACHER_CACHE", "True", "TRAINER.CASPL.CACHE_VIEWS", "2",
                    "DATALOADER.NUM_WORKERS", "0", "TEST.NO_TEST", "True"]
                   + [x for k, v in SMALL.items() for x in (k.replace("__", "."), str(v))])
    assert code == 0
    assert os.path.isfile(os.path.join(out, "teacher_cache.pt"))
    with open(os.path.join(out, "log.txt")) as f:
        assert f"Teacher {teacher} (open_clip): input 48x48" in f.read()
    ckpt = torch.load(os.path.join(out, "BoostPrompts", "model.pth.tar-6"), weights_only=True)
    assert ckpt["meta"]["boost"]["teacher"] == teacher
    # the distillation loss of the prompts it learned, against the same run's untrained prompts
    t = boost_trainer(eurosat_root, tiny_clip_path, teacher, str(tmp_path / "check"))
    before = distillation_on(t, t.dm.dataset.train_x)
    t.boost.load_state_dict(ckpt["state_dict"])
    after = distillation_on(t, t.dm.dataset.train_x)
    assert after < 0.7 * before, f"distillation loss {before:.4f} -> {after:.4f}"




@pytest.mark.parametrize("arch", list(CONFIGS))
def test_fp16_runs_fp32_weights_under_fp16_autocast(open_clip_teachers, arch):
    """PREC fp16 (on a GPU; here on the CPU): open_clip's own fp16 weight conversion fails on
    SigLIP-style models (a Linear text projection), autocast does not. Images go through fp16
    autocast; the class features, computed once per run, stay fp32 as OpenAI teachers' do."""
    from caspl.clip.teachers import OpenClipTeacher

    normalisation = ((0.48, 0.46, 0.41), (0.27, 0.26, 0.28))
    half, full = (OpenClipTeacher(spec(open_clip_teachers, arch), "cpu", fp16, normalisation) for fp16 in (True, False))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = half.encode_image(images), full.encode_image(images)
        assert a.dtype == torch.float32 and not torch.equal(a, b)
        torch.testing.assert_close(a, b, rtol=0, atol=5e-3)
        assert torch.equal(half.encode_text(["a dog.", "a cat."]), full.encode_text(["a dog.", "a cat."]))


def test_teacher_cache_key_names_the_open_clip_teacher(tmp_path, eurosat_root, tiny_clip_path, open_clip_teachers):
    keys = [boost_trainer(eurosat_root, tiny_clip_path, spec(open_clip_teachers, arch), str(tmp_path / arch),
                          TRAINER__CASPL__TEACHER_CACHE=True).teacher_clip.cache_key() for arch in CONFIGS]
    for arch, key in zip(CONFIGS, keys):
        assert key["teacher"] == f"open_clip:{arch}/{os.path.abspath(open_clip_teachers[arch])}"
        assert key["teacher_bytes"] == os.path.getsize(open_clip_teachers[arch])
    assert keys[0]["teacher_input"] != keys[1]["teacher_input"]


def one_line_error(tmp_path, eurosat_root, tiny_clip_path, teacher, match):
    with pytest.raises(CasplError, match=match) as err:
        boost_trainer(eurosat_root, tiny_clip_path, teacher, str(tmp_path / "o"))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_missing_open_clip_is_one_line_naming_the_install(tmp_path, eurosat_root, tiny_clip_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` raises ImportError
    message = one_line_error(tmp_path, eurosat_root, tiny_clip_path, "open_clip:ViT-B-16/openai", "not installed")
    assert 'pip install -e ".[open_clip]"' in message


@pytest.mark.parametrize("teacher, match", [
    ("open_clip:No-Such-Arch/laion2b_s34b_b88k", "open_clip has no architecture 'No-Such-Arch'"),
    ("open_clip:ViT-B-16",
     r"write open_clip:<architecture or model-config \.json>/<pretrained tag or checkpoint file>"),
    ("open_clip:ViT-B-16/no_such_tag", "'no_such_tag' is neither a file nor a pretrained tag of ViT-B-16 .*openai"),
])
def test_bad_open_clip_specs_are_one_line(tmp_path, eurosat_root, tiny_clip_path, teacher, match):
    one_line_error(tmp_path, eurosat_root, tiny_clip_path, teacher, match)


def test_a_checkpoint_for_another_architecture_is_one_line(tmp_path, eurosat_root, tiny_clip_path, open_clip_teachers):
    one_line_error(tmp_path, eurosat_root, tiny_clip_path,
                   f"open_clip:caspl-test-sigmoid/{open_clip_teachers['caspl-test-clip48']}",
                   "cannot load 'open_clip:caspl-test-sigmoid/")


def test_a_missing_tokenizer_package_is_one_line(tmp_path, eurosat_root, tiny_clip_path, monkeypatch):
    """Models with a Hugging Face tokenizer (SigLIP's) need transformers, open_clip's own optional package."""
    import open_clip

    arch = "caspl-test-hf-tokenizer"
    config = json.loads(json.dumps(CONFIGS["caspl-test-sigmoid"]))
    config["text_cfg"]["hf_tokenizer_name"] = "timm/ViT-B-16-SigLIP"
    with open(tmp_path / f"{arch}.json", "w") as f:
        json.dump(config, f)
    open_clip.add_model_config(str(tmp_path / f"{arch}.json"))
    torch.save(open_clip.create_model(arch).state_dict(), tmp_path / "w.pt")
    monkeypatch.setitem(sys.modules, "transformers", None)
    message = one_line_error(tmp_path, eurosat_root, tiny_clip_path, f"open_clip:{arch}/{tmp_path / 'w.pt'}",
                             "needs the Python package 'transformers'")
    assert message.endswith("pip install transformers")
