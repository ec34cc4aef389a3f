from .datum import DatasetBase, Datum, check_on_disk, sample_few_shot, split_per_class, subsample_classes
from .manager import DataManager
from .transforms import build_transform

__all__ = [
    "DataManager", "DatasetBase", "Datum", "build_transform", "check_on_disk", "sample_few_shot", "split_per_class",
    "subsample_classes",
]
