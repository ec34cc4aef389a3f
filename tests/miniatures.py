"""Miniature copies of the benchmark datasets, laid out as CoOp's DATASETS.md describes the
real ones: a handful of classes, a few tiny class-coloured JPEGs per class, and the split
JSON or annotation files the real dataset comes with. Each make_<name>(root, ...) writes
under root and returns the class names in label order.

The MATLAB annotation files of StanfordCars and OxfordFlowers are not written (that needs
scipy, which is not a dependency); cars_mat() and flowers_mat() give their contents in the
shape scipy.io.loadmat returns, for tests that fake loadmat."""
import json
import os
import random

import numpy as np

from caspl.testing import EUROSAT_FOLDERS, EUROSAT_NAMES, class_image, make_eurosat

IMAGENET_CLASSES = [  # the first lines of ImageNet's classnames.txt (sorted by wnid)
    ("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"),
    ("n01491361", "tiger shark"), ("n01494475", "hammerhead shark"), ("n01496331", "electric ray"),
    ("n01498041", "stingray"), ("n01514668", "rooster"), ("n01514859", "hen"), ("n01518878", "ostrich"),
    ("n01530575", "brambling"), ("n01531178", "goldfinch"),
]


class Painter:
    """Writes class_image JPEGs: the colour says the label."""

    def __init__(self, n_classes, seed=0):
        self.n_classes, self.rng = n_classes, np.random.default_rng(seed)

    def __call__(self, path, label):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        class_image(label, self.n_classes, self.rng).save(path, quality=90)


def write_text(path, lines, newline="\n"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("".join(line + newline for line in lines))


def write_split(path, train, val, test):
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"train": train, "val": val, "test": test}, f, indent=1)


def shares(rows, seed, p_train=0.5, p_val=0.2):
    """One class's [path, label, name] rows -> shuffled train/val/test shares (as CoOp draws them)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_train, n_val = round(len(rows) * p_train), round(len(rows) * p_val)
    return rows[:n_train], rows[n_train:n_train + n_val], rows[n_train + n_val:]


def split_rows(by_class, seed=0, p_train=0.5, p_val=0.2):
    """{label: rows} -> (train, val, test) rows, class by class."""
    out = ([], [], [])
    for label in sorted(by_class):
        for part, rows in zip(out, shares(by_class[label], seed * 1000 + label, p_train, p_val)):
            part += rows
    return out


def trainval_rows(trainval, test, seed=0):
    """Official trainval/test rows -> (train, val, test) with 80/20 of trainval per class."""
    by_class = {}
    for row in trainval:
        by_class.setdefault(row[1], []).append(row)
    train, val, _ = split_rows(by_class, seed, p_train=0.8, p_val=0.2)
    return train, val, list(test)


def folder_dataset(image_dir, folders, names, per_class, ext=".jpg", name_fn=None):
    """image_dir/<folder>/<file> for each class; returns {label: [relative path, label, name]}."""
    paint = Painter(len(folders))
    by_class = {}
    for label, (folder, name) in enumerate(zip(folders, names)):
        for i in range(per_class):
            rel = f"{folder}/{name_fn(folder, i) if name_fn else f'{folder}_{i + 1:04d}'}{ext}"
            paint(os.path.join(image_dir, rel), label)
            by_class.setdefault(label, []).append([rel, label, name])
    return by_class


# ----------------------------------------------------------------------------- folder + JSON datasets

def make_caltech101(root, split_file=True, per_class=10):
    base = os.path.join(root, "caltech-101")
    image_dir = os.path.join(base, "101_ObjectCategories")
    folders = ["Faces", "Leopards", "Motorbikes", "accordion", "airplanes"]  # sorted as Python sorts
    names = ["face", "leopard", "motorbike", "accordion", "airplane"]
    by_class = folder_dataset(image_dir, folders, names, per_class, name_fn=lambda f, i: f"image_{i + 1:04d}")
    paint = Painter(len(folders), seed=1)
    for ignored in ("BACKGROUND_Google", "Faces_easy"):  # present on disk, never classes
        for i in range(3):
            paint(os.path.join(image_dir, ignored, f"image_{i + 1:04d}.jpg"), 0)
    if split_file:
        write_split(os.path.join(base, "split_zhou_Caltech101.json"), *split_rows(by_class, seed=7))
    return names


def make_food101(root, split_file=True, per_class=10):
    base = os.path.join(root, "food-101")
    names = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare"]
    by_class = folder_dataset(os.path.join(base, "images"), names, names, per_class,
                              name_fn=lambda f, i: str(100000 + 37 * i))
    write_text(os.path.join(base, "meta", "classes.txt"), names)
    if split_file:
        write_split(os.path.join(base, "split_zhou_Food101.json"), *split_rows(by_class, seed=7))
    return names


def make_dtd(root, split_file=True, per_class=10):
    base = os.path.join(root, "dtd")
    names = ["banded", "blotchy", "braided", "bubbly", "bumpy"]
    by_class = folder_dataset(os.path.join(base, "images"), names, names, per_class)
    if split_file:
        write_split(os.path.join(base, "split_zhou_DescribableTextures.json"), *split_rows(by_class, seed=7))
    return names


def make_eurosat_mini(root, split_file=True, per_class=10, n_classes=5):
    make_eurosat(root, per_class=per_class, n_classes=n_classes, split_file=split_file)
    return [EUROSAT_NAMES[f] for f in EUROSAT_FOLDERS[:n_classes]]


# ----------------------------------------------------------------------------- annotation datasets

FLOWER_NAMES = {"1": "pink primrose", "2": "hard-leaved pocket orchid", "3": "canterbury bells",
                "4": "sweet pea", "5": "english marigold"}


def flowers_labels(per_class=10):
    """imagelabels.mat's labels: class 1..5 of image_00001.jpg, image_00002.jpg, ... (interleaved)."""
    labels = [y for y in range(1, len(FLOWER_NAMES) + 1) for _ in range(per_class)]
    random.Random(3).shuffle(labels)
    return labels


