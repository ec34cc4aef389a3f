#!/usr/bin/env python
"""Benchmark (not a test): caspl's PromptSRC training step vs a straightforward implementation.

A PromptSRC step encodes the batch's images twice (with the learned visual prompts, and
frozen), the class prompts with the learned deep text prompts, and compares both with a
frozen text anchor: CLIP's features of the class names averaged over 60 hand-written
templates. caspl's trainer (trainers/promptsrc.py) does two things a straightforward port
does not:

  (a) its text encoder runs only the first max(EOS) + 1 of the 77 token positions (exact
      under CLIP's causal mask; `TextEncoder(..., truncate=True)`), and
  (b) it computes the anchor once, in build_model (`self.frozen_text`), since it depends
      on nothing that is learned.

The "straightforward" trainer, defined here as a subclass of trainers.promptsrc.PromptSRC
(registered nowhere), makes every text encoder with truncate=False and recomputes the
anchor at the start of each step, under no_grad, through the very method caspl calls once
(`frozen_text_features(template)` for each of the 60 templates: a TextEncoder built and run
per template, as a port that calls clip.tokenize + encode_text per step would do).

The script builds a CLIP of the real `clip.model.CLIP` class with random weights (weights do
not matter for timing) and a EuroSAT-layout dataset (10 classes) in a temporary folder,
builds both trainers from the same cfg (configs/datasets/eurosat.yaml +
configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml, as the tests do) with the same
seed, and feeds both the same batch. It first checks that the first step's loss terms agree
(and the anchors, and the prompts after the update), then times W warm-up and R timed steps
of each, alternating, and reports the median seconds per step (forward_backward: features,
loss, backward, optimiser step; data loading excluded).

    python bench/promptsrc_step.py --preset tiny                   # CPU, ~10-20 s
    python bench/promptsrc_step.py                                 # GPU: ViT-B/16 shapes, 224 px, batch 32
    python bench/promptsrc_step.py --batch-size 4 --breakdown      # GPU, the config's batch; (a) and (b) apart

On the CPU the "real" preset is slow: the straightforward step alone runs 600 full 77-token
text sequences through a 12-layer transformer (minutes per step on two cores).
Presets: "tiny" (widths 128, 4 layers, 64 px) and "real" (ViT-B/16: embedding 512, vision
768 x 12 layers, patch 16, text 512 x 12 layers, 224 px). Prompt depths are the config's 9,
capped at the encoders' layers.
"""
import argparse
import contextlib
import importlib
import math
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

for plugins in ("datasets", "trainers"):  # register the dataset and trainer plugins (as train.py does)
    importlib.import_module(plugins)

from caspl import TRAINER_REGISTRY  # noqa: E402
from caspl.clip import TextEncoder  # noqa: E402
from caspl.clip.tiny import save_tiny_clip  # noqa: E402
from caspl.config import get_cfg_default, merge_file, merge_opts  # noqa: E402
from caspl.testing import make_eurosat  # noqa: E402
from caspl.utils import set_random_seed  # noqa: E402
from trainers.promptsrc import TEMPLATES, PromptSRC  # noqa: E402

DATASET_CFG = "configs/datasets/eurosat.yaml"
TRAINER_CFG = "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"
CONFIG_DEPTH = 9  # PROMPT_DEPTH_TEXT / PROMPT_DEPTH_VISION in TRAINER_CFG

# tiny_clip keyword arguments
PRESETS = {
    "tiny": dict(embed_dim=128, vision_layers=4, vision_width=128, patch_size=8, text_width=128, text_layers=4,
                 image_resolution=64),
    # ViT-B/16
    "real": dict(embed_dim=512, vision_layers=12, vision_width=768, patch_size=16, text_width=512, text_layers=12,
                 image_resolution=224),
}


class FullTextPass(PromptSRC):
    """PromptSRC whose text encoders run all 77 positions (no truncation after the last EOS)."""

    def make_text_encoder(self, prompts, text_lengths):
        return TextEncoder(self.clip, prompts, text_lengths, truncate=False).to(self.device)


