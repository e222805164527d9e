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
from typing import Any, NoReturn

import tensorflow as tf

from gradfit.training.compile import FunctionCache
from gradfit.training.inputs import Inputs
from gradfit.training.loops import Step
from gradfit.training.task import Task

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

    def steps_done(self) -> int:
        """The steps finished so far, counted across fits (the runner reads it once an epoch)."""
        return int(self.done.numpy())

    def recover(self, since: int) -> int:
        """After a loop call raised: undoes a step cut short.

        Returns:
            The steps done since the count was ``since`` (the call's, when
            ``since`` was read as it began).
        """
        begun, done = int(self.begun.numpy()), int(self.done.numpy())
        if begun > done:  # a step began and did not finish: it may have changed some state
            self._restore()
            self.begun.assign(done, read_value=False)
        return done - since


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


def batch_checker(task: Task, functions: FunctionCache) -> Callable[[Any], None] | None:
    """The task's data checks on one batch, as on in-memory data of its size.

    ``None`` for a task without targets, whose elements are its own.
    """
    if not task.needs_targets:
        return None

    def check(batch: Any) -> None:
        parts = batch if isinstance(batch, tuple) else (batch,)
        Inputs(task, functions).prepare(
            parts[0],
            parts[1] if len(parts) > 1 else None,
            None,
            ("x", "y"),
            sample_weight=parts[2] if len(parts) > 2 else None,
        )

    return check


def batch_at(dataset: tf.data.Dataset, index: int) -> Callable[[], Any]:
    """Reads batch ``index`` of ``dataset`` again, when called."""
    return lambda: next(iter(dataset.skip(index).take(1)))


def fail(
    err: BaseException,
    batch: Callable[[], Any],
    *,
    arg: str,
    where: str,
    kept: str = "",
    check: Callable[[Any], None] | None,
) -> NoReturn:
    """Raises :func:`explain`'s error, chained to ``err`` (``err`` itself if none fits)."""
    explained = explain(err, batch, arg=arg, where=where, kept=kept, check=check)
    if explained is err:
        raise err
    raise explained from err


def explain(
    err: BaseException,
    batch: Callable[[], Any],
    *,
    arg: str,
    where: str,
    kept: str = "",
    check: Callable[[Any], None] | None,
) -> BaseException:
    """The gradfit error for a dataset batch that failed (or ``err`` itself if none fits).

    Args:
        err: What was raised (an ``OpError``, or a ``NonFiniteError``).
        batch: Gives the failing batch (raising as the pipeline does).
        arg: The dataset's argument (``"x"``, ``"validation_data"``).
        where: Where it failed (``"at step 3 of epoch 0"``).
        kept: What the variables hold now, for the message.
        check: Raises a ``ValueError`` for a batch the task cannot take.

    Returns:
        A ``ValueError`` naming ``arg`` and ``where``, to be chained to ``err``.
    """
    tail = f" {kept}" if kept else ""
    try:
        element = batch()
    except Exception as again:  # the pipeline itself fails at this batch
        return ValueError(
            f"`{arg}` (a tf.data.Dataset) could not produce its batch {where}: "
            f"{_summary(again)}.{tail}"
        )
    if check is not None:
        try:
            check(element)
        except (ValueError, TypeError) as problem:
            return ValueError(
                f"`{arg}` (a tf.data.Dataset) gave a bad batch {where}: {problem}{tail}"
            )
    if isinstance(err, _DATA_ERRORS):
        return ValueError(
            f"`{arg}` (a tf.data.Dataset): the step failed on its batch {where}: "
            f"{_summary(err)}.{tail}"
        )
    return err


def kept_after(index: int, epoch: int) -> str:
    """What the variables hold after a training step ``index`` of ``epoch`` failed."""
    if index == 0:
        return "The variables hold their values from before this epoch."
    return f"The variables hold their values after step {index - 1} of epoch {epoch}."
