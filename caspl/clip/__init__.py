from .loader import fp32_twin, input_resolution, is_vit, load_clip, resolve_backbone
from .prompts import ImageEncoder, PromptGroup, TextEncoder, class_prompts, clip_logits
from .tokenizer import decode, encode

__all__ = [
    "ImageEncoder", "PromptGroup", "TextEncoder", "class_prompts", "clip_logits", "decode", "encode", "fp32_twin",
    "input_resolution", "is_vit", "load_clip", "resolve_backbone",
]
