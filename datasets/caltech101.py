"""Caltech101, CoOp's layout: $DATA/caltech-101/101_ObjectCategories/<category>/*.jpg and
$DATA/caltech-101/split_zhou_Caltech101.json. 100 classes: the BACKGROUND_Google and
Faces_easy folders are left out and four plural folder names become singular."""
import os

from caspl import DATASET_REGISTRY
from caspl.data import DatasetBase
from caspl.data.prepare import Counts, Put, Recipe, Unpack

from .sources import SOURCES

IGNORED = ("BACKGROUND_Google", "Faces_easy")
NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
SPLIT = "split_zhou_Caltech101.json"


@DATASET_REGISTRY.register()
class Caltech101(DatasetBase):
    dataset_dir = "caltech-101"
    image_dir = "101_ObjectCategories"
    template = "a photo of a {}."
    preparation = "extract 101_ObjectCategories.tar.gz and add split_zhou_Caltech101.json as in CoOp's DATASETS.md"
    # the zip of data.caltech.edu holds the archive CoOp names
    download = Recipe((Unpack(SOURCES["caltech-101/caltech-101.zip"], {"101_ObjectCategories": "101_ObjectCategories"},
                              inner="caltech-101/101_ObjectCategories.tar.gz"),
                       Put(SOURCES[f"caltech-101/{SPLIT}"])),
                      Counts(100, 4128, 1649, 2465), split=SPLIT)

    def read_data(self):
        return self.read_or_make_split(os.path.join(self.dataset_dir, SPLIT),
                                       lambda: self.split_folders(rename=NEW_CNAMES, ignored=IGNORED))
