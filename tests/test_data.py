"""Data layer: few-shot sampling (reference semantics), base/new class split, the EuroSAT
plugin (split file, generated split, few-shot cache), and the DataManager's loaders."""
import json
import os
import pickle
import random
import shutil
from collections import defaultdict

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

import datasets  # noqa: F401  (registers EuroSAT)
import trainers  # noqa: F401  (registers the trainers' config keys)
from caspl import CasplError
from caspl.config import get_cfg_default
from caspl.data import DataManager, DatasetBase, Datum, sample_few_shot, subsample_classes
from caspl.registry import DATASET_REGISTRY
from caspl.testing import make_eurosat
from conftest import snapshot

FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
           "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"]
NAMES = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
         "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake"]
SPLIT_NAME = "split_zhou_EuroSAT.json"


# ----------------------------------------------------------------------------- helpers

def reference_fewshot(items, k):
    """Dassl's generate_fewshot_dataset: global `random`, classes in order of first appearance."""
    tracker = defaultdict(list)
    for item in items:
        tracker[item.label].append(item)
    out = []
    for group in tracker.values():
        out.extend(random.sample(group, k) if len(group) >= k else group)
    return out


def make_items(labels, prefix="img"):
    return [Datum(f"/x/{prefix}_{i}.jpg", y, f"class{y}") for i, y in enumerate(labels)]


def make_cfg(root, shots=-1, seed=1, subsample="all"):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = root
    cfg.DATASET.NAME = "EuroSAT"
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    cfg.USE_CUDA = False
    return cfg


def build(cfg):
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)


def rel(ds, items):
    return [(os.path.relpath(d.impath, ds.image_dir), d.label, d.classname) for d in items]


def per_class(items):
    counts = defaultdict(int)
    for d in items:
        counts[d.label] += 1
    return dict(counts)




def all_strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from all_strings(k)
            yield from all_strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from all_strings(v)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("pristine")
    with_split = make_eurosat(str(base / "with_split"), per_class=10)
    without_split = make_eurosat(str(base / "without_split"), per_class=10, split_file=False)
    return with_split, without_split


@pytest.fixture
def data_root(pristine, tmp_path):
    return shutil.copytree(pristine[0], str(tmp_path / "data"))


@pytest.fixture
def data_root_nosplit(pristine, tmp_path):
    return shutil.copytree(pristine[1], str(tmp_path / "data"))


def cache_path(root, shots, seed):
    return os.path.join(root, "eurosat", "split_fewshot", f"shot_{shots}-seed_{seed}.pkl")


def read_split_file(root):
    with open(os.path.join(root, "eurosat", SPLIT_NAME)) as f:
        split = json.load(f)
    return {k: [Datum(p, int(y), c) for p, y, c in v] for k, v in split.items()}


# ----------------------------------------------------------------------------- sample_few_shot

LABELS = [2, 0, 2, 1, 0, 2, 1, 2, 0, 0, 2, 3, 1, 2, 0, 2]  # 2: 7 items, 0: 5, 1: 3, 3: 1


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_sample_few_shot_counts_and_class_order(k):
    items = make_items(LABELS)
    out = sample_few_shot(items, k, random.Random(5))
    sizes = {2: 7, 0: 5, 1: 3, 3: 1}
    assert per_class(out) == {y: min(k, n) for y, n in sizes.items()}
    # class by class, in order of first appearance (2, 0, 1, 3)
    order = []
    for d in out:
        if not order or order[-1] != d.label:
            order.append(d.label)
    assert order == [2, 0, 1, 3]
    # drawn from the right class, no duplicates
    assert len(set(out)) == len(out)
    assert all(d in items for d in out)


def test_sample_few_shot_small_class_keeps_all_in_original_order():
    items = make_items(LABELS)
    out = sample_few_shot(items, 4, random.Random(0))
    assert [d for d in out if d.label == 1] == [d for d in items if d.label == 1]
    assert [d for d in out if d.label == 3] == [d for d in items if d.label == 3]


def test_sample_few_shot_zero_or_negative_shots_keep_everything():
    items = make_items(LABELS)
    assert sample_few_shot(items, 0, random.Random(0)) == items
    assert sample_few_shot(items, -1, random.Random(0)) == items


