"""The project's exception types: one clear message naming the file or key and what was expected."""

from __future__ import annotations


class CausalWSSSError(Exception):
    """Base class: the command line prints these as one line, without a traceback."""


class DataError(CausalWSSSError, ValueError):
    """A data set folder, list, image or annotation is missing or unreadable, or a tensor or
    array given to a library function has the wrong shape, dtype or values."""


class ConfigError(CausalWSSSError, KeyError):
    """A configuration key or value is unknown or malformed."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(CausalWSSSError, RuntimeError):
    """Pretrained weights were asked for and cannot be had."""


class DiskFullError(CausalWSSSError, OSError):
    """A file could not be written because the disk (or the quota) is full.

    Built as ``DiskFullError(errno.ENOSPC, message, path)``, so ``errno`` and ``filename`` are
    set as on any ``OSError``; ``str()`` is the one-line message alone.
    """

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror is not None else super().__str__()
