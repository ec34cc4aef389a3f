"""One interface over the CLIP-like models caspl prompts, with no patched copy of any of them.

A `Backbone` holds an unmodified model and describes its two towers the way the prompt
encoders (caspl.clip.prompts) need them: the text tower's token and positional embeddings,
blocks, attention mask, final norm, projection and pooling; the image tower's embedding
(patches, class and register tokens, positions), its norm before the blocks, the blocks and
its head (norm, pooling, projection). Two kinds of model:

- OpenAI's `clip.model.CLIP` (openai-clip), loaded by `caspl.clip.loader.load_clip`;
- open_clip's models, `open_clip:<architecture or config .json>/<pretrained tag or file>`:
  its own `TextTransformer` (causal or bidirectional; pooled at EOS, first or last token)
  and `VisionTransformer` (class-token, average or attention pooling), or the timm ViTs it
  wraps (SigLIP, EVA02 with rotary positions). Each model's own tokenizer, preprocessing,
  logit scale and logit bias are used.

An image tower that is not a ViT (ResNet, ConvNeXt) has no `vision`: it encodes images, and
visual prompts are refused. A text tower open_clip builds from Hugging Face (`hf_model_name`)
has no `text`: text prompts are refused there.
"""
import json
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CasplError
from . import tokenizer as openai_tokenizer
from .loader import load_clip

OPEN_CLIP = "open_clip:"
INSTALL = 'pip install -e ".[open_clip]"'
SPEC_FORM = "open_clip:<architecture or model-config .json>/<pretrained tag or checkpoint file>"
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
OPENAI_PREPROCESS = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711),
                     "interpolation": "bicubic"}


def is_open_clip(spec):
    return spec.startswith(OPEN_CLIP)


# ---------------------------------------------------------------------------------- blocks
def is_plain_block(block):
    """A CLIP residual block (OpenAI's, or open_clip's ResidualAttentionBlock): pre-norm
    nn.MultiheadAttention and MLP, with optional layer scales."""
    return isinstance(getattr(block, "attn", None), nn.MultiheadAttention) and all(
        hasattr(block, n) for n in ("ln_1", "ln_2", "mlp")) and not hasattr(block, "ln_1_kv")


def layer_scale(block, name, x):
    scale = getattr(block, name, None)
    return x if scale is None else scale(x)


def self_attention(attn, x, attn_mask):
    """`attn` (an nn.MultiheadAttention, batch first or not) on x in [L, N, D] layout, as
    the module computes it outside its inference fast path."""
    return F.multi_head_attention_forward(
        x, x, x, attn.embed_dim, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias, attn.bias_k, attn.bias_v,
        attn.add_zero_attn, 0.0, attn.out_proj.weight, attn.out_proj.bias, training=False, need_weights=False,
        attn_mask=attn_mask)[0]


def run_plain_block(block, x, attn_mask):
    """A plain block on x [L, N, D] with an explicit mask (OpenAI's blocks hold a mask fixed at
    77 positions, and the encoders may run fewer)."""
    x = x + layer_scale(block, "ls_1", self_attention(block.attn, block.ln_1(x), attn_mask))
    return x + layer_scale(block, "ls_2", block.mlp(block.ln_2(x)))


def run_block(block, x, attn_mask):
    """Any block of a CLIP or open_clip transformer on x [L, N, D]; blocks that are not plain
    (open_clip's custom attention) run as themselves, batch first."""
    if is_plain_block(block):
        return run_plain_block(block, x, attn_mask)
    return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)


# ---------------------------------------------------------------------------------- tokenizers
class Tokenizer:
    """A model's tokenizer as the text encoder builds sequences: `encode(text)` gives the ids
    of a piece of text with no special tokens; a sequence is [sot] ids [eot] padded with
    `pad` to `context_length` (sot None: the tokenizer writes none)."""

    def __init__(self, encode, decode, sot, eot, pad, context_length):
        self.encode, self.decode = encode, decode
        self.sot, self.eot, self.pad, self.context_length = sot, eot, pad, context_length


def openai_clip_tokenizer(context_length):
    return Tokenizer(openai_tokenizer.encode, openai_tokenizer.decode, openai_tokenizer.SOT, openai_tokenizer.EOT,
                     0, context_length)