@pytest.mark.parametrize("seed", [0, 1, 2, 17])
@pytest.mark.parametrize("k", [1, 2, 4, 8, 16])
def test_sample_few_shot_matches_global_random_reference(seed, k):
    """Same subset as Dassl: random.seed(s); train with K shots; then val with min(K, 4)."""
    train = make_items([i % 6 for i in range(60)] + [6] * 3, "tr")
    val = make_items([(i * 7) % 6 for i in range(30)], "va")
    state = random.getstate()
    try:
        random.seed(seed)
        ref_train = reference_fewshot(train, k)
        ref_val = reference_fewshot(val, min(k, 4))
    finally:
        random.setstate(state)
    rng = random.Random(seed)
    got_train = sample_few_shot(train, k, rng)
    got_val = sample_few_shot(val, min(k, 4), rng)
    assert got_train == ref_train
    assert got_val == ref_val


def test_sample_few_shot_does_not_touch_global_random():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    sample_few_shot(make_items(LABELS), 2, random.Random(0))
    assert random.random() == expected


# ----------------------------------------------------------------------------- subsample_classes

def test_subsample_base_and_new_relabel_in_order():
    labels = [40, 10, 50, 20, 30, 10, 40, 30, 50, 20]
    train = make_items(labels, "tr")
    val = make_items([30, 50, 10], "va")
    test = make_items([50, 40, 30, 20, 10, 60], "te")  # 60 is not in the first split: dropped

    b_train, b_val, b_test = subsample_classes(train, val, test, subsample="base")
    base_map = {10: 0, 20: 1, 30: 2}
    assert b_train == [Datum(d.impath, base_map[d.label], d.classname) for d in train if d.label in base_map]
    assert b_val == [Datum(d.impath, base_map[d.label], d.classname) for d in val if d.label in base_map]
    assert b_test == [Datum(d.impath, base_map[d.label], d.classname) for d in test if d.label in base_map]
    assert [d.label for d in b_train] == [0, 1, 2, 0, 2, 1]
    assert [d.classname for d in b_test] == ["class30", "class20", "class10"]

    n_train, n_val, n_test = subsample_classes(train, val, test, subsample="new")
    new_map = {40: 0, 50: 1}
    assert n_train == [Datum(d.impath, new_map[d.label], d.classname) for d in train if d.label in new_map]
    assert n_val == [Datum(val[1].impath, 1, "class50")]
    assert [(d.label, d.classname) for d in n_test] == [(1, "class50"), (0, "class40")]


def test_subsample_odd_class_count_gives_larger_base_half():
    train = make_items([0, 1, 2, 3, 4] * 2)
    (base,) = subsample_classes(train, subsample="base")
    (new,) = subsample_classes(train, subsample="new")
    assert sorted({d.label for d in base}) == [0, 1, 2]
    assert sorted({d.label for d in new}) == [0, 1]
    assert sorted({d.classname for d in base}) == ["class0", "class1", "class2"]
    assert sorted({d.classname for d in new}) == ["class3", "class4"]
    assert len(base) == 6 and len(new) == 4


def test_subsample_base_uses_labels_of_first_split_only():
    # the first split has 4 classes (0..3): base is {0, 1} even though test also has 4..7
    train = make_items([0, 1, 2, 3])
    test = make_items([0, 1, 2, 3, 4, 5, 6, 7])
    _, b_test = subsample_classes(train, test, subsample="base")
    _, n_test = subsample_classes(train, test, subsample="new")
    assert [d.label for d in b_test] == [0, 1]
    assert [(d.label, d.classname) for d in n_test] == [(0, "class2"), (1, "class3")]


def test_subsample_all_is_unchanged():
    train, test = make_items([3, 1, 2]), make_items([2, 9])
    out = subsample_classes(train, test, subsample="all")
    assert list(out[0]) == train and list(out[1]) == test


@pytest.mark.parametrize("bad", ["Base", "novel", "", "half"])
def test_subsample_bad_value_raises(bad):
    with pytest.raises(CasplError, match="SUBSAMPLE_CLASSES"):
        subsample_classes(make_items([0, 1]), subsample=bad)


# ----------------------------------------------------------------------------- EuroSAT with a split file

