"""gradfit's own error for a file it could not write during a fit."""

from __future__ import annotations

import errno as errno_lib
from typing import Any

import tensorflow as tf

from gradfit import _paths


class WriteError(OSError):
    """A callback or ``save`` could not write its file during a fit (a full disk, say).

    It is an ``OSError`` (``errno`` is the OS's, when known, e.g.
    ``errno.ENOSPC``); the message names the argument and the path, and
    what was kept. Every argument and path is checked before the first
    step, so this comes from the machine (space, permissions changed
    mid-run), not from an argument.

    Attributes:
        path: The file or directory that could not be written.
    """

    def __init__(self, message: str, path: str, errno: int | None = None) -> None:
        super().__init__(errno if errno is not None else errno_lib.EIO, message)
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


IO_ERRORS = (OSError, tf.errors.OpError)
"""What writing a file can raise: the OS's errors and TensorFlow's I/O errors."""


def write_error(what: str, name: str, path: str, err: BaseException, kept: str = "") -> WriteError:
    """A :class:`WriteError` for ``err``, raised while ``what`` wrote ``path`` (``name``)."""
    code: Any = getattr(err, "errno", None)
    if code is None and isinstance(err, tf.errors.ResourceExhaustedError):
        code = errno_lib.ENOSPC if "space" in str(err).lower() else None
    message = f"{what} could not write `{name}` ({path!r}): {_paths.describe_os_error(err)}." + (
        f" {kept}" if kept else ""
    )
    return WriteError(message, path, code if isinstance(code, int) else None)
