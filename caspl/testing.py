"""Generated material for tests and demos: tiny CLIP checkpoints and image folders in the
real dataset layouts (nothing here downloads anything)."""
import json
import os
import random

import numpy as np
from PIL import Image

from .clip.tiny import save_tiny_clip

EUROSAT_NAMES = {  # folder -> readable name, as in CoOp's split file
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
}
EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
                   "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"]


def class_image(label, n_classes, rng, size=40):
    """An image whose class is visible: a hue per class plus noise and a random bright square."""
    hue = label / n_classes
    base = np.array([np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)]) * 90 + 128
    img = base[None, None, :] + rng.normal(0, 18, (size, size, 3))
    x, y = rng.integers(0, size // 2, 2)
    img[y:y + size // 3, x:x + size // 3] += 40
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_eurosat(root, per_class=10, n_classes=10, split_file=True, seed=0):
    """$root/eurosat/2750/<Folder>/<Folder>_<i>.jpg (+ split_zhou_EuroSAT.json: 50/20/30 per class)."""
    rng = np.random.default_rng(seed)
    image_dir = os.path.join(root, "eurosat", "2750")
    split = {"train": [], "val": [], "test": []}
    for label, folder in enumerate(EUROSAT_FOLDERS[:n_classes]):
        os.makedirs(os.path.join(image_dir, folder), exist_ok=True)
        names = []
        for i in range(per_class):
            name = f"{folder}/{folder}_{i + 1}.jpg"
            class_image(label, n_classes, rng).save(os.path.join(image_dir, name), quality=95)
            names.append(name)
        random.Random(label).shuffle(names)
        n_train, n_val = round(per_class * 0.5), round(per_class * 0.2)
        for key, part in (("train", names[:n_train]), ("val", names[n_train:n_train + n_val]),
                          ("test", names[n_train + n_val:])):
            split[key] += [[n, label, EUROSAT_NAMES[folder]] for n in part]
    if split_file:
        with open(os.path.join(root, "eurosat", "split_zhou_EuroSAT.json"), "w") as f:
            json.dump(split, f)
    return root


def make_tiny_clip(path, **kwargs):
    return save_tiny_clip(path, **kwargs)
