"""VPT (vision-only prompts, the MaPLe repository's baseline) on a tiny CLIP (2 layers per
encoder, width 64): what learns, where the tokens enter (against a forward pass written
here from CLIP's own modules), the fixed text classifier, the loss, learning, the
reference's YAML, the protocol scripts, and CasPL_VPT."""
import os
import sys
from unittest import mock

import clip
import pytest
import torch

from caspl import CasplError
from caspl.clip import encode
from caspl.testing import make_eurosat
from conftest import ROOT, build_trainer
from test_caspl import boosted, teacher_path  # noqa: F401 (fixtures: a finished phase-1 run)
import test_engine
from test_methods import a_batch, train_accuracy
from test_scripts import XD_L1, protocol_choice, run_script

W = 64
CONFIG = "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml"
DEPTH2 = {"TRAINER__VPT__PROMPT_DEPTH_VISION": 2}  # the config's depth 12 cut to the tiny CLIP's 2 layers


def vpt(root, clip_path, out, trainer="VPT", **opts):
    return build_trainer(root, clip_path, out, trainer=trainer, config=CONFIG, **{**DEPTH2, **opts})


def reference_image_features(model, images, layers):
    """VPT's image pass written out on CLIP's own modules: the layer-0 tokens appended after
    [CLS] and the patches (after the positional embedding, before ln_pre); before each layer
    i < len(layers), the last n positions replaced by layer i's tokens."""
    v = model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    cls = v.class_embedding.expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + v.positional_embedding
    n_fixed, n = x.shape[1], layers[0].shape[0]
    x = torch.cat([x, layers[0].expand(x.shape[0], -1, -1)], dim=1)
    x = v.ln_pre(x).permute(1, 0, 2)
    for i, block in enumerate(v.transformer.resblocks):
        if 0 < i < len(layers):
            x = torch.cat([x[:n_fixed], layers[i].unsqueeze(1).expand(n, x.shape[1], -1)], dim=0)
        x = block(x)
    return v.ln_post(x[0]) @ v.proj


def fixed_prompt_features(model, classnames, phrase="a photo of a"):
    prompts = [f"{phrase} {c.replace('_', ' ')}." for c in classnames]
    return model.encode_text(clip.tokenize(prompts))


def text_passes(t):
    """A spy on the text encoder: its call_count is the number of text passes from now on."""
    spy = mock.Mock(wraps=t.text_encoder.forward)
    t.text_encoder.forward = spy
    return spy


# ----------------------------------------------------------------------------- what learns

@pytest.mark.parametrize("depth", [1, 2])
def test_only_the_vision_prompts_learn(tmp_path, eurosat_root, tiny_clip_path, depth):
    t = vpt(eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__VPT__PROMPT_DEPTH_VISION=depth)
    assert list(t._models) == ["prompt_learner"]
    params = {n: tuple(p.shape) for n, p in t.prompt_learner.named_parameters() if p.requires_grad}
    assert params == ({"ctx": (8, W)} if depth == 1 else {"ctx": (8, W), "deep_ctx": (1, 8, W)})
    n_params = sum(p.numel() for m in t._models.values() for p in m.parameters() if p.requires_grad)
    assert n_params == 8 * W * depth
    assert not any(p.requires_grad for p in t.clip.parameters())
    assert t.text_groups() == {} and t.text_encoder.group_lengths == {}
    group = t.image_groups()["vctx"]
    assert group.depth == depth and group.per == "shared"
    clip_before = {k: v.clone() for k, v in t.clip.state_dict().items()}
    prompts_before = {k: v.clone() for k, v in t.prompt_learner.state_dict().items()}
    t.set_model_mode(True)
    t.forward_backward(a_batch(t))
    assert all(torch.equal(clip_before[k], v) for k, v in t.clip.state_dict().items())
    assert all(not torch.equal(prompts_before[k], v) for k, v in t.prompt_learner.state_dict().items())


