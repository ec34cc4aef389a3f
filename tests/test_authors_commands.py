"""The CasPL authors' own commands: phase 1 as `--trainer CasPL` with TRAINER.IVLP.* and KD.*
keys, phase 2 with `--model-dir <phase 1> --load-epoch N` and KD.* keys. Each runs the same
computation as caspl's own names, or is refused with one line."""
import os

import pytest
import torch

from caspl.testing import make_eurosat
from conftest import ROOT, run_cli
from test_caspl import teacher_path  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

# an authors'-style phase-1 config: the prompt sizes under TRAINER.IVLP (depth 2: the tiny CLIP has 2 layers)
AUTHORS_BOOST_YAML = """
DATALOADER:
  TRAIN_X:
    BATCH_SIZE: 4
OPTIM:
  NAME: "sgd"
  LR: 0.0025
  MAX_EPOCH: 1
  LR_SCHEDULER: "cosine"
TRAINER:
  {section}:
    N_CTX_VISION: 3
    N_CTX_TEXT: 4
    CTX_INIT: "a photo of a"
    PREC: "fp16"
    PROMPT_DEPTH_VISION: 2
    PROMPT_DEPTH_TEXT: 2
"""
PHASE2_CFG = os.path.join(ROOT, "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml")
PHASE2 = ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2",
          "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base"]


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_clip_path):
    base = tmp_path_factory.mktemp("authors")
    root = make_eurosat(str(base / "data"), per_class=4)
    for section in ("IVLP", "CASPL"):  # the authors' layout, and the same values as caspl's own keys
        (base / f"{section}.yaml").write_text(AUTHORS_BOOST_YAML.format(section=section))
    return base, root, str(base / "IVLP.yaml")


def train(root, clip_path, out, trainer, config, *opts, extra=()):
    return run_cli(["--root", root, "--seed", "1", "--trainer", trainer,
                    "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                    "--config-file", config, "--output-dir", out, *extra,
                    "MODEL.BACKBONE.NAME", clip_path, "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", *opts])


def log(out):
    with open(os.path.join(out, "log.txt")) as f:
        return f.read()


def final_state(out, module, epoch=1):
    return torch.load(os.path.join(out, module, f"model.pth.tar-{epoch}"), weights_only=True)["state_dict"]


def last_line(out):
    return log(out).strip().splitlines()[-1]


@pytest.fixture(scope="module")
def phase1(setting, tiny_clip_path, teacher_path):  # noqa: F811
    """The authors' phase-1 command and caspl's own, side by side."""
    base, root, config = setting
    authors, own = str(base / "authors_p1"), str(base / "own_p1")
    assert train(root, tiny_clip_path, authors, "CasPL", config, "KD.FIRST_TRAIN", "True", "KD.SECOND_TRAIN", "False",
                 "KD.BACKBONE_NAME", teacher_path, "KD.TEMPERATURE", "2") == 0
    assert train(root, tiny_clip_path, own, "CasPL_Boost", str(base / "CASPL.yaml"), "TRAINER.CASPL.TEACHER",
                 teacher_path, "TRAINER.CASPL.TEMPERATURE", "2") == 0
    return authors, own


def test_authors_phase1_is_caspl_boost_with_their_keys(phase1, tiny_clip):
    authors, own = phase1
    a, o = final_state(authors, "BoostPrompts"), final_state(own, "BoostPrompts")
    assert a["text.ctx"].shape == (4, 64) and a["vision.ctx"].shape == (3, 64)
    assert a["text.deep_ctx"].shape == (1, 4, 64) and a["vision.deep_ctx"].shape == (1, 3, 64)
    assert a.keys() == o.keys() and all(torch.equal(a[k], o[k]) for k in a)  # the same computation
    text = log(authors)
    assert "CasPL authors' keys (--trainer CasPL, phase 1): read TRAINER.IVLP.* as TRAINER.CASPL." in text
    assert "KD.BACKBONE_NAME as TRAINER.CASPL.TEACHER" in text and "KD.TEMPERATURE as TRAINER.CASPL.TEMPERATURE" in text


