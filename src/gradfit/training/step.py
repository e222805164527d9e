"""The step wrapper: a Task's ``train_step`` as one ``[k]`` log vector, with a non-finite flag.

The compiled loops (:mod:`gradfit.training.loops`) write one vector per
step. :func:`train_step` turns the task's dict of scalar logs into that
vector, in the order of :class:`Columns`: the logged values, the global
norm of the gradients when a callback asks for it (under a strategy, of
the global batch's gradients), and, when steps are
checked, a last column that is 1 for a step whose logs (or gradients, for
a :class:`~gradfit.training.task.StepLogs`) are not all finite.

Two ways to undo a flagged step: :func:`keeping_state` makes a loop call
also return every state variable's value from before the call (the epoch
runner rolls back and replays the finite steps on the host: no cost inside
the loop), and :class:`gradfit.training.guard.StepGuard` restores the state
in-graph after the flagged step itself (for datasets, whose batches cannot
be replayed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit._autograph import function, traced
from gradfit.distribute import sync
from gradfit.training.loops import Step


class Columns:
    """What a step's log vector holds: visible logs, their weights, the non-finite flag.

    The vector is ``[visible logs..., weights of the weighted logs..., flag]``.
    A log's epoch value is, by its kind (see :meth:`Task.log_kinds`): the
    batch-size-weighted mean of its step values (the default); for a
    ``"weighted"`` log, the mean weighted by the step's own weight column;
    for a ``"running"`` log, its last step's value.

    Args:
        names: The visible logs' names (the task's, then maybe ``grad_norm``).
        flag: Whether a non-finite flag column follows them.
        kinds: The kinds of the logs that are not plain batch means, by name.
    """

    def __init__(
        self, names: list[str], *, flag: bool, kinds: Mapping[str, str] | None = None
    ) -> None:
        kinds = dict(kinds or {})
        check_kinds(names, kinds)
        self.names = names
        self.weighted = [name for name in names if kinds.get(name) == "weighted"]
        self.running = [name for name in names if kinds.get(name) == "running"]
        width = len(names) + len(self.weighted)
        self.flag = width if flag else None  # index of the non-finite flag, if any

    @property
    def width(self) -> int:
        """The vector's length."""
        return len(self.names) + len(self.weighted) + (self.flag is not None)

    def reduce(self, logs: np.ndarray, sizes: np.ndarray) -> dict[str, float]:
        """The epoch values of step logs ``logs[steps, width]`` of batches of ``sizes``.

        In float64; for a single full batch a mean is the step's own value
        exactly (``v * n / n`` is exact in float64 for a float32 ``v``).
        """
        logs = logs.astype(np.float64)
        count = len(self.names)
        means = (logs[:, :count] * sizes[:, None]).sum(axis=0) / sizes.sum()
        values = dict(zip(self.names, (float(m) for m in means), strict=True))
        for i, name in enumerate(self.weighted):
            weights = logs[:, count + i]
            total = weights.sum()
            column = logs[:, self.names.index(name)]
            values[name] = float((column * weights).sum() / total) if total else 0.0
        for name in self.running:
            values[name] = float(logs[-1, self.names.index(name)])
        return values


KINDS = ("mean", "weighted", "running")


def check_kinds(names: Sequence[str], kinds: Mapping[str, str]) -> None:
    """A ``ValueError`` for a log kind that is unknown or names no log."""
    for name, kind in kinds.items():
        if kind not in KINDS or name not in names:
            raise ValueError(
                f"`log_kinds` must map log names to one of {KINDS}; got {name!r}: {kind!r} "
                f"for the logs {list(names)}."
            )


