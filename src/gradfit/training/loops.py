"""The compiled inner loops: many training steps per call of one ``tf.function``.

In-memory data (``ArrayData``) is already on the device as a tuple of
tensors with the examples first (features, then targets when there are
any). Per epoch the outer loop draws a permutation in-graph
(:func:`permutation`) or uses the natural order; shuffled rows are copied
into the epoch's order a bounded block at a time (:func:`gather_block`). It
then calls :func:`array_loop` for chunks of ``steps_per_execution`` full
batches: a ``tf.while_loop`` that slices each batch with static shapes,
runs the step, and writes the step's logs into a ``[steps, k]`` buffer that
comes back as one tensor. A ragged last batch has its own static-shape step
function, called once per epoch, so no function is ever retraced during a
fit, and XLA can compile them all.

A ``tf.data`` input is consumed inside :func:`dataset_loop`'s while loop
(``get_next_as_optional``), up to ``steps_per_execution`` batches per call;
the step itself is XLA-compiled when asked, the iterator loop is not (XLA
cannot run iterator ops).

A step here is ``step(batch) -> logs``: a ``[k]`` vector (see
:mod:`gradfit.training.step`); ``pack`` turns the sliced tensors into the
batch the task sees (``x``, or ``(x, y)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from gradfit._autograph import function

Step = Callable[[Any], tf.Tensor]
"""``step(batch) -> logs``: one training step, returning a ``[k]`` vector."""

Pack = Callable[[Sequence[tf.Tensor]], Any]
"""``pack(tensors) -> batch``: the batch structure a task's step takes, from sliced arrays."""


def permutation(generator: tf.random.Generator, n: int) -> tf.Tensor:
    """An epoch's order of ``n`` examples, drawn from ``generator`` (O(n)).

    One draw of ``generator.make_seeds(1)`` seeds a stateless shuffle
    (an argsort of uniforms costs 8x more).
    """
    seed = generator.make_seeds(1)[:, 0]
    return tf.random.experimental.stateless_shuffle(tf.range(n), seed=seed)


def permutation_function(generator: tf.random.Generator, n: int) -> Any:
    """:func:`permutation` as a ``tf.function`` of no arguments."""

    def permute() -> tf.Tensor:
        return permutation(generator, n)

    return function(permute)


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _rows(x: tf.Tensor, order: tf.Tensor | None, start: Any, size: int) -> tf.Tensor:
    """Rows ``order[start:start + size]`` of ``x`` (or ``x[start:start + size]``), static size."""
    if order is None:
        rest = x.shape[1:].as_list()
        return tf.slice(x, [start] + [0] * len(rest), [size, *rest])
    return tf.gather(x, tf.slice(order, [start], [size]))


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _batch(
    arrays: Sequence[tf.Tensor], order: tf.Tensor | None, start: Any, size: int
) -> list[tf.Tensor]:
    """The same rows of every array (see :func:`_rows`)."""
    return [_rows(x, order, start, size) for x in arrays]


BLOCK_BYTES = 16 * 2**20
"""The most bytes of shuffled examples (features and targets) gathered at once."""

GATHER_IN_LOOP_BYTES = 16 * 1024
"""Shuffled batches of at least this many bytes are gathered inside the loop.

Copying shuffled rows into blocks first (:func:`gather_block`) saves XLA's
CPU loop a per-step overhead (1-3 us) but costs a write and a read of every
row; for big batches the traffic costs more. Measured with XLA on the 2-core
development machine, per step, blocks against gathering in the loop: 256-byte
batches (linear regression, batch 32) 0.2-0.3 us against 0.8-1.2 us; 4 KB
batches (64 values a row, batch 16, MLP with 32 hidden units) 9.5 us against
16.3 us; 16 KB (batch 64) 25-31 us against 24-24.5 us; 64 KB (batch 256)
87-92 us against 93-114 us; 401 KB batches (MLP 784-256-256-10, batch 128)
1,256-1,306 us against 1,147-1,212 us. Above a few KB it is close.
"""


