"""Replaying the reference repositories' and the CasPL authors' run scripts with caspl's train.py.

Each entry is the command line a script of theirs runs (flags, config file names and trailing
KEY VALUE options as they write them), for a representative set: CoOp few-shot training and
evaluation, CoCoOp / IVLP / MaPLe / PromptSRC base-to-new training and evaluation on the new
classes, the MaPLe repository's VPT (base-to-new and cross-dataset), the LAMM repository's LAMM
and MaPLe+LAMM, PromptKD's base-to-new and cross-dataset students (plus the one caspl key they
need, TRAINER.PROMPTKD.TEACHER_CKPT: a PromptSRC run, here the replayed one on the same tiny CLIP),
and the CasPL authors' phase 1, phase 2 (base-to-new and cross-dataset) and evaluation. \
On generated data with a tiny CLIP, every one
must run; what only changes is the scale: the tiny backbone, its input size and depth, 1 epoch
(so --load-epoch 1), and no workers, appended after their options."""
import os

import pytest
import torch

from caspl.clip.tiny import save_tiny_clip
from caspl.testing import make_eurosat
from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

DATASET_CFG = "configs/datasets/eurosat.yaml"

# (name, trainer, config file, extra flags, their KEY VALUE options); {out:...} names another run's output
# folder, {results} a results folder. Config names are theirs (caspl ships the same files under the same names).
COMMANDS = [
    ("coop_main", "CoOp", "configs/trainers/CoOp/vit_b16_ep50.yaml", [],
     ["TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False", "TRAINER.COOP.CLASS_TOKEN_POSITION", "end",
      "DATASET.NUM_SHOTS", "2"]),
    ("coop_eval", "CoOp", "configs/trainers/CoOp/vit_b16_ep50.yaml",
     ["--eval-only", "--model-dir", "{out:coop_main}", "--load-epoch", "1"],
     ["TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False", "TRAINER.COOP.CLASS_TOKEN_POSITION", "end"]),
    ("cocoop_base", "CoCoOp", "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", [],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base"]),
    ("cocoop_new", "CoCoOp", "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
     ["--eval-only", "--model-dir", "{out:cocoop_base}", "--load-epoch", "1"],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "new"]),
    ("ivlp_base", "IVLP", "configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml", [],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base"]),
    ("maple_base", "MaPLe", "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", [],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base"]),
    ("maple_new", "MaPLe", "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
     ["--eval-only", "--model-dir", "{out:maple_base}", "--load-epoch", "1"],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "new"]),
    ("promptsrc_base", "PromptSRC", "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", [],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base"]),
    ("promptsrc_new", "PromptSRC", "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
     ["--eval-only", "--model-dir", "{out:promptsrc_base}", "--load-epoch", "1"],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "new"]),
    # the MaPLe repository's VPT
    ("vpt_base", "VPT", "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml", [],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base"]),
    ("vpt_new", "VPT", "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml",
     ["--eval-only", "--model-dir", "{out:vpt_base}", "--load-epoch", "1"],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "new"]),
    ("vpt_xd", "VPT", "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml", [], ["DATASET.NUM_SHOTS", "2"]),
    # PromptKD's base2new_train.sh and xd_train.sh, with the teacher run caspl needs
    ("promptkd_base2new", "PromptKD", "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml", [],
     ["DATASET.NUM_SHOTS", "0", "TRAINER.MODAL", "base2novel", "TRAINER.PROMPTKD.TEMPERATURE", "1.0",
      "TRAINER.PROMPTKD.KD_WEIGHT", "1000.0", "TRAINER.PROMPTKD.TEACHER_NAME", "{clip}",
      "TRAINER.PROMPTKD.TEACHER_CKPT", "{out:promptsrc_base}"]),
    ("promptkd_xd", "PromptKD", "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets.yaml", [],
     ["DATASET.NUM_SHOTS", "0", "DATASET.SUBSAMPLE_CLASSES", "all", "TRAINER.PROMPTKD.TEMPERATURE", "1.0",
      "TRAINER.PROMPTKD.KD_WEIGHT", "1000.0", "TRAINER.MODAL", "cross", "TRAINER.PROMPTKD.TEACHER_NAME", "{clip}",
      "TRAINER.PROMPTKD.TEACHER_CKPT", "{out:promptsrc_base}"]),
    # the LAMM repository: LAMM is CoOp with its flags
    ("lamm", "CoOp", "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml",
     ["--triplet-loss", "--origin-clip", "--shots", "2"],
     ["DATASET.NUM_SHOTS", "2"]),
    ("maple_lamm", "MaPLe", "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", ["--triplet-loss"],
     ["DATASET.NUM_SHOTS", "2"]),
    # the CasPL authors: phase 1 (their trainer name and config layout), phase 2 base-to-new, its evaluation, xd
    ("caspl_phase1", "CasPL", "configs/trainers/CasPL/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml", [],
     ["KD.FIRST_TRAIN", "True", "KD.SECOND_TRAIN", "False"]),
    ("caspl_promptsrc_base", "CasPL_PromptSRC", "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml",
     ["--model-dir", "{out:caspl_phase1}", "--load-epoch", "1"],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "KD.IS_TEST", "True", "KD.FIRST_TRAIN", "False",
      "KD.SECOND_TRAIN", "True", "KD.DIR_NAME", "student&1", "KD.RESULT_PATH", "{results}", "KD.N_CTX_VISION", "8",
      "KD.N_CTX_TEXT", "8"]),
    ("caspl_promptsrc_new", "CasPL_PromptSRC", "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml",
     ["--eval-only", "--model-dir", "{out:caspl_promptsrc_base}", "--load-epoch", "1"],
     ["DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "new", "KD.IS_TEST", "True", "KD.FIRST_TRAIN", "False",
      "KD.SECOND_TRAIN", "True", "KD.DIR_NAME", "student&1", "KD.RESULT_PATH", "{results}", "KD.N_CTX_VISION", "8",
      "KD.N_CTX_TEXT", "8"]),
    ("caspl_phase1_xd", "CasPL", "configs/trainers/CasPL/vit_b16_c2_ep20_batch128_lr0025_4+4ctx_l1.yaml", [],
     ["KD.FIRST_TRAIN", "True", "KD.SECOND_TRAIN", "False"]),
    ("caspl_maple_xd", "CasPL_MaPLe", "configs/trainers/MaPLe/vit_b16_c8_ep5_batch4_8ctx_cross_datasets_l12.yaml",
     ["--model-dir", "{out:caspl_phase1_xd}", "--load-epoch", "1"],
     ["DATASET.NUM_SHOTS", "2", "KD.IS_TEST", "True", "KD.FIRST_TRAIN", "False", "KD.SECOND_TRAIN", "True",
      "KD.DIR_NAME", "student&1", "KD.RESULT_PATH", "{results}", "KD.PROMPT_DEPTH_VISION", "1",
      "KD.PROMPT_DEPTH_TEXT", "1", "KD.N_CTX_VISION", "4", "KD.N_CTX_TEXT", "4", "KD.USE_IVLP", "True"]),
]