def log_dtype(task: Any) -> tf.DType:
    """float64 logs for a float64 task (``task.dtype``), else float32."""
    return tf.float64 if task.dtype == tf.float64 else tf.float32


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _values(logs: Mapping[str, Any], names: Sequence[str], what: str) -> list[tf.Tensor]:
    """The logged values in ``names``' order; trace-time errors for a wrong structure."""
    if not isinstance(logs, Mapping):
        raise TypeError(
            f"`{what}` must return a dict of scalar logs by name. Received: {type(logs).__name__}"
        )
    if list(logs) != list(names):
        raise ValueError(
            f"`{what}` must return the same log names at every step; expected {list(names)}, "
            f"got {list(logs)}."
        )
    values = []
    for name in names:
        value = tf.convert_to_tensor(logs[name])
        if value.shape.rank != 0 or not (value.dtype.is_floating or value.dtype.is_integer):
            raise ValueError(
                f"`{what}` must return numeric scalars; {name!r} has shape {value.shape} and "
                f"dtype {value.dtype.name}."
            )
        values.append(value)
    return values


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def present_gradients(logs: Mapping[str, Any]) -> list[tf.Tensor]:
    """The dense values of the gradients a :class:`StepLogs` carries (``[]`` for a dict)."""
    return [
        g.values if isinstance(g, tf.IndexedSlices) else g
        for g in getattr(logs, "gradients", ())
        if g is not None
    ]


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _global_norm(logs: Mapping[str, Any], gradients: list[tf.Tensor]) -> tf.Tensor:
    """The gradients' global norm; in a replica's step, the global batch's gradients' norm."""
    if sync.replica_context() is None:
        return tf.linalg.global_norm(gradients)
    given = [g for g in getattr(logs, "gradients", ()) if g is not None]
    return tf.linalg.global_norm(sync.global_gradients(given))


def train_step(task: Any, names: Sequence[str], columns: Columns, dtype: tf.DType) -> Step:
    """Returns ``step(batch) -> logs[k]``: ``task.train_step`` as a vector of ``columns``.

    Args:
        task: The task.
        names: The names ``task.train_step`` logs, in order.
        columns: The vector's layout (``grad_norm`` among its names adds
            the gradients' global norm).
        dtype: The logs' dtype.
    """
    with_norm = "grad_norm" in columns.names and "grad_norm" not in names

    def step(batch: Any) -> tf.Tensor:
        logs = traced(task.train_step)(batch)
        values = _values(logs, names, "train_step")
        outputs = [tf.cast(value, dtype) for value in values]
        gradients = present_gradients(logs)
        if with_norm:
            outputs.append(tf.cast(_global_norm(logs, gradients), dtype))
        outputs += _weights(logs, columns.weighted, dtype, "train_step")
        if columns.flag is not None:
            finite = tf.constant(True)
            for value in [*values, *gradients]:
                if value.dtype.is_floating:
                    finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(value)))
            outputs.append(tf.cast(tf.logical_not(finite), dtype))
        return tf.stack(outputs)

    return step


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _weights(
    logs: Mapping[str, Any], weighted: Sequence[str], dtype: tf.DType, what: str
) -> list[tf.Tensor]:
    """The weight columns of the ``weighted`` logs, from a :class:`StepLogs`' ``weights``."""
    given = getattr(logs, "weights", {})
    missing = [name for name in weighted if name not in given]
    if missing:
        raise ValueError(
            f"`{what}` logs {missing} as 'weighted' (see `log_kinds`) but gives no weight for "
            "them; return StepLogs(..., weights={name: weight})."
        )
    return [tf.cast(given[name], dtype) for name in weighted]


def test_step(task: Any, columns: Columns, dtype: tf.DType) -> Step:
    """Returns ``step(batch) -> logs[k]``: ``task.test_step`` as a vector of ``columns``."""

    def step(batch: Any) -> tf.Tensor:
        logs = traced(task.test_step)(batch)
        values = _values(logs, columns.names, "test_step")
        outputs = [tf.cast(value, dtype) for value in values]
        outputs += _weights(logs, columns.weighted, dtype, "test_step")
        return tf.stack(outputs)

    return step


def predict_step(task: Any) -> Callable[[Any], Any]:
    """Returns ``step(x) -> predictions``: ``task.predict_step`` (a user's converted)."""

    def step(batch: Any) -> Any:
        return traced(task.predict_step)(batch)

    return step


def traced_names(fn: Callable[[Any], Any], spec: Any) -> list[str]:
    """The log names ``fn(batch)`` returns, found by tracing it once (nothing runs)."""
    outputs = function(lambda batch: traced(fn)(batch)).get_concrete_function(spec)
    outputs = outputs.structured_outputs
    if not isinstance(outputs, Mapping):
        raise TypeError(
            "A task's `train_step` and `test_step` must return a dict of scalar logs by name. "
            f"Received: {type(outputs).__name__}"
        )
    return [str(name) for name in outputs]


def keeping_state(fn: Callable[..., Any], state: Sequence[tf.Variable]) -> Callable[..., Any]:
    """``fn`` returning ``(its result, the values of ``state`` before the call)``."""

    def wrapped(*args: Any) -> tuple[Any, list[tf.Tensor]]:
        before = [tf.identity(var) for var in state]
        with tf.control_dependencies(before):
            return fn(*args), before

    return wrapped
