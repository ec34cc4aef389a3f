"""The benchmark dataset plugins on miniature copies of the real layouts (tests/miniatures.py):
class names and labels, split membership, base/new halves, few-shot subsets and their cache,
splits built from annotations when the split file is absent, the ImageNet folder-index
cache, and a zero-shot evaluation through each dataset's config file."""
import json
import math
import os
import shutil
import sys
import types
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import pytest

import datasets  # noqa: F401  (registers the dataset plugins)
import datasets.imagenet
import datasets.imagenet_variants
import miniatures as M
from caspl import CasplError
from caspl.config import get_cfg_default
from caspl.data import datum as datum_module
from caspl.data.datum import list_images
from caspl.registry import DATASET_REGISTRY
from conftest import snapshot, zero_shot_eval

PHOTO = "a photo of a {}."


@dataclass(frozen=True)
class Spec:
    make: Callable  # miniature generator: root -> class names in label order
    config: str  # configs/datasets/<config>.yaml
    folder: str  # dataset folder under the root
    template: str
    split_json: str = ""  # the split file the real dataset ships ("" = none)
    generated: str = ""  # how the split is built without it: folders | annotations | mat
    test_only: bool = False
    indexed: bool = False  # folder scan cached in caspl_index.pkl


SPECS = {
    "ImageNet": Spec(M.make_imagenet, "imagenet", "imagenet", PHOTO, indexed=True),
    "Caltech101": Spec(M.make_caltech101, "caltech101", "caltech-101", PHOTO,
                       "split_zhou_Caltech101.json", "folders"),
    "OxfordPets": Spec(M.make_oxford_pets, "oxford_pets", "oxford_pets", "a photo of a {}, a type of pet.",
                       "split_zhou_OxfordPets.json", "annotations"),
    "StanfordCars": Spec(M.make_stanford_cars, "stanford_cars", "stanford_cars", PHOTO,
                         "split_zhou_StanfordCars.json", "mat"),
    "OxfordFlowers": Spec(M.make_oxford_flowers, "oxford_flowers", "oxford_flowers",
                          "a photo of a {}, a type of flower.", "split_zhou_OxfordFlowers.json", "mat"),
    "Food101": Spec(M.make_food101, "food101", "food-101", "a photo of {}, a type of food.",
                    "split_zhou_Food101.json", "folders"),
    "FGVCAircraft": Spec(M.make_fgvc_aircraft, "fgvc_aircraft", "fgvc_aircraft",
                         "a photo of a {}, a type of aircraft."),
    "SUN397": Spec(M.make_sun397, "sun397", "sun397", PHOTO, "split_zhou_SUN397.json", "annotations"),
    "DescribableTextures": Spec(M.make_dtd, "dtd", "dtd", "{} texture.", "split_zhou_DescribableTextures.json",
                                "folders"),
    "EuroSAT": Spec(M.make_eurosat_mini, "eurosat", "eurosat", "a centered satellite photo of {}.",
                    "split_zhou_EuroSAT.json", "folders"),
    "UCF101": Spec(M.make_ucf101, "ucf101", "ucf101", "a photo of a person doing {}.", "split_zhou_UCF101.json",
                   "annotations"),
    "ImageNetV2": Spec(M.make_imagenetv2, "imagenetv2", "imagenetv2", PHOTO, test_only=True, indexed=True),
    "ImageNetSketch": Spec(M.make_imagenet_sketch, "imagenet_sketch", "imagenet-sketch", PHOTO, test_only=True,
                           indexed=True),
    "ImageNetA": Spec(M.make_imagenet_a, "imagenet_a", "imagenet-adversarial", PHOTO, test_only=True, indexed=True),
    "ImageNetR": Spec(M.make_imagenet_r, "imagenet_r", "imagenet-rendition", PHOTO, test_only=True, indexed=True),
}
NAMES = list(SPECS)
GENERATED = [n for n, s in SPECS.items() if s.generated in ("folders", "annotations")]
FROM_MAT = [n for n, s in SPECS.items() if s.generated == "mat"]
INDEXED = [n for n, s in SPECS.items() if s.indexed]
WNID_NAME = dict(M.IMAGENET_CLASSES)


# ----------------------------------------------------------------------------- helpers

