"""Learnable prompt tokens shared by the methods: a context (per layer, optionally per
class) that yields a PromptGroup, and the word-phrase initialisation the methods use."""
import torch
import torch.nn as nn

from .backbone import as_backbone
from .prompts import PromptGroup

INIT_STD = 0.02


def text_width(clip_model):
    return as_backbone(clip_model).text_tower("text prompts").width


def vision_width(clip_model):
    return as_backbone(clip_model).vision_tower("visual prompts").width


def token_count(clip_model, phrase):
    """How many tokens the model's tokenizer makes of `phrase`."""
    return len(as_backbone(clip_model).tokenizer.encode(phrase))


def init_phrase(text):
    """A CTX_INIT value as the reference methods read it: underscores are spaces
    ("a_photo_of_a" is "a photo of a")."""
    return " ".join(text.replace("_", " ").split())


def phrase_context(clip_model, phrase, n_ctx=None):
    """(token embeddings of the first n_ctx tokens of `phrase` [n, d], the phrase's remaining
    words as text). n_ctx None takes every token of the phrase."""
    backbone = as_backbone(clip_model)
    ids = backbone.tokenizer.encode(phrase)
    n_ctx = len(ids) if n_ctx is None else n_ctx
    embedding = backbone.text_tower("text prompts").token_embedding
    with torch.no_grad():
        ctx = embedding(torch.tensor(ids[:n_ctx], device=embedding.weight.device)).float().cpu()
    return ctx, backbone.tokenizer.decode(ids[n_ctx:]).strip()


def word_context(clip_model, phrase):
    """CoOp's and CoCoOp's CTX_INIT: one learned token per word of the phrase (its first
    that many tokens, whatever N_CTX says); tokens beyond them (a word BPE splits) stay in the
    prompt as fixed words. (token embeddings [n, d], the fixed words)."""
    phrase = init_phrase(phrase)
    return phrase_context(clip_model, phrase, len(phrase.split()))


class DeepPrompt(nn.Module):
    """`n` tokens of width `width` for layers 0..depth-1: `ctx` at the input (shared [n, d]
    or per class [C, n, d]) and `deep_ctx` [depth-1, n, d] replacing them before each
    deeper layer. Random N(0, 0.02) unless `init` ([n, d]) gives the input tokens."""

    def __init__(self, n, width, depth=1, n_classes=0, init=None):
        super().__init__()
        ctx = init.clone().float() if init is not None else torch.empty(n, width).normal_(std=INIT_STD)
        if n_classes:
            ctx = ctx.unsqueeze(0).repeat(n_classes, 1, 1)
        self.ctx = nn.Parameter(ctx)
        self.deep_ctx = nn.Parameter(torch.empty(depth - 1, n, width).normal_(std=INIT_STD)) if depth > 1 else None

    @property
    def length(self):
        return self.ctx.shape[-2]

    @property
    def depth(self):
        return 1 + (0 if self.deep_ctx is None else self.deep_ctx.shape[0])

    def layers(self):
        return [self.ctx] + (list(self.deep_ctx.unbind(0)) if self.deep_ctx is not None else [])

    def group(self, start=0, end=None):
        """The tokens [start:end] of every layer as a group."""
        layers = [t[..., start:end, :] for t in self.layers()]
        per = "class" if self.ctx.dim() == 3 else "shared"
        if per == "class" and len(layers) > 1:  # deep tokens are shared: give each class its copy
            layers = [layers[0]] + [t.expand(self.ctx.shape[0], *t.shape) for t in layers[1:]]
        return PromptGroup(layers, per=per)


def deep_text_context(clip_model, n_ctx, phrase, depth):
    """The text context of IVLP, MaPLe and PromptSRC and the prompt template around it.

    A phrase initialises the input tokens only when n_ctx <= 4 (as the reference methods
    do) and it has that many tokens: its first n_ctx tokens are learned and its remaining words stay in the prompt
    as fixed words ("a photo of a", n_ctx 2 -> "{ctx} of a {}."). Otherwise N(0, 0.02)."""
    phrase = init_phrase(phrase)
    use_phrase = phrase and n_ctx <= 4 and token_count(clip_model, phrase) >= n_ctx
    init, rest = phrase_context(clip_model, phrase, n_ctx) if use_phrase else (None, "")
    template = " ".join(part for part in ("{ctx}", rest, "{}.") if part)
    return DeepPrompt(n_ctx, text_width(clip_model), depth, init=init), template
