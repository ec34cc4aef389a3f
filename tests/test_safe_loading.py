"""Loading a file never runs code: checkpoints are read with weights_only=True (and caspl
writes them so that this works, for Dassl's own load_checkpoint too), and the pickles a
dataset folder holds (few-shot caches, the image index) are read with a restricted
unpickler. Each crafted file below would create a marker file if it were unpickled."""
import os
import pickle
import random
import sys
import types

import numpy as np
import pytest
import torch

import datasets  # noqa: F401  (registers the dataset plugins)
import miniatures as M
from caspl import CasplError
from caspl.config import get_cfg_default
from caspl.engine import read_checkpoint
from caspl.registry import DATASET_REGISTRY
from caspl.testing import make_eurosat
from caspl.utils import get_rng_state, set_rng_state
from conftest import ROOT, run_cli, snapshot


class Payload:
    """Unpickling this creates `marker` (what an attacker's code would do, harmlessly)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def build(root, name, shots=-1, seed=1):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED = root, name, shots, seed
    return DATASET_REGISTRY.get(name)(cfg)


def test_rng_state_is_plain_and_round_trips(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    path = str(tmp_path / "state.pt")
    torch.save(get_rng_state(), path)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(2).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(torch.load(path, weights_only=True))
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(2).tolist()) == expected


def test_crafted_checkpoint_is_refused_when_resuming(tmp_path, eurosat_root, tiny_clip_path):
    out, marker = str(tmp_path / "out"), str(tmp_path / "marker")
    folder = os.path.join(out, "prompt_learner")
    os.makedirs(folder)
    torch.save({"state_dict": {"ctx": torch.zeros(4, 64)}, "epoch": 1, "meta": Payload(marker)},
               os.path.join(folder, "model.pth.tar-1"))
    with open(os.path.join(folder, "checkpoint"), "w") as f:
        f.write("model.pth.tar-1\n")
    before = snapshot(folder)
    code = run_cli(["--root", eurosat_root, "--seed", "1", "--trainer", "CoOp",
                    "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                    "--config-file", os.path.join(ROOT, "configs/trainers/CoOp/vit_b16_ep50.yaml"),
                    "--output-dir", out, "MODEL.BACKBONE.NAME", tiny_clip_path, "INPUT.SIZE", "(32, 32)",
                    "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2"])
    assert code == 2
    assert not os.path.exists(marker)
    assert snapshot(folder) == before  # nothing written over, nothing removed
    with open(os.path.join(out, "log.txt")) as f:
        last = f.read().strip().splitlines()[-1]
    assert last.startswith("error: refusing to load ") and "model.pth.tar-1" in last and "io.open" in last


def test_crafted_boosting_checkpoint_is_refused(tmp_path):
    marker, path = str(tmp_path / "marker"), str(tmp_path / "boost.pth.tar")
    torch.save({"state_dict": {}, "epoch": 20, "meta": {"boost": Payload(marker)}}, path)
    with pytest.raises(CasplError, match=r"refusing to load .*boost\.pth\.tar: it holds io\.open"):
        read_checkpoint(path)
    assert not os.path.exists(marker) and os.listdir(tmp_path) == ["boost.pth.tar"]


def test_not_a_checkpoint_is_one_clear_line(tmp_path):
    path = tmp_path / "model.pth.tar-1"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CasplError, match="cannot read checkpoint .*model.pth.tar-1"):
        read_checkpoint(str(path))


def test_crafted_few_shot_cache_is_refused(tmp_path):
    root, marker = make_eurosat(str(tmp_path / "data"), per_class=6), str(tmp_path / "marker")
    cache = os.path.join(root, "eurosat", "split_fewshot", "shot_2-seed_1.pkl")
    os.makedirs(os.path.dirname(cache))
    with open(cache, "wb") as f:
        pickle.dump({"train": [Payload(marker)], "val": []}, f)
    before = snapshot(root)
    with pytest.raises(CasplError, match=r"refusing to read .*shot_2-seed_1\.pkl: it holds io\.open, "
                                         r"which a few-shot cache never contains"):
        build(root, "EuroSAT", shots=2)
    assert not os.path.exists(marker)
    assert snapshot(root) == before


def test_dassl_few_shot_cache_is_read_without_dassl_and_resampled(tmp_path, monkeypatch, capsys):
    """Dassl's caches pickle its Datum class: allowed (as plain attributes), then resampled."""
    root = make_eurosat(str(tmp_path / "data"), per_class=6)
    expected = build(root, "EuroSAT", shots=2)
    cache = os.path.join(root, "eurosat", "split_fewshot", "shot_2-seed_1.pkl")
    module = types.ModuleType("dassl.data.datasets.base_dataset")

    class Datum:  # Dassl's attributes, pickled under Dassl's module path
        def __init__(self, impath, label):
            self._impath, self._label, self._domain, self._classname = impath, label, 0, "x"

    Datum.__module__, Datum.__qualname__ = module.__name__, "Datum"
    module.Datum = Datum
    for parent in ("dassl", "dassl.data", "dassl.data.datasets"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    with open(cache, "wb") as f:
        pickle.dump({"train": [Datum("/elsewhere/a.jpg", 0)], "val": [Datum("/elsewhere/b.jpg", 1)]}, f,
                    protocol=pickle.HIGHEST_PROTOCOL)
    monkeypatch.undo()  # caspl reads it without Dassl
    capsys.readouterr()
    again = build(root, "EuroSAT", shots=2)
    assert "is Dassl's few-shot cache; resampling it" in capsys.readouterr().out
    assert again.train_x == expected.train_x and again.val == expected.val


def test_crafted_image_index_is_refused_and_coop_preprocessed_never_read(tmp_path):
    root, marker = str(tmp_path), str(tmp_path / "marker")
    M.make_imagenet(root)
    base = os.path.join(root, "imagenet")
    with open(os.path.join(base, "caspl_index.pkl"), "wb") as f:
        pickle.dump({"format": "caspl-index-1", "stamps": Payload(marker)}, f)
    with open(os.path.join(base, "preprocessed.pkl"), "wb") as f:  # CoOp's index: caspl never reads it
        pickle.dump({"train": Payload(marker + "2")}, f)
    before = snapshot(base)
    with pytest.raises(CasplError, match=r"refusing to read .*caspl_index\.pkl: it holds io\.open"):
        build(root, "ImageNet")
    assert not os.path.exists(marker) and snapshot(base) == before
    os.remove(os.path.join(base, "caspl_index.pkl"))
    assert build(root, "ImageNet").classnames  # rebuilt from the folders
    assert not os.path.exists(marker + "2")
