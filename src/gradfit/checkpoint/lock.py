"""A directory held by one run at a time: an advisory ``flock`` on a file inside it.

The lock file records the holder's pid and host, for the message a second
run gets. The operating system releases a ``flock`` when its process dies
however it dies (SIGKILL included), so a lock left by a killed run is
simply taken over: the file stays, the lock on it does not. Where
``fcntl`` is missing (Windows) the lock is not taken.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any

from gradfit import _validation as v

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

NAME = ".gradfit-lock"
"""The lock file's name inside the directory."""

_ATTEMPTS = 5  # a holder that removes the file between our open and our lock: retry


class DirectoryLock:
    """Holds ``directory`` for this run; see the module docstring.

    Args:
        directory: The directory to hold.
        name: The argument that named it, for messages.
        user: Who holds it (``"BackupAndRestore"``), for messages.
    """

    def __init__(self, directory: str, name: str, user: str) -> None:
        self.directory, self.name, self.user = directory, name, user
        self.path = os.path.join(directory, NAME)
        self._fd: int | None = None
        self._existing: str | None = None  # the nearest directory that existed before acquire

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Takes the lock, creating the directory if needed.

        Raises:
            ValueError: Another run holds it; the message names the
                directory and the holder's pid.
        """
        if self._fd is not None or fcntl is None:
            return
        self._existing = _existing_ancestor(os.path.abspath(self.directory))
        os.makedirs(self.directory, exist_ok=True)
        for _ in range(_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(fd)
                os.close(fd)
                self._undo_directory()
                raise ValueError(
                    f"`{self.name}` is in use by another run ({holder}): two runs must not "
                    f"share one {self.user} directory. Wait for it to end, stop it, or give "
                    f"this run its own directory. {v.received(self.name, self.directory)}"
                ) from None
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
                self._fd = fd
                return
            os.close(fd)  # the holder removed the file while we waited: lock the new one
        raise ValueError(  # pragma: no cover - a holder racing us five times
            f"`{self.name}` could not be locked. {v.received(self.name, self.directory)}"
        )

    def release(self) -> None:
        """Lets the directory go (and removes it if the lock created it and it is empty)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)  # before unlocking: a newcomer locks a fresh file
        os.close(fd)
        self._undo_directory()

    def _undo_directory(self) -> None:
        """Removes the directories acquire created, leaf first, while they are empty."""
        existing, self._existing = self._existing, None
        current = os.path.abspath(self.directory)
        while existing is not None and current != existing and current.startswith(existing):
            try:
                os.rmdir(current)
            except OSError:
                return
            current = os.path.dirname(current)


def _holder(fd: int) -> str:
    """The holder's ``pid N on host``, waiting briefly for a holder that has just locked."""
    for _ in range(50):
        with contextlib.suppress(OSError):
            text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            if text:
                return text
        time.sleep(0.01)
    return "pid unknown"


def _existing_ancestor(path: str) -> str:
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _same_file(fd: int, path: str) -> Any:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