@pytest.mark.parametrize("opts, message", [
    ({"TRAINER__VPT__N_CTX_VISION": 0}, "must be at least 1"),
    ({"TRAINER__VPT__PROMPT_DEPTH_VISION": 0}, "must be at least 1"),
    ({"TRAINER__VPT__PROMPT_DEPTH_VISION": 3}, "PROMPT_DEPTH_VISION is 3 but the image encoder has 2 layers"),
])
def test_bad_sizes_are_refused(tmp_path, eurosat_root, tiny_clip_path, opts, message):
    with pytest.raises(CasplError, match=message):
        vpt(eurosat_root, tiny_clip_path, str(tmp_path / "o"), **opts)


@pytest.mark.parametrize("trainer, config, what", [
    ("VPT", "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml", "VPT's prompts"),
    ("MaPLe", "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", "MaPLe's prompts"),
    ("CasPL_Boost", "configs/trainers/CasPL_Boost/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml", "CasPL's boosting prompts"),
    ("PromptKD", "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml", "PromptKD's student prompts"),
    ("IVLP", "configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
     r"IVLP's visual prompts \(TRAINER.IVLP.N_CTX_VISION > 0\)"),
])
def test_a_resnet_backbone_is_refused_by_methods_that_prompt_the_image_encoder(tmp_path, eurosat_root, trainer,
                                                                               config, what):
    from caspl.clip.tiny import save_tiny_clip
    from conftest import build_trainer

    resnet = save_tiny_clip(str(tmp_path / "rn.pt"), vision_layers=(1, 1, 1, 1), vision_width=64)
    depth = {"TRAINER__IVLP__PROMPT_DEPTH_TEXT": 2} if trainer == "IVLP" else {}  # the text check comes first
    with pytest.raises(CasplError, match=f"{what} enter the image encoder: .*rn.pt must be a ViT"):
        build_trainer(eurosat_root, resnet, str(tmp_path / "o"), trainer=trainer, config=config, **depth)


# ----------------------------------------------------------------------------- where the tokens enter

