"""Tee stdout/stderr into OUTPUT_DIR/log.txt (appending, so a resumed run keeps one log)."""
import contextlib
import os
import sys
import time

from ..errors import CasplError
from .io import raise_if_no_room


class _Tee:
    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, data):
        try:
            self.stream.write(data)
        except UnicodeEncodeError:  # a console that cannot show a path's undecodable bytes (its own stay in the log)
            encoding = getattr(self.stream, "encoding", None) or "utf-8"
            self.stream.write(data.encode(encoding, "backslashreplace").decode(encoding))
        try:
            self.file.write(data)
            self.file.flush()
        except OSError as err:
            self.stop_logging(err)

    def stop_logging(self, err):
        """The log cannot be written: the run stops with one line, and what is printed from
        here on (that line too) goes to the console only."""
        path = self.file.name
        with contextlib.suppress(OSError):  # closing flushes the text that did not fit, and fails again
            self.file.close()
        self.file = open(os.devnull, "w", encoding="utf-8")
        raise_if_no_room(err, path)
        raise CasplError(f"cannot write the run's log {path} ({err.strerror})") from None

    def flush(self):
        self.stream.flush()
        self.file.flush()

    def isatty(self):
        return self.stream.isatty()

    def fileno(self):
        return self.stream.fileno()


def setup_logger(output_dir, filename="log.txt"):
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise CasplError(f"the output folder {output_dir} is a file: choose another --output-dir")
    path = os.path.join(output_dir, filename)
    try:
        os.makedirs(output_dir, exist_ok=True)
        resumed = os.path.exists(path) and os.path.getsize(path) > 0
        # a path's bytes that are not UTF-8 (surrogates in Python) go into the log as they are
        log_file = open(path, "a", encoding="utf-8", errors="surrogateescape")
    except OSError as err:
        raise_if_no_room(err, path)
        raise CasplError(f"cannot write the run's log in {output_dir} ({err.strerror}): choose an --output-dir you "
                         "can write") from None
    if isinstance(sys.stdout, _Tee):  # a second run in the same process logs to its own file
        sys.stdout.file.close()
        sys.stdout.file = log_file
    else:
        sys.stdout = _Tee(sys.stdout, log_file)
    if resumed:
        print(f"\n{'=' * 20} run started again {time.strftime('%Y-%m-%d %H:%M:%S')} (appending to {path}) {'=' * 20}")
    return path
