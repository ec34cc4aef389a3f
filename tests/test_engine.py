"""Engine pieces: LR schedule, optimiser, evaluator, config merging, atomic checkpoint writes."""
import ast
import glob
import math
import os

import pytest
import torch
import yaml

import datasets  # noqa: F401  (registers the dataset plugins)
import trainers  # noqa: F401  (registers TRAINER.<NAME> config keys)
from caspl import CasplError
from caspl.config import get_cfg_default, merge_file, merge_opts
from caspl.engine.optim import EpochLR, build_optimizer, set_lr
from caspl.evaluation.classification import Classification, macro_f1
from caspl.utils import io as caspl_io
from caspl.utils.io import atomic_save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def optim_cfg(**kw):
    c = get_cfg_default().OPTIM
    for k, v in kw.items():
        setattr(c, k, v)
    return c


# ----------------------------------------------------------------------------- EpochLR

def coop_cosine(max_epoch):
    return optim_cfg(NAME="sgd", LR=0.0025, MAX_EPOCH=max_epoch, LR_SCHEDULER="cosine",
                     WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5)


def test_cosine_constant_warmup_known_values():
    sched = EpochLR(coop_cosine(5))
    got = [sched.lr(e) for e in range(5)]
    expected = [1e-5, 2.5e-3, 2.26e-3, 1.64e-3, 8.6e-4]
    for g, x in zip(got, expected):
        assert g == pytest.approx(x, rel=5e-3)


@pytest.mark.parametrize("max_epoch", [5, 20, 50])
def test_cosine_constant_warmup_exact_formula(max_epoch):
    sched = EpochLR(coop_cosine(max_epoch))
    assert sched.lr(0) == 1e-5
    for e in range(1, max_epoch):
        assert sched.lr(e) == pytest.approx(0.0025 * (1 + math.cos(math.pi * (e - 1) / max_epoch)) / 2,
                                             rel=1e-12, abs=0)
    assert sched.lr(1) == pytest.approx(0.0025, rel=1e-12)


def test_cosine_20_epochs_last_epoch():
    assert EpochLR(coop_cosine(20)).lr(19) == pytest.approx(6.1e-5, rel=5e-3)


def test_cosine_without_warmup():
    sched = EpochLR(optim_cfg(LR=0.1, MAX_EPOCH=4, LR_SCHEDULER="cosine", WARMUP_EPOCH=-1))
    assert [sched.lr(e) for e in range(4)] == pytest.approx([0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05,
                                                            0.1 * (1 + math.cos(3 * math.pi / 4)) / 2])


def test_single_step():
    sched = EpochLR(optim_cfg(LR=1.0, LR_SCHEDULER="single_step", STEPSIZE=(3,), GAMMA=0.5, MAX_EPOCH=9,
                              WARMUP_EPOCH=-1))
    assert [sched.lr(e) for e in range(9)] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25])


def test_single_step_nonpositive_stepsize_means_max_epoch():
    sched = EpochLR(optim_cfg(LR=0.2, LR_SCHEDULER="single_step", STEPSIZE=(-1,), GAMMA=0.1, MAX_EPOCH=6,
                              WARMUP_EPOCH=-1))
    assert [sched.lr(e) for e in range(6)] == pytest.approx([0.2] * 6)
    assert sched.lr(6) == pytest.approx(0.02)


def test_single_step_uses_last_stepsize_like_dassl():
    sched = EpochLR(optim_cfg(LR=1.0, LR_SCHEDULER="single_step", STEPSIZE=(2, 4), GAMMA=0.1, MAX_EPOCH=10,
                              WARMUP_EPOCH=-1))
    assert [sched.lr(e) for e in range(9)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01])


def test_multi_step():
    sched = EpochLR(optim_cfg(LR=0.5, LR_SCHEDULER="multi_step", STEPSIZE=(2, 5), GAMMA=0.1, MAX_EPOCH=8,
                              WARMUP_EPOCH=-1))
    assert [sched.lr(e) for e in range(8)] == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.05, 0.005, 0.005, 0.005])