def flowers_mat(per_class=10):
    return {"imagelabels.mat": {"labels": np.array([flowers_labels(per_class)], dtype=np.float64)}}


def make_oxford_flowers(root, split_file=True, per_class=10):
    base = os.path.join(root, "oxford_flowers")
    labels = flowers_labels(per_class)
    paint = Painter(len(FLOWER_NAMES))
    by_class = {}
    for i, y in enumerate(labels):
        rel = f"image_{i + 1:05d}.jpg"
        paint(os.path.join(base, "jpg", rel), y - 1)
        by_class.setdefault(y - 1, []).append([rel, y - 1, FLOWER_NAMES[str(y)]])
    with open(os.path.join(base, "cat_to_name.json"), "w") as f:
        json.dump(FLOWER_NAMES, f)
    if split_file:
        write_split(os.path.join(base, "split_zhou_OxfordFlowers.json"), *split_rows(by_class, seed=7))
    return [FLOWER_NAMES[str(y)] for y in range(1, len(FLOWER_NAMES) + 1)]


CAR_DEVKIT_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012",
                    "Acura TL Type-S 2008", "Ram C/V Cargo Van Minivan 2012"]


def cars_annotations(n_train=5, n_test=3):
    """(file name, class 1..5) of cars_train and cars_test, classes interleaved as in the devkit."""
    out = []
    for k, per_class in enumerate((n_train, n_test)):
        classes = [y for y in range(1, len(CAR_DEVKIT_NAMES) + 1) for _ in range(per_class)]
        random.Random(11 + k).shuffle(classes)
        out.append([(f"{i + 1:05d}.jpg", y) for i, y in enumerate(classes)])
    return out


def cars_mat():
    """The .mat contents as scipy.io.loadmat returns them (struct arrays of 1x1 cells)."""
    names = np.empty((1, len(CAR_DEVKIT_NAMES)), dtype=object)
    for i, n in enumerate(CAR_DEVKIT_NAMES):
        names[0, i] = np.array([n])
    out = {"devkit/cars_meta.mat": {"class_names": names}}
    for rel, rows in zip(("devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat"), cars_annotations()):
        annos = np.empty((1, len(rows)), dtype=[("bbox_x1", "O"), ("class", "O"), ("fname", "O")])
        for i, (fname, y) in enumerate(rows):
            annos[0, i] = (np.array([[7]], dtype=np.uint8), np.array([[y]], dtype=np.uint8), np.array([fname]))
        out[rel] = {"annotations": annos}
    return out


