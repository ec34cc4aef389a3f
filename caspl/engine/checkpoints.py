"""A run folder's checkpoints: one commit per epoch for all registered modules, and which
settings a resume may change.

Each module is saved as <OUTPUT_DIR>/<module>/model.pth.tar-<epoch> beside a `checkpoint` file
naming the last one (Dassl's layout, which the reference tools read). An epoch is saved in
three steps, in this order:
1. every module's model.pth.tar-<epoch> (each written whole or not at all: caspl.utils.io);
2. every module's `checkpoint` pointer;
3. the files of superseded epochs removed.
So a kill at any moment leaves an epoch whose file every module has: during step 1 the
previous epoch (its files go only in step 3), from step 2 on this one. A resume starts from
the last such epoch, whatever the pointers say, and sets the pointers to it."""
import os
import re

import yaml

from ..utils import atomic_write_text

POINTER = "checkpoint"
_EPOCH_FILE = re.compile(r"model\.pth\.tar-(\d+)")

# Config keys whose value may differ between a run and its resume, and why: none changes the
# training recipe (data, model, optimisation). Every other difference is refused
# (Trainer.check_resumable).
RESUMABLE_KEYS = (
    ("OUTPUT_DIR", "the run folder may be moved or copied"),
    ("RESUME", "names where to resume from"),
    ("DATASET.ROOT", "the same data, moved"),
    ("DATALOADER.NUM_WORKERS", "loading speed, capped at a machine's cores anyway; workers seed their own "
                               "augmentation draws, so after the resume the same recipe draws other crops and flips"),
    ("DATALOADER.PIN_MEMORY", "loading speed: the same tensors"),
    ("DATALOADER.PERSISTENT_WORKERS", "loading speed; as NUM_WORKERS, other draws of the same augmentation"),
    ("DATALOADER.TEST.BATCH_SIZE", "evaluation batches: the same predictions"),
    ("TRAIN.PRINT_FREQ", "logging"),
    ("TEST.NO_TEST", "the evaluation after training (not with TEST.FINAL_MODEL best_val: there it also decides "
                     "whether each epoch is validated)"),
    ("TEST.SPLIT", "the split evaluated after training"),
    ("TEST.PER_CLASS_RESULT", "what the evaluation reports"),
)


def checkpoint_name(epoch):
    return f"model.pth.tar-{epoch}"


def saved_epochs(directory, name):
    """The epochs of which module `name` has a checkpoint in the run `directory`."""
    folder = os.path.join(directory, name)
    files = os.listdir(folder) if os.path.isdir(folder) else []
    return {int(m.group(1)) for m in map(_EPOCH_FILE.fullmatch, files) if m}


def last_whole_epoch(directory, names):
    """The last epoch of which every module in `names` has its checkpoint in `directory` (None
    when there is none): the last epoch whose saving reached step 2."""
    return max(set.intersection(*(saved_epochs(directory, name) for name in names)), default=None)


def point_to(directory, names, epoch):
    """Step 2: each module's pointer names `epoch` (one that already does is not rewritten)."""
    for name in names:
        pointer = os.path.join(directory, name, POINTER)
        if os.path.isfile(pointer):
            with open(pointer) as f:
                if f.read().strip() == checkpoint_name(epoch):
                    continue
        atomic_write_text(checkpoint_name(epoch) + "\n", pointer)


def remove_superseded(directory, names, epoch, keep_every):
    """Step 3: remove the modules' checkpoints of epochs before `epoch`, except every
    `keep_every`-th (TRAIN.CHECKPOINT_FREQ; 0 keeps none), as Dassl does. Every older one, not
    only the previous: a kill during an earlier removal may have left some."""
    for name in names:
        for old in saved_epochs(directory, name):
            if old < epoch and not (keep_every > 0 and old % keep_every == 0):
                os.remove(os.path.join(directory, name, checkpoint_name(old)))


def config_leaves(config_yaml):
    """{dotted key: value} of a config dumped as YAML (Trainer.config_yaml)."""
    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, prefix + key + ".")
            else:
                yield prefix + key, value

    return dict(walk(yaml.safe_load(config_yaml) or {}, ""))


def resume_conflicts(recorded_yaml, current_yaml):
    """[(key, the checkpoint's value, this run's value)] of the settings that differ, in config
    order, but for RESUMABLE_KEYS. A key only one side has is not compared: another caspl
    version, or a --plugin with another trainer's section, adds keys at their defaults."""
    theirs, ours = config_leaves(recorded_yaml), config_leaves(current_yaml)
    free = {key for key, _ in RESUMABLE_KEYS}
    if ours.get("TEST.FINAL_MODEL") == "best_val":
        free.discard("TEST.NO_TEST")
    return [(key, theirs[key], ours[key]) for key in ours
            if key in theirs and key not in free and theirs[key] != ours[key]]


def resume_refusal(path, conflicts, folder_flag, shown=3):
    """The one line refusing to resume from `path`, trained with other settings."""
    listed = "; ".join(f"{key} {theirs!r} there, {ours!r} in this run" for key, theirs, ours in conflicts[:shown])
    more = f" (and {len(conflicts) - shown} more)" if len(conflicts) > shown else ""
    return (f"cannot resume from {path}: it was trained with other settings ({listed}{more}); run with its "
            f"settings to resume it, or give this run another {folder_flag}")
