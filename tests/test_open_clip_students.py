"""Any CLIP-like student: the prompt mechanism and every method on open_clip models, offline,
on tiny models with random weights of three families (tests/open_clip_families.py): open_clip's
own towers shaped as OpenAI's CLIP, a SigLIP-style model (timm ViT pooled by attention, a
bidirectional text tower, a logit bias) and an EVA-style one (timm Eva with rotary positions).

The "same weights through both doors" check (an OpenAI state dict read by open_clip against the
same file read as caspl reads OpenAI CLIP) runs for every registered trainer in the precision
matrix (tests/test_precision.py), which builds them all."""
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, build_trainer, run_cli
from open_clip_families import FAMILIES, spec, write_family

from caspl import CasplError
from caspl.clip import ImageEncoder, PromptGroup, TextEncoder, class_prompts, load_backbone
from caspl.testing import make_eurosat

NAMES = ["dog", "tabby cat", "forest", "sea lion"]


@pytest.fixture(scope="session")
def families(tmp_path_factory, tiny_clip_path):
    """{family: open_clip spec}; the openai family holds the tiny OpenAI CLIP's own state dict."""
    folder = str(tmp_path_factory.mktemp("families"))
    return {f: spec(*write_family(folder, f, weights=tiny_clip_path if f == "openai" else None)) for f in FAMILIES}


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    return make_eurosat(str(tmp_path_factory.mktemp("data")), per_class=6, n_classes=4)


def own_tokens(backbone, prompts):
    import open_clip

    return open_clip.get_tokenizer(os.path.splitext(os.path.basename(backbone.name.split(".json/")[0]))[0])(prompts)


# ---------------------------------------------------------------------------- the encoders