def block_steps(batch_size: int, row_bytes: int, full_steps: int) -> int:
    """How many shuffled batches :func:`gather_block` copies per call.

    As many as fit in ``BLOCK_BYTES`` (at least one, at most the epoch's
    ``full_steps``), so the copy adds a bounded amount of memory.
    """
    return max(1, min(full_steps, BLOCK_BYTES // max(1, batch_size * row_bytes)))


def gather_block(batch_size: int, block: int) -> Callable[..., tuple[tf.Tensor, ...]]:
    """Returns ``gather(arrays, order, first_step) -> arrays_block``.

    The block holds batches ``first_step, ..., first_step + block - 1`` of the
    epoch's order, rows ``order[first_step * batch_size:]``, in order, so
    :func:`array_loop` then slices them like unshuffled data.

    Why a separate call: gathering inside the training loop made XLA's CPU
    loop slow and erratic (measured with XLA on the 2-core development
    machine, linear regression, 3,125 steps of 32, fresh processes: 1.0 to
    5.4 ms an epoch depending on the block size and on whether the step
    checks its gradients for non-finite values), while gathering the epoch
    in one call and slicing it in order takes 0.67-0.93 ms in all cases.
    """

    def gather(
        arrays: tuple[tf.Tensor, ...], order: tf.Tensor, first_step: tf.Tensor
    ) -> tuple[tf.Tensor, ...]:
        rows = tf.slice(order, [first_step * batch_size], [block * batch_size])
        return tuple(tf.gather(x, rows) for x in arrays)

    return gather


def array_loop(
    step: Step,
    pack: Pack,
    batch_size: int,
    max_steps: int,
    num_logs: int,
    log_dtype: tf.DType,
    *,
    gather: bool = False,
) -> Callable[..., tf.Tensor]:
    """Returns ``loop(arrays, order, first_step, num_steps) -> logs[max_steps, k]``.

    Runs the batches of rows ``s * batch_size, ..., (s + 1) * batch_size - 1``
    of every array for ``s = first_step, ..., first_step + num_steps - 1``
    (with ``gather``, the rows ``order[s * batch_size:(s + 1) * batch_size]``
    instead; else ``order`` is unused), at most ``max_steps`` per call; row
    ``i`` of ``logs`` holds the logs of step ``first_step + i`` (rows past
    ``num_steps`` are zero). ``first_step`` and ``num_steps`` are tensors, so
    changing them never retraces. Shuffled data either comes in blocks
    already in the epoch's order (:func:`gather_block`) or is gathered batch
    by batch (see ``GATHER_IN_LOOP_BYTES``).

    The loop never stops early: a loop condition that depends on the step's
    output makes XLA's loop several times slower per step, so the epoch
    runner finds non-finite steps in the returned logs instead (and rolls
    back, see :mod:`gradfit.training.epoch`).
    """

    def run_step(arrays: Sequence[tf.Tensor], order: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
        rows = order if gather else None
        return step(pack(_batch(arrays, rows, s * batch_size, batch_size)))

    if max_steps == 1:
        # One step per call (full-batch descent, say): a loop would only add tracing time.
        def single(
            arrays: tuple[tf.Tensor, ...],
            order: tf.Tensor,
            first_step: tf.Tensor,
            num_steps: tf.Tensor,
        ) -> tf.Tensor:
            return run_step(arrays, order, first_step)[None]

        return single

    def loop(
        arrays: tuple[tf.Tensor, ...], order: tf.Tensor, first_step: tf.Tensor, num_steps: tf.Tensor
    ) -> tf.Tensor:
        def body(i: tf.Tensor, logs: Any) -> tuple[tf.Tensor, Any]:
            return i + 1, logs.write(i, run_step(arrays, order, first_step + i))

        # A fixed-size TensorArray: O(1) per write, in graph mode and under XLA alike.
        logs = tf.TensorArray(log_dtype, size=max_steps, element_shape=[num_logs])
        _, logs = tf.while_loop(
            lambda i, _: i < num_steps, body, (tf.constant(0), logs), maximum_iterations=max_steps
        )
        return logs.stack()

    return loop


def eval_loop(
    step: Step, pack: Pack, batch_size: int, num_logs: int, log_dtype: tf.DType
) -> Callable[[tuple[tf.Tensor, ...]], tf.Tensor]:
    """Returns ``loop(arrays) -> logs[steps, k]``: ``step`` on each full batch of the arrays.

    For evaluation: one call covers every full batch of in-memory data
    (``step`` changes no variable), instead of one call per batch. The
    number of batches comes from the arrays' length at run time, so one
    trace serves data of any size; ``step`` gets batches of static shape.
    """

    def loop(arrays: tuple[tf.Tensor, ...]) -> tf.Tensor:
        steps = tf.shape(arrays[0])[0] // batch_size

        def body(i: tf.Tensor, logs: Any) -> tuple[tf.Tensor, Any]:
            out = step(pack(_batch(arrays, None, i * batch_size, batch_size)))
            return i + 1, logs.write(i, out)

        logs = tf.TensorArray(log_dtype, size=steps, element_shape=[num_logs])
        _, logs = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), logs))
        return logs.stack()

    return loop