def test_eurosat_full_split_matches_split_file(data_root):
    ds = build(make_cfg(data_root, shots=-1))
    split = read_split_file(data_root)
    assert ds.num_classes == 10
    assert ds.classnames == NAMES
    assert ds.lab2cname == dict(enumerate(NAMES))
    image_dir = os.path.join(os.path.abspath(data_root), "eurosat", "2750")
    for got, key in ((ds.train_x, "train"), (ds.val, "val"), (ds.test, "test")):
        assert [(d.impath, d.label, d.classname) for d in got] == [
            (os.path.join(image_dir, d.impath), d.label, d.classname) for d in split[key]]
        assert all(os.path.isfile(d.impath) for d in got)
    assert per_class(ds.train_x) == {y: 5 for y in range(10)}
    assert per_class(ds.val) == {y: 2 for y in range(10)}
    assert per_class(ds.test) == {y: 3 for y in range(10)}
    assert not os.path.exists(os.path.join(data_root, "eurosat", "split_fewshot"))


@pytest.mark.parametrize("shots,seed", [(1, 1), (2, 3), (4, 0), (5, 2)])
def test_eurosat_fewshot_matches_reference_sampling(data_root, shots, seed):
    ds = build(make_cfg(data_root, shots=shots, seed=seed))
    split = read_split_file(data_root)
    state = random.getstate()
    try:
        random.seed(seed)
        ref_train = reference_fewshot(split["train"], shots)
        ref_val = reference_fewshot(split["val"], min(shots, 4))
    finally:
        random.setstate(state)
    assert rel(ds, ds.train_x) == [(d.impath, d.label, d.classname) for d in ref_train]
    assert rel(ds, ds.val) == [(d.impath, d.label, d.classname) for d in ref_val]
    # 5 train and 2 val images per class in the split file
    assert per_class(ds.train_x) == {y: min(shots, 5) for y in range(10)}
    assert per_class(ds.val) == {y: min(shots, 4, 2) for y in range(10)}
    assert per_class(ds.test) == {y: 3 for y in range(10)}  # test is never subsampled
    assert ds.classnames == NAMES


def test_eurosat_fewshot_cache_written_relative_and_reused(data_root):
    cfg = make_cfg(data_root, shots=2, seed=1)
    ds = build(cfg)
    path = cache_path(data_root, 2, 1)
    assert os.listdir(os.path.dirname(path)) == ["shot_2-seed_1.pkl"]
    with open(path, "rb") as f:
        raw = f.read()
    data = pickle.loads(raw)
    strings = list(all_strings(data))
    assert strings, "the cache holds the image paths"
    assert not any(os.path.isabs(s) for s in strings)
    assert os.path.abspath(data_root).encode() not in raw
    assert str(data_root).encode() not in raw

    # reused: a valid but recognisably edited cache is what the second construction sees
    data["train"] = list(reversed(data["train"]))[:3]
    with open(path, "wb") as f:
        pickle.dump(data, f)
    ds2 = build(cfg)
    assert rel(ds2, ds2.train_x) == [tuple(t) for t in data["train"]]
    assert rel(ds2, ds2.train_x) == list(reversed(rel(ds, ds.train_x)))[:3]
    assert rel(ds2, ds2.val) == rel(ds, ds.val)
    assert ds2.test == ds.test


def test_eurosat_fewshot_cache_not_rewritten_on_reuse(data_root):
    cfg = make_cfg(data_root, shots=2, seed=4)
    ds = build(cfg)
    path = cache_path(data_root, 2, 4)
    os.utime(path, (1_000_000, 1_000_000))
    ds2 = build(cfg)
    assert os.stat(path).st_mtime == 1_000_000
    assert ds2.train_x == ds.train_x and ds2.val == ds.val


def test_eurosat_cache_survives_moving_the_data_root(data_root, tmp_path):
    cfg = make_cfg(data_root, shots=2, seed=1)
    ds = build(cfg)
    with open(cache_path(data_root, 2, 1), "rb") as f:
        cached = f.read()
    moved = str(tmp_path / "elsewhere" / "data")
    shutil.move(data_root, moved)
    # make the cache recognisable: a subset the sampler would not produce
    data = pickle.loads(cached)
    data["train"] = data["train"][::2]
    with open(cache_path(moved, 2, 1), "wb") as f:
        pickle.dump(data, f)
    ds2 = build(make_cfg(moved, shots=2, seed=1))
    assert all(d.impath.startswith(os.path.abspath(moved) + os.sep) for d in ds2.train_x + ds2.val + ds2.test)
    assert all(os.path.isfile(d.impath) for d in ds2.train_x + ds2.val)
    assert rel(ds2, ds2.train_x) == rel(ds, ds.train_x)[::2]
    assert rel(ds2, ds2.val) == rel(ds, ds.val)