def build(root, name, shots=-1, seed=1, subsample="all"):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME = root, name
    cfg.DATASET.NUM_SHOTS, cfg.DATASET.SUBSAMPLE_CLASSES, cfg.SEED = shots, subsample, seed
    return DATASET_REGISTRY.get(name)(cfg)


def rows(ds, items):
    return [[os.path.relpath(d.impath, ds.image_dir), d.label, d.classname] for d in items]


def all_rows(ds):
    return sorted(map(tuple, rows(ds, ds.train_x + ds.val + ds.test)))


def per_class(items):
    return dict(Counter(d.label for d in items))




def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def bump_mtime(path, seconds=5):
    """Make a change visible even on file systems with coarse time stamps."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10 ** 9))


def expected_membership(name, spec, root):
    """What the miniature's own files say each split holds: (train, val, test) rows or None."""
    base = os.path.join(root, spec.folder)
    if spec.split_json:
        with open(os.path.join(base, spec.split_json)) as f:
            split = json.load(f)
        return split["train"], split["val"], split["test"]
    if name == "FGVCAircraft":
        out = []
        for s in ("train", "val", "test"):
            with open(os.path.join(base, f"images_variant_{s}.txt")) as f:
                pairs = [line.strip().split(" ", 1) for line in f]
            out.append([[f"{i}.jpg", M.AIRCRAFT_VARIANTS.index(v), v] for i, v in pairs])
        return tuple(out)
    return None


def folder_class(name, relpath):
    """The class name an ImageNet-style image's folder stands for."""
    folder = os.path.basename(os.path.dirname(relpath))
    if name == "ImageNetV2":
        return M.IMAGENET_CLASSES[int(folder)][1]
    return WNID_NAME[folder]


# ----------------------------------------------------------------------------- classes and splits

@pytest.mark.parametrize("name", NAMES)
def test_classes_labels_and_split_membership(tmp_path, name):
    spec, root = SPECS[name], str(tmp_path)
    names = spec.make(root)
    ds = build(root, name)
    assert type(ds).__name__ == name and ds.template == spec.template
    assert ds.num_classes == len(names) and ds.classnames == names
    assert ds.dataset_dir == os.path.join(root, spec.folder)
    everything = set(range(len(names)))
    for items in (ds.train_x, ds.val, ds.test):
        for d in items:
            assert d.classname == names[d.label] and os.path.isfile(d.impath)
            assert d.impath.startswith(ds.dataset_dir + os.sep)
    assert {d.label for d in ds.test} == everything
    if spec.test_only:
        assert ds.train_x == ds.test and ds.val == []
    else:
        assert {d.label for d in ds.train_x} == {d.label for d in ds.val} == everything
        assert not {d.impath for d in ds.train_x} & {d.impath for d in ds.test}
    expected = expected_membership(name, spec, root)
    if expected is not None:  # exactly the split file / annotation lists, in their order
        assert (rows(ds, ds.train_x), rows(ds, ds.val), rows(ds, ds.test)) == tuple(map(list, expected))
    else:  # ImageNet-style folders: every image, labelled by its folder
        tops = {"ImageNet": ["train", "val"]}.get(name, [""])
        on_disk = [os.path.relpath(p, ds.image_dir) for t in tops for p in list_images(os.path.join(ds.image_dir, t))]
        listed = rows(ds, ds.train_x + ds.test) if name == "ImageNet" else rows(ds, ds.test)
        assert sorted(r[0] for r in listed) == sorted(on_disk)
        for items in (ds.train_x, ds.test):  # class by class, files in name order (deterministic)
            assert rows(ds, items) == sorted(rows(ds, items), key=lambda r: (r[1], os.path.basename(r[0])))
        assert all(folder_class(name, p) == c for p, _, c in listed)
        if name == "ImageNet":
            assert ds.val == ds.test and all(p.startswith("val" + os.sep) for p, _, _ in rows(ds, ds.test))