class Straightforward(FullTextPass):
    """... and which recomputes the frozen text anchor over the 60 templates every step."""

    def forward_backward(self, batch):
        with torch.no_grad():
            self.frozen_text = torch.stack([self.frozen_text_features(t) for t in TEMPLATES]).float().mean(0)
        return super().forward_backward(batch)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "real"), default="real")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 32 on a GPU, 4 on the CPU)")
    p.add_argument("--per-class", type=int, default=None,
                   help="generated images per class (10 classes, half of them train; default: enough for one batch)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps of each before timing (W; default 3 on a GPU, 1 on the CPU)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed steps of each, median reported (R; default 10 on a GPU, 3 on the CPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if available")
    p.add_argument("--prec", choices=("fp16", "fp32", "amp"), default=None,
                   help="TRAINER.PROMPTSRC.PREC (default: the config's fp16, which runs as fp32 on the CPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (default: torch's own; use fewer when other work shares the cores)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time PromptSRC with the full text pass but the anchor computed once ((a) alone)")
    p.add_argument("--verbose", action="store_true", help="show the trainers' own output")
    return p.parse_args()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_cfg(args, root, clip_path, out, device):
    depth_text = min(CONFIG_DEPTH, PRESETS[args.preset]["text_layers"])
    depth_vision = min(CONFIG_DEPTH, PRESETS[args.preset]["vision_layers"])
    size = PRESETS[args.preset]["image_resolution"]
    cfg = get_cfg_default()
    merge_file(cfg, os.path.join(ROOT, DATASET_CFG))
    merge_file(cfg, os.path.join(ROOT, TRAINER_CFG))
    opts = {
        "DATASET.ROOT": root, "OUTPUT_DIR": out, "SEED": 1, "TRAINER.NAME": "PromptSRC",
        "MODEL.BACKBONE.NAME": clip_path,
        "INPUT.SIZE": (size, size), "USE_CUDA": device.type == "cuda", "DATALOADER.NUM_WORKERS": 0,
        "DATALOADER.TRAIN_X.BATCH_SIZE": args.batch_size, "TRAIN.PRINT_FREQ": 1000, "TEST.NO_TEST": True,
        "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT": depth_text, "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION": depth_vision,
    }
    if args.prec:
        opts["TRAINER.PROMPTSRC.PREC"] = args.prec
    merge_opts(cfg, [str(x) for kv in opts.items() for x in kv])
    cfg.freeze()
    return cfg


def build(cls, cfg):
    set_random_seed(cfg.SEED)  # the same prompt initialisation for every variant
    trainer = cls(cfg)
    trainer.set_model_mode(True)
    return trainer


def learned(trainer):
    return {n: p.detach().clone() for n, p in trainer.prompt_learner.named_parameters() if p.requires_grad}


def timed_step(trainer, batch, device):
    sync(device)
    t0 = time.perf_counter()
    trainer.forward_backward(batch)
    sync(device)
    return time.perf_counter() - t0


