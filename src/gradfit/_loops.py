"""The compiled inner loops: many training steps per call of one ``tf.function``.

In-memory data (``ArrayData``) is already a tensor on the device. Per epoch
the outer loop draws a permutation in-graph (or uses the natural order);
shuffled rows are copied into the epoch's order a bounded block at a time
(:func:`gather_block`). It then calls :func:`array_loop` for chunks of
``steps_per_execution`` full batches: a ``tf.while_loop`` that slices each
batch with static shapes, runs the step, and writes the step's logs into a
``[steps, k]`` buffer that comes back as one tensor. A ragged last batch
has its own static-shape step function, called once per epoch, so no
function is ever retraced during a fit, and XLA can compile them all.

A ``tf.data`` input is consumed inside :func:`dataset_loop`'s while loop
(``get_next_as_optional``), up to ``steps_per_execution`` batches per call;
the step itself is XLA-compiled when asked, the iterator loop is not (XLA
cannot run iterator ops).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import tensorflow as tf

logger = logging.getLogger("gradfit")

Step = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
"""``step(x_batch, y_batch) -> logs``: one training step, returning a ``[k]`` vector."""


# Ops XLA compiles away rather than runs: a graph holding them changes meaning under XLA.
_DROPPED_BY_XLA = frozenset({"Assert", "PrintV2", "Print"})


def _op_types(graph: Any) -> set[str]:
    """Every op type in a FuncGraph, including the functions it calls (while bodies...)."""
    graph_def = graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types.update(node.op for node in function.node_def)
    return types


def xla_obstacle(function: Any, *args: Any) -> str | None:
    """Why ``function`` (a ``jit_compile=True`` tf.function) should not use XLA, or ``None``.

    Looks, without running anything, for ops XLA would silently drop
    (``tf.debugging`` assertions, prints) and lowers the graph to HLO, which
    fails for ops without an XLA kernel.
    """
    concrete = function.get_concrete_function(*args)
    dropped = _op_types(concrete.graph) & _DROPPED_BY_XLA
    if dropped:
        return f"it holds {sorted(dropped)} ops, which XLA would silently drop"
    try:
        function.experimental_get_compiler_ir(*args)(stage="hlo")
    except Exception as err:
        return str(err).strip().splitlines()[0]
    return None


class Compiled:
    """A ``tf.function`` built by ``make(jit)``, with ``jit_compile="auto"`` resolved lazily.

    With ``"auto"`` the first call (or :meth:`resolve`) checks, without
    running anything, whether XLA can compile the graph faithfully (see
    :func:`xla_obstacle`); if not, the function is rebuilt without XLA and a
    note is logged.

    Args:
        make: Builds the ``tf.function`` for a given ``jit_compile`` flag.
        jit_compile: ``True``, ``False`` or ``"auto"``.
        name: What the function does, for the log note.
    """

    def __init__(self, make: Callable[[bool], Any], jit_compile: bool | str, name: str) -> None:
        self._make = make
        self._name = name
        self._pending_auto = jit_compile == "auto"
        self.jit_compile = jit_compile is True or jit_compile == "auto"
        self.function = make(self.jit_compile)

    @property
    def pending(self) -> bool:
        """Whether ``jit_compile="auto"`` is still to be settled."""
        return self._pending_auto

    def resolve(self, *args: Any) -> None:
        """Settles ``"auto"`` by checking the function on ``args`` (no-op otherwise)."""
        if self._pending_auto:
            self.settle(xla_obstacle(self.function, *args))

    def settle(self, reason: str | None) -> None:
        """Settles ``"auto"``: XLA stays on when ``reason`` is ``None``, else it goes off."""
        if not self._pending_auto:
            return
        self._pending_auto = False
        if reason is not None:
            logger.info("jit_compile='auto': not using XLA for the %s: %s", self._name, reason)
            self.jit_compile = False
            self.function = self._make(False)

    def __call__(self, *args: Any) -> Any:
        self.resolve(*args)
        return self.function(*args)

    def get_concrete_function(self, *args: Any) -> Any:
        """The concrete function for ``args`` (tracing it if needed), ``"auto"`` settled.

        Calling it skips the ``tf.function``'s argument matching (about 0.15 ms
        a call); it accepts only arguments of the same specs as ``args``.
        """
        self.resolve(*args)
        return self.function.get_concrete_function(*args)

    def experimental_get_tracing_count(self) -> int:
        """How many times the current ``tf.function`` has been traced."""
        return int(self.function.experimental_get_tracing_count())


def _batch(x: tf.Tensor, order: tf.Tensor | None, start: Any, size: int) -> tf.Tensor:
    """Rows ``order[start:start + size]`` of ``x`` (or ``x[start:start + size]``), static size."""
    if order is None:
        rest = x.shape[1:].as_list()
        return tf.slice(x, [start] + [0] * len(rest), [size, *rest])
    return tf.gather(x, tf.slice(order, [start], [size]))


def _next_run(out: tf.Tensor, run: tf.Tensor, flag: int | None) -> tf.Tensor:
    """Consecutive non-finite steps so far: ``run + 1`` if this step's flag is set, else 0."""
    if flag is None:
        return run
    return tf.where(out[flag] > 0, run + 1, tf.zeros_like(run))


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


