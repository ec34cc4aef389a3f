"""Oxford 102 Flowers, CoOp's layout: $DATA/oxford_flowers/jpg/image_<00001>.jpg,
imagelabels.mat (class 1..102 of image i), cat_to_name.json (class number -> name) and
split_zhou_OxfordFlowers.json. Without the JSON a seeded 50/20/30 split per class is built
from imagelabels.mat (needs scipy)."""
import json
import os

from caspl import DATASET_REGISTRY, CasplError
from caspl.data import DatasetBase, Datum, check_on_disk, split_per_class
from caspl.data.prepare import Counts, Put, Recipe, Unpack

from .common import load_mat, mat_scalar
from .sources import SOURCES

SPLIT = "split_zhou_OxfordFlowers.json"


@DATASET_REGISTRY.register()
class OxfordFlowers(DatasetBase):
    dataset_dir = "oxford_flowers"
    image_dir = "jpg"
    template = "a photo of a {}, a type of flower."
    preparation = ("extract 102flowers.tgz, add imagelabels.mat, cat_to_name.json and "
                   "split_zhou_OxfordFlowers.json as in CoOp's DATASETS.md")
    download = Recipe((Unpack(SOURCES["oxford_flowers/102flowers.tgz"]), Put(SOURCES["oxford_flowers/imagelabels.mat"]),
                       Put(SOURCES["oxford_flowers/cat_to_name.json"]), Put(SOURCES[f"oxford_flowers/{SPLIT}"])),
                      Counts(102, 4093, 1633, 2463), split=SPLIT)

    def read_data(self):
        return self.read_or_make_split(os.path.join(self.dataset_dir, SPLIT),
                                       self.split_from_mat)

    def split_from_mat(self):
        names_file = os.path.join(self.dataset_dir, "cat_to_name.json")
        if not os.path.isfile(names_file):
            raise CasplError(f"{names_file} is missing ({self.preparation})")
        with open(names_file, encoding="utf-8") as f:
            names = json.load(f)
        labels_file = os.path.join(self.dataset_dir, "imagelabels.mat")
        items = []
        for i, y in enumerate(load_mat(labels_file, "labels", "OxfordFlowers", self.preparation)):
            y = int(mat_scalar(y))
            items.append(Datum(os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg"), y - 1, names[str(y)]))
        return split_per_class(check_on_disk(items, labels_file))
