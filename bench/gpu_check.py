#!/usr/bin/env python
"""The GPU check in one command: how caspl runs on the GPUs present, with CLIPs of the real
ViT-B/16 (student) and ViT-L/14 (teacher) shapes and random weights (weights do not change
the cost). Four sections, each in processes of its own (so that peak memory is its own):

  trainers     for each method and precision (fp16, amp, fp32), a few training steps on one
               batch: step time, images/s, peak CUDA memory; and evaluation images/s
               (bench/trainers.py, ViT-B/16 configs, batch 32); for each backbone door: the
               student read as OpenAI's CLIP and, the same weights, through open_clip (its
               own towers, its half weights in fp16);
  loader       the training data loader's images/s on generated 500x375 JPEGs (a typical
               photo) with the default workers and the configs' transforms (random resized crop
               to 224, flip, normalisation), batch 32, images moved to the GPU: beside the
               slowest and fastest training step's images/s, it says which one limits;
  ddp          train.py under torchrun over the GPUs (NCCL), 2 steps of PromptSRC in fp32,
               against one process with the same global batch: the prompts must be equal (as
               tests/test_distributed.py checks with gloo on the CPU); it needs 2 GPUs or more;
  class_count  step time and peak memory at 100 and 1000 classes, caspl against the
               reference mirror (bench/class_count.py, fp16 as the shipped configs);
  attention    the shared-prefix text pass's suffix attention written out (caspl's) against
               torch's fused scaled_dot_product_attention, at 100 and 1000 classes, fp32 and
               fp16: time and memory kept for the backward pass (bench/prefix_attention.py);
               caspl keeps whichever is faster.

It prints one table and writes every figure to JSON (--json). On a machine without a GPU it
says so and runs a small dry run of its own plumbing on the CPU instead: tiny CLIPs,
CASPL_CPU_AS_GPU=1 (the CPU as a CUDA GPU without bf16: half weights, fp16 autocast with a
gradient scaler), gloo with 2 processes for the ddp section. Its figures say nothing about
speed.

    python bench/gpu_check.py                      # every section (about 8-10 minutes on one H100)
    python bench/gpu_check.py --sections trainers loader --json gpu.json
"""
import argparse
import concurrent.futures
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

SECTIONS = ("trainers", "loader", "ddp", "class_count", "attention")
TRAINERS = ["CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC", "LAMM", "VPT", "CasPL_Boost", "CasPL_PromptSRC", "PromptKD"]
CLASS_COUNT_METHODS = ["PromptSRC", "CasPL_PromptSRC", "CasPL_Boost"]
DDP_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}  # tests/test_distributed.py's


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--backbones", nargs="+", choices=("openai", "open_clip"), default=["openai", "open_clip"],
                   help="the trainers section's student: read as OpenAI's CLIP, through open_clip, or both")
    p.add_argument("--trainers", nargs="+", default=None, help=f"methods (default: {' '.join(TRAINERS)})")
    p.add_argument("--precisions", nargs="+", choices=("fp16", "amp", "fp32"), default=["fp16", "amp", "fp32"])
    p.add_argument("--batch-size", type=int, default=32, help="training batch of the trainers and loader sections")
    p.add_argument("--class-count-methods", nargs="+", default=CLASS_COUNT_METHODS)
    p.add_argument("--loader-images", type=int, default=512, help="generated JPEGs for the loader section")
    p.add_argument("--json", default="gpu_check.json", help="where every figure goes")
    p.add_argument("--work", default=None, help="folder for generated CLIPs and data (default: a temporary one)")
    p.add_argument("--dry-run", action="store_true", help="the CPU dry run, even where a GPU is present")
    return p.parse_args(argv)


def run(cmd, env=None, timeout=3000):
    """Run a helper process; (return code, combined output tail)."""
    t0 = time.time()
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-12:])
    print(f"  ({time.time() - t0:.0f} s) "
          f"{' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[1:4])}"
          f" ... exit {done.returncode}", flush=True)
    return done.returncode, tail


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------- sections

