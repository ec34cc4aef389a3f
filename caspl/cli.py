"""The command line of train.py: the reference repos' flags, then trailing KEY VALUE opts."""
import argparse
import importlib.util
import os
import sys
import time

import torch

from .config import get_cfg_default, merge_file, merge_opts
from .config.reads import leaves, same_value, track
from .errors import CasplError
from .registry import DIALECT_REGISTRY, TRAINER_REGISTRY
from .utils import distributed, set_random_seed, setup_logger
from .utils.lock import lock_run_folder, unlock_run_folder


def build_parser():
    p = argparse.ArgumentParser(description="Train or evaluate a prompt-learning method on CLIP.")
    p.add_argument("--root", type=str, default="", help="path to the dataset root")
    p.add_argument("--output-dir", type=str, default="", help="output directory")
    p.add_argument("--resume", type=str, default="", help="checkpoint directory to resume from")
    p.add_argument("--seed", type=int, default=None, help="random seed (0 is a seed; negative: not fixed)")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument("--config-file", type=str, default="", help="trainer config file")
    p.add_argument("--dataset-config-file", type=str, default="", help="dataset config file")
    p.add_argument("--trainer", type=str, default="", help="name of trainer")
    p.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    p.add_argument("--head", type=str, default="", help="name of head")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, action="append", default=[],
                   help="load model from this directory for eval-only mode (repeatable, earliest stage first: "
                        "each module from the latest directory that can serve these classes)")
    p.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    p.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    p.add_argument("--plugin", type=str, action="append", default=[],
                   help="a Python file that registers extra trainers or datasets (repeatable)")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="modify config options using the command line")
    for _, dialect in DIALECT_REGISTRY.items():
        dialect.add_arguments(p)
    return p


class Dialect:
    """A reference repository's command line, read by the plugin that owns it (registered
    with DIALECT_REGISTRY): `add_arguments` adds its flags to train.py's parser, and
    `translate` rewrites the merged config (not yet frozen) from them, returning lines for
    the run's log."""

    @staticmethod
    def add_arguments(parser):
        pass

    @staticmethod
    def translate(args, cfg):
        return []


def load_plugin(path):
    if not os.path.isfile(path):
        raise CasplError(f"plugin file not found: {path}")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def setup_cfg(args):
    """The run's config, with a read log that knows where the user set each key."""
    cfg = get_cfg_default()
    sources = {}
    for path in (args.dataset_config_file, args.config_file):
        if path:
            sources.update(dict.fromkeys(merge_file(cfg, path), f"in {path}"))
    flags = {
        "DATASET.ROOT": ("--root", args.root), "OUTPUT_DIR": ("--output-dir", args.output_dir),
        "RESUME": ("--resume", args.resume), "TRAINER.NAME": ("--trainer", args.trainer),
        "MODEL.BACKBONE.NAME": ("--backbone", args.backbone), "MODEL.HEAD.NAME": ("--head", args.head),
        "SEED": ("--seed", args.seed),  # 0 is a seed like any other
        "DATASET.SOURCE_DOMAINS": ("--source-domains", args.source_domains),
        "DATASET.TARGET_DOMAINS": ("--target-domains", args.target_domains),
        "INPUT.TRANSFORMS": ("--transforms", args.transforms),
    }
    for key, (flag, value) in flags.items():
        if value or (flag == "--seed" and value is not None):
            *path, leaf = key.split(".")
            node = cfg
            for part in path:
                node = node[part]
            node[leaf] = value
            sources[key] = f"by {flag}"
    sources.update(dict.fromkeys(merge_opts(cfg, args.opts or []), "on the command line"))
    before = leaves(cfg)
    log = track(cfg, {})  # from here on, reads count (a dialect's too)
    notes = [line for _, dialect in DIALECT_REGISTRY.items() for line in dialect.translate(args, cfg)]
    for key, value in leaves(cfg).items():
        if not same_value(value, before[key]):
            sources[key] = "by a reference repository's command-line flags"
    if not cfg.TRAINER.NAME:
        raise CasplError(f"no trainer given: pass --trainer NAME (registered: {', '.join(TRAINER_REGISTRY.names())})")
    if not cfg.DATASET.NAME:
        raise CasplError("no dataset given: pass --dataset-config-file or DATASET.NAME")
    cfg.freeze()
    now = leaves(cfg)
    log.sources = {key: (source, now[key]) for key, source in sources.items()}
    return cfg, notes


def run(args):
    for path in args.plugin:
        load_plugin(path)
    cfg, notes = setup_cfg(args)
    trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    distributed.init(cfg.USE_CUDA)  # under torchrun: join the other processes
    lock_run_folder(cfg.OUTPUT_DIR)  # before anything is written there: a refused run changes nothing
    if distributed.is_main():
        setup_logger(cfg.OUTPUT_DIR)
    else:  # rank 0 alone writes the log; the others' errors still reach stderr
        sys.stdout = open(os.devnull, "w")
    print(f"caspl run started {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}")
    print("** Arguments **")
    for key, value in sorted(vars(args).items()):
        print(f"{key}: {value}")
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    for note in notes:
        print(note)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    if args.eval_only and args.model_dir:
        cfg = trainer_cls.eval_cfg(cfg, args.model_dir[-1], args.load_epoch)
    elif args.model_dir and not args.no_train:
        cfg = trainer_cls.train_cfg(cfg, args.model_dir, args.load_epoch)
    trainer = trainer_cls(cfg)
    if args.eval_only:
        if args.model_dir:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
    elif not args.no_train:
        trainer.train()
    distributed.shutdown()


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except CasplError as err:
        text = str(err).strip()
        if "Original Traceback" in text:  # raised in a DataLoader worker, which wraps the message
            text = text.splitlines()[-1].split(": ", 1)[-1]
        message = f"error: {text}"
        print(message, file=sys.stderr)
        tee_file = getattr(sys.stdout, "file", None)
        if tee_file is not None:
            tee_file.write(message + "\n")
            tee_file.flush()
        return 2
    finally:
        unlock_run_folder()
    return 0
