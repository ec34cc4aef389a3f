#!/usr/bin/env python
"""Benchmark (not a test): training-step time and peak memory against the number of classes,
caspl against the reference repositories' own computation.

For CoOp, MaPLe, PromptSRC, CasPL_PromptSRC and CasPL_Boost at 10, 100, 397 and 1000 classes,
one training step (features, loss, backward, optimiser step; no data loading) of:

  reference       bench/reference_steps.py: what the reference trainers do per step, no more
                  and no less (the full 77-token text pass every step, frozen anchors computed
                  once, their fp16 casts; each class there names the file and function it mirrors)
  caspl           caspl's trainer as train.py builds it (shared-prefix text pass, the default)
  plain           caspl with MODEL.TEXT_SHARED_PREFIX False (truncated text pass, no shared prefix)
  checkpointing   caspl with MODEL.ACTIVATION_CHECKPOINTING True (and the shared prefix)

Every (method, classes, path) runs in a fresh process, so that peak memory is its own: on the
CPU the process's peak RSS (everything: Python, torch, the CLIP weights, the step), on CUDA
torch.cuda.max_memory_allocated over the timed steps. Configs are the ones the base-to-new
scripts use (configs/trainers/<X>/...: CoOp vit_b16_ep50_ctxv1, MaPLe vit_b16_c2_ep5_batch4_2ctx,
PromptSRC vit_b16_c2_ep20_batch4_4+4ctx, CasPL_PromptSRC PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_l12
with boosting prompts of CasPL_Boost/vit_b16_c2_ep20_batch4_8+8ctx_l12, whose teacher is a
ViT-L/14), on CLIPs of the real ViT-B/16 and ViT-L/14 shapes with random weights (weights do
not change the cost). Class names: 1 to 4 English words drawn (seeded) from CLIP's vocabulary,
one token each (SUN397's and ImageNet's names are mostly 1 to 5 tokens; every class prompt is
padded to the longest, in both codes' text passes, so a long tail costs both). \
The batch: random 224 px images with random labels.

PromptSRC's text anchor (60 templates x classes, computed once per run in both codes) is
filled with random features of its shape in both paths: it is not part of the step, and its
one-off cost at 1000 classes (60,000 sequences; tens of minutes for the 77-token reference on
a CPU) would dominate the benchmark's own run time.

    python bench/class_count.py                         # everything (CPU: hours; GPU: minutes)
    python bench/class_count.py --methods CoOp --classes 10 100 --paths reference caspl
    python bench/class_count.py --preset tiny           # smoke run, seconds

On the CPU a process that would need more memory than --max-memory-gib stops with an
allocation error and the table says "out of memory".
"""
import argparse
import contextlib
import io
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