@pytest.mark.parametrize("subsample", ["base", "new"])
@pytest.mark.parametrize("name", NAMES)
def test_base_and_new_halves(tmp_path, name, subsample):
    spec, root = SPECS[name], str(tmp_path)
    names = spec.make(root)
    m = math.ceil(len(names) / 2)
    full, ds = build(root, name), build(root, name, subsample=subsample)
    base = subsample == "base"
    assert ds.classnames == (names[:m] if base else names[m:])
    offset = 0 if base else m
    for whole, part in ((full.train_x, ds.train_x), (full.val, ds.val), (full.test, ds.test)):
        assert [(d.impath, d.label, d.classname) for d in part] == \
               [(d.impath, d.label - offset, d.classname) for d in whole if (d.label < m) == base]
    assert {d.label for d in ds.test} == set(range(len(ds.classnames)))


# ----------------------------------------------------------------------------- few-shot subsets and caches

@pytest.mark.parametrize("name", NAMES)
def test_few_shot_counts_and_cache_reuse(tmp_path, name, monkeypatch, capsys):
    spec, root = SPECS[name], str(tmp_path)
    names = spec.make(root)
    folder = os.path.join(root, spec.folder)
    pristine = snapshot(folder)
    full = build(root, name)
    first = snapshot(folder)
    assert set(first) - set(pristine) == ({"caspl_index.pkl"} if spec.indexed else set())
    assert all(first[k] == v for k, v in pristine.items())

    ds = build(root, name, shots=2)
    second = snapshot(folder)
    assert all(second[k] == v for k, v in first.items())
    cache = os.path.join("split_fewshot", "shot_2-seed_1.pkl")
    if spec.test_only:  # evaluation-only sets: no few-shot subset, nothing written
        assert second == first and ds.train_x == ds.test == full.test and ds.val == []
        return
    assert set(second) - set(first) == {cache}
    assert per_class(ds.train_x) == {y: 2 for y in range(len(names))}
    assert set(ds.train_x) <= set(full.train_x) and ds.test == full.test
    if name == "ImageNet":  # its val is the test set, never sampled
        assert ds.val == full.test
    else:
        assert per_class(ds.val) == {y: min(2, n) for y, n in per_class(full.val).items()}
        assert set(ds.val) <= set(full.val)

    def no_sampling(*args, **kwargs):
        raise AssertionError("the cached few-shot subset should have been read")

    monkeypatch.setattr(datum_module, "sample_few_shot", no_sampling)
    capsys.readouterr()
    again = build(root, name, shots=2)
    assert f"Loading few-shot subset from {os.path.join(folder, cache)}" in capsys.readouterr().out
    assert (again.train_x, again.val, again.test) == (ds.train_x, ds.val, ds.test)
    assert snapshot(folder) == second


@pytest.mark.parametrize("name", GENERATED)
def test_split_built_from_the_dataset_files_when_the_json_is_absent(tmp_path, name, capsys):
    spec = SPECS[name]
    root, reference_root = str(tmp_path / "a"), str(tmp_path / "ref")
    names = spec.make(root, split_file=False)
    spec.make(reference_root)  # the same miniature with its split file, for the official lists
    path = os.path.join(root, spec.folder, spec.split_json)
    assert not os.path.exists(path)
    ds = build(root, name)
    assert "not found; building a seeded split" in capsys.readouterr().out
    assert ds.classnames == names and os.path.isfile(path)
    with open(path) as f:
        written = json.load(f)
    assert [written[k] for k in ("train", "val", "test")] == [rows(ds, ds.train_x), rows(ds, ds.val), rows(ds, ds.test)]
    assert all(not os.path.isabs(r[0]) for k in written for r in written[k])
    reference = build(reference_root, name)
    assert all_rows(ds) == all_rows(reference)
    if spec.generated == "folders":  # 10 images per class -> 5/2/3
        for items, n in ((ds.train_x, 5), (ds.val, 2), (ds.test, 3)):
            assert per_class(items) == {y: n for y in range(len(names))}
        assert drawn_at_random(ds.train_x, ds.train_x + ds.val + ds.test)
    else:  # the official test list as is; trainval -> 4 train + 1 val per class
        assert rows(ds, ds.test) == rows(reference, reference.test)
        assert per_class(ds.train_x) == {y: 4 for y in range(len(names))}
        assert per_class(ds.val) == {y: 1 for y in range(len(names))}

    content = read_bytes(path)
    again = build(root, name)
    assert "building a seeded split" not in capsys.readouterr().out
    assert read_bytes(path) == content and (again.train_x, again.val, again.test) == (ds.train_x, ds.val, ds.test)
    other = str(tmp_path / "b")  # deterministic: another copy gets the same split file
    spec.make(other, split_file=False)
    build(other, name)
    assert read_bytes(os.path.join(other, spec.folder, spec.split_json)) == content


