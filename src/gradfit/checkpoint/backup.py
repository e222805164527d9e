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
from gradfit import errors
from gradfit.checkpoint import io

PREFIX = "backup"
"""The checkpoint's prefix inside the backup directory."""

FORMAT = 2
READS = (1, 2)  # format 1 (gradfit 0.1) had no mid-epoch fields
REQUIRED = frozenset(
    {"format", "epoch", "callbacks", "history", "history_epochs", "stop_training", "nonfinite_run"}
)
"""Keys every backup document has."""

POINTER = "checkpoint"
"""The pointer file naming the latest backup (TensorFlow's name)."""

TOMBSTONE = "checkpoint.gradfit-removing"
"""The pointer's name while a finished run removes its backup."""


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

    A backup is used or refused, never ignored: :meth:`latest` and
    :meth:`check` raise a ``ValueError`` naming the directory and the
    damaged file for a missing or garbled pointer, a missing index or data
    file, truncated or corrupt tensors, or a document that does not parse,
    and touch no file.

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

    def _damaged(self, file: str, problem: str) -> ValueError:
        return ValueError(
            f"The backup in `directory` is damaged: {problem} ({file!r}). Nothing was "
            "changed and every file is kept. Repair or restore the file to resume; to start "
            "over deliberately, delete the directory. "
            f"{v.received('directory', self.directory)}"
        )

    def _own_files(self) -> list[str]:
        escaped = glob.escape(self.prefix)
        return sorted(glob.glob(escaped + ".index") + glob.glob(escaped + ".data-*"))

    def latest(self) -> str | None:
        """The latest backup's prefix; ``None`` when the directory holds none.

        Raises:
            ValueError: The directory holds a damaged backup.
        """
        if not os.path.isdir(self.directory):
            return None
        pointer = os.path.join(self.directory, POINTER)
        try:
            latest = io.read_pointer(self.directory)
        except ValueError as err:
            raise self._damaged(pointer, f"the pointer file is unusable: {err}") from err
        if latest is None and os.path.lexists(os.path.join(self.directory, TOMBSTONE)):
            return None  # a finished run's removal was cut short: nothing to resume
        if latest is not None and (
            os.path.islink(pointer)
            or os.path.dirname(os.path.abspath(latest)) != os.path.abspath(self.directory)
        ):
            raise self._damaged(pointer, f"the pointer names {latest!r}, outside the directory")
        if latest is None:
            own = self._own_files()
            if own:
                names = [os.path.basename(f) for f in own]
                raise self._damaged(pointer, f"the pointer file is missing, next to {names}")
            return None
        if not os.path.exists(latest + ".index"):
            raise self._damaged(latest + ".index", "the index the pointer names is missing")
        return latest

    def check(self, latest: str) -> dict[str, Any]:
        """Reads every tensor of the backup at ``latest`` and returns its checked JSON document.

        Reading every tensor checks each one's size and checksum, so a
        truncated or corrupt file is found before any variable is assigned.
        """
        try:
            reader = tf.train.load_checkpoint(latest)
        except Exception as err:  # DataLossError, ...
            raise self._damaged(latest + ".index", f"the index cannot be read: {err}") from err
        key = f"backup/json{io.VALUE_SUFFIX}"
        if not reader.has_tensor(key):
            raise ValueError(
                "`directory` holds a checkpoint that BackupAndRestore did not write; use an "
                f"empty directory for the backup. {v.received('directory', self.directory)}"
            )
        try:
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)
            text = reader.get_tensor(key)
        except Exception as err:  # IndexError (truncated), NotFoundError (missing), ...
            data = sorted(glob.glob(glob.escape(latest) + ".data-*")) or [
                latest + ".data-00000-of-00001"
            ]
            problem = (
                "its data file is missing"
                if not os.path.exists(data[0])
                else (f"its data cannot be read ({type(err).__name__}: {_first_line(err)})")
            )
            raise self._damaged(data[0], problem) from err
        try:
            document = _checked_document(json.loads(text.decode("utf-8")))
        except (ValueError, TypeError, UnicodeDecodeError, AttributeError) as err:
            raise self._damaged(latest, f"its JSON document does not parse: {err}") from err
        if document.get("format") not in READS:
            raise ValueError(
                f"The backup in `directory` has format {document.get('format')!r}; this "
                f"gradfit reads formats {list(READS)}. "
                f"{v.received('directory', self.directory)}"
            )
        return dict(document)

    def check_layout(self, latest: str, *, complete: bool) -> None:
        """Checks the backup's variables against the objects'.

        With ``complete=False``, only the variables the objects have yet
        (an update rule may not be built).
        """
        reader = io.open_reader(latest, self.directory, "directory")
        io.check_layout(
            io.layout(reader, self._keep),
            io.expected_layout(self._checkpoint, self._keep),
            "trainer",
            self.directory,
            "directory",
            complete=complete,
        )

    def restore(self, latest: str) -> None:
        """Assigns the objects the backup's values (checked by :meth:`check_layout` first)."""
        io.read_into(self._checkpoint, latest, self.directory, "directory")

    def write_elsewhere(self) -> None:
        """Joins the chief's write of the same objects (:func:`io.write_elsewhere`)."""
        io.write_elsewhere(self._checkpoint)

    def write(self, document: Mapping[str, Any]) -> None:
        """Saves the objects and ``document`` (plus the format) as the latest backup.

        Raises:
            gradfit.WriteError: The files could not be written (a full disk,
                say); the previous backup is intact.
        """
        self._state.json.assign(json.dumps({"format": FORMAT, **document}, allow_nan=True))
        try:
            io.write_checkpoint(self._checkpoint, self.prefix, update_latest=True)
        except errors.IO_ERRORS as err:
            raise errors.write_error(
                "BackupAndRestore",
                "directory",
                self.directory,
                err,
                "The last complete backup in it is intact: free the space (or fix the cause) "
                "and run the same fit again to resume from it.",
            ) from err


