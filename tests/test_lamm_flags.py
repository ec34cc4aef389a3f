"""The LAMM repository's command lines (`--trainer CoOp --triplet-loss [--origin-clip] --shots K`,
`--trainer MaPLe --triplet-loss`) run caspl's LAMM trainers with the weight 1/K, the same
computation as caspl's own names; plain `--trainer CoOp` stays CoOp."""
import os

import pytest
import torch

from caspl.testing import make_eurosat
from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

COOP_CFG = "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_eurosat(str(tmp_path_factory.mktemp("lamm_flags")), per_class=4)


def train(root, clip_path, out, trainer, config, *args):
    return run_cli(["--root", root, "--seed", "1", "--trainer", trainer,
                    "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                    "--config-file", os.path.join(ROOT, config), "--output-dir", out, *args,
                    "MODEL.BACKBONE.NAME", clip_path, "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
                    "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2", "TEST.NO_TEST", "True"])


def saved(out, module):
    ckpt = torch.load(os.path.join(out, module, "model.pth.tar-1"), weights_only=True)
    return ckpt["meta"]["trainer"], ckpt["state_dict"]


def log(out):
    with open(os.path.join(out, "log.txt")) as f:
        return f.read()


@pytest.mark.parametrize("given,flags,trainer,config,own_opts", [
    ("CoOp", ["--triplet-loss", "--origin-clip", "--shots", "4"], "LAMM",
     "configs/trainers/LAMM/vit_b16_ep50_ctxv1.yaml", ["TRAINER.LAMM.WC_WEIGHT", "0.25"]),
    ("CoOp", ["--triplet-loss"], "LAMM_CoOp", "configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml",
     ["TRAINER.LAMM.WC_WEIGHT", "1.0"]),
    ("MaPLe", ["--triplet-loss", "--shots", "16"], "LAMM_MaPLe",
     "configs/trainers/LAMM_MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", ["TRAINER.LAMM.WC_WEIGHT", "0.0625"]),
    ("CoOp", ["--origin-clip"], "LAMM", "configs/trainers/LAMM/vit_b16_ep50_ctxv1.yaml",
     ["TRAINER.LAMM.HIERARCHICAL_LOSS", "False"]),
])
def test_lamm_repository_flags_run_the_lamm_trainers(root, tiny_clip_path, tmp_path, given, flags, trainer, config,
                                                     own_opts):
    depth = ["TRAINER.MAPLE.PROMPT_DEPTH", "2"] if given == "MaPLe" else []
    source = {"CoOp": COOP_CFG, "MaPLe": "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"}[given]
    theirs, ours = str(tmp_path / "theirs"), str(tmp_path / "ours")
    assert train(root, tiny_clip_path, theirs, given, source, *flags, *depth) == 0
    assert train(root, tiny_clip_path, ours, trainer, config, *own_opts, *depth) == 0
    name, labels = saved(theirs, "label_learner")
    assert name == trainer
    assert all(torch.equal(v, saved(ours, "label_learner")[1][k]) for k, v in labels.items())
    shots = flags[flags.index("--shots") + 1] if "--shots" in flags else "1"
    line = next(x for x in log(theirs).splitlines() if x.startswith("LAMM repository flags:"))
    assert f"runs caspl's {trainer}" in line and f"WC_WEIGHT 1/{shots} = {1 / int(shots):g}" in line


def test_plain_coop_stays_coop(root, tiny_clip_path, tmp_path):
    out = str(tmp_path / "o")
    assert train(root, tiny_clip_path, out, "CoOp", COOP_CFG) == 0
    assert saved(out, "prompt_learner")[0] == "CoOp" and not os.path.isdir(os.path.join(out, "label_learner"))
    assert "LAMM repository flags" not in log(out)


@pytest.mark.parametrize("given,flags,message", [
    ("CoOp", ["--random-init"], "--random-init (the LAMM repository's random label initialisation) is not supported"),
    ("CoOp", ["--shots", "4"], "--shots sets only LAMM's weight 1/K"),
    ("MaPLe", ["--origin-clip"], "the LAMM repository's flags run LAMM on CoOp"),
    ("IVLP", ["--triplet-loss"], "--triplet-loss with --trainer IVLP"),
])
def test_lamm_flags_that_have_no_meaning_are_refused(root, tiny_clip_path, tmp_path, given, flags, message, capsys):
    assert train(root, tiny_clip_path, str(tmp_path / "o"), given, COOP_CFG, *flags) == 2
    assert message in capsys.readouterr().err