def test_linear_warmup_then_cosine():
    sched = EpochLR(optim_cfg(LR=0.01, LR_SCHEDULER="cosine", MAX_EPOCH=10, WARMUP_EPOCH=2,
                              WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-5))
    assert sched.lr(0) == 1e-5
    assert sched.lr(1) == pytest.approx(0.005)
    assert sched.lr(2) == pytest.approx(0.01)
    assert sched.lr(3) == pytest.approx(0.01 * (1 + math.cos(math.pi / 10)) / 2)


def test_linear_warmup_then_multi_step_recounts():
    sched = EpochLR(optim_cfg(LR=1.0, LR_SCHEDULER="multi_step", STEPSIZE=(2,), GAMMA=0.1, MAX_EPOCH=8,
                              WARMUP_EPOCH=3, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-4))
    assert [sched.lr(e) for e in range(7)] == pytest.approx([1e-4, 1 / 3, 2 / 3, 1, 1, 0.1, 0.1])


@pytest.mark.parametrize("name", ["cos", "step", "", "Cosine"])
def test_unknown_scheduler_raises(name):
    with pytest.raises(CasplError, match="LR_SCHEDULER"):
        EpochLR(optim_cfg(LR_SCHEDULER=name))


def test_unknown_warmup_type_raises():
    with pytest.raises(CasplError, match="WARMUP_TYPE"):
        EpochLR(optim_cfg(LR_SCHEDULER="cosine", WARMUP_EPOCH=1, WARMUP_TYPE="exp"))
    EpochLR(optim_cfg(LR_SCHEDULER="cosine", WARMUP_EPOCH=0, WARMUP_TYPE="exp"))  # no warmup: not checked


# ----------------------------------------------------------------------------- build_optimizer

def test_build_sgd_from_cfg_only_trainable_params():
    trainable = torch.nn.Parameter(torch.zeros(3))
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    other = torch.nn.Parameter(torch.ones(4))
    c = optim_cfg(NAME="sgd", LR=0.0125, MOMENTUM=0.8, WEIGHT_DECAY=1e-3, SGD_NESTEROV=True, SGD_DAMPNING=0)
    opt = build_optimizer(iter([trainable, frozen, other]), c)
    assert isinstance(opt, torch.optim.SGD)
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert [id(p) for p in group["params"]] == [id(trainable), id(other)]
    assert group["lr"] == 0.0125
    assert group["momentum"] == 0.8
    assert group["weight_decay"] == 1e-3
    assert group["nesterov"] is True
    assert group["dampening"] == 0
    set_lr(opt, 0.5)
    assert opt.param_groups[0]["lr"] == 0.5


def test_build_sgd_plain_defaults_from_cfg():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], optim_cfg(NAME="sgd", LR=0.002, MOMENTUM=0.9, WEIGHT_DECAY=5e-4))
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"]) == (0.002, 0.9, 5e-4, False)


def test_build_adam_betas():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], optim_cfg(NAME="adam", LR=1e-3, ADAM_BETA1=0.8, ADAM_BETA2=0.95, WEIGHT_DECAY=0.0))
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["betas"] == (0.8, 0.95)
    assert opt.param_groups[0]["amsgrad"] is False
    opt = build_optimizer([p], optim_cfg(NAME="amsgrad"))
    assert opt.param_groups[0]["amsgrad"] is True


@pytest.mark.parametrize("name", ["SGD", "lamb", ""])
def test_build_unknown_optimizer_raises(name):
    with pytest.raises(CasplError, match="OPTIM.NAME"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], optim_cfg(NAME=name))


# ----------------------------------------------------------------------------- Classification evaluator

Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 3]
Y_PRED = [0, 0, 1, 1, 4, 2, 0, 2, 1]  # class 4 is predicted but absent; class 3 is never predicted
# by hand, over the classes present in Y_TRUE:
#   class 0: tp 2, fp 1 (idx 6), fn 1 (idx 2)      -> F1 = 4 / 6
#   class 1: tp 1, fp 2 (idx 2, 8), fn 1 (idx 4)   -> F1 = 2 / 5
#   class 2: tp 2, fp 0, fn 1 (idx 6)              -> F1 = 4 / 5
#   class 3: tp 0                                  -> F1 = 0
HAND_F1 = (4 / 6 + 2 / 5 + 4 / 5 + 0) / 4  # 0.4666...
HAND_ACC = 100 * 5 / 9  # indices 0, 1, 3, 5, 7


