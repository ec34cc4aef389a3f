"""ImageNet (ILSVRC-2012), CoOp's layout: $DATA/imagenet/images/train/<wnid>/*.JPEG,
$DATA/imagenet/images/val/<wnid>/*.JPEG and $DATA/imagenet/classnames.txt ("<wnid> <name>").
train = the train folders, test = the val folders, which are also the val set (never
few-shot sampled); label = index of the wnid among the sorted train folders. The folder
scan is cached in caspl_index.pkl and redone when a folder changes; CoOp's own
preprocessed.pkl is neither read nor written."""
import os

from caspl import DATASET_REGISTRY, CasplError
from caspl.data import DatasetBase

from .common import INDEX_FILE, class_folders, class_name, read_classnames, scan_class_folders


@DATASET_REGISTRY.register()
class ImageNet(DatasetBase):
    dataset_dir = "imagenet"
    image_dir = "images"
    required = ("images/train", "images/val", "classnames.txt")
    template = "a photo of a {}."
    few_shot_val = False
    preparation = ("extract ILSVRC-2012 train and val into images/train and images/val (one folder per wnid) "
                   "and add classnames.txt, as in CoOp's DATASETS.md")

    def read_data(self):
        train_dir, val_dir = os.path.join(self.image_dir, "train"), os.path.join(self.image_dir, "val")
        names_file = os.path.join(self.dataset_dir, "classnames.txt")

        def build():
            names = read_classnames(names_file, self.preparation)
            labels = {wnid: i for i, wnid in enumerate(class_folders(train_dir))}
            unknown = [w for w in class_folders(val_dir) if w not in labels]
            if unknown:
                raise CasplError(f"{val_dir} has class folders that {train_dir} lacks: {', '.join(unknown[:5])}")

            def entries(folder):
                return [(labels[w], w, class_name(names, w, names_file)) for w in class_folders(folder)]

            return {"train": scan_class_folders(train_dir, entries(train_dir)),
                    "test": scan_class_folders(val_dir, entries(val_dir))}

        index = self.cached_index(INDEX_FILE, build, watch=[train_dir, val_dir, names_file])
        return index["train"], index["test"], index["test"]
