from .backbone import Backbone, as_backbone, fp32_twin, is_open_clip, load_backbone
from .loader import load_clip, resolve_backbone
from .prompts import ImageEncoder, PromptGroup, TextEncoder, class_prompts, clip_logits
from .tokenizer import decode, encode

__all__ = [
    "Backbone", "ImageEncoder", "PromptGroup", "TextEncoder", "as_backbone", "class_prompts", "clip_logits", "decode",
    "encode", "fp32_twin", "is_open_clip", "load_backbone", "load_clip", "resolve_backbone",
]
