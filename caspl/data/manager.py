"""DataManager: dataset from the registry, transforms, and the loaders a trainer uses."""
import os
import random

import torch
from PIL import Image
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from ..errors import CasplError
from ..utils import distributed
from ..registry import DATASET_REGISTRY
from .transforms import build_transform


class ImageDataset(Dataset):
    def __init__(self, items, transform, skip_bad=False):
        self.items, self.transform, self.skip_bad = items, transform, skip_bad

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        d = self.items[index]
        try:
            with Image.open(d.impath) as im:
                img = im.convert("RGB")
        except (OSError, ValueError) as err:
            if self.skip_bad:
                return {"unreadable": d.impath}
            raise CasplError(f"cannot read image {d.impath}: {err} (set DATASET.SKIP_BAD_IMAGES True to skip "
                             "unreadable images)") from None
        return {"img": self.transform(img), "label": d.label, "domain": d.domain, "impath": d.impath, "index": index}


def collate_readable(samples):
    """Batch the readable samples; name the unreadable ones (DATASET.SKIP_BAD_IMAGES)."""
    good = [s for s in samples if "unreadable" not in s]
    batch = default_collate(good) if good else {}
    batch["unreadable"] = [s["unreadable"] for s in samples if "unreadable" in s]
    return batch


def num_workers(cfg):
    # more workers than the cores of this process only adds start-up time
    per_process = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(cfg.DATALOADER.NUM_WORKERS, max(per_process, 1)))


def auto_flag(value, default, key):
    if value == "auto":
        return default
    if isinstance(value, bool):
        return value
    if value in ("True", "False"):  # as the config merge keeps them (the default is a string)
        return value == "True"
    raise CasplError(f"{key} must be auto, True or False, not {value!r}")


class DataManager:
    def __init__(self, cfg, dataset=None):
        self.cfg = cfg
        self.dataset = dataset if dataset is not None else DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
        self.tfm_train = build_transform(cfg, is_train=True)
        self.tfm_test = build_transform(cfg, is_train=False)
        on_gpu = torch.cuda.is_available() and cfg.USE_CUDA
        self.workers = num_workers(cfg)
        self.pin_memory = auto_flag(cfg.DATALOADER.PIN_MEMORY, on_gpu, "DATALOADER.PIN_MEMORY")
        self.persistent = self.workers > 0 and auto_flag(cfg.DATALOADER.PERSISTENT_WORKERS, on_gpu,
                                                         "DATALOADER.PERSISTENT_WORKERS")
        # The shuffle of epoch e is a permutation seeded by (seed, e), split over the processes
        # (DistributedSampler, also for one process, so W processes with batch B see the batches
        # of one with batch W*B); worker seeds come from a generator seeded the same way. So an
        # interrupted run resumes exactly.
        self.train_generator = torch.Generator()
        self.train_samplers = []
        self.skipped = set()
        self.train_loader_x = self._loader(self.dataset.train_x, cfg.DATALOADER.TRAIN_X.BATCH_SIZE, train=True)
        # no loader of train_u: a method that learns from unlabelled images builds its own
        # (make_train_loader), so DATALOADER.TRAIN_U.* is read by none and refused when set
        self.val_loader = self._loader(self.dataset.val, cfg.DATALOADER.TEST.BATCH_SIZE) if self.dataset.val else None
        self.test_loader = self._loader(self.dataset.test, cfg.DATALOADER.TEST.BATCH_SIZE)

    @property
    def classnames(self):
        return self.dataset.classnames

    @property
    def num_classes(self):
        return self.dataset.num_classes

    @property
    def lab2cname(self):
        return self.dataset.lab2cname

    def batches(self, loader):
        """Iterate a loader, reporting each unreadable image once and leaving out empty batches."""
        for batch in loader:
            for path in batch.pop("unreadable"):
                if path not in self.skipped:
                    self.skipped.add(path)
                    print(f"Warning: skipping unreadable image {path} ({len(self.skipped)} skipped so far)")
            if "img" in batch:
                yield batch

    def set_epoch(self, seed, epoch):
        if seed < 0:  # not fixed: a fresh order (the same in every process) and fresh worker seeds
            seed = distributed.broadcast_object(random.randrange(2**31))
            self.train_generator.seed()
        else:
            self.train_generator.manual_seed(seed * 1_000_003 + epoch + 7919 * distributed.rank())
        for sampler in self.train_samplers:
            sampler.seed = seed
            sampler.set_epoch(epoch)

    def make_train_loader(self, items, dataset=None):
        """A shuffled, augmented loader over `items` (e.g. labelled and unlabelled images
        together), or over `dataset` built on them."""
        return self._loader(items, self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE, train=True, dataset=dataset)

    def make_test_loader(self, items):
        """An ordered loader over `items` with the test transform (e.g. to extract features)."""
        return self._loader(items, self.cfg.DATALOADER.TEST.BATCH_SIZE)

    def _loader(self, items, batch_size, train=False, dataset=None):
        if not items:
            return None
        dataset = dataset or ImageDataset(items, self.tfm_train if train else self.tfm_test,
                                          self.cfg.DATASET.SKIP_BAD_IMAGES)
        if train:
            sampler = DistributedSampler(dataset, num_replicas=distributed.world_size(), rank=distributed.rank(),
                                         shuffle=True, seed=max(self.cfg.SEED, 0))
            self.train_samplers.append(sampler)
        else:
            sampler = distributed.ShardSampler(len(dataset)) if distributed.active() else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            generator=self.train_generator if train else None,
            collate_fn=collate_readable,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent,
            drop_last=train and len(sampler) >= batch_size,
        )

    def summary(self):
        ds = self.dataset
        rows = [
            ["Dataset", type(ds).__name__],
            ["# classes", f"{ds.num_classes:,}"],
            ["# train_x", f"{len(ds.train_x):,}"],
            ["# val", f"{len(ds.val):,}"],
            ["# test", f"{len(ds.test):,}"],
        ]
        if ds.train_u:
            rows.append(["# train_u (unlabeled)", f"{len(ds.train_u):,}"])
        print(tabulate(rows))
