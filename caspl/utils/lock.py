"""One run at a time in an output folder. A run holds an exclusive flock on OUTPUT_DIR/.caspl-lock
from before it writes anything there until it ends; a second run into the folder is refused
with one line naming the holder, and changes nothing there. The OS drops the lock when the
holder's process ends, killed or not, so a killed run never blocks the next one (its stale
file is simply locked again). Under torchrun rank 0 holds it for the run."""
import contextlib
import fcntl
import json
import os
import socket
import sys
import time

from ..errors import CasplError
from . import distributed
from .io import raise_if_no_room

LOCK_FILE = ".caspl-lock"

_held = []  # this process's locks, released by unlock_run_folder


class FolderLock:
    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_FILE)
        self.fd = None

    def acquire(self):
        """Take the lock, or raise CasplError naming the run that holds it."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no truncation: the holder's record stays
            except OSError as err:
                raise CasplError(f"cannot write in the output folder {self.folder} ({err.strerror}): choose an "
                                 "--output-dir you can write") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_holder(fd)
                os.close(fd)
                raise CasplError(f"another run is using the output folder {self.folder} ({holder}); wait for it to "
                                 "end, or give this run another --output-dir") from None
            except OSError as err:  # a file system without locks: run as before, unguarded
                os.close(fd)
                print(f"Warning: cannot lock the output folder {self.folder} ({err.strerror}); a second run into it "
                      "would not be stopped", file=sys.stderr)
                return False
            if same_file(fd, self.path):
                break
            os.close(fd)  # its holder ended and removed the file between our open and flock: lock the new one
        self.fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(record).encode("utf-8"))
        except OSError as err:  # a full disk: one line (the lock itself is held all the same)
            raise_if_no_room(err, self.path)
            raise
        return True

    def release(self):
        with contextlib.suppress(FileNotFoundError):  # first: a run that opens the path now gets a new file
            os.remove(self.path)
        os.close(self.fd)
        self.fd = None


def read_holder(fd):
    """The holding run's record, in words."""
    try:
        record = json.loads(os.pread(fd, 1 << 16, 0).decode("utf-8"))
        return (f"pid {record['pid']} on {record['host']}, started {record['started']}: "
                f"{' '.join(record['command'].split())}")
    except (ValueError, KeyError, TypeError, OSError):  # it has not written its record yet
        return "a run that has not said which yet"


def same_file(fd, path):
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def lock_run_folder(folder):
    """Hold `folder` for this run (rank 0 under torchrun; every process gets the same refusal)."""
    refusal = None
    if distributed.is_main():
        try:
            make_folder(folder)
            lock = FolderLock(folder)
            if lock.acquire():
                _held.append(lock)
        except CasplError as err:
            refusal = str(err)
    refusal = distributed.broadcast_object(refusal)
    if refusal:
        raise CasplError(refusal)


def unlock_run_folder():
    while _held:
        _held.pop().release()


def make_folder(folder):
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise CasplError(f"the output folder {folder} is a file: choose another --output-dir")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise CasplError(f"cannot create the output folder {folder} ({err.strerror}): choose an --output-dir you "
                         "can write") from None
