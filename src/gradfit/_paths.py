"""Checks that a path can be written, made before anything is written (no file is created).

A callback or ``save`` that will write a file or a directory checks it
here before the first training step: the names fit the file system's
limits, nothing in the way is a file where a directory must be (or the
reverse), and the nearest existing directory can be written. Each check
raises a ``ValueError`` naming the argument and echoing the value.
"""

from __future__ import annotations

import contextlib
import errno
import os

from gradfit import _validation as v

_NAME_MAX = 255
_PATH_MAX = 4096


def _existing_ancestor(path: str) -> str:
    """``path`` or its nearest ancestor that exists."""
    current = path
    while not os.path.lexists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def _limit(path: str, key: str, default: int) -> int:
    try:
        return int(os.pathconf(path, key))
    except (OSError, ValueError, AttributeError):
        return default


def check_names(name: str, path: str, value: object, extra: int = 0) -> None:
    """Checks the OS's limits on ``path``: each name, and the whole.

    Args:
        name: The argument's name, for messages.
        path: The path to check.
        value: What the user passed, echoed in messages.
        extra: Characters a writer adds to the last name (a temporary
            file's suffix, say).
    """
    absolute = os.path.abspath(path)
    where = _existing_ancestor(absolute)
    name_max = _limit(where, "PC_NAME_MAX", _NAME_MAX)
    parts = [p for p in absolute.split(os.sep) if p]
    for i, part in enumerate(parts):
        size = len(os.fsencode(part)) + (extra if i == len(parts) - 1 else 0)
        if size > name_max:
            suffix = " (with the writer's suffix)" if extra else ""
            raise ValueError(
                f"`{name}` holds a name of {size} bytes{suffix}, over this file system's "
                f"limit of {name_max}: {part[:40]!r}... "
                f"{v.received(name, value)}"
            )
    path_max = _limit(where, "PC_PATH_MAX", _PATH_MAX)
    if len(os.fsencode(absolute)) + extra >= path_max:
        raise ValueError(
            f"`{name}` is {len(os.fsencode(absolute))} bytes long, over this system's limit of "
            f"{path_max}. {v.received(name, value)}"
        )


def _check_writable(name: str, where: str, value: object) -> None:
    """The existing directory ``where`` must be writable (and on a writable file system)."""
    if not os.path.isdir(where):
        raise ValueError(
            f"`{name}` cannot be created: {where!r} is a file, not a directory. "
            f"{v.received(name, value)}"
        )
    read_only = False
    with contextlib.suppress(OSError, AttributeError):
        read_only = bool(os.statvfs(where).f_flag & os.ST_RDONLY)
    if read_only or not os.access(where, os.W_OK | os.X_OK):
        reason = "is on a read-only file system" if read_only else "is not writable"
        raise ValueError(
            f"`{name}` cannot be written: {where!r} {reason}. {v.received(name, value)}"
        )


def check_directory(name: str, path: str, value: object, extra: int = 0) -> None:
    """Checks that ``path`` is, or can be created as, a directory this process writes into.

    Args:
        name: The argument's name, for messages.
        path: The directory.
        value: What the user passed, echoed in messages.
        extra: The longest name the writer puts in the directory.
    """
    check_names(name, os.path.join(path, "x" * max(extra, 1)) if extra else path, value)
    absolute = os.path.abspath(path)
    if os.path.lexists(absolute) and not os.path.isdir(absolute):
        raise ValueError(
            f"`{name}` must be a directory, but {absolute!r} is a file. {v.received(name, value)}"
        )
    _check_writable(name, _existing_ancestor(absolute), value)


def check_file(name: str, path: str, value: object) -> None:
    """Checks that ``path`` is, or can be created as, a file this process writes."""
    check_names(name, path, value)
    absolute = os.path.abspath(path)
    if os.path.isdir(absolute):
        raise ValueError(
            f"`{name}` must be a file, but {absolute!r} is a directory. {v.received(name, value)}"
        )
    if os.path.exists(absolute):
        if not os.access(absolute, os.W_OK):
            raise ValueError(
                f"`{name}` cannot be written: {absolute!r} is read-only. {v.received(name, value)}"
            )
        _check_writable(name, os.path.dirname(absolute), value)
        return
    _check_writable(name, _existing_ancestor(os.path.dirname(absolute)), value)


def describe_os_error(err: BaseException) -> str:
    """A short description of an OS or TensorFlow I/O error (``No space left on device``)."""
    if isinstance(err, OSError) and err.errno is not None:
        return f"{os.strerror(err.errno)} [{errno.errorcode.get(err.errno, err.errno)}]"
    text = str(getattr(err, "message", "") or err).strip().splitlines()
    return text[0] if text else type(err).__name__