def array_last_step(
    step: Step, pack: Pack, start: int, size: int, *, shuffled: bool
) -> Callable[..., Any]:
    """Returns ``last(arrays, order) -> logs[k]``: the ragged batch, ``size`` rows at ``start``."""

    def last(arrays: tuple[tf.Tensor, ...], order: tf.Tensor) -> tf.Tensor:
        rows = order if shuffled else None
        return step(pack(_batch(arrays, rows, start, size)))

    return last


def _next_run(out: tf.Tensor, run: tf.Tensor, flag: int | None) -> tf.Tensor:
    """Consecutive non-finite steps so far: ``run + 1`` if this step's flag is set, else 0."""
    if flag is None:
        return run
    return tf.where(out[flag] > 0, run + 1, tf.zeros_like(run))


def batch_rows(batch: Any) -> tf.Tensor:
    """The number of examples in ``batch``: the first dimension of its first tensor."""
    return tf.shape(tf.nest.flatten(batch)[0])[0]


def dataset_loop(
    step: Step, num_logs: int, log_dtype: tf.DType, *, flag: int | None = None, limit: int = 1
) -> Callable[..., Any]:
    """Returns ``loop(iterator, num_steps, run) -> (logs[n, k], sizes[n], run, exhausted)``.

    Consumes up to ``num_steps`` batches from ``iterator`` inside the graph
    and hands each element to ``step`` as it is; ``exhausted`` says the
    iterator ran out. With a non-finite ``flag`` column, ``run`` counts the
    non-finite steps in a row (carried over from the previous call) and the
    loop stops when it reaches ``limit``.
    """

    def loop(
        iterator: Any, num_steps: tf.Tensor, run: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        logs = tf.TensorArray(log_dtype, size=0, dynamic_size=True, element_shape=[num_logs])
        sizes = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[])

        def more(i: tf.Tensor, run: tf.Tensor, exhausted: tf.Tensor, *_: Any) -> tf.Tensor:
            return tf.logical_and(tf.logical_and(i < num_steps, run < limit), ~exhausted)

        def body(i: tf.Tensor, run: tf.Tensor, exhausted: tf.Tensor, logs: Any, sizes: Any) -> Any:
            element = iterator.get_next_as_optional()

            def consume() -> tuple[Any, ...]:
                batch = element.get_value()
                out = step(batch)
                written = (logs.write(i, out), sizes.write(i, batch_rows(batch)))
                return (i + 1, _next_run(out, run, flag), tf.constant(False), *written)

            def stop() -> tuple[Any, ...]:
                return i, run, tf.constant(True), logs, sizes

            return tf.cond(element.has_value(), consume, stop)

        start = (tf.constant(0), run, tf.constant(False), logs, sizes)
        _, run, exhausted, logs, sizes = tf.while_loop(more, body, start)
        return logs.stack(), sizes.stack(), run, exhausted

    return loop
