"""Linear-probe CLIP (the few-shot baseline of the CoOp and CasPL tables): a logistic-
regression classifier on the frozen CLIP's image features. As CoOp's linear probe: features
of the test-transformed images, scikit-learn's L2 logistic regression (L-BFGS, at most
MAX_ITER iterations), its strength C chosen on the validation split by a coarse search over
C_GRID and then SEARCH_STEPS halvings of a log-scale interval around the best value.

Features are cached on disk per backbone, dataset, split and image list (so per shots and
seed for the few-shot train split, once for the test split) and reused by later runs."""
import hashlib
import json
import math
import os
import re
import warnings

import torch
import torch.nn as nn

from caspl import TRAINER_REGISTRY, CasplError
from caspl.data.datum import try_write
from caspl.engine import Trainer
from caspl.utils import atomic_save, distributed

HEAD = "linear_probe"


def log_search(score, grid, steps):
    """C maximising `score(C)`: the best of `grid`, then `steps` rounds that compare the ends
    of a log10 interval (first [best/10, best*10]) and keep the half on the better end's side
    (ties keep the smaller C). Returns (C, [(C, score) tried, in order])."""
    tried = {}

    def measure(c):
        if c not in tried:
            tried[c] = score(c)
        return tried[c]

    scores = [measure(c) for c in grid]
    best = grid[scores.index(max(scores))]
    lo, hi = math.log10(best) - 1, math.log10(best) + 1
    for _ in range(steps):
        if measure(10 ** lo) < measure(10 ** hi):
            best, lo = 10 ** hi, (lo + hi) / 2
        else:
            best, hi = 10 ** lo, (lo + hi) / 2
    return best, list(tried.items())


def accuracy(classifier, features, labels):
    return 100.0 * float((classifier.predict(features) == labels).mean())


@TRAINER_REGISTRY.register()
class LinearProbeCLIP(Trainer):
    CONFIG_NAME = "LINEAR_PROBE"
    CONFIG_DEFAULTS = {
        "PREC": "fp16",
        "C_GRID": (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6),  # the coarse search (CoOp's)
        "SEARCH_STEPS": 8,
        "MAX_ITER": 1000,
        "FEATURE_DIR": "",  # "" = clip_feat/ in the dataset's folder
    }

    def check_cfg(self, cfg):
        if distributed.active():
            raise CasplError("LinearProbeCLIP fits on one process; run it without torchrun")
        c = cfg.TRAINER.LINEAR_PROBE
        if not c.C_GRID or min(c.C_GRID) <= 0:
            raise CasplError("TRAINER.LINEAR_PROBE.C_GRID must list positive regularisation strengths")
        if c.SEARCH_STEPS < 0 or c.MAX_ITER < 1:
            raise CasplError("TRAINER.LINEAR_PROBE.SEARCH_STEPS must be >= 0 and MAX_ITER >= 1")

    def build_model(self):
        self.clip = self.load_clip()
        dim = self.clip.embed_dim
        self.head = nn.Linear(dim, self.num_classes)
        self.register_model(HEAD, self.head)
        self.per_class_models.add(HEAD)

    # ------------------------------------------------------------------ features
    def feature_dir(self):
        name = self.cfg.MODEL.BACKBONE.NAME
        backbone = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.splitext(os.path.basename(name))[0]
                          if os.path.isfile(name) else name)
        root = self.method_cfg.FEATURE_DIR
        base = os.path.join(root, self.cfg.DATASET.NAME) if root else os.path.join(self.dm.dataset.dataset_dir,
                                                                                   "clip_feat")
        return os.path.join(base, backbone)

    def features(self, split, items):
        """(features [N, d] float32, labels [N]) of `items` through the frozen image encoder,
        from the cache when it holds exactly these images for this backbone and transform."""
        name = self.cfg.MODEL.BACKBONE.NAME
        backbone = {"name": name}
        if os.path.isfile(name):
            backbone = {"file": os.path.abspath(name), "bytes": os.path.getsize(name),
                        "mtime": os.stat(name).st_mtime_ns}
        key = {"backbone": backbone, "precision": self.precision, "transform": repr(self.dm.tfm_test),
               "images": [(os.path.relpath(d.impath, self.dm.dataset.root), d.label) for d in items]}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = os.path.join(self.feature_dir(), f"{split}-{len(items)}img-{digest}.pt")
        if os.path.isfile(path):
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                print(f"Features of the {split} split ({len(items):,} images) from the cache {path}")
                return cached["features"], cached["labels"]
            except Exception:
                print(f"Feature cache {path} is unreadable; recomputing it")
        print(f"Extracting features of the {split} split ({len(items):,} images)")
        chunks, labels = [], []
        with torch.no_grad():
            for batch in self.dm.batches(self.dm.make_test_loader(items)):
                images, targets = self.parse_batch(batch)
                with self.autocast():
                    chunks.append(self.clip.encode_image(images).float().cpu())
                labels.append(targets.cpu())
        if self.dm.skipped:
            raise CasplError("the linear probe needs a feature for every image; remove the unreadable ones")
        features, labels = torch.cat(chunks), torch.cat(labels)
        try_write(lambda p: atomic_save({"features": features, "labels": labels}, p), path, "feature cache")
        return features, labels

    # ------------------------------------------------------------------ fitting
    def fit(self, features, labels, c):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=c, max_iter=self.method_cfg.MAX_ITER).fit(features.numpy(), labels.numpy())

    def train(self):
        from sklearn.exceptions import ConvergenceWarning

        c = self.method_cfg
        ds = self.dm.dataset
        x_train, y_train = self.features("train", ds.train_x)
        if len(y_train.unique()) != self.num_classes or self.num_classes < 2:
            raise CasplError("the linear probe needs training images of every class (and at least two classes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the reference also stops at MAX_ITER
            fitted = {}  # C -> classifier, so the chosen one is not fitted twice

            def val_accuracy(value):
                fitted[value] = self.fit(x_train, y_train, value)
                return accuracy(fitted[value], x_val, y_val.numpy())

            if ds.val:
                x_val, y_val = self.features("val", ds.val)
                best, tried = log_search(val_accuracy, list(c.C_GRID), c.SEARCH_STEPS)
                for value, acc in tried:
                    print(f"C {value:.4g}: val accuracy {acc:.2f}%")
                print(f"Chosen C {best:.4g} (best val accuracy {max(a for _, a in tried):.2f}%)")
            else:
                best = 1.0
                print("Note: the dataset has no validation split; C = 1 without a search")
            classifier = fitted.get(best) or self.fit(x_train, y_train, best)
        self.set_head(classifier)
        self.epoch = 0
        self.save_model(1)
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            self.test()

    def set_head(self, classifier):
        """The scikit-learn classifier as the linear head (its classes are the labels 0..C-1)."""
        weight, bias = torch.tensor(classifier.coef_).float(), torch.tensor(classifier.intercept_).float()
        if weight.shape[0] == 1:  # two classes: one decision value, positive for the second
            weight, bias = torch.cat([torch.zeros_like(weight), weight]), torch.cat([torch.zeros_like(bias), bias])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)

    def predictions(self, split, loader):
        items = self.dm.dataset.val if split == "val" else self.dm.dataset.test
        features, labels = self.features(split if split == "val" else "test", items)
        with torch.no_grad():
            yield self.head(features.to(self.device)), labels.to(self.device)

    def model_inference(self, images):
        return self.head(self.clip.encode_image(images).float())