def trainers_section(args, work, dry):
    rows = []
    for backbone in args.backbones:
        out = os.path.join(work, f"trainers-{backbone}.json")
        cmd = [sys.executable, os.path.join(ROOT, "bench", "trainers.py"), "--json", out, "--trainers", *args.trainers,
               "--precisions", *args.precisions, "--batch-size", str(args.batch_size), "--backbone", backbone]
        cmd += ["--preset", "tiny", "--device", "cpu", "--warmup", "0", "--repeats", "1", "--threads", "1"] if dry \
            else ["--preset", "real", "--device", "cuda"]
        code, tail = run(cmd, env=dry_env(dry))
        if code != 0:
            return {"error": tail}
        result = read_json(out)
        rows += [{**r, "backbone": backbone} for r in result["rows"]]
    return {**result, "rows": rows}


def loader_section(args, work, dry):
    """Images/s of the training loader over generated JPEGs (second pass: workers started)."""
    for plugins in ("datasets", "trainers"):  # ImageFolder, and the trainers' config keys
        importlib.import_module(plugins)
    from caspl.config import get_cfg_default, merge_file, merge_opts
    from caspl.data import DataManager
    from PIL import Image

    folder = os.path.join(work, "photos")
    n_classes = 8
    if not os.path.isdir(folder):
        g = torch.Generator().manual_seed(0)
        for i in range(args.loader_images):
            path = os.path.join(folder, f"class{i % n_classes}", f"{i}.jpg")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            coarse = torch.rand(3, 24, 32, generator=g)  # smooth colour fields with noise: photo-like JPEG sizes
            pixels = torch.nn.functional.interpolate(coarse[None], size=(375, 500), mode="bicubic")[0]
            pixels = (pixels + 0.1 * torch.randn(pixels.shape, generator=g)).clamp(0, 1)
            Image.fromarray((pixels.permute(1, 2, 0) * 255).byte().numpy()).save(path, quality=90)
    cfg = get_cfg_default()
    merge_file(cfg, os.path.join(ROOT, "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"))
    merge_opts(cfg, ["DATASET.NAME", "ImageFolder", "DATASET.ROOT", work, "DATASET.DIR", folder,
                     "DATASET.SPLIT_RATIOS", "(1.0, 0.0, 0.0)", "DATALOADER.TRAIN_X.BATCH_SIZE", str(args.batch_size),
                     "USE_CUDA", str(not dry)])
    cfg.freeze()
    dm = DataManager(cfg)
    device = torch.device("cpu" if dry else "cuda")
    rates = []
    for epoch in range(2):  # the first pass starts the workers
        dm.set_epoch(1, epoch)
        t0, n = time.perf_counter(), 0
        for batch in dm.batches(dm.train_loader_x):
            images = batch["img"].to(device, non_blocking=True)
            n += images.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t0))
    return {"images": len(dm.dataset.train_x), "workers": dm.workers, "pin_memory": dm.pin_memory,
            "batch": args.batch_size, "img_s": rates[-1], "first_pass_img_s": rates[0],
            "transform": repr(dm.tfm_train).replace("\n", " ")}