def test_tokens_follow_the_patches_and_deep_ones_replace_them(tmp_path, eurosat_root, tiny_clip_path):
    t = vpt(eurosat_root, tiny_clip_path, str(tmp_path / "o"))
    images = a_batch(t)["img"]
    seen = []
    hooks = [b.ln_1.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))  # each block's input
             for b in t.clip.model.visual.transformer.resblocks]
    with torch.no_grad():
        got = t.image_features(images)
    for h in hooks:
        h.remove()
    n_fixed = 1 + 16  # [CLS] + 4x4 patches of the 32-pixel tiny CLIP
    assert [x.shape[0] for x in seen] == [n_fixed + 8, n_fixed + 8]  # the sequence grows by the 8 tokens
    layers = t.prompt_learner.layers()
    torch.testing.assert_close(seen[0][n_fixed:, 0], t.clip.model.visual.ln_pre(layers[0]))  # input: through ln_pre
    assert torch.equal(seen[1][n_fixed:, 0], layers[1])  # layer 1: replaced, as they are
    with torch.no_grad():
        expected = reference_image_features(t.clip.model, images, layers)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_shallow_tokens_are_carried_through(tmp_path, eurosat_root, tiny_clip_path):
    t = vpt(eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__VPT__PROMPT_DEPTH_VISION=1)
    images = a_batch(t)["img"]
    with torch.no_grad():
        torch.testing.assert_close(t.image_features(images),
                                   reference_image_features(t.clip.model, images, t.prompt_learner.layers()),
                                   rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the text side

@pytest.mark.parametrize("ctx_init, phrase", [("a photo of a", "a photo of a"),
                                              ("a_satellite_photo_of", "a satellite photo of")])
def test_text_features_are_the_fixed_prompt(tmp_path, eurosat_root, tiny_clip_path, ctx_init, phrase):
    t = vpt(eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__VPT__CTX_INIT=ctx_init)
    with torch.no_grad():
        expected = fixed_prompt_features(t.clip.model, t.classnames, phrase)
        torch.testing.assert_close(t.text_features(), expected, rtol=1e-5, atol=1e-5)
    assert not t.text_features().requires_grad


def test_text_features_are_computed_once_per_run(tmp_path, eurosat_root, tiny_clip_path):
    t = vpt(eurosat_root, tiny_clip_path, str(tmp_path / "o"))
    passes = text_passes(t)
    t.set_model_mode(True)
    for _ in range(3):
        t.forward_backward(a_batch(t))
    t.test()
    t.test()
    assert passes.call_count == 1


def test_loss_is_the_hand_computed_cross_entropy(tmp_path, eurosat_root, tiny_clip_path):
    t = vpt(eurosat_root, tiny_clip_path, str(tmp_path / "o"))
    batch = a_batch(t)
    images, labels = batch["img"], batch["label"]
    with torch.no_grad():
        img = reference_image_features(t.clip.model, images, t.prompt_learner.layers())
        txt = fixed_prompt_features(t.clip.model, t.classnames)
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        logits = t.clip.logit_scale.exp() * img @ txt.t()
        expected = (logits.logsumexp(1) - logits[torch.arange(len(labels)), labels]).mean().item()
    t.set_model_mode(True)
    out = t.forward_backward(batch)
    assert out["loss"] == pytest.approx(expected, rel=1e-5)
    assert t.prompt_learner.ctx.grad is not None and t.prompt_learner.deep_ctx.grad is not None
    assert all(p.grad is None for p in t.clip.parameters())


@pytest.mark.slow
def test_training_accuracy_rises(tmp_path, tiny_clip_path):
    root = make_eurosat(str(tmp_path / "data"), per_class=20, n_classes=4)
    t = vpt(root, tiny_clip_path, str(tmp_path / "o"), DATASET__NUM_SHOTS=8, OPTIM__NAME="adam",
            OPTIM__LR=0.01, OPTIM__MAX_EPOCH=30, DATALOADER__TRAIN_X__BATCH_SIZE=4, TEST__NO_TEST=True)
    before = train_accuracy(t)
    t.train()
    after = train_accuracy(t)
    assert after >= before + 25, f"VPT: training accuracy {before:.1f}% -> {after:.1f}% (chance 25%)"


# ----------------------------------------------------------------------------- config and scripts

def test_the_reference_yaml_loads_with_its_values():
    from caspl.cli import build_parser, setup_cfg

    test_engine.test_shipped_config_merges(os.path.join(ROOT, CONFIG))  # every value in the file lands in cfg
    args = build_parser().parse_args(["--root", "/data", "--trainer", "VPT", "--seed", "1",
                                      "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                                      "--config-file", os.path.join(ROOT, CONFIG), "--output-dir", "/out",
                                      "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base"])
    cfg, _ = setup_cfg(args)
    assert dict(cfg.TRAINER.VPT) == {"N_CTX_VISION": 8, "CTX_INIT": "a photo of a", "PREC": "fp16",
                                     "PROMPT_DEPTH_VISION": 12}
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.WARMUP_EPOCH) == ("sgd", 0.0025, 5, 1)
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.DATALOADER.TEST.BATCH_SIZE) == (4, 100)
    bad = build_parser().parse_args(["--trainer", "VPT", "--dataset-config-file",
                                     os.path.join(ROOT, "configs/datasets/eurosat.yaml"), "TRAINER.VPT.N_CTX", "4"])
    with pytest.raises(Exception, match="N_CTX"):
        setup_cfg(bad)


@pytest.mark.parametrize("method", ["VPT", "CasPL_VPT"])
def test_protocol_scripts_and_configs(method):
    folder = os.path.join(ROOT, "scripts", method)
    assert os.path.realpath(folder) == os.path.realpath(os.path.join(ROOT, "scripts", "protocols"))
    for protocol in ("base2new", "few_shot", "cross_dataset"):
        chosen = protocol_choice(method, protocol)
        assert chosen[0] == "vit_b16_c2_ep5_batch4_4"
        if method == "CasPL_VPT" and protocol == "cross_dataset":
            assert chosen[1:] == XD_L1


