from .loader import input_resolution, is_vit, load_clip, resolve_backbone
from .prompts import ImageEncoder, PromptGroup, TextEncoder, class_prompts, clip_logits
from .tokenizer import decode, encode

__all__ = [
    "ImageEncoder", "PromptGroup", "TextEncoder", "class_prompts", "clip_logits", "decode", "encode",
    "input_resolution", "is_vit", "load_clip", "resolve_backbone",
]