def open_clip_tokenizer(tok, context_length):
    """open_clip's tokenizer as a `Tokenizer`: its BPE tokenizer (that of OpenAI's CLIP, with its
    own text cleaning) or a Hugging Face tokenizer (SigLIP's), read through its own ids."""
    if hasattr(tok, "sot_token_id"):
        return Tokenizer(tok.encode, tok.decode, tok.sot_token_id, tok.eot_token_id, 0, context_length)
    hf = getattr(tok, "tokenizer", None)
    if hf is None or getattr(hf, "eos_token_id", None) is None:
        raise CasplError(f"text prompts need a tokenizer caspl can read; open_clip gave a {type(tok).__name__}")
    clean = getattr(tok, "clean_fn", lambda text: text)
    empty = tok([""])[0].tolist()  # does it write a start token?
    sot = empty[0] if hf.bos_token_id is not None and empty[0] == hf.bos_token_id else None
    pad = hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id
    return Tokenizer(lambda text: hf.encode(clean(text), add_special_tokens=False), hf.decode, sot,
                     hf.eos_token_id, pad, context_length)


# ---------------------------------------------------------------------------------- text tower
class TextTower:
    """A transformer text tower: sequences of `context_length` tokens through `blocks` (run
    with `run_block` in [L, N, D] layout), then `head` on the pooled position's states.

    causal: the attention mask is causal (then a prefix shared by every sequence has the same
    states in each, and positions after the pooled EOS change nothing). pool: "eos" (the end
    token; open_clip's argmax and eos), "first" or "last"."""

    def __init__(self, token_embedding, positional_embedding, blocks, attn_mask_of, ln_final, projection, pool):
        self.token_embedding, self.positional_embedding, self.blocks = token_embedding, positional_embedding, blocks
        self.ln_final, self.projection, self.pool = ln_final, projection, pool
        self.attn_mask_of = attn_mask_of  # read when used: moving a model to a device replaces its buffers
        self.plain = all(is_plain_block(b) for b in blocks)

    @property
    def width(self):
        return self.token_embedding.weight.shape[1]

    @property
    def layers(self):
        return len(self.blocks)

    @property
    def context_length(self):
        return self.positional_embedding.shape[0]

    @property
    def causal(self):
        return self.attn_mask_of() is not None

    def mask(self, length, dtype, device):
        mask = self.attn_mask_of()
        return None if mask is None else mask[:length, :length].to(dtype=dtype, device=device)

    def head(self, states, dtype):
        """Final norm and projection of the pooled positions' states [N, width]."""
        x = self.ln_final(states).to(dtype)
        if isinstance(self.projection, nn.Linear):
            return self.projection(x)
        return x if self.projection is None else x @ self.projection


def text_pool(pool_type):
    pools = {"argmax": "eos", "eos": "eos", "first": "first", "last": "last"}
    if pool_type not in pools:
        raise CasplError(f"text prompts: open_clip text pooling {pool_type!r} is not supported "
                         f"({', '.join(sorted(pools))} are)")
    return pools[pool_type]


# ---------------------------------------------------------------------------------- image tower
class VisionTower:
    """A ViT image tower: `embed(images)` gives its tokens [B, N, D] before any prompt (class and
    register tokens, patches, positions) and what its blocks need besides (rotary positions);
    `pre` is its norm before the blocks; `step(extra, n_prompts)` runs one block in the tower's
    layout (`seq_dim` 0: [L, N, D], 1: [N, L, D]); `head` maps its own tokens (prompts removed)
    to the image feature."""

    seq_dim = 0

    def __init__(self, visual):
        self.visual = visual

    def to_blocks(self, x):
        return x.permute(1, 0, 2) if self.seq_dim == 0 else x

    @property
    def layers(self):
        return len(self.blocks)


