from .datum import DatasetBase, Datum, sample_few_shot, subsample_classes
from .manager import DataManager
from .transforms import build_transform

__all__ = ["DataManager", "DatasetBase", "Datum", "build_transform", "sample_few_shot", "subsample_classes"]