def test_eurosat_seed_zero_is_a_real_seed(data_root):
    cfg = make_cfg(data_root, shots=2, seed=0)
    ds = build(cfg)
    assert os.path.isfile(cache_path(data_root, 2, 0))
    os.remove(cache_path(data_root, 2, 0))
    ds2 = build(cfg)  # sampled again, not loaded
    assert ds2.train_x == ds.train_x and ds2.val == ds.val
    assert os.path.isfile(cache_path(data_root, 2, 0))
    # the seed-0 cache is read back like any other
    with open(cache_path(data_root, 2, 0), "rb") as f:
        data = pickle.load(f)
    data["train"] = data["train"][1:]
    with open(cache_path(data_root, 2, 0), "wb") as f:
        pickle.dump(data, f)
    assert build(cfg).train_x == ds.train_x[1:]
    # and a different seed gives a different subset
    ds3 = build(make_cfg(data_root, shots=2, seed=1))
    assert ds3.train_x != ds.train_x


def test_eurosat_negative_seed_writes_no_cache(data_root):
    ds = build(make_cfg(data_root, shots=2, seed=-1))
    assert not os.path.exists(os.path.join(data_root, "eurosat", "split_fewshot"))
    assert per_class(ds.train_x) == {y: 2 for y in range(10)}
    assert per_class(ds.val) == {y: 2 for y in range(10)}


@pytest.mark.parametrize("content", [
    b"\x00not a pickle at all\xff",
    pickle.dumps({"train": [("a.jpg", 0, "x")], "val": []}),  # a dict without caspl's format tag
    pickle.dumps([1, 2, 3]),
])
def test_eurosat_foreign_cache_is_kept_and_subset_resampled(data_root, content):
    path = cache_path(data_root, 2, 1)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(content)
    ds = build(make_cfg(data_root, shots=2, seed=1))
    with open(path, "rb") as f:
        assert f.read() == content
    assert os.listdir(os.path.dirname(path)) == ["shot_2-seed_1.pkl"]
    # the exact subset a fresh sampling gives
    fresh = os.path.join(os.path.dirname(data_root), "fresh")
    shutil.copytree(os.path.join(data_root, "eurosat"), os.path.join(fresh, "eurosat"),
                    ignore=shutil.ignore_patterns("split_fewshot"))
    ref = build(make_cfg(fresh, shots=2, seed=1))
    assert rel(ds, ds.train_x) == rel(ref, ref.train_x)
    assert rel(ds, ds.val) == rel(ref, ref.val)


@pytest.mark.parametrize("subsample,names", [("base", NAMES[:5]), ("new", NAMES[5:])])
def test_eurosat_base_new_halves(data_root, subsample, names):
    full = build(make_cfg(data_root, shots=2, seed=1))
    ds = build(make_cfg(data_root, shots=2, seed=1, subsample=subsample))
    assert ds.num_classes == 5
    assert ds.classnames == names
    assert ds.lab2cname == dict(enumerate(names))
    assert per_class(ds.train_x) == {y: 2 for y in range(5)}
    assert per_class(ds.val) == {y: 2 for y in range(5)}
    assert per_class(ds.test) == {y: 3 for y in range(5)}
    offset = 0 if subsample == "base" else 5
    for got, ref in ((ds.train_x, full.train_x), (ds.val, full.val), (ds.test, full.test)):
        assert got == [Datum(d.impath, d.label - offset, d.classname) for d in ref
                       if offset <= d.label < offset + 5]
    assert all(NAMES[d.label + offset] == d.classname for d in ds.train_x + ds.test)


class Synthetic(DatasetBase):
    """A DatasetBase whose split is generated in memory: 12 train and 7 val items per class,
    classes interleaved, so that K > 4 shows the val cap of min(K, 4)."""
    dataset_dir = "synthetic"
    image_dir = "images"

    def read_data(self):
        def mk(n, tag):
            return [Datum(os.path.join(self.image_dir, f"{tag}_{i}.jpg"), (i * 5) % 6, f"c{(i * 5) % 6}")
                    for i in range(n)]

        return mk(72, "tr"), mk(42, "va"), mk(18, "te")


