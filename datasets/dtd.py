"""Describable Textures (DTD), CoOp's layout: $DATA/dtd/images/<texture>/*.jpg and
$DATA/dtd/split_zhou_DescribableTextures.json; class names are the folder names (banded, ...)."""
import os

from caspl import DATASET_REGISTRY
from caspl.data import DatasetBase
from caspl.data.prepare import Counts, Put, Recipe, Unpack

from .sources import SOURCES

SPLIT = "split_zhou_DescribableTextures.json"


@DATASET_REGISTRY.register()
class DescribableTextures(DatasetBase):
    dataset_dir = "dtd"
    image_dir = "images"
    template = "{} texture."
    preparation = "extract dtd-r1.0.1.tar.gz and add split_zhou_DescribableTextures.json as in CoOp's DATASETS.md"
    download = Recipe((Unpack(SOURCES["dtd/dtd-r1.0.1.tar.gz"], {"dtd": ""}), Put(SOURCES[f"dtd/{SPLIT}"])),
                      Counts(47, 2820, 1128, 1692), split=SPLIT)

    def read_data(self):
        return self.read_or_make_split(os.path.join(self.dataset_dir, SPLIT), self.split_folders)
