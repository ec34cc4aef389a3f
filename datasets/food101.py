"""Food-101, CoOp's layout: $DATA/food-101/images/<dish>/*.jpg and
$DATA/food-101/split_zhou_Food101.json (CoOp's own 50/20/30 split, not the official one);
class names are the folder names (apple_pie, ...)."""
import os

from caspl import DATASET_REGISTRY
from caspl.data import DatasetBase
from caspl.data.prepare import Counts, Put, Recipe, Unpack

from .sources import SOURCES

SPLIT = "split_zhou_Food101.json"


@DATASET_REGISTRY.register()
class Food101(DatasetBase):
    dataset_dir = "food-101"
    image_dir = "images"
    template = "a photo of {}, a type of food."
    preparation = "extract food-101.tar.gz and add split_zhou_Food101.json as in CoOp's DATASETS.md"
    download = Recipe((Unpack(SOURCES["food-101/food-101.tar.gz"], {"food-101": ""}),
                       Put(SOURCES[f"food-101/{SPLIT}"])),
                      Counts(101, 50500, 20200, 30300), split=SPLIT)

    def read_data(self):
        return self.read_or_make_split(os.path.join(self.dataset_dir, SPLIT), self.split_folders)
