"""The CasPL authors' dialect. Their code runs phase 1 as `--trainer CasPL` with the prompt
sizes under TRAINER.IVLP; both phases take KD.* options; a run writes its accuracy as a
result file; their phase-1 checkpoints name the boosting tokens their own way. All of it is
read here, with the same meaning, into caspl's own keys and files (trainers/caspl.py), or
refused with one line where caspl does something else."""
import contextlib
import os

import torch

from caspl import TRAINER_REGISTRY, CasplError
from caspl.config import user_settings
from caspl.config.reads import read_log
from caspl.utils import atomic_write_text, distributed

from .ivlp import IVLP

IVLP_DEFAULTS = IVLP.CONFIG_DEFAULTS

KD_KEYS = ("FIRST_TRAIN", "SECOND_TRAIN", "BACKBONE_NAME", "TEMPERATURE", "IS_TEST", "N_CTX_VISION", "N_CTX_TEXT",
           "CTX_INIT", "PREC", "PROMPT_DEPTH_VISION", "PROMPT_DEPTH_TEXT", "RESULT_PATH", "DIR_NAME",
           "SECOND_PARAMETER_USE", "USE_IVLP", "USE_DATASET_LIST")
AUTHORS_CONFIG = {"KD": {k: None for k in KD_KEYS}}
SIZES = ("N_CTX_VISION", "N_CTX_TEXT", "PROMPT_DEPTH_VISION", "PROMPT_DEPTH_TEXT")
IVLP_KEYS = SIZES + ("CTX_INIT", "PREC")  # what --trainer CasPL reads from TRAINER.IVLP, under the same names


# KD.<key> -> TRAINER.CASPL.<key>: the same setting under the authors' name (phase 2 checks
# the phase-1 ones against the boosting prompts, as every phase-1 key it is given)
KD_AS_CASPL = {"BACKBONE_NAME": "TEACHER", "TEMPERATURE": "TEMPERATURE", "SECOND_PARAMETER_USE": "BOOST_LEARNABLE",
               **{k: k for k in IVLP_KEYS}}