def logits_for(pred, n_classes=5):
    logits = torch.randn(len(pred), n_classes) * 0.1
    logits[torch.arange(len(pred)), torch.tensor(pred)] = 5.0
    return logits


def test_classification_metrics_match_hand_computation(capsys):
    ev = Classification(classnames=[f"c{i}" for i in range(5)])
    # in two batches: the evaluator accumulates
    ev.process(logits_for(Y_PRED[:4]), torch.tensor(Y_TRUE[:4]))
    ev.process(logits_for(Y_PRED[4:]), torch.tensor(Y_TRUE[4:]))
    res = ev.evaluate()
    assert res["accuracy"] == pytest.approx(HAND_ACC)
    assert res["error_rate"] == pytest.approx(100 - HAND_ACC)
    assert res["macro_f1"] == pytest.approx(100 * HAND_F1)
    assert macro_f1(torch.tensor(Y_TRUE), torch.tensor(Y_PRED)) == pytest.approx(HAND_F1)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "=> result",
        "* total: 9",
        "* correct: 5",
        "* accuracy: 55.6%",
        "* error: 44.4%",
        "* macro_f1: 46.7%",
    ]


def test_classification_per_class_average_and_reset(capsys):
    ev = Classification(classnames=[f"c{i}" for i in range(5)], per_class=True)
    ev.process(logits_for(Y_PRED), torch.tensor(Y_TRUE))
    res = ev.evaluate(verbose=False)
    assert res["perclass_accuracy"] == pytest.approx((200 / 3 + 50 + 200 / 3 + 0) / 4)
    assert capsys.readouterr().out == ""
    ev.reset()
    ev.process(logits_for([1, 1]), torch.tensor([1, 1]))
    res = ev.evaluate(verbose=False)
    assert res["accuracy"] == 100.0 and res["macro_f1"] == 100.0


def test_classification_thousands_separator(capsys):
    ev = Classification()
    y = torch.arange(1200) % 3
    pred = y.clone()
    pred[:300] = (pred[:300] + 1) % 3
    ev.process(logits_for(pred.tolist(), 3), y)
    ev.evaluate()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:5] == ["* total: 1,200", "* correct: 900", "* accuracy: 75.0%", "* error: 25.0%"]


# ----------------------------------------------------------------------------- config

def test_default_cfg_has_coop_keys():
    cfg = get_cfg_default()
    coop = cfg.TRAINER.COOP
    assert coop.N_CTX == 16
    assert coop.CSC is False
    assert coop.CTX_INIT == ""
    assert coop.PREC == "fp16"
    assert coop.CLASS_TOKEN_POSITION == "end"
    assert cfg.SEED == -1 and cfg.DATASET.NUM_SHOTS == -1 and cfg.DATASET.SUBSAMPLE_CLASSES == "all"


def test_default_cfg_is_a_fresh_copy():
    a = get_cfg_default()
    a.OPTIM.LR = 123.0
    a.TRAINER.COOP.N_CTX = 4
    b = get_cfg_default()
    assert b.OPTIM.LR == 0.0003 and b.TRAINER.COOP.N_CTX == 16


def test_merge_file_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("OPTIM:\n  LR: 0.1\n  FOO: 3\n")
    with pytest.raises(CasplError) as err:
        merge_file(get_cfg_default(), str(path))
    assert "OPTIM.FOO" in str(err.value)
    assert str(path) in str(err.value)


def test_merge_file_missing_and_bad_value(tmp_path):
    with pytest.raises(CasplError, match="not found"):
        merge_file(get_cfg_default(), str(tmp_path / "none.yaml"))
    path = tmp_path / "badval.yaml"
    path.write_text("OPTIM:\n  MAX_EPOCH: 'many'\n")
    with pytest.raises(CasplError) as err:
        merge_file(get_cfg_default(), str(path))
    assert str(path) in str(err.value)


