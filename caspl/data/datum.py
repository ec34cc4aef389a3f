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
from ..utils.io import atomic_write_bytes, atomic_write_text, read_pickle


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def listdir_visible(path):
    """Entries of a folder, without hidden ones (.DS_Store, .ipynb_checkpoints)."""
    return [e for e in os.listdir(path) if not e.startswith(".")]


def list_images(folder):
    """Every image file below `folder` (recursively, hidden entries skipped), sorted."""
    found = []
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(current, f) for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def try_write(write, path, what):
    """Caches are a convenience: a read-only dataset folder gets a warning, not a failure."""
    try:
        write(path)
    except OSError as err:
        print(f"Warning: could not write {what} {path} ({err.strerror}); continuing without it")


class DasslDatum:
    """What Dassl's Datum unpickles into here: its attributes (_impath, _label, ...) and no code."""


# the one class Dassl's few-shot caches (split_fewshot/shot_K-seed_S.pkl) legitimately hold
DASSL_DATUM = {("dassl.data.datasets.base_dataset", "Datum"): DasslDatum}


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


def split_per_class(items, p_train=0.5, p_val=0.2, seed=0):
    """Per label (in label order): shuffle, then round(n * p_train) train, round(n * p_val)
    val, the rest test, as CoOp does when it draws a split itself. Seeded."""
    rng = random.Random(seed)
    train, val, test = [], [], []
    groups = group_by_label(items)
    for label in sorted(groups):
        group = list(groups[label])
        rng.shuffle(group)
        n_train, n_val = round(len(group) * p_train), round(len(group) * p_val)
        train += group[:n_train]
        val += group[n_train:n_train + n_val]
        test += group[n_train + n_val:]
    return train, val, test