def authors_cfg(cfg, phase):
    """`cfg` with the authors' keys (KD.*, and TRAINER.IVLP.* for `--trainer CasPL`) read into
    caspl's, and one line saying how; a key caspl does not follow is refused. KD.* then show
    the values this run uses."""
    kd = {k: cfg.KD[k] for k in KD_KEYS}
    kd = {k: v for k, v in kd.items() if v is not None}
    alias = cfg.TRAINER.NAME == "CasPL"
    if phase == 1 and not alias and any(cfg.TRAINER.IVLP[k] != IVLP_DEFAULTS[k] for k in IVLP_KEYS):
        raise CasplError("TRAINER.IVLP.* is set (the CasPL authors' phase-1 layout), which CasPL_Boost does not "
                         "read: run --trainer CasPL to read it, or set TRAINER.CASPL.*")

    def refuse(key, why):
        raise CasplError(f"KD.{key} {kd[key]!r}: {why}")

    other = ("phase 2: run --trainer CasPL_<X> (e.g. CasPL_PromptSRC) with --model-dir <phase-1 run>" if phase == 1
             else "phase 1: run --trainer CasPL (or CasPL_Boost)")
    if kd.get("FIRST_TRAIN", phase == 1) != (phase == 1) or kd.get("SECOND_TRAIN", phase == 2) != (phase == 2):
        refuse("FIRST_TRAIN" if "FIRST_TRAIN" in kd and kd["FIRST_TRAIN"] != (phase == 1) else "SECOND_TRAIN",
               f"that is {other}")
    if kd.get("USE_DATASET_LIST", 0) != 0:
        refuse("USE_DATASET_LIST", "trains on the test split, which caspl does not do")
    if kd.get("USE_IVLP", True) is not True:
        refuse("USE_IVLP", "caspl always puts the boosting tokens in both encoders (the authors' USE_IVLP True)")
    if phase == 1:
        for key in set(SIZES) | {"CTX_INIT", "PREC"}:
            if key in kd:
                refuse(key, "phase 1 does not read it (its prompt sizes come from TRAINER.IVLP.*)")
        if kd.get("SECOND_PARAMETER_USE", False) is not False:
            refuse("SECOND_PARAMETER_USE", f"phase 1 does not read it; that is {other}")
    cfg = cfg.clone()
    cfg.defrost()
    c, read, log = cfg.TRAINER.CASPL, [], read_log(cfg)
    given = user_settings(cfg)
    from .caspl import CASPL_DEFAULTS  # the method's module imports this one: read when called

    if alias:
        changed = [k for k in IVLP_KEYS if c[k] != CASPL_DEFAULTS[k]]
        if changed:
            raise CasplError(f"TRAINER.CASPL.{changed[0]} is set, but --trainer CasPL (the authors' name) sizes the "
                             "boosting prompts from TRAINER.IVLP.*: set those, or run --trainer CasPL_Boost")
        for key in IVLP_KEYS:
            c[key] = cfg.TRAINER.IVLP[key]
        read.append("TRAINER.IVLP.* as TRAINER.CASPL.N_CTX_*, PROMPT_DEPTH_*, CTX_INIT and PREC")
    for key, leaf in KD_AS_CASPL.items():
        if key not in kd or (phase == 1 and key not in ("BACKBONE_NAME", "TEMPERATURE")):
            continue
        value = type(CASPL_DEFAULTS[leaf])(kd[key])
        own = given.get(f"TRAINER.CASPL.{leaf}")
        if own is not None and own[1] != value:
            raise CasplError(f"KD.{key} {kd[key]!r} and TRAINER.CASPL.{leaf} {own[1]!r} (set {own[0]}) are one setting "
                             "with two values; give one")
        c[leaf] = value
        if log is not None:  # the user set it, under the authors' name
            log.sources[f"TRAINER.CASPL.{leaf}"] = (f"as KD.{key} ({given[f'KD.{key}'][0]})", value)
        read.append(f"KD.{key} as TRAINER.CASPL.{leaf}")
    # the authors' trainer tests after training only when KD.IS_TEST says so (default False)
    if kd or alias:
        cfg.TEST.NO_TEST = not kd.get("IS_TEST", False)
        read.append(f"KD.IS_TEST {kd.get('IS_TEST', False)}{'' if 'IS_TEST' in kd else ' (their default)'} "
                    "as TEST.NO_TEST " + str(cfg.TEST.NO_TEST))
    if "RESULT_PATH" in kd or "DIR_NAME" in kd:
        if "&" not in kd.get("DIR_NAME", "dirname&1"):
            refuse("DIR_NAME", "the authors' form is <name>&<seed>")
        read.append("KD.RESULT_PATH and DIR_NAME: the test accuracy is also written as the authors' result file")
    if phase == 1:  # phase 2 shows them once the boosting prompts are read (CasPLMixin.resolve_cfg)
        show_used_kd(cfg, phase)
    cfg.freeze()
    if read:
        print(f"CasPL authors' keys ({'--trainer CasPL, ' if alias else ''}phase {phase}): read " + "; ".join(read))
    return cfg


def show_used_kd(cfg, phase):
    """KD.* as the values this run uses (the logged config shows them, not placeholders); the
    result file's keys stay None where no result file is written."""
    c, kd = cfg.TRAINER.CASPL, cfg.KD
    with read_log(cfg).pause() if read_log(cfg) is not None else contextlib.nullcontext():
        kd.FIRST_TRAIN, kd.SECOND_TRAIN, kd.IS_TEST = phase == 1, phase == 2, not cfg.TEST.NO_TEST
        kd.USE_IVLP, kd.USE_DATASET_LIST, kd.SECOND_PARAMETER_USE = True, 0, c.BOOST_LEARNABLE and phase == 2
        kd.BACKBONE_NAME, kd.TEMPERATURE = c.TEACHER, c.TEMPERATURE
        for key in IVLP_KEYS:
            kd[key] = c[key]


