"""Tiny CLIPs of the real `clip.model.CLIP` class (real tokenizer and vocabulary, small
widths), for tests, examples and benchmarks that cannot download the OpenAI weights."""
import io
import math
import warnings

import torch
from clip.model import CLIP

from ..utils import atomic_save
from ..utils.io import atomic_write_bytes

VOCAB_SIZE = 49408


def tiny_clip(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, patch_size=8,
              text_width=64, text_layers=2, context_length=77, seed=0):
    """A randomly initialised CLIP; widths must be multiples of 64 (CLIP uses width // 64 heads)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIP(embed_dim, image_resolution, vision_layers, vision_width, patch_size,
                     context_length, VOCAB_SIZE, text_width, text_width // 64, text_layers)
    with torch.no_grad():  # a trained CLIP's temperature (exp = 100), not the initial 1/0.07
        model.logit_scale.fill_(math.log(100))
    return model.eval()


def save_tiny_clip(path, torchscript=False, **kwargs):
    """Write a tiny CLIP's plain state dict to `path` (loadable by `load_clip(path)`); with
    `torchscript`, the model traced and saved as a TorchScript archive, as OpenAI releases CLIP."""
    model = tiny_clip(**kwargs)
    if not torchscript:
        atomic_save(model.state_dict(), path)
        return path
    resolution = model.visual.input_resolution
    image, text = torch.zeros(1, 3, resolution, resolution), torch.arange(model.context_length).unsqueeze(0)
    with warnings.catch_warnings():  # the tracer's notes on CLIP's data-dependent steps, and jit's deprecation
        warnings.simplefilter("ignore")
        archive = io.BytesIO()
        torch.jit.save(torch.jit.trace(model, (image, text), check_trace=False), archive)
    atomic_write_bytes(archive.getvalue(), path)
    return path
