"""SUN397, CoOp's layout: $DATA/sun397/SUN397/<letter>/<category>[/<sub>]/*.jpg, with
ClassName.txt, Training_01.txt, Testing_01.txt (from Partitions.zip) and
split_zhou_SUN397.json in $DATA/sun397. Without the JSON the split is built from partition
01 (training -> 80% train / 20% val). Class name: the path after the letter, reversed and
joined by spaces ("a/apartment_building/outdoor" -> "outdoor apartment_building")."""
import os

from caspl import DATASET_REGISTRY, CasplError
from caspl.data import DatasetBase, Datum, check_on_disk
from caspl.data.prepare import Counts, Put, Recipe, Unpack

from .common import read_lines
from .sources import SOURCES

SPLIT = "split_zhou_SUN397.json"


def sun_classname(category):
    return " ".join(reversed(category.split("/")[1:]))


@DATASET_REGISTRY.register()
class SUN397(DatasetBase):
    dataset_dir = "sun397"
    image_dir = "SUN397"
    template = "a photo of a {}."
    preparation = "extract SUN397.tar.gz and Partitions.zip and add split_zhou_SUN397.json as in CoOp's DATASETS.md"
    download = Recipe((Unpack(SOURCES["sun397/SUN397.tar.gz"]), Put(SOURCES[f"sun397/{SPLIT}"])),
                      Counts(397, 15880, 3970, 19850), split=SPLIT)

    def read_data(self):
        def make():
            categories = [c.lstrip("/") for c in read_lines(os.path.join(self.dataset_dir, "ClassName.txt"),
                                                            self.preparation)]
            labels = {c: i for i, c in enumerate(categories)}
            trainval, test = self.read_list("Training_01.txt", labels), self.read_list("Testing_01.txt", labels)
            return (*self.split_train_val(trainval), test)

        return self.read_or_make_split(os.path.join(self.dataset_dir, SPLIT), make)

    def read_list(self, name, labels):
        """One "/<letter>/<category>/<image>.jpg" per line."""
        path = os.path.join(self.dataset_dir, name)
        items = []
        for line in read_lines(path, self.preparation):
            rel = line.lstrip("/")
            category = rel.rsplit("/", 1)[0]
            if category not in labels:
                raise CasplError(f"{path}: {line} is in a category that ClassName.txt does not list")
            items.append(Datum(os.path.join(self.image_dir, rel), labels[category], sun_classname(category)))
        return check_on_disk(items, path)
