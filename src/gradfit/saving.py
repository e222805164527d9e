"""Saving: checkpoints of a whole trainer or of a model, and SavedModel export.

Three kinds of files:

* A **trainer checkpoint** (:func:`save_trainer`, :func:`restore_trainer`)
  holds everything a fit continues from: the model's variables, the update
  rule's state (slots, ``iterations``, learning rate) and the state of the
  trainer's shuffling generator. A fresh trainer of the same structure that
  restores it and goes on fitting computes bitwise the same variables as a
  trainer that never stopped.
* A **model checkpoint** (written by ``ModelCheckpoint``; read with
  :func:`restore_model`) holds the model's variables only.
* A **SavedModel** (:func:`export_model`) holds the model's variables and its
  compiled ``__call__``; ``tf.saved_model.load`` serves it without gradfit.

Checkpoints are ``tf.train.Checkpoint`` files (``path.index`` and
``path.data-00000-of-00001``) with the objects under the names ``model``,
``update_rule`` and ``generator``, so plain TensorFlow reads them too::

    tf.train.Checkpoint(model=model).read(path).expect_partial()

They also record the model's per-example input shape, so that restoring
into a model that creates its variables lazily builds it first.

Writes are atomic (:func:`write_checkpoint`): the checkpoint is written
under a temporary name in the same directory and then moved into place,
index last, so a process killed during a save never leaves a corrupt
checkpoint at the final name.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf
from google.protobuf import text_encoding

from gradfit import _validation as v
from gradfit.models import Model

if TYPE_CHECKING:
    from gradfit.trainer import Trainer

__all__ = [
    "export_model",
    "restore_model",
    "restore_trainer",
    "save_model",
    "save_trainer",
    "trainer_checkpoint",
    "write_checkpoint",
]

_META = "gradfit"
"""The name of the checkpoint's metadata object (input shape, whether the rule was built)."""

_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
_TMP_TAG = ".gradfit-tmp-"
_STATE_FILE = "checkpoint"  # the name tf.train.latest_checkpoint reads
_SHARD = re.compile(r"\.data-\d{5}-of-\d{5}")


# -- arguments ---------------------------------------------------------------


def _check_path(name: str, path: Any) -> str:
    text = os.fspath(path) if isinstance(path, str | os.PathLike) else None
    if not isinstance(text, str):
        raise TypeError(f"`{name}` must be a str or an os.PathLike path. {v.received(name, path)}")
    if not text:
        raise ValueError(f"`{name}` must be a non-empty path. {v.received(name, path)}")
    return text


def _check_trainer(trainer: Any) -> Trainer:
    from gradfit.trainer import Trainer  # here: the trainer module imports the callbacks

    if not isinstance(trainer, Trainer):
        raise TypeError(f"`trainer` must be a gradfit Trainer. {v.received('trainer', trainer)}")
    return trainer


def _check_module(model: Any) -> tf.Module:
    if not isinstance(model, tf.Module):
        raise TypeError(
            f"`model` must be a gradfit Model (a tf.Module). {v.received('model', model)}"
        )
    return model


# -- metadata ----------------------------------------------------------------


class _Metadata(tf.Module):
    """What a checkpoint records besides variables: the input shape, whether the rule was built.

    The per-example input shape is stored with ``-1`` for unknown dimensions,
    and only when the model knows it.
    """

    def __init__(self, model: tf.Module, rule_built: bool | None = None) -> None:
        super().__init__(name=_META)
        self.version = tf.Variable(1, dtype=tf.int64, trainable=False, name="version")
        shape = model.input_shape if isinstance(model, Model) else None
        if shape is not None:
            dims = np.array([-1 if d is None else d for d in shape], np.int64)
            self.input_shape = tf.Variable(dims, trainable=False, name="input_shape")
        if rule_built is not None:
            self.rule_built = tf.Variable(rule_built, trainable=False, name="rule_built")


def _meta(reader: Any, name: str) -> Any:
    key = f"{_META}/{name}{_VALUE}"
    return reader.get_tensor(key) if reader.has_tensor(key) else None


