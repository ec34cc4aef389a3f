#!/usr/bin/env python
"""Benchmark (not a test): CasPL_Boost epoch time without and with the teacher cache.

CasPL's boosting phase runs a frozen teacher CLIP on every training image every epoch.
With TRAINER.CASPL.TEACHER_CACHE True the teacher's image features are computed once per
fixed view (TRAINER.CASPL.CACHE_VIEWS views per image) and looked up afterwards; with one
view the cache is full after epoch 1, so epochs 2..E run the student alone.

The script builds a student and a teacher CLIP with random weights (the real `clip.model.CLIP`
class; weights do not matter for timing), saves them as state dicts in a temporary folder,
generates a EuroSAT-layout dataset, and trains CasPL_Boost for E epochs twice: online teacher,
then cached teacher. It prints the seconds per epoch (from before_epoch to after_epoch: data,
student, teacher or cache look-ups, and the cache's save; not the per-epoch checkpoint) and
the speed-up online / cached.

    python bench/boost_cache.py                          # CPU, tiny CLIPs, ~1-2 minutes
    python bench/boost_cache.py --student-preset real --teacher-preset real \\
        --per-class 200 --batch-size 32                   # GPU: ViT-B/16 student, ViT-L/14 teacher shapes

Presets: "tiny" (small widths, 64 px input) and "real" (the true ViT-B/16 / ViT-L/14 shapes,
224 px). Student and teacher must take the same input size; a "real" preset on either side
sets 224 px for both (a tiny CLIP is then built for 224 px input).
The trainer's own log of each run goes to <work dir>/<online|cached>/bench_log.txt.
"""
import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import datasets  # noqa: E402,F401  (registers the dataset plugins)
import trainers  # noqa: E402,F401  (registers the trainer plugins)
from caspl import TRAINER_REGISTRY  # noqa: E402
from caspl.clip.tiny import save_tiny_clip  # noqa: E402
from caspl.config import get_cfg_default, merge_file, merge_opts  # noqa: E402
from caspl.testing import make_eurosat  # noqa: E402
from caspl.utils import set_random_seed  # noqa: E402

DATASET_CFG = "configs/datasets/eurosat.yaml"
BOOST_CFG = "configs/trainers/CasPL_Boost/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml"

