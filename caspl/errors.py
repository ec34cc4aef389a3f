"""The one exception type that user-facing code raises for bad input."""


class CasplError(Exception):
    """A problem with the user's input (config, data, checkpoint): `train.py` prints the
    message as one line and exits non-zero, without a traceback."""