@pytest.mark.parametrize("family", list(FAMILIES))
def test_without_prompts_the_encoders_are_the_models_own(families, family):
    """The model's own tokenizer, pooling, causal or bidirectional mask and heads: equal to its
    encode_text / encode_image (to the rounding of open_clip's batch-first layout, which caspl's
    blocks do not use; the timm image towers run as themselves: bit for bit)."""
    backbone = load_backbone(families[family])
    prompts = class_prompts("a photo of a {}.", NAMES)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        text = backbone.model.encode_text(own_tokens(backbone, prompts))
        for shared_prefix in (False, True):
            torch.testing.assert_close(TextEncoder(backbone, prompts, shared_prefix=shared_prefix)(), text,
                                       rtol=1e-5, atol=1e-6)
        image = backbone.model.encode_image(images)
        empty = {"none": PromptGroup([torch.zeros(0, backbone.vision.width)])}  # the prompted path, no tokens
        prompted_path = ImageEncoder(backbone)(images, empty)
    if family == "openai":
        torch.testing.assert_close(prompted_path, image, rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(prompted_path, image)
    assert TextEncoder(backbone, prompts).truncate == (family != "siglip")  # bidirectional: every position counts


POOLINGS = {  # open_clip tower options beyond the families': name -> (vision_cfg, text_cfg) changes
    "average-pooled image, first-token text": ({"pool_type": "avg"}, {"pool_type": "first"}),
    "attention-pooled image, layer scales": ({"attentional_pool": True, "attn_pooler_queries": 4,
                                              "attn_pooler_heads": 1, "ls_init_value": 0.5},
                                             {"ls_init_value": 0.5}),
    "open_clip's custom attention blocks": ({"block_type": "custom", "qk_norm": True},
                                            {"block_type": "custom", "qk_norm": True}),
}


@pytest.mark.parametrize("variant", list(POOLINGS))
def test_open_clips_other_poolings_and_layer_scales(tmp_path, variant):
    """Image pooling is the tower's own (class token, average, attention pooler) over its own
    tokens; text pooling its own (EOS, first, last); layer scales enter every block."""
    import json

    import open_clip

    from open_clip_families import CONFIGS

    vision, text = POOLINGS[variant]
    base = CONFIGS[FAMILIES["openai"]]
    config = {**base, "vision_cfg": {**base["vision_cfg"], **vision}, "text_cfg": {**base["text_cfg"], **text}}
    path = tmp_path / f"caspl-variant-{list(POOLINGS).index(variant)}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(str(path))
    torch.save(open_clip.create_model(path.stem).state_dict(), tmp_path / "w.pt")
    backbone = load_backbone(spec(str(path), str(tmp_path / "w.pt")))
    prompts = class_prompts("a photo of a {}.", NAMES)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(TextEncoder(backbone, prompts)(), backbone.model.encode_text(
            own_tokens(backbone, prompts)), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(backbone.encode_image(images), backbone.model.encode_image(images),
                                   rtol=1e-5, atol=1e-6)
        prompted = ImageEncoder(backbone)(images, {"v": PromptGroup([torch.randn(2, backbone.vision.width)])})
        text = TextEncoder(backbone, class_prompts("{ctx} {}.", NAMES), {"ctx": 2})
        features = text({"ctx": PromptGroup([torch.randn(2, backbone.text.width)])})
    assert prompted.shape == (2, 32) and torch.isfinite(prompted).all()
    assert features.shape == (len(NAMES), 32) and torch.isfinite(features).all()
    assert backbone.text.plain == ("custom" not in variant)  # the shared prefix needs the plain blocks' weights


def block_inputs(backbone):
    """Hooks recording each image block's input (as its first norm sees it)."""
    seen = []
    norms = [getattr(b, "ln_1", None) or b.norm1 for b in backbone.vision.blocks]
    return seen, [n.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach())) for n in norms]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_visual_tokens_follow_the_towers_own_and_deep_ones_replace_them(families, family):
    backbone = load_backbone(families[family])
    width = backbone.vision.width
    torch.manual_seed(0)
    deep = PromptGroup([torch.randn(3, width), torch.randn(3, width)])
    per_image = PromptGroup([torch.randn(2, 2, width)], per="image")
    images = torch.randn(2, 3, 32, 32)
    n_fixed = backbone.vision.embed(images)[0].shape[1]  # class/register tokens and patches
    assert n_fixed == {"openai": 17, "siglip": 16, "eva": 17}[family]
    seen, hooks = block_inputs(backbone)
    try:
        with torch.no_grad():
            out = ImageEncoder(backbone)(images, {"deep": deep, "img": per_image})
    finally:
        for h in hooks:
            h.remove()
    layer1 = seen[1] if backbone.vision.seq_dim == 1 else seen[1].transpose(0, 1)
    assert layer1.shape[1] == n_fixed + 3 + 2
    assert torch.equal(layer1[:, n_fixed:n_fixed + 3], deep.layers[1].expand(2, -1, -1))  # replaced at layer 1
    with torch.no_grad():
        plain = backbone.encode_image(images)
    assert out.shape == plain.shape and not torch.allclose(out, plain)
    # the prompts learn: gradients reach every layer's tokens
    layers = [t.clone().requires_grad_(True) for t in deep.layers]
    ImageEncoder(backbone)(images, {"deep": PromptGroup(layers)}).pow(2).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in layers)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_text_groups_shared_per_class_and_per_image(families, family):
    backbone = load_backbone(families[family])
    width = backbone.text.width
    torch.manual_seed(0)
    prompts = class_prompts("{ctx} {}.", NAMES)
    encoder = TextEncoder(backbone, prompts, {"ctx": 2})
    shared = PromptGroup([torch.randn(2, width), torch.randn(2, width)])
    per_class = PromptGroup([shared.layers[0].expand(len(NAMES), -1, -1), shared.layers[1].expand(len(NAMES), -1, -1)],
                            per="class")
    per_image = PromptGroup([shared.layers[0].expand(3, -1, -1), shared.layers[1].expand(3, -1, -1)], per="image")
    with torch.no_grad():
        a = encoder({"ctx": shared})
        b = encoder({"ctx": per_class})
        c = encoder({"ctx": per_image})
        plain = TextEncoder(backbone, prompts, {"ctx": 2}, shared_prefix=False)({"ctx": shared})
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c, a.expand(3, -1, -1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, plain, rtol=1e-5, atol=1e-5)  # the shared-prefix pass, where it applies
    # the shared prefix: causal towers only
    assert (encoder.prefix_length({"ctx": shared}) > 0) == (family != "siglip")


# ---------------------------------------------------------------------------- every method

