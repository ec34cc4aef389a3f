"""The prompt mechanism: extra tokens in CLIP's encoders, on an unmodified model (OpenAI's CLIP
or an open_clip model, through caspl.clip.backbone).

A `PromptGroup` is a set of tokens for one encoder: `layers[i]` holds the tokens placed at
the group's positions at the input of transformer layer i (i < depth); after that they
are carried through unchanged. Tokens are shared ([n, d]), per class ([C, n, d], text
only) or per image ([B, n, d]).

`TextEncoder` builds each class's sequence from a prompt string in which a group is
written as a slot, `{name}` (e.g. "{ctx} dog."), with the model's own tokenizer, and runs
the text tower block by block. `ImageEncoder` appends groups after the tower's own tokens
(class and register tokens, patches). Both need nothing changed inside the model, and with
no groups (and the shared prefix off) they return what `encode_text` / `encode_image`
return (for open_clip's own towers to float rounding: caspl runs their blocks in OpenAI's
sequence-first layout).

Shared prefix: in a causal text tower (CLIP's; SigLIP's is bidirectional and takes the plain
pass), positions that hold the same tokens in every sequence ("[SOS] a photo of a", shared
context tokens, deep ones included) hold the same hidden states in every sequence at every
layer. The TextEncoder runs that prefix once
and each sequence's remaining positions attending to the prefix's keys and values: the same
function, to float rounding, at a fraction of the cost when there are many classes.
"""
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import CasplError
from .backbone import as_backbone, layer_scale, run_block

SLOT = re.compile(r"\{(\w+)\}")


@dataclass
class PromptGroup:
    layers: Sequence[torch.Tensor]
    per: str = "shared"  # shared | class | image

    def __post_init__(self):
        if self.per not in ("shared", "class", "image"):
            raise ValueError(f"PromptGroup.per must be shared, class or image, not {self.per!r}")
        if len(self.layers) == 0:
            raise ValueError("a PromptGroup needs tokens for at least layer 0")
        want = 2 if self.per == "shared" else 3
        for t in self.layers:
            if t.dim() != want:
                raise ValueError(f"a {self.per} PromptGroup holds {want}-d tensors, got shape {tuple(t.shape)}")

    @property
    def depth(self):
        return len(self.layers)

    @property
    def length(self):
        return self.layers[0].shape[-2]


def check_depth(groups, n_layers, encoder):
    for name, g in groups.items():
        if g.depth > n_layers:
            raise CasplError(f"prompt group {name!r} has depth {g.depth} but the {encoder} encoder "
                             f"has {n_layers} layers")


def run_blocks(blocks, x, step, checkpointing, before=None):
    """x through each block with `step(block, x)`; `before(i, x)` may edit x at the input of
    block i. With checkpointing (and autograd on), each block's activations are recomputed in
    the backward pass instead of kept."""
    for i, block in enumerate(blocks):
        if before is not None:
            x = before(i, x)
        if checkpointing and torch.is_grad_enabled():
            x = checkpoint(step, block, x, use_reentrant=False)
        else:
            x = step(block, x)
    return x


def split_heads(x, heads):
    """[N, L, d] -> [N, heads, L, d / heads]"""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def suffix_attention(qs, ks, vs, kp, vp):
    """Each suffix position's attention to every prefix position and causally to its own
    suffix: queries, keys and values [N, heads, S, d], the prefix's keys and values
    [1, heads, P, d], broadcast over the N sequences. Written out rather than through
    scaled_dot_product_attention, whose fused kernels need one key sequence per row (the
    prefix's keys and values copied per class): that was no faster on the CPU and keeps more
    memory for the backward pass (bench/prefix_attention.py measures both)."""
    qs = qs * qs.shape[-1] ** -0.5
    own = qs @ ks.transpose(-1, -2)
    later = torch.ones(own.shape[-2:], dtype=torch.bool, device=own.device).triu(1)
    scores = torch.cat([qs @ kp.transpose(-1, -2), own.masked_fill(later, float("-inf"))], dim=-1)
    weights = scores.softmax(dim=-1).to(vs.dtype)
    P = kp.shape[-2]
    return weights[..., :P] @ vp + weights[..., P:] @ vs


