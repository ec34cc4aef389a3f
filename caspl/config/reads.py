"""Which config leaves a run reads. A setting the user wrote (in a YAML file or on the command
line) that nothing reads would change nothing: the run stops with one line instead of
losing the user's intent. The engine, the dataset and the trainer read the config as usual
(`cfg.OPTIM.LR`, `cfg["OPTIM"]["LR"]`, `.get`, `.items()`); every such read of a leaf is
recorded in a log that the whole tree, and every clone of it, shares."""
import contextlib
import copy
import functools

from yacs.config import CfgNode as CN


class ReadLog:
    """The leaves read (as dotted keys) and where the user set each leaf ({key: source})."""

    def __init__(self, sources):
        self.sources = dict(sources)
        self.reads = set()
        self.paused = 0

    def __deepcopy__(self, memo):  # a clone of the config reads into the same log
        return self

    @contextlib.contextmanager
    def pause(self):
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1


def _unrecorded(method):
    """yacs' own walks over the tree (printing, freezing, merging, copying) are not reads."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        log = self.__dict__.get("_log")
        with log.pause() if log is not None else contextlib.nullcontext():
            return method(self, *args, **kwargs)

    return wrapper


class Config(CN):
    """A yacs CfgNode that records the leaves read once `track` has given it a log."""

    def _record(self, key, value):
        log = self.__dict__.get("_log")
        if log is not None and not log.paused and not isinstance(value, CN):
            log.reads.add(".".join(self.__dict__["_path"] + (key,)))

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self._record(key, value)
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default

    def items(self):
        pairs = list(super().items())
        for key, value in pairs:
            self._record(key, value)
        return pairs

    def values(self):
        return [value for _, value in self.items()]

    __str__ = _unrecorded(CN.__str__)
    _immutable = _unrecorded(CN._immutable)
    set_new_allowed = _unrecorded(CN.set_new_allowed)
    merge_from_other_cfg = _unrecorded(CN.merge_from_other_cfg)
    merge_from_list = _unrecorded(CN.merge_from_list)

    @_unrecorded
    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        dict.__init__(new)
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        for key, value in dict.items(self):
            dict.__setitem__(new, key, copy.deepcopy(value, memo))
        return new


def leaves(cfg, prefix=()):
    """{dotted key: value} of every leaf (not a read)."""
    out = {}
    for key, value in dict.items(cfg):
        if isinstance(value, CN):
            out.update(leaves(value, prefix + (key,)))
        else:
            out[".".join(prefix + (key,))] = value
    return out


def track(cfg, sources):
    """Give `cfg` (a Config tree) a read log; `sources` says where the user set which leaves."""
    log = ReadLog(sources)

    def attach(node, path):
        node.__dict__["_log"], node.__dict__["_path"] = log, path
        for key, value in dict.items(node):
            if isinstance(value, CN):
                attach(value, path + (key,))

    attach(cfg, ())
    return log


def read_log(cfg):
    return cfg.__dict__.get("_log")


def same_value(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b
