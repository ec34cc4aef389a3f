"""Every setting a user writes is read, checked or refused: the config records the leaves a
run reads (caspl/config/reads.py), and a setting nothing read stops the run after its first
step, before anything is saved."""
import glob
import os

import pytest
import torch
from yacs.config import CfgNode as CN

from caspl import TRAINER_REGISTRY, CasplError
from caspl.cli import build_parser, setup_cfg
from caspl.config import refuse_unread
from caspl.config.reads import leaves, read_log
from caspl.engine import Trainer
from caspl.testing import make_eurosat
from conftest import ROOT, run_cli

DEPTH = 2  # the tiny CLIP's layers: deeper prompts in the shipped YAMLs are set to this
TINY = {"INPUT.SIZE": "(32, 32)", "DATALOADER.NUM_WORKERS": "0", "TRAIN.PRINT_FREQ": "1000"}
# what a shipped YAML needs changed to run on the tiny CLIP (the leaves stay set, so they are still checked)
TINY_BY_TRAINER = {
    "CasPL": {"TRAINER.IVLP.PROMPT_DEPTH_TEXT": DEPTH, "TRAINER.IVLP.PROMPT_DEPTH_VISION": DEPTH},
    "CasPL_Boost": {"TRAINER.CASPL.PROMPT_DEPTH_TEXT": DEPTH, "TRAINER.CASPL.PROMPT_DEPTH_VISION": DEPTH},
    "IVLP": {"TRAINER.IVLP.PROMPT_DEPTH_TEXT": DEPTH, "TRAINER.IVLP.PROMPT_DEPTH_VISION": DEPTH},
    "PromptSRC": {"TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT": DEPTH, "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION": DEPTH},
    "MaPLe": {"TRAINER.MAPLE.PROMPT_DEPTH": DEPTH},
    "VPT": {"TRAINER.VPT.PROMPT_DEPTH_VISION": DEPTH},
    "LAMM_MaPLe": {"TRAINER.MAPLE.PROMPT_DEPTH": DEPTH},
    "PromptKD": {"TRAINER.PROMPTKD.PROMPT_DEPTH_VISION": DEPTH, "TRAINER.PROMPTKD.TEACHER_CKPT": "zero_shot"},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip_path):
    """A miniature EuroSAT and a finished tiny phase 1 (CasPL_Boost, 4+4 tokens at depth 1)."""
    base = tmp_path_factory.mktemp("reads")
    root = make_eurosat(str(base / "data"), per_class=4)
    boost = str(base / "boost")
    assert run_cli(command(root, tiny_clip_path, boost, "CasPL_Boost", None, "OPTIM.MAX_EPOCH", "1",
                           *phase1_opts(tiny_clip_path), "TEST.NO_TEST", "True")) == 0
    return root, boost


def phase1_opts(clip, temperature="2.0"):
    return ["TRAINER.CASPL.TEACHER", clip, "TRAINER.CASPL.N_CTX_TEXT", "4", "TRAINER.CASPL.N_CTX_VISION", "4",
            "TRAINER.CASPL.PROMPT_DEPTH_TEXT", "1", "TRAINER.CASPL.PROMPT_DEPTH_VISION", "1",
            "TRAINER.CASPL.TEMPERATURE", temperature]


def command(root, clip, out, trainer, config, *opts, extra=()):
    config = ["--config-file", config] if config else []
    tiny = [x for kv in TINY.items() for x in kv]
    return ["--root", root, "--output-dir", out, "--trainer", trainer, "--seed", "1", *config, *extra,
            "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
            "MODEL.BACKBONE.NAME", clip, *tiny, *opts]


def first_steps(args):
    """Build the run of `args` as train.py does, take one training step and evaluate: the
    reads a whole run makes. Returns the trainer."""
    cfg, _ = setup_cfg(build_parser().parse_args(args))
    trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
    if type(trainer).forward_backward is Trainer.forward_backward:  # a method with its own loop (a linear probe)
        trainer.train()
        return trainer
    if trainer._optims:
        trainer.set_model_mode(True)
        trainer.forward_backward(next(trainer.dm.batches(trainer.dm.train_loader_x)))
    trainer.test()
    return trainer


def other_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return list(value)[:-1] if len(value) else ["x"]


def cascadable(trainer):
    try:
        TRAINER_REGISTRY.get(f"CasPL_{trainer}")
    except CasplError:
        return False
    return True


