"""The protocol scripts: syntax, every method's folder, and base-to-new pairs run end to end
(a plain method, and CasPL with its boosting phase) with the skip-when-finished rule."""
import glob
import os
import subprocess
import sys

import pytest

from caspl.clip.tiny import save_tiny_clip
from caspl.testing import make_eurosat
from conftest import ROOT

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "scripts", "**", "*.sh"), recursive=True))


@pytest.mark.parametrize("script", SCRIPTS, ids=[os.path.relpath(s, ROOT) for s in SCRIPTS])
def test_script_syntax(script):
    assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0


METHODS = ["CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC", "LAMM", "VPT"]


@pytest.mark.parametrize("method", METHODS + [f"CasPL_{m}" for m in METHODS] + ["PromptKD", "LinearProbeCLIP"])
def test_every_method_has_the_protocol_scripts(method):
    folder = os.path.join(ROOT, "scripts", method)
    for name in ("base2new_train.sh", "base2new_test.sh", "few_shot.sh", "xd_train.sh", "xd_test.sh",
                 "class_incremental.sh", "table.sh"):
        assert os.path.isfile(os.path.join(folder, name)), name


def run_script(path, args, env, cwd):
    return subprocess.run(["bash", os.path.join(ROOT, path), *args], env=env, capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_unknown_method_and_missing_training_are_clear_errors(tmp_path):
    env = dict(os.environ, DATA=str(tmp_path), OUT=str(tmp_path / "out"), PYTHON=sys.executable, METHOD="CoOOp")
    bad = run_script("scripts/protocols/base2new_train.sh", ["eurosat", "1"], env, str(tmp_path))
    assert bad.returncode == 2 and "unknown method CoOOp" in bad.stderr
    env["METHOD"] = "CoOp"
    untrained = run_script("scripts/CoOp/base2new_test.sh", ["eurosat", "1"], env, str(tmp_path))
    assert untrained.returncode == 2 and "no training in" in untrained.stderr
    usage = run_script("scripts/CoOp/few_shot.sh", ["eurosat"], env, str(tmp_path))
    assert usage.returncode == 2 and "few_shot.sh DATASET SEED SHOTS" in usage.stderr


@pytest.mark.slow
def test_coop_base_to_new_pair_in_the_reference_layout_then_skips(tmp_path, tiny_clip_path):
    data = make_eurosat(str(tmp_path / "data"), per_class=10)
    env = dict(os.environ, DATA=data, OUT=str(tmp_path / "out"), BACKBONE=tiny_clip_path, PYTHON=sys.executable,
               SHOTS="2", EXTRA='INPUT.SIZE "(32, 32)" OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0')
    for script in ("base2new_train.sh", "base2new_test.sh"):
        done = run_script(f"scripts/CoOp/{script}", ["eurosat", "1"], env, str(tmp_path))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = tmp_path / "out/base2new"
    train_log = (runs / "train_base/eurosat/shots_2/CoOp/vit_b16_ep50_ctxv1/seed1/log.txt").read_text()
    test_log = (runs / "test_new/eurosat/shots_2/CoOp/vit_b16_ep50_ctxv1/seed1/log.txt").read_text()
    assert "Finish training" in train_log and "* total: 15" in train_log  # 5 base classes x 3 test images
    assert "* total: 15" in test_log and "model.pth.tar-2" in test_log
    again = run_script("scripts/CoOp/base2new_train.sh", ["eurosat", "1"], env, str(tmp_path))
    assert again.returncode == 0 and "skipping" in again.stdout


def caspl_env(tmp_path, student, **env):
    """The scripts' environment for CasPL runs: generated EuroSAT, the tiny student and a larger teacher."""
    data = make_eurosat(str(tmp_path / "data"), per_class=10)
    teacher = save_tiny_clip(str(tmp_path / "teacher.pt"), embed_dim=48, vision_width=128, text_width=128,
                             vision_layers=3, text_layers=3, seed=5)
    return dict(os.environ, DATA=data, OUT=str(tmp_path / "out"), BACKBONE=student, TEACHER=teacher,
                PYTHON=sys.executable, SHOTS="2", **env)


@pytest.mark.slow
def test_caspl_base_to_new_scripts_run_both_phases_and_then_skip(tmp_path, tiny_clip_path):
    env = caspl_env(tmp_path, tiny_clip_path, LOAD_EPOCH="2",
                    EXTRA='INPUT.SIZE "(32, 32)" TRAINER.CASPL.PROMPT_DEPTH_TEXT 2 TRAINER.CASPL.PROMPT_DEPTH_VISION 2 '
                          'TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT 2 TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION 2 '
                          'OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0')
    def pair():
        outs = [run_script(f"scripts/CasPL_PromptSRC/{s}", ["eurosat", "1"], env, str(tmp_path))
                for s in ("base2new_train.sh", "base2new_test.sh")]
        for done in outs:
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return "".join(done.stdout for done in outs)

    pair()
    out = tmp_path / "out"
    assert (out / "caspl_boost/eurosat/seed1/BoostPrompts/model.pth.tar-2").is_file()
    cfg = "CasPL_PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_l12/seed1"
    train_log = (out / "base2new/train_base/eurosat/shots_2" / cfg / "log.txt").read_text()
    test_log = (out / "base2new/test_new/eurosat/shots_2" / cfg / "log.txt").read_text()
    assert "* total: 15" in train_log and "* total: 15" in test_log and "Loaded " in test_log
    assert pair().count("skipping") == 3  # phase 1, phase 2 training, evaluation


@pytest.mark.slow
def test_context_length_sweep_runs_and_tabulates_from_one_command(tmp_path, tiny_clip_path):
    data = make_eurosat(str(tmp_path / "data"), per_class=10)
    env = dict(os.environ, DATA=data, OUT=str(tmp_path / "out"), BACKBONE=tiny_clip_path, PYTHON=sys.executable,
               KEY="TRAINER.COOP.N_CTX", VALUES="2 4",
               EXTRA='INPUT.SIZE "(32, 32)" OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0')
    done = run_script("scripts/sweep.sh", ["scripts/CoOp/few_shot.sh", "eurosat", "1", "2"], env, ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = done.stdout[done.stdout.index("experiment"):].splitlines()
    rows = [line.split()[0] for line in table[2:]]
    assert rows == [f"TRAINER.COOP.N_CTX={n}/few_shot/eurosat/shots_2/CoOp/vit_b16_ep100" for n in (2, 4)]
    for n in (2, 4):
        log = (tmp_path / "out/sweep" / f"TRAINER.COOP.N_CTX={n}" / "few_shot/eurosat/shots_2/CoOp/vit_b16_ep100/seed1"
               / "log.txt").read_text()
        assert f"with {n} context tokens" in log and "* accuracy:" in log


def protocol_choice(method, protocol, dataset="imagenet"):
    """(CFG, boost setting, boost config, boost folder) that the protocol scripts pick."""
    probe = ('. scripts/protocols/common.sh; METHOD=$1; HOST=${METHOD#CasPL_}; method_config "$2"; boost_choice; '
             'boost_setting "$BOOST_SETTING" "$3"; printf "%s\\n" "$CFG" "$BOOST_SETTING" "$BOOST_CFG" "$BOOST_DIR"')
    env = dict(os.environ, DATA="/nonexistent", OUT="/out", PYTHON=sys.executable)
    done = subprocess.run(["bash", "-c", probe, "probe", method, protocol, dataset], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return tuple(done.stdout.split("\n")[:4])


XD_L1 = ("xd_l1", "vit_b16_c2_ep20_batch128_lr0025_4+4ctx_l1", "/out/caspl_boost_xd_l1/imagenet/seed1")


@pytest.mark.parametrize("method, cfg, boost", [
    ("CasPL_PromptSRC", "vit_b16_c2_ep20_batch4_8+8ctx_cross_datasets_l3", XD_L1),
    ("CasPL_MaPLe", "vit_b16_c8_ep5_batch4_8ctx_cross_datasets_l12", XD_L1),
    ("CasPL_CoOp", "vit_b16_ep10_ctxv1", XD_L1),
    ("CasPL_CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1",
     ("xd_l3", "vit_b16_c2_ep20_batch128_lr0025_4+4ctx_l3", "/out/caspl_boost_xd_l3/imagenet/seed1")),
    ("CasPL_IVLP", "vit_b16_c2_ep20_batch4_4+4ctx", XD_L1),
    ("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets", ("", "", "")),
])
def test_cross_dataset_protocol_picks_the_authors_xd_configs(method, cfg, boost):
    chosen = protocol_choice(method, "cross_dataset")
    assert chosen[0] == cfg
    if method.startswith("CasPL_"):
        assert chosen[1:] == boost
    else:
        assert chosen[1] == ""  # no phase 1 for the plain methods


@pytest.mark.parametrize("protocol", ["base2new", "few_shot", "class_incremental"])
def test_other_protocols_keep_the_8_plus_8_depth_12_boost(protocol):
    assert protocol_choice("CasPL_PromptSRC", protocol)[1:] == (
        "", "vit_b16_c2_ep20_batch128_lr0025_8+8ctx_l12", "/out/caspl_boost/imagenet/seed1")
    assert protocol_choice("CasPL_CoCoOp", protocol, "dtd")[1:] == (
        "", "vit_b16_c2_ep20_batch4_8+8ctx_l12", "/out/caspl_boost/dtd/seed1")


def load_yaml(path):
    import yaml

    with open(os.path.join(ROOT, path)) as f:
        return yaml.safe_load(f)


def test_xd_config_files_hold_the_authors_settings():
    for depth in (1, 3):
        boost = load_yaml(f"configs/trainers/CasPL_Boost/vit_b16_c2_ep20_batch128_lr0025_4+4ctx_l{depth}.yaml")
        c = boost["TRAINER"]["CASPL"]
        assert (c["N_CTX_TEXT"], c["N_CTX_VISION"], c["PROMPT_DEPTH_TEXT"],
                c["PROMPT_DEPTH_VISION"]) == (4, 4, depth, depth)
        assert c["CTX_INIT"] == "a photo of a"
        assert boost["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"] == 128
        assert (boost["OPTIM"]["LR"], boost["OPTIM"]["MAX_EPOCH"]) == (0.0025, 20)
    src = load_yaml("configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_cross_datasets_l3.yaml")
    p = src["TRAINER"]["PROMPTSRC"]
    assert (p["N_CTX_TEXT"], p["N_CTX_VISION"], p["PROMPT_DEPTH_TEXT"], p["PROMPT_DEPTH_VISION"]) == (8, 8, 3, 3)
    assert (p["GPA_MEAN"], p["GPA_STD"], p["TEXT_LOSS_WEIGHT"], p["IMAGE_LOSS_WEIGHT"]) == (6, 10, 25, 10)
    maple = load_yaml("configs/trainers/MaPLe/vit_b16_c8_ep5_batch4_8ctx_cross_datasets_l12.yaml")
    assert maple["OPTIM"]["MAX_EPOCH"] == 2 and maple["TRAINER"]["MAPLE"]["PROMPT_DEPTH"] == 12  # load epoch 2
    coop = load_yaml("configs/trainers/CoOp/vit_b16_ep10_ctxv1.yaml")
    assert coop["OPTIM"]["MAX_EPOCH"] == 10 and coop["TRAINER"]["COOP"]["CTX_INIT"] == "a photo of a"


def logged_config(log):
    """The config dump at the top of a run's log.txt, and its config file argument."""
    import yaml

    dump = log[log.index("** Config **\n") + len("** Config **\n"):log.index("** End of config **")]
    config_file = next(line.split(": ", 1)[1] for line in log.splitlines() if line.startswith("config_file: "))
    return yaml.safe_load(dump), config_file


@pytest.mark.slow
def test_caspl_xd_scripts_boost_at_depth_1_in_their_own_folder_then_train_promptsrc_xd(tmp_path, tiny_clip_path):
    from caspl.engine import read_checkpoint

    # the tiny CLIP has 2 layers: phase 1's depth 1 fits as configured, phase 2's depth 3 is set to 2
    env = caspl_env(tmp_path, tiny_clip_path, SOURCE="eurosat",
                    EXTRA='INPUT.SIZE "(32, 32)" TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT 2 '
                          'TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION 2 OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0')
    for script, args in (("xd_train.sh", ["1"]), ("xd_test.sh", ["eurosat", "1"])):
        done = run_script(f"scripts/CasPL_PromptSRC/{script}", args, env, str(tmp_path))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = tmp_path / "out"
    assert not (out / "caspl_boost").exists()  # never the base-to-new boost's folder
    boost_dir = out / "caspl_boost_xd_l1/eurosat/seed1"
    cfg, config_file = logged_config((boost_dir / "log.txt").read_text())
    assert config_file.endswith("configs/trainers/CasPL_Boost/vit_b16_c2_ep20_batch128_lr0025_4+4ctx_l1.yaml")
    c = cfg["TRAINER"]["CASPL"]
    assert (c["N_CTX_TEXT"], c["N_CTX_VISION"], c["PROMPT_DEPTH_TEXT"], c["PROMPT_DEPTH_VISION"]) == (4, 4, 1, 1)
    assert c["CTX_INIT"] == "a photo of a"
    assert cfg["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"] == 128
    ckpt = read_checkpoint(str(boost_dir / "BoostPrompts/model.pth.tar-1"))
    meta = ckpt["meta"]["boost"]
    assert (meta["n_ctx_text"], meta["n_ctx_vision"], meta["depth_text"], meta["depth_vision"]) == (4, 4, 1, 1)
    assert {tuple(v.shape)[-2] for v in ckpt["state_dict"].values()} == {4}  # 4 tokens, one layer each side
    assert len(ckpt["state_dict"]) == 2

    name = "CasPL_PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_cross_datasets_l3_2shots/seed1"
    train_log = (out / "cross_dataset/eurosat" / name / "log.txt").read_text()
    cfg, config_file = logged_config(train_log)
    assert config_file.endswith("configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_8+8ctx_cross_datasets_l3.yaml")
    p = cfg["TRAINER"]["PROMPTSRC"]
    assert (p["N_CTX_TEXT"], p["N_CTX_VISION"], p["GPA_MEAN"], p["GPA_STD"]) == (8, 8, 6, 10)
    assert cfg["TRAINER"]["CASPL"]["BOOST_CKPT"] == str(boost_dir)
    assert "4+4 tokens, depth 1/1" in train_log and "Finish training" in train_log
    test_log = (out / "cross_dataset/evaluation" / name.replace("/seed1", "/eurosat/seed1") / "log.txt").read_text()
    assert "=> result" in test_log and "model.pth.tar-1" in test_log


def promptkd_env(tmp_path, student, epochs=2):
    """The scripts' environment for PromptKD: PromptKD's own SHOTS (0), a 2-shot teacher tuning,
    prompt depths that fit the tiny CLIPs."""
    env = caspl_env(tmp_path, student, SOURCE="eurosat", TEACHER_SHOTS="2",
                    EXTRA='INPUT.SIZE "(32, 32)" TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT 2 '
                          'TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION 2 TRAINER.PROMPTKD.PROMPT_DEPTH_VISION 2 '
                          f'OPTIM.MAX_EPOCH {epochs} DATALOADER.NUM_WORKERS 0')
    del env["SHOTS"]
    return env


def run_all(env, cwd, *calls):
    outs = [run_script(path, args, env, cwd) for path, args in calls]
    for done in outs:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return "".join(done.stdout for done in outs)


@pytest.mark.slow
def test_promptkd_base_to_new_scripts_tune_the_teacher_then_distil_then_skip(tmp_path, tiny_clip_path):
    env = promptkd_env(tmp_path, tiny_clip_path)
    calls = [(f"scripts/PromptKD/{s}", ["eurosat", "1"]) for s in ("base2new_train.sh", "base2new_test.sh")]
    run_all(env, str(tmp_path), *calls)
    out = tmp_path / "out"
    teacher_dir = out / "promptkd_teacher/eurosat/base/seed1"
    cfg, config_file = logged_config((teacher_dir / "log.txt").read_text())
    assert config_file.endswith("configs/trainers/PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx.yaml")
    assert (cfg["MODEL"]["BACKBONE"]["NAME"], cfg["DATASET"]["NUM_SHOTS"], cfg["DATASET"]["SUBSAMPLE_CLASSES"],
            cfg["SEED"]) == (env["TEACHER"], 2, "base", 1)

    name = "PromptKD/vit_b16_c2_ep20_batch8_4+4ctx/seed1"
    train_log = (out / "base2new/train_base/eurosat/shots_0" / name / "log.txt").read_text()
    cfg, config_file = logged_config(train_log)
    assert config_file.endswith("configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml")
    kd = cfg["TRAINER"]["PROMPTKD"]
    assert (cfg["TRAINER"]["MODAL"], kd["TEACHER_NAME"], kd["TEACHER_CKPT"], kd["KD_WEIGHT"], kd["TEMPERATURE"],
            cfg["DATASET"]["NUM_SHOTS"]) == ("base2novel", env["TEACHER"], str(teacher_dir), 1000.0, 1.0, 0)
    assert "of 10 classes" in train_log  # the student learns on the whole domain
    assert "* total: 15" in train_log  # evaluated on the 5 base classes x 3 test images
    test_log = (out / "base2new/test_new/eurosat/shots_0" / name / "log.txt").read_text()
    assert "model-best.pth.tar" in test_log and "* total: 15" in test_log
    assert f"with the prompts of {teacher_dir}" in test_log  # the teacher recorded in the student's checkpoint
    assert run_all(env, str(tmp_path), *calls).count("skipping") == 3  # teacher, student, evaluation

    few = run_script("scripts/PromptKD/few_shot.sh", ["eurosat", "1", "4"], env, str(tmp_path))
    assert few.returncode == 2 and "PromptKD has the base-to-new and cross-dataset protocols" in few.stderr
    caspl = run_script("scripts/protocols/base2new_train.sh", ["eurosat", "1"], dict(env, METHOD="CasPL_PromptKD"),
                       str(tmp_path))
    assert caspl.returncode == 2 and "unknown method CasPL_PromptKD" in caspl.stderr


@pytest.mark.parametrize("dataset, weight", [("oxford_flowers", 200.0), ("fgvc_aircraft", 200.0), ("dtd", 1000.0)])
def test_promptkd_kd_weight_per_dataset_as_its_scripts(dataset, weight):
    probe = ('. scripts/protocols/common.sh; METHOD=PromptKD; PROTOCOL=$1; '
             'promptkd_teacher() { TEACHER_RUN=/t; }; prepare_method "$2"; printf "%s\\n" "${prepared_opts[@]}"')
    env = dict(os.environ, DATA="/nonexistent", OUT="/out", PYTHON=sys.executable)
    for protocol, expected, modal in (("base2new", weight, "base2novel"), ("cross_dataset", 1000.0, "cross")):
        done = subprocess.run(["bash", "-c", probe, "probe", protocol, dataset], env=env, cwd=ROOT,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        opts = done.stdout.split()
        settings = dict(zip(opts[0::2], opts[1::2]))
        assert float(settings["TRAINER.PROMPTKD.KD_WEIGHT"]) == expected
        assert settings["TRAINER.MODAL"] == modal and settings["TRAINER.PROMPTKD.TEACHER_CKPT"] == "/t"


@pytest.mark.slow
def test_promptkd_xd_scripts_distil_each_target_from_the_source_teacher(tmp_path, tiny_clip_path):
    from datasets.synthshapes import generate

    env = promptkd_env(tmp_path, tiny_clip_path, epochs=1)
    generate(os.path.join(env["DATA"], "synthshapes"), size=32, sizes={"train": 2, "val": 1, "test": 1},
             log=lambda _: None)
    run_all(env, str(tmp_path), ("scripts/PromptKD/xd_train.sh", ["1"]),
            ("scripts/PromptKD/xd_test.sh", ["synthshapes", "1"]), ("scripts/PromptKD/xd_test.sh", ["eurosat", "1"]))
    out = tmp_path / "out"
    teacher_dir = out / "promptkd_teacher/eurosat/all/seed1"
    cfg, _ = logged_config((teacher_dir / "log.txt").read_text())
    assert (cfg["DATASET"]["NAME"], cfg["DATASET"]["SUBSAMPLE_CLASSES"]) == ("EuroSAT", "all")
    cfg_name = "vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets_0shots"
    source_log = (out / "cross_dataset/eurosat/PromptKD" / cfg_name / "seed1/log.txt").read_text()
    cfg, config_file = logged_config(source_log)
    assert config_file.endswith("configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets.yaml")
    assert (cfg["TRAINER"]["MODAL"], cfg["TRAINER"]["PROMPTKD"]["TEACHER_CKPT"]) == ("cross", str(teacher_dir))
    # a dataset target: its own student, distilled on its images from the source's teacher
    target_log = (out / "cross_dataset/evaluation/PromptKD" / cfg_name / "synthshapes/seed1/log.txt").read_text()
    cfg, _ = logged_config(target_log)
    assert (cfg["DATASET"]["NAME"], cfg["TRAINER"]["MODAL"], cfg["TRAINER"]["PROMPTKD"]["TEACHER_CKPT"],
            cfg["TRAINER"]["PROMPTKD"]["KD_WEIGHT"]) == ("SynthShapes", "cross", str(teacher_dir), 1000.0)
    assert "96 training images of 48 classes" in target_log and "* total: 48" in target_log
    assert not (out / "promptkd_teacher/synthshapes").exists()
    # the source itself (and the ImageNet variants): the source's student, evaluated
    source_eval = (out / "cross_dataset/evaluation/PromptKD" / cfg_name / "eurosat/seed1/log.txt").read_text()
    assert "--eval-only" in source_eval or "eval_only: True" in source_eval
    assert "model-best.pth.tar" in source_eval and "=> result" in source_eval
