"""Checkpoint I/O: atomic writes, reading, and layout checks before anything is assigned.

Writes are atomic (:func:`write_checkpoint`): the checkpoint is written
under a temporary name in the same directory and then moved into place,
index last, so a process killed during a save never leaves a corrupt
checkpoint at the final name. Reads check the checkpoint's layout (keys,
shapes, dtypes) against the objects first (:func:`check_layout`), so a
mismatch changes no variable.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from typing import Any

import tensorflow as tf
from google.protobuf import text_encoding

from gradfit import _paths
from gradfit import _validation as v

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
"""What TensorFlow appends to a variable's checkpoint key."""

_TMP_TAG = ".gradfit-tmp-"
_STATE_FILE = "checkpoint"  # the name tf.train.latest_checkpoint reads
_SHARD = re.compile(r"\.data-\d{5}-of-\d{5}")


# -- atomic writes -----------------------------------------------------------


def _files(prefix: str) -> list[str]:
    """The suffixes of the files of checkpoint ``prefix``: data shards, then ``.index``."""
    found = [f[len(prefix) :] for f in glob.glob(glob.escape(prefix) + ".*")]
    data = sorted(s for s in found if _SHARD.fullmatch(s))
    return [*data, ".index"] if ".index" in found else data


def _remove(prefix: str) -> None:
    for suffix in _files(prefix):
        with contextlib.suppress(FileNotFoundError):
            os.remove(prefix + suffix)


def _place(source: str, target: str, staging: str, *, keep_source: bool) -> None:
    """Moves ``source`` to ``target`` atomically; with ``keep_source`` it stays complete too.

    With ``keep_source``, a second name for the file (a hard link, else a
    copy) is made at ``staging`` and moved to ``target``.
    """
    if not keep_source:
        os.replace(source, target)
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(staging)
    try:
        os.link(source, staging)  # a second name for the same data: no copy
    except OSError:
        shutil.copyfile(source, staging)
    os.replace(staging, target)


def _escape(text: str) -> str:
    return text_encoding.CEscape(text, as_utf8=True)


