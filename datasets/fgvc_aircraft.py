"""FGVC-Aircraft, CoOp's layout: $DATA/fgvc_aircraft/ is the archive's data/ folder, with
images/<id>.jpg, variants.txt (one class per line, label = line index) and
images_variant_{train,val,test}.txt ("<id> <variant>" per line), which are the split:
there is no JSON."""
import os

from caspl import DATASET_REGISTRY, CasplError
from caspl.data import DatasetBase, Datum, check_on_disk
from caspl.data.prepare import Counts, Recipe, Unpack

from .common import read_lines
from .sources import SOURCES


@DATASET_REGISTRY.register()
class FGVCAircraft(DatasetBase):
    dataset_dir = "fgvc_aircraft"
    image_dir = "images"
    required = ("variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt")
    template = "a photo of a {}, a type of aircraft."
    preparation = ("extract fgvc-aircraft-2013b.tar.gz and move its data/ folder to fgvc_aircraft/, "
                   "as in CoOp's DATASETS.md")
    download = Recipe((Unpack(SOURCES["fgvc_aircraft/fgvc-aircraft-2013b.tar.gz"], {"fgvc-aircraft-2013b/data": ""}),),
                      Counts(100, 3334, 3333, 3333))

    def read_data(self):
        variants = read_lines(os.path.join(self.dataset_dir, "variants.txt"), self.preparation)
        labels = {v: i for i, v in enumerate(variants)}
        return tuple(self.read_list(f"images_variant_{s}.txt", labels) for s in ("train", "val", "test"))

    def read_list(self, name, labels):
        path = os.path.join(self.dataset_dir, name)
        items = []
        for line in read_lines(path, self.preparation):
            image_id, _, variant = line.partition(" ")
            if variant not in labels:
                raise CasplError(f"{path}: variant {variant!r} is not in variants.txt")
            items.append(Datum(os.path.join(self.image_dir, image_id + ".jpg"), labels[variant], variant))
        return check_on_disk(items, path)
