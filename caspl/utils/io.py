"""Atomic writes: a crash mid-write leaves the old file (or none), never a torn one."""
import os
import tempfile

import torch


def _atomic(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
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


def atomic_save(obj, path):
    """torch.save to `path` atomically."""
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(data, path):
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(text, path):
    atomic_write_bytes(text.encode("utf-8"), path)