def test_four_token_phrase_initialises_the_text_boosting_tokens(setting, tiny_clip_path, teacher_path,  # noqa: F811
                                                                tiny_clip):
    from caspl.clip import encode
    from conftest import build_trainer

    base, root, _ = setting
    t = build_trainer(root, tiny_clip_path, str(base / "init"), trainer="CasPL_Boost",
                      config="configs/trainers/CasPL_Boost/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml",
                      TRAINER__CASPL__TEACHER=teacher_path, TRAINER__CASPL__N_CTX_TEXT=4,
                      TRAINER__CASPL__CTX_INIT="a_photo_of_a", TRAINER__CASPL__PROMPT_DEPTH_TEXT=2,
                      TRAINER__CASPL__PROMPT_DEPTH_VISION=2)
    words = tiny_clip.token_embedding.weight[encode("a photo of a")]
    assert torch.equal(t.boost.text.ctx.detach(), words)


@pytest.mark.parametrize("authors", [False, True])  # caspl's names first: the authors' run is compared with it
def test_authors_phase2_reads_the_boost_from_model_dir(setting, phase1, tiny_clip_path, authors, tmp_path):
    base, root, _ = setting
    out = str(tmp_path / "p2")
    if authors:
        results = str(tmp_path / "results") + "/"
        code = train(root, tiny_clip_path, out, "CasPL_PromptSRC", PHASE2_CFG, *PHASE2, "KD.IS_TEST", "True",
                     "KD.FIRST_TRAIN", "False", "KD.SECOND_TRAIN", "True", "KD.DIR_NAME", "student&1",
                     "KD.RESULT_PATH", results, "KD.N_CTX_VISION", "3", "KD.N_CTX_TEXT", "4",
                     extra=["--model-dir", phase1[0], "--load-epoch", "1"])
    else:
        code = train(root, tiny_clip_path, out, "CasPL_PromptSRC", PHASE2_CFG, *PHASE2,
                     "TRAINER.CASPL.BOOST_CKPT", phase1[1])
    assert code == 0
    state = final_state(out, "VLPromptLearner")
    if authors:
        own = final_state(str(base / "own_p2"), "VLPromptLearner")
        assert all(torch.equal(state[k], own[k]) for k in own)  # the same computation as caspl's names
        text = log(out)
        assert "boosting prompts from --model-dir" in text and "--load-epoch 1" in text
        accuracy = float(next(line for line in text.splitlines() if line.startswith("* accuracy:")).split()[2][:-1])
        folder = os.path.join(str(tmp_path / "results"), "student", "base", "EuroSAT", "seed1")
        assert os.listdir(folder) == [f"{accuracy:.1f}.txt"]
    else:
        os.makedirs(str(base / "own_p2"), exist_ok=True)
        os.replace(os.path.join(out, "VLPromptLearner"), str(base / "own_p2" / "VLPromptLearner"))


def test_a_phase1_checkpoint_of_the_authors_code_serves_phase2(setting, phase1, tiny_clip_path, tmp_path):
    """Their phase-1 run (folder CasPL/, their key names, a Dassl checkpoint holding the whole
    model) read through --model-dir --load-epoch: the same phase 2 as from caspl's own."""
    _, root, _ = setting
    ours = final_state(phase1[1], "BoostPrompts")
    theirs = {"prompt_learner_teacher.ctx": ours["text.ctx"].half(), "image_encoder.VPT_FIRST": ours["vision.ctx"],
              "text_encoder.transformer.resblocks.1.VPT_shallow_FIRST": ours["text.deep_ctx"][0],
              "image_encoder.transformer.resblocks.1.VPT_shallow_FIRST": ours["vision.deep_ctx"][0],
              "image_encoder.VPT": torch.zeros(3, 64)}  # their untrained second-stage slot
    for tower in ("text_encoder", "image_encoder"):  # the frozen student is in their checkpoint too
        theirs.update({f"{tower}.transformer.resblocks.{i}.ln_1.weight": torch.ones(64) for i in range(2)})
    folder = tmp_path / "their_p1" / "CasPL"
    folder.mkdir(parents=True)
    torch.save({"state_dict": theirs, "epoch": 1, "optimizer": {}, "scheduler": {}, "val_result": None},
               str(folder / "model.pth.tar-1"))
    (folder / "checkpoint").write_text("model.pth.tar-1\n")
    out = str(tmp_path / "p2")
    assert train(root, tiny_clip_path, out, "CasPL_PromptSRC", PHASE2_CFG, *PHASE2, "KD.FIRST_TRAIN", "False",
                 "KD.SECOND_TRAIN", "True", extra=["--model-dir", str(tmp_path / "their_p1"), "--load-epoch", "1"]) == 0
    assert "is a phase-1 checkpoint of the authors' code" in log(out)
    ckpt = torch.load(os.path.join(out, "VLPromptLearner", "model.pth.tar-1"), weights_only=True)
    used = ckpt["extra_state"]["caspl_boost"]
    assert used["state_dict"].keys() == ours.keys()
    assert torch.equal(used["state_dict"]["text.ctx"], ours["text.ctx"].half().float())  # stored in fp16 by them
    assert all(torch.equal(used["state_dict"][k], ours[k]) for k in ours if k != "text.ctx")
    assert {k: used["meta"][k] for k in ("n_ctx_text", "n_ctx_vision", "depth_text", "depth_vision")} == \
        {"n_ctx_text": 4, "n_ctx_vision": 3, "depth_text": 2, "depth_vision": 2}


