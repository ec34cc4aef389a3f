"""The trainer base: everything a method shares (data, loop, optimiser and LR schedule,
precision, checkpoints, resume, evaluation, logging). A method subclasses `Trainer` and
implements `build_model`, `forward_backward` and `model_inference` (see trainers/coop.py)."""
import contextlib
import datetime
import functools
import json
import os
import pickle
import sys
import time
import zipfile
from collections import OrderedDict, defaultdict

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import __version__
from ..clip import is_open_clip, load_backbone
from ..config import refuse_unread, tracked
from ..config.reads import read_log
from ..data import DataManager
from ..errors import CasplError
from ..evaluation import Classification
from ..utils import atomic_save, atomic_write_text, distributed, get_rng_state, set_rng_state
from ..utils.io import remove_partial_writes
from .checkpoints import (POINTER, checkpoint_name, config_leaves, last_whole_epoch, point_to, remove_superseded,
                          resume_conflicts, resume_refusal, saved_epochs)
from .optim import EpochLR, build_optimizer, set_lr
from .precision import amp_dtype, grad_scaler, precision_line, resolve_precision


def checkpoint_file(directory, name, epoch=None, best=False):
    """The checkpoint of module `name` in the run `directory`: of `epoch`, the best-val one
    (`best`), or else the last one saved (its `checkpoint` pointer; model-best without one)."""
    folder = os.path.join(directory, name)
    if best:
        return os.path.join(folder, "model-best.pth.tar")
    if epoch is not None:
        return os.path.join(folder, checkpoint_name(epoch))
    pointer = os.path.join(folder, POINTER)
    if os.path.isfile(pointer):
        with open(pointer, errors="replace") as f:
            name = f.read().strip()
        if not name:
            raise CasplError(f"{pointer} is empty: it names the last checkpoint of {folder} (model.pth.tar-N); "
                             "write that name into it, or delete it")
        return os.path.join(folder, name)
    return os.path.join(folder, "model-best.pth.tar")


def evaluated_checkpoint(directory, name, epoch=None, best=False):
    """The checkpoint an evaluation of `directory` loads: without an epoch, the best-val model
    where one was saved (as Dassl), else the last."""
    if epoch is None and not best and os.path.isfile(checkpoint_file(directory, name, best=True)):
        return checkpoint_file(directory, name, best=True)
    return checkpoint_file(directory, name, epoch, best)


def learnable_state(module):
    """A module's state without its frozen parameters: what a checkpoint needs to hold."""
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    return OrderedDict((k, v.detach().cpu()) for k, v in module.state_dict().items() if k not in frozen)


def read_checkpoint(path):
    """A checkpoint's contents, read with weights_only=True: tensors and plain types only, so
    a file from someone else cannot run code when loaded."""
    if not os.path.isfile(path):
        raise CasplError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            unsafe = []
        if not unsafe:
            raise CasplError(f"cannot read checkpoint {path}: not a checkpoint torch can load") from None
        raise CasplError(f"refusing to load {path}: it holds {', '.join(unsafe[:3])}, which a checkpoint never "
                         "contains (loading it could run code)") from None
    except Exception as err:
        raise CasplError(f"cannot read checkpoint {path}: {unreadable_because(path, err)}") from None


def unreadable_because(path, err):
    """Why torch.load failed (`err`) on the checkpoint file `path`, in words."""
    size = os.path.getsize(path)
    incomplete = "(a write or copy that did not finish?): replace it with a whole copy, or delete it"
    if size == 0:
        return f"the file is empty {incomplete}"
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"  # torch's format is a zip archive, whose directory comes last
    if zipped and not zipfile.is_zipfile(path):
        return f"the file ends too early, at {size:,} bytes {incomplete}"
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