def main():
    args = parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (32 if gpu else 4)
    args.per_class = args.per_class or max(10, 2 * math.ceil(args.batch_size / 10) + 2)
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    repeats = args.repeats or (10 if gpu else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = PRESETS[args.preset]

    with tempfile.TemporaryDirectory(prefix="caspl_bench_") as work:
        t0 = time.perf_counter()
        clip_path = save_tiny_clip(os.path.join(work, "clip.pt"), seed=0, **shapes)
        root = make_eurosat(os.path.join(work, "data"), per_class=args.per_class)
        cfg = build_cfg(args, root, clip_path, os.path.join(work, "out"), device)
        log_path = os.path.join(work, "bench_log.txt")
        quiet = contextlib.nullcontext if args.verbose else contextlib.redirect_stdout
        with open(log_path, "w") as log, quiet(log):
            variants = {"caspl": build(TRAINER_REGISTRY.get("PromptSRC"), cfg),
                        "straightforward": build(Straightforward, cfg)}
            if args.breakdown:
                variants["full text pass only"] = build(FullTextPass, cfg)
            ours = variants["caspl"]
            ours.dm.set_epoch(cfg.SEED, 0)
            batch = next(iter(ours.dm.batches(ours.dm.train_loader_x)))
        setup = time.perf_counter() - t0

        clip_model = ours.clip
        name = torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)"
        n_params = sum(p.numel() for p in clip_model.parameters()) / 1e6
        c = cfg.TRAINER.PROMPTSRC
        print(f"device {name}; preset {args.preset} ({n_params:.1f}M params): embedding {shapes['embed_dim']}, "
              f"vision {shapes['vision_width']} x {shapes['vision_layers']} layers (patch {shapes['patch_size']}), "
              f"text {shapes['text_width']} x {shapes['text_layers']} layers, {shapes['image_resolution']} px; "
              f"precision {ours.precision}")
        L = int(ours.text_encoder.eos.max()) + 1
        print(f"PromptSRC: {c.N_CTX_TEXT}+{c.N_CTX_VISION} tokens, depth text {c.PROMPT_DEPTH_TEXT} / vision "
              f"{c.PROMPT_DEPTH_VISION}; {ours.num_classes} classes, prompt {ours.text_template!r} ({L} of "
              f"{clip_model.context_length} positions); anchor over {len(TEMPLATES)} templates; batch "
              f"{batch['img'].shape[0]}; set-up {setup:.1f} s")

        # ------------------------------------------------------------------ first step agrees
        before = learned(ours)
        first = {k: t.forward_backward(batch) for k, t in variants.items()}
        a, b = first["caspl"], first["straightforward"]
        rtol, atol = (1e-4, 1e-5) if ours.precision == "fp32" else (2e-2, 1e-3)
        exact = all(a[k] == b[k] for k in a)
        close = all(math.isclose(a[k], b[k], rel_tol=rtol, abs_tol=atol) for k in a)
        print("\nfirst step, same seed and batch:")
        for k in a:
            print(f"  {k:9s} caspl {a[k]:.6f}   straightforward {b[k]:.6f}   |diff| {abs(a[k] - b[k]):.2e}")
        anchor = (ours.frozen_text - variants["straightforward"].frozen_text).abs().max().item()
        after_a, after_b = learned(ours), learned(variants["straightforward"])
        moved = max((after_a[n] - before[n]).abs().max().item() for n in before)
        prompts = max((after_a[n] - after_b[n]).abs().max().item() for n in after_a)
        print(f"  anchor |diff| {anchor:.2e} (magnitude {ours.frozen_text.abs().max().item():.3g}); prompts after "
              f"the update |diff| {prompts:.2e} (the update moved them by up to {moved:.2e})")
        verdict = "identical" if exact else (f"allclose (rtol {rtol:g}, atol {atol:g})" if close else "MISMATCH")
        print(f"first-step loss check: {verdict}")

        # ------------------------------------------------------------------ timing
        for _ in range(warmup):
            for t in variants.values():
                t.forward_backward(batch)
        times = {k: [] for k in variants}
        for _ in range(repeats):  # alternate, so that drifting load hits every variant alike
            for k, t in variants.items():
                times[k].append(timed_step(t, batch, device))

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nseconds per step (median of {repeats} after {warmup} warm-up; min .. max):")
    for k, v in times.items():
        print(f"  {k:20s} {med[k]:9.4f}   ({min(v):.4f} .. {max(v):.4f})")
    if args.breakdown:
        full = med["full text pass only"]
        print(f"  (a) full text pass alone: {full / med['caspl']:.2f}x; (b) anchor every step on top: "
              f"{med['straightforward'] / full:.2f}x")
    print(f"caspl PromptSRC step vs straightforward: {med['straightforward'] / med['caspl']:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
