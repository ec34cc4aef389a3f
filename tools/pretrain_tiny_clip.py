"""Pretrain a tiny CLIP (the real clip.model.CLIP class and tokenizer, small widths)
contrastively on captioned SynthShapes photos, so that zero-shot classification works in a
CPU-sized world. Presets:
- `student`: 64 wide, 3+3 layers, daylight photos only (it has never seen the dataset's lamp).
- `teacher`: 128 wide, 4+4 layers, daylight and lamp photos alike (it knows the domain).

    python tools/pretrain_tiny_clip.py student models/synthshapes/student.pt
    python tools/pretrain_tiny_clip.py teacher models/synthshapes/teacher.pt

Writes the state dict (loadable as MODEL.BACKBONE.NAME) and a JSON record beside it (settings,
zero-shot accuracy on held-out photos of each domain); an existing pair made with the same
settings is reused. Rows of the token embedding for words no caption uses are zero and stay
zero: a word the tiny CLIP never read carries nothing, and the files compress to a few MB."""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caspl.clip.prompts import encode_token_ids  # noqa: E402
from caspl.clip.tiny import tiny_clip  # noqa: E402
from caspl.utils import atomic_save, atomic_write_text  # noqa: E402
from datasets.synthshapes import DOMAINS, class_names, render  # noqa: E402

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
CAPTIONS = ["a photo of a {}.", "a photo of the {}.", "a bright photo of a {}."]
BARE_CAPTIONS = ["a {}.", "{}", "the {}."]  # a share BARE of the captions name only the object
BARE = 0.3
PRESETS = {
    "student": {"arch": dict(embed_dim=64, vision_width=64, vision_layers=3, text_width=64, text_layers=3),
                "steps": 4000, "batch": 96, "lr": 2e-3, "pool_per_class": 300, "domains": {"daylight": 1.0}},
    "teacher": {"arch": dict(embed_dim=96, vision_width=128, vision_layers=4, text_width=128, text_layers=4),
                "steps": 4000, "batch": 96, "lr": 1e-3, "pool_per_class": 300,
                "domains": {"daylight": 0.5, "lamp": 0.5}},
}
RESOLUTION, PATCH, RENDER = 32, 8, 64


def to_tensor(image):
    """The test-time pipeline of a 32-px CLIP: bicubic resize, CLIP normalisation."""
    small = image.resize((RESOLUTION, RESOLUTION), resample=3)
    x = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - MEAN) / STD


def image_pool(names, per_class, seed, domains=None):
    """per_class photos of every class, each in a domain drawn with the probabilities of
    `domains` ({domain: weight}; default the dataset's, lamp)."""
    domains = domains or {"lamp": 1.0}
    keys = list(domains)
    weights = np.array([domains[k] for k in keys], dtype=np.float64)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, name in enumerate(names):
        colour, shape = name.split(" ")
        for _ in range(per_class):
            domain = keys[rng.choice(len(keys), p=weights / weights.sum())]
            images.append(to_tensor(render(colour, shape, rng, size=RENDER, domain=domain)))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


@torch.no_grad()
def zero_shot_accuracy(model, images, labels, names):
    import clip

    text = F.normalize(encode_token_ids(model, clip.tokenize([f"a photo of a {n}." for n in names])), dim=-1)
    image = F.normalize(model.encode_image(images), dim=-1)
    return 100.0 * (image @ text.t()).argmax(1).eq(labels).float().mean().item()


def caption_tokens(names):
    """Every token id a pretraining caption can hold."""
    import clip

    captions = [c.format(n) for n in names for c in CAPTIONS + BARE_CAPTIONS]
    return torch.unique(clip.tokenize(captions))


def pretrain(preset, seed=0, steps=None, log=print):
    """(model, {domain: zero-shot accuracy % on held-out photos of all classes})."""
    import clip

    p = dict(PRESETS[preset], **({"steps": steps} if steps else {}))
    torch.manual_seed(seed)
    rng = random.Random(seed)
    names = class_names()
    model = tiny_clip(image_resolution=RESOLUTION, patch_size=PATCH, seed=seed, **p["arch"])
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.07))
        unused = torch.ones(model.token_embedding.weight.shape[0], dtype=torch.bool)
        unused[caption_tokens(names)] = False
        model.token_embedding.weight[unused] = 0  # never looked up, so never updated
    model.train().requires_grad_(True)
    start = time.time()
    images, labels = image_pool(names, p["pool_per_class"], seed, p["domains"])
    log(f"{preset}: {images.shape[0]} training photos ({', '.join(p['domains'])}) rendered in "
        f"{time.time() - start:.1f} s")
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=0.05)
    steps, warmup = p["steps"], max(1, p["steps"] // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    for step in range(steps):
        idx = torch.randint(0, images.shape[0], (p["batch"],))
        x, y = images[idx], labels[idx]
        x = torch.where(torch.rand(x.shape[0], 1, 1, 1) < 0.5, x, x.flip(-1))  # flips keep every class
        captions = [rng.choice(BARE_CAPTIONS if rng.random() < BARE else CAPTIONS).format(names[int(c)]) for c in y]
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(encode_token_ids(model, clip.tokenize(captions)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.t()
        same = (y[:, None] == y[None, :]).float()  # captions of the same class are all positives
        targets = same / same.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            elapsed = time.time() - start
            log(f"{preset}: step {step + 1}/{steps} loss {loss.item():.3f} "
                f"({elapsed:.0f} s, about {elapsed / (step + 1) * (steps - step - 1):.0f} s left)")
    model.eval()
    acc = {}
    for domain in DOMAINS:
        held_out, held_labels = image_pool(names, 8, seed + 1000, {domain: 1.0})
        acc[domain] = zero_shot_accuracy(model, held_out, held_labels, names)
    log(f"{preset}: zero-shot accuracy on held-out photos of all {len(names)} classes: "
        + ", ".join(f"{d} {a:.1f}%" for d, a in acc.items()))
    return model, acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("out", help="where to write the state dict (.pt); the record goes to <out>.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    args = ap.parse_args(argv)
    preset = dict(PRESETS[args.preset], **({"steps": args.steps} if args.steps else {}))
    settings = {"preset": args.preset, "seed": args.seed, **preset, "captions": CAPTIONS,
                "bare_captions": BARE_CAPTIONS, "bare": BARE, "resolution": RESOLUTION, "patch": PATCH,
                "classes": class_names()}
    record_path = args.out + ".json"
    if os.path.isfile(args.out) and os.path.isfile(record_path):
        with open(record_path) as f:
            if json.load(f).get("settings") == json.loads(json.dumps(settings)):
                print(f"{args.out}: already pretrained with these settings, reused")
                return 0
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, acc = pretrain(args.preset, args.seed, args.steps)
    atomic_save(model.state_dict(), args.out)
    atomic_write_text(json.dumps({"settings": settings, "zero_shot_accuracy": acc}, indent=1) + "\n", record_path)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
