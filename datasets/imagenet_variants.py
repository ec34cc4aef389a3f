"""The ImageNet distribution-shift test sets (evaluation only, no training split), each with
a copy of ImageNet's classnames.txt beside its images, as in CoOp's DATASETS.md:
- ImageNetV2: $DATA/imagenetv2/imagenetv2-matched-frequency-format-val/<i>/, folder i
  holding the class on line i of classnames.txt (1000 classes);
- ImageNetSketch: $DATA/imagenet-sketch/images/<wnid>/ (1000 classes);
- ImageNetA: $DATA/imagenet-adversarial/imagenet-a/<wnid>/ (200 classes, README.txt beside);
- ImageNetR: $DATA/imagenet-rendition/imagenet-r/<wnid>/ (200 classes, README.txt beside).
Sketch, A and R are labelled by the sorted order of the wnid folders present, so A and R
are 200-way problems over their own classes. Folder scans are cached in caspl_index.pkl."""
import os

from caspl import DATASET_REGISTRY, CasplError
from caspl.data import DatasetBase
from caspl.data.prepare import Counts, Put, Recipe, Unpack

from .common import INDEX_FILE, class_folders, class_name, read_classnames, scan_class_folders
from .sources import SOURCES


def from_archive(archive, classes, images, take=None):
    """Unpack `archive` and add ImageNet's classnames.txt (CoOp's copy, CLIP's class names)."""
    return Recipe((Unpack(SOURCES[archive], take), Put(SOURCES["imagenet/classnames.txt"])),
                  Counts(classes, test=images))


class ImageNetTestSet(DatasetBase):
    """Wnid folders under image_dir, labelled in sorted folder order (not registered itself)."""

    required = ("classnames.txt",)
    template = "a photo of a {}."
    test_only = True

    def class_entries(self, names, names_file):
        """(label, folder, class name) for every class."""
        return [(y, w, class_name(names, w, names_file)) for y, w in enumerate(class_folders(self.image_dir))]

    def read_data(self):
        names_file = os.path.join(self.dataset_dir, "classnames.txt")

        def build():
            names = read_classnames(names_file, self.preparation)
            return {"test": scan_class_folders(self.image_dir, self.class_entries(names, names_file))}

        test = self.cached_index(INDEX_FILE, build, watch=[self.image_dir, names_file])["test"]
        return [], [], test


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetTestSet):
    dataset_dir = "imagenetv2"
    image_dir = "imagenetv2-matched-frequency-format-val"
    preparation = ("extract imagenetv2-matched-frequency.tar.gz here and copy ImageNet's classnames.txt beside it, "
                   "as in CoOp's DATASETS.md")
    download = from_archive("imagenetv2/imagenetv2-matched-frequency.tar.gz", 1000, 10000)

    def class_entries(self, names, names_file):
        missing = [str(y) for y in range(len(names)) if not os.path.isdir(os.path.join(self.image_dir, str(y)))]
        if missing:
            raise CasplError(f"ImageNetV2 needs a folder per line of {names_file} in {self.image_dir}; "
                             f"missing: {', '.join(missing[:5])} ({self.preparation})")
        return [(y, str(y), name) for y, name in enumerate(names.values())]


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetTestSet):
    dataset_dir = "imagenet-sketch"
    image_dir = "images"
    preparation = ("extract ImageNet-Sketch into images/ and copy ImageNet's classnames.txt beside it, "
                   "as in CoOp's DATASETS.md")
    download = from_archive("imagenet-sketch/ImageNet-Sketch.zip", 1000, 50889, {"sketch": "images"})


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetTestSet):
    dataset_dir = "imagenet-adversarial"
    image_dir = "imagenet-a"
    preparation = "extract imagenet-a.tar here and copy ImageNet's classnames.txt beside it, as in CoOp's DATASETS.md"
    download = from_archive("imagenet-adversarial/imagenet-a.tar", 200, 7500)


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetTestSet):
    dataset_dir = "imagenet-rendition"
    image_dir = "imagenet-r"
    preparation = "extract imagenet-r.tar here and copy ImageNet's classnames.txt beside it, as in CoOp's DATASETS.md"
    download = from_archive("imagenet-rendition/imagenet-r.tar", 200, 30000)
