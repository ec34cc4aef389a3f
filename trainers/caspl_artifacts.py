"""Boosting prompts as one file to share: a phase-1 (CasPL_Boost) run's prompts and what
they were made for.

    python tools/export_boost.py RUN_DIR OUT_FILE [--epoch N] [--student CLIP]

writes OUT_FILE atomically and prints its sha256 and a TRAINER.CASPL.BOOST_CKPT value.
The file (format ARTIFACT_FORMAT) holds tensors and plain types only, so
torch.load(..., weights_only=True) reads it:

    format         "caspl-boost-prompts/1"
    state_dict     the boosting prompts ({text,vision}.ctx, {text,vision}.deep_ctx), fp32
    boost          student (backbone name), student_sha256 (caspl.clip.checksum), teacher,
                   n_ctx_text, n_ctx_vision, depth_text, depth_vision, text_width,
                   vision_width, text_layers, vision_layers
    dataset, classnames, epoch, max_epoch, trainer, config (the yacs dump phase 1 ran
    with), caspl_version (phase 1's), exported_by (this caspl's version)

A phase-1 output directory: <run>/BoostPrompts/checkpoint names the last model.pth.tar-N,
whose meta holds "boost", "max_epoch" and "student_sha256". trainers/caspl.py reads these
files (and the artifacts) as boosting prompts."""
import argparse
import os
import pathlib
import sys

import torch

from caspl import CasplError, __version__
from caspl.clip import load_backbone
from caspl.clip.checksum import architecture, weights_sha256
from caspl.engine import checkpoint_file, read_checkpoint
from caspl.utils import atomic_save
from caspl.utils.fetch import file_sha256, pinned_url

ARTIFACT_FORMAT = "caspl-boost-prompts/1"
PHASE1_MODULE = "BoostPrompts"
SIZE_KEYS = ("n_ctx_text", "n_ctx_vision", "depth_text", "depth_vision", "text_width", "vision_width")


def phase1_checkpoint(run_dir, modules=(PHASE1_MODULE,), hint="name a checkpoint file"):
    """(path, checkpoint) of the last checkpoint of a phase-1 output directory; a phase 1
    that stopped before its last epoch is refused (`hint` says what to do instead)."""
    module = next((m for m in modules if os.path.isfile(os.path.join(run_dir, m, "checkpoint"))), None)
    if module is None:
        raise CasplError(f"{run_dir} holds no phase-1 checkpoint (no "
                         + ", nor ".join(f"{m}/checkpoint" for m in modules) + ")")
    path = checkpoint_file(run_dir, module)
    ckpt = read_checkpoint(path)
    meta = ckpt.get("meta", {})
    if ckpt["epoch"] < meta.get("max_epoch", ckpt["epoch"]):
        raise CasplError(f"phase 1 in {run_dir} stopped at epoch {ckpt['epoch']}/{meta['max_epoch']}; "
                         f"run it to the end or {hint}")
    return path, ckpt


def is_artifact(obj):
    return isinstance(obj, dict) and isinstance(obj.get("format"), str) and obj["format"].startswith("caspl-boost")


def read_artifact(obj, path):
    """(state dict, boost metadata) of an artifact; one of a format this caspl does not know is refused."""
    if obj["format"] != ARTIFACT_FORMAT:
        raise CasplError(f"{path} is boosting prompts in format {obj['format']!r}; this caspl ({__version__}) reads "
                         f"{ARTIFACT_FORMAT!r}")
    check_sizes(obj.get("state_dict"), obj.get("boost"), path)
    return obj["state_dict"], obj["boost"]


