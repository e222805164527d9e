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

Writes are atomic (:func:`gradfit.checkpoint.io.write_checkpoint`). This
module imports nothing from ``gradfit.training``: a trainer is anything
with ``checkpoint_items()``, ``task`` and ``model``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v
from gradfit.checkpoint.io import (
    VALUE_SUFFIX,
    check_layout,
    expected_layout,
    layout,
    open_reader,
    read_into,
    resolve,
    write_checkpoint,
    write_elsewhere,
)
from gradfit.models import Model

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


# -- arguments ---------------------------------------------------------------


def _check_trainer(trainer: Any) -> Any:
    """A gradfit Trainer, recognised by what this module uses of it (no import of the class)."""
    if not callable(getattr(trainer, "checkpoint_items", None)) or not hasattr(trainer, "task"):
        raise TypeError(f"`trainer` must be a gradfit Trainer. {v.received('trainer', trainer)}")
    return trainer


def _rule(trainer: Any) -> Any:
    """The single update rule of a trainer's task, if it has one."""
    return getattr(trainer.task, "update_rule", None)


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
    key = f"{_META}/{name}{VALUE_SUFFIX}"
    return reader.get_tensor(key) if reader.has_tensor(key) else None


def _saved_input_shape(reader: Any) -> tuple[int | None, ...] | None:
    dims = _meta(reader, "input_shape")
    return None if dims is None else tuple(None if d < 0 else int(d) for d in dims)


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


# -- public API --------------------------------------------------------------


def trainer_checkpoint(trainer: Any) -> tf.train.Checkpoint:
    """Returns a ``tf.train.Checkpoint`` of the trainer's state.

    It tracks the task's objects (for a supervised task ``model`` and
    ``update_rule``: slots, ``iterations``, learning rate; ``task`` for a
    task of your own) and ``generator`` (the shuffling order's source). Use it to
    combine a trainer's state with other objects in one checkpoint, or with
    a ``tf.train.CheckpointManager``; :func:`save_trainer` writes it
    atomically with the metadata :func:`restore_trainer` uses to build a
    fresh trainer's model first.

    Args:
        trainer: A :class:`gradfit.Trainer`.
    """
    trainer = _check_trainer(trainer)
    return tf.train.Checkpoint(**trainer.checkpoint_items())


def _scope(trainer: Any) -> Any:
    """The scope ``trainer``'s task variables are made in (its strategy's), if any."""
    replicas = getattr(trainer, "replicas", None)
    return contextlib.nullcontext() if replicas is None else replicas.scope(trainer.task)


def save_trainer(trainer: Any, path: str | os.PathLike[str], *, update_latest: bool = False) -> str:
    """Saves the trainer's model, update-rule state and shuffling state to ``path``.

    The write is atomic (see :func:`write_checkpoint`). ``History`` and
    callbacks are not saved. On a multi-worker job only the chief writes.

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
    prefix = v.path("path", path)
    update_latest = v.boolean("update_latest", update_latest)
    checkpoint = trainer_checkpoint(trainer)
    rule = _rule(trainer)
    setattr(checkpoint, _META, _Metadata(trainer.model, rule_built=getattr(rule, "built", None)))
    replicas = getattr(trainer, "replicas", None)
    if replicas is not None and not replicas.writes:
        # A multi-worker job's other workers: only the chief writes, but every worker reads
        # the state (a Keras metric's is a collective), so they write it where nobody looks.
        write_elsewhere(checkpoint)
        return os.fspath(prefix)
    return write_checkpoint(checkpoint, prefix, update_latest=update_latest)


def save_model(model: Model, path: str | os.PathLike[str], *, update_latest: bool = False) -> str:
    """Saves the model's variables (and its input shape) to ``path``, atomically.

    This is what ``ModelCheckpoint`` writes; :func:`restore_model` reads it.
    ``path``, ``update_latest`` and the result are as for :func:`save_trainer`.

    Args:
        model: A :class:`gradfit.Model`.
        path: The checkpoint's prefix.
        update_latest: Also point the directory's ``checkpoint`` file at ``path``.
    """
    model = _check_module(model)
    prefix = v.path("path", path)
    update_latest = v.boolean("update_latest", update_latest)
    checkpoint = tf.train.Checkpoint(model=model, **{_META: _Metadata(model)})
    return write_checkpoint(checkpoint, prefix, update_latest=update_latest)


def restore_trainer(trainer: Any, path: str | os.PathLike[str]) -> None:
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
    prefix = resolve(path)
    reader = open_reader(prefix, path)
    keep = tuple(f"{name}/" for name in trainer.checkpoint_items())
    saved = layout(reader, keep)
    if not any(k.startswith("generator/") for k in saved):
        raise ValueError(
            "The checkpoint at `path` holds no trainer state (no update rule or shuffling "
            "generator), only a model's variables, as ModelCheckpoint(save_weights_only=True) "
            f"writes: use gradfit.saving.restore_model. {v.received('path', path)}"
        )
    with _scope(trainer):  # (a trainer's strategy's: where its task's variables are made)
        _build_model(trainer.model, reader, path)
        rule = _rule(trainer)
        if rule is not None and _meta(reader, "rule_built") and not rule.built:
            variables = list(trainer.model.trainable_variables)
            if variables:
                rule.build(variables)  # as fit builds it: the model's trainable variables
    checkpoint = trainer_checkpoint(trainer)
    check_layout(saved, expected_layout(checkpoint, keep), "trainer", path)
    read_into(checkpoint, prefix, path)


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
    prefix = resolve(path)
    reader = open_reader(prefix, path)
    keep = ("model/",)
    saved = layout(reader, keep)
    _build_model(model, reader, path)
    checkpoint = tf.train.Checkpoint(model=model)
    check_layout(saved, expected_layout(checkpoint, keep), "model", path)
    read_into(checkpoint, prefix, path)


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
    target = v.path("path", path)
    if input_signature is None and getattr(model, "input_signature", None) is not None:
        specs = [model.input_signature]  # a KerasModel's, nested like its inputs
    elif input_signature is None:
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