METHODS = {  # trainer: (config, options)
    "CoOp": ("CoOp/vit_b16_ep50_ctxv1.yaml", {}),
    "CoCoOp": ("CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", {}),
    "IVLP": ("IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml", {"TRAINER.IVLP.PROMPT_DEPTH_TEXT": 2,
                                                         "TRAINER.IVLP.PROMPT_DEPTH_VISION": 2}),
    "MaPLe": ("MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", {"TRAINER.MAPLE.PROMPT_DEPTH": 2}),
    "PromptSRC": ("PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", {"TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT": 2,
                                                                   "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION": 2}),
    "VPT": ("VPT/vit_b16_c2_ep5_batch4_4.yaml", {"TRAINER.VPT.PROMPT_DEPTH_VISION": 2}),
    "LAMM": ("LAMM/vit_b16_ep50_ctxv1.yaml", {}),
    "LAMM_MaPLe": ("LAMM_MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", {"TRAINER.MAPLE.PROMPT_DEPTH": 2}),
    "ZeroshotCLIP2": ("ZeroshotCLIP/vit_b16.yaml", {}),
    "LinearProbeCLIP": ("LinearProbeCLIP/vit_b16.yaml", {"TRAINER.LINEAR_PROBE.SEARCH_STEPS": 0,
                                                         "TRAINER.LINEAR_PROBE.C_GRID": (1.0,)}),
}


def method_trainer(domain, student, name, out, prec, **extra):
    config, opts = METHODS[name]
    options = {k.replace(".", "__"): v for k, v in opts.items()}
    from caspl import TRAINER_REGISTRY

    section = TRAINER_REGISTRY.get(name).CONFIG_NAME
    return build_trainer(domain, student, out, trainer=name, config=os.path.join(ROOT, "configs/trainers", config),
                         **{f"TRAINER__{section}__PREC": prec}, DATASET__NUM_SHOTS=2, **options, **extra)


@pytest.mark.slow
@pytest.mark.parametrize("prec", ["fp32", "fp16", "amp"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_method_trains_and_evaluates(domain, families, tmp_path, monkeypatch, family, prec):
    """One training step (the learnable tokens move, the loss is finite) and one evaluated batch
    per method, on each family, in fp32, fp16 (half weights, as on a GPU: CASPL_CPU_AS_GPU) and
    amp."""
    from caspl.engine.precision import CPU_AS_GPU

    monkeypatch.setenv(CPU_AS_GPU, "1" if prec == "fp16" else "0")
    for name in METHODS:
        t = method_trainer(domain, families[family], name, str(tmp_path / name), prec)
        assert t.clip.dtype == (torch.float16 if prec == "fp16" else torch.float32)
        batch = next(iter(t.dm.train_loader_x))
        if name == "LinearProbeCLIP":
            t.train()
        elif name != "ZeroshotCLIP2":
            before = {k: v.detach().clone() for k, v in t.prompt_learner.state_dict().items()} \
                if hasattr(t, "prompt_learner") else None
            t.set_model_mode(True)
            loss = t.forward_backward(batch)["loss"]
            assert torch.isfinite(torch.tensor(loss)), (name, loss)
            if before is not None:
                after = t.prompt_learner.state_dict()
                assert any(not torch.equal(before[k], after[k]) for k in before), f"{name}: nothing learned"
        t.set_model_mode(False)
        with torch.no_grad(), t.autocast():
            logits = t.model_inference(batch["img"])
        assert logits.shape == (len(batch["img"]), t.num_classes) and torch.isfinite(logits).all(), name


def test_phase_one_with_an_open_clip_teacher_on_an_open_clip_student(domain, families, tmp_path):
    from test_caspl import BOOST_CFG

    t = build_trainer(domain, families["eva"], str(tmp_path / "o"), trainer="CasPL_Boost", config=BOOST_CFG,
                      TRAINER__CASPL__TEACHER=families["siglip"], TRAINER__CASPL__PROMPT_DEPTH_TEXT=2,
                      TRAINER__CASPL__PROMPT_DEPTH_VISION=2, DATALOADER__TRAIN_X__BATCH_SIZE=8)
    before = {k: v.clone() for k, v in t.boost.state_dict().items()}
    t.set_model_mode(True)
    loss = t.forward_backward(next(iter(t.dm.train_loader_x)))["loss"]
    assert loss > 0 and all(not torch.equal(before[k], v) for k, v in t.boost.state_dict().items())
    assert t.teacher_clip.bias is not None  # the SigLIP-style teacher's own bias


# ---------------------------------------------------------------------------- refusals

def test_visual_prompts_on_a_tower_that_is_not_a_vit_are_one_line(domain, tmp_path):
    import json

    import open_clip

    config = tmp_path / "caspl-resnet.json"
    config.write_text(json.dumps({"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1],
                                                                  "width": 64},
                                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1,
                                               "layers": 2}}))
    open_clip.add_model_config(str(config))
    torch.save(open_clip.create_model("caspl-resnet").state_dict(), tmp_path / "rn.pt")
    student = spec(str(config), str(tmp_path / "rn.pt"))
    with pytest.raises(CasplError, match=r"VPT's prompts enter the image encoder: .* must be a ViT \(its image "
                                         r"encoder is a ModifiedResNet\)") as err:
        method_trainer(domain, student, "VPT", str(tmp_path / "vpt"), "fp32")
    assert "\n" not in str(err.value)
    t = method_trainer(domain, student, "CoOp", str(tmp_path / "coop"), "fp32")  # text prompts only: runs
    t.set_model_mode(True)
    assert torch.isfinite(torch.tensor(t.forward_backward(next(iter(t.dm.train_loader_x)))["loss"]))