_FIELDS: dict[str, Any] = {
    "format": int,
    "epoch": int,
    "steps_done": int,
    "stop_training": bool,
    "nonfinite_run": int,
    "history": dict,
    "history_epochs": list,
    "callbacks": list,
    "step": int,
}
_MID_EPOCH = ("step_logs", "step_sizes", "generator_state")


def _checked_document(document: Any) -> dict[str, Any]:
    """``document``, with every field a resume reads present and of its type (else ValueError)."""
    if not isinstance(document, dict):
        raise ValueError(f"it is a {type(document).__name__}, not an object")
    missing = sorted(REQUIRED - document.keys())
    if missing:
        raise ValueError(f"it lacks {missing}")
    for key, kind in _FIELDS.items():
        value = document.get(key)
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if key in document and wrong:
            raise ValueError(f"its {key!r} is {value!r}, not a {kind.__name__}")
    entries = document["callbacks"]
    if not all(isinstance(e, dict) and {"type", "state"} <= e.keys() for e in entries):
        raise ValueError("its 'callbacks' entries lack 'type' or 'state'")
    if document.get("step") and not all(key in document for key in _MID_EPOCH):
        raise ValueError(f"it is a mid-epoch backup without {list(_MID_EPOCH)}")
    return document


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""


def remove(directory: str) -> None:
    """Removes a backup's files (and the directory, when that leaves it empty).

    The pointer is first renamed to :data:`TOMBSTONE`, so that a removal cut
    short leaves files that read as no backup, not as a damaged one.
    """
    if not os.path.isdir(directory):
        return
    pointer, tombstone = os.path.join(directory, POINTER), os.path.join(directory, TOMBSTONE)
    with contextlib.suppress(FileNotFoundError):
        os.replace(pointer, tombstone)  # first: no backup from here on
    escaped = glob.escape(directory)
    names = glob.glob(os.path.join(escaped, f"{PREFIX}.*"))
    names += glob.glob(os.path.join(escaped, f".{PREFIX}.gradfit-tmp-*"))
    names += glob.glob(os.path.join(escaped, "checkpoint.gradfit-tmp-*"))
    for name in names:
        io.discard(name)
    with contextlib.suppress(FileNotFoundError):
        os.remove(tombstone)  # last
    with contextlib.suppress(OSError):
        os.rmdir(directory)
