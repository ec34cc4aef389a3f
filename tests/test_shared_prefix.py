"""The shared-prefix text pass (MODEL.TEXT_SHARED_PREFIX) computes what the plain pass
computes, for every method: text features, every loss term and every gradient, in fp32 and
amp; it is taken where class prompts share leading tokens and not where they do not (a
context per class or per image, the class name first). Activation checkpointing
(MODEL.ACTIVATION_CHECKPOINTING) changes no number either."""
import pytest
import torch

from caspl.clip import PromptGroup, TextEncoder, class_prompts
from conftest import build_trainer
from test_caspl import boost_trainer, boosted, teacher_path, wrapped  # noqa: F401 (fixtures)
from test_methods import CONFIGS, a_batch

NAMES = ["Annual Crop Land", "Forest", "Sea or Lake", "Highway or Road"]
PREC_KEY = {"CoOp": "COOP", "CoCoOp": "COCOOP", "IVLP": "IVLP", "MaPLe": "MAPLE", "PromptSRC": "PROMPTSRC",
            "LAMM": "LAMM", "LAMM_CoOp": "COOP", "LAMM_MaPLe": "MAPLE", "CasPL_Boost": "CASPL"}
# (trainer, extra options, whether its learned text prompts share a prefix)
METHODS = [
    ("CoOp", {}, True),
    ("CoOp", {"TRAINER__COOP__CLASS_TOKEN_POSITION": "middle"}, True),
    ("CoOp", {"TRAINER__COOP__CLASS_TOKEN_POSITION": "front"}, False),
    ("CoOp", {"TRAINER__COOP__CSC": True, "TRAINER__COOP__CTX_INIT": ""}, False),
    ("CoCoOp", {}, False),
    ("IVLP", {}, True),
    ("MaPLe", {}, True),
    ("PromptSRC", {}, True),
    ("LAMM", {}, True),
    ("LAMM_CoOp", {}, True),
    ("LAMM_MaPLe", {}, True),
]
def step(t, batch):
    """(text features, reported terms, gradient of every trainable parameter) of one training
    step, and whether the text pass took the shared prefix."""
    t.set_model_mode(True)
    images = batch["img"]
    per_image = t.__class__.__name__.endswith("CoCoOp")
    with torch.no_grad(), t.autocast():
        groups = t.text_groups(t.image_features(images) if per_image else None)
        features = t.text_encoder(groups).float()
    report = t.forward_backward(batch)
    grads = {f"{m}.{n}": p.grad.detach().clone() for m, module in t._models.items()
             for n, p in module.named_parameters() if p.requires_grad}
    assert grads
    return {"features": features, **{k: torch.tensor(v) for k, v in report.items() if k != "acc"}, **grads}, \
        t.text_encoder.prefix_length(groups) > 0


def error(a, b):
    """|a - b| / |b| over a whole tensor (elementwise checks trip over entries near 0); a term
    that is 0 up to rounding (LAMM's COS term on untrained labels) is compared to 1e-3."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-3)).item()


def compare(build, prec, shared):
    """One training step on one batch with the shared prefix on and with the plain pass.

    fp32: equal to float rounding. amp (bf16 on the CPU) rounds each path differently (each
    differs from fp32 by about 1 %), so the claim is that the shared-prefix pass lands as close
    to the fp32 result as the plain amp pass does: every tensor within bf16's precision, and
    over all of them no further than the plain pass (within a factor 1.5)."""
    t = build(MODEL__TEXT_SHARED_PREFIX=True)
    batch = a_batch(t)
    on, took_prefix = step(t, batch)
    off, took_plain = step(build(MODEL__TEXT_SHARED_PREFIX=False), batch)
    assert took_prefix == shared and not took_plain
    assert on.keys() == off.keys()
    if prec == "fp32":
        for k in on:
            assert error(on[k], off[k]) < 1e-4, k
        return
    exact, _ = step(build(MODEL__TEXT_SHARED_PREFIX=False, PREC="fp32"), batch)
    for k in on:  # bf16 keeps about 3 significant digits
        assert error(on[k], exact[k]) < 0.06, k
    assert sum(error(on[k], exact[k]) for k in on) <= 1.5 * sum(error(off[k], exact[k]) for k in on)


@pytest.mark.parametrize("prec", ["fp32", "amp"])
@pytest.mark.parametrize("name,opts,shared", METHODS, ids=lambda v: v if isinstance(v, str) else None)
def test_methods_equal_the_plain_pass(tmp_path, eurosat_root, tiny_clip_path, name, opts, shared, prec):
    config, base = CONFIGS[name]

    def build(PREC=prec, **more):  # noqa: N803
        return build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "o"), trainer=name, config=config,
                             **{**base, **opts, f"TRAINER__{PREC_KEY[name]}__PREC": PREC, **more})

    compare(build, prec, shared)


WRAPPED = ["CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC", "LAMM", "LAMM_MaPLe"]


@pytest.mark.parametrize("prec", ["fp32", "amp"])
@pytest.mark.parametrize("name", WRAPPED)
def test_caspl_wrappers_equal_the_plain_pass(tmp_path, boosted, tiny_clip_path, name, prec):
    """Phase 2: the boosting tokens sit right before the class name, so the shared prefix holds
    X's context and the boosting tokens of every layer they enter."""
    root, boost = boosted
    key = PREC_KEY[name]

    def build(PREC=prec, **more):  # noqa: N803
        return wrapped(name, root, tiny_clip_path, str(tmp_path / "o"), boost,
                       **{f"TRAINER__{key}__PREC": PREC, **more})

    compare(build, prec, shared=name != "CoCoOp")