class ClipVisionTower(VisionTower):
    """OpenAI's VisionTransformer, or open_clip's (same names; open_clip's pools its own way)."""

    def __init__(self, visual):
        super().__init__(visual)
        self.blocks = visual.transformer.resblocks
        self.width = visual.conv1.weight.shape[0]
        self.pooled_by_model = hasattr(visual, "_pool")  # open_clip: token, average or attention pooling

    def embed(self, images):
        """The class token and positions in the weights' dtype (under autocast the patches come
        out in autocast's; the sum is then in the wider: as caspl's prompted path always was)."""
        visual, dtype = self.visual, images.dtype
        x = visual.conv1(images)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=dtype, device=x.device)
        return torch.cat([cls, x], dim=1) + visual.positional_embedding.to(dtype), None

    def pre(self, x):
        return self.visual.ln_pre(x)

    def step(self, extra, n_prompts):
        return lambda block, x: run_block(block, x, None)

    def head(self, x):
        visual = self.visual
        if self.pooled_by_model:
            x = visual._pool(x.permute(1, 0, 2))[0]
        else:
            x = visual.ln_post(x[0])
        return x @ visual.proj if visual.proj is not None else x


class TimmVisionTower(VisionTower):
    """A timm ViT (VisionTransformer, or Eva with rotary positions) inside open_clip's TimmModel."""

    seq_dim = 1

    def __init__(self, visual):
        super().__init__(visual)
        self.trunk = visual.trunk
        self.blocks = self.trunk.blocks
        self.width = self.trunk.embed_dim

    def embed(self, images):
        x = self.trunk._pos_embed(self.trunk.patch_embed(images))
        if isinstance(x, tuple):  # Eva: (tokens, rotary positions), its patch dropout applied
            return x
        return self.trunk.patch_drop(x), None

    def pre(self, x):
        return self.trunk.norm_pre(x)

    def step(self, rope, n_prompts):
        if rope is None:
            return lambda block, x: block(x)
        # prompt tokens get no rotary position: rows of sin 0, cos 1 (the identity rotation)
        half = rope.shape[-1] // 2
        identity = torch.cat([rope.new_zeros(half), rope.new_ones(half)]).expand(*rope.shape[:-2], n_prompts, -1)
        rope = torch.cat([rope, identity], dim=-2)
        return lambda block, x: block(x, rope=rope)

    def head(self, x):
        return self.visual.head(self.trunk.forward_head(self.trunk.norm(x)))


# ---------------------------------------------------------------------------------- backbones
class Backbone(nn.Module):
    """A frozen CLIP-like `model` and what the prompt encoders read of it (see the module's
    docstring). `name` is what loaded it; `preprocess` its input size, mean, std and
    interpolation; `openai`: OpenAI's CLIP class (openai-clip)."""

    def __init__(self, model, name, tokenizer, text, vision, preprocess, dtype, openai=False):
        super().__init__()
        self.model = model
        self.name, self.tokenizer, self.text, self.vision = name, tokenizer, text, vision
        self.preprocess, self.dtype, self.openai = preprocess, dtype, openai

    @property
    def logit_scale(self):
        return self.model.logit_scale

    @property
    def logit_bias(self):
        return getattr(self.model, "logit_bias", None)

    @property
    def input_resolution(self):
        return self.preprocess["size"]

    @property
    def embed_dim(self):
        """The width of the features both towers project to."""
        proj = None if self.text is None else self.text.projection
        if isinstance(proj, nn.Linear):
            return proj.out_features
        if proj is not None:
            return proj.shape[1]
        if self.text is not None:
            return self.text.width
        size = self.input_resolution
        size = (size, size) if isinstance(size, int) else size
        with torch.no_grad():
            return self.encode_image(self.logit_scale.new_zeros(1, 3, *size)).shape[-1]

    def encode_image(self, images):
        """Image features: OpenAI's CLIP and towers caspl does not prompt as themselves; an
        open_clip ViT through caspl's own pass, the one prompted images take (for the weights of
        an OpenAI CLIP, in fp32, exactly OpenAI's encode_image)."""
        if self.vision is None or self.openai:
            return self.model.encode_image(images.to(self.dtype))
        from .prompts import vit_image_features  # the prompt mechanism builds on this module

        return vit_image_features(self, images, {})

    def text_tower(self, what):
        if self.text is None:
            raise CasplError(f"{what}: the text tower of {self.name} is not one caspl can prompt "
                             "(open_clip builds it from Hugging Face)")
        return self.text

    def vision_tower(self, what):
        if self.vision is None:
            raise CasplError(f"{what} enter the image encoder: {self.name} must be a ViT "
                             f"(its image encoder is a {type(self.model.visual).__name__})")
        return self.vision