class Trainer:
    # Per-method config: keys under cfg.TRAINER.<CONFIG_NAME>, declared with their defaults.
    CONFIG_NAME = None
    CONFIG_DEFAULTS = {}
    # Keys outside TRAINER.<CONFIG_NAME> the method reads ({section: {key: default}}), for a
    # reference's own layout; ROOT_CONFIG_OWNERS names its trainers in the refusal of another
    # trainer's run, which reads none of them.
    ROOT_CONFIG = {}
    ROOT_CONFIG_OWNERS = ""

    def __init__(self, cfg):
        self.cfg = cfg = self.resolve_cfg(tracked(cfg))
        self._reads_checked = False
        self.trained_config = None  # the recorded config of the checkpoint this run evaluates or continues
        print("** Config **")
        print(cfg.dump().rstrip())
        print("** End of config **")
        self.device = torch.device("cuda" if cfg.USE_CUDA and torch.cuda.is_available() else "cpu")
        self.output_dir = cfg.OUTPUT_DIR
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.start_epoch = self.epoch = self.batch_idx = 0
        self.best_result = -float("inf")
        self.per_class_models = set()  # registered modules whose state is one entry per class
        self._models, self._optims = OrderedDict(), OrderedDict()
        self._eval_cache = None
        self.writer, self.tensorboard = None, False
        self.precision = self._resolve_precision()
        self.skipped_steps = 0
        # settings the loop uses later, read now: whatever nothing reads is refused before training
        self.print_freq, self.checkpoint_freq = cfg.TRAIN.PRINT_FREQ, cfg.TRAIN.CHECKPOINT_FREQ
        self.skip_nonfinite_loss = cfg.TRAIN.SKIP_NONFINITE_LOSS
        self.final_model, self.no_test, self.test_split = cfg.TEST.FINAL_MODEL, cfg.TEST.NO_TEST, cfg.TEST.SPLIT
        with read_log(cfg).pause():  # validating a key is not using it
            self.check_cfg(cfg)
        self.dm = DataManager(self.data_cfg(cfg))
        self.dm.summary()
        self.classnames = self.dm.classnames
        self.num_classes = self.dm.num_classes
        self.build_model()
        self.lr_schedule = EpochLR(cfg.OPTIM)
        self.lr_scale = self._lr_scale()
        self.amp_dtype = amp_dtype(self.device)
        self.scaler = grad_scaler(self.precision, self.device)
        print(precision_line(self.precision, self.device))
        self.evaluator = Classification(self.classnames, per_class=cfg.TEST.PER_CLASS_RESULT)
        n_train = sum(p.numel() for m in self._models.values() for p in m.parameters() if p.requires_grad)
        print(f"Trainable parameters: {n_train:,}")

    def check_reads(self):
        """Refuse a setting the user wrote that nothing read through setup and the first training
        (or evaluation) step, before anything is saved: it would change nothing."""
        if not self._reads_checked:
            self._reads_checked = True
            trained = self.trained_config and config_leaves(self.trained_config)
            refuse_unread(self.cfg, self.cfg.TRAINER.NAME, trained)

    # ------------------------------------------------------------------ method hooks
    @classmethod
    def train_cfg(cls, cfg, model_dirs, epoch):
        """The config for training with --model-dir (Dassl reads it only with --eval-only; a
        method that takes inputs from another run that way fills them in here)."""
        raise CasplError(f"--model-dir is read with --eval-only; {cfg.TRAINER.NAME} does not train from it "
                         "(to start from another run's prompts: MODEL.INIT_WEIGHTS DIR)")

    def resolve_cfg(self, cfg):
        """The config this run uses, from the one given: a method reading a reference's layout
        translates it here, so that the logged config shows the values used."""
        return cfg

    @classmethod
    def eval_cfg(cls, cfg, model_dir, epoch):
        """The config for evaluating the checkpoint in `model_dir` (a method whose model
        depends on recorded inputs fills them in here). Called before the trainer is built."""
        return cfg

    def data_cfg(self, cfg):
        """The config the data are built from (a method that ignores few-shot limits changes it)."""
        return cfg

    def check_cfg(self, cfg):
        """Validate the method's own keys; raise CasplError with one clear line."""

    def build_model(self):
        raise NotImplementedError

    def forward_backward(self, batch):
        """Compute the loss on `batch`, call `self.optimize(loss)`, return a dict of floats."""
        raise NotImplementedError

    def model_inference(self, images):
        raise NotImplementedError

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    # ------------------------------------------------------------------ helpers for methods
    @property
    def method_cfg(self):
        return self.cfg.TRAINER[self.CONFIG_NAME] if self.CONFIG_NAME else None

    def _resolve_precision(self):
        prec = getattr(self.method_cfg, "PREC", "fp32") if self.CONFIG_NAME else "fp32"
        return resolve_precision(prec, self.device, f"TRAINER.{self.CONFIG_NAME}.PREC")

    def _lr_scale(self):
        ref = self.cfg.OPTIM.LR_BATCH_REFERENCE
        if ref <= 0:
            return 1.0
        batch = self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE * distributed.world_size()
        print(f"Linear LR scaling: global batch {batch} / reference {ref} -> LR x {batch / ref:g}")
        return batch / ref

    def load_clip(self, name=None, vit_for=None):
        """The frozen backbone (caspl.clip.Backbone) named by MODEL.BACKBONE.NAME (or `name`): an
        OpenAI CLIP or an open_clip model, in this run's precision. Its input size must be
        INPUT.SIZE; an open_clip model's mean, std and interpolation must be INPUT's too (each
        model is fed as it was trained). `vit_for` (what prompts its image encoder) refuses one
        that is not a ViT."""
        name = name or self.cfg.MODEL.BACKBONE.NAME
        if not name:
            raise CasplError("MODEL.BACKBONE.NAME is empty: name a CLIP model (e.g. ViT-B/16) or a .pt file")
        model = load_backbone(name, device=self.device, fp16=self.precision == "fp16")
        res = model.input_resolution
        res = (res, res) if isinstance(res, int) else tuple(res)
        if tuple(self.cfg.INPUT.SIZE) != res:
            raise CasplError(
                f"INPUT.SIZE {tuple(self.cfg.INPUT.SIZE)} does not match the backbone's input resolution "
                f"{res} for {name}; set INPUT.SIZE \"{res}\""
            )
        if is_open_clip(name):
            self.check_preprocess(name, model.preprocess)
        if vit_for:
            model.vision_tower(vit_for)
        return model

    def check_preprocess(self, name, preprocess):
        """An open_clip model's own mean, std and interpolation must be INPUT's."""
        inp, wrong = self.cfg.INPUT, {}
        for key, want in (("PIXEL_MEAN", preprocess["mean"]), ("PIXEL_STD", preprocess["std"])):
            have = inp[key]
            if len(have) != len(want) or any(abs(a - b) > 1e-6 for a, b in zip(want, have)):
                wrong[key] = f'"{list(want)}"'
        if inp.INTERPOLATION != preprocess["interpolation"]:
            wrong["INTERPOLATION"] = preprocess["interpolation"]
        if wrong:
            raise CasplError(f"{name} was trained with another input pipeline than INPUT gives "
                             f"({', '.join('INPUT.' + k for k in wrong)}); set "
                             + " ".join(f"INPUT.{k} {v}" for k, v in wrong.items()))

    def register_model(self, name, module):
        """Register a module whose trainable parameters this run optimises and checkpoints
        (under OUTPUT_DIR/<name>/, as Dassl does)."""
        if name in self._models:
            raise KeyError(f"model {name!r} is registered twice")
        module.to(self.device)
        for p in module.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                raise TypeError(f"learnable parameters stay fp32; {name} has one of dtype {p.dtype}")
        self._models[name] = module
        if any(p.requires_grad for p in module.parameters()):
            self._optims[name] = build_optimizer(module.parameters(), self.cfg.OPTIM)

    def set_model_mode(self, train):
        for module in self._models.values():
            module.train(train)

    def autocast(self):
        if self.precision != "amp":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def optimize(self, loss):
        """Backward and a step of every optimiser, gradients averaged over the processes. A
        NaN or inf loss stops the run, or skips the step with TRAIN.SKIP_NONFINITE_LOSS (all
        processes take the same decision). Returns whether the step was taken."""
        for opt in self._optims.values():
            opt.zero_grad(set_to_none=True)
        if not distributed.all_true(bool(torch.isfinite(loss.detach())), self.device):
            where = f"epoch {self.epoch + 1}, batch {self.batch_idx + 1}"
            value = loss.item() if not torch.isfinite(loss.detach()) else "not finite in another process"
            if not self.skip_nonfinite_loss:
                raise CasplError(f"loss is {value} at {where}; stopping (TRAIN.SKIP_NONFINITE_LOSS True skips "
                                 "such steps instead)")
            self.skipped_steps += 1
            print(f"Warning: loss is {value} at {where}; step skipped ({self.skipped_steps} so far)")
            return False
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        distributed.average_gradients([p for m in self._models.values() for p in m.parameters() if p.requires_grad])
        for opt in self._optims.values():
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()
        return True

    def parse_batch(self, batch):
        return batch["img"].to(self.device, non_blocking=True), batch["label"].to(self.device, non_blocking=True)

    def cached(self, key, compute):
        """During one evaluation, compute `key` once (e.g. text features that do not depend
        on the image); during training, every call computes."""
        if self._eval_cache is None:
            return compute()
        if key not in self._eval_cache:
            self._eval_cache[key] = compute()
        return self._eval_cache[key]

    def classification_step(self, logits, labels, terms=None):
        """Optimise the sum of the loss `terms` (default: CE of the logits) and report the
        total, each term (when there are several) and the batch accuracy."""
        terms = terms or {"ce": F.cross_entropy(logits.float(), labels)}
        loss = sum(terms.values())
        self.optimize(loss)
        report = {k: v.item() for k, v in terms.items()} if len(terms) > 1 else {}
        return {"loss": loss.item(), **report, "acc": 100.0 * (logits.argmax(1) == labels).float().mean().item()}

    # ------------------------------------------------------------------ training loop
    def train(self):
        if distributed.is_main() and os.path.isdir(self.output_dir):
            for path in remove_partial_writes(self.output_dir):
                print(f"Removed {path}, a write that a killed run left unfinished")
        if self.cfg.MODEL.INIT_WEIGHTS:
            self.init_from(self.cfg.MODEL.INIT_WEIGHTS)
        self.resume()
        distributed.broadcast_parameters(self._models.values())
        if not self._optims:
            print("Nothing to train for this method")
        elif self.start_epoch < self.max_epoch:
            self.tensorboard = distributed.is_main()  # its folder appears at the first scalar, after check_reads
            if distributed.active():
                print(f"Data parallel: {distributed.world_size()} processes, global batch "
                      f"{self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE * distributed.world_size()}")
            start = time.time()
            for self.epoch in range(self.start_epoch, self.max_epoch):
                for opt in self._optims.values():
                    set_lr(opt, self.lr_schedule.lr(self.epoch) * self.lr_scale)
                self.dm.set_epoch(self.cfg.SEED, self.epoch)
                self.before_epoch()
                self.run_epoch()
                self.after_epoch()
                self.end_epoch()
            skipped = f"; {self.skipped_steps} steps skipped for a non-finite loss" if self.skipped_steps else ""
            print("Finish training")  # exactly Dassl's line: the reference repos' parse_test_res.py waits for it
            print(f"Elapsed: {datetime.timedelta(seconds=round(time.time() - start))}{skipped}")
        if self.no_test:
            self.check_reads()  # for a run with no step to wait for
            return
        if self._optims and self.final_model == "best_val" and self.dm.val_loader is not None:
            print("Deploy the model with the best val performance")
            self.load_model(self.output_dir, epoch=None, best=True)
        elif self._optims:
            print("Deploy the last-epoch model")
        self.test()
        if self.writer is not None:
            self.writer.close()

    def add_scalars(self, prefix, values, step):
        if not self.tensorboard:
            return
        if self.writer is None:
            from .events import event_writer  # tensorboard takes a while to import: only when used

            self.writer = event_writer(os.path.join(self.output_dir, "tensorboard"))
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def run_epoch(self):
        self.set_model_mode(True)
        loader = self.dm.train_loader_x
        n = len(loader)
        meters = defaultdict(float)
        t_batch = time.time()
        t_total = 0.0
        freq = self.print_freq
        for self.batch_idx, batch in enumerate(self.dm.batches(loader)):
            t_data = time.time() - t_batch
            out = distributed.mean_scalars(self.forward_backward(batch), self.device)
            self.check_reads()
            dt = time.time() - t_batch
            t_total += dt
            for k, v in out.items():
                meters[k] += v
            step = self.epoch * n + self.batch_idx
            lr = next(iter(self._optims.values())).param_groups[0]["lr"]
            self.add_scalars("train", {**out, "lr": lr}, step)
            if (self.batch_idx + 1) % freq == 0 or self.batch_idx + 1 == n:  # and always the last batch
                avg = t_total / (self.batch_idx + 1)
                eta = avg * ((n - self.batch_idx - 1) + (self.max_epoch - self.epoch - 1) * n)
                losses = " ".join(f"{k} {v:.4f} ({meters[k] / (self.batch_idx + 1):.4f})" for k, v in out.items())
                print(
                    f"epoch [{self.epoch + 1}/{self.max_epoch}] batch [{self.batch_idx + 1}/{n}] "
                    f"time {dt:.3f} ({avg:.3f}) data {t_data:.3f} {losses} lr {lr:.4e} "
                    f"eta {datetime.timedelta(seconds=int(eta))}"
                )
            t_batch = time.time()

    def end_epoch(self):
        """Checkpoint every epoch (so an interrupted run can resume) and keep the files
        Dassl keeps: every CHECKPOINT_FREQ-th epoch and the last."""
        done = self.epoch + 1
        if self.final_model == "best_val" and self.dm.val_loader is not None and not self.no_test:
            acc = self.test(split="val")
            if acc > self.best_result:
                self.best_result = acc
                self.save_model(done, best=True, val_result=acc)
        self.save_model(done)
        distributed.barrier()  # every process may read the checkpoints rank 0 wrote
        if distributed.is_main():  # only now that every module's pointer names `done` (caspl/engine/checkpoints.py)
            remove_superseded(self.output_dir, self._models, done, self.checkpoint_freq)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def test(self, split=None):
        split = split or self.test_split
        loader = self.dm.val_loader if split == "val" and self.dm.val_loader is not None else self.dm.test_loader
        if loader is None:
            raise CasplError(f"the dataset has no {split} split to evaluate")
        self.set_model_mode(False)
        self.evaluator.reset()
        self._eval_cache = {}
        try:
            for logits, labels in self.predictions(split, loader):
                self.evaluator.process(logits, labels)
                self.check_reads()
        finally:
            self._eval_cache = None
        self.evaluator.merge(distributed.gather_tensors)  # each process saw its shard
        results = self.evaluator.evaluate()
        self.add_scalars(split, results, self.epoch)
        if split != "val" and distributed.is_main():
            record = {"split": split, "epoch": self.epoch + 1 if self._optims else 0, "trainer": self.cfg.TRAINER.NAME,
                      "dataset": self.cfg.DATASET.NAME, "subsample": self.cfg.DATASET.SUBSAMPLE_CLASSES,
                      "total": len(loader.dataset), **results}
            atomic_write_text(json.dumps(record, indent=1), os.path.join(self.output_dir, "results.json"))
        return results["accuracy"]

    def predictions(self, split, loader):
        """(logits, labels) batches over `loader` (a method with precomputed features may
        answer from them instead)."""
        progress = tqdm(self.dm.batches(loader), total=len(loader), desc=f"Evaluate on the *{split}* set",
                        leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())
        for batch in progress:
            images, labels = self.parse_batch(batch)
            with self.autocast():
                logits = self.model_inference(images)
            yield logits, labels

    # ------------------------------------------------------------------ checkpoints
    @functools.cached_property
    def config_yaml(self):
        """The run's config as YAML, dumped once (it is frozen), not at every checkpoint."""
        return self.cfg.dump()

    def checkpoint_meta(self):
        return {"trainer": self.cfg.TRAINER.NAME, "backbone": self.cfg.MODEL.BACKBONE.NAME,
                "dataset": self.cfg.DATASET.NAME, "classnames": list(self.classnames),
                "config": self.config_yaml, "caspl_version": __version__}

    def extra_state(self):
        """Method state that is neither a parameter nor a buffer (saved with each checkpoint)."""
        return {}

    def load_extra_state(self, state):
        pass

    def save_model(self, epoch, best=False, val_result=None):
        """Save every registered module's checkpoint of `epoch` (or its best-val one), then point
        each module's `checkpoint` file at it: steps 1 and 2 of caspl/engine/checkpoints.py."""
        if not distributed.is_main():
            return
        filename = "model-best.pth.tar" if best else checkpoint_name(epoch)
        for name, module in self._models.items():
            opt = self._optims.get(name)
            ckpt = {
                "state_dict": learnable_state(module),
                "epoch": epoch,
                "optimizer": opt.state_dict() if opt is not None else None,
                "scheduler": {"last_epoch": epoch, "lr": self.lr_schedule.lr(epoch - 1)},
                "val_result": val_result,
                # what the epochs after a resume from here must beat: model-best's files may be a later
                # epoch's, of some modules only, when a kill stopped that epoch's saving
                "best_val_result": self.best_result,
                "rng_state": get_rng_state(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,  # amp in fp16
                "extra_state": self.extra_state(),
                "meta": self.checkpoint_meta(),
            }
            atomic_save(ckpt, os.path.join(self.output_dir, name, filename))
        if not best:
            point_to(self.output_dir, self._models, epoch)

    def _load_into(self, name, ckpt, path):
        module = self._models[name]
        meta = ckpt.get("meta", {})
        if meta.get("trainer") and meta["trainer"] != self.cfg.TRAINER.NAME:
            raise CasplError(f"{path} was written by trainer {meta['trainer']}, not {self.cfg.TRAINER.NAME}"
                             + self.other_trainer_hint(meta["trainer"]))
        trained_on = meta.get("classnames")
        if self._trained_on_other_classes(name, ckpt):
            raise CasplError(f"{path} holds per-class prompts learned for other classes "
                             f"({', '.join(trained_on[:3])}, ...); they cannot serve "
                             f"{', '.join(self.classnames[:3])}, ...")
        own = learnable_state(module)
        state = ckpt["state_dict"]
        missing, unused = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unused:
            raise CasplError(f"{path} does not match this run's prompts: "
                             + "; ".join(filter(None, [missing and f"lacks {', '.join(missing)}",
                                                       unused and f"has unused {', '.join(unused)}"]))
                             + " (another config?)")
        for k, v in state.items():
            if k in own and own[k].shape != v.shape:
                raise CasplError(
                    f"{path}: {k} has shape {tuple(v.shape)} but this run needs {tuple(own[k].shape)} "
                    f"(another backbone, class count or prompt length?)"
                )
        module.load_state_dict(state)
        return ckpt

    def _trained_on_other_classes(self, name, ckpt):
        trained_on = ckpt.get("meta", {}).get("classnames")
        return name in self.per_class_models and trained_on is not None and list(trained_on) != list(self.classnames)

    def load_model(self, directory, epoch=None, best=False):
        """Load the registered modules' learnable state for evaluation (--model-dir / --load-epoch;
        without an epoch the best-val model where one was saved, as Dassl, else the last).
        `directory` may be a list of runs, earliest first (the stages of class-incremental
        training): each module comes from the latest run whose checkpoint can serve it, so a
        per-class module only from a run trained on these classes."""
        directories = [directory] if isinstance(directory, str) else list(directory)
        if not self._models:
            print("Note: this method has no learned weights; --model-dir is ignored")
            return
        for d in directories:
            if not os.path.isdir(d):
                raise CasplError(f"model directory not found: {d}")
        for name in list(self._models):
            paths = [p for p in (evaluated_checkpoint(d, name, epoch, best) for d in reversed(directories))
                     if os.path.isfile(p)]
            if not paths:
                raise CasplError(f"checkpoint not found: {checkpoint_file(directories[-1], name, epoch, best)}")
            for path in paths:
                ckpt = read_checkpoint(path)
                if not self._trained_on_other_classes(name, ckpt):
                    break
            else:
                self.other_classes_only(name, paths[0])
                continue
            self._load_into(name, ckpt, path)
            self.load_extra_state(ckpt.get("extra_state") or {})
            self.trained_config = ckpt.get("meta", {}).get("config") or self.trained_config
            self.epoch = ckpt["epoch"] - 1
            print(f"Loaded {path} (epoch {ckpt['epoch']})")

    def other_trainer_hint(self, trainer):
        """What to do with a checkpoint that `trainer` wrote (a method whose reference runs it
        under another name says how)."""
        return f"; evaluate it with --trainer {trainer}"

    def other_classes_only(self, name, path):
        """Module `name` has checkpoints only for other classes (`path` the latest). A method
        that can do without it here (per-class label embeddings) overrides this."""
        self._load_into(name, read_checkpoint(path), path)  # raises the per-class error

    def init_from(self, directory):
        """MODEL.INIT_WEIGHTS: start each registered module from its last checkpoint in a
        previous run's `directory` where it fits (a per-class module only for the same
        classes); epochs, optimiser and schedule start afresh."""
        if not os.path.isdir(directory):
            raise CasplError(f"MODEL.INIT_WEIGHTS: no run directory {directory}")
        for name in self._models:
            path = checkpoint_file(directory, name)
            if not os.path.isfile(path):
                print(f"{name}: nothing in {directory}; starts from its own initialisation")
                continue
            ckpt = read_checkpoint(path)
            if self._trained_on_other_classes(name, ckpt):
                print(f"{name}: learned for other classes in {directory}; starts from its own initialisation")
                continue
            self._load_into(name, ckpt, path)
            print(f"{name}: initialised from {path}")

    def resume(self):
        """Continue from the last epoch that every registered module saved in RESUME or OUTPUT_DIR
        (caspl/engine/checkpoints.py), if it was trained with this run's settings; restore
        optimiser, epoch, method state and RNG streams."""
        directory = self.cfg.RESUME or self.output_dir
        if not self._models:
            return
        names = list(self._models)
        epoch = last_whole_epoch(directory, names)
        if epoch is None:
            self._check_unsaved_first_epoch(directory, names)
            return
        for name in names:
            path = checkpoint_file(directory, name, epoch)
            ckpt = read_checkpoint(path)
            if name == names[0]:
                self.check_resumable(ckpt, path, directory)
            self._load_into(name, ckpt, path)
            self.trained_config = ckpt.get("meta", {}).get("config") or self.trained_config
            if name in self._optims and ckpt.get("optimizer"):
                self._optims[name].load_state_dict(ckpt["optimizer"])
            self.load_extra_state(ckpt.get("extra_state") or {})
        self.start_epoch = epoch
        self.epoch = epoch - 1
        best = checkpoint_file(directory, names[0], best=True)
        if "best_val_result" in ckpt:
            self.best_result = ckpt["best_val_result"]
        elif os.path.isfile(best):  # a checkpoint from before they recorded it
            self.best_result = read_checkpoint(best).get("val_result") or self.best_result
        if ckpt.get("rng_state") is not None:
            set_rng_state(ckpt["rng_state"])
        if self.scaler is not None and ckpt.get("scaler"):  # the loss scale it had adapted to, not a fresh 65536
            self.scaler.load_state_dict(ckpt["scaler"])
        if directory == self.output_dir and distributed.is_main():  # finish steps 2 and 3 if a kill stopped them
            point_to(directory, names, epoch)
            remove_superseded(directory, names, epoch, self.checkpoint_freq)
        if self.start_epoch >= self.max_epoch:
            print(f"Training already finished in {directory} (epoch {self.start_epoch}/{self.max_epoch}); "
                  "evaluating the saved model")
        else:
            print(f"Resuming from {directory} at epoch {self.start_epoch + 1}/{self.max_epoch}")

    def check_resumable(self, ckpt, path, directory):
        """Refuse to resume from `path` when it was trained with other settings than this run's
        (but for RESUMABLE_KEYS); a checkpoint that recorded none is resumed with a note."""
        recorded = ckpt.get("meta", {}).get("config")
        if not recorded:
            print(f"Note: {path} records no config; resuming without checking that this run's settings are its own")
            return
        conflicts = resume_conflicts(recorded, self.config_yaml)
        if conflicts:
            raise CasplError(resume_refusal(path, conflicts, "--output-dir" if directory == self.output_dir
                                            else "--resume"))

    def _check_unsaved_first_epoch(self, directory, names):
        """No epoch that every module saved: where some did, a run with these settings was stopped
        while saving its first epoch, and this one starts from the beginning."""
        started = [name for name in names if saved_epochs(directory, name)]
        if not started:
            return
        path = checkpoint_file(directory, started[0], max(saved_epochs(directory, started[0])))
        ckpt = read_checkpoint(path)
        if not ckpt.get("meta", {}).get("config"):  # cannot tell whose they are
            raise CasplError(f"{directory} holds checkpoints for only some of {names}; cannot resume")
        self.check_resumable(ckpt, path, directory)
        unsaved = [name for name in names if name not in started]
        print(f"Note: {directory} holds checkpoints of {', '.join(started)} but not of {', '.join(unsaved)} (a run "
              "stopped while saving its first epoch); training from the start")