@pytest.mark.slow
def test_base_to_new_scripts(tmp_path, tiny_clip_path):
    data = make_eurosat(str(tmp_path / "data"), per_class=10)
    env = dict(os.environ, DATA=data, OUT=str(tmp_path / "out"), BACKBONE=tiny_clip_path, PYTHON=sys.executable,
               SHOTS="2", EXTRA='INPUT.SIZE "(32, 32)" TRAINER.VPT.PROMPT_DEPTH_VISION 2 OPTIM.MAX_EPOCH 2 '
                               'DATALOADER.NUM_WORKERS 0')
    for script in ("base2new_train.sh", "base2new_test.sh"):
        done = run_script(f"scripts/VPT/{script}", ["eurosat", "1"], env, str(tmp_path))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = tmp_path / "out/base2new"
    train = runs / "train_base/eurosat/shots_2/VPT/vit_b16_c2_ep5_batch4_4/seed1"
    train_log = (train / "log.txt").read_text()
    test_log = (runs / "test_new/eurosat/shots_2/VPT/vit_b16_c2_ep5_batch4_4/seed1/log.txt").read_text()
    assert (train / "prompt_learner/model.pth.tar-2").is_file()
    assert "Finish training" in train_log and "* total: 15" in train_log  # 5 base classes x 3 test images
    assert "vision 8 tokens x 2 layers" in train_log
    assert "* total: 15" in test_log and "model.pth.tar-2" in test_log


# ----------------------------------------------------------------------------- CasPL_VPT

def test_caspl_vpt_puts_the_boosting_tokens_in_the_fixed_prompt(tmp_path, boosted, tiny_clip_path):
    root, boost = boosted
    plain = vpt(root, tiny_clip_path, str(tmp_path / "p"))
    t = vpt(root, tiny_clip_path, str(tmp_path / "c"), trainer="CasPL_VPT", TRAINER__CASPL__BOOST_CKPT=boost)
    # VPT's own learnable tensors, the same as the plain run's (same seed); the boost frozen
    assert {k: v for k, v in t.prompt_learner.state_dict().items()}.keys() == plain.prompt_learner.state_dict().keys()
    assert all(torch.equal(v, plain.prompt_learner.state_dict()[k]) for k, v in t.prompt_learner.state_dict().items())
    assert not any(p.requires_grad for p in t.boost.parameters())
    # text: "[SOS] a photo of a <3 boosting tokens> <class name> . [EOS]", features with them
    n = len(encode("a photo of a"))
    assert t.text_encoder.pos_boost[0].tolist() == [1 + n, 2 + n, 3 + n]
    for c, name in enumerate(t.classnames):
        ids = encode(name.replace("_", " ") + ".")
        assert t.text_encoder.token_ids[c, 4 + n:4 + n + len(ids)].tolist() == ids
    with torch.no_grad():
        boosted_text = t.text_encoder({"boost": t.boost.text.group()})
        torch.testing.assert_close(t.text_features(), boosted_text)
        assert not torch.allclose(t.text_features(), plain.text_features())
    # image: [CLS] patches, boosting tokens, then VPT's
    assert list(t.image_groups()) == ["vboost", "vctx"]
    # a step: VPT's tokens move, the boost does not, the text is not recomputed
    passes = text_passes(t)
    boost_before = {k: v.clone() for k, v in t.boost.state_dict().items()}
    ctx_before = t.prompt_learner.ctx.detach().clone()
    t.set_model_mode(True)
    for _ in range(2):
        t.forward_backward(a_batch(t))
    assert passes.call_count == 0  # computed above, once
    assert all(torch.equal(boost_before[k], v) for k, v in t.boost.state_dict().items())
    assert not torch.equal(ctx_before, t.prompt_learner.ctx.detach())


def test_caspl_vpt_with_learnable_boosting_tokens_recomputes_the_text(tmp_path, boosted, tiny_clip_path):
    root, boost = boosted
    t = vpt(root, tiny_clip_path, str(tmp_path / "c"), trainer="CasPL_VPT", TRAINER__CASPL__BOOST_CKPT=boost,
            TRAINER__CASPL__BOOST_LEARNABLE=True, OPTIM__NAME="adam", OPTIM__LR=0.1, OPTIM__WARMUP_EPOCH=0)
    t.test()  # an evaluation (under no_grad) does not freeze the text features
    with torch.no_grad():
        before = t.text_features()
    t.set_model_mode(True)
    t.forward_backward(a_batch(t))
    with torch.no_grad():
        after = t.text_features()
        torch.testing.assert_close(after, t.text_encoder({"boost": t.boost.text.group()}))
    assert (after - before).abs().max() > 1e-3
