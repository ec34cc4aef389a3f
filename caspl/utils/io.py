"""Atomic writes (a crash mid-write leaves the old file, or none, never a torn one) and
safe reading of pickles that other people made."""
import os
import pickle
import tempfile

import torch


PARTIAL = ".caspl-partial-"  # + "<pid>-<random>-<file name>": a write in progress, or killed


def _atomic(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{PARTIAL}{os.getpid()}-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_partial_writes(folder):
    """Delete the temporary files that killed atomic writes left below `folder`: only caspl's
    own (named PARTIAL), and only those of processes that are gone. Returns their paths."""
    removed = []
    for current, _, files in os.walk(folder):
        for name in files:
            if not name.startswith(PARTIAL):
                continue
            pid = name[len(PARTIAL):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                os.remove(os.path.join(current, name))
                removed.append(os.path.join(current, name))
    return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def atomic_save(obj, path):
    """torch.save to `path` atomically."""
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(data, path):
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(text, path):
    atomic_write_bytes(text.encode("utf-8"), path)


class _RefusedGlobal(Exception):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only plain containers and the classes in `allowed` ({(module, name): class}):
    every other global a pickle names (a function to call, a class to construct) is refused
    before anything runs."""

    def __init__(self, file, allowed):
        super().__init__(file)
        self.allowed = allowed

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise _RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _RefusedGlobal("a persistent reference")


def read_pickle(path, what, allowed=None):
    """The object pickled in `path` (`what` it is, for messages), built with nothing but
    plain types and `allowed` classes. A file that names anything else is refused with a
    CasplError; one that is merely torn or not a pickle raises pickle.UnpicklingError."""
    from ..errors import CasplError

    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, allowed or {}).load()
        except _RefusedGlobal as err:
            raise CasplError(f"refusing to read {path}: it holds {err}, which {what} never contains "
                             "(unpickling it could run code); delete or replace the file") from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeDecodeError) as err:
            raise pickle.UnpicklingError(str(err)) from None
