"""Tee stdout/stderr into OUTPUT_DIR/log.txt (appending, so a resumed run keeps one log)."""
import os
import sys
import time

from ..errors import CasplError


class _Tee:
    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, data):
        self.stream.write(data)
        self.file.write(data)
        self.file.flush()

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
        log_file = open(path, "a", encoding="utf-8")
    except OSError as err:
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
