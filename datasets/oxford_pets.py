"""Oxford-IIIT Pets, CoOp's layout: $DATA/oxford_pets/images/<Breed_name>_<n>.jpg,
$DATA/oxford_pets/annotations/{trainval,test}.txt and split_zhou_OxfordPets.json. Without
the JSON the split is built from the annotations (trainval -> 80% train / 20% val, test);
the class name is the image name before its last "_", lower-cased."""
import os

from caspl import DATASET_REGISTRY
from caspl.data import DatasetBase, Datum, check_on_disk
from caspl.data.prepare import Counts, Put, Recipe, Unpack

from .common import read_lines
from .sources import SOURCES

SPLIT = "split_zhou_OxfordPets.json"


@DATASET_REGISTRY.register()
class OxfordPets(DatasetBase):
    dataset_dir = "oxford_pets"
    image_dir = "images"
    template = "a photo of a {}, a type of pet."
    preparation = ("extract images.tar.gz and annotations.tar.gz and add split_zhou_OxfordPets.json "
                   "as in CoOp's DATASETS.md")
    download = Recipe((Unpack(SOURCES["oxford_pets/images.tar.gz"]), Unpack(SOURCES["oxford_pets/annotations.tar.gz"]),
                       Put(SOURCES[f"oxford_pets/{SPLIT}"])),
                      Counts(37, 2944, 736, 3669), split=SPLIT)

    def read_data(self):
        def make():
            trainval, test = self.read_list("trainval.txt"), self.read_list("test.txt")
            return (*self.split_train_val(trainval), test)

        return self.read_or_make_split(os.path.join(self.dataset_dir, SPLIT), make)

    def read_list(self, name):
        """annotations/<name>: "<image name> <class id 1..37> <species> <breed id>" per line."""
        path = os.path.join(self.dataset_dir, "annotations", name)
        items = []
        for line in read_lines(path, self.preparation):
            if not line.startswith("#"):
                imname, class_id = line.split()[:2]
                breed = imname.rsplit("_", 1)[0].lower()
                items.append(Datum(os.path.join(self.image_dir, imname + ".jpg"), int(class_id) - 1, breed))
        return check_on_disk(items, path)