def gather_block(batch_size: int, block: int) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """Returns ``gather(x, y, order, first_step) -> (x_block, y_block)``.

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
        x: tf.Tensor, y: tf.Tensor, order: tf.Tensor, first_step: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        rows = tf.slice(order, [first_step * batch_size], [block * batch_size])
        return tf.gather(x, rows), tf.gather(y, rows)

    return gather


def array_loop(
    step: Step,
    batch_size: int,
    max_steps: int,
    num_logs: int,
    log_dtype: tf.DType,
    *,
    gather: bool = False,
) -> Callable[..., tf.Tensor]:
    """Returns ``loop(x, y, order, first_step, num_steps) -> logs[max_steps, k]``.

    Runs the batches ``x[s * batch_size:(s + 1) * batch_size]`` for ``s =
    first_step, ..., first_step + num_steps - 1`` (with ``gather``, the rows
    ``order[s * batch_size:(s + 1) * batch_size]`` of ``x`` instead; else
    ``order`` is unused), at most ``max_steps`` per call; row ``i`` of
    ``logs`` holds the logs of step ``first_step + i`` (rows past
    ``num_steps`` are zero). ``first_step`` and ``num_steps`` are tensors, so
    changing them never retraces. Shuffled data either comes in blocks
    already in the epoch's order (:func:`gather_block`) or is gathered batch
    by batch (see ``GATHER_IN_LOOP_BYTES``).

    The loop never stops early: a loop condition that depends on the step's
    output makes XLA's loop several times slower per step, so the Trainer
    finds non-finite steps in the returned logs instead (and rolls back).
    """

    def run_step(x: tf.Tensor, y: tf.Tensor, order: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
        rows = order if gather else None
        start = s * batch_size
        return step(_batch(x, rows, start, batch_size), _batch(y, rows, start, batch_size))

    if max_steps == 1:
        # One step per call (full-batch descent, say): a loop would only add tracing time.
        def single(
            x: tf.Tensor,
            y: tf.Tensor,
            order: tf.Tensor,
            first_step: tf.Tensor,
            num_steps: tf.Tensor,
        ) -> tf.Tensor:
            return run_step(x, y, order, first_step)[None]

        return single

    def loop(
        x: tf.Tensor, y: tf.Tensor, order: tf.Tensor, first_step: tf.Tensor, num_steps: tf.Tensor
    ) -> tf.Tensor:
        def body(i: tf.Tensor, logs: Any) -> tuple[tf.Tensor, Any]:
            return i + 1, logs.write(i, run_step(x, y, order, first_step + i))

        # A fixed-size TensorArray: O(1) per write, in graph mode and under XLA alike.
        logs = tf.TensorArray(log_dtype, size=max_steps, element_shape=[num_logs])
        _, logs = tf.while_loop(
            lambda i, _: i < num_steps, body, (tf.constant(0), logs), maximum_iterations=max_steps
        )
        return logs.stack()

    return loop


def eval_loop(
    step: Step, batch_size: int, num_logs: int, log_dtype: tf.DType
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Returns ``loop(x, y) -> logs[steps, k]``: ``step`` on each full batch of ``x`` and ``y``.

    For evaluation: one call covers every full batch of in-memory data
    (``step`` changes no variable), instead of one call per batch. The
    number of batches comes from ``x``'s length at run time, so one trace
    serves data of any size; ``step`` gets batches of static shape.
    """

    def loop(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        steps = tf.shape(x)[0] // batch_size

        def body(i: tf.Tensor, logs: Any) -> tuple[tf.Tensor, Any]:
            start = i * batch_size
            out = step(_batch(x, None, start, batch_size), _batch(y, None, start, batch_size))
            return i + 1, logs.write(i, out)

        logs = tf.TensorArray(log_dtype, size=steps, element_shape=[num_logs])
        _, logs = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), logs))
        return logs.stack()

    return loop


def array_last_step(step: Step, start: int, size: int, *, shuffled: bool) -> Callable[..., Any]:
    """Returns ``last(x, y, order) -> logs[k]``: the ragged batch, ``size`` rows from ``start``."""

    def last(x: tf.Tensor, y: tf.Tensor, order: tf.Tensor) -> tf.Tensor:
        rows = order if shuffled else None
        return step(_batch(x, rows, start, size), _batch(y, rows, start, size))

    return last


def dataset_loop(
    step: Step, num_logs: int, log_dtype: tf.DType, *, flag: int | None = None, limit: int = 1
) -> Callable[..., Any]:
    """Returns ``loop(iterator, num_steps, run) -> (logs[n, k], sizes[n], run, exhausted)``.

    Consumes up to ``num_steps`` batches from ``iterator`` inside the graph;
    ``exhausted`` says the iterator ran out. ``flag``, ``limit`` and ``run``
    stop the loop after too many non-finite steps in a row, as in
    :func:`array_loop`.
    """

    def loop(
        iterator: Any, num_steps: tf.Tensor, run: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        logs = tf.TensorArray(log_dtype, size=0, dynamic_size=True, element_shape=[num_logs])
        sizes = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[])
        i = tf.constant(0)
        exhausted = tf.constant(False)
        while i < num_steps and run < limit:
            element = iterator.get_next_as_optional()
            if not element.has_value():
                exhausted = tf.constant(True)
                break
            x, y = element.get_value()
            out = step(x, y)
            logs = logs.write(i, out)
            sizes = sizes.write(i, tf.shape(x)[0])
            run = _next_run(out, run, flag)
            i += 1
        return logs.stack(), sizes.stack(), run, exhausted

    return loop