# tiny_clip keyword arguments; image_resolution is set from --image-size
PRESETS = {
    "student": {
        "tiny": dict(embed_dim=128, vision_layers=4, vision_width=128, patch_size=8, text_width=128, text_layers=4),
        # ViT-B/16
        "real": dict(embed_dim=512, vision_layers=12, vision_width=768, patch_size=16, text_width=512, text_layers=12),
    },
    "teacher": {
        "tiny": dict(embed_dim=192, vision_layers=8, vision_width=192, patch_size=8, text_width=192, text_layers=4),
        # ViT-L/14
        "real": dict(embed_dim=768, vision_layers=24, vision_width=1024, patch_size=14, text_width=768, text_layers=12),
    },
}
TINY_SIZE, REAL_SIZE = 64, 224


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student-preset", choices=("tiny", "real"), default="tiny")
    p.add_argument("--teacher-preset", choices=("tiny", "real"), default="tiny")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"input pixels (default {TINY_SIZE} for tiny presets, {REAL_SIZE} when either is real)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (E)")
    p.add_argument("--per-class", type=int, default=250,
                   help="generated images per class (10 classes; half of them form the train split CasPL_Boost uses)")
    p.add_argument("--batch-size", type=int, default=None, help="default 8 on the CPU, 32 on a GPU")
    p.add_argument("--cache-views", type=int, default=1, help="TRAINER.CASPL.CACHE_VIEWS (1: cache full after epoch 1)")
    p.add_argument("--workers", type=int, default=None,
                   help="DATALOADER.NUM_WORKERS (default 0 on the CPU, 8 on a GPU)")
    p.add_argument("--prec", choices=("fp16", "fp32", "amp"), default=None,
                   help="TRAINER.CASPL.PREC (default: the config's fp16, which runs as fp32 on the CPU)")
    p.add_argument("--work-dir", default="",
                   help="keep CLIPs, data and outputs here (default: a temporary folder, removed)")
    p.add_argument("--verbose", action="store_true",
                   help="show the trainer's own output instead of logging it to a file")
    return p.parse_args()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(mode, args, work, student, teacher, data, device):
    """Train CasPL_Boost once; return the seconds of each epoch."""
    out = os.path.join(work, mode)
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: no resume, no cache from before
    os.makedirs(out)
    s, size = PRESETS["student"][args.student_preset], args.image_size
    # one progress line per epoch: Dassl prints every batch when an epoch has fewer batches
    # than TRAIN.PRINT_FREQ, so set it to the batch count (make_eurosat's train split is half)
    print_freq = max(1, 10 * round(args.per_class * 0.5) // args.batch_size)
    cfg = get_cfg_default()
    merge_file(cfg, os.path.join(ROOT, DATASET_CFG))
    merge_file(cfg, os.path.join(ROOT, BOOST_CFG))
    opts = {
        "DATASET.ROOT": data, "OUTPUT_DIR": out, "SEED": 1, "TRAINER.NAME": "CasPL_Boost",
        "MODEL.BACKBONE.NAME": student, "TRAINER.CASPL.TEACHER": teacher, "INPUT.SIZE": (size, size),
        "TRAINER.CASPL.PROMPT_DEPTH_TEXT": s["text_layers"], "TRAINER.CASPL.PROMPT_DEPTH_VISION": s["vision_layers"],
        "TRAINER.CASPL.TEACHER_CACHE": mode == "cached", "TRAINER.CASPL.CACHE_VIEWS": args.cache_views,
        "OPTIM.MAX_EPOCH": args.epochs, "DATALOADER.TRAIN_X.BATCH_SIZE": args.batch_size,
        "DATALOADER.NUM_WORKERS": args.workers, "TRAIN.PRINT_FREQ": print_freq, "TEST.NO_TEST": True,
    }
    if args.prec:
        opts["TRAINER.CASPL.PREC"] = args.prec
    merge_opts(cfg, [str(x) for kv in opts.items() for x in kv])
    cfg.freeze()

    times, start = [], [0.0]
    log = None if args.verbose else open(os.path.join(out, "bench_log.txt"), "w")
    with contextlib.redirect_stdout(log) if log else contextlib.nullcontext():
        set_random_seed(cfg.SEED)
        trainer = TRAINER_REGISTRY.get("CasPL_Boost")(cfg)
        before, after = trainer.before_epoch, trainer.after_epoch

        def timed_before():
            sync(device)
            start[0] = time.perf_counter()
            before()

        def timed_after():
            after()
            sync(device)
            times.append(time.perf_counter() - start[0])
            print(f"  {mode:6s} epoch {len(times)}/{args.epochs}: {times[-1]:.2f} s", file=sys.__stdout__, flush=True)

        trainer.before_epoch, trainer.after_epoch = timed_before, timed_after
        n_batches = len(trainer.dm.train_loader_x)
        trainer.train()
    if log:
        log.close()
    return times, n_batches


def n_params(path):
    return sum(v.numel() for v in torch.load(path, map_location="cpu", weights_only=True).values()) / 1e6


def main():
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    real = "real" in (args.student_preset, args.teacher_preset)
    args.image_size = args.image_size or (REAL_SIZE if real else TINY_SIZE)
    if args.batch_size is None:
        args.batch_size = 32 if device.type == "cuda" else 8
    if args.workers is None:
        args.workers = 8 if device.type == "cuda" else 0
    if args.epochs < 2:
        sys.exit("error: --epochs must be at least 2 (epoch 1 fills the cache)")

    work = args.work_dir or tempfile.mkdtemp(prefix="caspl_bench_")
    os.makedirs(work, exist_ok=True)
    try:
        t0 = time.perf_counter()
        student = save_tiny_clip(os.path.join(work, "student.pt"), image_resolution=args.image_size, seed=0,
                                 **PRESETS["student"][args.student_preset])
        teacher = save_tiny_clip(os.path.join(work, "teacher.pt"), image_resolution=args.image_size, seed=1,
                                 **PRESETS["teacher"][args.teacher_preset])
        data = make_eurosat(os.path.join(work, "data"), per_class=args.per_class)
        name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        print(f"device {name}; student {args.student_preset} ({n_params(student):.1f}M params), "
              f"teacher {args.teacher_preset} ({n_params(teacher):.1f}M params), input {args.image_size} px")
        print(f"{args.per_class} images per class x 10 classes (train split: {args.per_class * 10 // 2} images), "
              f"batch {args.batch_size}, {args.epochs} epochs, CACHE_VIEWS {args.cache_views}, "
              f"workers {args.workers}; set-up {time.perf_counter() - t0:.1f} s")

        online, n_batches = run("online", args, work, student, teacher, data, device)
        cached, _ = run("cached", args, work, student, teacher, data, device)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{n_batches} batches per epoch; speed-up = online s / cached s")
    print(f"{'epoch':>5} {'online s':>9} {'cached s':>9} {'speed-up':>9}")
    for e, (a, b) in enumerate(zip(online, cached), 1):
        note = "  (fills the cache)" if e <= args.cache_views else ""
        print(f"{e:>5} {a:>9.2f} {b:>9.2f} {a / b:>8.2f}x{note}")
    first = min(args.cache_views, args.epochs - 1)  # epochs after the cache is full
    later_online, later_cached = sum(online[first:]), sum(cached[first:])
    print(f"cached vs online, epochs {first + 1}..{args.epochs}: {later_online / later_cached:.2f}x")


if __name__ == "__main__":
    main()