@pytest.mark.parametrize("prec", ["fp32", "amp"])
def test_boosting_equals_the_plain_pass(tmp_path, eurosat_root, tiny_clip_path, teacher_path, prec):  # noqa: F811
    """Phase 1: the student's boosting prompts, and the teacher's class features from the
    dataset's hand-written template ("a centered satellite photo of {}.")."""
    def build(PREC=prec, **more):  # noqa: N803
        return boost_trainer(eurosat_root, tiny_clip_path, teacher_path, str(tmp_path / "o"),
                             TRAINER__CASPL__PREC=PREC, **more)

    compare(build, prec, shared=True)
    on, off = build(PREC="fp32"), build(PREC="fp32", MODEL__TEXT_SHARED_PREFIX=False)
    assert error(on.teacher_text, off.teacher_text) < 1e-5


def test_promptsrc_boosted_anchor_equals_the_plain_pass(tmp_path, boosted, tiny_clip_path):
    root, boost = boosted
    runs = [wrapped("PromptSRC", root, tiny_clip_path, str(tmp_path / "o"), boost, TRAINER__CASPL__ANCHOR="boosted",
                    TRAINER__PROMPTSRC__PREC="fp32", MODEL__TEXT_SHARED_PREFIX=on) for on in (True, False)]
    assert error(runs[0].frozen_text, runs[1].frozen_text) < 1e-5


def test_hand_written_templates_share_their_words(tiny_clip):
    """"a photo of a {}.": [SOS] and four words are computed once for all classes."""
    import clip

    texts = class_prompts("a photo of a {}.", NAMES)
    enc = TextEncoder(tiny_clip, texts)
    assert enc.prefix_length({}) == 5
    torch.testing.assert_close(enc(), tiny_clip.encode_text(clip.tokenize(texts)), rtol=1e-5, atol=1e-6)
    # the prefix stops at the first position where any two prompts differ
    assert TextEncoder(tiny_clip, ["a photo of a dog.", "a photo of the cat."]).prefix_length({}) == 4
    # a group per class where the prefix would go ends it there
    enc = TextEncoder(tiny_clip, class_prompts("a {ctx} photo of {}.", NAMES), {"ctx": 2})
    assert enc.prefix_length({"ctx": PromptGroup([torch.zeros(2, 64)])}) == 6
    assert enc.prefix_length({"ctx": PromptGroup([torch.zeros(4, 2, 64)], per="class")}) == 2
    assert TextEncoder(tiny_clip, texts, shared_prefix=False).prefix_length({}) == 0


def saved_bytes(fn):
    """Bytes of the tensors autograd keeps for the backward pass of fn() (views counted by
    their own size)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


def test_checkpointing_and_the_shared_prefix_keep_less_for_backward(tiny_clip):
    """Same features and gradients; the shared prefix keeps the class-specific positions only,
    checkpointing only each block's input."""
    torch.manual_seed(0)
    names = [f"class number {i} of many" for i in range(40)]
    deep = [torch.randn(8, 64, requires_grad=True) for _ in range(2)]
    kept, grads = {}, {}
    for shared, ckpt in ((False, False), (True, False), (True, True), (False, True)):
        enc = TextEncoder(tiny_clip, class_prompts("{ctx} {}.", names), {"ctx": 8}, shared_prefix=shared,
                          checkpointing=ckpt)
        kept[shared, ckpt], features = saved_bytes(lambda: enc({"ctx": PromptGroup(deep)}))
        grads[shared, ckpt] = torch.autograd.grad(features.square().sum(), deep)
    for k in grads:
        for a, b in zip(grads[k], grads[False, False]):
            assert error(a, b) < 1e-5, k
    assert kept[True, False] < 0.5 * kept[False, False]
    assert kept[True, True] < 0.25 * kept[True, False]
    assert kept[False, True] < 0.25 * kept[False, False]


@pytest.mark.parametrize("name", ["PromptSRC", "MaPLe"])
def test_checkpointing_changes_no_gradient(tmp_path, eurosat_root, tiny_clip_path, name):
    config, base = CONFIGS[name]
    runs = {}
    for ckpt in (True, False):
        t = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "o"), trainer=name, config=config,
                          **{**base, f"TRAINER__{PREC_KEY[name]}__PREC": "fp32",
                             "MODEL__ACTIVATION_CHECKPOINTING": ckpt})
        assert t.image_encoder.checkpointing == ckpt and t.text_encoder.checkpointing == ckpt
        runs[ckpt], _ = step(t, a_batch(t))
    for k in runs[True]:
        assert error(runs[True][k], runs[False][k]) < 1e-6, k
