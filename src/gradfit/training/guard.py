"""Dataset steps that fail: undone in-graph or on the host, then explained naming ``x``.

A ``tf.data`` batch is seen only when the loop reaches it, so what the
probe checks up front for in-memory data (labels in range, shapes that
fit the model) can only fail mid-fit for a dataset: as a raw TensorFlow
error, or, under XLA, as NaN. :class:`StepGuard` keeps, in variables, a
copy of the state from before the running step and counts steps begun and
done, so after an error the step cut short is undone and the steps done
are known; a flagged (non-finite) step is undone from the same copy.
:func:`explain` then reads the failing batch again and lets the task's own
data checks say what is wrong with it, as a ``ValueError`` naming ``x``
(and ``y``) and the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from gradfit.training.loops import Step

_DATA_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.UnknownError)
"""The errors a bad batch gives (a shape or label the ops refuse, a generator raising)."""


class StepGuard:
    """A copy of the state from before the running step, and counts of steps begun and done.

    Args:
        state: Every variable a step may change.
    """

    def __init__(self, state: Sequence[Any]) -> None:
        self.state = list(state)
        with tf.init_scope():
            self.copies = [
                tf.Variable(tf.zeros(var.shape, var.dtype), trainable=False, name="before_step")
                for var in self.state
            ]
            self.begun = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_begun")
            self.done = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_done")

    def wrap(self, step: Step, flag: int | None) -> Step:
        """``step``, guarded: with a non-finite ``flag`` column, a flagged step is undone."""

        def guarded(batch: Any) -> tf.Tensor:
            saved = [
                copy.assign(var, read_value=False)
                for copy, var in zip(self.copies, self.state, strict=True)
            ]
            with tf.control_dependencies(saved):
                begun = self.begun.assign_add(1, read_value=False)
            with tf.control_dependencies([begun]):
                out = step(batch)
            finished: list[Any] = [out]
            if flag is not None:
                finished.append(tf.cond(out[flag] > 0, self._restore, lambda: tf.constant(False)))
            with tf.control_dependencies(finished):
                done = self.done.assign_add(1, read_value=False)
            with tf.control_dependencies([done]):
                return tf.identity(out)

        return guarded

    def _restore(self) -> tf.Tensor:
        for var, copy in zip(self.state, self.copies, strict=True):
            var.assign(copy)  # (Keras optimizers' variables take no read_value)
        return tf.constant(True)

    def reset(self) -> None:
        """Zeroes the counts (before a loop call)."""
        self.begun.assign(0, read_value=False)
        self.done.assign(0, read_value=False)

    def recover(self) -> int:
        """After a loop call raised: undoes a step cut short; returns the steps the call did."""
        begun, done = int(self.begun.numpy()), int(self.done.numpy())
        if begun > done:  # a step began and did not finish: it may have changed some state
            self._restore()
        return done


def _summary(err: BaseException) -> str:
    """The telling line of a TensorFlow error (the Python error a generator raised, say)."""
    text = str(getattr(err, "message", "") or err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line and "Graph execution error" not in line and "Traceback" not in line:
            return line[:300].rstrip(".")
    for line in lines:
        if line.startswith(("Received a label", "Incompatible", "Matrix size", "Input to")):
            return line[:300].rstrip(".")
    return (lines[0] if lines else type(err).__name__)[:300].rstrip(".")


def explain(
    err: BaseException,
    dataset: tf.data.Dataset,
    index: int,
    *,
    epoch: int,
    check: Callable[[Any], None] | None,
) -> BaseException:
    """The gradfit error for a dataset step that failed (or ``err`` itself if none fits).

    Args:
        err: What the loop raised (an ``OpError``, or a ``NonFiniteError``).
        dataset: The training dataset.
        index: The failing batch's position in the epoch (from 0).
        epoch: The epoch.
        check: Raises a ``ValueError`` for a batch the task cannot train on.

    Returns:
        A ``ValueError`` naming ``x`` and the step, chained to ``err`` by the caller.
    """
    where = f"at step {index} of epoch {epoch}"
    kept = f"The variables hold their values after step {index - 1} of epoch {epoch}."
    if index == 0:
        kept = "The variables hold their values from before this epoch."
    try:
        batch = next(iter(dataset.skip(index).take(1)))
    except Exception as again:  # the pipeline itself fails at this batch
        return ValueError(
            f"`x` (a tf.data.Dataset) could not produce its batch {where}: "
            f"{_summary(again)}. {kept}"
        )
    if check is not None:
        try:
            check(batch)
        except (ValueError, TypeError) as problem:
            return ValueError(f"`x` (a tf.data.Dataset) gave a bad batch {where}: {problem} {kept}")
    if isinstance(err, _DATA_ERRORS):
        return ValueError(
            f"`x` (a tf.data.Dataset): the training step failed on its batch {where}: "
            f"{_summary(err)}. {kept}"
        )
    return err