METHODS = ["CoOp", "MaPLe", "PromptSRC", "CasPL_PromptSRC", "CasPL_Boost"]
PATHS = ["reference", "caspl", "plain", "checkpointing"]
CONFIGS = {
    "CoOp": "CoOp/vit_b16_ep50_ctxv1.yaml",
    "MaPLe": "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
    "PromptSRC": "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    "CasPL_PromptSRC": "PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml",
    "CasPL_Boost": "CasPL_Boost/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml",
}
BOOST_CONFIG = CONFIGS["CasPL_Boost"]
PRESETS = {  # caspl.clip.tiny.tiny_clip keyword arguments: student, teacher
    "real": (dict(embed_dim=512, vision_layers=12, vision_width=768, patch_size=16, text_width=512, text_layers=12,
                  image_resolution=224),
             dict(embed_dim=768, vision_layers=24, vision_width=1024, patch_size=14, text_width=768, text_layers=12,
                  image_resolution=224)),
    "tiny": (dict(embed_dim=64, vision_layers=3, vision_width=64, patch_size=8, text_width=64, text_layers=3,
                  image_resolution=32),
             dict(embed_dim=64, vision_layers=4, vision_width=128, patch_size=8, text_width=128, text_layers=4,
                  image_resolution=32)),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    p.add_argument("--classes", nargs="+", type=int, default=[10, 100, 397, 1000])
    p.add_argument("--paths", nargs="+", choices=PATHS, default=PATHS)
    p.add_argument("--preset", choices=list(PRESETS), default="real")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--prec", choices=("fp32", "fp16", "amp"), default="fp32",
                   help="caspl's PREC; the reference runs fp16 weights for fp16 (on CUDA) and fp32 otherwise")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="timed steps per process (the median is reported)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--max-memory-gib", type=float, default=None,
                   help="CPU: address-space limit per process (default: 90%% of the memory available at start)")
    p.add_argument("--work", default=None, help="folder for the generated CLIPs and data (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--worker", nargs=3, metavar=("METHOD", "CLASSES", "PATH"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- material

def class_names(n, seed=0):
    """n distinct names of 1-4 English words, each one token of CLIP's BPE vocabulary."""
    from clip.simple_tokenizer import SimpleTokenizer

    words = sorted(w[:-4] for w in SimpleTokenizer().encoder if w.endswith("</w>") and w[:-4].isascii()
                   and w[:-4].isalpha() and 3 <= len(w) - 4 <= 9)
    rng, names = random.Random(seed), []
    while len(names) < n:
        name = "_".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        if name not in names:
            names.append(name)
    return names


def make_material(work, preset, classes):
    """Student and teacher CLIP files, a boosting checkpoint, and one ImageFolder per class count."""

    from caspl.clip.tiny import save_tiny_clip, tiny_clip
    from caspl.utils.io import atomic_save
    from PIL import Image

    student_kw, teacher_kw = PRESETS[preset]
    paths = {"student": os.path.join(work, "student.pt"), "teacher": os.path.join(work, "teacher.pt"),
             "boost": os.path.join(work, "boost.pth.tar")}
    if not os.path.isfile(paths["student"]):
        save_tiny_clip(paths["student"], **student_kw, seed=1)
    if not os.path.isfile(paths["teacher"]):
        save_tiny_clip(paths["teacher"], **teacher_kw, seed=2)
    if not os.path.isfile(paths["boost"]):
        sys.path.insert(0, os.path.join(ROOT, "trainers"))
        from trainers.caspl import architecture, boost_prompts
        from caspl.config import get_cfg_default, merge_file

        cfg = get_cfg_default()
        merge_file(cfg, os.path.join(ROOT, "configs/trainers", BOOST_CONFIG))
        c = cfg.TRAINER.CASPL
        arch = architecture(tiny_clip(**student_kw))
        shape = {"n_ctx_text": c.N_CTX_TEXT, "n_ctx_vision": c.N_CTX_VISION,
                 "depth_text": min(c.PROMPT_DEPTH_TEXT, arch["text_layers"]),
                 "depth_vision": min(c.PROMPT_DEPTH_VISION, arch["vision_layers"])}
        boost = boost_prompts(arch, shape)
        atomic_save({"state_dict": boost.state_dict(), "epoch": cfg.OPTIM.MAX_EPOCH,
                     "meta": {"trainer": "CasPL_Boost", "boost": {"student": paths["student"],
                                                                   "teacher": paths["teacher"],
                                                                   **shape, **arch}}}, paths["boost"])
    for n in classes:
        folder = os.path.join(work, f"data{n}")
        if os.path.isdir(folder):
            continue
        tmp = folder + ".tmp"
        for name in class_names(n):
            os.makedirs(os.path.join(tmp, name))
            for i in range(2):
                Image.new("RGB", (8, 8), (i * 100, 50, 50)).save(os.path.join(tmp, name, f"{i}.png"))
        os.rename(tmp, folder)
    return paths


# ---------------------------------------------------------------------------- one measurement

def make_cfg(method, n, path, args, paths, device):
    import importlib

    for plugins in ("datasets", "trainers"):
        importlib.import_module(plugins)
    from caspl import TRAINER_REGISTRY
    from caspl.config import get_cfg_default, merge_file, merge_opts

    cfg = get_cfg_default()
    merge_file(cfg, os.path.join(ROOT, "configs/trainers", CONFIGS[method]))
    config_name = TRAINER_REGISTRY.get(method).CONFIG_NAME
    student_kw = PRESETS[args.preset][0]
    layers = {"TEXT": student_kw["text_layers"], "VISION": student_kw["vision_layers"]}
    size = student_kw["image_resolution"]
    opts = {"DATASET.NAME": "ImageFolder", "DATASET.ROOT": os.path.dirname(paths["work"]),
            "DATASET.DIR": os.path.join(paths["work"], f"data{n}"), "DATASET.SPLIT_RATIOS": (0.5, 0.0, 0.5),
            "OUTPUT_DIR": os.path.join(paths["work"], "out", f"{method}_{n}_{path}"), "SEED": 1,
            "TRAINER.NAME": method, "MODEL.BACKBONE.NAME": paths["student"], "INPUT.SIZE": (size, size),
            "USE_CUDA": device.type == "cuda", "DATALOADER.NUM_WORKERS": 0,
            "DATALOADER.TRAIN_X.BATCH_SIZE": args.batch_size, "DATASET.TEMPLATE": "a photo of a {}.",
            f"TRAINER.{config_name}.PREC": args.prec,
            "MODEL.TEXT_SHARED_PREFIX": path != "plain", "MODEL.ACTIVATION_CHECKPOINTING": path == "checkpointing"}
    for key in list(cfg.TRAINER[config_name]):  # depths capped at the preset's layers
        for side, count in layers.items():
            if key.startswith("PROMPT_DEPTH") and (key.endswith(side) or key == "PROMPT_DEPTH"):
                opts[f"TRAINER.{config_name}.{key}"] = min(cfg.TRAINER[config_name][key], count)
    if method == "CasPL_PromptSRC":  # the boosting prompts' sizes (for the reference; caspl reads the file)
        boost = get_cfg_default()
        merge_file(boost, os.path.join(ROOT, "configs/trainers", BOOST_CONFIG))
        opts["TRAINER.CASPL.BOOST_CKPT"] = paths["boost"]
        for key in ("N_CTX_TEXT", "N_CTX_VISION", "PROMPT_DEPTH_TEXT", "PROMPT_DEPTH_VISION"):
            side = key.rsplit("_", 1)[1]
            opts[f"TRAINER.CASPL.{key}"] = min(boost.TRAINER.CASPL[key], layers[side]) if "DEPTH" in key \
                else boost.TRAINER.CASPL[key]
    if method == "CasPL_Boost":
        opts["TRAINER.CASPL.TEACHER"] = paths["teacher"]
    merge_opts(cfg, [str(x) for kv in opts.items() for x in kv])
    cfg.freeze()
    return cfg


def random_anchor(clip_model, classnames):
    import torch

    return torch.randn(len(classnames), clip_model.text_projection.shape[1], device=clip_model.text_projection.device)


def build_caspl(method, cfg):

    from caspl import TRAINER_REGISTRY
    from caspl.utils import set_random_seed

    set_random_seed(1)
    cls = TRAINER_REGISTRY.get(method)
    if "PromptSRC" in method:  # the anchor: random features of its shape (module docstring)
        cls.frozen_text_features = lambda self, templates: random_anchor(self.clip, self.classnames).expand(
            len(templates), -1, -1)
    trainer = cls(cfg)
    trainer.set_model_mode(True)
    return trainer


def reference_settings(cfg, method):
    t = cfg.TRAINER
    if method == "CoOp":
        c = t.COOP
        return {"n_ctx": c.N_CTX, "ctx_init": c.CTX_INIT, "lr": cfg.OPTIM.LR}
    if method == "MaPLe":
        c = t.MAPLE
        return {"n_ctx": c.N_CTX, "ctx_init": c.CTX_INIT, "depth": c.PROMPT_DEPTH, "lr": cfg.OPTIM.LR}
    s = {"lr": cfg.OPTIM.LR}
    if method in ("PromptSRC", "CasPL_PromptSRC"):
        c = t.PROMPTSRC
        s.update(n_ctx_text=c.N_CTX_TEXT, n_ctx_vision=c.N_CTX_VISION, depth_text=c.PROMPT_DEPTH_TEXT,
                 depth_vision=c.PROMPT_DEPTH_VISION, ctx_init=c.CTX_INIT, text_loss_weight=c.TEXT_LOSS_WEIGHT,
                 image_loss_weight=c.IMAGE_LOSS_WEIGHT)
    if method.startswith("CasPL"):
        c = t.CASPL
        s.update(boost_text=c.N_CTX_TEXT, boost_vision=c.N_CTX_VISION, boost_depth_text=c.PROMPT_DEPTH_TEXT,
                 boost_depth_vision=c.PROMPT_DEPTH_VISION, temperature=c.TEMPERATURE,
                 teacher_template=cfg.DATASET.TEMPLATE)
    return s


def worker(args):
    import torch

    method, n, path = args.worker[0], int(args.worker[1]), args.worker[2]
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu" and args.max_memory_gib:
        limit = int(args.max_memory_gib * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    paths = json.loads(os.environ["CLASS_COUNT_PATHS"])
    size = PRESETS[args.preset][0]["image_resolution"]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, size, size, generator=g).to(device)
    labels = torch.randint(0, n, (args.batch_size,), generator=g).to(device)
    result = {"method": method, "classes": n, "path": path}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cfg = make_cfg(method, n, path, args, paths, device)
            if path == "reference":
                import reference_steps

                from caspl.clip import load_clip

                half = args.prec == "fp16" and device.type == "cuda"  # the reference's fp16 weights
                student = load_clip(paths["student"], device=device)
                teacher = load_clip(paths["teacher"], device=device) if method == "CasPL_Boost" else None
                student, teacher = (m.half() if half and m is not None else m for m in (student, teacher))
                reference_steps.promptsrc_anchor = random_anchor  # as for caspl (module docstring)
                names = sorted(os.listdir(cfg.DATASET.DIR))  # ImageFolder's classes: its sub-folders
                model = reference_steps.build(method, student, names, reference_settings(cfg, method),
                                              teacher=teacher)
                del student, teacher  # keep only what the reference's model holds

                def step():
                    return model.step(images, labels)
            else:
                trainer = build_caspl(method, cfg)
                batch = {"img": images, "label": labels, "index": torch.arange(args.batch_size)}

                def step():
                    return trainer.forward_backward(batch)["loss"]
            loss = step()
            for _ in range(args.warmup - 1):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        result.update(step_s=statistics.median(times), first_loss=float(loss))
    except (MemoryError, RuntimeError) as err:
        if "alloc" not in str(err) and not isinstance(err, MemoryError):
            raise
        result["oom"] = True
    if device.type == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------------------- the table

def run_all(args):
    import torch

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if args.max_memory_gib is None and device == "cpu":
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable"))
        args.max_memory_gib = round(0.9 * avail / 2 ** 20, 1)
    work = args.work or tempfile.mkdtemp(prefix="caspl_class_count_")
    os.makedirs(work, exist_ok=True)
    print(f"Preparing CLIPs ({args.preset} shapes) and data in {work} ...", flush=True)
    paths = {**make_material(work, args.preset, args.classes), "work": work}
    env = {**os.environ, "CLASS_COUNT_PATHS": json.dumps(paths),
           "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "bench"), ROOT, os.environ.get("PYTHONPATH", "")])}
    common = ["--preset", args.preset, "--batch-size", str(args.batch_size), "--prec", args.prec,
              "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--threads", str(args.threads),
              "--device", device] + (["--max-memory-gib", str(args.max_memory_gib)] if args.max_memory_gib else [])
    print(f"Device {device}, {torch.get_num_threads() if not args.threads else args.threads} threads, batch "
          f"{args.batch_size}, {args.prec}; {args.warmup} warm-up + {args.repeats} timed steps per fresh process"
          + (f"; memory limit {args.max_memory_gib} GiB per process" if device == "cpu" else ""), flush=True)
    results = []
    for method in args.methods:
        for n in args.classes:
            for path in args.paths:
                t0 = time.time()
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), *common,
                                       "--worker", method, str(n), path],
                                      env=env, capture_output=True, text=True)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                    oom = proc.returncode in (-9, 137)
                    r = {"method": method, "classes": n, "path": path, "oom": oom, "error": " | ".join(tail)}
                else:
                    r = json.loads(lines[-1][len("RESULT "):])
                results.append(r)
                shown = "out of memory" if r.get("oom") else (f"{r['step_s']:.2f} s/step, peak {r['peak_mib']:,.0f} MiB"
                                                               if "step_s" in r else f"failed: {r.get('error')}")
                print(f"  {method:16s} {n:5d} classes  {path:13s} {shown}   ({time.time() - t0:.0f} s)", flush=True)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(results, f, indent=1)
    print_table(results)