def _saved_input_shape(reader: Any) -> tuple[int | None, ...] | None:
    dims = _meta(reader, "input_shape")
    return None if dims is None else tuple(None if d < 0 else int(d) for d in dims)


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
    with open(staging, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(staging, target)


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


def _discard(name: str) -> None:
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
            _discard(name)


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
    ``tf.train.latest_checkpoint`` reads) is then pointed at ``path``,
    atomically. While an existing checkpoint at ``path`` is being replaced
    it points at the complete temporary copy, so the latest checkpoint it
    names is complete at every moment.

    Args:
        checkpoint: The ``tf.train.Checkpoint`` to write.
        path: The checkpoint's prefix: ``path.index`` and
            ``path.data-00000-of-00001`` are written.
        update_latest: Also update the directory's ``checkpoint`` file.

    Returns:
        ``path``, as a string.
    """
    prefix = _check_path("path", path)
    if not isinstance(checkpoint, tf.train.Checkpoint):
        raise TypeError(
            f"`checkpoint` must be a tf.train.Checkpoint. {v.received('checkpoint', checkpoint)}"
        )
    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(prefix)
    _remove_leftovers(directory, base)
    staging = os.path.join(directory, f".{base}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    pointed = False  # whether the `checkpoint` file names the staging copy
    try:
        checkpoint.write(staging)
        new = _files(staging)
        replacing = os.path.exists(prefix + ".index")
        others = [p for p in _listed(directory) if p != os.path.abspath(prefix)]
        if update_latest and replacing:
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
            _discard(staging + "_temp")
    if update_latest:
        _remove_leftovers(directory, base)  # a copy an interrupted save left as the latest
    return prefix


# -- reading -----------------------------------------------------------------


def _resolve(path: Any) -> str:
    """The checkpoint prefix ``path`` names (a directory names its latest checkpoint)."""
    text = _check_path("path", path)
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


def _reader(prefix: str, path: Any) -> Any:
    try:
        return tf.train.load_checkpoint(prefix)
    except Exception as err:  # DataLossError, InvalidArgumentError, ...
        raise ValueError(
            f"`path` is not a readable checkpoint ({type(err).__name__}: {err}). "
            f"{v.received('path', path)}"
        ) from err


_Layout = dict[str, tuple[tuple[int, ...], str]]
"""Checkpoint keys of variables -> (shape, dtype name)."""


def _layout(reader: Any, keep: tuple[str, ...]) -> _Layout:
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    return {
        key: (tuple(shape), dtypes[key].name)
        for key, shape in shapes.items()
        if key.endswith(_VALUE) and key.startswith(keep)
    }


def _expected_layout(checkpoint: tf.train.Checkpoint, keep: tuple[str, ...]) -> _Layout:
    """The layout ``checkpoint`` would have if written now.

    TensorFlow's own serialisation names the keys, so they match exactly. The
    probe is written to TensorFlow's in-memory file system (to a temporary
    directory where that is missing) and dropped.
    """
    root = f"ram://gradfit-{uuid.uuid4().hex}"
    try:
        prefix = checkpoint.write(f"{root}/probe")
        return _layout(tf.compat.v1.train.NewCheckpointReader(prefix), keep)
    except tf.errors.OpError:
        with tempfile.TemporaryDirectory(prefix="gradfit-") as directory:
            prefix = checkpoint.write(os.path.join(directory, "probe"))
            return _layout(tf.train.load_checkpoint(prefix), keep)
    finally:
        with contextlib.suppress(Exception):
            for name in tf.io.gfile.glob(f"{root}/*"):
                tf.io.gfile.remove(name)


def _readable(key: str) -> str:
    """``update_rule/_slots/0.Sm/.ATTRIBUTES/VARIABLE_VALUE`` -> ``update_rule/_slots/0/m``."""
    key = key[: -len(_VALUE)] if key.endswith(_VALUE) else key
    return re.sub(r"\.(.)", lambda m: "/" if m.group(1) == "S" else m.group(1), key)


def _describe(entry: tuple[tuple[int, ...], str]) -> str:
    return f"shape {list(entry[0])}, {entry[1]}"


def _check_layout(saved: _Layout, expected: _Layout, what: str, path: Any) -> None:
    """Raises a ValueError listing how the checkpoint and the objects differ, if they do."""
    problems = [
        f"the checkpoint has {_readable(k)} ({_describe(saved[k])}), which the {what} lacks"
        for k in sorted(saved.keys() - expected.keys())
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
            f"The checkpoint at `path` does not match the {what}'s structure: {shown}{more}. "
            f"Create the {what} as it was when saved. {v.received('path', path)}"
        )


def _build_model(model: tf.Module, reader: Any, path: Any) -> None:
    """Builds a lazily built model for the checkpoint's input shape, or checks it against it."""
    shape = _saved_input_shape(reader)
    if shape is None or not isinstance(model, Model):
        return
    try:
        model.maybe_build(tf.TensorShape([None, *shape]))
    except Exception as err:
        if model.input_shape is not None:
            detail = f"but the model is built for per-example shape {model.input_shape}"
        else:
            detail = f"but building the model for it failed ({type(err).__name__}: {err})"
        raise ValueError(
            f"The checkpoint at `path` holds a model built for inputs of per-example shape "
            f"{shape}, {detail}. {v.received('path', path)}"
        ) from err


