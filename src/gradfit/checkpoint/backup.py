"""The backup engine: one atomic checkpoint holding a run's tensors and its JSON document.

A backup is a ``tf.train.Checkpoint`` of the run's objects plus a
``tf.string`` variable holding a JSON document (epochs and steps done, the
History, callbacks' states, a mid-epoch save's step logs), written in one
atomic write through the directory's ``checkpoint`` pointer
(:func:`gradfit.checkpoint.io.write_checkpoint`): a kill during a save
leaves the previous backup or the new one, never a mix.
:class:`BackupStore` reads, writes and removes it; the
``BackupAndRestore`` callback decides when.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v
from gradfit.checkpoint import io

PREFIX = "backup"
"""The checkpoint's prefix inside the backup directory."""

FORMAT = 2
READS = (1, 2)  # format 1 (gradfit 0.1) had no mid-epoch fields


def encode(value: Any) -> Any:
    """A JSON-ready copy of a callback state: NumPy arrays become base64 records."""
    if isinstance(value, np.ndarray | np.generic):
        array = np.ascontiguousarray(value)
        return {
            "__ndarray__": base64.b64encode(array.tobytes()).decode("ascii"),
            "dtype": array.dtype.str,
            "shape": list(array.shape),
        }
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"callback state dicts must have string keys; received {value!r}")
        return {"__dict__": {k: encode(item) for k, item in value.items()}}
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        "BackupAndRestore can save callback states made of None, bools, numbers, strings, "
        f"lists, dicts and NumPy arrays; received a {type(value).__name__}: {value!r}"
    )


def decode(value: Any) -> Any:
    """The value :func:`encode` made a JSON-ready copy of."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            data = base64.b64decode(value["__ndarray__"])
            array = np.frombuffer(data, dtype=np.dtype(value["dtype"]))
            return array.reshape(value["shape"]).copy()
        return {k: decode(item) for k, item in value["__dict__"].items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


class _State(tf.Module):
    """The backup's non-tensor part: one JSON document in a string variable."""

    def __init__(self) -> None:
        super().__init__(name="backup_state")
        self.json = tf.Variable("", dtype=tf.string, trainable=False, name="json")


class BackupStore:
    """A backup directory: the latest backup of a run's objects, read and written atomically.

    Args:
        directory: The backup's directory (created when first written).
        objects: The run's checkpointable objects by name.
    """

    def __init__(self, directory: str, objects: Mapping[str, tf.Module]) -> None:
        self.directory = directory
        with tf.init_scope():
            self._state = _State()
        self._checkpoint = tf.train.Checkpoint(**objects, backup=self._state)
        self._keep = (*(f"{name}/" for name in objects), "backup/")

    @property
    def prefix(self) -> str:
        """The checkpoint's prefix."""
        return os.path.join(self.directory, PREFIX)

    def latest(self) -> str | None:
        """The latest backup's prefix, or ``None`` when the directory holds none."""
        if not os.path.isdir(self.directory):
            return None
        with contextlib.suppress(Exception):
            latest = tf.train.latest_checkpoint(self.directory)
            if latest is not None and os.path.exists(latest + ".index"):
                return str(latest)
        return None

    def document(self, latest: str) -> dict[str, Any]:
        """The JSON document of the backup at ``latest``, its format checked."""
        reader = io.open_reader(latest, self.directory)
        key = f"backup/json{io.VALUE_SUFFIX}"
        if not reader.has_tensor(key):
            raise ValueError(
                "`directory` holds a checkpoint that BackupAndRestore did not write; use an "
                f"empty directory for the backup. {v.received('directory', self.directory)}"
            )
        document = json.loads(reader.get_tensor(key).decode("utf-8"))
        if document.get("format") not in READS:
            raise ValueError(
                f"The backup in `directory` has format {document.get('format')!r}; this "
                f"gradfit reads formats {list(READS)}. "
                f"{v.received('directory', self.directory)}"
            )
        return dict(document)

    def restore(self, latest: str) -> None:
        """Checks the backup's layout against the objects, then assigns them its values."""
        reader = io.open_reader(latest, self.directory)
        io.check_layout(
            io.layout(reader, self._keep),
            io.expected_layout(self._checkpoint, self._keep),
            "trainer",
            self.directory,
        )
        io.read_into(self._checkpoint, latest, self.directory)

    def write(self, document: Mapping[str, Any]) -> None:
        """Saves the objects and ``document`` (plus the format) as the latest backup."""
        self._state.json.assign(json.dumps({"format": FORMAT, **document}, allow_nan=True))
        io.write_checkpoint(self._checkpoint, self.prefix, update_latest=True)


def remove(directory: str) -> None:
    """Removes a backup's files (and the directory, when that leaves it empty)."""
    if not os.path.isdir(directory):
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, "checkpoint"))  # first: no backup from here on
    escaped = glob.escape(directory)
    names = glob.glob(os.path.join(escaped, f"{PREFIX}.*"))
    names += glob.glob(os.path.join(escaped, f".{PREFIX}.gradfit-tmp-*"))
    names += glob.glob(os.path.join(escaped, "checkpoint.gradfit-tmp-*"))
    for name in names:
        io.discard(name)
    with contextlib.suppress(OSError):
        os.rmdir(directory)
