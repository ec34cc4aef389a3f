"""CoOp and zero-shot CLIP on a tiny CLIP: prompt layout, parameters, learning."""
import clip
import pytest
import torch

from caspl.clip import class_prompts, clip_logits
from conftest import build_trainer

INIT = "a photo of a"


def expected_text_features(tiny_clip, template, classnames):
    return tiny_clip.encode_text(clip.tokenize(class_prompts(template, classnames)))


@pytest.mark.parametrize("position,template", [
    ("end", "a photo of a {}."),
    ("middle", "a photo {} of a."),
    ("front", "{} a photo of a."),
])
def test_context_initialised_from_words_is_those_words(tmp_path, eurosat_root, tiny_clip_path, tiny_clip,
                                                       position, template):
    t = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__COOP__CTX_INIT=INIT,
                      TRAINER__COOP__CLASS_TOKEN_POSITION=position)
    assert t.prompt_learner.ctx.shape == (4, 64)  # n_ctx follows the phrase's token count
    with torch.no_grad():
        got = t.text_encoder(t.text_groups())
    torch.testing.assert_close(got, expected_text_features(tiny_clip, template, t.classnames), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("csc", [False, True])
def test_trainable_parameters_are_the_context_only(tmp_path, eurosat_root, tiny_clip_path, csc):
    t = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__COOP__N_CTX=16,
                      TRAINER__COOP__CSC=csc)
    trainable = [(n, p) for n, p in t.prompt_learner.named_parameters() if p.requires_grad]
    assert [n for n, _ in trainable] == ["ctx"]  # and no deep tokens
    assert trainable[0][1].numel() == (10 if csc else 1) * 16 * 64
    assert trainable[0][1].dtype == torch.float32
    assert not any(p.requires_grad for p in t.clip.parameters())
    # random init is N(0, 0.02)
    assert abs(trainable[0][1].std().item() - 0.02) < 0.003


def test_zero_shot_logits_use_the_dataset_template(tmp_path, eurosat_root, tiny_clip_path, tiny_clip):
    t = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "o"), trainer="ZeroshotCLIP",
                      config="configs/trainers/ZeroshotCLIP/vit_b16.yaml")
    images = torch.randn(3, 3, 32, 32)
    text = expected_text_features(tiny_clip, "a centered satellite photo of {}.", t.classnames)
    expected = clip_logits(tiny_clip.encode_image(images), text, tiny_clip.logit_scale.exp())
    torch.testing.assert_close(t.model_inference(images), expected, rtol=1e-5, atol=1e-4)


def test_csc_coop_learns_visibly_different_classes(tmp_path, tiny_clip_path):
    from caspl.testing import make_eurosat

    root = make_eurosat(str(tmp_path / "data"), per_class=20)
    t = build_trainer(root, tiny_clip_path, str(tmp_path / "o"), TRAINER__COOP__CSC=True, TRAINER__COOP__N_CTX=4,
                      DATASET__NUM_SHOTS=8, DATALOADER__TRAIN_X__BATCH_SIZE=8, OPTIM__MAX_EPOCH=20, OPTIM__LR=0.05)
    before = t.test()
    t.train()
    after = t.test()
    assert before <= 20.0  # random context: about chance (10 classes)
    assert after >= 45.0, f"accuracy {after}% after training (chance is 10%)"


def test_amp_keeps_learnable_parameters_fp32(tmp_path, eurosat_root, tiny_clip_path):
    t = build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__COOP__PREC="amp",
                      TRAINER__COOP__N_CTX=4, OPTIM__MAX_EPOCH=1, DATASET__NUM_SHOTS=2)
    start = t.prompt_learner.ctx.detach().clone()
    t.set_model_mode(True)
    t.epoch, t.batch_idx = 0, 0
    out = t.forward_backward(next(iter(t.dm.train_loader_x)))
    assert t.prompt_learner.ctx.dtype == torch.float32
    assert not torch.equal(t.prompt_learner.ctx.detach(), start)
    assert set(out) == {"loss", "acc"}
