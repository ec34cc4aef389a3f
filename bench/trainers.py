#!/usr/bin/env python
"""Benchmark (not a test): training step time, peak memory and evaluation throughput of the
prompt-learning trainers (CoOp, CoCoOp, IVLP, MaPLe, PromptSRC, LAMM, VPT, CasPL_Boost,
CasPL_PromptSRC, PromptKD) in fp32, amp and fp16.

For every trainer and precision the script builds the trainer as train.py would, from
configs/datasets/eurosat.yaml + the trainer's ViT-B/16 config (below), with
TRAINER.<CONFIG_NAME>.PREC set to the precision, on a CLIP of the real `clip.model.CLIP`
class with random weights (weights do not matter for timing) and a generated EuroSAT-layout
dataset (10 classes) in a temporary folder. It reports:

  step s       the median seconds of `trainer.forward_backward(batch)` (features, loss,
               backward, optimiser step; data loading excluded) in training mode, on one
               fixed batch of --batch-size images, over R timed steps after W warm-up steps;
  step img/s   the batch divided by that median;
  peak memory  on CUDA, torch.cuda.max_memory_allocated over the timed steps (after
               reset_peak_memory_stats): everything allocated at the step's peak, the frozen
               CLIP and the optimiser state included. On the CPU there is no comparable
               allocator counter (the process's peak RSS is a high-water mark over the whole
               run, shared by every trainer built before), so it prints "n/a (CPU)";
  eval img/s   test-split images divided by the median seconds of `trainer.test()` (R runs
               after one warm-up run): the trainer's own evaluation (eval mode, no_grad,
               autocast for amp, text features computed once per evaluation, accuracy),
               with the test batches decoded and transformed once beforehand, so that JPEG
               decoding and resizing (done by the CPU) are not counted. The batches still go
               to the device inside test(). Test batch size: the config's
               DATALOADER.TEST.BATCH_SIZE (100).

Configs (the prompt depths, 9 in the configs, are capped at the preset's layers):

  CoOp       configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml
  CoCoOp     configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml   (run at --batch-size, not 1)
  IVLP       configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml
  MaPLe      configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml
  PromptSRC  configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml
  LAMM       configs/trainers/LAMM/vit_b16_ep50_ctxv1.yaml
  VPT        configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml
  CasPL_Boost      configs/trainers/CasPL_Boost/vit_b16_c2_ep20_batch128_lr0025_8+8ctx_l12.yaml
                   (run at --batch-size, not 128), its teacher a CLIP of the preset's teacher
                   shapes (ViT-L/14 for "real")
  CasPL_PromptSRC  the PromptSRC config, cascaded with boosting prompts of the CasPL_Boost
                   config's sizes (saved untrained by a CasPL_Boost run: values do not change
                   the cost)
  PromptKD   configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml with the teacher CLIP
             used zero-shot (TEACHER_CKPT zero_shot; a tuned teacher adds its prompt tokens to the
             same passes)

    python bench/trainers.py --preset tiny --repeats 2 --warmup 1 --threads 1   # CPU smoke run, ~15 s
    python bench/trainers.py                                  # GPU: ViT-B/16 shapes, 224 px, batch 32
    python bench/trainers.py --trainers CoOp MaPLe --precisions amp --batch-size 4
    python bench/trainers.py --backbone open_clip             # the same student read through open_clip

Presets: "tiny" (widths 128, 4 layers, 64 px; its teacher wider and deeper) and "real"
(ViT-B/16: embedding 512, vision 768 x 12 layers, patch 16, text 512 x 12 layers, 224 px; the
teacher ViT-L/14). On the CPU the "real" preset is slow (seconds to minutes per step). amp
runs in bf16 where the device has it (the CPU, recent GPUs) and in fp16 with a gradient
scaler otherwise; "fp16" may be asked for too (it runs as fp32 on the CPU, and the table
says so, unless CASPL_CPU_AS_GPU=1 makes the CPU run it as a GPU would). --json writes the
rows for other tools (bench/gpu_check.py).

--backbone open_clip reads the same student file through open_clip (its own CLIP class and
towers, `open_clip:<model-config .json>/<file>`, the config written with the preset's shapes):
the open_clip path of every method (its half weights in fp16 among them), the teachers as
they are.
"""
import argparse
import contextlib
import gc
import importlib
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

for plugins in ("datasets", "trainers"):  # register the dataset and trainer plugins (as train.py does)
    importlib.import_module(plugins)