def _write_state(directory: str, latest: str, others: Iterable[str]) -> None:
    """Atomically points ``directory``'s ``checkpoint`` file at prefix ``latest``.

    The file is TensorFlow's (``tf.train.latest_checkpoint`` reads it); paths
    in it are relative to ``directory``.
    """
    names = [os.path.relpath(p, directory) for p in [*others, latest]]
    names = list(dict.fromkeys(names))
    lines = [f'model_checkpoint_path: "{_escape(names[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{_escape(n)}"' for n in names]
    target = os.path.join(directory, _STATE_FILE)
    staging = f"{target}{_TMP_TAG}{uuid.uuid4().hex[:8]}"
    try:
        with open(staging, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(staging)  # (a full disk: the old pointer stays, and nothing else)
        raise


def read_pointer(directory: str) -> str | None:
    """The prefix ``directory``'s ``checkpoint`` file names, or ``None`` when there is no file.

    Raises:
        ValueError: The file exists but names no checkpoint (empty, garbled
            or unreadable); the message names it.
    """
    target = os.path.join(directory, _STATE_FILE)
    if not os.path.lexists(target):
        return None
    try:
        with open(target, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"it cannot be read ({type(err).__name__}: {err})") from err
    match = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"\s*$', text, re.MULTILINE)
    if match is None:
        shown = repr(text[:60]) if text else "empty"
        raise ValueError(f"it names no checkpoint (its text is {shown})")
    name = text_encoding.CUnescape(match.group(1)).decode("utf-8", "replace")
    return os.path.join(directory, name)


def _listed(directory: str) -> list[str]:
    """The existing checkpoints ``directory``'s ``checkpoint`` file lists, oldest first."""
    with contextlib.suppress(Exception):
        state = tf.train.get_checkpoint_state(directory)
        if state is not None:
            paths = [os.path.join(directory, p) for p in state.all_model_checkpoint_paths]
            return [
                p
                for p in paths
                if _TMP_TAG not in os.path.basename(p) and os.path.exists(p + ".index")
            ]
    return []


def discard(name: str) -> None:
    """Removes a file or directory a save left, if it is there."""
    if os.path.isdir(name):  # TensorFlow's own "<prefix>_temp" directory
        shutil.rmtree(name, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


def _remove_leftovers(directory: str, base: str) -> None:
    """Removes what killed saves of ``base`` left, except a copy the latest pointer names."""
    latest = None
    with contextlib.suppress(Exception):
        latest = tf.train.latest_checkpoint(directory)
    escaped = glob.escape(directory)
    names = glob.glob(os.path.join(escaped, f".{glob.escape(base)}{_TMP_TAG}*"))
    names += glob.glob(os.path.join(escaped, f"{_STATE_FILE}{_TMP_TAG}*"))
    for name in names:
        if latest is None or not name.startswith(latest + "."):
            discard(name)


_WRITER_SUFFIX = 64
"""The most characters a save adds to a prefix's name (``.<name>.gradfit-tmp-<pid>-...``)."""


def check_prefix(name: str, prefix: str, value: Any = None) -> None:
    """Checks, writing nothing, that a checkpoint can be written at ``prefix``.

    Its directory must be, or be creatable as, a writable directory, and its
    files' names (the temporary ones included) must fit the OS's limits.

    Args:
        name: The argument that gave ``prefix``, for messages.
        prefix: The checkpoint prefix.
        value: What the user passed (default: ``prefix``), echoed in messages.
    """
    shown = prefix if value is None else value
    _paths.check_names(name, prefix, shown, extra=_WRITER_SUFFIX)
    if os.path.isdir(prefix):
        raise ValueError(
            f"`{name}` names a directory; a checkpoint prefix names files "
            f"(`{name}`.index, ...). {v.received(name, shown)}"
        )
    _paths.check_directory(name, os.path.dirname(os.path.abspath(prefix)), shown)


def write_checkpoint(
    checkpoint: tf.train.Checkpoint, path: str | os.PathLike[str], *, update_latest: bool = False
) -> str:
    """Writes ``checkpoint`` to ``path`` so that a kill at any moment corrupts nothing.

    The checkpoint is written under a hidden temporary name in ``path``'s
    directory (created if needed), then its files are moved to ``path``'s
    names, the index last, after removing the old index: a reader finds the
    old checkpoint, the new one, or (killed between two renames of an
    overwrite) none, never an index that does not match its data.

    With ``update_latest``, the directory's ``checkpoint`` file (what
    ``tf.train.latest_checkpoint`` reads) is pointed at ``path``,
    atomically. While the files are moved into place it points at the
    complete temporary copy, so from the first save on the file exists and
    the checkpoint it names is complete at every moment: a missing or
    dangling pointer is damage, never a save in progress.

    Args:
        checkpoint: The ``tf.train.Checkpoint`` to write.
        path: The checkpoint's prefix: ``path.index`` and
            ``path.data-00000-of-00001`` are written.
        update_latest: Also update the directory's ``checkpoint`` file.

    Returns:
        ``path``, as a string.
    """
    prefix = v.path("path", path)
    if not isinstance(checkpoint, tf.train.Checkpoint):
        raise TypeError(
            f"`checkpoint` must be a tf.train.Checkpoint. {v.received('checkpoint', checkpoint)}"
        )
    check_prefix("path", prefix, path)
    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(prefix)
    _remove_leftovers(directory, base)
    staging = os.path.join(directory, f".{base}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    pointed = False  # whether the `checkpoint` file names the staging copy
    try:
        checkpoint.write(staging)
        new = _files(staging)
        others = [p for p in _listed(directory) if p != os.path.abspath(prefix)]
        if update_latest:
            _write_state(directory, staging, others)
            pointed = True
        with contextlib.suppress(FileNotFoundError):
            os.remove(prefix + ".index")
        for suffix in _files(prefix):  # data shards of the old checkpoint that no longer exist
            if suffix not in new:
                os.remove(prefix + suffix)
        for suffix in new:
            link = os.path.join(directory, f".{base}{_TMP_TAG}link{suffix}")
            _place(staging + suffix, prefix + suffix, link, keep_source=pointed)
        if update_latest:
            _write_state(directory, os.path.abspath(prefix), others)
            pointed = False
    finally:
        if not pointed:  # else the latest checkpoint is the staging copy: keep it
            _remove(staging)
            discard(staging + "_temp")
    if update_latest:
        _remove_leftovers(directory, base)  # a copy an interrupted save left as the latest
    return prefix


# -- reading -----------------------------------------------------------------


def write_elsewhere(checkpoint: tf.train.Checkpoint) -> None:
    """Writes ``checkpoint`` to a throwaway directory, then removes it.

    What a multi-worker job's other workers do while the chief writes the
    same checkpoint: reading a ``SyncOnRead`` variable (a Keras metric's
    state) to save it is a collective across the workers, which every
    worker must join, in the same order -- writing the same objects does
    that. Nothing the user sees is left behind.
    """
    with tempfile.TemporaryDirectory(prefix="gradfit-worker-") as scratch:
        checkpoint.write(os.path.join(scratch, "checkpoint"))


def resolve(path: Any) -> str:
    """The checkpoint prefix ``path`` names (a directory names its latest checkpoint)."""
    text = v.path("path", path)
    if text.endswith(".index") and not os.path.exists(text + ".index"):
        text = text[: -len(".index")]
    if not os.path.exists(text + ".index") and os.path.isdir(text):
        latest = tf.train.latest_checkpoint(text)
        if latest is None:
            raise FileNotFoundError(
                "`path` is a directory whose 'checkpoint' file names no existing checkpoint. "
                f"{v.received('path', path)}"
            )
        return latest
    if not os.path.exists(text + ".index"):
        raise FileNotFoundError(
            f"No checkpoint at `path`: {text + '.index'!r} does not exist. "
            f"{v.received('path', path)}"
        )
    return text


def open_reader(prefix: str, path: Any, name: str = "path") -> Any:
    """A checkpoint reader of ``prefix``; a ``ValueError`` naming ``name`` if unreadable."""
    try:
        return tf.train.load_checkpoint(prefix)
    except Exception as err:  # DataLossError, InvalidArgumentError, ...
        raise ValueError(
            f"`{name}` is not a readable checkpoint ({type(err).__name__}: {err}). "
            f"{v.received(name, path)}"
        ) from err


Layout = dict[str, tuple[tuple[int, ...], str]]
"""Checkpoint keys of variables -> (shape, dtype name)."""


def layout(reader: Any, keep: tuple[str, ...]) -> Layout:
    """The variables a checkpoint holds under the prefixes ``keep``: key -> (shape, dtype)."""
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    return {
        key: (tuple(shape), dtypes[key].name)
        for key, shape in shapes.items()
        if key.endswith(VALUE_SUFFIX) and key.startswith(keep)
    }


def expected_layout(checkpoint: tf.train.Checkpoint, keep: tuple[str, ...]) -> Layout:
    """The layout ``checkpoint`` would have if written now.

    TensorFlow's own serialisation names the keys, so they match exactly. The
    probe is written to TensorFlow's in-memory file system (to a temporary
    directory where that is missing) and dropped.
    """
    root = f"ram://gradfit-{uuid.uuid4().hex}"
    try:
        prefix = checkpoint.write(f"{root}/probe")
        return layout(tf.compat.v1.train.NewCheckpointReader(prefix), keep)
    except tf.errors.OpError:
        with tempfile.TemporaryDirectory(prefix="gradfit-") as directory:
            prefix = checkpoint.write(os.path.join(directory, "probe"))
            return layout(tf.train.load_checkpoint(prefix), keep)
    finally:
        with contextlib.suppress(Exception):
            for name in tf.io.gfile.glob(f"{root}/*"):
                tf.io.gfile.remove(name)


def _readable(key: str) -> str:
    """``update_rule/_slots/0.Sm/.ATTRIBUTES/VARIABLE_VALUE`` -> ``update_rule/_slots/0/m``."""
    key = key[: -len(VALUE_SUFFIX)] if key.endswith(VALUE_SUFFIX) else key
    return re.sub(r"\.(.)", lambda m: "/" if m.group(1) == "S" else m.group(1), key)


def _describe(entry: tuple[tuple[int, ...], str]) -> str:
    return f"shape {list(entry[0])}, {entry[1]}"


def check_layout(
    saved: Layout,
    expected: Layout,
    what: str,
    path: Any,
    name: str = "path",
    *,
    complete: bool = True,
) -> None:
    """Raises a ValueError listing how the checkpoint and the objects differ, if they do.

    With ``complete=False`` the objects may not have all their variables
    yet (an update rule not built): keys only the checkpoint has are allowed.
    """
    problems = [
        f"the checkpoint has {_readable(k)} ({_describe(saved[k])}), which the {what} lacks"
        for k in sorted(saved.keys() - expected.keys())
        if complete
    ]
    problems += [
        f"the {what} has {_readable(k)} ({_describe(expected[k])}), which the checkpoint lacks"
        for k in sorted(expected.keys() - saved.keys())
    ]
    problems += [
        f"{_readable(k)} has {_describe(saved[k])} in the checkpoint but "
        f"{_describe(expected[k])} in the {what}"
        for k in sorted(saved.keys() & expected.keys())
        if saved[k] != expected[k]
    ]
    if problems:
        shown = "; ".join(problems[:6])
        more = f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
        raise ValueError(
            f"The checkpoint at `{name}` does not match the {what}'s structure: {shown}{more}. "
            f"Create the {what} as it was when saved. {v.received(name, path)}"
        )


def read_into(checkpoint: tf.train.Checkpoint, prefix: str, path: Any, name: str = "path") -> None:
    """Assigns the checkpoint at ``prefix`` to ``checkpoint``'s objects (``ValueError`` if not)."""
    try:
        status = checkpoint.read(prefix)
        status.expect_partial()  # metadata and objects checked by _check_layout
        status.assert_existing_objects_matched()
    except Exception as err:
        raise ValueError(
            f"Restoring the checkpoint at `{name}` failed ({type(err).__name__}: {err}). "
            f"{v.received(name, path)}"
        ) from err