def test_merge_file_sets_values(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("OPTIM:\n  LR: 0.1\nTRAINER:\n  COOP:\n    N_CTX: 4\n")
    cfg = get_cfg_default()
    merge_file(cfg, str(path))
    assert cfg.OPTIM.LR == 0.1 and cfg.TRAINER.COOP.N_CTX == 4


def test_merge_opts():
    cfg = get_cfg_default()
    merge_opts(cfg, ["OPTIM.LR", "0.5", "TRAINER.COOP.CSC", "True", "DATASET.NUM_SHOTS", "16"])
    assert cfg.OPTIM.LR == 0.5 and cfg.TRAINER.COOP.CSC is True and cfg.DATASET.NUM_SHOTS == 16
    with pytest.raises(CasplError) as err:
        merge_opts(get_cfg_default(), ["OPTIM.FOO", "1"])
    assert "OPTIM.FOO" in str(err.value)
    with pytest.raises(CasplError) as err:
        merge_opts(get_cfg_default(), ["TRAINER.COOP.N_CTXX", "1"])
    assert "TRAINER.COOP.N_CTXX" in str(err.value)
    with pytest.raises(CasplError, match="odd"):
        merge_opts(get_cfg_default(), ["OPTIM.LR", "0.5", "OPTIM.MAX_EPOCH"])
    with pytest.raises(CasplError):
        merge_opts(get_cfg_default(), ["OPTIM.MAX_EPOCH", "'many'"])


CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "trainers", "CoOp", "*.yaml"))
                      + glob.glob(os.path.join(ROOT, "configs", "trainers", "ZeroshotCLIP", "*.yaml"))
                      + glob.glob(os.path.join(ROOT, "configs", "datasets", "*.yaml")))


def test_config_files_are_found():
    names = {os.path.relpath(p, ROOT) for p in CONFIG_FILES}
    assert os.path.join("configs", "trainers", "CoOp", "rn50.yaml") in names
    assert os.path.join("configs", "datasets", "eurosat.yaml") in names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_shipped_config_merges(path):
    cfg = get_cfg_default()
    merge_file(cfg, path)
    with open(path) as f:
        tree = yaml.safe_load(f)
    leaves = list(yaml_leaves(tree))
    assert leaves
    for keys, value in leaves:  # every value in the file is now in cfg
        node = cfg
        for k in keys:
            node = node[k]
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
        if isinstance(value, (list, tuple)):
            assert list(node) == list(value), keys
        else:
            assert node == value, keys
    if os.sep + "CoOp" + os.sep in path:
        assert cfg.TRAINER.COOP.CTX_INIT == ("a photo of a" if "ctxv1" in path else "")


def yaml_leaves(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from yaml_leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def test_dataset_then_trainer_config_merge():
    cfg = get_cfg_default()
    merge_file(cfg, os.path.join(ROOT, "configs", "datasets", "eurosat.yaml"))
    merge_file(cfg, os.path.join(ROOT, "configs", "trainers", "CoOp", "vit_b16_ep50.yaml"))
    assert cfg.DATASET.NAME == "EuroSAT"
    assert cfg.OPTIM.MAX_EPOCH == 50
    assert tuple(cfg.INPUT.SIZE) == (224, 224)


# ----------------------------------------------------------------------------- atomic_save

def test_atomic_save_writes_loadable_file(tmp_path):
    path = tmp_path / "sub" / "ckpt.pth"
    atomic_save({"w": torch.arange(5), "epoch": 3}, str(path))
    obj = torch.load(str(path))
    assert obj["epoch"] == 3 and torch.equal(obj["w"], torch.arange(5))
    assert os.listdir(path.parent) == ["ckpt.pth"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_save_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch, exc):
    path = tmp_path / "ckpt.pth"
    atomic_save({"epoch": 1}, str(path))
    before = path.read_bytes()

    def torn_save(obj, f):
        f.write(b"\x80partial checkpoint" * 1000)
        raise exc("disk full")

    monkeypatch.setattr(caspl_io.torch, "save", torn_save)
    with pytest.raises(exc):
        atomic_save({"epoch": 2}, str(path))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(str(path)) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["ckpt.pth"]


def test_atomic_save_failure_without_previous_file_leaves_nothing(tmp_path, monkeypatch):
    def torn_save(obj, f):
        f.write(b"junk")
        raise OSError("disk full")

    monkeypatch.setattr(caspl_io.torch, "save", torn_save)
    with pytest.raises(OSError):
        atomic_save({"epoch": 2}, str(tmp_path / "ckpt.pth"))
    assert os.listdir(tmp_path) == []