@pytest.mark.parametrize("shots,seed", [(8, 1), (12, 0), (5, 3)])
def test_datasetbase_fewshot_val_capped_at_four(tmp_path, shots, seed):
    os.makedirs(tmp_path / "synthetic" / "images")
    cfg = make_cfg(str(tmp_path), shots=shots, seed=seed)
    ds = Synthetic(cfg)
    assert per_class(ds.train_x) == {y: min(shots, 12) for y in range(6)}
    assert per_class(ds.val) == {y: 4 for y in range(6)}
    assert len(ds.test) == 18
    train, val, _ = ds.read_data()
    state = random.getstate()
    try:
        random.seed(seed)
        ref_train = reference_fewshot(train, shots)
        ref_val = reference_fewshot(val, min(shots, 4))
    finally:
        random.setstate(state)
    assert ds.train_x == ref_train and ds.val == ref_val
    # the labels of the first appearance order: 0, 5, 4, 3, 2, 1
    assert [d.label for d in ds.val[::4]] == [0, 5, 4, 3, 2, 1]
    assert ds.classnames == [f"c{y}" for y in range(6)]
    again = Synthetic(cfg)  # from the cache
    assert again.train_x == ds.train_x and again.val == ds.val


# ----------------------------------------------------------------------------- EuroSAT without a split file

def test_eurosat_generates_writes_and_reuses_a_split(data_root_nosplit, pristine, tmp_path):
    root = data_root_nosplit
    before = snapshot(root)
    ds = build(make_cfg(root, shots=-1))
    after = snapshot(root)
    split_rel = os.path.join("eurosat", SPLIT_NAME)
    assert set(after) - set(before) == {split_rel}
    assert {k: v for k, v in after.items() if k != split_rel} == before  # nothing else touched

    with open(os.path.join(root, split_rel)) as f:
        split = json.load(f)
    assert set(split) == {"train", "val", "test"}
    for key, n in (("train", 5), ("val", 2), ("test", 3)):
        entries = split[key]
        assert per_class([Datum(p, y, c) for p, y, c in entries]) == {y: n for y in range(10)}
        for p, y, c in entries:
            assert not os.path.isabs(p)
            assert p.split("/")[0] == FOLDERS[y]
            assert c == NAMES[y]
            assert os.path.isfile(os.path.join(root, "eurosat", "2750", p))
    assert ds.classnames == NAMES
    assert rel(ds, ds.train_x) == [tuple(e) for e in split["train"]]
    assert rel(ds, ds.test) == [tuple(e) for e in split["test"]]
    # each image in exactly one split
    all_paths = [p for key in split for p, _, _ in split[key]]
    assert len(all_paths) == len(set(all_paths)) == 100

    # the documented seeded split: classes in sorted folder order, files sorted then shuffled
    # with one random.Random(0) across classes, then 50% / 20% / rest
    rng = random.Random(0)
    expected = {"train": [], "val": [], "test": []}
    for y, folder in enumerate(sorted(FOLDERS)):
        files = sorted(os.listdir(os.path.join(root, "eurosat", "2750", folder)))
        rng.shuffle(files)
        entries = [[f"{folder}/{f}", y, NAMES[FOLDERS.index(folder)]] for f in files]
        expected["train"] += entries[:5]
        expected["val"] += entries[5:7]
        expected["test"] += entries[7:]
    assert split == expected

    # reused: an edit to the written file is what the next construction reads
    split["test"] = split["test"][:4]
    with open(os.path.join(root, split_rel), "w") as f:
        json.dump(split, f)
    ds2 = build(make_cfg(root, shots=-1))
    assert rel(ds2, ds2.test) == [tuple(e) for e in split["test"]]

    # deterministic: an independent copy generates the same file
    other = shutil.copytree(pristine[1], str(tmp_path / "other"))
    build(make_cfg(other, shots=-1))
    with open(os.path.join(other, split_rel)) as f:
        regenerated = json.load(f)
    assert regenerated["train"] == [list(e) for e in rel(ds, ds.train_x)]
    assert regenerated["val"] == [list(e) for e in rel(ds, ds.val)]
    assert regenerated["test"] == [list(e) for e in rel(ds, ds.test)]