def ddp_section(args, work, dry):
    """PromptSRC for 2 steps: N processes with batch 2 each against one with batch 2N."""
    from caspl.clip.tiny import save_tiny_clip
    from caspl.testing import make_eurosat

    processes = 2 if dry else torch.cuda.device_count()
    if processes < 2:
        return {"skipped": f"{processes} GPU: data parallelism needs 2 or more"}
    preset = bench_module("trainers").PRESETS["tiny" if dry else "real"]
    clip_path = os.path.join(work, "ddp_student.pt")
    if not os.path.isfile(clip_path):
        save_tiny_clip(clip_path, seed=0, **preset)
    shots = -(-processes // 2)  # 8 classes x shots images: 2 steps of 2 per process
    root = make_eurosat(os.path.join(work, "ddp_data"), per_class=max(10, 2 * shots + 4), n_classes=8)
    size = preset["image_resolution"]
    common = ["--root", root, "--seed", "1", "--trainer", "PromptSRC",
              "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
              "--config-file", os.path.join(ROOT, "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"),
              "MODEL.BACKBONE.NAME", clip_path, "INPUT.SIZE", f"({size}, {size})", "INPUT.TRANSFORMS", "['normalize']",
              "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0",
              "DATASET.NUM_SHOTS", str(shots), "TEST.NO_TEST", "True", "TRAINER.PROMPTSRC.PREC", "fp32",
              "TRAIN.PRINT_FREQ", "1",
              "USE_CUDA", str(not dry)]
    if dry:
        common += ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", str(preset["text_layers"]),
                   "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", str(preset["vision_layers"])]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    outs = {}
    for name, prefix, batch in (("one", [sys.executable], 2 * processes), ("ddp", launcher, 2)):
        outs[name] = os.path.join(work, f"ddp_{name}")
        code, tail = run(prefix + [os.path.join(ROOT, "train.py"), "--output-dir", outs[name], *common,
                                   "DATALOADER.TRAIN_X.BATCH_SIZE", str(batch)], env={"OMP_NUM_THREADS": "1"})
        if code != 0:
            return {"error": f"{name}: {tail}"}
    one, ddp = (torch.load(os.path.join(outs[k], "VLPromptLearner", "model.pth.tar-1"), map_location="cpu",
                           weights_only=True)["state_dict"] for k in ("one", "ddp"))
    diff = max((one[k] - ddp[k]).abs().max().item() for k in one)
    equal = one.keys() == ddp.keys() and all(torch.allclose(ddp[k], one[k], **DDP_TOLERANCE) for k in one)
    with open(os.path.join(outs["ddp"], "log.txt")) as f:
        steps = sum(line.startswith("epoch [1/1] batch") for line in f)  # rank 0's, one per step
    return {"processes": processes, "backend": "gloo" if dry else "nccl", "global_batch": 2 * processes,
            "steps_logged": steps, "max_abs_diff": diff, "equal": equal, "tolerance": DDP_TOLERANCE}


def class_count_section(args, work, dry):
    out = os.path.join(work, "class_count.json")
    cmd = [sys.executable, os.path.join(ROOT, "bench", "class_count.py"), "--json", out, "--paths", "reference",
           "caspl", "--work", os.path.join(work, "class_count")]
    cmd += ["--preset", "tiny", "--device", "cpu", "--methods", "CoOp", "--classes", "10", "--repeats", "1",
            "--threads", "1"] if dry else ["--preset", "real", "--device", "cuda", "--methods",
                                           *args.class_count_methods, "--classes", "100", "1000", "--prec", "fp16"]
    code, tail = run(cmd)
    if code != 0:
        return {"error": tail}
    return {"rows": read_json(out)}