def shipped_configs():
    """(trainer, YAML) for every trainer with shipped YAMLs, one YAML per set of keys it sets,
    and CasPL_<X> with X's first YAML."""
    cases = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "configs/trainers/*/*.yaml"))):
        trainer = os.path.basename(os.path.dirname(path))
        with open(path) as f:
            keys = tuple(sorted(leaves(CN.load_cfg(f))))
        cases.setdefault((trainer, keys), path)
        if cascadable(trainer):
            cases.setdefault((f"CasPL_{trainer}",), path)
    return [pytest.param(key[0], path, id=f"{key[0]}-{os.path.basename(path)}") for key, path in cases.items()]


@pytest.mark.parametrize("trainer,config", shipped_configs())
def test_every_leaf_a_shipped_yaml_sets_is_read_or_refused_when_changed(world, tiny_clip_path, tmp_path, trainer,
                                                                        config):
    root, boost = world
    base = trainer.removeprefix("CasPL_") if trainer.startswith("CasPL_") and trainer != "CasPL_Boost" else trainer
    opts = {**TINY_BY_TRAINER.get(base, {}), **TINY_BY_TRAINER.get(trainer, {})}
    if trainer in ("CasPL", "CasPL_Boost"):
        opts["TRAINER.CASPL.TEACHER"] = tiny_clip_path
    if base != trainer:
        opts["TRAINER.CASPL.BOOST_CKPT"] = boost
    if trainer == "PromptKD":
        opts["TRAINER.PROMPTKD.TEACHER_NAME"] = tiny_clip_path
    t = first_steps(command(root, tiny_clip_path, str(tmp_path / "o"), trainer, config,
                            *[str(x) for kv in opts.items() for x in kv]))
    log = read_log(t.cfg)
    with open(config) as f:
        shipped = leaves(CN.load_cfg(f))
    unread = [key for key in shipped if key not in log.reads]
    for key in unread:  # changed, each of these is refused
        log.sources[key] = ("in the test", other_value(shipped[key]))
        with pytest.raises(CasplError, match=f"{key} "):
            refuse_unread(t.cfg, trainer)
        del log.sources[key]
    assert set(shipped) - set(unread) - log.reads == set()
    assert "MODEL.BACKBONE.NAME" in log.reads and "OPTIM.MAX_EPOCH" in log.reads  # the run read the YAML's leaves


