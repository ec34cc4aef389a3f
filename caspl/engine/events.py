"""The run's TensorBoard event file (OUTPUT_DIR/tensorboard). tensorboard writes it from a
thread of its own, whose error comes back at the next call from the run: a disk that is full
there is one line (NoRoomError), as for every other file of the run."""
import contextlib
import threading

from torch.utils.tensorboard import SummaryWriter

from ..utils.io import lack_of_room, raise_if_no_room

WRITER_THREAD_MODULE = "tensorboard.summary.writer.event_file_writer"


def event_writer(folder):
    """An EventWriter for `folder`, or, where tensorboard cannot name files there, NoEvents
    (with a note)."""
    try:
        folder.encode("utf-8")
    except UnicodeEncodeError:  # tensorboard encodes file names as strict UTF-8
        print(f"Note: no TensorBoard events for this run: tensorboard cannot name files in {folder}, "
              "whose name is not UTF-8 (the log has every number)")
        return NoEvents()
    return EventWriter(folder)


class EventWriter(SummaryWriter):
    def __init__(self, folder):
        _quiet_writer_threads()
        with _room_checked(folder):
            super().__init__(folder)

    def add_scalar(self, *args, **kwargs):
        with _room_checked(self.log_dir):
            super().add_scalar(*args, **kwargs)

    def close(self):
        with _room_checked(self.log_dir):
            super().close()


class NoEvents:
    """What the run calls on its writer, doing nothing."""

    def add_scalar(self, *args, **kwargs):
        pass

    def close(self):
        pass


@contextlib.contextmanager
def _room_checked(folder):
    try:
        yield
    except OSError as err:
        raise_if_no_room(err, folder)
        raise


def _quiet_writer_threads():
    """Leave unprinted a full disk in tensorboard's writer thread: the next call from the run
    raises that error again, as one line; the thread's own traceback would come on top."""
    previous = threading.excepthook
    if getattr(previous, "quiets_writer_threads", False):
        return

    def hook(args):
        if type(args.thread).__module__ != WRITER_THREAD_MODULE or lack_of_room(args.exc_value) is None:
            previous(args)

    hook.quiets_writer_threads = True
    threading.excepthook = hook