def bench_module(name):
    """bench/<name>.py as a module (bench/trainers.py shares its name with the plugin package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def attention_section(args, work, dry):
    out = os.path.join(work, "attention.json")
    cmd = [sys.executable, os.path.join(ROOT, "bench", "prefix_attention.py"), "--json", out]
    cmd += ["--device", "cpu", "--classes", "10", "--repeats", "1", "--threads", "1"] if dry else ["--device", "cuda"]
    code, tail = run(cmd)
    if code != 0:
        return {"error": tail}
    return read_json(out)


def dry_env(dry):
    return {"CASPL_CPU_AS_GPU": "1"} if dry else {}


# ---------------------------------------------------------------------------- the table

def table(results):
    rows = []
    for r in results.get("trainers", {}).get("rows", []):
        ran = r["precision"] if r["ran_as"] == r["precision"] else f"{r['precision']} (as {r['ran_as']})"
        peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:,.0f}"
        what = r["trainer"] if r["backbone"] == "openai" else f"{r['trainer']} (open_clip)"
        rows.append(["trainers", what, ran, f"{r['step_s']:.4f}", f"{r['step_img_s']:,.1f}", peak,
                     f"{r['eval_img_s']:,.1f}", f"batch {r['batch']}"])
    loader = results.get("loader", {})
    if "img_s" in loader:
        steps = [r["step_img_s"] for r in results.get("trainers", {}).get("rows", [])]
        if steps:
            limits = ("the loader limits every method" if loader["img_s"] < min(steps) else
                      "the training step limits every method" if loader["img_s"] > max(steps) else
                      f"the loader limits the methods faster than {loader['img_s']:,.0f} img/s")
        else:
            limits = "no training step measured to compare"
        rows.append(["loader", f"{loader['images']} JPEGs, {loader['workers']} workers", "", "",
                     f"{loader['img_s']:,.1f}", "", "", limits])
    ddp = results.get("ddp", {})
    if ddp:
        note = ddp.get("skipped") or ddp.get("error") or (
            f"{ddp['processes']} x batch 2 vs 1 x batch {ddp['global_batch']}, {ddp['steps_logged']} steps: "
            f"{'equal' if ddp['equal'] else 'DIFFERENT'} (max |diff| {ddp['max_abs_diff']:.1e})")
        rows.append(["ddp", f"PromptSRC, {ddp.get('backend', '')}", "fp32", "", "", "", "", note])
    for r in results.get("class_count", {}).get("rows", []):
        shown = "out of memory" if r.get("oom") else r.get("error", "")
        rows.append(["class_count", f"{r['method']} {r['classes']} classes", r["path"],
                     f"{r['step_s']:.4f}" if "step_s" in r else "", "",
                     f"{r['peak_mib']:,.0f}" if "peak_mib" in r else "", "", shown])
    for r in results.get("attention", {}).get("rows", []):
        for impl in ("written-out", "sdpa"):
            rows.append(["attention", f"{impl}, {r['classes']} classes", r["dtype"], f"{r[impl + '_step_s']:.4f}", "",
                         f"{r[impl + '_saved_mib']:,.0f} kept for backward", "",
                         f"features differ by {r['max_abs_diff']:.1e}" if impl == "sdpa" else "caspl's"])
    for section in SECTIONS:
        if "error" in results.get(section, {}):
            rows.append([section, "failed", "", "", "", "", "", results[section]["error"].splitlines()[-1][:100]])
    return tabulate(rows, headers=["section", "what", "precision", "step s", "img/s", "peak MiB", "eval img/s", "note"],
                    tablefmt="github", disable_numparse=True)


def run_section(section, args, work, dry):
    print(f"[{section}]", flush=True)
    try:
        return globals()[f"{section}_section"](args, work, dry)
    except Exception as err:  # one section's failure is reported; the others still run
        return {"error": f"{type(err).__name__}: {err}"}


def main(argv=None):
    args = parse_args(argv)
    args.trainers = args.trainers or TRAINERS
    gpu = torch.cuda.is_available() and not args.dry_run
    if gpu:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        device = f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
        print(f"GPU check on {device}; torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    else:
        why = "--dry-run" if args.dry_run else "no CUDA GPU on this machine"
        device = "cpu (dry run)"
        print(f"{why}: running only a small CPU dry run of the check's plumbing (tiny CLIPs, "
              "CASPL_CPU_AS_GPU=1, gloo); its figures say nothing about GPU speed", flush=True)
        args.trainers = [t for t in args.trainers if t == "CasPL_PromptSRC"] or args.trainers[:1]
        args.precisions = [p for p in args.precisions if p != "fp32"] or args.precisions
        args.batch_size, args.loader_images = 4, min(args.loader_images, 32)
    results = {"device": device, "dry_run": not gpu, "torch": torch.__version__, "sections": args.sections}
    work = args.work or tempfile.mkdtemp(prefix="caspl_gpu_check_")
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    # on a GPU one section at a time (their timings and memory are their own); the dry run's
    # are independent processes, run side by side after the in-process loader section
    in_process = [s for s in args.sections if s == "loader" or gpu]
    for section in in_process:
        results[section] = run_section(section, args, work, not gpu)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    rest = [s for s in args.sections if s not in in_process]
    if rest:
        with concurrent.futures.ThreadPoolExecutor(len(rest)) as pool:
            done = {s: pool.submit(run_section, s, args, work, True) for s in rest}
        results.update({s: done[s].result() for s in rest})
    results["seconds"] = round(time.time() - t0)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\n{device}: {results['seconds']} s; every figure in {args.json}\n")
    print(table(results))
    failed = [s for s in args.sections if "error" in results[s] or results[s].get("equal") is False]
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