def _read(checkpoint: tf.train.Checkpoint, prefix: str, path: Any) -> None:
    try:
        status = checkpoint.read(prefix)
        status.expect_partial()  # metadata and objects checked by _check_layout
        status.assert_existing_objects_matched()
    except Exception as err:
        raise ValueError(
            f"Restoring the checkpoint at `path` failed ({type(err).__name__}: {err}). "
            f"{v.received('path', path)}"
        ) from err


# -- public API --------------------------------------------------------------


def trainer_checkpoint(trainer: Trainer) -> tf.train.Checkpoint:
    """Returns a ``tf.train.Checkpoint`` of the trainer's state.

    It tracks ``model``, ``update_rule`` (slots, ``iterations``, learning
    rate) and ``generator`` (the shuffling order's source). Use it to
    combine a trainer's state with other objects in one checkpoint, or with
    a ``tf.train.CheckpointManager``; :func:`save_trainer` writes it
    atomically with the metadata :func:`restore_trainer` uses to build a
    fresh trainer's model first.

    Args:
        trainer: A :class:`gradfit.Trainer`.
    """
    trainer = _check_trainer(trainer)
    return tf.train.Checkpoint(
        model=trainer.model, update_rule=trainer.update_rule, generator=trainer.generator
    )


def save_trainer(
    trainer: Trainer, path: str | os.PathLike[str], *, update_latest: bool = False
) -> str:
    """Saves the trainer's model, update-rule state and shuffling state to ``path``.

    The write is atomic (see :func:`write_checkpoint`). ``History`` and
    callbacks are not saved.

    Args:
        trainer: A :class:`gradfit.Trainer`.
        path: The checkpoint's prefix; ``path.index`` and
            ``path.data-00000-of-00001`` are written (the directory is
            created if needed).
        update_latest: Also point the directory's ``checkpoint`` file (what
            ``tf.train.latest_checkpoint`` reads) at ``path``.

    Returns:
        ``path``, as a string.

    Example::

        trainer.fit(x, y, epochs=5, seed=0)
        gf.saving.save_trainer(trainer, "run/trainer")
    """
    trainer = _check_trainer(trainer)
    prefix = _check_path("path", path)
    update_latest = v.boolean("update_latest", update_latest)
    checkpoint = trainer_checkpoint(trainer)
    setattr(checkpoint, _META, _Metadata(trainer.model, rule_built=trainer.update_rule.built))
    return write_checkpoint(checkpoint, prefix, update_latest=update_latest)


def save_model(model: Model, path: str | os.PathLike[str], *, update_latest: bool = False) -> str:
    """Saves the model's variables (and its input shape) to ``path``, atomically.

    This is what ``ModelCheckpoint`` writes; :func:`restore_model` reads it.

    Args:
        model: A :class:`gradfit.Model`.
        path: The checkpoint's prefix; ``path.index`` and
            ``path.data-00000-of-00001`` are written (the directory is
            created if needed).
        update_latest: Also point the directory's ``checkpoint`` file (what
            ``tf.train.latest_checkpoint`` reads) at ``path``.

    Returns:
        ``path``, as a string.
    """
    model = _check_module(model)
    prefix = _check_path("path", path)
    update_latest = v.boolean("update_latest", update_latest)
    checkpoint = tf.train.Checkpoint(model=model, **{_META: _Metadata(model)})
    return write_checkpoint(checkpoint, prefix, update_latest=update_latest)


def restore_trainer(trainer: Trainer, path: str | os.PathLike[str]) -> None:
    """Restores a checkpoint written by :func:`save_trainer` into ``trainer``.

    A fresh trainer made the same way as the saved one (same model, rule
    and transforms; variables not yet created) is built first: the model
    for the saved input shape, the rule's state for the model's variables.
    Continuing to fit after the restore is then bitwise the same as never
    having stopped: variables, slots, ``iterations`` and the shuffling
    order all carry on.

    The checkpoint's layout is compared with the trainer's before anything
    is assigned, so a mismatch changes no variable's value (a fresh model
    and rule may be left built, with their initial values).

    Args:
        trainer: A :class:`gradfit.Trainer`.
        path: A checkpoint prefix, or a directory whose latest checkpoint
            (named by its ``checkpoint`` file) is restored.

    Raises:
        FileNotFoundError: If there is no checkpoint at ``path``.
        ValueError: If the checkpoint cannot be read, holds only a model's
            variables, or does not match the trainer's structure (missing
            or extra variables, other shapes or dtypes).
    """
    trainer = _check_trainer(trainer)
    prefix = _resolve(path)
    reader = _reader(prefix, path)
    keep = ("model/", "update_rule/", "generator/")
    saved = _layout(reader, keep)
    if not any(k.startswith("generator/") for k in saved):
        raise ValueError(
            "The checkpoint at `path` holds no trainer state (no update rule or shuffling "
            "generator), only a model's variables, as ModelCheckpoint(save_weights_only=True) "
            f"writes: use gradfit.saving.restore_model. {v.received('path', path)}"
        )
    _build_model(trainer.model, reader, path)
    rule = trainer.update_rule
    if _meta(reader, "rule_built") and not rule.built:
        variables = list(trainer.model.trainable_variables)
        if variables:
            rule.build(variables)  # as fit builds it: the model's trainable variables, in order
    checkpoint = trainer_checkpoint(trainer)
    _check_layout(saved, _expected_layout(checkpoint, keep), "trainer", path)
    _read(checkpoint, prefix, path)


