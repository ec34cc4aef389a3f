#!/usr/bin/env python
"""Benchmark (not a test): the text encoder cut after the last EOS vs the full 77-token pass.

CLIP's text transformer is causal, so the features read at each sequence's EOS do not depend
on the positions after it: `caspl.clip.prompts.TextEncoder` (truncate=True, the default) runs
only the first max(EOS) + 1 positions of the class prompts, where CLIP's own `encode_text`
always runs all 77. For "a photo of a {}." and one- or two-word class names that is ~10-15
positions instead of 77. This script measures what that buys, for N classes:

  1. no_grad, no prompt groups: TextEncoder(truncate=True) vs TextEncoder(truncate=False)
     (the headline figure), and `encode_token_ids(clip, ids)` vs `clip.encode_text(ids)`
     on the same token ids (the path used when CLIP itself is trained);
  2. forward + backward with a learnable deep prompt group (template "{ctx} {}.", 4 tokens,
     depth 9 as IVLP / PromptSRC use): the per-step text cost of prompt learning.

It builds a CLIP of the real `clip.model.CLIP` class with random weights (weights do not
matter for timing) in a temporary folder, loads it through `caspl.clip.load_clip`, checks
first that both paths agree (max abs difference of the features, and of the prompt
gradients), then times W warm-up runs and the median of R timed runs of each.

    python bench/text_truncation.py --preset tiny                 # CPU, a few seconds
    python bench/text_truncation.py                               # ViT-B/16 shapes (slow on a CPU)
    python bench/text_truncation.py --classes 1000 --repeats 20   # GPU: ImageNet-sized class count

Presets: "tiny" (width 128, 4 layers) and "real" (the text tower of ViT-B/16: width 512, 12
layers, 77 positions; the image tower is built too, at 224 px, but not run). Class names are
generated pronounceable words (fixed seed), so the prompts tokenize like real class names.
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from caspl.clip import load_clip  # noqa: E402
from caspl.clip.learners import DeepPrompt, text_width  # noqa: E402
from caspl.clip.prompts import TextEncoder, class_prompts, encode_token_ids  # noqa: E402
from caspl.clip.tiny import save_tiny_clip  # noqa: E402

# tiny_clip keyword arguments
PRESETS = {
    "tiny": dict(embed_dim=128, vision_layers=4, vision_width=128, patch_size=8, text_width=128, text_layers=4,
                 image_resolution=64),
    # ViT-B/16
    "real": dict(embed_dim=512, vision_layers=12, vision_width=768, patch_size=16, text_width=512, text_layers=12,
                 image_resolution=224),
}
TEMPLATE = "a photo of a {}."
PROMPT_TEMPLATE = "{ctx} {}."
SYLLABLES = ["ka", "lo", "mi", "ne", "tor", "val", "shi", "ren", "bu", "dar", "pel", "qui", "zo", "fen", "gra", "sul"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "real"), default="real")
    p.add_argument("--classes", type=int, default=100, help="number of class names (N prompts per pass)")
    p.add_argument("--template", default=TEMPLATE, help="the class prompt of the no-grad pass ('{}' is the name)")
    p.add_argument("--n-ctx", type=int, default=4, help="learnable tokens of the forward+backward pass")
    p.add_argument("--prompt-depth", type=int, default=9,
                   help="layers that take deep prompt tokens (capped at the text layers)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before timing (W)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs, median reported (R; default 10 on a GPU, 3 on the CPU)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--prec", choices=("fp16", "fp32"), default=None,
                   help="CLIP weights (default fp16 on a GPU as the trainers run, fp32 on the CPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (default: torch's own; use fewer when other work shares the cores, "
                        "since oversubscribed threads make CPU timings erratic)")
    p.add_argument("--skip-backward", action="store_true", help="time the no-grad passes only")
    return p.parse_args()


def class_names(n, seed=0):
    rng = random.Random(seed)
    names = []
    while len(names) < n:
        n_words = rng.choice((1, 1, 2))
        name = " ".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(n_words))
        if name not in names:
            names.append(name)
    return names


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup, repeats):
    """Median seconds of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def report(name, fast, slow, fast_name="truncated", slow_name="full"):
    print(f"  {name:<36s} {fast_name:>9s} {fast * 1e3:9.2f} ms   {slow_name:>11s} {slow * 1e3:9.2f} ms   "
          f"{slow / fast:5.2f}x")
    return slow / fast