def drawn_at_random(train, everything):
    """Not simply the first files of each class: the per-class split was shuffled."""
    return any(sorted(d.impath for d in train if d.label == y) !=
               sorted(d.impath for d in everything if d.label == y)[:n] for y, n in per_class(train).items())


def fake_scipy(monkeypatch, base, contents):
    """scipy.io.loadmat answering from `contents` (relative .mat path -> dict), in loadmat's shapes."""
    calls = []

    def loadmat(path):
        rel = os.path.relpath(path, base).replace(os.sep, "/")
        calls.append(rel)
        return contents[rel]

    scipy_io = types.ModuleType("scipy.io")
    scipy_io.loadmat = loadmat
    monkeypatch.setitem(sys.modules, "scipy", types.ModuleType("scipy"))
    monkeypatch.setitem(sys.modules, "scipy.io", scipy_io)
    return calls


def mat_contents(name):
    return M.cars_mat() if name == "StanfordCars" else M.flowers_mat()


@pytest.mark.parametrize("name", FROM_MAT)
def test_split_built_from_mat_files_when_the_json_is_absent(tmp_path, name, monkeypatch):
    spec = SPECS[name]
    root, reference_root = str(tmp_path / "a"), str(tmp_path / "ref")
    names = spec.make(root, split_file=False)
    spec.make(reference_root)
    base = os.path.join(root, spec.folder)
    contents = mat_contents(name)
    for rel in contents:  # placeholders: the fake loadmat serves their contents
        open(os.path.join(base, rel), "wb").close()
    calls = fake_scipy(monkeypatch, base, contents)
    ds = build(root, name)
    assert sorted(set(calls)) == sorted(contents)
    assert ds.classnames == names and os.path.isfile(os.path.join(base, spec.split_json))
    reference = build(reference_root, name)
    assert all_rows(ds) == all_rows(reference)
    if name == "StanfordCars":  # official test as listed; official train -> 4 train + 1 val per class
        assert rows(ds, ds.test) == rows(reference, reference.test)
        assert all(r[0].startswith("cars_test/") for r in rows(ds, ds.test))
        assert (per_class(ds.train_x), per_class(ds.val)) == ({y: 4 for y in range(5)}, {y: 1 for y in range(5)})
    else:  # 10 images per class -> 5/2/3, labels from imagelabels.mat
        for items, n in ((ds.train_x, 5), (ds.val, 2), (ds.test, 3)):
            assert per_class(items) == {y: n for y in range(5)}
        assert drawn_at_random(ds.train_x, ds.train_x + ds.val + ds.test)
        labels = M.flowers_labels()
        assert all(labels[int(r[0][6:11]) - 1] - 1 == r[1] for r in rows(ds, ds.train_x + ds.val + ds.test))
    calls.clear()
    again = build(root, name)
    assert calls == [] and (again.train_x, again.val, again.test) == (ds.train_x, ds.val, ds.test)


@pytest.mark.parametrize("name", FROM_MAT)
def test_mat_split_without_scipy_is_a_clear_error(tmp_path, name, monkeypatch):
    spec, root = SPECS[name], str(tmp_path)
    spec.make(root, split_file=False)
    base = os.path.join(root, spec.folder)
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(CasplError, match=r"\.mat is missing"):
        build(root, name)
    for rel in mat_contents(name):
        open(os.path.join(base, rel), "wb").close()
    with pytest.raises(CasplError) as err:
        build(root, name)
    assert "install scipy" in str(err.value) and f"split_zhou_{name}.json" in str(err.value)
    assert not os.path.exists(os.path.join(base, spec.split_json))


def test_fgvc_aircraft_writes_no_split_file(tmp_path):
    root = str(tmp_path)
    M.make_fgvc_aircraft(root)
    before = snapshot(os.path.join(root, "fgvc_aircraft"))
    ds = build(root, "FGVCAircraft")
    assert snapshot(os.path.join(root, "fgvc_aircraft")) == before
    assert [len(ds.train_x), len(ds.val), len(ds.test)] == [15, 15, 15]


