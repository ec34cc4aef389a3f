"""CTX_INIT read as the reference methods read it: underscores are spaces, CoOp and CoCoOp
learn one token per word (the phrase's other tokens stay as words), and CoOp's CSC is
ignored with CTX_INIT unless TRAINER.COOP.CSC_WITH_CTX_INIT asks for per-class copies."""
import clip
import pytest
import torch

from caspl.clip import class_prompts, encode
from test_methods import make

SECTION = {"CoOp": "COOP", "CoCoOp": "COCOOP", "IVLP": "IVLP", "MaPLe": "MAPLE", "PromptSRC": "PROMPTSRC",
           "LAMM_CoOp": "COOP", "LAMM_MaPLe": "MAPLE"}


def text_features(t):
    if t.cfg.TRAINER.NAME == "CoCoOp":  # conditioned on an image: one (blank) image's prompts
        return t.text_features(t.image_features(torch.zeros(1, 3, 32, 32)))[0]
    return t.text_features()


def context(t):
    learner = t.prompt_learner
    learner = getattr(learner, "text", learner)  # IVLP / PromptSRC: the text half
    ctx = learner.ctx
    return getattr(ctx, "ctx", ctx).detach()  # CoCoOp: the context under the meta-net


@pytest.mark.parametrize("name", list(SECTION))
def test_underscores_in_ctx_init_are_spaces(tmp_path, eurosat_root, tiny_clip_path, name):
    key = f"TRAINER__{SECTION[name]}__CTX_INIT"
    spaced = make(name, eurosat_root, tiny_clip_path, str(tmp_path / "a"), **{key: "a photo of a"})
    underscored = make(name, eurosat_root, tiny_clip_path, str(tmp_path / "b"), **{key: "a_photo_of_a"})
    assert torch.equal(context(underscored), context(spaced))
    assert torch.equal(underscored.text_encoder.token_ids, spaced.text_encoder.token_ids)
    with torch.no_grad():
        torch.testing.assert_close(text_features(underscored), text_features(spaced), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["CoOp", "CoCoOp"])
def test_one_context_token_per_word_the_rest_stay_words(tmp_path, eurosat_root, tiny_clip_path, tiny_clip, name):
    phrase = "a vibrantly coloured"  # "vibrantly" is two BPE tokens: 3 words, 4 tokens
    assert len(encode(phrase)) == 4
    t = make(name, eurosat_root, tiny_clip_path, str(tmp_path / "o"), **{f"TRAINER__{SECTION[name]}__CTX_INIT": phrase})
    assert context(t).shape == (3, 64)
    if name == "CoCoOp":  # the meta-net shifts the context: look at the prompt before the shift
        with torch.no_grad():
            t.prompt_learner.meta_net[-1].weight.zero_()
            t.prompt_learner.meta_net[-1].bias.zero_()
    with torch.no_grad():
        got = text_features(t)
    expected = tiny_clip.encode_text(clip.tokenize(class_prompts(phrase + " {}.", t.classnames)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_csc_is_ignored_with_ctx_init_as_in_the_reference(tmp_path, eurosat_root, tiny_clip_path, capsys):
    t = make("CoOp", eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__COOP__CSC=True)
    assert "CSC is ignored with CTX_INIT" in capsys.readouterr().out
    assert context(t).shape == (4, 64) and "prompt_learner" not in t.per_class_models


def test_per_class_copies_of_the_phrase_behind_their_own_key(tmp_path, eurosat_root, tiny_clip_path):
    shared = make("CoOp", eurosat_root, tiny_clip_path, str(tmp_path / "a"))
    t = make("CoOp", eurosat_root, tiny_clip_path, str(tmp_path / "o"), TRAINER__COOP__CSC=True,
             TRAINER__COOP__CSC_WITH_CTX_INIT=True)
    ctx = context(t)
    assert ctx.shape == (10, 4, 64) and "prompt_learner" in t.per_class_models
    assert all(torch.equal(ctx[c], context(shared)) for c in range(10))