def run_prefix_block(block, state):
    """One plain block on (prefix [1, P, d], suffixes [N, S, d]), batch first: the prefix attends
    causally to itself; each suffix attends to the prefix and causally to itself. The
    block's own attention weights, with the prefix's keys and values computed once."""
    prefix, suffix = state
    attn = block.attn
    qp, kp, vp = (split_heads(t, attn.num_heads) for t in
                  F.linear(block.ln_1(prefix), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
    qs, ks, vs = (split_heads(t, attn.num_heads) for t in
                  F.linear(block.ln_1(suffix), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
    out_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)
    out_s = suffix_attention(qs, ks, vs, kp, vp)

    def finish(x, out):
        x = x + layer_scale(block, "ls_1", attn.out_proj(out.transpose(1, 2).flatten(2)))
        return x + layer_scale(block, "ls_2", block.mlp(block.ln_2(x)))

    return finish(prefix, out_p), finish(suffix, out_s)


def encode_token_ids(clip_model, ids):
    """`encode_text(ids)` of a causal, EOS-pooled text tower cut after the batch's last EOS
    (exact under the causal mask) and differentiable in every weight: for training CLIP itself."""
    backbone = as_backbone(clip_model)
    tower, dtype = backbone.text_tower("encode_token_ids"), backbone.dtype
    eos = (ids == backbone.tokenizer.eot).int().argmax(-1)
    length = int(eos.max()) + 1
    x = tower.token_embedding(ids[:, :length]).type(dtype) + tower.positional_embedding[:length].type(dtype)
    x = x.permute(1, 0, 2)
    mask = tower.mask(length, dtype, x.device)
    for block in tower.blocks:
        x = run_block(block, x, mask)
    return tower.head(x[eos, torch.arange(x.shape[1], device=x.device)], dtype)


class TextEncoder(nn.Module):
    """Text features for a fixed list of prompt strings (one per class) with group slots."""

    def __init__(self, clip_model, prompts, group_lengths: Optional[Dict[str, int]] = None, truncate=True,
                 shared_prefix=True, checkpointing=False):
        super().__init__()
        self.clip = as_backbone(clip_model)
        tower, tokenizer = self.clip.text_tower("text prompts"), self.clip.tokenizer
        self.group_lengths = dict(group_lengths or {})
        self.shared_prefix, self.checkpointing = shared_prefix, checkpointing
        # positions after EOS change nothing, and a prefix common to every sequence holds the same
        # states in each, only in a causal tower pooled at EOS (the prefix pass: with plain blocks)
        causal_eos = tower.causal and tower.pool == "eos"
        self.truncate = truncate and causal_eos
        ctx_len = tower.context_length
        ids, eos, positions = [], [], {g: [] for g in self.group_lengths}
        for text in prompts:
            row, where = ([] if tokenizer.sot is None else [tokenizer.sot]), {}
            cursor = 0
            for m in SLOT.finditer(text):
                name = m.group(1)
                if name not in self.group_lengths:
                    raise CasplError(f"prompt {text!r} has a slot {{{name}}} but no group of that name")
                row += tokenizer.encode(text[cursor:m.start()])
                where[name] = list(range(len(row), len(row) + self.group_lengths[name]))
                row += [tokenizer.pad] * self.group_lengths[name]  # replaced by the group's tokens
                cursor = m.end()
            row += tokenizer.encode(text[cursor:]) + [tokenizer.eot]
            missing = set(self.group_lengths) - set(where)
            if missing:
                raise CasplError(f"prompt {text!r} has no slot for group(s) {sorted(missing)}")
            if len(row) > ctx_len:
                raise CasplError(f"prompt {text!r} needs {len(row)} tokens, more than the text encoder's {ctx_len}")
            ids.append(row + [tokenizer.pad] * (ctx_len - len(row)))
            eos.append(len(row) - 1)
            for g in where:
                positions[g].append(where[g])
        ids = torch.tensor(ids, dtype=torch.long)
        eos = torch.tensor(eos, dtype=torch.long)
        pooled = {"eos": eos, "first": torch.zeros_like(eos), "last": torch.full_like(eos, ctx_len - 1)}[tower.pool]
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("eos", eos, persistent=False)
        self.register_buffer("pooled", pooled, persistent=False)  # the position whose states are the feature
        for g, pos in positions.items():
            self.register_buffer(f"pos_{g}", torch.tensor(pos, dtype=torch.long), persistent=False)
        with torch.no_grad():
            self.register_buffer("token_embeds", tower.token_embedding(ids), persistent=False)
        self.common_length = common_prefix_length(ids, eos, positions) if causal_eos and tower.plain else 0
        # as Python ints, so that choosing and splitting the prefix never waits on the device
        self.first_positions = {g: min(rows[0] for rows in pos) for g, pos in positions.items() if pos}
        self.row0_positions = {g: pos[0] for g, pos in positions.items() if pos}

    def prefix_length(self, groups):
        """How many leading positions the shared-prefix pass computes once for these groups
        (0: the plain pass). A group per class or per image makes its positions differ."""
        if not self.shared_prefix or any(g.per == "image" for g in groups.values()):
            return 0
        length = self.common_length
        for name, g in groups.items():
            if g.per != "shared":
                length = min(length, self.first_positions[name])
        return length if length > 1 else 0  # [SOS] alone is not worth a second pass

    @property
    def num_prompts(self):
        return self.token_ids.shape[0]

    def _layer_tokens(self, groups, layer, n_images):
        """(positions [N, m], tokens [N, m, d]) to write at the input of `layer`, or None."""
        C, B = self.num_prompts, n_images
        pos, tok = [], []
        for name, g in groups.items():
            if layer >= g.depth:
                continue
            t = g.layers[layer]
            if g.per == "shared":
                t = t.expand(C, *t.shape)
            if B:  # per-image mode: rows are (image, class) pairs, image-major
                t = (t.unsqueeze(0).expand(B, *t.shape) if g.per != "image"
                     else t.unsqueeze(1).expand(B, C, *t.shape[1:]))
                t = t.reshape(B * C, *t.shape[2:])
            p = getattr(self, f"pos_{name}")
            pos.append(p.repeat(B, 1) if B else p)
            tok.append(t)
        if not pos:
            return None
        return torch.cat(pos, 1), torch.cat(tok, 1)

    def forward(self, groups: Optional[Dict[str, PromptGroup]] = None):
        """[C, D] features, or [B, C, D] when a group is per image."""
        groups = dict(groups or {})
        if set(groups) != set(self.group_lengths):
            raise ValueError(f"expected groups {sorted(self.group_lengths)}, got {sorted(groups)}")
        tower = self.clip.text
        check_depth(groups, tower.layers, "text")
        per_image = [g.layers[0].shape[0] for g in groups.values() if g.per == "image"]
        B = per_image[0] if per_image else 0
        dtype = self.clip.dtype
        L = int(self.eos.max()) + 1 if self.truncate else self.token_ids.shape[1]
        P = self.prefix_length(groups)
        if P:
            return self._forward_shared_prefix(groups, P, L)

        x = self.token_embeds[:, :L].type(dtype)
        pooled = self.pooled
        if B:
            x = x.unsqueeze(0).expand(B, *x.shape).reshape(-1, *x.shape[1:])
            pooled = pooled.repeat(B)
        x = x.permute(1, 0, 2)  # NLD -> LND, as CLIP's blocks expect
        mask = tower.mask(L, dtype, x.device)

        def write_prompts(i, x):
            new = self._layer_tokens(groups, i, B)
            if new is not None:
                pos, tok = new
                idx = pos.t().unsqueeze(-1).expand(-1, -1, x.shape[-1])
                x = x.scatter(0, idx, tok.transpose(0, 1).to(dtype))
            if i == 0:  # input tokens (prompts included) get positional embeddings; deep prompts do not
                x = x + tower.positional_embedding[:L].type(dtype).unsqueeze(1)
            return x

        x = run_blocks(tower.blocks, x, lambda block, x: run_block(block, x, mask), self.checkpointing, write_prompts)
        x = tower.head(x[pooled, torch.arange(x.shape[1], device=x.device)], dtype)
        return x.view(B, self.num_prompts, -1) if B else x

    def _forward_shared_prefix(self, groups, P, L):
        """The plain pass's result, with positions [0, P) run once (batch-first layout)."""
        tower = self.clip.text
        dtype = self.clip.dtype
        C, width = self.num_prompts, self.token_embeds.shape[-1]
        positions = {name: getattr(self, f"pos_{name}") for name in groups}

        def write_prompts(i, state):
            prefix, suffix = state
            for name, g in groups.items():
                if i >= g.depth:
                    continue
                t, pos = g.layers[i].to(dtype), positions[name]
                n_pre = sum(p < P for p in self.row0_positions[name])  # in the prefix (shared groups only)
                if n_pre:
                    idx = pos[:1, :n_pre].unsqueeze(-1).expand(1, n_pre, width)
                    prefix = prefix.scatter(1, idx, t[:n_pre].unsqueeze(0))
                if n_pre < pos.shape[1]:
                    rest = t[n_pre:].expand(C, -1, -1) if g.per == "shared" else t[:, n_pre:]
                    idx = (pos[:, n_pre:] - P).unsqueeze(-1).expand(-1, -1, width)
                    suffix = suffix.scatter(1, idx, rest)
            if i == 0:
                pe = tower.positional_embedding.type(dtype)
                prefix, suffix = prefix + pe[:P], suffix + pe[P:L]
            return prefix, suffix

        state = (self.token_embeds[:1, :P].type(dtype), self.token_embeds[:, P:L].type(dtype))
        _, suffix = run_blocks(tower.blocks, state, run_prefix_block, self.checkpointing, write_prompts)
        return tower.head(suffix[torch.arange(C, device=suffix.device), self.eos - P], dtype)


def common_prefix_length(ids, eos, positions):
    """Leading positions where every sequence holds the same token id, or the same token of the
    same group, stopping before the first EOS (each sequence keeps its own last positions)."""
    owner = torch.full(ids.shape, -1, dtype=torch.long)
    for g, (name, pos) in enumerate(positions.items()):
        if pos:
            pos = torch.tensor(pos, dtype=torch.long)
            owner.scatter_(1, pos, g * ids.shape[1] + torch.arange(pos.shape[1]).expand_as(pos))
    same = ((ids == ids[:1]) & (owner == owner[:1])).all(0)[:int(eos.min())]
    differs = (~same).nonzero()
    return int(differs[0]) if len(differs) else len(same)


class ImageEncoder(nn.Module):
    """Image features with groups appended after the tower's own tokens, in the dict's order."""

    def __init__(self, clip_model, checkpointing=False):
        super().__init__()
        self.clip = as_backbone(clip_model)
        self.checkpointing = checkpointing

    def forward(self, images, groups: Optional[Dict[str, PromptGroup]] = None):
        groups = dict(groups or {})
        if not groups:
            return self.clip.encode_image(images)
        return vit_image_features(self.clip, images, groups, self.checkpointing)


def vit_image_features(backbone, images, groups, checkpointing=False):
    """A ViT tower's image features with prompt groups (none: exactly OpenAI CLIP's encode_image,
    in every precision). The head (norm, pooling, projection) sees the tower's own tokens only:
    prompts act through attention."""
    vision = backbone.vision_tower("visual prompts")
    check_depth(groups, vision.layers, "image")
    if any(g.per == "class" for g in groups.values()):
        raise ValueError("image prompt groups are shared or per image, not per class")
    dtype = backbone.dtype
    x, extra = vision.embed(images.to(dtype))
    batch, n_fixed = x.shape[0], x.shape[1]
    seq = vision.seq_dim

    def tokens(g, layer):  # [B, n, d]
        t = g.layers[layer].to(dtype)
        return t.expand(batch, *t.shape) if g.per == "shared" else t

    # input prompts pass through the norm before the blocks (CLIP's ln_pre), deep ones do not
    x = vision.to_blocks(vision.pre(torch.cat([x] + [tokens(g, 0) for g in groups.values()], dim=1)))

    def write_deep_prompts(i, x):
        if i > 0 and any(i < g.depth for g in groups.values()):
            parts, start = [x.narrow(seq, 0, n_fixed)], n_fixed
            for g in groups.values():
                parts.append(vision.to_blocks(tokens(g, i)) if i < g.depth else x.narrow(seq, start, g.length))
                start += g.length
            x = torch.cat(parts, dim=seq)
        return x

    n_prompts = sum(g.length for g in groups.values())
    x = run_blocks(vision.blocks, x, vision.step(extra, n_prompts), checkpointing, write_deep_prompts)
    return vision.head(x.narrow(seq, 0, n_fixed))


def clip_logits(image_features, text_features, logit_scale):
    """scale * cosine similarity; text features [C, D] or per image [B, C, D]. Features of two
    precisions (a frozen fp32 anchor against a half-precision tower's output) meet in the wider
    one; under autocast the product runs in autocast's dtype as always."""
    dtype = torch.promote_types(image_features.dtype, text_features.dtype)
    image_features = F.normalize(image_features.to(dtype), dim=-1)
    text_features = F.normalize(text_features.to(dtype), dim=-1)
    if text_features.dim() == 3:
        return logit_scale * torch.einsum("bd,bcd->bc", image_features, text_features)
    return logit_scale * image_features @ text_features.t()


def class_prompts(template, classnames):
    """One prompt string per class: `{}` in the template becomes the class name (with "_"
    read as a space); group slots such as `{ctx}` are kept for the TextEncoder."""
    return [template.replace("{}", name.replace("_", " ")) for name in classnames]