def print_table(results):
    from tabulate import tabulate

    by = {(r["method"], r["classes"], r["path"]): r for r in results}

    def cell(r, key):
        if r is None:
            return ""
        if r.get("oom"):
            return "OOM"
        return f"{r[key]:.2f}" if key == "step_s" and key in r else (f"{r[key]:,.0f}" if key in r else "error")

    def ratio(a, b, key):
        if a is None or b is None or key not in a or key not in b:
            return ""
        return f"{a[key] / b[key]:.2f}x"

    rows = []
    for method, n in dict.fromkeys((r["method"], r["classes"]) for r in results):
        get = {p: by.get((method, n, p)) for p in PATHS}
        rows.append([method, n] + [cell(get[p], "step_s") for p in PATHS]
                    + [ratio(get["reference"], get["caspl"], "step_s")]
                    + [cell(get[p], "peak_mib") for p in PATHS]
                    + [ratio(get["checkpointing"], get["plain"], "peak_mib")])
    headers = (["method", "classes"] + [f"{p} s" for p in PATHS] + ["speed-up"]
               + [f"{p} MiB" for p in PATHS] + ["ckpt/plain mem"])
    print()
    print("Seconds per training step (median) and peak memory; speed-up = reference / caspl")
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))


def main():
    args = parse_args()
    if args.worker:
        worker(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
