"""Building the run's config: core defaults + every registered trainer's defaults, then
dataset YAML <- trainer YAML <- command-line flags <- trailing KEY VALUE opts."""
import os

import yaml
from yacs.config import CfgNode as CN

from ..errors import CasplError
from ..registry import TRAINER_REGISTRY
from .defaults import UNREAD, core_defaults


def get_cfg_default():
    """The full default tree: core keys plus TRAINER.<CONFIG_NAME> for every registered trainer
    and the top-level sections trainers declare (ROOT_CONFIG: a reference's own layout)."""
    cfg = core_defaults()
    for _, trainer_cls in TRAINER_REGISTRY.items():
        name = getattr(trainer_cls, "CONFIG_NAME", None)
        if name and name not in cfg.TRAINER:
            cfg.TRAINER[name] = CN(dict(trainer_cls.CONFIG_DEFAULTS))
        for section, keys in getattr(trainer_cls, "ROOT_CONFIG", {}).items():
            node = cfg.setdefault(section, CN())
            for key, default in keys.items():
                node.setdefault(key, default)
    return cfg


def updated(cfg, values):
    """A frozen copy of `cfg` with `values` ({"DATASET.NUM_SHOTS": -1, ...}) set."""
    cfg = cfg.clone()
    cfg.defrost()
    for key, value in values.items():
        *path, leaf = key.split(".")
        node = cfg
        for part in path:
            node = node[part]
        node[leaf] = value
    cfg.freeze()
    return cfg


def _unknown_key(err):
    # yacs raises KeyError("Non-existent config key: A.B.C")
    msg = err.args[0] if err.args else str(err)
    return msg.split(":", 1)[1].strip() if ":" in str(msg) else str(msg)


def _widen(default, value):
    """An int where the default is a float is that float (YAML writes 25 for 25.0); yacs
    would reject it."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, CN) and isinstance(value, dict):
        return CN({k: _widen(default[k], v) if k in default else v for k, v in value.items()})
    return value


def merge_file(cfg, path):
    if not os.path.isfile(path):
        raise CasplError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            loaded = CN.load_cfg(f)
        cfg.merge_from_other_cfg(_widen(cfg, loaded))
    except KeyError as err:
        raise CasplError(f"unknown config key {_unknown_key(err)} in {path}") from None
    except (ValueError, AssertionError, yaml.YAMLError) as err:
        raise CasplError(f"bad value in {path}: {str(err).splitlines()[0]}") from None


def merge_opts(cfg, opts):
    if len(opts) % 2:
        raise CasplError(f"trailing options must be KEY VALUE pairs, got an odd number: {' '.join(opts)}")
    decoded = []
    for key, value in zip(opts[0::2], opts[1::2]):
        node, default = cfg, None
        for part in key.split("."):
            if not isinstance(node, CN) or part not in node:
                raise CasplError(f"unknown config key {key} in command-line options")
            node = default = node[part]
        decoded += [key, _widen(default, CN._decode_cfg_value(value))]
    try:
        cfg.merge_from_list(decoded)
    except ValueError as err:
        raise CasplError(f"bad command-line option: {err}") from None


def refuse_unread(cfg):
    """One clear line for a Dassl key this code never reads, set to something else than its
    default (it would change nothing, so the user's intent would be silently lost)."""
    defaults = core_defaults()
    for key in UNREAD:
        value, default = cfg, defaults
        for part in key.split("."):
            value, default = value[part], default[part]
        if value != default and not (isinstance(default, (list, tuple)) and list(value) == list(default)):
            raise CasplError(f"{key} {value!r} is a Dassl key caspl does not read (it would change nothing here): "
                             f"remove it, or leave it at {default!r}")