# the tiny scale: 2-layer encoders (deep prompts at most 2), 32 px, one epoch
SCALE = ["INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0",
         "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]
DEPTHS = {"IVLP": ["TRAINER.IVLP.PROMPT_DEPTH_VISION", "2", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "2"],
          "MaPLe": ["TRAINER.MAPLE.PROMPT_DEPTH", "2"],
          "PromptSRC": ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2"],
          "VPT": ["TRAINER.VPT.PROMPT_DEPTH_VISION", "2"],
          "PromptKD": ["TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "2"]}


def scale_for(name, trainer, config):
    opts = list(SCALE)
    if trainer == "CasPL" and "l12" in config:
        opts += ["TRAINER.IVLP.PROMPT_DEPTH_VISION", "2", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "2"]
    return opts + DEPTHS.get(trainer.replace("CasPL_", ""), [])


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, tiny_clip_path):
    base = tmp_path_factory.mktemp("replay")
    root = make_eurosat(str(base / "data"), per_class=4)
    teacher = save_tiny_clip(str(base / "teacher.pt"), embed_dim=48, vision_width=96, text_width=96,
                             vision_layers=2, text_layers=2, seed=5)
    outs, codes = {}, {}

    def fill(a):
        return (outs[a[5:-1]] if a.startswith("{out:") else tiny_clip_path if a == "{clip}"
                else a.replace("{results}", str(base / "results") + "/"))

    for name, trainer, config, flags, opts in COMMANDS:
        outs[name] = str(base / name)
        kd_teacher = ["KD.BACKBONE_NAME", teacher] if trainer == "CasPL" else []
        codes[name] = run_cli(["--root", root, "--seed", "1", "--trainer", trainer,
                               "--dataset-config-file", os.path.join(ROOT, DATASET_CFG),
                               "--config-file", os.path.join(ROOT, config), "--output-dir", outs[name],
                               *map(fill, flags), *map(fill, opts), "MODEL.BACKBONE.NAME", tiny_clip_path,
                               *kd_teacher, *scale_for(name, trainer, config)])
    return base, outs, codes


@pytest.mark.parametrize("name", [c[0] for c in COMMANDS])
def test_reference_command_runs(replayed, name):
    base, outs, codes = replayed
    with open(os.path.join(outs[name], "log.txt")) as f:
        log = f.read()
    assert codes[name] == 0, log[-2000:]
    opts = next(c[4] for c in COMMANDS if c[0] == name)
    flags = next(c[3] for c in COMMANDS if c[0] == name)
    authors = any(o.startswith("KD.") for o in opts)
    # the authors' trainers test after training only with KD.IS_TEST True, as theirs; the others always
    tested = "--eval-only" in flags or not authors or "KD.IS_TEST" in opts
    assert ("=> result" in log) == tested


def test_replayed_runs_are_the_methods_they_name(replayed):
    base, outs, _ = replayed
    def trainer_of(name, module):
        return torch.load(os.path.join(outs[name], module, "model.pth.tar-1"), weights_only=True)["meta"]["trainer"]

    assert trainer_of("lamm", "label_learner") == "LAMM"
    assert trainer_of("vpt_base", "prompt_learner") == "VPT"
    for name in ("promptkd_base2new", "promptkd_xd"):
        student = torch.load(os.path.join(outs[name], "VLPromptLearner", "model.pth.tar-1"), weights_only=True)
        assert student["meta"]["trainer"] == "PromptKD"
        assert set(student["state_dict"]) >= {"prompts.ctx", "projector.0.weight", "projector.3.weight"}
    assert trainer_of("maple_lamm", "label_learner") == "LAMM_MaPLe"
    assert trainer_of("caspl_phase1", "BoostPrompts") == "CasPL"
    with open(os.path.join(outs["caspl_phase1"], "log.txt")) as f:
        assert "KD.IS_TEST False (their default) as TEST.NO_TEST True" in f.read()
    boost = torch.load(os.path.join(outs["caspl_phase1_xd"], "BoostPrompts", "model.pth.tar-1"), weights_only=True)
    assert boost["meta"]["boost"]["n_ctx_text"] == 4 and boost["meta"]["boost"]["depth_text"] == 1
    phase2 = torch.load(os.path.join(outs["caspl_maple_xd"], "MultiModalPromptLearner", "model.pth.tar-1"),
                        weights_only=True)
    assert phase2["meta"]["boost_ckpt"].endswith(os.path.join("caspl_phase1_xd", "BoostPrompts", "model.pth.tar-1"))
    # the authors' result files: <RESULT_PATH><name>/<subsample>/<dataset>/seed<seed>/<accuracy>.txt
    results = os.path.join(str(base / "results"), "student")
    assert sorted(os.listdir(results)) == ["all", "base", "new"]
    assert all(len(os.listdir(os.path.join(results, s, "EuroSAT", "seed1"))) == 1 for s in ("all", "base", "new"))


def test_authors_phase1_configs_are_caspl_boost_configs():
    """configs/trainers/CasPL/ (the authors' layout) and CasPL_Boost/ (caspl's) hold the same runs."""
    from caspl.config import get_cfg_default, merge_file
    from trainers.caspl_authors import authors_cfg

    folder = os.path.join(ROOT, "configs/trainers/CasPL")
    assert sorted(os.listdir(folder)) == sorted(os.listdir(os.path.join(ROOT, "configs/trainers/CasPL_Boost")))
    for name in os.listdir(folder):
        theirs, ours = get_cfg_default(), get_cfg_default()
        merge_file(theirs, os.path.join(folder, name))
        merge_file(ours, os.path.join(ROOT, "configs/trainers/CasPL_Boost", name))
        theirs.TRAINER.NAME, ours.TRAINER.NAME = "CasPL", "CasPL_Boost"
        theirs, ours = authors_cfg(theirs, 1), authors_cfg(ours, 1)
        for key in ("N_CTX_TEXT", "N_CTX_VISION", "PROMPT_DEPTH_TEXT", "PROMPT_DEPTH_VISION", "PREC", "TEACHER"):
            assert theirs.TRAINER.CASPL[key] == ours.TRAINER.CASPL[key], (name, key)
        if ours.TRAINER.CASPL.N_CTX_TEXT <= 4:
            assert theirs.TRAINER.CASPL.CTX_INIT == ours.TRAINER.CASPL.CTX_INIT, name
        assert theirs.OPTIM == ours.OPTIM and theirs.DATALOADER == ours.DATALOADER and theirs.INPUT == ours.INPUT