def openai_backbone(model, name=""):
    """A Backbone over OpenAI's `clip.model.CLIP`."""
    text = TextTower(model.token_embedding, model.positional_embedding, model.transformer.resblocks,
                     lambda: model.transformer.resblocks[0].attn_mask, model.ln_final, model.text_projection, "eos")
    vision = ClipVisionTower(model.visual) if hasattr(model.visual, "transformer") else None
    res = model.visual.input_resolution
    preprocess = {"size": res, **OPENAI_PREPROCESS}
    return Backbone(model, name, openai_clip_tokenizer(model.context_length), text, vision, preprocess, model.dtype,
                    openai=True)


def open_clip_towers(model):
    """(text tower or None, image tower or None) of an open_clip model."""
    text_module = getattr(model, "text", model)  # CustomTextCLIP holds its tower; CLIP holds it itself
    text = None
    if hasattr(text_module, "transformer") and hasattr(text_module, "token_embedding"):
        if getattr(text_module, "cls_emb", None) is not None or getattr(text_module, "use_pad_mask", False):
            text = None  # CoCa-style class token or padding masks: not a tower the prompt encoders can run
        else:
            pool = text_pool(getattr(text_module, "pool_type", getattr(model, "text_pool_type", "argmax")))
            text = TextTower(text_module.token_embedding, text_module.positional_embedding,
                             text_module.transformer.resblocks, lambda: text_module.attn_mask, text_module.ln_final,
                             text_module.text_projection, pool)
    visual = model.visual
    vision = None
    if hasattr(visual, "conv1") and hasattr(visual, "transformer"):
        vision = ClipVisionTower(visual)
    elif hasattr(visual, "trunk") and all(hasattr(visual.trunk, n) for n in ("blocks", "_pos_embed", "patch_embed")) \
            and not getattr(visual.trunk, "rope_mixed", False):  # depth-dependent rotary positions: not prompted
        vision = TimmVisionTower(visual)
    return text, vision


def compute_dtype(model):
    return next(m.weight.dtype for m in model.modules() if isinstance(m, nn.Linear))


def open_clip_backbone(model, name, tokenizer, preprocess):
    text, vision = open_clip_towers(model)
    context = text.context_length if text is not None else getattr(tokenizer, "context_length", 77)
    return Backbone(model, name, open_clip_tokenizer(tokenizer, context), text, vision, preprocess,
                    compute_dtype(model))


def as_backbone(model):
    """`model` as a Backbone: itself if it is one, else OpenAI's CLIP wrapped (for code and
    tests that hold a `clip.model.CLIP`)."""
    return model if isinstance(model, Backbone) else openai_backbone(model)


# ---------------------------------------------------------------------------------- loading
def import_open_clip():
    try:
        import open_clip
    except ImportError:
        raise CasplError(f"open_clip models need open-clip-torch, which is not installed: {INSTALL}") from None
    return open_clip


def parse_open_clip(spec):
    """(architecture name or config file, pretrained tag or file) of an `open_clip:` spec."""
    body = spec[len(OPEN_CLIP):]
    arch, sep, weights = body.partition(".json/")
    if sep:
        arch += ".json"
    else:
        arch, _, weights = body.partition("/")
    if not arch or not weights:
        raise CasplError(f"{spec!r}: write {SPEC_FORM} (e.g. open_clip:ViT-B-16/datacomp_xl_s13b_b90k)")
    weights = os.path.expanduser(weights)
    return os.path.expanduser(arch) if arch.endswith(".json") else arch, weights


