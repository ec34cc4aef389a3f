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
from .backbone import as_backbone, is_open_clip, load_backbone, parse_open_clip
from .loader import resolve_backbone

CACHE_MIN_BYTES = 32 << 20  # smaller backbones (test CLIPs) hash in moments: not worth a cache entry


def architecture(clip_model):
    """What prompts made for a CLIP must match: its widths and layer counts."""
    backbone = as_backbone(clip_model)
    text, vision = backbone.text_tower("prompts"), backbone.vision_tower("prompts")
    return {"text_width": text.width, "vision_width": vision.width, "text_layers": text.layers,
            "vision_layers": vision.layers}


def weights_sha256(state_dict):
    h = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key].detach().cpu()
        value = value.float() if value.is_floating_point() else value
        h.update(f"{key} {tuple(value.shape)}\n".encode())
        h.update(value.contiguous().reshape(-1).numpy())
    return h.hexdigest()


def backbone_sha256(name):
    """The checksum of backbone `name` (a CLIP name or file, or an open_clip model), computed once
    per file: a large file's is kept in the cache ($CASPL_CACHE/checksums), keyed by its path,
    size, mtime and inode. The weights as the model holds them: an OpenAI file read by open_clip
    has the checksum it has read by openai-clip."""
    if is_open_clip(name):
        weights = parse_open_clip(name)[1]
        if not os.path.isfile(weights):  # a pretrained tag: hashed as loaded, without a cache entry
            with torch.random.fork_rng(devices=[]):
                return weights_sha256(load_backbone(name).model.state_dict())
        path = os.path.realpath(weights)
    else:
        path = os.path.realpath(resolve_backbone(name))
    stat = os.stat(path)
    key = {"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
    keyed = path if not is_open_clip(name) else f"{parse_open_clip(name)[0]}/{path}"  # the architecture reads it
    entry = cache_dir("checksums", hashlib.sha256(keyed.encode()).hexdigest()[:32] + ".json")
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
        digest = weights_sha256(load_backbone(name if is_open_clip(name) else path).model.state_dict())
    if cached:
        atomic_write_text(json.dumps({**key, "sha256": digest}), entry)
    return digest