def test_an_input_pipeline_other_than_the_models_is_one_line(domain, families, tmp_path):
    with pytest.raises(CasplError, match=r"trained with another input pipeline than INPUT gives \(INPUT.PIXEL_MEAN, "
                                         r"INPUT.PIXEL_STD\); set INPUT.PIXEL_MEAN \"\[0.48145466"):
        method_trainer(domain, families["eva"], "CoOp", str(tmp_path / "o"), "fp32",
                       INPUT__PIXEL_MEAN=[0.485, 0.456, 0.406], INPUT__PIXEL_STD=[0.229, 0.224, 0.225])


@pytest.mark.parametrize("config, match", [
    ("{not json", "cannot read the model config"),
    ('{"embed_dim": 32}', "is not an open_clip model config"),
    (None, "does not exist"),
])
def test_a_bad_model_config_is_one_line(tmp_path, tiny_clip_path, config, match):
    path = tmp_path / "caspl-bad.json"
    if config is not None:
        path.write_text(config)
    with pytest.raises(CasplError, match=match) as err:
        load_backbone(spec(str(path), tiny_clip_path))
    assert "\n" not in str(err.value)


def test_fp16_is_half_weights_but_the_logit_scale_and_bias(families):
    backbone = load_backbone(families["siglip"], fp16=True)
    assert backbone.dtype == torch.float16
    dtypes = {n: p.dtype for n, p in backbone.model.named_parameters()}
    assert dtypes.pop("logit_scale") == dtypes.pop("logit_bias") == torch.float32
    assert set(dtypes.values()) == {torch.float16}  # timm's embeddings and norms, the Linear text projection
    images = torch.randn(2, 3, 32, 32)
    group = {"v": PromptGroup([torch.randn(2, backbone.vision.width)])}
    with torch.no_grad():
        half = ImageEncoder(backbone)(images, group)
        full = ImageEncoder(load_backbone(families["siglip"]))(images, group)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=0, atol=2e-2)


# ---------------------------------------------------------------------------- CasPL end to end

def cli(out, *args, rc=0):
    """train.py in-process; its log."""
    assert run_cli(["--output-dir", out, *map(str, args)]) == rc
    with open(os.path.join(out, "log.txt")) as f:
        return f.read()


