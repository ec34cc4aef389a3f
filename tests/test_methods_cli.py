"""CoCoOp, IVLP, MaPLe, PromptSRC and CoOp through the command line (caspl.cli.main, in-process):
base-to-new training and evaluation, few-shot train/eval round trips, and the clear one-line
errors a user gets for method keys that cannot work with the backbone."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from caspl.testing import make_eurosat
from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

# method -> (trainer config, checkpoint folder, overrides the 2-layer tiny CLIP needs)
METHODS = {
    "CoCoOp": ("CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", "prompt_learner", []),
    "IVLP": ("IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml", "VLPromptLearner",
             ["TRAINER.IVLP.PROMPT_DEPTH_VISION", "2", "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "2"]),
    "MaPLe": ("MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", "MultiModalPromptLearner", ["TRAINER.MAPLE.PROMPT_DEPTH", "2"]),
    "PromptSRC": ("PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", "VLPromptLearner",
                  ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "2", "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "2"]),
    "CoOp": ("CoOp/vit_b16_ep50_ctxv1.yaml", "prompt_learner", []),
}
CONFIG_NAMES = {"CoCoOp": "COCOOP", "IVLP": "IVLP", "MaPLe": "MAPLE", "PromptSRC": "PROMPTSRC", "CoOp": "COOP"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_eurosat(str(tmp_path_factory.mktemp("methods_data")), per_class=10)


def argv(method, root, clip_path, out, *opts, depth_fix=True, extra=()):
    config, _, fixes = METHODS[method]
    return ["--root", root, "--seed", "1", "--trainer", method,
            "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
            "--config-file", os.path.join(ROOT, "configs/trainers", config), "--output-dir", out, *extra,
            "MODEL.BACKBONE.NAME", clip_path, "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
            "OPTIM.MAX_EPOCH", "2", *(fixes if depth_fix else []), *opts]


cli = run_cli


def read_log(out):
    with open(os.path.join(out, "log.txt")) as f:
        return f.read()


def result_block(log):
    """The trailing `=> result` block as {field: value}; asserts the log ends with it."""
    tail = log.strip().splitlines()[-6:]
    assert tail[0] == "=> result", tail
    assert [line.split(":")[0] for line in tail[1:]] == ["* total", "* correct", "* accuracy", "* error", "* macro_f1"]
    return {line[2:].split(":")[0]: line.split(": ", 1)[1] for line in tail[1:]}


def accuracy_line(log):
    return [line for line in log.splitlines() if line.startswith("* accuracy:")][-1]


def check_checkpoint(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    assert ckpt["epoch"] == 2 and state
    frozen = [k for k in state if k.startswith(("clip", "visual", "transformer"))]
    assert not frozen, f"frozen CLIP weights in the checkpoint: {frozen[:5]}"
    assert sum(v.numel() for v in state.values()) < 1e6
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("method", list(METHODS))
def test_base_to_new_from_the_cli(tmp_path, data_root, tiny_clip_path, method):
    train_out, eval_out = str(tmp_path / "train"), str(tmp_path / "eval")
    opts = ["DATASET.NUM_SHOTS", "2"]
    assert cli(argv(method, data_root, tiny_clip_path, train_out, *opts, "DATASET.SUBSAMPLE_CLASSES", "base")) == 0
    log = read_log(train_out)
    assert "Finish training" in log
    assert result_block(log)["total"] == "15"  # 5 base classes x 3 test images
    folder = os.path.join(train_out, METHODS[method][1])
    ckpt = os.path.join(folder, "model.pth.tar-2")
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-2"]
    check_checkpoint(ckpt)

    assert cli(argv(method, data_root, tiny_clip_path, eval_out, *opts, "DATASET.SUBSAMPLE_CLASSES", "new",
                    extra=["--eval-only", "--model-dir", train_out, "--load-epoch", "2"])) == 0
    log = read_log(eval_out)
    assert f"Loaded {ckpt} (epoch 2)" in log
    assert "Finish training" not in log
    assert result_block(log)["total"] == "15"  # 5 new classes x 3 test images


@pytest.mark.parametrize("method", list(METHODS))
def test_few_shot_train_then_eval_only_prints_the_same_accuracy(tmp_path, data_root, tiny_clip_path, method):
    train_out, eval_out = str(tmp_path / "train"), str(tmp_path / "eval")
    assert cli(argv(method, data_root, tiny_clip_path, train_out, "DATASET.NUM_SHOTS", "1",
                    "TRAIN.CHECKPOINT_FREQ", "1")) == 0  # keep epoch 1 too
    trained = read_log(train_out)
    assert result_block(trained)["total"] == "30"  # all 10 classes x 3 test images
    # every learnable tensor gets a gradient: none is the same after epoch 2 as after epoch 1
    states = [torch.load(os.path.join(train_out, METHODS[method][1], f"model.pth.tar-{e}"), map_location="cpu",
                         weights_only=True)["state_dict"] for e in (1, 2)]
    assert list(states[0]) == list(states[1])
    unchanged = [k for k, v in states[0].items() if v.is_floating_point() and torch.equal(v, states[1][k])]
    assert not unchanged, f"not trained: {unchanged}"
    assert cli(argv(method, data_root, tiny_clip_path, eval_out, "DATASET.NUM_SHOTS", "1",
                    extra=["--eval-only", "--model-dir", train_out, "--load-epoch", "2"])) == 0
    evaluated = read_log(eval_out)
    assert "Loaded " in evaluated and result_block(evaluated)["total"] == "30"
    assert accuracy_line(evaluated) == accuracy_line(trained)

    # a run killed after epoch 1 (epoch 2's checkpoint never written) resumes to the same model
    resumed = str(tmp_path / "resumed")
    shutil.copytree(train_out, resumed, ignore=shutil.ignore_patterns("tensorboard", "log.txt", "results.json"))
    folder = os.path.join(resumed, METHODS[method][1])
    os.remove(os.path.join(folder, "model.pth.tar-2"))
    with open(os.path.join(folder, "checkpoint"), "w") as f:
        f.write("model.pth.tar-1\n")
    assert cli(argv(method, data_root, tiny_clip_path, resumed, "DATASET.NUM_SHOTS", "1",
                    "TRAIN.CHECKPOINT_FREQ", "1")) == 0
    log = read_log(resumed)
    assert "Resuming from" in log and accuracy_line(log) == accuracy_line(trained)
    final = torch.load(os.path.join(folder, "model.pth.tar-2"), map_location="cpu", weights_only=True)["state_dict"]
    assert list(final) == list(states[1]) and all(torch.equal(final[k], states[1][k]) for k in final)


def test_cocoop_evaluates_in_chunks_with_the_same_result(tmp_path, data_root, tiny_clip_path):
    """MAX_TEXT_SEQUENCES 10 with 10 classes: one image per text pass; same metrics as one pass."""
    records = []
    for limit in ("20000", "10"):
        out = str(tmp_path / limit)
        assert cli(argv("CoCoOp", data_root, tiny_clip_path, out, "TRAINER.COCOOP.MAX_TEXT_SEQUENCES", limit,
                        extra=["--eval-only"])) == 0
        with open(os.path.join(out, "results.json")) as f:
            records.append(json.load(f))
    assert records[0]["total"] == 30 and records[0] == records[1]


# (method, options, texts the one error line must contain)
ERRORS = {
    **{f"unknown_key_{m}": (m, [f"TRAINER.{CONFIG_NAMES[m]}.N_CTXX", "3"],
                            [f"unknown config key TRAINER.{CONFIG_NAMES[m]}.N_CTXX"]) for m in METHODS},
    **{f"fp8_{m}": (m, [f"TRAINER.{CONFIG_NAMES[m]}.PREC", "fp8"], [f"TRAINER.{CONFIG_NAMES[m]}.PREC", "fp8"])
       for m in METHODS},
    "maple_depth": ("MaPLe", ["TRAINER.MAPLE.PROMPT_DEPTH", "9"],
                    ["TRAINER.MAPLE.PROMPT_DEPTH", "9", "encoder has 2 layers"]),
    "promptsrc_text_depth": ("PromptSRC", ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "9"],
                             ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "9", "text encoder has 2 layers"]),
    "promptsrc_vision_depth": ("PromptSRC", ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "9"],
                               ["TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "9", "image encoder has 2 layers"]),
    "ivlp_text_depth": ("IVLP", ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "3"],
                        ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "3", "text encoder has 2 layers"]),
    "ivlp_vision_depth": ("IVLP", ["TRAINER.IVLP.PROMPT_DEPTH_VISION", "3"],
                          ["TRAINER.IVLP.PROMPT_DEPTH_VISION", "3", "image encoder has 2 layers"]),
    "ivlp_config_depth_9": ("IVLP", None, ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "9", "2 layers"]),
    "cocoop_text_sequences": ("CoCoOp", ["DATALOADER.TRAIN_X.BATCH_SIZE", "64",
                                         "TRAINER.COCOOP.MAX_TEXT_SEQUENCES", "100"],
                              ["TRAINER.COCOOP.MAX_TEXT_SEQUENCES", "64 x 10", "100"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_method_options_are_one_clear_line(tmp_path, data_root, tiny_clip_path, capsys, case):
    method, opts, expect = ERRORS[case]
    out = str(tmp_path / "out")
    args = argv(method, data_root, tiny_clip_path, out, "DATASET.NUM_SHOTS", "1", *(opts or []),
                depth_fix=opts is not None)
    assert cli(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expect:
        assert text in lines[0], (text, lines[0])
    assert not os.path.isdir(os.path.join(out, METHODS[method][1]))  # nothing trained or saved


def test_depth_error_through_train_py(tmp_path, data_root, tiny_clip_path):
    """The same message from a real `python train.py` run: one stderr line, no traceback."""
    args = argv("MaPLe", data_root, tiny_clip_path, str(tmp_path / "out"), "DATASET.NUM_SHOTS", "1",
                "TRAINER.MAPLE.PROMPT_DEPTH", "9")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: TRAINER.MAPLE.PROMPT_DEPTH is 9"), proc.stderr
    assert "encoder has 2 layers" in lines[0] and "Traceback" not in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def ivlp_run(tmp_path_factory, data_root, tiny_clip_path):
    out = str(tmp_path_factory.mktemp("ivlp_run"))
    assert cli(argv("IVLP", data_root, tiny_clip_path, out, "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1")) == 0
    return out


@pytest.mark.parametrize("method,opts,epoch,expect", [
    ("PromptSRC", [], "1", "was written by trainer IVLP, not PromptSRC"),
    ("IVLP", ["TRAINER.IVLP.N_CTX_TEXT", "2"], "1", "text.ctx has shape (4, 64) but this run needs (2, 64)"),
    ("IVLP", [], "5", "checkpoint not found: "),
])
def test_loading_a_mismatched_checkpoint_is_one_clear_line(tmp_path, data_root, tiny_clip_path, ivlp_run, capsys,
                                                          method, opts, epoch, expect):
    args = argv(method, data_root, tiny_clip_path, str(tmp_path / "eval"), "OPTIM.MAX_EPOCH", "1", *opts,
                extra=["--eval-only", "--model-dir", ivlp_run, "--load-epoch", epoch])
    assert cli(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines


@pytest.mark.parametrize("source,target", [("make_imagenet", "make_imagenet_r"), ("make_imagenet", "make_dtd")])
def test_cross_dataset_and_domain_generalisation_evaluation(tmp_path, tiny_clip_path, source, target):
    """Train on one dataset (ImageNet), evaluate its prompts on another dataset's config with
    --eval-only --model-dir (the cross-dataset and DG protocols)."""
    import miniatures

    root = str(tmp_path / "data")
    getattr(miniatures, source)(root)
    getattr(miniatures, target)(root)
    yaml = {"make_imagenet": "imagenet", "make_imagenet_r": "imagenet_r", "make_dtd": "dtd"}
    common = ["--root", root, "--seed", "1", "--trainer", "MaPLe",
              "--config-file",
              os.path.join(ROOT, "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml")]
    opts = ["MODEL.BACKBONE.NAME", tiny_clip_path, "INPUT.SIZE", "(32, 32)", "TRAINER.MAPLE.PROMPT_DEPTH", "2",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2"]
    train_out, eval_out = str(tmp_path / "train"), str(tmp_path / "eval")
    assert cli(common + ["--dataset-config-file", os.path.join(ROOT, f"configs/datasets/{yaml[source]}.yaml"),
                         "--output-dir", train_out] + opts) == 0
    assert cli(common + ["--dataset-config-file", os.path.join(ROOT, f"configs/datasets/{yaml[target]}.yaml"),
                         "--output-dir", eval_out, "--eval-only", "--model-dir", train_out, "--load-epoch", "2"]
               + opts) == 0
    log = open(os.path.join(eval_out, "log.txt")).read()
    assert "Loaded " in log and "* accuracy:" in log