def register_config(open_clip, arch, spec):
    """A model-config .json file registered with open_clip; its name (the file's stem)."""
    if not arch.endswith(".json"):
        return arch
    if not os.path.isfile(arch):
        raise CasplError(f"{spec!r}: the model config {arch} does not exist")
    try:  # read here first: open_clip keeps every file it was given and rereads them all on each addition
        with open(arch) as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise CasplError(f"{spec!r}: cannot read the model config {arch}: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict) or not all(k in config for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise CasplError(f"{spec!r}: {arch} is not an open_clip model config (it needs embed_dim, vision_cfg and "
                         "text_cfg)")
    open_clip.add_model_config(arch)
    return os.path.splitext(os.path.basename(arch))[0]


def tags_preprocess(open_clip, arch):
    """The preprocessing every pretrained tag of `arch` agrees on (for a checkpoint file,
    which open_clip would otherwise give its default OpenAI mean/std)."""
    found = {tuple((k, tuple(c[k]) if isinstance(c[k], (list, tuple)) else c[k]) for k in PREPROCESS_KEYS if k in c)
             for c in (open_clip.get_pretrained_cfg(arch, t) for t in open_clip.list_pretrained_tags_by_model(arch))}
    return dict(found.pop()) if len(found) == 1 else {}


def half_weights(model):
    """Half weights for any open_clip model, as OpenAI's CLIP in fp16, the logit scale and bias
    kept fp32. Norms too: a CUDA layer norm takes weights of its input's dtype (OpenAI's CLIP
    casts around its norms; open_clip's and timm's do not), and it accumulates in fp32 anyway.
    open_clip's own conversion misses timm towers' embeddings and fails on a Linear text
    projection."""
    keep = {id(getattr(model, n)) for n in ("logit_scale", "logit_bias") if getattr(model, n, None) is not None}
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point() and id(t) not in keep:
            t.data = t.data.half()
    return model


def load_open_clip(spec, device="cpu", fp16=False):
    """(model, tokenizer, preprocess) of an `open_clip:` spec: the model frozen in eval mode,
    fp32 or half weights; preprocess its input size, mean, std and interpolation."""
    open_clip = import_open_clip()
    arch, weights = parse_open_clip(spec)
    arch = register_config(open_clip, arch, spec)
    if arch not in open_clip.list_models():
        raise CasplError(f"{spec!r}: open_clip has no architecture {arch!r} (open_clip.list_models() lists them)")
    is_file = os.path.isfile(weights)
    tag_cfg = {} if is_file else open_clip.get_pretrained_cfg(arch, weights)
    if not is_file and not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "it has none"
        raise CasplError(f"{spec!r}: {weights!r} is neither a file nor a pretrained tag of {arch} ({tags})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = open_clip.create_model(
                arch, pretrained=weights, device=device,
                force_quick_gelu=bool(tag_cfg.get("quick_gelu")),  # the activation the tag was trained with
                force_preprocess_cfg=tags_preprocess(open_clip, arch) if is_file else None)
            tokenizer = open_clip.get_tokenizer(arch)
    except ImportError as err:  # e.g. transformers, for a Hugging Face tokenizer (SigLIP)
        raise CasplError(f"{spec!r} needs the Python package {err.name!r}, which open_clip imports for it and "
                         f"which is not installed: pip install {err.name}") from None
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        why = str(err).splitlines()[0] if str(err) else repr(err)
        raise CasplError(f"cannot load {spec!r}: {why}") from None
    model.requires_grad_(False)
    model.eval()
    if fp16:
        half_weights(model)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp["size"]
    size = size if isinstance(size, int) else (size[0] if size[0] == size[1] else tuple(size))
    interpolation = pp.get("interpolation", "bicubic")
    preprocess = {"size": size, "mean": tuple(pp["mean"]), "std": tuple(pp["std"]),
                  "interpolation": interpolation if interpolation in ("bicubic", "bilinear") else "bicubic"}
    return model, tokenizer, preprocess


def load_backbone(name, device="cpu", fp16=False):
    """The Backbone `name` names: an OpenAI CLIP (a name or file) or `open_clip:...`; frozen, in
    eval mode, with half weights when fp16."""
    if is_open_clip(name):
        model, tokenizer, preprocess = load_open_clip(name, device, fp16)
        return open_clip_backbone(model, name, tokenizer, preprocess)
    return openai_backbone(load_clip(name, device=device, fp16=fp16), name)


def fp32_twin(backbone, name=None):
    """`backbone` with fp32 weights, for the class features a run computes once: itself when its
    weights are fp32, else loaded again in fp32 on its device. The reference code computes such
    features with an fp32 copy of CLIP whatever its precision (text anchors, a teacher's class
    features); the caller drops the copy."""
    backbone = as_backbone(backbone)
    if backbone.dtype == torch.float32:
        return backbone
    return load_backbone(name or backbone.name, device=backbone.logit_scale.device, fp16=False)