def check_on_disk(items, source, base=None):
    """`items` unchanged when every image they name exists; otherwise one clear error."""
    missing = [d.impath for d in items if not os.path.isfile(d.impath)]
    if missing:
        where = f" under {base}" if base else ""
        shown = [os.path.relpath(m, base) if base else m for m in missing[:3]]
        raise CasplError(f"{source} lists {len(missing):,} images that are not on disk{where}, e.g. {', '.join(shown)}")
    return items


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
    required = ()  # other paths (relative to dataset_dir) that must exist
    preparation = "see docs/datasets.md"
    template = "a photo of a {}."  # the hand-written zero-shot prompt for this dataset
    test_only = False  # an evaluation-only set (ImageNet-V2/-Sketch/-A/-R): train_x = test, no few-shot
    few_shot_val = True  # ImageNet's val is its test set, which few-shot sampling leaves whole
    download = None  # a caspl.data.prepare.Recipe: how `python -m caspl.data.prepare` makes the folder

    def __init__(self, cfg):
        self.cfg = cfg
        self.root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = os.path.join(self.root, self.dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, self.image_dir)
        self.check_layout()
        train, val, test = self.read_data()
        if self.test_only:
            train, val = test, []
        else:
            train, val = self.few_shot(train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        self.train_x, self.val, self.test = subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        if not self.train_x:
            raise CasplError(f"{type(self).__name__}: the training split is empty")
        self.lab2cname = {d.label: d.classname for d in self.train_x + self.test}
        self.classnames = [self.lab2cname[i] for i in range(len(self.lab2cname))]
        self.train_u = self.read_unlabeled(cfg.DATASET.UNLABELED_DIRS)

    def check_layout(self):
        name = type(self).__name__
        if not os.path.isdir(self.dataset_dir):
            how = (f"python -m caspl.data.prepare {name} --root {self.root} downloads and lays it out"
                   if self.download else self.preparation)
            raise CasplError(f"{name} not found: expected its images in {self.image_dir} ({how})")
        for path in (self.image_dir, *(os.path.join(self.dataset_dir, p) for p in self.required)):
            if not os.path.exists(path):
                raise CasplError(f"{name} is laid out wrongly: {path} is missing ({self.preparation})")

    @property
    def num_classes(self):
        return len(self.classnames)

    def read_data(self):
        raise NotImplementedError

    # --- split files (CoOp's split_zhou_*.json: [relative path, label, class name]) ---

    def read_split(self, path):
        """(train, val, test) from a split file; every listed image must be on disk."""
        try:
            with open(path, encoding="utf-8") as f:
                split = json.load(f)
            out = tuple(
                [Datum(os.path.join(self.image_dir, p), int(y), c) for p, y, c in split[key]]
                for key in ("train", "val", "test")
            )
        except (ValueError, KeyError, TypeError) as err:
            raise CasplError(f"cannot read split file {path}: {err}") from None
        check_on_disk([d for items in out for d in items], path, self.image_dir)
        return out

    def write_split(self, train, val, test, path):
        def rel(items):
            return [[os.path.relpath(d.impath, self.image_dir), d.label, d.classname] for d in items]

        text = json.dumps({"train": rel(train), "val": rel(val), "test": rel(test)}, indent=1)
        try_write(lambda p: atomic_write_text(text, p), path, "split file")

    def read_or_make_split(self, path, make, official=True):
        """The split file at `path`, or `make()`'s (train, val, test) written there once.
        A made split is seeded, but where an official one exists it is not that: say so."""
        if os.path.isfile(path):
            return self.read_split(path)
        if official:
            print(f"Warning: {path} not found; building a seeded split (numbers are not comparable with "
                  "published ones, which use the official split file)")
        else:
            print(f"Writing a seeded train/val/test split to {path} (reused by later runs)")
        train, val, test = make()
        self.write_split(train, val, test, path)
        return train, val, test

    @staticmethod
    def split_train_val(items, p_val=0.2, seed=0):
        """Per class, a random p_val share of `items` becomes val (at least one, as CoOp does)."""
        rng = random.Random(seed)
        train, val = [], []
        for group in group_by_label(items).values():
            group = list(group)
            rng.shuffle(group)
            n_val = max(1, round(len(group) * p_val)) if len(group) > 1 else 0
            val += group[:n_val]
            train += group[n_val:]
        return train, val

    def split_folders(self, p_train=0.5, p_val=0.2, rename=None, ignored=(), seed=0):
        """One sub-folder per class under image_dir -> random train/val/test split per class
        (the proportions CoOp uses when no split file exists), seeded."""
        rename = rename or {}
        folders = sorted(e for e in listdir_visible(self.image_dir)
                         if os.path.isdir(os.path.join(self.image_dir, e)) and e not in ignored)
        items = []
        for label, folder in enumerate(folders):
            files = sorted(f for f in listdir_visible(os.path.join(self.image_dir, folder))
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            if not files:  # a class without images: refused before any split or cache is written
                raise CasplError(f"{type(self).__name__}: the class folder {os.path.join(self.image_dir, folder)} "
                                 f"holds no images ({', '.join(IMAGE_EXTENSIONS)}): add its images, or remove "
                                 "the folder to leave the class out")
            items += [Datum(os.path.join(self.image_dir, folder, f), label, rename.get(folder, folder)) for f in files]
        return split_per_class(items, p_train, p_val, seed)

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
                return cached[0], cached[1] if self.few_shot_val else val
        for label, group in group_by_label(train).items():
            if len(group) < num_shots:
                raise CasplError(f"{type(self).__name__}: class {group[0].classname!r} (label {label}) has "
                                 f"{len(group)} training images, fewer than the {num_shots} shots asked for")
        # seed < 0 means "not fixed": draw a fresh subset and cache nothing
        rng = random.Random(seed if seed >= 0 else None)
        train = sample_few_shot(train, num_shots, rng)
        if self.few_shot_val:
            val = sample_few_shot(val, min(num_shots, 4), rng)
        if seed >= 0 and not cached_before:  # a val set left whole is not cached (ImageNet's is 50,000 images)
            data = pickle.dumps({"format": "caspl-1", "train": self._relative(train),
                                 "val": self._relative(val) if self.few_shot_val else None})
            try_write(lambda p: atomic_write_bytes(data, p), cache, "few-shot cache")
            print(f"Saved few-shot subset to {cache}")
        return train, val

    def _relative(self, items):
        return [(os.path.relpath(d.impath, self.image_dir), d.label, d.classname) for d in items]

    def _absolute(self, rows):
        return [Datum(os.path.join(self.image_dir, p), y, c) for p, y, c in rows]

    def _load_few_shot(self, path):
        try:
            data = read_pickle(path, "a few-shot cache", allowed=DASSL_DATUM)
        except pickle.UnpicklingError:
            data = None
        if isinstance(data, dict) and data.get("format") == "caspl-1":
            return self._absolute(data["train"]), self._absolute(data["val"] or [])
        if isinstance(data, dict) and all(isinstance(d, DasslDatum) for d in data.get("train", [None])):
            print(f"Note: {path} is Dassl's few-shot cache; resampling it (same subset, file left as is)")
        else:
            print(f"Note: {path} is not a few-shot cache caspl can read; resampling it (file left as is)")
        return None

    # --- parsed indexes of large folders, cached and rebuilt when a folder changes ---

    def cached_index(self, filename, build, watch):
        """`build()` -> dict of Datum lists, cached in dataset_dir/filename with relative
        paths. The cache is stale when any path in `watch` (or a sub-folder of a watched
        folder) has another modification time: adding or removing an image changes its folder's."""

        def stamp(path):
            stamps = {path: os.stat(path).st_mtime_ns}
            if os.path.isdir(path):
                for e in os.scandir(path):
                    if e.is_dir() and not e.name.startswith("."):
                        stamps[e.path] = e.stat().st_mtime_ns
            return stamps

        stamps = {}
        for path in watch:
            stamps.update({os.path.relpath(k, self.dataset_dir): v for k, v in stamp(path).items()})
        path = os.path.join(self.dataset_dir, filename)
        if os.path.isfile(path):
            try:
                cached = read_pickle(path, "an image index")
            except pickle.UnpicklingError:
                cached = None
            if not isinstance(cached, dict) or cached.get("format") != "caspl-index-1":
                print(f"{path} is unreadable; re-indexing the folders")
            elif cached.get("stamps") == stamps:
                return {k: self._absolute(v) for k, v in cached["splits"].items()}
            else:
                print(f"{path} is out of date; re-indexing the folders")
        splits = build()
        data = pickle.dumps({"format": "caspl-index-1", "stamps": stamps,
                             "splits": {k: self._relative(v) for k, v in splits.items()}})
        try_write(lambda p: atomic_write_bytes(data, p), path, "index cache")
        return splits

    # --- extra unlabeled images (for phases that learn without labels) ---

    def read_unlabeled(self, folders):
        items = []
        for folder in folders:
            path = folder if os.path.isabs(folder) else os.path.join(self.root, folder)
            if not os.path.isdir(path):
                raise CasplError(f"unlabeled image folder not found: {path} (from DATASET.UNLABELED_DIRS)")
            found = list_images(path)
            if not found:
                raise CasplError(f"unlabeled image folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            items += [Datum(p, -1, "") for p in found]
        return items
