"""Stanford Cars, CoOp's layout: $DATA/stanford_cars/ with cars_train/, cars_test/, devkit/
(cars_meta.mat, cars_train_annos.mat), cars_test_annos_withlabels.mat and
split_zhou_StanfordCars.json, whose paths are relative to stanford_cars/ itself. Without the
JSON the split is built from the .mat files (needs scipy): official train -> 80% train /
20% val, official test. Class name: the devkit name with its trailing year moved to the
front ("AM General Hummer SUV 2000" -> "2000 AM General Hummer SUV")."""
import os

from caspl import DATASET_REGISTRY
from caspl.data import DatasetBase, Datum, check_on_disk
from caspl.data.prepare import Counts, Put, Recipe, Unpack

from .common import load_mat, mat_scalar
from .sources import SOURCES

SPLIT = "split_zhou_StanfordCars.json"


def year_first(name):
    *words, year = name.split(" ")
    return " ".join([year, *words])


@DATASET_REGISTRY.register()
class StanfordCars(DatasetBase):
    dataset_dir = "stanford_cars"
    image_dir = ""
    required = ("cars_train", "cars_test")
    template = "a photo of a {}."
    preparation = ("extract cars_train, cars_test and the devkit, add cars_test_annos_withlabels.mat and "
                   "split_zhou_StanfordCars.json as in CoOp's DATASETS.md")
    download = Recipe((Unpack(SOURCES["stanford_cars/cars_train.tgz"]), Unpack(SOURCES["stanford_cars/cars_test.tgz"]),
                       Unpack(SOURCES["stanford_cars/car_devkit.tgz"]),
                       Put(SOURCES["stanford_cars/cars_test_annos_withlabels.mat"]),
                       Put(SOURCES[f"stanford_cars/{SPLIT}"])),
                      Counts(196, 6509, 1635, 8041), split=SPLIT)

    def read_data(self):
        return self.read_or_make_split(os.path.join(self.dataset_dir, SPLIT),
                                       self.split_from_mat)

    def split_from_mat(self):
        def mat(rel, key):
            return load_mat(os.path.join(self.dataset_dir, rel), key, "StanfordCars", self.preparation)

        names = [year_first(str(mat_scalar(n))) for n in mat("devkit/cars_meta.mat", "class_names")]

        def read(folder, rel):
            items = []
            for a in mat(rel, "annotations"):
                label = int(mat_scalar(a["class"])) - 1
                impath = os.path.join(self.dataset_dir, folder, str(mat_scalar(a["fname"])))
                items.append(Datum(impath, label, names[label]))
            return check_on_disk(items, os.path.join(self.dataset_dir, rel))

        trainval = read("cars_train", "devkit/cars_train_annos.mat")
        test = read("cars_test", "cars_test_annos_withlabels.mat")
        return (*self.split_train_val(trainval), test)
