#!/usr/bin/env python
"""Benchmark (not a test): the shared-prefix text pass's attention, written out (caspl's
suffix_attention: matmuls and a softmax over the prefix's and the suffix's keys) against
torch's fused scaled_dot_product_attention, which is exact up to float rounding.

Each suffix position attends to every prefix position and causally to the suffix. The fused
kernel takes one key sequence per row, so there the prefix's keys and values are expanded
per class and concatenated with the suffix's (the prefix itself still runs once); the
written-out pass broadcasts them without a copy and materialises the [classes, heads,
suffix, prefix + suffix] scores instead. Which costs less depends on the device and the shapes,
so both are measured here, on a CLIP text tower of ViT-B/16's shape (width 512, 8 heads, 12
layers, random weights) with CoOp-like prompts: 16 shared context tokens in all 12 layers,
then 1 to 4 name tokens.

For each class count: the max difference of the features (fp32), the median seconds of a
forward and a forward + backward (gradients of the context), and the memory autograd keeps for
the backward pass (distinct storages saved by the graph) for each implementation.

    python bench/prefix_attention.py                        # 100 and 1000 classes, fp32 (+ fp16 on a GPU)
    python bench/prefix_attention.py --classes 100 --repeats 3 --threads 2
"""
import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tabulate import tabulate  # noqa: E402

from caspl.clip import PromptGroup, TextEncoder, prompts  # noqa: E402
from caspl.clip.tiny import tiny_clip  # noqa: E402

VIT_B16_TEXT = dict(embed_dim=512, text_width=512, text_layers=12, vision_layers=1, vision_width=64, patch_size=16,
                    image_resolution=32)


def fused(qs, ks, vs, kp, vp):
    """caspl.clip.prompts.suffix_attention through scaled_dot_product_attention: keys and values
    [prefix (expanded per class and copied by the concatenation), suffix], and a
    [suffix, prefix + suffix] mask broadcast over the sequences and heads."""
    N, S, P = qs.shape[0], qs.shape[-2], kp.shape[-2]
    keys = torch.cat([kp.expand(N, -1, -1, -1), ks], dim=2)
    values = torch.cat([vp.expand(N, -1, -1, -1), vs], dim=2)
    allowed = torch.ones(S, P + S, dtype=torch.bool, device=qs.device).tril(P)
    return F.scaled_dot_product_attention(qs, keys, values, attn_mask=allowed)


IMPLEMENTATIONS = {"written-out": prompts.suffix_attention, "sdpa": fused}


def names(n):
    words = ["red", "small", "dog", "house", "river", "old", "car", "tree", "blue", "bird", "stone", "green"]
    return [" ".join(words[(i * 7 + k * 5) % len(words)] for k in range(1 + i % 4)) + f" {i}" for i in range(n)]


def saved_bytes(fn):
    """Bytes of the distinct storages autograd keeps for the backward pass of `fn`'s graph."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def timed(fn, device, repeats):
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", nargs="+", type=int, default=[100, 1000])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtypes = [torch.float32] + ([torch.float16] if device.type == "cuda" else [])
    clip_model = tiny_clip(**VIT_B16_TEXT).to(device).requires_grad_(False)
    layers = len(clip_model.transformer.resblocks)
    rows, records = [], []
    for dtype in dtypes:
        clip_model = clip_model.to(dtype)
        for n in args.classes:
            encoder = TextEncoder(clip_model, [f"{{ctx}} {name}." for name in names(n)], {"ctx": 16}).to(device)
            ctx = torch.randn(layers, 16, 512, device=device) * 0.02
            ctx.requires_grad_(True)
            groups = {"ctx": PromptGroup(list(ctx.unbind(0)))}
            assert encoder.prefix_length(groups) > 1, "the prompts share no prefix"
            features, seconds = {}, {}
            for label, fn in IMPLEMENTATIONS.items():
                prompts.suffix_attention = fn
                with torch.no_grad():
                    features[label] = encoder(groups).float()
                    forward = timed(lambda: encoder(groups), device, args.repeats)

                def step():
                    encoder(groups).float().square().sum().backward()
                    ctx.grad = None

                seconds[label] = (forward, timed(step, device, args.repeats),
                                  saved_bytes(lambda: encoder(groups)) / 2 ** 20)
            diff = (features["sdpa"] - features["written-out"]).abs().max().item()
            scale = features["written-out"].abs().max().item()
            rows.append([str(dtype).replace("torch.", ""), n, f"{diff:.1e} (of {scale:.1f})"]
                        + [f"{seconds[k][i]:.4f}" for i in (0, 1) for k in IMPLEMENTATIONS]
                        + [f"{seconds[k][2]:,.0f}" for k in IMPLEMENTATIONS]
                        + [f"{seconds['written-out'][1] / seconds['sdpa'][1]:.2f}x"])
            records.append({"dtype": str(dtype).replace("torch.", ""), "classes": n, "max_abs_diff": diff,
                            **{f"{k}_{what}": seconds[k][i] for k in IMPLEMENTATIONS
                               for i, what in enumerate(("forward_s", "step_s", "saved_mib"))}})
            print(rows[-1], flush=True)
    prompts.suffix_attention = IMPLEMENTATIONS["written-out"]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"\n{where}; ViT-B/16 text tower, 16 shared context tokens in {layers} layers, median of {args.repeats}")
    print(tabulate(rows, headers=["dtype", "classes", "max |diff|", "fwd written-out s", "fwd sdpa s",
                                  "fwd+bwd written-out s", "fwd+bwd sdpa s", "saved written-out MiB", "saved sdpa MiB",
                                  "sdpa speed-up (fwd+bwd)"],
                   tablefmt="github", disable_numparse=True))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "rows": records}, f, indent=1)


if __name__ == "__main__":
    main()
