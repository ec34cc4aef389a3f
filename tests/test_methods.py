"""Semantics of the prompt-learning methods on a tiny CLIP (2 layers per encoder, widths 64,
embedding 32): trainable parameters, where their tokens enter, losses, GPA, learning."""
import math

import clip
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from caspl.clip import class_prompts
from caspl.data.manager import ImageDataset
from caspl.testing import make_eurosat
from conftest import build_trainer

W = 64  # text and vision widths of the tiny CLIP
CONFIGS = {
    "IVLP": ("configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
             {"TRAINER__IVLP__PROMPT_DEPTH_VISION": 2, "TRAINER__IVLP__PROMPT_DEPTH_TEXT": 2}),
    "PromptSRC": ("configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
                  {"TRAINER__PROMPTSRC__PROMPT_DEPTH_VISION": 2, "TRAINER__PROMPTSRC__PROMPT_DEPTH_TEXT": 2}),
    "MaPLe": ("configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", {"TRAINER__MAPLE__PROMPT_DEPTH": 2}),
    "CoCoOp": ("configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", {}),
    "CoOp": ("configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml", {}),
    "LAMM": ("configs/trainers/LAMM/vit_b16_ep50_ctxv1.yaml", {}),
    "LAMM_CoOp": ("configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml", {}),
    "LAMM_MaPLe": ("configs/trainers/LAMM_MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", {"TRAINER__MAPLE__PROMPT_DEPTH": 2}),
}


def make(name, root, clip_path, out, **opts):
    config, base = CONFIGS[name]
    return build_trainer(root, clip_path, out, trainer=name, config=config, **{**base, **opts})


def trainable(t):
    return {n: p for n, p in t.prompt_learner.named_parameters() if p.requires_grad}


def a_batch(t, n=4):
    batch = next(iter(DataLoader(ImageDataset(t.dm.dataset.train_x, t.dm.tfm_test), batch_size=n)))
    return batch


# ----------------------------------------------------------------------------- IVLP / PromptSRC

@pytest.mark.parametrize("name", ["IVLP", "PromptSRC"])
def test_vl_prompts_parameters_and_placement(tmp_path, eurosat_root, tiny_clip_path, tiny_clip, name):
    t = make(name, eurosat_root, tiny_clip_path, str(tmp_path / "o"))
    params = trainable(t)
    assert {n: tuple(p.shape) for n, p in params.items()} == {
        "text.ctx": (4, W), "text.deep_ctx": (1, 4, W), "vision.ctx": (4, W), "vision.deep_ctx": (1, 4, W)}
    assert sum(p.numel() for p in params.values()) == 4 * W * 2 + 4 * W * 2  # n_t*W*depth_t + n_v*W*depth_v
    assert not any(p.requires_grad for p in t.clip.parameters())
    # the input text context starts as the embeddings of "a photo of a"; the prompt keeps no extra words
    expected = tiny_clip.token_embedding(torch.tensor(clip.tokenize("a photo of a")[0, 1:5]))
    torch.testing.assert_close(params["text.ctx"].detach(), expected)
    assert t.text_encoder.pos_ctx[0].tolist() == [1, 2, 3, 4]
    # groups: every layer's tokens, in both encoders
    text, image = t.text_groups()["ctx"], t.image_groups()["vctx"]
    assert text.depth == 2 and image.depth == 2
    assert text.layers[1] is not None and torch.equal(text.layers[1], params["text.deep_ctx"][0])
    assert torch.equal(image.layers[0], params["vision.ctx"]) and torch.equal(image.layers[1],
                                                                              params["vision.deep_ctx"][0])