def test_eurosat_generated_split_ignores_hidden_entries(data_root_nosplit):
    image_dir = os.path.join(data_root_nosplit, "eurosat", "2750")
    os.makedirs(os.path.join(image_dir, ".ipynb_checkpoints"))
    with open(os.path.join(image_dir, "Forest", ".DS_Store"), "wb") as f:
        f.write(b"\x00\x01")
    ds = build(make_cfg(data_root_nosplit, shots=-1))
    assert ds.classnames == NAMES
    assert not any(os.path.basename(d.impath).startswith(".") for d in ds.train_x + ds.val + ds.test)


# ----------------------------------------------------------------------------- missing data

def test_more_shots_than_a_class_has_names_the_class(data_root):
    with pytest.raises(CasplError, match="class 'Annual Crop Land' .* has 5 training images, fewer than the 8 shots"):
        build(make_cfg(data_root, shots=8))
    assert not os.path.exists(os.path.join(data_root, "eurosat", "split_fewshot", "shot_8-seed_1.pkl"))


def test_missing_dataset_folder_names_expected_path(tmp_path):
    root = str(tmp_path / "nowhere")
    with pytest.raises(CasplError) as err:
        build(make_cfg(root))
    assert os.path.join(os.path.abspath(root), "eurosat", "2750") in str(err.value)
    assert "EuroSAT" in str(err.value)


def test_missing_image_folder_with_dataset_folder_present(tmp_path):
    os.makedirs(tmp_path / "eurosat")
    with pytest.raises(CasplError, match="2750"):
        build(make_cfg(str(tmp_path)))


# ----------------------------------------------------------------------------- DataManager

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture
def dm(data_root):
    cfg = make_cfg(data_root, shots=2, seed=1)
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = MEAN, STD
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 8
    return DataManager(cfg)


def test_datamanager_train_loader_yields_normalised_batches(dm):
    assert dm.num_classes == 10 and dm.classnames == NAMES
    batches = list(dm.train_loader_x)
    assert len(batches) == 5  # 20 images, batch 4
    lo = torch.tensor([(0 - m) / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)
    for b in batches:
        img = b["img"]
        assert img.shape == (4, 3, 32, 32) and img.dtype == torch.float32
        assert bool((img >= lo - 1e-5).all()) and bool((img <= hi + 1e-5).all())
        assert b["label"].dtype == torch.int64 and b["label"].shape == (4,)
    imgs = torch.cat([b["img"] for b in batches])
    assert float(imgs.min()) < 0  # normalised, not in [0, 1]
    labels = torch.cat([b["label"] for b in batches]).tolist()
    assert sorted(labels) == sorted([y for y in range(10) for _ in range(2)])
    test_batches = list(dm.test_loader)
    assert sum(len(b["label"]) for b in test_batches) == 30
    assert dm.val_loader is not None


def test_datamanager_test_transform_is_deterministic_and_exact(dm):
    ds = dm.test_loader.dataset
    a, b = ds[0]["img"], ds[0]["img"]
    assert torch.equal(a, b)
    assert a.shape == (3, 32, 32)
    with Image.open(dm.dataset.test[0].impath) as im:
        img = im.convert("RGB")
    expected = TF.normalize(TF.to_tensor(TF.center_crop(TF.resize(img, 32, interpolation=InterpolationMode.BILINEAR),
                                                        [32, 32])), MEAN, STD)
    torch.testing.assert_close(a, expected)
    # the test loader does not shuffle
    order = [i for batch in dm.test_loader for i in batch["index"].tolist()]
    assert order == list(range(30))


def test_datamanager_set_epoch_reproducible_shuffle(dm):
    def order(seed, epoch):
        dm.set_epoch(seed, epoch)
        return [i for b in dm.train_loader_x for i in b["index"].tolist()]

    e0, e1 = order(1, 0), order(1, 1)
    e0_again = order(1, 0)
    e1_again = order(1, 1)
    assert sorted(e0) == sorted(e1) == list(range(20))
    assert e0 == e0_again and e1 == e1_again
    assert e0 != e1
    assert order(2, 0) != e0
    # independent of what ran before: a fresh manager gives the same epoch-1 order
    fresh = DataManager(dm.cfg)
    fresh.set_epoch(1, 1)
    assert [i for b in fresh.train_loader_x for i in b["index"].tolist()] == e1