def make_stanford_cars(root, split_file=True):
    base = os.path.join(root, "stanford_cars")
    names = [" ".join([n.split(" ")[-1], *n.split(" ")[:-1]]) for n in CAR_DEVKIT_NAMES]
    paint = Painter(len(names))
    official = []
    for folder, rows in zip(("cars_train", "cars_test"), cars_annotations()):
        for fname, y in rows:
            paint(os.path.join(base, folder, fname), y - 1)
        official.append([[f"{folder}/{fname}", y - 1, names[y - 1]] for fname, y in rows])
    write_text(os.path.join(base, "devkit", "README.txt"), ["cars devkit (the .mat files are not generated)"])
    if split_file:
        write_split(os.path.join(base, "split_zhou_StanfordCars.json"), *trainval_rows(*official, seed=7))
    return names


PET_BREEDS = [("Abyssinian", 1), ("american_bulldog", 2), ("american_pit_bull_terrier", 2),
              ("basset_hound", 2), ("beagle", 2)]  # (image-name prefix, species: 1 cat, 2 dog)


def make_oxford_pets(root, split_file=True, n_trainval=5, n_test=3):
    base = os.path.join(root, "oxford_pets")
    paint = Painter(len(PET_BREEDS))
    names = [breed.lower() for breed, _ in PET_BREEDS]
    lists, official = {"trainval": [], "test": []}, {"trainval": [], "test": []}
    for label, (breed, species) in enumerate(PET_BREEDS):
        for i in range(n_trainval + n_test):
            part = "trainval" if i < n_trainval else "test"
            imname = f"{breed}_{100 + 13 * i}"
            paint(os.path.join(base, "images", imname + ".jpg"), label)
            lists[part].append(f"{imname} {label + 1} {species} {label + 1}")
            official[part].append([imname + ".jpg", label, names[label]])
    for part, lines in lists.items():
        write_text(os.path.join(base, "annotations", f"{part}.txt"), lines)
    write_text(os.path.join(base, "annotations", "list.txt"),
               ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids"] + lists["trainval"] + lists["test"])
    if split_file:
        write_split(os.path.join(base, "split_zhou_OxfordPets.json"),
                    *trainval_rows(official["trainval"], official["test"], seed=7))
    return names


SUN_CATEGORIES = ["a/abbey", "a/apartment_building/outdoor", "b/bakery/shop", "c/campus", "y/youth_hostel"]


def make_sun397(root, split_file=True, n_train=5, n_test=3):
    base = os.path.join(root, "sun397")
    names = ["abbey", "outdoor apartment_building", "shop bakery", "campus", "youth_hostel"]
    paint = Painter(len(names))
    lists, official = {"Training_01": [], "Testing_01": []}, {"Training_01": [], "Testing_01": []}
    for label, category in enumerate(SUN_CATEGORIES):
        for i in range(n_train + n_test):
            part = "Training_01" if i < n_train else "Testing_01"
            rel = f"{category}/sun_{label:02d}{i:02d}abcdefghijkl.jpg"
            paint(os.path.join(base, "SUN397", rel), label)
            lists[part].append("/" + rel)
            official[part].append([rel, label, names[label]])
    write_text(os.path.join(base, "ClassName.txt"), ["/" + c for c in SUN_CATEGORIES])
    for part, lines in lists.items():
        write_text(os.path.join(base, f"{part}.txt"), lines)
    if split_file:
        write_split(os.path.join(base, "split_zhou_SUN397.json"),
                    *trainval_rows(official["Training_01"], official["Testing_01"], seed=7))
    return names


UCF_ACTIONS = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "YoYo"]


def make_ucf101(root, split_file=True, n_train=5, n_test=3):
    base = os.path.join(root, "ucf101")
    names = ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Baby_Crawling", "Yo_Yo"]
    paint = Painter(len(names))
    lists, official = {"trainlist01": [], "testlist01": []}, {"trainlist01": [], "testlist01": []}
    for label, action in enumerate(UCF_ACTIONS):
        for i in range(n_train + n_test):
            part, group = ("trainlist01", 8 + i) if i < n_train else ("testlist01", 1 + i - n_train)
            video = f"v_{action}_g{group:02d}_c01"
            paint(os.path.join(base, "UCF-101-midframes", names[label], video + ".jpg"), label)
            lists[part].append(f"{action}/{video}.avi" + (f" {label + 1}" if part == "trainlist01" else ""))
            official[part].append([f"{names[label]}/{video}.jpg", label, names[label]])
    lists_dir = os.path.join(base, "ucfTrainTestlist")  # the official lists have CRLF line ends
    write_text(os.path.join(lists_dir, "classInd.txt"), [f"{i + 1} {a}" for i, a in enumerate(UCF_ACTIONS)], "\r\n")
    for part, lines in lists.items():
        write_text(os.path.join(lists_dir, f"{part}.txt"), lines, "\r\n")
    if split_file:
        write_split(os.path.join(base, "split_zhou_UCF101.json"),
                    *trainval_rows(official["trainlist01"], official["testlist01"], seed=7))
    return names


