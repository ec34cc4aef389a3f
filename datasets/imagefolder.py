"""Your own data, no code needed: DATASET.DIR (under DATASET.ROOT, or absolute) holds one
sub-folder of images per class, the folder name being the class name. The split comes from
DATASET.SPLIT_FILE in that folder (CoOp's JSON format), or is drawn once per class with
DATASET.SPLIT_RATIOS (seeded) and written there for every later run."""
import math
import os

from caspl import DATASET_REGISTRY, CasplError
from caspl.data import DatasetBase


@DATASET_REGISTRY.register()
class ImageFolder(DatasetBase):
    preparation = "DATASET.DIR must hold one sub-folder of images per class"

    def __init__(self, cfg):
        if not cfg.DATASET.DIR:
            raise CasplError("ImageFolder needs DATASET.DIR: the folder with one sub-folder of images per class")
        ratios = tuple(cfg.DATASET.SPLIT_RATIOS)
        if len(ratios) != 3 or min(ratios) < 0 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
            raise CasplError(f"DATASET.SPLIT_RATIOS must be three shares (train, val, test) summing to 1, not {ratios}")
        self.dataset_dir = cfg.DATASET.DIR
        self.template = cfg.DATASET.TEMPLATE
        super().__init__(cfg)

    def read_data(self):
        p_train, p_val, _ = self.cfg.DATASET.SPLIT_RATIOS
        train, val, test = self.read_or_make_split(os.path.join(self.dataset_dir, self.cfg.DATASET.SPLIT_FILE),
                                                   lambda: self.split_folders(p_train, p_val), official=False)
        if not train:
            raise CasplError(f"ImageFolder: no images found in class sub-folders of {self.dataset_dir}")
        return train, val, test