from caspl import TRAINER_REGISTRY  # noqa: E402
from caspl.clip.tiny import save_tiny_clip  # noqa: E402
from caspl.config import get_cfg_default, merge_file, merge_opts  # noqa: E402
from caspl.testing import make_eurosat  # noqa: E402
from caspl.utils import set_random_seed  # noqa: E402

DATASET_CFG = "configs/datasets/eurosat.yaml"
TRAINER_CFGS = {
    "CoOp": "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml",
    "CoCoOp": "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
    "IVLP": "configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    "MaPLe": "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
    "PromptSRC": "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    "LAMM": "configs/trainers/LAMM/vit_b16_ep50_ctxv1.yaml",
    "VPT": "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml",
    "CasPL_Boost": "configs/trainers/CasPL_Boost/vit_b16_c2_ep20_batch128_lr0025_8+8ctx_l12.yaml",
    "CasPL_PromptSRC": "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    "PromptKD": "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml",
}
TWO_TOWERS = {"PROMPT_DEPTH_TEXT": "text_layers", "PROMPT_DEPTH_VISION": "vision_layers"}
# prompt-depth keys under TRAINER.<CONFIG_NAME> -> the preset's layer count that caps them
DEPTH_KEYS = {
    "IVLP": TWO_TOWERS,
    "MaPLe": {"PROMPT_DEPTH": ("text_layers", "vision_layers")},  # coupled: both encoders
    "PromptSRC": TWO_TOWERS,
    "CasPL_PromptSRC": TWO_TOWERS,
    "CasPL_Boost": TWO_TOWERS,
    "VPT": {"PROMPT_DEPTH_VISION": "vision_layers"},
    "PromptKD": {"PROMPT_DEPTH_VISION": "vision_layers"},
}
TEACHER_KEYS = {"CasPL_Boost": ["TRAINER.CASPL.TEACHER"],
                "PromptKD": ["TRAINER.PROMPTKD.TEACHER_NAME"]}  # and TEACHER_CKPT zero_shot