def main():
    args = parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    prec = args.prec or ("fp16" if device.type == "cuda" else "fp32")
    repeats = args.repeats or (10 if device.type == "cuda" else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = PRESETS[args.preset]

    with tempfile.TemporaryDirectory(prefix="caspl_bench_") as work:
        path = save_tiny_clip(os.path.join(work, "clip.pt"), seed=0, **shapes)
        clip_model = load_clip(path, device=device, fp16=prec == "fp16")
    n_layers = len(clip_model.transformer.resblocks)
    depth = max(1, min(args.prompt_depth, n_layers))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    n_text = sum(p.numel() for p in clip_model.transformer.parameters()) / 1e6
    print(f"device {name}; preset {args.preset}: text width {shapes['text_width']}, {n_layers} layers "
          f"({n_text:.1f}M params in the text transformer), context {clip_model.context_length}, {prec}")

    names = class_names(args.classes)
    prompts = class_prompts(args.template, names)
    truncated = TextEncoder(clip_model, prompts, truncate=True).to(device)
    full = TextEncoder(clip_model, prompts, truncate=False).to(device)
    ids = truncated.token_ids
    L = int(truncated.eos.max()) + 1
    print(f"{args.classes} classes (e.g. {', '.join(repr(n) for n in names[:3])}), template {args.template!r}: "
          f"{L} of {ids.shape[1]} positions run when truncated; W {args.warmup} warm-up, median of R {repeats} runs")

    # ------------------------------------------------------------------ agreement
    with torch.no_grad():
        a, b, ref = truncated(), full(), clip_model.encode_text(ids)
        c = encode_token_ids(clip_model, ids)
    scale = ref.float().abs().max().item()
    print("\nagreement (max abs difference; features up to %.3g in magnitude):" % scale)
    print(f"  TextEncoder truncated vs full         {max_diff(a, b):.3g}")
    print(f"  TextEncoder truncated vs encode_text  {max_diff(a, ref):.3g}")
    print(f"  encode_token_ids vs encode_text       {max_diff(c, ref):.3g}")

    learner = DeepPrompt(args.n_ctx, text_width(clip_model), depth).to(device)
    p_prompts = class_prompts(PROMPT_TEMPLATE, names)
    p_truncated = TextEncoder(clip_model, p_prompts, {"ctx": args.n_ctx}, truncate=True).to(device)
    p_full = TextEncoder(clip_model, p_prompts, {"ctx": args.n_ctx}, truncate=False).to(device)
    L_p = int(p_truncated.eos.max()) + 1

    def step(encoder):
        learner.zero_grad(set_to_none=True)
        feats = encoder({"ctx": learner.group()})
        feats.float().square().mean().backward()
        return feats

    if not args.skip_backward:
        fa = step(p_truncated).detach()
        ga = [p.grad.clone() for p in learner.parameters()]
        fb = step(p_full).detach()
        gb = [p.grad for p in learner.parameters()]
        print(f"  with a learnable group ({PROMPT_TEMPLATE!r}, {args.n_ctx} tokens x {depth} layers): features "
              f"{max_diff(fa, fb):.3g}, prompt gradients {max(max_diff(x, y) for x, y in zip(ga, gb)):.3g} "
              f"(gradients up to {max(g.abs().max().item() for g in gb):.3g})")

    # ------------------------------------------------------------------ timing
    print("\ntimes (median per pass, all classes):")
    with torch.no_grad():
        t_trunc = timed(truncated, device, args.warmup, repeats)
        t_full = timed(full, device, args.warmup, repeats)
        headline = report("no_grad, TextEncoder", t_trunc, t_full)
        t_ids = timed(lambda: encode_token_ids(clip_model, ids), device, args.warmup, repeats)
        t_enc = timed(lambda: clip_model.encode_text(ids), device, args.warmup, repeats)
        ratio_ids = report("no_grad, encode_token_ids", t_ids, t_enc, "cut", "encode_text")
    if not args.skip_backward:
        t_pt = timed(lambda: step(p_truncated), device, args.warmup, repeats)
        t_pf = timed(lambda: step(p_full), device, args.warmup, repeats)
        ratio_bwd = report(f"forward+backward, prompts ({L_p} pos.)", t_pt, t_pf)

    print()
    print(f"truncated vs full text pass: {headline:.2f}x (target >= 2x)")
    print(f"encode_token_ids vs encode_text: {ratio_ids:.2f}x")
    if not args.skip_backward:
        print(f"truncated vs full text pass, forward+backward with prompts: {ratio_bwd:.2f}x")


if __name__ == "__main__":
    main()
