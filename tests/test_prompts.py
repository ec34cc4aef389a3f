"""Exactness rules of the prompt mechanism (docs/architecture.md, "The prompt mechanism")."""
import pytest
import torch
import clip

from caspl import CasplError
from caspl.clip import ImageEncoder, PromptGroup, TextEncoder, class_prompts, clip_logits, encode

NAMES = ["Annual Crop Land", "Forest", "Sea or Lake", "Highway or Road"]


def embed(model, text):
    return model.token_embedding(torch.tensor(encode(text))).detach()


def test_no_groups_is_exactly_encode_text(tiny_clip):
    texts = class_prompts("a centered satellite photo of {}.", NAMES)
    expected = tiny_clip.encode_text(clip.tokenize(texts))
    assert torch.equal(TextEncoder(tiny_clip, texts, truncate=False, shared_prefix=False)(), expected)
    torch.testing.assert_close(TextEncoder(tiny_clip, texts)(), expected, rtol=1e-5, atol=1e-6)


def test_truncating_after_last_eos_changes_nothing(tiny_clip):
    texts = class_prompts("a photo of a {}.", NAMES)
    full = TextEncoder(tiny_clip, texts, truncate=False, shared_prefix=False)()
    cut = TextEncoder(tiny_clip, texts, truncate=True, shared_prefix=False)()
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-6)
    groups = {"ctx": PromptGroup([torch.randn(3, 64), torch.randn(3, 64)])}
    full = TextEncoder(tiny_clip, class_prompts("{ctx} {}.", NAMES), {"ctx": 3}, truncate=False,
                       shared_prefix=False)(groups)
    cut = TextEncoder(tiny_clip, class_prompts("{ctx} {}.", NAMES), {"ctx": 3}, truncate=True,
                      shared_prefix=False)(groups)
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-6)


def test_no_groups_is_exactly_encode_image(tiny_clip):
    images = torch.randn(3, 3, 32, 32)
    assert torch.equal(ImageEncoder(tiny_clip)(images), tiny_clip.encode_image(images))


def test_shallow_group_of_word_embeddings_equals_the_words(tiny_clip):
    """A layer-0 group holding the embeddings of "a photo of a" is the text "a photo of a"."""
    ctx = embed(tiny_clip, "a photo of a")
    enc = TextEncoder(tiny_clip, class_prompts("{ctx} {}.", NAMES), {"ctx": 4}, truncate=False)
    expected = tiny_clip.encode_text(clip.tokenize(class_prompts("a photo of a {}.", NAMES)))
    torch.testing.assert_close(enc({"ctx": PromptGroup([ctx])}), expected, rtol=1e-5, atol=1e-6)


def test_group_positions_follow_the_slots(tiny_clip):
    """Middle placement: each class's second slot starts after its own class-name tokens."""
    enc = TextEncoder(tiny_clip, class_prompts("{a} {} {b}.", NAMES), {"a": 2, "b": 3})
    for c, name in enumerate(NAMES):
        n_name = len(encode(name))
        assert enc.pos_a[c].tolist() == [1, 2]
        assert enc.pos_b[c].tolist() == list(range(3 + n_name, 6 + n_name))
        assert int(enc.eos[c]) == 6 + n_name + 1  # then ".", then EOS
    ctx_a, ctx_b = embed(tiny_clip, "a photo"), embed(tiny_clip, "of a thing")
    got = enc({"a": PromptGroup([ctx_a]), "b": PromptGroup([ctx_b])})
    expected = tiny_clip.encode_text(clip.tokenize([f"a photo {n} of a thing." for n in NAMES]))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def capture_block_inputs(blocks):
    """Each block's input, as its first norm sees it (the encoders run a block's parts, not its forward)."""
    seen = []
    hooks = [b.ln_1.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone())) for b in blocks]
    return seen, hooks


def test_deep_text_group_replaces_its_positions_below_depth_only(tiny_clip):
    seen, _ = capture_block_inputs(tiny_clip.transformer.resblocks)
    torch.manual_seed(0)
    layers = [torch.randn(2, 64), torch.randn(2, 64)]  # depth 2 = every layer of the tiny text encoder
    enc = TextEncoder(tiny_clip, class_prompts("{ctx} {}.", NAMES), {"ctx": 2}, shared_prefix=False)
    enc({"ctx": PromptGroup(layers)})
    deep, seen[:] = list(seen), []
    enc({"ctx": PromptGroup(layers[:1])})
    shallow = list(seen)
    pos_emb = tiny_clip.positional_embedding[1:3]
    # layer 0: the group's tokens plus positional embeddings, for every class
    for c in range(len(NAMES)):
        torch.testing.assert_close(deep[0][1:3, c], layers[0] + pos_emb)
    # layer 1 with depth 2: exactly the layer-1 tokens (no positional embedding)
    assert torch.equal(deep[1][1:3], layers[1].unsqueeze(1).expand(2, len(NAMES), 64))
    # layer 1 with depth 1: carried through from layer 0's output instead
    assert not torch.allclose(shallow[1][1:3], deep[1][1:3])
    # nothing outside the group's positions differs at layer 1's input (layer 0 ran identically)
    assert torch.equal(deep[1][:1], shallow[1][:1])
    assert torch.equal(deep[1][3:], shallow[1][3:])


