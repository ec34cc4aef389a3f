"""Building the run's config: core defaults + every registered trainer's defaults, then
dataset YAML <- trainer YAML <- command-line flags <- trailing KEY VALUE opts; and the rule
that a setting nothing reads is refused (reads.py records the reads)."""
import os

import yaml
from yacs.config import CfgNode as CN

from ..errors import CasplError
from ..registry import TRAINER_REGISTRY
from .defaults import core_defaults
from .reads import Config, leaves, read_log, same_value, track


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
    return Config(cfg)


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
    if default == "auto" and isinstance(value, bool):  # auto | True | False keys (DATALOADER.PIN_MEMORY)
        return str(value)
    if isinstance(default, CN) and isinstance(value, dict):
        return CN({k: _widen(default[k], v) if k in default else v for k, v in value.items()})
    return value


def merge_file(cfg, path):
    """Merge the YAML file `path` into `cfg`; returns the keys it sets."""
    if not os.path.isfile(path):
        raise CasplError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            loaded = CN.load_cfg(f)
        cfg.merge_from_other_cfg(_widen(cfg, loaded))
        return list(leaves(loaded))
    except KeyError as err:
        raise CasplError(f"unknown config key {_unknown_key(err)} in {path}") from None
    except (ValueError, AssertionError, yaml.YAMLError) as err:
        raise CasplError(f"bad value in {path}: {str(err).splitlines()[0]}") from None


def merge_opts(cfg, opts):
    """Merge trailing KEY VALUE pairs into `cfg`; returns the keys they set."""
    if len(opts) % 2:
        raise CasplError(f"trailing options must be KEY VALUE pairs, got an odd number: {' '.join(opts)}")
    decoded, auto = [], []
    for key, value in zip(opts[0::2], opts[1::2]):
        parent, node = None, cfg
        for part in key.split("."):
            if not isinstance(node, CN) or part not in node:
                raise CasplError(f"unknown config key {key} in command-line options")
            parent, node = node, node[part]
        value = _widen(node, CN._decode_cfg_value(value))
        if node == "auto":  # yacs would decode "True" again, to a bool its type check refuses
            auto.append((parent, key.rsplit(".", 1)[-1], value))
        else:
            decoded += [key, value]
    try:
        cfg.merge_from_list(decoded)
    except ValueError as err:
        raise CasplError(f"bad command-line option: {err}") from None
    for parent, leaf, value in auto:
        parent[leaf] = value
    return list(opts[0::2])


def user_settings(cfg):
    """{key: (where it was set, value)} of the leaves the user set: recorded by the command line
    (caspl.cli.setup_cfg); for a config built in code, its leaves that are not the defaults."""
    log = read_log(cfg)
    if log is not None:
        return log.sources
    defaults = leaves(get_cfg_default())
    return {k: ("in the config", v) for k, v in leaves(cfg).items() if not same_value(v, defaults.get(k))}


def tracked(cfg):
    """`cfg` with a read log (a tracked copy where it has none yet)."""
    if read_log(cfg) is not None:
        return cfg
    sources = user_settings(cfg)
    copy = Config(cfg)  # a deep copy, as Config nodes
    if cfg.is_frozen():
        copy.freeze()
    track(copy, sources)
    return copy


def check_as_recorded(cfg, recorded, what, why):
    """Settings the user gave that describe an input this run reads (the boosting prompts, a
    teacher run) rather than anything it builds: each of `recorded`'s keys ({dotted key: the
    value the input was made with}, None where not recorded) that the user set must be that
    value. Returns "KEY VALUE" of those that are (to log); refuses the others in one line,
    `what` naming the input and `why` what the run does with it."""
    given, checked = user_settings(cfg), []
    for key, made_with in recorded.items():
        if key not in given:
            continue
        where, node = given[key][0], cfg
        for part in key.split("."):
            node = node[part]  # a read: the setting is checked here
        if made_with is None:
            raise CasplError(f"{key} {node!r} (set {where}) cannot be checked: {what} does not record it; remove it")
        if not same_value(node, made_with):
            raise CasplError(f"{key} {node!r} (set {where}) does not match {what}, made with {made_with!r}: {why}; "
                             "remove it, or name one made with it")
        checked.append(f"{key} {node!r}")
    return checked


def section_owners(key):
    """The registered trainers whose own section holds `key`, for the refusal's hint."""
    section, *rest = key.split(".")
    names = sorted({cls.ROOT_CONFIG_OWNERS or name for name, cls in TRAINER_REGISTRY.items()
                    if rest and rest[0] in getattr(cls, "ROOT_CONFIG", {}).get(section, {})}
                   | {name for name, cls in TRAINER_REGISTRY.items()
                      if section == "TRAINER" and rest and getattr(cls, "CONFIG_NAME", None) == rest[0]})
    return names


def refuse_unread(cfg, trainer, trained=None):
    """One clear line for the settings the user wrote that nothing in this run has read: they
    would change nothing, so the user's intent would be silently lost. `trained` ({key: value},
    the recorded config of the model a run evaluates or resumes): a setting read only in part of
    a training (its first epochs, its steps) is accepted where it is what that model was trained
    with (a script passes the same keys to training and testing)."""
    log = read_log(cfg)
    if log is None:
        return
    defaults = leaves(get_cfg_default())
    trained = trained or {}
    unread = []
    for key, (source, value) in log.sources.items():
        if key in log.reads or same_value(value, defaults.get(key)):
            continue
        if key in trained and same_value(value, trained[key]):
            continue
        owners = section_owners(key)
        belongs = f"; it belongs to {', '.join(owners[:4])}" if owners and trainer not in owners else ""
        was = f"; the evaluated model was trained with {trained[key]!r}" if key in trained else ""
        unread.append(f"{key} {value!r} (set {source}, default {defaults.get(key)!r}{belongs}{was})")
    if unread:
        raise CasplError(f"read by nothing in a {trainer} run, so they would change nothing: "
                         f"{'; '.join(unread)}. Remove them, or leave them at their defaults")