AIRCRAFT_VARIANTS = ["707-320", "A300B4", "Cessna 172", "F/A-18", "Falcon 2000"]


def make_fgvc_aircraft(root, per_split=3):
    """fgvc_aircraft/ = the archive's data/ folder; the variant files are the split."""
    base = os.path.join(root, "fgvc_aircraft")
    paint = Painter(len(AIRCRAFT_VARIANTS))
    image_id = 1000000
    for split in ("train", "val", "test"):
        lines = []
        for label, variant in enumerate(AIRCRAFT_VARIANTS):
            for _ in range(per_split):
                image_id += 17
                paint(os.path.join(base, "images", f"{image_id:07d}.jpg"), label)
                lines.append(f"{image_id:07d} {variant}")
        random.Random(split).shuffle(lines)
        write_text(os.path.join(base, f"images_variant_{split}.txt"), lines)
    write_text(os.path.join(base, "variants.txt"), AIRCRAFT_VARIANTS)
    return list(AIRCRAFT_VARIANTS)


# ----------------------------------------------------------------------------- ImageNet and its variants

def write_classnames(base, classes):
    write_text(os.path.join(base, "classnames.txt"), [f"{w} {n}" for w, n in classes])


def make_imagenet(root, n_classes=5, n_train=4, n_val=3):
    base = os.path.join(root, "imagenet")
    classes = IMAGENET_CLASSES[:n_classes]
    paint = Painter(n_classes)
    for label, (wnid, _) in enumerate(classes):
        for i in range(n_train):
            paint(os.path.join(base, "images", "train", wnid, f"{wnid}_{7 * i + 3}.JPEG"), label)
        for i in range(n_val):
            paint(os.path.join(base, "images", "val", wnid, f"ILSVRC2012_val_{label * 100 + i + 1:08d}.JPEG"), label)
    write_classnames(base, classes)
    return [n for _, n in classes]


def make_imagenetv2(root, n_classes=11, per_class=2):
    """Folders 0..n-1 (more than 10, so sorting them as text would mislabel)."""
    base = os.path.join(root, "imagenetv2")
    classes = IMAGENET_CLASSES[:n_classes]
    paint = Painter(n_classes)
    for label in range(n_classes):
        for i in range(per_class):
            paint(os.path.join(base, "imagenetv2-matched-frequency-format-val", str(label),
                               f"{(label * 7919 + i * 104729) % 999983:x}e3a1.jpeg"), label)
    write_classnames(base, classes)
    return [n for _, n in classes]


def make_imagenet_sketch(root, per_class=3):
    base = os.path.join(root, "imagenet-sketch")
    classes = IMAGENET_CLASSES[:5]
    paint = Painter(len(classes))
    for label, (wnid, _) in enumerate(classes):
        for i in range(per_class):
            paint(os.path.join(base, "images", wnid, f"sketch_{i + 1}.JPEG"), label)
    write_classnames(base, classes)
    return [n for _, n in classes]


def _subset_variant(root, dataset_dir, image_dir, picks, file_name, per_class=3):
    """A 200-of-1000-style set: folders for some wnids only; classnames.txt lists them all."""
    base = os.path.join(root, dataset_dir)
    classes = [IMAGENET_CLASSES[i] for i in picks]
    paint = Painter(len(classes))
    for label, (wnid, name) in enumerate(classes):
        for i in range(per_class):
            paint(os.path.join(base, image_dir, wnid, file_name(name, i)), label)
    write_text(os.path.join(base, image_dir, "README.txt"), ["not a class folder"])
    write_classnames(base, IMAGENET_CLASSES)
    return [n for _, n in classes]


def make_imagenet_a(root):
    return _subset_variant(root, "imagenet-adversarial", "imagenet-a", [1, 3, 6, 9, 11],
                           lambda name, i: f"0.{i:06d}_{name} _ {name}_0.{i + 5}.jpg")


def make_imagenet_r(root):
    return _subset_variant(root, "imagenet-rendition", "imagenet-r", [0, 2, 5, 7, 10],
                           lambda name, i: f"{('art', 'cartoon', 'sketch')[i % 3]}_{i}.jpg")