# ----------------------------------------------------------------------------- ImageNet folder index

@pytest.mark.parametrize("name", INDEXED)
def test_folder_index_built_once_reused_and_rebuilt_on_change(tmp_path, name, monkeypatch):
    spec, root = SPECS[name], str(tmp_path)
    names = spec.make(root)
    base = os.path.join(root, spec.folder)
    reference_pkl = os.path.join(base, "preprocessed.pkl")  # CoOp's own cache: never read or written
    with open(reference_pkl, "wb") as f:
        f.write(b"CoOp's preprocessed.pkl")
    module = datasets.imagenet if name == "ImageNet" else datasets.imagenet_variants
    scans = []
    real_scan = module.scan_class_folders
    monkeypatch.setattr(module, "scan_class_folders", lambda *a: scans.append(a) or real_scan(*a))

    def listed(d):
        return d.train_x + d.test if name == "ImageNet" else d.test

    ds = build(root, name)
    index = os.path.join(base, "caspl_index.pkl")
    n_scans, stamp = len(scans), os.stat(index).st_mtime_ns
    assert n_scans >= 1 and os.path.isfile(index)
    again = build(root, name)
    assert len(scans) == n_scans and os.stat(index).st_mtime_ns == stamp  # read, not rescanned
    assert listed(again) == listed(ds) and again.classnames == names

    # one more image in a class folder -> the index is rebuilt and has it
    some = listed(ds)[0]
    added = os.path.join(os.path.dirname(some.impath), "zz_added.jpg")
    shutil.copy(some.impath, added)
    bump_mtime(os.path.dirname(added))
    grown = build(root, name)
    assert len(scans) > n_scans
    assert sorted(d.impath for d in listed(grown)) == sorted([d.impath for d in listed(ds)] + [added])
    assert [(d.label, d.classname) for d in listed(grown) if d.impath == added] == [(some.label, some.classname)]
    n_scans = len(scans)
    build(root, name)
    assert len(scans) == n_scans  # the rebuilt index is reused

    # an edited classnames.txt is picked up too
    names_file = os.path.join(base, "classnames.txt")
    with open(names_file) as f:
        text = f.read()
    with open(names_file, "w") as f:
        f.write(text.replace(f" {names[0]}\n", " renamed class\n"))
    bump_mtime(names_file)
    assert build(root, name).classnames == ["renamed class"] + names[1:]
    assert read_bytes(reference_pkl) == b"CoOp's preprocessed.pkl"


def test_imagenet_class_folder_without_a_classnames_line(tmp_path):
    root = str(tmp_path)
    M.make_imagenet(root)
    os.makedirs(os.path.join(root, "imagenet", "images", "train", "n09999999"))
    with pytest.raises(CasplError, match="no line for class folder n09999999"):
        build(root, "ImageNet")
    assert not os.path.exists(os.path.join(root, "imagenet", "caspl_index.pkl"))


def test_imagenetv2_missing_numbered_folder(tmp_path):
    root = str(tmp_path)
    M.make_imagenetv2(root)
    shutil.rmtree(os.path.join(root, "imagenetv2", "imagenetv2-matched-frequency-format-val", "7"))
    with pytest.raises(CasplError, match="missing: 7"):
        build(root, "ImageNetV2")


def test_missing_annotations_name_the_file(tmp_path):
    root = str(tmp_path)
    M.make_oxford_pets(root, split_file=False)
    os.remove(os.path.join(root, "oxford_pets", "annotations", "trainval.txt"))
    with pytest.raises(CasplError, match=r"trainval\.txt is missing"):
        build(root, "OxfordPets")


# ----------------------------------------------------------------------------- acceptance: train.py --eval-only

@pytest.mark.parametrize("name", NAMES)
def test_zeroshot_clip_eval_only_through_the_config_file(tmp_path, name, tiny_clip_path):
    spec, root, out = SPECS[name], str(tmp_path / "data"), str(tmp_path / "out")
    spec.make(root)
    code, log = zero_shot_eval(root, spec.config, tiny_clip_path, out)
    assert code == 0
    n_test = len(build(root, name).test)
    assert "* accuracy:" in log and f"* total: {n_test:,}\n" in log
    assert f"Prompt template: {spec.template!r}" in log
