import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import datasets  # noqa: E402,F401  (registers the dataset plugins)
import trainers  # noqa: E402,F401  (registers the trainer plugins)
from caspl.clip import load_clip  # noqa: E402
from caspl.testing import make_eurosat, make_tiny_clip  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory):
    return make_tiny_clip(str(tmp_path_factory.mktemp("clip") / "tiny.pt"))


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_path):
    return load_clip(tiny_clip_path)


@pytest.fixture
def eurosat_root(tmp_path):
    return make_eurosat(str(tmp_path / "data"), per_class=10)


def build_trainer(root, clip_path, out, trainer="CoOp", config="configs/trainers/CoOp/vit_b16_ep50.yaml",
                  dataset="eurosat", **opts):
    """A trainer built in-process from the repo's YAML files (configs/datasets/<dataset>.yaml
    and `config`) plus KEY=VALUE overrides."""
    from caspl import TRAINER_REGISTRY
    from caspl.config import get_cfg_default, merge_file, merge_opts
    from caspl.utils import set_random_seed

    cfg = get_cfg_default()
    merge_file(cfg, os.path.join(ROOT, "configs/datasets", dataset + ".yaml"))
    merge_file(cfg, os.path.join(ROOT, config))
    base = {"DATASET.ROOT": root, "OUTPUT_DIR": out, "SEED": 1, "MODEL.BACKBONE.NAME": clip_path,
            "INPUT.SIZE": (32, 32), "DATALOADER.NUM_WORKERS": 0, "TRAIN.PRINT_FREQ": 1000, "TRAINER.NAME": trainer}
    base.update({k.replace("__", "."): v for k, v in opts.items()})
    merge_opts(cfg, [x for kv in base.items() for x in kv])
    cfg.freeze()
    set_random_seed(cfg.SEED)
    return TRAINER_REGISTRY.get(trainer)(cfg)


class Killed(Exception):
    """Stands for a kill (or a crash) at one write of a run."""


def train_killed_at_save(trainer, monkeypatch, doomed):
    """`trainer.train()`, killed (Killed) at the first checkpoint save for which
    `doomed(checkpoint, path)` is true."""
    import caspl.engine.trainer

    save = caspl.engine.trainer.atomic_save

    def atomic_save(ckpt, path):
        if doomed(ckpt, path):
            raise Killed
        save(ckpt, path)

    with monkeypatch.context() as patch:
        patch.setattr(caspl.engine.trainer, "atomic_save", atomic_save)
        with pytest.raises(Killed):
            trainer.train()


def run_cli(args):
    """train.py's main in-process; undoes its stdout tee (closing log.txt) afterwards."""
    from caspl.cli import main

    before = sys.stdout
    try:
        return main(args)
    finally:
        tee, sys.stdout = sys.stdout, before
        if tee is not before and hasattr(tee, "file"):
            tee.file.close()


def snapshot(folder):
    """Relative path -> sha1 of every file below `folder` (to show what a run changed)."""
    import hashlib

    out = {}
    for current, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(current, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha1(fh.read()).hexdigest()
    return out


def zero_shot_eval(root, dataset_config, clip_path, out):
    """ZeroshotCLIP --eval-only through a dataset's config file; returns (exit code, log text)."""
    code = run_cli(["--root", root, "--trainer", "ZeroshotCLIP", "--seed", "1",
                    "--dataset-config-file", os.path.join(ROOT, "configs", "datasets", dataset_config + ".yaml"),
                    "--config-file", os.path.join(ROOT, "configs", "trainers", "ZeroshotCLIP", "vit_b16.yaml"),
                    "--output-dir", out, "--eval-only", "MODEL.BACKBONE.NAME", clip_path,
                    "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0"])
    log_path = os.path.join(out, "log.txt")
    return code, open(log_path).read() if os.path.isfile(log_path) else ""
