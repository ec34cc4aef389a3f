"""DataManager: dataset from the registry, transforms, and the loaders a trainer uses."""
import os

import torch
from PIL import Image
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset, default_collate

from ..errors import CasplError
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
    # more workers than cores only adds start-up time
    return max(0, min(cfg.DATALOADER.NUM_WORKERS, os.cpu_count() or 1))


class DataManager:
    def __init__(self, cfg, dataset=None):
        self.cfg = cfg
        self.dataset = dataset if dataset is not None else DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
        self.tfm_train = build_transform(cfg, is_train=True)
        self.tfm_test = build_transform(cfg, is_train=False)
        self.pin_memory = torch.cuda.is_available() and cfg.USE_CUDA
        # Seeded per epoch by the trainer (set_epoch), so the shuffle order and worker
        # seeds of epoch e do not depend on what ran before: an interrupted run resumes exactly.
        self.train_generator = torch.Generator()
        self.skipped = set()
        self.train_loader_x = self._loader(self.dataset.train_x, cfg.DATALOADER.TRAIN_X.BATCH_SIZE, train=True)
        u = cfg.DATALOADER.TRAIN_U
        self.train_loader_u = self._loader(self.dataset.train_u, cfg.DATALOADER.TRAIN_X.BATCH_SIZE
                                           if u.SAME_AS_X else u.BATCH_SIZE, train=True)
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
        if seed < 0:  # not fixed: a fresh random order
            self.train_generator.seed()
        else:
            self.train_generator.manual_seed(seed * 1_000_003 + epoch)

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
        return DataLoader(
            dataset or ImageDataset(items, self.tfm_train if train else self.tfm_test, self.cfg.DATASET.SKIP_BAD_IMAGES),
            batch_size=batch_size,
            shuffle=train,
            generator=self.train_generator if train else None,
            collate_fn=collate_readable,
            num_workers=num_workers(self.cfg),
            pin_memory=self.pin_memory,
            drop_last=train and len(items) >= batch_size,
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