def test_short_context_keeps_the_rest_of_the_phrase_as_words(tmp_path, eurosat_root, tiny_clip_path, tiny_clip):
    """n_ctx 2 with "a photo of a": "a photo" is learned, "of a" stays in the prompt."""
    t = make("IVLP", eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__IVLP__N_CTX_TEXT=2,
             TRAINER__IVLP__PROMPT_DEPTH_TEXT=1, TRAINER__IVLP__N_CTX_VISION=0)
    assert t.image_groups() == {}
    with torch.no_grad():
        got = t.text_features()
    expected = tiny_clip.encode_text(clip.tokenize(class_prompts("a photo of a {}.", t.classnames)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_long_context_is_random(tmp_path, eurosat_root, tiny_clip_path):
    t = make("IVLP", eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__IVLP__N_CTX_TEXT=6)
    ctx = t.prompt_learner.text.ctx.detach()
    assert ctx.shape == (6, W) and abs(ctx.std().item() - 0.02) < 0.006
    assert t.text_encoder.eos[0] == 1 + 6 + len(clip.tokenize("Annual Crop Land.")[0].nonzero()) - 2


def test_promptsrc_loss_terms_match_an_independent_computation(tmp_path, eurosat_root, tiny_clip_path, tiny_clip):
    t = make("PromptSRC", eurosat_root, tiny_clip_path, str(tmp_path / "o"))
    # the text anchor: unnormalised features averaged over the 60 templates
    from trainers.promptsrc import TEMPLATES
    assert len(TEMPLATES) == 60 and TEMPLATES[0] == "a photo of a {}."
    anchor = torch.stack([tiny_clip.encode_text(clip.tokenize(class_prompts(tpl, t.classnames)))
                          for tpl in TEMPLATES]).mean(0)
    torch.testing.assert_close(t.frozen_text, anchor, rtol=1e-4, atol=1e-5)

    batch = a_batch(t)
    images, labels = batch["img"], batch["label"]
    with torch.no_grad():
        img, txt = t.image_features(images), t.text_features()
        logits = 100.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
        frozen_img = tiny_clip.encode_image(images)
        frozen_logits = 100.0 * F.normalize(frozen_img, dim=-1) @ F.normalize(anchor, dim=-1).t()
        p, q = frozen_logits.softmax(1), logits.softmax(1)
        expected = {
            "ce": F.cross_entropy(logits, labels).item(),
            "l1_text": 25 * (F.normalize(txt, dim=-1) - F.normalize(anchor, dim=-1)).abs().mean().item(),
            "l1_image": 10 * (F.normalize(img, dim=-1) - F.normalize(frozen_img, dim=-1)).abs().mean().item(),
            "kl": (p * (p.log() - q.log())).sum().item() / logits.numel(),
        }
    t.set_model_mode(True)
    out = t.forward_backward(batch)
    for k, v in expected.items():
        assert out[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    assert out["loss"] == pytest.approx(sum(expected.values()), rel=1e-4)


def test_gpa_weights_and_the_aggregated_prompts(tmp_path, eurosat_root, tiny_clip_path):
    from trainers.promptsrc import gpa_weights

    w = gpa_weights(15, 1, 20)
    assert sum(w) == pytest.approx(1.0)
    assert [round(x, 3) for x in w[12:17]] == [0.054, 0.242, 0.399, 0.242, 0.054]
    expected = [math.exp(-((e - 2) ** 2) / 2) for e in (1, 2, 3)]
    assert gpa_weights(2, 1, 3) == pytest.approx([x / sum(expected) for x in expected])

    t = make("PromptSRC", eurosat_root, tiny_clip_path, str(tmp_path / "o"), OPTIM__MAX_EPOCH=3,
             TRAINER__PROMPTSRC__GPA_MEAN=2, TRAINER__PROMPTSRC__GPA_STD=1, DATASET__NUM_SHOTS=2,
             TEST__NO_TEST=True)
    seen = []
    original = t.after_epoch

    def record():
        seen.append({k: v.detach().clone() for k, v in t.prompt_learner.state_dict().items()})
        original()

    t.after_epoch = record
    t.train()
    weights = gpa_weights(2, 1, 3)
    for k, v in t.prompt_learner.state_dict().items():
        torch.testing.assert_close(v, sum(wi * s[k] for wi, s in zip(weights, seen)))
    saved = torch.load(tmp_path / "o" / "VLPromptLearner" / "model.pth.tar-3", weights_only=True)
    assert torch.equal(saved["state_dict"]["text.ctx"], t.prompt_learner.text.ctx.detach())


def test_gpa_survives_a_resume(tmp_path, eurosat_root, tiny_clip_path):
    opts = dict(OPTIM__MAX_EPOCH=3, TRAINER__PROMPTSRC__GPA_MEAN=2, TRAINER__PROMPTSRC__GPA_STD=1,
                DATASET__NUM_SHOTS=2, TEST__NO_TEST=True)
    whole = make("PromptSRC", eurosat_root, tiny_clip_path, str(tmp_path / "a"), **opts)
    whole.train()
    part = make("PromptSRC", eurosat_root, tiny_clip_path, str(tmp_path / "b"), **opts)

    def interrupt():  # the run dies at the start of its third epoch
        if part.epoch == 2:
            raise KeyboardInterrupt

    part.before_epoch = interrupt
    with pytest.raises(KeyboardInterrupt):
        part.train()
    resumed = make("PromptSRC", eurosat_root, tiny_clip_path, str(tmp_path / "b"), **opts)
    resumed.train()
    for k, v in whole.prompt_learner.state_dict().items():
        assert torch.equal(v, resumed.prompt_learner.state_dict()[k]), k


# ----------------------------------------------------------------------------- MaPLe

def test_maple_couples_vision_prompts_to_text_prompts(tmp_path, eurosat_root, tiny_clip_path):
    t = make("MaPLe", eurosat_root, tiny_clip_path, str(tmp_path / "o"))
    params = trainable(t)
    n, depth = 2, 2
    assert sum(p.numel() for p in params.values()) == n * W * depth + depth * (W * W + W)
    couplings = t.prompt_learner.couplings
    assert len(couplings) == depth
    text, vision = t.text_groups()["ctx"], t.image_groups()["vctx"]
    for i in range(depth):
        torch.testing.assert_close(vision.layers[i], couplings[i](text.layers[i]))
    # "a photo" learned, "of a" kept
    assert t.text_encoder.pos_ctx[0].tolist() == [1, 2]
    # gradients reach the text tokens through the image encoder alone
    batch = a_batch(t)
    t.image_features(batch["img"]).sum().backward()
    assert t.prompt_learner.text.ctx.grad.abs().sum() > 0 and t.prompt_learner.text.deep_ctx.grad.abs().sum() > 0


def test_maple_deep_couplings_start_identical(tmp_path, eurosat_root, tiny_clip_path):
    t = make("MaPLe", eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__MAPLE__PROMPT_DEPTH=2)
    import copy

    from trainers.maple import CoupledPrompts
    text = copy.deepcopy(t.prompt_learner.text)
    text.deep_ctx = torch.nn.Parameter(torch.zeros(3, 2, W))  # a depth-4 text context
    coupled = CoupledPrompts(text, W, W)
    deep = coupled.couplings[1:]
    assert all(torch.equal(c.weight, deep[0].weight) for c in deep)
    assert not torch.equal(coupled.couplings[0].weight, deep[0].weight)


# ----------------------------------------------------------------------------- CoCoOp

def test_cocoop_conditions_every_context_token_on_the_image(tmp_path, eurosat_root, tiny_clip_path):
    t = make("CoCoOp", eurosat_root, tiny_clip_path, str(tmp_path / "o"))
    params = trainable(t)
    e, h = 32, 2  # embedding dim of the tiny CLIP and its // 16
    assert {k: tuple(v.shape) for k, v in params.items()} == {
        "ctx.ctx": (4, W), "meta_net.linear1.weight": (h, e), "meta_net.linear1.bias": (h,),
        "meta_net.linear2.weight": (W, h), "meta_net.linear2.bias": (W,)}
    batch = a_batch(t)
    with torch.no_grad():
        img = t.image_features(batch["img"])
        group = t.text_groups(img)["ctx"]
        bias = t.prompt_learner.meta_net(F.normalize(img, dim=-1))
        assert group.per == "image" and group.layers[0].shape == (4, 4, W)
        torch.testing.assert_close(group.layers[0] - params["ctx.ctx"], bias.unsqueeze(1).expand(4, 4, W))
        logits = t.model_inference(batch["img"])
        for b in range(4):  # each image against its own prompts
            one = t.logits(img[b:b + 1], t.text_features(img[b:b + 1]))
            torch.testing.assert_close(logits[b:b + 1], one, rtol=1e-5, atol=1e-4)


def test_cocoop_chunked_evaluation_is_exact(tmp_path, eurosat_root, tiny_clip_path):
    big = make("CoCoOp", eurosat_root, tiny_clip_path, str(tmp_path / "a"))
    small = make("CoCoOp", eurosat_root, tiny_clip_path, str(tmp_path / "b"), TRAINER__COCOOP__MAX_TEXT_SEQUENCES=25)
    small.prompt_learner.load_state_dict(big.prompt_learner.state_dict())
    images = a_batch(big, n=7)["img"]
    with torch.no_grad():
        torch.testing.assert_close(small.model_inference(images), big.model_inference(images), rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------- learning

def train_accuracy(t):
    t.set_model_mode(False)
    correct = total = 0
    with torch.no_grad():
        for b in DataLoader(ImageDataset(t.dm.dataset.train_x, t.dm.tfm_test), batch_size=64):
            correct += (t.model_inference(b["img"]).argmax(1) == b["label"]).sum().item()
            total += len(b["label"])
    return 100.0 * correct / total


@pytest.mark.slow
@pytest.mark.parametrize("name", ["CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC", "LAMM", "LAMM_CoOp", "LAMM_MaPLe"])
def test_training_accuracy_rises(tmp_path, tiny_clip_path, name):
    root = make_eurosat(str(tmp_path / "data"), per_class=20, n_classes=4)
    t = make(name, root, tiny_clip_path, str(tmp_path / "o"), DATASET__NUM_SHOTS=8, OPTIM__NAME="adam",
             OPTIM__LR=0.01, OPTIM__MAX_EPOCH=30, DATALOADER__TRAIN_X__BATCH_SIZE=4, TEST__NO_TEST=True)
    before = train_accuracy(t)
    t.train()
    after = train_accuracy(t)
    assert after >= before + 25, f"{name}: training accuracy {before:.1f}% -> {after:.1f}% (chance 25%)"


def test_a_checkpoint_with_tensors_this_run_does_not_use_is_refused(tmp_path, eurosat_root, tiny_clip_path):
    from caspl import CasplError

    out = str(tmp_path / "o")
    make("IVLP", eurosat_root, tiny_clip_path, out, DATASET__NUM_SHOTS=1, OPTIM__MAX_EPOCH=1,
         TEST__NO_TEST=True).train()
    text_only = make("IVLP", eurosat_root, tiny_clip_path, str(tmp_path / "e"), TRAINER__IVLP__N_CTX_VISION=0)
    with pytest.raises(CasplError, match="has unused vision.ctx, vision.deep_ctx"):
        text_only.load_model(out, epoch=1)


@pytest.mark.parametrize("name", ["CoOp", "CoCoOp", "IVLP", "MaPLe", "LAMM_CoOp"])
def test_reported_loss_is_the_cross_entropy_of_the_logits(tmp_path, eurosat_root, tiny_clip_path, name):
    opts = {"TRAINER__LAMM__HIERARCHICAL_LOSS": False} if name.startswith("LAMM") else {}
    t = make(name, eurosat_root, tiny_clip_path, str(tmp_path / "o"), **opts)
    batch = a_batch(t)
    t.set_model_mode(True)
    with torch.no_grad():
        expected = F.cross_entropy(t.model_inference(batch["img"]), batch["label"]).item()
    assert t.forward_backward(batch)["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC", "LAMM", "LAMM_MaPLe"])
def test_amp_trains_with_fp32_parameters(tmp_path, eurosat_root, tiny_clip_path, name):
    key = {"CoOp": "COOP", "CoCoOp": "COCOOP", "IVLP": "IVLP", "MaPLe": "MAPLE", "PromptSRC": "PROMPTSRC",
           "LAMM": "LAMM", "LAMM_MaPLe": "MAPLE"}[name]
    t = make(name, eurosat_root, tiny_clip_path, str(tmp_path / "o"), **{f"TRAINER__{key}__PREC": "amp"})
    assert t.precision == "amp"
    before = {n: p.detach().clone() for m in t._models.values() for n, p in m.named_parameters() if p.requires_grad}
    t.set_model_mode(True)
    out = t.forward_backward(a_batch(t))
    assert math.isfinite(out["loss"])
    after = {n: p for m in t._models.values() for n, p in m.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for p in after.values())
    assert any(not torch.equal(before[n], p.detach()) for n, p in after.items())


@pytest.mark.parametrize("name,calls", [("CoOp", 1), ("IVLP", 1), ("MaPLe", 1), ("PromptSRC", 1), ("CoCoOp", 30)])
def test_text_features_once_per_evaluation(tmp_path, eurosat_root, tiny_clip_path, name, calls):
    """Text features that do not depend on the image are computed once per evaluation;
    CoCoOp's depend on each image (here: chunks of one image)."""
    opts = {"TRAINER__COCOOP__MAX_TEXT_SEQUENCES": 10} if name == "CoCoOp" else {}
    t = make(name, eurosat_root, tiny_clip_path, str(tmp_path / "o"), **opts)
    count = [0]
    encode = t.text_encoder.forward

    def counting(*args, **kwargs):
        count[0] += 1
        return encode(*args, **kwargs)

    t.text_encoder.forward = counting
    t.test()
    assert count[0] == calls  # 30 test images
    t.test()
    assert count[0] == 2 * calls
