"""The precision matrix: every registered trainer as a user's GPU runs it, here on the CPU.

CASPL_CPU_AS_GPU=1 makes the CPU behave as a CUDA GPU without bf16 (caspl.engine.precision):
PREC fp16 keeps CLIP's half weights and amp autocasts to fp16 with a gradient scaler. Four
precisions: fp32; fp16 (the switch); amp-fp16 (amp with the switch); amp-bf16 (amp without
it: bf16 autocast, no scaler, as on a GPU with bf16).

For each trainer and precision, in-process as train.py runs it:
- a 2-epoch training interrupted after 2 of epoch 2's 3 steps (its checkpoint never written),
  then resumed: the resumed epoch 2 takes exactly the interrupted run's steps (same losses,
  bit for bit: parameters, optimiser, RNG streams and gradient scaler all came back), every
  loss is finite, and every checkpoint holds fp32 tensors only and loads with
  weights_only=True;
- an evaluation-only run from the final checkpoint gives the trained run's accuracy;
- on one fixed batch, from the same learnable values, the loss, the logits and the prompt
  gradients are within a tolerance of fp32's.

The tolerance is derived from the plain CLIP's own error (no prompts, no method), measured
first on the same batch (test_plain_clip_error_is_what_the_bounds_are_built_on): a method
may be at most ERROR_FACTOR times less exact than the CLIP it prompts. Logits: relative max
error against the plain CLIP's; gradients: relative L2 error (all learnable tensors together)
against that of the plain CLIP's gradient with respect to its inputs (token embeddings and
pixels: what a prompt's gradient is made of); loss: relative error against the plain CLIP's
logit error (every loss here is a function of logits and features; the plain CLIP's own
cross-entropy averages its logits' errors away and would bound losses that do not, such as
L1 terms between features, too tightly). ERROR_FACTOR 4 allows for a second model (a
teacher) and loss terms beyond the cross-entropy; it was fixed before any method was
measured against it."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, run_cli, train_killed_at_save
from open_clip_families import spec, write_family

from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip import class_prompts, clip_logits
from caspl.clip.backbone import run_block
from caspl.clip.tiny import save_tiny_clip
from caspl.config import get_cfg_default, merge_file, merge_opts
from caspl.engine import learnable_state
from caspl.engine.precision import CPU_AS_GPU
from caspl.testing import make_eurosat
from caspl.utils import set_random_seed

pytestmark = pytest.mark.slow

PRECISIONS = {  # name: (PREC, CASPL_CPU_AS_GPU)
    "fp32": ("fp32", "0"),
    "fp16": ("fp16", "1"),
    "amp-fp16": ("amp", "1"),
    "amp-bf16": ("amp", "0"),
}
ERROR_FACTOR = 4
EPOCHS, STEPS_BEFORE_CRASH = 2, 2
MAX_BACKOFFS = 24
DEPTH = 2  # the tiny CLIP's layers: every prompt depth is capped at it

# entry: (trainer, config under configs/trainers, options, what its training is)
# "epochs": the engine's epoch loop; "fit": one fit (LinearProbeCLIP); "none": nothing learned
ENTRIES = {
    "ZeroshotCLIP": ("ZeroshotCLIP", "ZeroshotCLIP/vit_b16.yaml", {}, "none"),
    "ZeroshotCLIP2": ("ZeroshotCLIP2", "ZeroshotCLIP/vit_b16.yaml", {}, "none"),
    "LinearProbeCLIP": ("LinearProbeCLIP", "LinearProbeCLIP/vit_b16.yaml", {"TRAINER.LINEAR_PROBE.SEARCH_STEPS": 0,
                                                                     "TRAINER.LINEAR_PROBE.C_GRID": (1.0, 1e-2)},
                        "fit"),
    "CoOp": ("CoOp", "CoOp/vit_b16_ep50_ctxv1.yaml", {}, "epochs"),
    "CoCoOp": ("CoCoOp", "CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", {}, "epochs"),
    "IVLP": ("IVLP", "IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
             {"TRAINER.IVLP.PROMPT_DEPTH_TEXT": DEPTH, "TRAINER.IVLP.PROMPT_DEPTH_VISION": DEPTH}, "epochs"),
    "MaPLe": ("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", {"TRAINER.MAPLE.PROMPT_DEPTH": DEPTH}, "epochs"),
    "PromptSRC": ("PromptSRC", "PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
                  {"TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT": DEPTH, "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION": DEPTH,
                   "TRAINER.PROMPTSRC.GPA_MEAN": 1.5}, "epochs"),
    "VPT": ("VPT", "VPT/vit_b16_c2_ep5_batch4_4.yaml", {"TRAINER.VPT.PROMPT_DEPTH_VISION": DEPTH}, "epochs"),
    "LAMM": ("LAMM", "LAMM/vit_b16_ep50_ctxv1.yaml", {}, "epochs"),
    "LAMM_CoOp": ("LAMM_CoOp", "LAMM_CoOp/vit_b16_ep50_ctxv1.yaml", {}, "epochs"),
    "LAMM_MaPLe": ("LAMM_MaPLe", "LAMM_MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", {"TRAINER.MAPLE.PROMPT_DEPTH": DEPTH},
                   "epochs"),
}
# phase 1 on the run's 3 shots per class (FEWSHOT_DATA), as the other methods, not the whole train split
BOOST_SIZES = {"TRAINER.CASPL.PROMPT_DEPTH_TEXT": DEPTH, "TRAINER.CASPL.PROMPT_DEPTH_VISION": DEPTH}
BOOST_DATA = {"TRAINER.CASPL.FEWSHOT_DATA": True}
BOOST_CONFIG = "CasPL_Boost/vit_b16_c2_ep20_batch128_lr0025_4+4ctx_l3.yaml"
ENTRIES.update({
    "CasPL_Boost": ("CasPL_Boost", BOOST_CONFIG, {**BOOST_SIZES, **BOOST_DATA, "TRAINER.CASPL.TEACHER": "<teacher>"},
                    "epochs"),
    "CasPL_Boost+cache": ("CasPL_Boost", BOOST_CONFIG, {**BOOST_SIZES, **BOOST_DATA,
                                                        "TRAINER.CASPL.TEACHER": "<teacher>",
                                                        "TRAINER.CASPL.TEACHER_CACHE": True,
                                                        "TRAINER.CASPL.CACHE_VIEWS": 2}, "epochs"),
    # the authors' phase 1: sizes (and PREC) under TRAINER.IVLP, the teacher in KD.BACKBONE_NAME
    "CasPL": ("CasPL", "CasPL/vit_b16_c2_ep20_batch128_lr0025_4+4ctx_l3.yaml",
              {"TRAINER.IVLP.PROMPT_DEPTH_TEXT": DEPTH, "TRAINER.IVLP.PROMPT_DEPTH_VISION": DEPTH, **BOOST_DATA,
               "KD.BACKBONE_NAME": "<teacher>", "KD.IS_TEST": True}, "epochs"),
    "PromptKD": ("PromptKD", "PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml",
                 {"TRAINER.PROMPTKD.PROMPT_DEPTH_VISION": DEPTH, "TRAINER.PROMPTKD.TEACHER_NAME": "<teacher>",
                  "TRAINER.PROMPTKD.TEACHER_CKPT": "<promptkd_teacher>"}, "epochs"),
    "PromptKD+zero_shot": ("PromptKD", "PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml",
                           {"TRAINER.PROMPTKD.PROMPT_DEPTH_VISION": DEPTH, "TRAINER.PROMPTKD.TEACHER_NAME": "<teacher>",
                            "TRAINER.PROMPTKD.TEACHER_CKPT": "zero_shot"}, "epochs"),
})
CASCADED = ["ZeroshotCLIP", "ZeroshotCLIP2", "CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC", "VPT", "LAMM",
            "LAMM_CoOp", "LAMM_MaPLe"]
for _x in CASCADED:
    _trainer, _config, _opts, _kind = ENTRIES[_x]
    ENTRIES[f"CasPL_{_x}"] = (f"CasPL_{_x}", _config, {**_opts, "TRAINER.CASPL.BOOST_CKPT": "<boost>"}, _kind)


class Interrupted(Exception):
    """The run was killed (stands for a crash or a Ctrl-C in the middle of an epoch)."""


# ---------------------------------------------------------------------------- material

@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip_path):
    """Data (4 classes: 12 training images at 3 shots, 12 test images), the student, a larger
    teacher, phase-1 boosting prompts and a PromptSRC-tuned teacher run for PromptKD (fp32)."""
    work = tmp_path_factory.mktemp("precision")
    w = {"root": make_eurosat(str(work / "data"), per_class=10, n_classes=4), "student": tiny_clip_path,
         "teacher": save_tiny_clip(str(work / "teacher.pt"), embed_dim=48, vision_width=128, text_width=128,
                                   vision_layers=3, text_layers=3, seed=5),
         "work": work}
    boost = build(w, "CasPL_Boost", BOOST_CONFIG, {**BOOST_SIZES, "TRAINER.CASPL.TEACHER": w["teacher"],
                                                   "OPTIM.MAX_EPOCH": 1, "TEST.NO_TEST": True},
                  str(work / "boost"), "fp32")
    boost.train()
    w["boost"] = str(work / "boost")
    tuned = build(w, "PromptSRC", "PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx.yaml",
                  {"MODEL.BACKBONE.NAME": w["teacher"], "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT": DEPTH,
                   "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION": DEPTH, "OPTIM.MAX_EPOCH": 1, "TEST.NO_TEST": True,
                   "DATASET.SUBSAMPLE_CLASSES": "base"}, str(work / "promptkd_teacher"), "fp32")
    tuned.train()
    w["promptkd_teacher"] = str(work / "promptkd_teacher")
    w["open_clip_student"] = spec(*write_family(str(work), "openai", weights=tiny_clip_path))
    return w


def cfg_for(w, trainer, config, opts, out, prec):
    cfg = get_cfg_default()
    merge_file(cfg, os.path.join(ROOT, "configs/datasets/eurosat.yaml"))
    merge_file(cfg, os.path.join(ROOT, "configs/trainers", config))
    cls = TRAINER_REGISTRY.get(trainer)
    prec_key = "TRAINER.IVLP.PREC" if trainer == "CasPL" else f"TRAINER.{cls.CONFIG_NAME}.PREC"
    values = {"DATASET.ROOT": w["root"], "OUTPUT_DIR": out, "SEED": 1, "TRAINER.NAME": trainer,
              "MODEL.BACKBONE.NAME": w["student"], "INPUT.SIZE": (32, 32), "DATALOADER.NUM_WORKERS": 0,
              "DATALOADER.TRAIN_X.BATCH_SIZE": 4, "DATASET.NUM_SHOTS": 3, "OPTIM.MAX_EPOCH": EPOCHS,
              "TRAIN.PRINT_FREQ": 1000, prec_key: prec}
    for key, value in opts.items():
        values[key] = w[value[1:-1]] if isinstance(value, str) and value.startswith("<") else value
    merge_opts(cfg, [str(x) for kv in values.items() for x in kv])
    cfg.freeze()
    return cfg


def build(w, trainer, config, opts, out, prec, eval_from=None):
    """The trainer train.py builds (seeded first, as there); `eval_from`: an --eval-only run of
    that directory (the method's eval_cfg applied, its checkpoint loaded)."""
    cfg = cfg_for(w, trainer, config, opts, out, prec)
    set_random_seed(cfg.SEED)
    cls = TRAINER_REGISTRY.get(trainer)
    if eval_from:
        cfg = cls.eval_cfg(cfg, eval_from, None)
    t = cls(cfg)
    if eval_from:
        t.load_model(eval_from)
    return t


def record_losses(trainer, crash_at=None):
    """Every forward_backward's report, as (epoch, batch, report); raises Interrupted after
    `crash_at` = (epoch index, steps) of that epoch."""
    reports = []
    inner = trainer.forward_backward

    def forward_backward(batch):
        out = inner(batch)
        reports.append((trainer.epoch, trainer.batch_idx, out))
        if crash_at and trainer.epoch == crash_at[0] and trainer.batch_idx + 1 == crash_at[1]:
            raise Interrupted
        return out

    trainer.forward_backward = forward_backward
    return reports


def floating_tensors(obj, where="checkpoint"):
    """(place, tensor) for every floating-point tensor inside nested dicts, lists and tuples."""
    if torch.is_tensor(obj):
        return [(where, obj)] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in floating_tensors(v, f"{where}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [x for i, v in enumerate(obj) for x in floating_tensors(v, f"{where}[{i}]")]
    return []


def check_checkpoints(out, modules):
    for name in modules:
        folder = os.path.join(out, name)
        files = [f for f in os.listdir(folder) if f.startswith("model")]
        assert files, f"no checkpoint in {folder}"
        for f in files:
            ckpt = torch.load(os.path.join(folder, f), map_location="cpu", weights_only=True)
            assert ckpt["state_dict"], f"{name}/{f} holds no weights"
            wrong = [(place, t.dtype) for place, t in floating_tensors(
                {k: ckpt.get(k) for k in ("state_dict", "optimizer", "extra_state")}) if t.dtype != torch.float32]
            assert not wrong, f"{name}/{f}: tensors that are not fp32: {wrong[:4]}"


# ---------------------------------------------------------------------------- one fixed batch

def fixed_batch(trainer):
    """The first test batch (test transform: no randomness), as a training batch."""
    batch = next(iter(trainer.dm.batches(trainer.dm.test_loader)))
    n = len(batch["label"])
    return {"img": batch["img"], "label": batch["label"], "index": torch.arange(n), "view": torch.zeros(n).long()}


def probe(trainer, state, batch, kind):
    """(loss, logits, gradients of every learnable tensor) on `batch` from the learnable
    values `state` (module -> state dict), without an optimiser step; logits alone for a
    trainer that learns no loss (`kind` fit or none)."""
    for name, module in trainer._models.items():
        module.load_state_dict(state[name], strict=False)
    images = batch["img"].to(trainer.device)
    trainer.set_model_mode(False)
    with torch.no_grad(), trainer.autocast():
        logits = trainer.model_inference(images).float()
    if kind != "epochs":
        return None, logits, {}
    for opt in trainer._optims.values():
        opt.step = lambda *args, **kwargs: None  # the gradients (unscaled by the scaler), not an update
    trainer.set_model_mode(True)
    for _ in range(MAX_BACKOFFS):  # amp in fp16: the scaler backs off from 65536 until nothing overflows
        loss = trainer.forward_backward(batch)["loss"]
        grads = {f"{name}.{k}": p.grad.float().clone() for name, module in trainer._models.items()
                 for k, p in module.named_parameters() if p.requires_grad and p.grad is not None}
        if trainer.scaler is None or all(torch.isfinite(g).all() for g in grads.values()):
            return loss, logits, grads
    raise AssertionError(f"gradients still overflow after {MAX_BACKOFFS} halvings of the loss scale")


def errors(run, ref):
    """(relative loss error, relative max logit error, relative gradient error) of `run` against `ref`."""
    loss, logits, grads = run
    ref_loss, ref_logits, ref_grads = ref
    logit_err = ((logits - ref_logits).abs().max() / ref_logits.abs().max()).item()
    if ref_loss is None:
        return None, logit_err, None
    assert grads.keys() == ref_grads.keys()
    flat, ref_flat = (torch.cat([g[k].flatten() for k in sorted(g)]) for g in (grads, ref_grads))
    return abs(loss - ref_loss) / abs(ref_loss), logit_err, ((flat - ref_flat).norm() / ref_flat.norm()).item()


@pytest.fixture(scope="module")
def plain_error(world):
    """The plain CLIP's own errors against fp32 for each precision, on the same batch the
    methods are probed on: (relative CE loss error, relative max logit error, relative error of
    the gradient with respect to its inputs, token embeddings and pixels: what a prompt's
    gradient is made of)."""
    out = str(world["work"] / "plain")
    t = build(world, "ZeroshotCLIP", "ZeroshotCLIP/vit_b16.yaml", {}, out, "fp32")
    batch = fixed_batch(t)
    prompts = class_prompts(t.dm.dataset.template, t.classnames)
    measured = {}
    for name, (prec, emulate) in PRECISIONS.items():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(CPU_AS_GPU, emulate)
            t = build(world, "ZeroshotCLIP", "ZeroshotCLIP/vit_b16.yaml", {}, out, prec)
            measured[name] = plain_clip_step(t.clip, t, prompts, batch)
    return {name: errors(m, measured["fp32"]) for name, m in measured.items() if name != "fp32"}


def plain_clip_step(model, trainer, prompts, batch):
    """CLIP's CE loss on the batch with its inputs (token embeddings, pixels) as leaves."""
    from caspl.clip import TextEncoder

    encoder = TextEncoder(model, prompts, shared_prefix=False)
    embeds = encoder.token_embeds.float().clone().requires_grad_(True)
    pixels = batch["img"].clone().requires_grad_(True)
    tower, dtype, L = model.text, model.dtype, int(encoder.eos.max()) + 1
    with trainer.autocast():
        x = (embeds[:, :L].to(dtype) + tower.positional_embedding[:L].to(dtype)).permute(1, 0, 2)
        mask = tower.mask(L, dtype, x.device)
        for block in tower.blocks:
            x = run_block(block, x, mask)
        features = tower.head(x[encoder.eos, torch.arange(x.shape[1])], dtype)
        logits = clip_logits(model.encode_image(pixels), features, model.logit_scale.exp())
    loss = F.cross_entropy(logits.float(), batch["label"])
    loss.backward()
    return loss.item(), logits.detach().float(), {"text": embeds.grad.float(), "image": pixels.grad.float()}


FP32_PROBES = {}  # entry -> (its initial learnable values, its fp32 probe)


def starting_values(trainer):
    """A copy of the learnable values (a state dict on the CPU shares the parameters' storage)."""
    return {n: {k: v.clone() for k, v in learnable_state(m).items()} for n, m in trainer._models.items()}


def fp32_reference(world, name, tmp_path):
    """The entry's fp32 starting values and fixed-batch probe (computed here when the fp32
    case has not run in this session)."""
    if name not in FP32_PROBES:
        trainer, config, opts, kind = ENTRIES[name]
        t = build(world, trainer, config, opts, str(tmp_path / "fp32_reference"), "fp32")
        state = starting_values(t)
        FP32_PROBES[name] = state, probe(t, state, fixed_batch(t), kind)
    return FP32_PROBES[name]


# ---------------------------------------------------------------------------- the matrix

def test_every_registered_trainer_is_in_the_matrix():
    """Every trainer of the plugin folder trainers/ (other tests register their own), and the
    CasPL_<X> the factory makes of each that it cascades (made on first lookup: derived here,
    whatever other tests looked up)."""
    from trainers.caspl import cascade

    shipped = [n for n in TRAINER_REGISTRY.names() if TRAINER_REGISTRY.get(n).__module__.startswith("trainers.")
               and (not n.startswith("CasPL_") or n == "CasPL_Boost")]

    def cascades(name):
        try:
            return cascade(TRAINER_REGISTRY.get(name)) is not None
        except CasplError:
            return False

    in_matrix = {e[0] for e in ENTRIES.values()}
    assert set(shipped) <= in_matrix
    assert {f"CasPL_{n}" for n in shipped if cascades(n)} <= in_matrix
    assert len(shipped) >= 15


def test_plain_clip_error_is_what_the_bounds_are_built_on(plain_error):
    """The premise: half precision is less exact than fp32, bf16 less than fp16, and none
    wildly so (a bound built on a broken CLIP would excuse a broken method)."""
    for name, (loss, logits, grads) in plain_error.items():
        assert 0 < logits < 0.05 and 0 < grads < 0.1 and loss < 0.01, (name, plain_error[name])
    assert plain_error["amp-bf16"][1] > plain_error["fp16"][1]


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", list(ENTRIES))
def test_trains_resumes_and_evaluates(world, plain_error, tmp_path, monkeypatch, name, precision):
    trainer_name, config, opts, kind = ENTRIES[name]
    prec, emulate = PRECISIONS[precision]
    monkeypatch.setenv(CPU_AS_GPU, emulate)
    out = str(tmp_path / "run")

    # the run is killed in epoch 2, then started again with the same command
    first = build(world, trainer_name, config, opts, out, prec)
    if precision == "fp32":
        FP32_PROBES.pop(name, None)
        initial = starting_values(first)
    assert first.precision == prec
    assert all(p.dtype == torch.float32 for m in first._models.values() for p in m.parameters() if p.requires_grad)
    if prec == "fp16":
        assert first.clip.dtype == torch.float16  # CLIP's half weights, as on a GPU
    if prec == "amp":
        assert first.clip.dtype == torch.float32
        assert first.amp_dtype == (torch.float16 if emulate == "1" else torch.bfloat16)
        assert (first.scaler is not None) == (emulate == "1")
    interrupted = record_losses(first, crash_at=(1, STEPS_BEFORE_CRASH))
    if kind == "epochs":
        with pytest.raises(Interrupted):
            first.train()
        if first.writer is not None:
            first.writer.close()
        assert not os.path.exists(os.path.join(out, next(iter(first._models)), f"model.pth.tar-{EPOCHS}"))
        resumed = build(world, trainer_name, config, opts, out, prec)
        steps = record_losses(resumed)
        resumed.train()
        assert resumed.start_epoch == 1 and {e for e, _, _ in steps} == {1}  # from epoch 1's checkpoint
        again = [(b, r) for e, b, r in steps if e == 1][:STEPS_BEFORE_CRASH]
        assert again == [(b, r) for e, b, r in interrupted if e == 1], "the resumed epoch took other steps"
        reports = interrupted + steps
        assert len({(e, b) for e, b, _ in reports}) == len(resumed.dm.train_loader_x) * EPOCHS
        assert all(math.isfinite(v) for _, _, r in reports for v in r.values()), reports
    else:
        resumed = first
        first.train()
    check_checkpoints(out, resumed._models)
    with open(os.path.join(out, "results.json")) as f:
        trained_accuracy = json.load(f)["accuracy"]

    evaluated = build(world, trainer_name, config, opts, str(tmp_path / "eval"), prec, eval_from=out)
    assert evaluated.test() == trained_accuracy

    # one fixed batch, from fp32's starting values: the error against fp32's is bounded
    batch = fixed_batch(evaluated)
    if precision == "fp32":
        FP32_PROBES[name] = initial, probe(evaluated, initial, batch, kind)
        return
    state, reference = fp32_reference(world, name, tmp_path)
    measured = errors(probe(evaluated, state, batch, kind), reference)
    _, plain_logits, plain_gradients = plain_error[precision]
    bounds = [ERROR_FACTOR * plain_logits, ERROR_FACTOR * plain_logits, ERROR_FACTOR * plain_gradients]
    for what, error, bound in zip(("loss", "logits", "gradients"), measured, bounds):
        if error is not None:
            assert error <= bound, f"{what}: relative error {error:.2e} against fp32, over {bound:.2e} " \
                                   f"({ERROR_FACTOR} x the plain CLIP's)"


def test_the_headline_method_from_the_command_line_in_half_precision(world, tmp_path, monkeypatch):
    """CASPL_CPU_AS_GPU=1 python train.py --trainer CasPL_PromptSRC with the shipped base-to-new
    config (PREC fp16) trains and evaluates as a GPU without bf16 would run it."""
    monkeypatch.setenv(CPU_AS_GPU, "1")
    config = os.path.join(ROOT, "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml")
    train, evaluation = str(tmp_path / "train"), str(tmp_path / "eval")
    common = ["--root", world["root"], "--seed", "1", "--trainer", "CasPL_PromptSRC",
              "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"), "--config-file", config]
    opts = ["MODEL.BACKBONE.NAME", world["student"], "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
            "DATASET.NUM_SHOTS", "3", "OPTIM.MAX_EPOCH", "1", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", str(DEPTH),
            "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", str(DEPTH), "TRAINER.CASPL.BOOST_CKPT", world["boost"]]
    assert run_cli(common + ["--output-dir", train] + opts) == 0
    assert run_cli(common + ["--output-dir", evaluation, "--eval-only", "--model-dir", train] + opts) == 0
    logs = [open(os.path.join(d, "log.txt")).read() for d in (train, evaluation)]
    for log in logs:
        assert "Precision fp16: CLIP's half weights, learnable parameters in fp32 (CASPL_CPU_AS_GPU=1" in log
    assert "Finish training" in logs[0] and "Finish training" not in logs[1]
    accuracy = [[line for line in log.splitlines() if line.startswith("* accuracy:")][-1] for log in logs]
    assert accuracy[0] == accuracy[1]


# ---------------------------------------------------------------------------- the switch itself

def test_without_the_switch_the_cpu_runs_fp16_as_fp32(world, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(CPU_AS_GPU, raising=False)
    t = build(world, "CoOp", "CoOp/vit_b16_ep50_ctxv1.yaml", {}, str(tmp_path / "o"), "fp16")
    assert t.precision == "fp32" and t.clip.dtype == torch.float32 and t.scaler is None
    assert "PREC fp16 runs as fp32 on the CPU" in capsys.readouterr().out


def test_the_switch_is_one_or_unset(world, tmp_path, monkeypatch):
    monkeypatch.setenv(CPU_AS_GPU, "yes")
    with pytest.raises(CasplError, match="CASPL_CPU_AS_GPU is 'yes': set it to 1"):
        build(world, "CoOp", "CoOp/vit_b16_ep50_ctxv1.yaml", {}, str(tmp_path / "o"), "fp16")


def test_the_gradient_scaler_resumes_where_it_stopped(world, tmp_path, monkeypatch):
    """amp in fp16 scales the loss by a factor the scaler adapts; a resumed run must go on with
    that factor, not restart at 65536 (its steps would then differ from the uninterrupted run's)."""
    monkeypatch.setenv(CPU_AS_GPU, "1")
    out = str(tmp_path / "o")
    t = build(world, "CoOp", "CoOp/vit_b16_ep50_ctxv1.yaml", {"OPTIM.MAX_EPOCH": 1}, out, "amp")
    t.train()
    scale = t.scaler.get_scale()
    t.scaler.update(new_scale=scale / 8)  # as after overflows
    t.save_model(1)
    resumed = build(world, "CoOp", "CoOp/vit_b16_ep50_ctxv1.yaml", {"OPTIM.MAX_EPOCH": 1}, out, "amp")
    resumed.resume()
    assert resumed.scaler.get_scale() == scale / 8


@pytest.mark.parametrize("name", [name for name, entry in ENTRIES.items() if entry[3] == "epochs"])
def test_a_kill_between_two_modules_checkpoints_resumes_from_the_last_whole_epoch(world, tmp_path, monkeypatch, name):
    """Every trainer that registers several modules (CasPL_<X> with learnable boosting prompts
    among them): a run killed between its modules' checkpoints of epoch 2 (the last module's
    never written) resumes from epoch 1 and ends with the prompts of an uninterrupted run."""
    trainer_name, config, opts, _ = ENTRIES[name]
    opts = {**opts, "TEST.NO_TEST": True}
    if "TRAINER.CASPL.BOOST_CKPT" in opts:
        opts["TRAINER.CASPL.BOOST_LEARNABLE"] = True
    whole = build(world, trainer_name, config, opts, str(tmp_path / "whole"), "fp32")
    if len(whole._models) < 2:
        pytest.skip(f"{name} registers one module")
    whole.train()
    out = str(tmp_path / "killed")
    killed = build(world, trainer_name, config, opts, out, "fp32")
    never_written = os.path.join(out, list(killed._models)[-1], f"model.pth.tar-{EPOCHS}")
    train_killed_at_save(killed, monkeypatch, lambda ckpt, path: path == never_written)
    if killed.writer is not None:
        killed.writer.close()
    resumed = build(world, trainer_name, config, opts, out, "fp32")
    resumed.train()
    assert resumed.start_epoch == 1
    for module_name, module in resumed._models.items():
        expected = learnable_state(whole._models[module_name])
        assert all(torch.equal(v, expected[k]) for k, v in learnable_state(module).items()), module_name


# ---------------------------------------------------------------------------- both doors

@pytest.mark.parametrize("name", list(ENTRIES))
def test_the_same_weights_through_both_doors(world, tmp_path, name):
    """The student's OpenAI state dict read by open_clip (its own CLIP class and towers,
    `open_clip:<config>/<file>`) is the same model as the file read as caspl reads OpenAI CLIP:
    every trainer, from the same learnable values, gives the same loss, logits and gradients of
    every learnable tensor, bit for bit (fp32). CasPL's boosting prompts made on the file are
    accepted on it (same weights, same checksum); teachers stay as the entry names them."""
    import open_clip

    state, reference = fp32_reference(world, name, tmp_path)
    trainer, config, opts, kind = ENTRIES[name]
    t = build(world, trainer, config, {**opts, "MODEL.BACKBONE.NAME": "<open_clip_student>"}, str(tmp_path / "door"),
              "fp32")
    assert type(t.clip.model) is open_clip.model.CLIP
    loss, logits, grads = probe(t, state, fixed_batch(t), kind)
    assert loss == reference[0]
    assert torch.equal(logits, reference[1])
    assert grads.keys() == reference[2].keys() and all(torch.equal(grads[k], reference[2][k]) for k in grads)

