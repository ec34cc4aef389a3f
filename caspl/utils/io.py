"""Atomic writes (a crash mid-write leaves the old file, or none, never a torn one) and
safe reading of pickles that other people made."""
import contextlib
import errno
import os
import pickle
import tempfile

import torch

from ..errors import CasplError

PARTIAL = ".caspl-partial-"  # + "<pid>-<random>-<file name>": a write in progress, or killed
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a full quota


def lack_of_room(err):
    """The errno (ENOSPC or EDQUOT) when `err`, or an error it arose from, says a write found
    no room, else None. torch.save's RuntimeError only chains that OSError, or quotes its text."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in NO_ROOM:
            return err.errno
        for code in NO_ROOM:
            if os.strerror(code) in str(err):
                return code
        err = err.__cause__ or err.__context__
    return None


class NoRoomError(CasplError, OSError):
    """A write that found no room: one line for the user, and still the OSError it is, so that
    code which goes on without an optional file (a cache) still does."""

    def __init__(self, code, path):
        super().__init__(code, os.strerror(code), path)

    def __str__(self):
        return (f"{self.strerror.lower()} ({errno.errorcode[self.errno]}) writing {self.filename}: free space on "
                "that disk and run the same command again (nothing saved before was lost; a training run resumes "
                "from its last checkpoint)")


def raise_if_no_room(err, path):
    """Raise NoRoomError naming `path` when `err` says a write to it found no room."""
    code = lack_of_room(err)
    if code is not None:
        raise NoRoomError(code, path) from None


def _missing_folders(folder):
    """`folder` and its parents up to the first that exists, deepest first."""
    missing = []
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _atomic(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    created = _missing_folders(folder)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{PARTIAL}{os.getpid()}-", suffix="-" + os.path.basename(path))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        for new_folder in created:  # a failed write leaves the folders as they were
            with contextlib.suppress(OSError):
                os.rmdir(new_folder)
        raise_if_no_room(err, path)
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


class RefusedGlobal(Exception):
    """What a restricted unpickling refused: its text names the global (or persistent reference)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only plain containers, the objects in `allowed` ({(module, name): object}) and
    what `persistent_load` (when given) makes of a persistent id: every other global a pickle
    names (a function to call, a class to construct) is refused before anything runs."""

    def __init__(self, file, allowed, persistent_load=None):
        super().__init__(file)
        self.allowed = allowed
        self.load_persistent = persistent_load

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid):
        if self.load_persistent is None:
            raise RefusedGlobal("a persistent reference")
        return self.load_persistent(pid)


def restricted_load(file, allowed, persistent_load=None):
    """The object pickled in the binary file `file`, built as `_RestrictedUnpickler` does;
    raises RefusedGlobal on the first thing it refuses."""
    return _RestrictedUnpickler(file, allowed, persistent_load).load()


def read_pickle(path, what, allowed=None):
    """The object pickled in `path` (`what` it is, for messages), built with nothing but
    plain types and `allowed` classes. A file that names anything else is refused with a
    CasplError; one that is merely torn or not a pickle raises pickle.UnpicklingError."""
    with open(path, "rb") as f:
        try:
            return restricted_load(f, allowed or {})
        except RefusedGlobal as err:
            raise CasplError(f"refusing to read {path}: it holds {err}, which {what} never contains "
                             "(unpickling it could run code); delete or replace the file") from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeDecodeError) as err:
            raise pickle.UnpicklingError(str(err)) from None