def test_shipped_configs_cover_every_trainer_folder():
    folders = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs/trainers/*"))}
    covered = {p.values[0] for p in shipped_configs()}
    assert folders <= covered
    assert {"CasPL_CoOp", "CasPL_PromptSRC", "CasPL_MaPLe", "CasPL_CoCoOp", "CasPL_IVLP", "CasPL_VPT",
            "CasPL_LAMM"} <= covered


def refusal(args):
    with pytest.raises(CasplError) as err:
        first_steps(args)
    return str(err.value)


# --- phase 2 and phase 1 of CasPL

PHASE1_OTHER = {"PREC": "fp32", "TEACHER": "ViT-B/32", "TEACHER_TEMPLATE": "a {}.", "N_CTX_TEXT": "2",
                "N_CTX_VISION": "2", "CTX_INIT": "a photo", "PROMPT_DEPTH_TEXT": "2", "PROMPT_DEPTH_VISION": "2",
                "TEMPERATURE": "1.0", "FEWSHOT_DATA": "True", "TEACHER_CACHE": "True", "CACHE_VIEWS": "2"}


def phase2(world, clip, out, *opts):
    root, boost = world
    return command(root, clip, out, "CasPL_CoOp", os.path.join(ROOT, "configs/trainers/CoOp/vit_b16_ep50.yaml"),
                   "TRAINER.CASPL.BOOST_CKPT", boost, *opts)


@pytest.mark.parametrize("key", sorted(PHASE1_OTHER))
def test_a_phase1_key_given_to_phase2_that_differs_from_the_boosting_prompts_is_refused(world, tiny_clip_path,
                                                                                          tmp_path, key):
    message = refusal(phase2(world, tiny_clip_path, str(tmp_path / "o"), f"TRAINER.CASPL.{key}", PHASE1_OTHER[key]))
    assert f"TRAINER.CASPL.{key} " in message and "does not match the boosting prompts" in message
    assert not os.path.exists(tmp_path / "o" / "prompt_learner")


def test_phase1_keys_given_to_phase2_as_phase1_ran_are_logged_and_the_config_shows_them(world, tiny_clip_path,
                                                                                        tmp_path, capsys):
    same = {"TEACHER": tiny_clip_path, "N_CTX_TEXT": "4", "PROMPT_DEPTH_VISION": "1", "TEMPERATURE": "2.0",
            "TEACHER_CACHE": "False"}
    t = first_steps(phase2(world, tiny_clip_path, str(tmp_path / "o"),
                           *[x for k, v in same.items() for x in (f"TRAINER.CASPL.{k}", v)]))
    out = capsys.readouterr().out
    assert "TRAINER.CASPL.TEACHER" in out and "given to phase 2: as the boosting prompts in" in out
    c = t.cfg.TRAINER.CASPL  # what phase 1 used, also where not given (defaults 8, 8, 12, 12)
    used = (c.N_CTX_TEXT, c.N_CTX_VISION, c.PROMPT_DEPTH_TEXT, c.PROMPT_DEPTH_VISION, c.TEMPERATURE)
    assert used == (4, 4, 1, 1, 2.0)
    assert (t.cfg.KD.N_CTX_TEXT, t.cfg.KD.BACKBONE_NAME, t.cfg.KD.SECOND_TRAIN) == (4, tiny_clip_path, True)


@pytest.mark.parametrize("key,value", [("ANCHOR", "boosted"), ("BOOST_LEARNABLE", "True")])
def test_phase2_keys_given_to_phase1_are_refused(world, tiny_clip_path, tmp_path, key, value):
    root, _ = world
    message = refusal(command(root, tiny_clip_path, str(tmp_path / "o"), "CasPL_Boost", None,
                              *phase1_opts(tiny_clip_path), f"TRAINER.CASPL.{key}", value))
    assert f"TRAINER.CASPL.{key} " in message and "read by nothing in a CasPL_Boost run" in message


def test_the_teacher_under_two_names_with_two_values_is_refused(world, tiny_clip_path, tmp_path):
    root, _ = world
    message = refusal(command(root, tiny_clip_path, str(tmp_path / "o"), "CasPL_Boost", None,
                              *phase1_opts(tiny_clip_path), "KD.BACKBONE_NAME", "ViT-L/14"))
    assert "KD.BACKBONE_NAME 'ViT-L/14' and TRAINER.CASPL.TEACHER" in message and "give one" in message


def test_the_logged_config_shows_the_authors_keys_as_used(world, tiny_clip_path, tmp_path, capsys):
    import yaml

    root, _ = world
    first_steps(command(root, tiny_clip_path, str(tmp_path / "o"), "CasPL", None, "KD.BACKBONE_NAME", tiny_clip_path,
                        "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "1", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "1",
                        "TRAINER.IVLP.N_CTX_TEXT", "4"))
    out = capsys.readouterr().out
    logged = yaml.safe_load(out[out.index("** Config **") + 12:out.index("** End of config **")])
    assert logged["KD"]["BACKBONE_NAME"] == logged["TRAINER"]["CASPL"]["TEACHER"] == tiny_clip_path
    assert (logged["KD"]["FIRST_TRAIN"], logged["KD"]["SECOND_TRAIN"], logged["KD"]["IS_TEST"]) == (True, False, False)
    assert (logged["KD"]["N_CTX_TEXT"], logged["KD"]["PROMPT_DEPTH_TEXT"], logged["KD"]["TEMPERATURE"]) == (4, 1, 1.0)
    assert logged["TRAINER"]["MODAL"] == "base2novel"  # PromptKD's key: its value, not a placeholder


# --- the engine, the data, the other methods

COOP = os.path.join(ROOT, "configs/trainers/CoOp/vit_b16_ep50.yaml")


@pytest.mark.parametrize("trainer,config,key,value", [
    ("CoOp", COOP, "DATALOADER.TRAIN_U.BATCH_SIZE", "8"),
    ("CoOp", COOP, "DATALOADER.TRAIN_U.SAME_AS_X", "False"),
    ("CoOp", COOP, "DATASET.DIR", "mine"),
    ("CoOp", COOP, "DATASET.SPLIT_FILE", "other.json"),
    ("CoOp", COOP, "DATASET.SPLIT_RATIOS", "(0.6, 0.2, 0.2)"),
    ("CoOp", COOP, "DATASET.TEMPLATE", "a {}."),
    ("CoOp", COOP, "INPUT.CUTOUT_N", "2"),  # a Dassl key caspl has no use for
    ("LAMM_CoOp", "configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml", "TRAINER.LAMM.TEMPLATE", "a {}."),
    ("LAMM_CoOp", "configs/trainers/LAMM_CoOp/vit_b16_ep50_ctxv1.yaml", "TRAINER.LAMM.PREC", "fp32"),
    ("LAMM_MaPLe", "configs/trainers/LAMM_MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", "TRAINER.LAMM.TEMPLATE", "a {}."),
    ("LAMM_MaPLe", "configs/trainers/LAMM_MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", "TRAINER.LAMM.PREC", "fp32"),
    ("PromptKD", "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml", "TRAINER.PROMPTKD.N_CTX_TEXT", "8"),
    ("PromptKD", "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml",
     "TRAINER.PROMPTKD.PROMPT_DEPTH_TEXT", "3"),
    ("PromptKD", "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml", "TRAINER.PROMPTKD.CTX_INIT", "a"),
])
def test_a_setting_the_run_does_not_read_is_refused_before_anything_is_saved(world, tiny_clip_path, tmp_path,
                                                                             trainer, config, key, value):
    root, _ = world
    opts = {**TINY_BY_TRAINER.get(trainer, {}), key: value}
    if trainer == "PromptKD":
        opts["TRAINER.PROMPTKD.TEACHER_NAME"] = tiny_clip_path
    message = refusal(command(root, tiny_clip_path, str(tmp_path / "o"), trainer, os.path.join(ROOT, config),
                              *[str(x) for kv in opts.items() for x in kv]))
    assert message.startswith(f"read by nothing in a {trainer} run") and f"{key} " in message
    assert "set on the command line" in message
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.parametrize("key,value,owner", [("TRAINER.COOP.N_CTX", "4", "CoOp"), ("KD.IS_TEST", "True", "CasPL")])
def test_another_trainers_section_follows_one_rule(world, tiny_clip_path, tmp_path, key, value, owner):
    root, _ = world
    message = refusal(command(root, tiny_clip_path, str(tmp_path / "o"), "MaPLe",
                              os.path.join(ROOT, "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"),
                              "TRAINER.MAPLE.PROMPT_DEPTH", "2", key, value))
    assert message.startswith("read by nothing in a MaPLe run") and f"{key} " in message
    assert "; it belongs to " in message and owner in message


@pytest.mark.parametrize("value", ["True", "False"])
def test_auto_keys_take_true_and_false_on_the_command_line(world, tiny_clip_path, tmp_path, value):
    root, _ = world
    cfg, _ = setup_cfg(build_parser().parse_args(command(
        root, tiny_clip_path, str(tmp_path / "o"), "CoOp", COOP, "DATALOADER.PIN_MEMORY", value,
        "DATALOADER.PERSISTENT_WORKERS", value, "DATALOADER.NUM_WORKERS", "1")))
    t = TRAINER_REGISTRY.get("CoOp")(cfg)
    assert t.dm.pin_memory is (value == "True") and t.dm.persistent is (value == "True")


def test_a_clip_lamm_checkpoint_evaluated_as_lamm_coop_names_origin_clip(world, tiny_clip_path, tmp_path):
    root, _ = world
    cfg, _ = setup_cfg(build_parser().parse_args(command(
        root, tiny_clip_path, str(tmp_path / "o"), "CoOp", COOP,
        extra=["--triplet-loss"])))
    t = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)
    for name in t._models:  # what a CLIP + LAMM run (--origin-clip) leaves
        os.makedirs(tmp_path / "lamm" / name)
        torch.save({"state_dict": {}, "epoch": 1, "meta": {"trainer": "LAMM"}},
                   tmp_path / "lamm" / name / "model.pth.tar-1")
        (tmp_path / "lamm" / name / "checkpoint").write_text("model.pth.tar-1\n")
    with pytest.raises(CasplError, match="written by trainer LAMM, not LAMM_CoOp; .*--origin-clip"):
        t.load_model(str(tmp_path / "lamm"))


@pytest.mark.parametrize("temperature,code", [("2.0", 0), ("3.0", 2)])
def test_an_evaluation_accepts_a_training_key_only_at_the_value_the_model_was_trained_with(
        world, tiny_clip_path, tmp_path, capsys, temperature, code):
    root, boost = world
    args = command(root, tiny_clip_path, str(tmp_path / "o"), "CasPL_Boost", None,
                   *phase1_opts(tiny_clip_path, temperature), extra=["--eval-only", "--model-dir", boost])
    assert run_cli(args) == code
    if code:
        assert "TRAINER.CASPL.TEMPERATURE 3.0" in capsys.readouterr().err
        assert "the evaluated model was trained with 2.0" in open(tmp_path / "o" / "log.txt").read()