def check_sizes(state, meta, path):
    """Refuse an artifact whose tensors are not the sizes its metadata gives (an edited or
    mixed-up file), before anything is built from either."""
    from .caspl import boost_prompts  # the method's module imports this one: read when called

    redo = "export it again (python tools/export_boost.py) or get a whole copy"
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) and meta[k] >= 1 for k in SIZE_KEYS):
        raise CasplError(f"{path} does not record the boosting prompts' sizes ({', '.join(SIZE_KEYS)}): {redo}")
    with torch.device("meta"):  # the shapes, without memory or random draws
        expected = {k: tuple(v.shape) for k, v in boost_prompts(meta, meta).state_dict().items()}
    tensors = state if isinstance(state, dict) else {}
    found = {k: tuple(v.shape) for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    wrong = next((k for k in {**expected, **found} if found.get(k) != expected.get(k)), None)
    if wrong is not None:
        sizes = ", ".join(f"{k} {meta[k]}" for k in SIZE_KEYS)
        raise CasplError(f"{path} contradicts itself: its metadata says {sizes}, so {wrong} would have shape "
                         f"{expected.get(wrong, 'none')}, but it holds "
                         f"{found.get(wrong, 'none')}: {redo}")


def student_checksum(meta, student=None):
    """The checksum phase 1 recorded, else computed from its student (or `student`), whose
    widths and layer counts must be those the prompts were made for."""
    if meta.get("student_sha256"):
        return meta["student_sha256"]
    name = student or meta["boost"]["student"]
    print(f"Computing the student's checksum from {name}" + ("" if student else " (phase 1 did not record it)"))
    model = load_backbone(name)
    made_for = {k: meta["boost"].get(k) for k in architecture(model)}
    if architecture(model) != made_for:
        raise CasplError(f"{name} has {architecture(model)}, but the boosting prompts were made for {made_for}")
    return weights_sha256(model.model.state_dict())


def artifact(ckpt, student=None):
    """The shareable file's contents from a phase-1 checkpoint."""
    meta = ckpt.get("meta", {})
    if "boost" not in meta:
        raise CasplError(f"not a CasPL_Boost checkpoint (written by {meta.get('trainer', 'unknown')})")
    return {"format": ARTIFACT_FORMAT,
            "state_dict": {k: v.detach().cpu().float().contiguous() for k, v in ckpt["state_dict"].items()},
            "boost": {**meta["boost"], "student_sha256": student_checksum(meta, student)},
            "dataset": meta.get("dataset"), "classnames": list(meta.get("classnames") or []),
            "epoch": ckpt["epoch"], "max_epoch": meta.get("max_epoch"), "trainer": meta.get("trainer"),
            "config": meta.get("config"), "caspl_version": meta.get("caspl_version"), "exported_by": __version__}


def export(run_dir, out_file, epoch=None, student=None):
    """Write the artifact of `run_dir` (its last checkpoint, or that of `epoch`); returns its sha256."""
    if not os.path.isdir(run_dir):
        raise CasplError(f"{run_dir} is not a phase-1 output directory")
    if epoch is None:
        path, ckpt = phase1_checkpoint(run_dir, hint="pass --epoch N to export checkpoint N")
    else:
        path = os.path.join(run_dir, PHASE1_MODULE, f"model.pth.tar-{epoch}")
        ckpt = read_checkpoint(path)
    try:
        contents = artifact(ckpt, student)
    except CasplError as err:
        raise CasplError(f"{path}: {err}") from None
    atomic_save(contents, out_file)
    b = contents["boost"]
    print(f"Wrote {out_file}: boosting prompts of {path} (epoch {contents['epoch']}/{contents['max_epoch']}; "
          f"student {b['student']}, teacher {b['teacher']}, dataset {contents['dataset']}, "
          f"{b['n_ctx_text']}+{b['n_ctx_vision']} tokens, depth {b['depth_text']}/{b['depth_vision']})")
    return file_sha256(out_file)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python tools/export_boost.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a phase-1 (CasPL_Boost) output directory")
    parser.add_argument("out_file", help="the file to write")
    parser.add_argument("--epoch", type=int, help="export BoostPrompts/model.pth.tar-N (default: the last, "
                                                  "of a finished phase 1)")
    parser.add_argument("--student", help="the student CLIP (name or file) to compute the checksum from, where "
                                          "phase 1 did not record it and its recorded student is not found here")
    args = parser.parse_args(argv)
    try:
        digest = export(args.run_dir, args.out_file, args.epoch, args.student)
    except CasplError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"sha256 {digest}")
    print(f"TRAINER.CASPL.BOOST_CKPT {pinned_url(pathlib.Path(os.path.abspath(args.out_file)).as_uri(), digest)}")
    shared = pinned_url("https://HOST/PATH/" + os.path.basename(args.out_file), digest)
    print(f"(shared at a URL: TRAINER.CASPL.BOOST_CKPT {shared})")
    return 0