@pytest.mark.slow
def test_caspl_end_to_end_on_an_open_clip_student_from_the_command_line(domain, families, tiny_clip_path, tmp_path):
    """Phase 1 (an open_clip student, an OpenAI teacher), phase 2 with PromptSRC, evaluated on
    base and new classes; the boosting prompts refuse a student of another family."""
    student = families["eva"]
    configs = os.path.join(ROOT, "configs/trainers")
    common = ["--root", domain, "--seed", "1", "--dataset-config-file", f"{ROOT}/configs/datasets/eurosat.yaml",
              "DATASET.NUM_SHOTS", "2", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1"]
    boost = str(tmp_path / "boost")
    cli(boost, "--trainer", "CasPL_Boost", "--config-file",
        f"{configs}/CasPL_Boost/vit_b16_c2_ep20_batch128_lr0025_4+4ctx_l3.yaml", *common, "MODEL.BACKBONE.NAME",
        student, "TRAINER.CASPL.TEACHER", tiny_clip_path, "TRAINER.CASPL.PROMPT_DEPTH_TEXT", "2",
        "TRAINER.CASPL.PROMPT_DEPTH_VISION", "2", "TEST.NO_TEST", "True", "DATALOADER.TRAIN_X.BATCH_SIZE", "8")
    promptsrc = ["--trainer", "CasPL_PromptSRC",
                 "--config-file", f"{configs}/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", *common,
                 "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2",
                 "TRAINER.CASPL.BOOST_CKPT", boost]
    phase2 = str(tmp_path / "phase2")
    base = cli(phase2, *promptsrc, "MODEL.BACKBONE.NAME", student, "DATASET.SUBSAMPLE_CLASSES", "base")
    assert "* accuracy" in base and "* total: 4" in base  # the 2 base classes' test images
    new = cli(str(tmp_path / "new"), "--model-dir", phase2, "--eval-only", *promptsrc, "MODEL.BACKBONE.NAME", student,
              "DATASET.SUBSAMPLE_CLASSES", "new")
    assert "* accuracy" in new and "* total: 4" in new
    # a student of another family: one line naming the one the prompts were made for
    other = cli(str(tmp_path / "other"), *promptsrc, "MODEL.BACKBONE.NAME", families["openai"],
                "DATASET.SUBSAMPLE_CLASSES", "base", rc=2)
    assert f"were made for student {student}" in other.splitlines()[-1]


@pytest.mark.slow
def test_promptkd_with_a_promptsrc_tuned_open_clip_teacher_from_the_command_line(domain, families, tiny_clip_path,
                                                                                 tmp_path):
    teacher = families["siglip"]
    configs = os.path.join(ROOT, "configs/trainers")
    common = ["--root", domain, "--seed", "1", "--dataset-config-file", f"{ROOT}/configs/datasets/eurosat.yaml",
              "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1"]
    tuned = str(tmp_path / "teacher")
    cli(tuned, "--trainer", "PromptSRC", "--config-file", f"{configs}/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
        *common, "MODEL.BACKBONE.NAME", teacher, "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base",
        "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2",
        "TEST.NO_TEST", "True")
    log = cli(str(tmp_path / "student"), "--trainer", "PromptKD", "--config-file",
              f"{configs}/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml", *common, "MODEL.BACKBONE.NAME", tiny_clip_path,
              "TRAINER.PROMPTKD.TEACHER_NAME", teacher, "TRAINER.PROMPTKD.TEACHER_CKPT", tuned,
              "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "2", "DATASET.SUBSAMPLE_CLASSES", "base")
    assert f"PromptKD teacher: {teacher} with the prompts of" in log and "* accuracy" in log


def test_logits_carry_the_models_own_bias(domain, families, tmp_path):
    t = method_trainer(domain, families["siglip"], "CoOp", str(tmp_path / "o"), "fp32")
    images = next(iter(t.dm.train_loader_x))["img"]
    with torch.no_grad():
        image, text = t.image_features(images), t.text_features()
        expected = t.clip.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t() - 10
        torch.testing.assert_close(t.model_inference(images), expected)


class FakeHuggingFaceTokenizer:
    """The interface open_clip's HFTokenizer gives caspl (SigLIP's real one needs transformers and a
    download): `tokenizer` (bos/eos/pad ids, encode, decode), `clean_fn`, and calling it on texts."""

    def __init__(self, bos, context_length):
        words = "a photo of dog tabby cat".split()
        vocab = {w: 10 + i for i, w in enumerate(words)}
        bos_id, eos_id, pad_id = bos, 1, 0

        class HF:
            bos_token_id, eos_token_id, pad_token_id = bos_id, eos_id, pad_id

            def encode(self, text, add_special_tokens=True):
                ids = [vocab[w] for w in text.replace(".", "").split()]
                specials = add_special_tokens
                return ([bos_id] if specials and bos_id is not None else []) + ids + ([eos_id] if specials else [])

            def decode(self, ids):
                return " ".join(w for w, i in vocab.items() if i in ids)

        self.tokenizer, self.clean_fn, self.context_length = HF(), str.lower, context_length

    def __call__(self, texts):
        rows = [self.tokenizer.encode(self.clean_fn(t)) for t in texts]
        return torch.tensor([r + [0] * (self.context_length - len(r)) for r in rows])


@pytest.mark.parametrize("bos", [None, 2])
def test_a_hugging_face_tokenizer_is_read_through_its_own_ids(families, bos):
    from caspl.clip.backbone import open_clip_tokenizer

    backbone = load_backbone(families["siglip"])
    fake = FakeHuggingFaceTokenizer(bos, backbone.text.context_length)
    backbone.tokenizer = open_clip_tokenizer(fake, backbone.text.context_length)
    prompts = ["A photo of a dog.", "a photo of a tabby cat."]
    encoder = TextEncoder(backbone, prompts)
    assert torch.equal(encoder.token_ids, fake(prompts))  # the sequences its own call makes
    slotted = TextEncoder(backbone, ["{ctx} a dog."], {"ctx": 2})
    first = 0 if bos is None else 1
    assert slotted.pos_ctx.tolist() == [[first, first + 1]]
    assert slotted.token_ids[0, first + 2:first + 5].tolist() == [10, 13, 1]  # "a dog", then its end token
