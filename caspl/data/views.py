"""A fixed set of augmented views per image, and a cache of features computed on them.

View v of image i is the training transform run with a torch seed derived from (seed, i, v),
so it is the same picture every time it is drawn. Epoch e shows view e mod V of every image:
after V epochs every view has been seen and a feature cache over (image, view) is full."""
import hashlib
import json
import os

import torch

from ..utils import atomic_save, distributed
from .manager import ImageDataset


def view_seed(seed, index, view):
    digest = hashlib.blake2b(f"{seed}/{index}/{view}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class FixedViews(ImageDataset):
    def __init__(self, items, transform, views, seed, skip_bad=False):
        super().__init__(items, transform, skip_bad)
        self.views, self.seed, self.epoch = views, seed, 0

    def __getitem__(self, index):
        view = self.epoch % self.views
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed(self.seed, index, view))
            sample = super().__getitem__(index)
        sample["view"] = view
        return sample


class FeatureCache:
    """Features per (image, view) on the CPU, filled as they are first computed and saved to
    `path` (atomically) with a key; a cache whose key differs is discarded."""

    def __init__(self, path, key, n_images, views, dim):
        self.path, self.key = path, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        self.features = torch.zeros(n_images, views, dim)
        self.filled = torch.zeros(n_images, views, dtype=torch.bool)
        self.dirty = False
        saved = self._read() if os.path.isfile(path) else None
        if saved is not None:
            if saved.get("key") == self.key and saved["features"].shape == self.features.shape:
                self.features, self.filled = saved["features"], saved["filled"]
                print(f"Teacher cache: {int(self.filled.sum()):,} of {self.filled.numel():,} views from {path}")
            else:
                print(f"Teacher cache {path} was made for another teacher, data or transform; rebuilding it")
        self.shared = self.filled.clone()  # what every process holds (see synchronize)

    def _read(self):
        """The saved cache, or None (with a note) where the file is not one: it is rebuilt."""
        try:  # weights_only: whatever the file holds, reading it runs no code
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:
            saved = None
        features, filled = (saved.get("features"), saved.get("filled")) if isinstance(saved, dict) else (None, None)
        if all(isinstance(t, torch.Tensor) for t in (features, filled)) and features.shape[:2] == filled.shape:
            return saved
        print(f"Teacher cache {self.path} is not a cache caspl can read (damaged, or cut short?); rebuilding it")
        return None

    def lookup(self, index, view, compute):
        """Features for the batch's (index, view) pairs; `compute()` runs only on a miss and
        must return features for the whole batch."""
        index, view = index.cpu(), view.cpu()
        if bool(self.filled[index, view].all()):
            return self.features[index, view]
        fresh = compute().detach().float().cpu()
        self.features[index, view] = fresh
        self.filled[index, view] = True
        self.dirty = True
        return fresh

    def synchronize(self, device, chunk=65536):
        """Data parallel: each process filled the views of its own images; afterwards every
        process holds all of them (a view two processes computed is averaged; they agree)."""
        if not distributed.active():
            return
        for start in range(0, len(self.filled), chunk):
            part = slice(start, start + chunk)
            fresh = self.filled[part] & ~self.shared[part]
            count = distributed.sum_tensor(fresh.float().to(device)).cpu()
            total = distributed.sum_tensor((self.features[part] * fresh.unsqueeze(-1)).to(device)).cpu()
            new = count > 0
            self.features[part][new] = total[new] / count[new].unsqueeze(-1)
            self.filled[part] |= new
        self.shared = self.filled.clone()
        self.dirty = True

    def save(self):
        if self.dirty and distributed.is_main():
            atomic_save({"key": self.key, "features": self.features, "filled": self.filled}, self.path)
            self.dirty = False
