"""Datum and DatasetBase: the lists of images a run sees, few-shot sampling (cached per
shots and seed) and the base/new class split."""
import json
import math
import os
import pickle
import random
from collections import OrderedDict
from dataclasses import dataclass

from ..errors import CasplError
from ..utils.io import atomic_write_bytes, atomic_write_text


def listdir_visible(path):
    """Entries of a folder, without hidden ones (.DS_Store, .ipynb_checkpoints)."""
    return [e for e in os.listdir(path) if not e.startswith(".")]


@dataclass(frozen=True)
class Datum:
    impath: str
    label: int = 0
    classname: str = ""
    domain: int = 0


def group_by_label(items):
    """Label -> items, in order of first appearance (the order the references sample in)."""
    groups = OrderedDict()
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def sample_few_shot(items, num_shots, rng):
    """K items per class via rng.sample, class by class; a class with fewer keeps all."""
    if num_shots < 1:
        return list(items)
    out = []
    for group in group_by_label(items).values():
        out.extend(rng.sample(group, num_shots) if len(group) >= num_shots else group)
    return out


def subsample_classes(*splits, subsample="all"):
    """Keep the base (first ceil(n/2) sorted labels of the first split) or new (the rest)
    classes, relabelled from 0 in label order."""
    if subsample == "all":
        return splits
    if subsample not in ("base", "new"):
        raise CasplError(f"DATASET.SUBSAMPLE_CLASSES must be all, base or new, not {subsample!r}")
    labels = sorted({d.label for d in splits[0]})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabel = {old: new for new, old in enumerate(selected)}
    return tuple(
        [Datum(d.impath, relabel[d.label], d.classname, d.domain) for d in split if d.label in relabel]
        for split in splits
    )


class DatasetBase:
    """A dataset: `read_data()` returns (train, val, test) lists of Datum for all classes;
    the base class applies few-shot sampling and class subsampling from the config.

    Subclasses set `dataset_dir` (the folder under DATASET.ROOT) and `image_dir` (the
    folder that split-file paths are relative to) and describe in `preparation` where
    the data comes from."""

    dataset_dir = ""
    image_dir = ""
    preparation = "see CoOp's DATASETS.md"
    template = "a photo of a {}."  # the hand-written zero-shot prompt for this dataset

    def __init__(self, cfg):
        self.root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = os.path.join(self.root, type(self).dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, type(self).image_dir)
        if not os.path.isdir(self.image_dir):
            raise CasplError(
                f"{type(self).__name__} not found: expected its images in {self.image_dir} ({self.preparation})"
            )
        train, val, test = self.read_data()
        train, val = self.few_shot(train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        self.train_x, self.val, self.test = subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        if not self.train_x:
            raise CasplError(f"{type(self).__name__}: the training split is empty")
        self.lab2cname = {d.label: d.classname for d in self.train_x + self.test}
        self.classnames = [self.lab2cname[i] for i in range(len(self.lab2cname))]

    @property
    def num_classes(self):
        return len(self.classnames)

    def read_data(self):
        raise NotImplementedError

    # --- split files (CoOp's split_zhou_*.json: [relative path, label, class name]) ---

    def read_split(self, path):
        with open(path, encoding="utf-8") as f:
            split = json.load(f)
        return tuple(
            [Datum(os.path.join(self.image_dir, p), int(y), c) for p, y, c in split[key]]
            for key in ("train", "val", "test")
        )

    def write_split(self, train, val, test, path):
        rel = lambda items: [[os.path.relpath(d.impath, self.image_dir), d.label, d.classname] for d in items]
        atomic_write_text(json.dumps({"train": rel(train), "val": rel(val), "test": rel(test)}, indent=1), path)

    def split_folders(self, p_train=0.5, p_val=0.2, rename=None, seed=0):
        """One sub-folder per class under image_dir -> random train/val/test split per class
        (the proportions CoOp uses when no split file exists), seeded."""
        rng = random.Random(seed)
        rename = rename or {}
        train, val, test = [], [], []
        folders = sorted(e for e in listdir_visible(self.image_dir) if os.path.isdir(os.path.join(self.image_dir, e)))
        for label, folder in enumerate(folders):
            files = sorted(listdir_visible(os.path.join(self.image_dir, folder)))
            rng.shuffle(files)
            items = [Datum(os.path.join(self.image_dir, folder, f), label, rename.get(folder, folder)) for f in files]
            n_train, n_val = round(len(items) * p_train), round(len(items) * p_val)
            train += items[:n_train]
            val += items[n_train:n_train + n_val]
            test += items[n_train + n_val:]
        return train, val, test

    # --- few-shot subsets, cached beside the dataset with relative paths ---

    def few_shot(self, train, val, num_shots, seed):
        if num_shots < 1:
            return train, val
        cache = os.path.join(self.dataset_dir, "split_fewshot", f"shot_{num_shots}-seed_{seed}.pkl")
        cached_before = seed >= 0 and os.path.isfile(cache)
        if cached_before:
            cached = self._load_few_shot(cache)
            if cached is not None:
                print(f"Loading few-shot subset from {cache}")
                return cached
        # seed < 0 means "not fixed": draw a fresh subset and cache nothing
        rng = random.Random(seed if seed >= 0 else None)
        train = sample_few_shot(train, num_shots, rng)
        val = sample_few_shot(val, min(num_shots, 4), rng)
        if seed >= 0 and not cached_before:
            rel = lambda items: [(os.path.relpath(d.impath, self.image_dir), d.label, d.classname) for d in items]
            atomic_write_bytes(pickle.dumps({"format": "caspl-1", "train": rel(train), "val": rel(val)}), cache)
            print(f"Saved few-shot subset to {cache}")
        return train, val

    def _load_few_shot(self, path):
        try:
            with open(path, "rb") as f:
                data = pickle.load(f)
        except Exception:  # e.g. a Dassl pickle of Dassl Datum objects: resample (exact), keep the file
            data = None
        if not isinstance(data, dict) or data.get("format") != "caspl-1":
            print(f"Note: {path} is not a caspl few-shot cache; resampling it (same subset, file left as is)")
            return None
        return tuple(
            [Datum(os.path.join(self.image_dir, p), y, c) for p, y, c in data[key]] for key in ("train", "val")
        )
