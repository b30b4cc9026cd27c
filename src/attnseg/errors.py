"""Exceptions that carry a message a user can act on.

The CLI prints ``str(error)`` as one line and exits non-zero; ``--debug`` shows the traceback.
"""


class AttnsegError(Exception):
    """Base class for every error attnseg raises on purpose."""


class DataError(AttnsegError, ValueError):
    """An input file or folder is missing, unreadable or not what was expected."""


class ConfigError(AttnsegError, ValueError):
    """A setting is unknown or has a value outside its allowed range."""


class ModelFileError(AttnsegError, ValueError):
    """A model checkpoint or exported model is missing, foreign, tampered with or incomplete."""


class OutputError(AttnsegError, OSError):
    """An output file or folder cannot be written (no space left, no permission, read-only disk)."""
