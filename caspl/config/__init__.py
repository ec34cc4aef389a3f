"""Building the run's config: core defaults + every registered trainer's defaults, then
dataset YAML <- trainer YAML <- command-line flags <- trailing KEY VALUE opts."""
import os

import yaml
from yacs.config import CfgNode as CN

from ..errors import CasplError
from ..registry import TRAINER_REGISTRY
from .defaults import core_defaults


def get_cfg_default():
    """The full default tree: core keys plus TRAINER.<CONFIG_NAME> for every registered trainer."""
    cfg = core_defaults()
    for _, trainer_cls in TRAINER_REGISTRY.items():
        name = getattr(trainer_cls, "CONFIG_NAME", None)
        if name and name not in cfg.TRAINER:
            cfg.TRAINER[name] = CN(dict(trainer_cls.CONFIG_DEFAULTS))
    return cfg


def _unknown_key(err):
    # yacs raises KeyError("Non-existent config key: A.B.C")
    msg = err.args[0] if err.args else str(err)
    return msg.split(":", 1)[1].strip() if ":" in str(msg) else str(msg)


def merge_file(cfg, path):
    if not os.path.isfile(path):
        raise CasplError(f"config file not found: {path}")
    try:
        cfg.merge_from_file(path)
    except KeyError as err:
        raise CasplError(f"unknown config key {_unknown_key(err)} in {path}") from None
    except (ValueError, yaml.YAMLError) as err:
        raise CasplError(f"bad value in {path}: {err}") from None


def merge_opts(cfg, opts):
    if len(opts) % 2:
        raise CasplError(f"trailing options must be KEY VALUE pairs, got an odd number: {' '.join(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as err:  # yacs asserts on unknown keys here
        raise CasplError(f"unknown config key {_unknown_key(err)} in command-line options") from None
    except ValueError as err:
        raise CasplError(f"bad command-line option: {err}") from None
