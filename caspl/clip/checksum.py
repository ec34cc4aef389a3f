"""Which weights a CLIP backbone holds: sha256 over its state-dict tensors, keys in sorted
order, each as its key, shape and values (floating tensors as fp32, so an fp16 release and
its fp32 copy, or an fp16 and an fp32 load, agree). Names can mislead (ViT-B/16 and
ViT-B/32 share every width and layer count; a file path says nothing): this does not."""
import hashlib
import json
import os

import torch

from ..utils import atomic_write_text
from ..utils.fetch import cache_dir
from .learners import text_width, vision_width
from .loader import load_clip, resolve_backbone

CACHE_MIN_BYTES = 32 << 20  # smaller backbones (test CLIPs) hash in moments: not worth a cache entry


def architecture(clip_model):
    """What prompts made for a CLIP must match: its widths and layer counts."""
    return {"text_width": text_width(clip_model), "vision_width": vision_width(clip_model),
            "text_layers": len(clip_model.transformer.resblocks),
            "vision_layers": len(clip_model.visual.transformer.resblocks)}


def weights_sha256(state_dict):
    h = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key].detach().cpu()
        value = value.float() if value.is_floating_point() else value
        h.update(f"{key} {tuple(value.shape)}\n".encode())
        h.update(value.contiguous().reshape(-1).numpy())
    return h.hexdigest()


def backbone_sha256(name):
    """The checksum of backbone `name` (a CLIP name or file), computed once per file: a large
    file's is kept in the cache ($CASPL_CACHE/checksums), keyed by its path, size, mtime and inode."""
    path = os.path.realpath(resolve_backbone(name))
    stat = os.stat(path)
    key = {"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
    entry = cache_dir("checksums", hashlib.sha256(path.encode()).hexdigest()[:32] + ".json")
    cached = stat.st_size >= CACHE_MIN_BYTES
    if cached and os.path.isfile(entry):
        try:
            with open(entry) as f:
                record = json.load(f)
            if {k: record.get(k) for k in key} == key:
                return record["sha256"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable: computed again below
    with torch.random.fork_rng(devices=[]):  # building a CLIP draws random numbers: leave the run's streams alone
        digest = weights_sha256(load_clip(path).state_dict())
    if cached:
        atomic_write_text(json.dumps({**key, "sha256": digest}), entry)
    return digest