# tiny_clip keyword arguments
PRESETS = {
    "tiny": dict(embed_dim=128, vision_layers=4, vision_width=128, patch_size=8, text_width=128, text_layers=4,
                 image_resolution=64),
    # ViT-B/16
    "real": dict(embed_dim=512, vision_layers=12, vision_width=768, patch_size=16, text_width=512, text_layers=12,
                 image_resolution=224),
}
TEACHER_PRESETS = {  # the teachers of CasPL_Boost and PromptKD
    "tiny": dict(embed_dim=128, vision_layers=6, vision_width=192, patch_size=8, text_width=192, text_layers=4,
                 image_resolution=64),
    # ViT-L/14
    "real": dict(embed_dim=768, vision_layers=24, vision_width=1024, patch_size=14, text_width=768, text_layers=12,
                 image_resolution=224),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "real"), default="real")
    p.add_argument("--trainers", nargs="+", choices=list(TRAINER_CFGS), default=list(TRAINER_CFGS), metavar="NAME",
                   help=f"trainers to run (default: all of {', '.join(TRAINER_CFGS)})")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "amp", "fp16"), default=["fp32", "amp"],
                   help="TRAINER.<NAME>.PREC values to run (default: fp32 amp)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 32 on a GPU, 4 on the CPU)")
    p.add_argument("--per-class", type=int, default=None,
                   help="generated images per class (10 classes; 50%% train, 30%% test; default 100 on a GPU, "
                        "on the CPU just enough for one batch)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps before timing (W; default 3 on a GPU, 1 on the CPU); evaluation: 1 untimed run")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed steps and timed evaluations, medians reported (R; default 10 on a GPU, 3 on the CPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (default: torch's own; use fewer when other work shares the cores)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if available")
    p.add_argument("--backbone", choices=("openai", "open_clip"), default="openai",
                   help="read the student as OpenAI's CLIP or through open_clip (same weights)")
    p.add_argument("--verbose", action="store_true", help="show the trainers' own output")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    return p.parse_args(argv)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_cfg(args, name, prec, root, clips, out, device):
    shapes = PRESETS[args.preset]
    config_name = TRAINER_REGISTRY.get(name).CONFIG_NAME
    size = shapes["image_resolution"]
    cfg = get_cfg_default()
    merge_file(cfg, os.path.join(ROOT, DATASET_CFG))
    merge_file(cfg, os.path.join(ROOT, TRAINER_CFGS[name]))
    opts = {
        "DATASET.ROOT": root, "OUTPUT_DIR": out, "SEED": 1, "TRAINER.NAME": name,
        "MODEL.BACKBONE.NAME": clips["student"],
        "INPUT.SIZE": (size, size), "USE_CUDA": device.type == "cuda", "DATALOADER.NUM_WORKERS": 0,
        "DATALOADER.TRAIN_X.BATCH_SIZE": args.batch_size, "TRAIN.PRINT_FREQ": 1000,
        f"TRAINER.{config_name}.PREC": prec,
    }
    for key, layers in DEPTH_KEYS.get(name, {}).items():
        layers = (layers,) if isinstance(layers, str) else layers
        full = f"TRAINER.{config_name}.{key}"
        opts[full] = min([cfg.TRAINER[config_name][key]] + [shapes[k] for k in layers])
    for key in TEACHER_KEYS.get(name, []):
        opts[key] = clips["teacher"]
    if name == "PromptKD":
        opts["TRAINER.PROMPTKD.TEACHER_CKPT"] = "zero_shot"
    if name.startswith("CasPL_") and name != "CasPL_Boost":
        opts["TRAINER.CASPL.BOOST_CKPT"] = clips["boost"]
    merge_opts(cfg, [str(x) for kv in opts.items() for x in kv])
    cfg.freeze()
    return cfg


class Preloaded:
    """Stands in for a test loader: the same batches, decoded and transformed once."""

    def __init__(self, loader, batches):
        self.dataset, self.batches = loader.dataset, batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield {**batch, "unreadable": []}  # DataManager.batches pops this key


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def fmt_mib(n):
    return f"{n / 2 ** 20:,.0f} MiB" if n >= 2 ** 20 else f"{n / 2 ** 20:.2f} MiB"


def bench_one(args, name, prec, root, clips, work, device, quiet, log, test_batches):
    """Build one trainer; return (precision used, step seconds, step min..max, peak bytes or None, eval img/s)."""
    gpu = device.type == "cuda"
    out = os.path.join(work, "out", f"{name}_{prec}")
    os.makedirs(out, exist_ok=True)
    cfg = build_cfg(args, name, prec, root, clips, out, device)
    with quiet(log):
        set_random_seed(cfg.SEED)
        trainer = TRAINER_REGISTRY.get(name)(cfg)
        trainer.dm.set_epoch(cfg.SEED, 0)
        batch = next(iter(trainer.dm.batches(trainer.dm.train_loader_x)))
        if not test_batches:  # the test transform is the same for every config: decode once
            test_batches.extend(trainer.dm.batches(trainer.dm.test_loader))
        trainer.dm.test_loader = Preloaded(trainer.dm.test_loader, test_batches)
        n_test = sum(b["img"].shape[0] for b in test_batches)

        # ---------------------------------------------------------------- training step
        trainer.set_model_mode(True)
        for _ in range(args.warmup):
            trainer.forward_backward(batch)
        if gpu:
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
        steps = [timed(lambda: trainer.forward_backward(batch), device) for _ in range(args.repeats)]
        peak = torch.cuda.max_memory_allocated(device) if gpu else None

        # ---------------------------------------------------------------- evaluation
        trainer.test()  # warm-up
        evals = [timed(trainer.test, device) for _ in range(args.repeats)]
        used = trainer.precision
    return used, statistics.median(steps), (min(steps), max(steps)), peak, n_test / statistics.median(evals)


def open_clip_student(args, work, path):
    """`open_clip:<config>/<path>`: the OpenAI CLIP file `path` read through open_clip, with a
    model config of the preset's shapes (QuickGELU and heads of width 64, as OpenAI's CLIP)."""
    s = PRESETS[args.preset]
    config = {"embed_dim": s["embed_dim"], "quick_gelu": True,
              "vision_cfg": {"image_size": s["image_resolution"], "layers": s["vision_layers"],
                             "width": s["vision_width"], "patch_size": s["patch_size"]},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": s["text_width"],
                           "heads": s["text_width"] // 64, "layers": s["text_layers"]}}
    name = os.path.join(work, f"caspl-bench-{args.preset}.json")
    with open(name, "w") as f:
        json.dump(config, f)
    return f"open_clip:{name}/{path}"


def make_clips(args, work, root, device, quiet, log):
    """{student, teacher, boost}: the CLIP files, and the boosting prompts CasPL_PromptSRC
    cascades (saved untrained by a CasPL_Boost run, as its last epoch's), as far as the trainers
    need them."""
    clips = {"file": save_tiny_clip(os.path.join(work, "clip.pt"), seed=0, **PRESETS[args.preset])}
    clips["student"] = clips["file"] if args.backbone == "openai" else open_clip_student(args, work, clips["file"])
    needs = set(args.trainers)
    if needs & {"CasPL_Boost", "PromptKD", "CasPL_PromptSRC"}:
        clips["teacher"] = save_tiny_clip(os.path.join(work, "teacher.pt"), seed=1, **TEACHER_PRESETS[args.preset])
    if "CasPL_PromptSRC" in needs:
        out = os.path.join(work, "out", "boost")
        cfg = build_cfg(args, "CasPL_Boost", "fp32", root, clips, out, device)
        with quiet(log):
            boost = TRAINER_REGISTRY.get("CasPL_Boost")(cfg)
            boost.save_model(boost.max_epoch)  # as a finished phase 1
        clips["boost"] = out
        gc.collect()
    return clips


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (32 if gpu else 4)
    # the train split (half of the images) must hold a batch; the test split is 30%
    need = -(-args.batch_size // 5) + 1
    args.per_class = args.per_class or (max(100, need) if gpu else max(10, need))
    if args.per_class < need:
        sys.exit(f"--per-class {args.per_class} gives fewer training images than one batch of {args.batch_size}")
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    args.repeats = args.repeats or (10 if gpu else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = PRESETS[args.preset]
    quiet = (lambda log: contextlib.nullcontext()) if args.verbose else contextlib.redirect_stdout

    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="caspl_bench_") as work, \
            open(os.path.join(work, "bench_log.txt"), "w") as log:
        t0 = time.perf_counter()
        root = make_eurosat(os.path.join(work, "data"), per_class=args.per_class)
        clips = make_clips(args, work, root, device, quiet, log)
        n_params = sum(v.numel() for v in torch.load(clips["file"], map_location="cpu").values()) / 1e6
        name = torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)"
        print(f"device {name}; preset {args.preset} ({n_params:.1f}M params, read as {args.backbone}): "
              f"embedding {shapes['embed_dim']}, "
              f"vision {shapes['vision_width']} x {shapes['vision_layers']} layers (patch {shapes['patch_size']}), "
              f"text {shapes['text_width']} x {shapes['text_layers']} layers, {shapes['image_resolution']} px")
        print(f"EuroSAT layout, 10 classes x {args.per_class} images; batch {args.batch_size}; "
              f"{args.warmup} warm-up + {args.repeats} timed steps, 1 + {args.repeats} evaluations", flush=True)
        if "teacher" in clips:
            t = TEACHER_PRESETS[args.preset]
            print(f"teacher (CasPL_Boost, PromptKD): embedding {t['embed_dim']}, vision {t['vision_width']} x "
                  f"{t['vision_layers']} layers (patch {t['patch_size']}), text {t['text_width']} x {t['text_layers']}")
        test_batches = []
        for trainer_name in args.trainers:
            for prec in args.precisions:
                used, step, (lo, hi), peak, ips = bench_one(args, trainer_name, prec, root, clips, work,
                                                            device, quiet, log, test_batches)
                gc.collect()  # the trainer is gone: free its memory before the next is built
                if gpu:
                    torch.cuda.empty_cache()
                shown = prec if used == prec else f"{prec} (as {used})"
                memory = fmt_mib(peak) if peak is not None else "n/a (CPU)"
                rows.append([trainer_name, shown, f"{step:.4f}", f"{args.batch_size / step:,.1f}", memory,
                             f"{ips:,.1f}"])
                records.append({"trainer": trainer_name, "precision": prec, "ran_as": used, "batch": args.batch_size,
                                "step_s": step, "step_img_s": args.batch_size / step, "eval_img_s": ips,
                                "peak_mib": None if peak is None else peak / 2 ** 20})
                print(f"  {trainer_name} {shown}: {step:.4f} s/step ({lo:.4f} .. {hi:.4f}), {ips:,.1f} img/s",
                      file=sys.stderr)
        n_test = sum(b["img"].shape[0] for b in test_batches)
        total = time.perf_counter() - t0

    print(f"\nstep: median of {args.repeats} forward_backward calls on one batch of {args.batch_size}; "
          f"eval: {n_test} test images through trainer.test() (images pre-decoded); total {total:.0f} s")
    print(tabulate(rows, headers=["trainer", "precision", "step s", "step img/s", "peak memory", "eval img/s"],
                   colalign=("left", "left", "right", "right", "right", "right"), disable_numparse=True))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "preset": args.preset, "backbone": args.backbone, "rows": records}, f, indent=1)


if __name__ == "__main__":
    main()