def restore_model(model: Model, path: str | os.PathLike[str]) -> None:
    """Restores a model's variables from a model or trainer checkpoint.

    Reads what ``ModelCheckpoint`` or :func:`save_trainer` wrote (of a
    trainer checkpoint, only the model's part). A model that creates its
    variables lazily is built for the saved input shape first. The layout
    is checked before anything is assigned, so a mismatch changes nothing.

    Args:
        model: A :class:`gradfit.Model` made the same way as the saved one.
        path: A checkpoint prefix, or a directory whose latest checkpoint
            (named by its ``checkpoint`` file) is restored.

    Raises:
        FileNotFoundError: If there is no checkpoint at ``path``.
        ValueError: If the checkpoint cannot be read or does not match the
            model's structure.

    Example::

        model = gf.MLP((64,), seed=0)
        gf.saving.restore_model(model, checkpoint.best_path)
    """
    model = _check_module(model)
    prefix = _resolve(path)
    reader = _reader(prefix, path)
    keep = ("model/",)
    saved = _layout(reader, keep)
    _build_model(model, reader, path)
    checkpoint = tf.train.Checkpoint(model=model)
    _check_layout(saved, _expected_layout(checkpoint, keep), "model", path)
    _read(checkpoint, prefix, path)


class _Exported(tf.Module):
    """The exported object: the model (its variables) and a compiled ``__call__``."""

    def __init__(self, model: tf.Module, function: Any) -> None:
        super().__init__(name="exported")
        self.model = model
        self.__call__ = function  # restored by tf.saved_model.load as the object's call


def _check_signature(signature: Any) -> list[tf.TensorSpec]:
    specs = [signature] if isinstance(signature, tf.TensorSpec) else signature
    if (
        isinstance(specs, str | bytes)
        or not isinstance(specs, Sequence)
        or len(specs) != 1
        or not isinstance(specs[0], tf.TensorSpec)
    ):
        raise TypeError(
            "`input_signature` must be a tf.TensorSpec of the model's input batch (or a "
            f"one-element list of it). {v.received('input_signature', signature)}"
        )
    return list(specs)


def export_model(
    model: Model,
    path: str | os.PathLike[str],
    input_signature: tf.TensorSpec | Sequence[tf.TensorSpec] | None = None,
) -> str:
    """Exports ``model`` as a SavedModel that serves it without gradfit.

    The SavedModel's root is callable (``loaded(x)``), has the
    ``serving_default`` signature (output ``"output_0"``), and holds the
    model's variables under ``loaded.model``. Both run the graph of the
    model's compiled call, so they predict bitwise what
    ``Trainer.predict`` (without XLA) and ``tf.function(model)`` predict.
    An eager ``model(x)`` may differ in the last bit, where TensorFlow fuses
    ops in graphs (oneDNN on CPUs).

    Args:
        model: A built :class:`gradfit.Model` (fitted, or called on a batch).
        path: The SavedModel's directory.
        input_signature: The input batch's ``tf.TensorSpec``. By default it
            is inferred from the built model: shape ``[None, *input_shape]``
            and the model's dtype, named ``"x"``.

    Returns:
        ``path``, as a string.

    Example::

        gf.saving.export_model(trainer.model, "export/linear")
        loaded = tf.saved_model.load("export/linear")
        loaded(tf.constant([1.0, 2.0]))
    """
    model = _check_module(model)
    if not callable(model):
        raise TypeError(f"`model` must be callable. {v.received('model', model)}")
    target = _check_path("path", path)
    if input_signature is None:
        shape = model.input_shape if isinstance(model, Model) else None
        if shape is None:
            raise ValueError(
                "`model` has not been built, so its input shape is unknown: fit it, call it on "
                f"a batch, or pass `input_signature`. {v.received('model', model)}"
            )
        specs = [tf.TensorSpec([None, *shape], model.dtype, name="x")]
    else:
        specs = _check_signature(input_signature)
    function = tf.function(model.__call__, input_signature=specs)
    tf.saved_model.save(
        _Exported(model, function), target, signatures={"serving_default": function}
    )
    return target