def test_deep_image_group_replaces_its_positions_below_depth_only(tiny_clip):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    a = PromptGroup([torch.randn(3, 64), torch.randn(3, 64)])  # deep: depth 2
    b = PromptGroup([torch.randn(2, 64)])  # shallow
    blocks = tiny_clip.visual.transformer.resblocks
    seen, hooks = capture_block_inputs(blocks)
    try:
        ImageEncoder(tiny_clip)(images, {"a": a, "b": b})
    finally:
        for h in hooks:
            h.remove()
    n_fixed = 1 + (32 // 8) ** 2  # [CLS] + patches
    assert seen[0].shape[0] == n_fixed + 5
    # layer 1: group a's positions hold its layer-1 tokens; group b is carried through
    assert torch.equal(seen[1][n_fixed:n_fixed + 3], a.layers[1].expand(2, 3, 64).transpose(0, 1))
    assert not torch.allclose(seen[1][n_fixed + 3:], b.layers[0].expand(2, 2, 64).transpose(0, 1))
    # layer 0: input prompts go through ln_pre with everything else
    ln_pre = tiny_clip.visual.ln_pre
    torch.testing.assert_close(seen[0][n_fixed:n_fixed + 3, 0], ln_pre(a.layers[0]))


def test_per_class_and_per_image_groups_match_separate_runs(tiny_clip):
    torch.manual_seed(0)
    enc = TextEncoder(tiny_clip, class_prompts("{ctx} {}.", NAMES), {"ctx": 2})
    per_class = torch.randn(len(NAMES), 2, 64)
    got = enc({"ctx": PromptGroup([per_class], per="class")})
    for c in range(len(NAMES)):
        alone = enc({"ctx": PromptGroup([per_class[c]])})[c]
        torch.testing.assert_close(got[c], alone, rtol=1e-5, atol=1e-6)
    per_image = torch.randn(3, 2, 64)
    got = enc({"ctx": PromptGroup([per_image], per="image")})
    assert got.shape == (3, len(NAMES), 32)
    for b in range(3):
        torch.testing.assert_close(got[b], enc({"ctx": PromptGroup([per_image[b]])}), rtol=1e-5, atol=1e-6)
    images = torch.randn(3, 3, 32, 32)
    vis = torch.randn(3, 2, 64)
    batch = ImageEncoder(tiny_clip)(images, {"v": PromptGroup([vis], per="image")})
    for b in range(3):
        one = ImageEncoder(tiny_clip)(images[b:b + 1], {"v": PromptGroup([vis[b]])})
        torch.testing.assert_close(batch[b:b + 1], one, rtol=1e-5, atol=1e-5)
    logits = clip_logits(batch, got, 100.0)
    assert logits.shape == (3, len(NAMES))


def test_gradients_reach_group_tokens_only(tiny_clip):
    ctx = torch.zeros(2, 64, requires_grad=True)
    enc = TextEncoder(tiny_clip, class_prompts("{ctx} {}.", NAMES), {"ctx": 2})
    enc({"ctx": PromptGroup([ctx])}).sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_clip.parameters())


def test_bad_groups_are_rejected(tiny_clip):
    with pytest.raises(CasplError, match="no group of that name"):
        TextEncoder(tiny_clip, ["{ctx} dog."], {})
    with pytest.raises(CasplError, match="no slot"):
        TextEncoder(tiny_clip, ["dog."], {"ctx": 2})
    enc = TextEncoder(tiny_clip, ["{ctx} dog."], {"ctx": 2})
    with pytest.raises(CasplError, match="depth 3 but the text encoder has 2 layers"):
        enc({"ctx": PromptGroup([torch.zeros(2, 64)] * 3)})
    with pytest.raises(CasplError, match="more than the text encoder's 77"):
        TextEncoder(tiny_clip, ["{ctx} dog."], {"ctx": 80})


def test_encode_token_ids_is_encode_text(tiny_clip):
    from caspl.clip.prompts import encode_token_ids

    ids = clip.tokenize(class_prompts("a photo of a {}.", NAMES))
    torch.testing.assert_close(encode_token_ids(tiny_clip, ids), tiny_clip.encode_text(ids), rtol=1e-5, atol=1e-6)
