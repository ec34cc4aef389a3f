"""ImageNet (ILSVRC-2012), CoOp's layout: $DATA/imagenet/images/train/<wnid>/*.JPEG,
$DATA/imagenet/images/val/<wnid>/*.JPEG and $DATA/imagenet/classnames.txt ("<wnid> <name>").
train = the train folders, test = the val folders, which are also the val set (never
few-shot sampled); label = index of the wnid among the sorted train folders. The folder
scan is cached in caspl_index.pkl and redone when a folder changes; CoOp's own
preprocessed.pkl is neither read nor written."""
import os
import re
import tarfile

from caspl import DATASET_REGISTRY, CasplError
from caspl.data import DatasetBase
from caspl.data.prepare import Counts, Put, Recipe, Step, reading, untar

from .common import INDEX_FILE, class_folders, class_name, read_classnames, scan_class_folders
from .sources import SOURCES

VAL_IMAGE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


class ClassFoldersFromTars(Step):
    """images/train/<wnid>/ and images/val/<wnid>/ from the official archives, in one pass
    over each: the train tar holds one tar per class, streamed into its folder; the val tar's
    50,000 images go to the folders of the classes the devkit's ground truth gives them."""

    sources = tuple(SOURCES[f"imagenet/{name}"] for name in (
        "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"))

    def run(self, job):
        train, val, devkit = (job.files[s.key] for s in self.sources)
        val_wnids = self.val_classes(devkit, job.scratch("devkit"))
        with reading(train, "extracting ILSVRC2012_img_train.tar") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                wnid = os.path.basename(member.name).removesuffix(".tar")
                if not member.isfile() or not re.fullmatch(r"n\d{8}", wnid):
                    raise CasplError(f"{train} holds {member.name}, not a class archive (n<8 digits>.tar)")
                untar(tar.extractfile(member), job.path(os.path.join("images", "train", wnid)))
        with reading(val, "extracting ILSVRC2012_img_val.tar") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                number = VAL_IMAGE.fullmatch(os.path.basename(member.name))
                if not member.isfile() or not number or not 0 < int(number.group(1)) <= len(val_wnids):
                    raise CasplError(f"{val} holds {member.name}, not one of the devkit's {len(val_wnids):,} "
                                     "validation images")
                member.name = os.path.join(val_wnids[int(number.group(1)) - 1], os.path.basename(member.name))
                tar.extract(member, job.path(os.path.join("images", "val")), filter="data")

    @staticmethod
    def val_classes(devkit, scratch):
        """The wnid of each validation image, in image order: torchvision reads the devkit."""
        import torch
        from torchvision.datasets.imagenet import META_FILE, parse_devkit_archive

        parse_devkit_archive(scratch, devkit)  # an absolute `devkit` is read where it is; the meta goes to scratch
        return torch.load(os.path.join(scratch, META_FILE), weights_only=True)[1]


@DATASET_REGISTRY.register()
class ImageNet(DatasetBase):
    dataset_dir = "imagenet"
    image_dir = "images"
    required = ("images/train", "images/val", "classnames.txt")
    template = "a photo of a {}."
    few_shot_val = False
    preparation = ("extract ILSVRC-2012 train and val into images/train and images/val (one folder per wnid) "
                   "and add classnames.txt, as in CoOp's DATASETS.md")
    download = Recipe((ClassFoldersFromTars(), Put(SOURCES["imagenet/classnames.txt"])),
                      Counts(1000, 1281167, 50000, 50000))

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