def write_authors_result(cfg, accuracy):
    """The authors' result file: RESULT_PATH + <name>/<subsample>/<dataset>/seed<seed>/<acc>.txt."""
    kd = cfg.KD
    if kd.RESULT_PATH is None and kd.DIR_NAME is None:
        return
    name, seed = (kd.DIR_NAME or "dirname&1").split("&", 1)
    folder = (kd.RESULT_PATH or "results_path") + os.path.join(name, cfg.DATASET.SUBSAMPLE_CLASSES, cfg.DATASET.NAME,
                                                               f"seed{seed}")
    atomic_write_text("", os.path.join(folder, f"{accuracy:.1f}.txt"))
    print(f"Result file (the authors' KD.RESULT_PATH layout): {os.path.join(folder, f'{accuracy:.1f}.txt')}")


class AuthorsKeys:
    """The authors' keys, read before anything else looks at the config (both phases)."""

    ROOT_CONFIG = AUTHORS_CONFIG
    ROOT_CONFIG_OWNERS = "the CasPL trainers (CasPL, CasPL_Boost, CasPL_<X>)"
    PHASE = 2

    def resolve_cfg(self, cfg):
        return authors_cfg(super().resolve_cfg(cfg), self.PHASE)

    def test(self, split=None):
        accuracy = super().test(split)
        if (split or self.cfg.TEST.SPLIT) == "test" and distributed.is_main():
            write_authors_result(self.cfg, accuracy)
        return accuracy


AUTHORS_MODEL = "CasPL"  # the module folder of the authors' own phase-1 runs
AUTHORS_TEXT_CTX = "prompt_learner_teacher.ctx"


def authors_boost(state, path):
    """Boosting prompts from a phase-1 checkpoint of the authors' own code (their key names:
    text tokens `prompt_learner_teacher.ctx`, vision tokens `image_encoder.VPT_FIRST`, deep
    tokens `<tower>.transformer.resblocks.<i>.VPT_shallow_FIRST`), with what they were made
    for read from the tensors' shapes."""
    def towers(tower):
        blocks = {int(k.split(".")[3]) for k in state if k.startswith(f"{tower}.transformer.resblocks.")}
        deep = sorted(int(k.split(".")[3]) for k in state
                      if k.startswith(f"{tower}.transformer.resblocks.") and k.endswith(".VPT_shallow_FIRST"))
        if deep != list(range(1, len(deep) + 1)):
            raise CasplError(f"{path}: the authors' deep boosting tokens of {tower} are not in layers 1..n ({deep})")
        return len(blocks), [state[f"{tower}.transformer.resblocks.{i}.VPT_shallow_FIRST"].float() for i in deep]

    if "image_encoder.VPT_FIRST" not in state:
        raise CasplError(f"{path} is the authors' checkpoint without vision boosting tokens (image_encoder.VPT_FIRST)")
    text, vision = state[AUTHORS_TEXT_CTX].float(), state["image_encoder.VPT_FIRST"].float()
    (text_layers, text_deep), (vision_layers, vision_deep) = towers("text_encoder"), towers("image_encoder")
    converted = {"text.ctx": text, "vision.ctx": vision}
    if text_deep:
        converted["text.deep_ctx"] = torch.stack(text_deep)
    if vision_deep:
        converted["vision.deep_ctx"] = torch.stack(vision_deep)
    meta = {"student": "the CasPL authors' phase 1", "teacher": None,  # not recorded in their checkpoints
            "n_ctx_text": text.shape[0], "n_ctx_vision": vision.shape[0], "depth_text": 1 + len(text_deep),
            "depth_vision": 1 + len(vision_deep), "text_width": text.shape[1], "vision_width": vision.shape[1],
            "text_layers": text_layers, "vision_layers": vision_layers}
    print(f"CasPL: {path} is a phase-1 checkpoint of the authors' code; its boosting prompts read by their key names")
    return converted, meta


def register_authors_phase1(boost_cls):
    """Registers `--trainer CasPL`, the authors' name for phase 1 (`boost_cls`, CasPL_Boost, is
    defined in the method's module, which imports this one)."""
    doc = ("The CasPL authors' name for phase 1: CasPL_Boost with the boosting prompts sized by TRAINER.IVLP.*, "
           "as their configs (configs/trainers/CasPL/*.yaml) give them.")
    TRAINER_REGISTRY.register(type("CasPL", (boost_cls,), {"__module__": __name__, "__doc__": doc}))