@pytest.mark.parametrize("trainer,opts,message", [
    ("CasPL_Boost", [], "TRAINER.IVLP.* is set (the CasPL authors' phase-1 layout), which CasPL_Boost does not read"),
    ("CasPL", ["KD.FIRST_TRAIN", "False", "KD.SECOND_TRAIN", "True"], "KD.FIRST_TRAIN False: that is phase 2"),
    ("CasPL", ["KD.USE_DATASET_LIST", "1"], "trains on the test split"),
    ("CasPL", ["KD.N_CTX_TEXT", "8"], "phase 1 does not read it (its prompt sizes come from TRAINER.IVLP.*)"),
    ("CasPL", ["KD.PREC", "fp32"], "KD.PREC 'fp32': phase 1 does not read it"),
    ("CasPL", ["TRAINER.CASPL.N_CTX_TEXT", "2"], "--trainer CasPL (the authors' name) sizes the boosting prompts from"),
    ("CoOp", ["KD.IS_TEST", "True"],
     "KD.IS_TEST True (set on the command line, default None; it belongs to the CasPL trainers (CasPL, CasPL_Boost, "
     "CasPL_<X>))"),
])
def test_authors_keys_caspl_does_not_follow_are_refused(setting, tiny_clip_path, teacher_path, trainer,  # noqa: F811
                                                         opts, message, tmp_path):
    _, root, config = setting
    out = str(tmp_path / "o")
    assert train(root, tiny_clip_path, out, trainer, config, "KD.BACKBONE_NAME" if trainer != "CoOp" else "OPTIM.LR",
                 teacher_path if trainer != "CoOp" else "0.002", *opts) == 2
    assert message in last_line(out)
    assert not any(os.path.isdir(os.path.join(out, d)) for d in os.listdir(out))  # nothing trained


@pytest.mark.parametrize("opts,message", [
    (["KD.N_CTX_TEXT", "8"], "N_CTX_TEXT 8 (set as KD.N_CTX_TEXT (on the command line)) does not match the boosting"),
    (["KD.PROMPT_DEPTH_VISION", "1"], "(set as KD.PROMPT_DEPTH_VISION (on the command line)) does not match the"),
    (["KD.TEMPERATURE", "3"], "TEMPERATURE 3.0 (set as KD.TEMPERATURE (on the command line)) does not match the"),
    (["KD.USE_IVLP", "False"], "caspl always puts the boosting tokens in both encoders"),
])
def test_phase2_keys_that_disagree_are_refused(setting, phase1, tiny_clip_path, opts, message, tmp_path):
    _, root, _ = setting
    out = str(tmp_path / "o")
    assert train(root, tiny_clip_path, out, "CasPL_PromptSRC", PHASE2_CFG, *PHASE2, *opts,
                 extra=["--model-dir", phase1[0], "--load-epoch", "1"]) == 2
    assert message in last_line(out)


def test_model_dir_when_training_another_method_is_refused(setting, tiny_clip_path, tmp_path):
    _, root, _ = setting
    out = str(tmp_path / "o")
    assert train(root, tiny_clip_path, out, "CoOp", os.path.join(ROOT, "configs/trainers/CoOp/vit_b16_ep50.yaml"),
                 extra=["--model-dir", str(tmp_path)]) == 2
    assert "--model-dir is read with --eval-only; CoOp does not train from it" in last_line(out)
