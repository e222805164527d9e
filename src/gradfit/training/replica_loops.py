"""The compiled loops over the replicas of a ``tf.distribute`` strategy.

The counterparts of :mod:`gradfit.training.loops` that an epoch runner
uses under a strategy (:class:`ReplicaLoops`; :class:`LocalLoops` is the
one-device default). As in TF Model Garden's Orbit, the loop is one
``tf.function`` running many steps: a ``tf.while_loop`` whose body calls
``strategy.run`` once per step. Each replica runs the task's step on its
share of the global batch (for in-memory data, a slice of the shard its
device holds: :mod:`gradfit.data.sharding`), tells the update
rules its share (:func:`gradfit.distribute.sync.replica_batch`) so they
all-reduce the single-device gradient, and its logs are reduced to the
global batch's values: a mean log weighted by each replica's examples, a
``"weighted"`` log by its weights, the non-finite flag set if any replica's
is; a ``"running"`` log (a Keras metric's result) is read again after the
step, in cross-replica context, where the metric's ``SyncOnRead`` state is
summed over the replicas (:meth:`gradfit.Task.running_logs`). A dataset of
any length, known or not, runs many steps per call. Nothing here uses XLA
(it does not compile across replicas).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from gradfit.data import sharding
from gradfit.distribute import sync
from gradfit.training import loops
from gradfit.training.step import Columns


class LocalLoops:
    """One device: :mod:`gradfit.training.loops` as it is."""

    shards = False  # shuffled rows come in the epoch's order in blocks, or by the order

    def place(self, arrays: tuple[tf.Tensor, ...], batch_size: int, *, ordered: bool) -> Any:
        """The arrays the loops take: ``arrays`` themselves."""
        return arrays

    def epoch_arrays(self, placed: Any, arrays: tuple[tf.Tensor, ...], order: Any) -> Any:
        """The arrays an epoch of ``order`` (``None``: unshuffled) trains on: ``placed``."""
        return placed

    def distribute(self, dataset: tf.data.Dataset) -> Any:
        """The dataset the loops iterate: ``dataset`` itself."""
        return dataset

    def signature(self, spec: Any) -> list[Any] | None:
        """The dataset step's input signature: the batch spec."""
        return [spec]

    array_loop = staticmethod(loops.array_loop)
    array_last_step = staticmethod(loops.array_last_step)
    dataset_loop = staticmethod(loops.dataset_loop)

    def dataset_step(self, step: loops.Step) -> loops.Step:
        """The step a dataset loop runs on each element: ``step`` itself."""
        return step


def in_replicas(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn`` run by the strategy in scope on every replica (``fn`` itself without one).

    A step that updates mirrored variables can only be traced in a replica context.
    """
    if not tf.distribute.has_strategy():
        return fn
    strategy = tf.distribute.get_strategy()

    def replicated(batch: Any) -> Any:
        return strategy.run(fn, args=(batch,))

    return replicated


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _factors(columns: Columns, out: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """What each visible log is weighted by across replicas: examples, or its own weight."""
    count = len(columns.names)
    weight_of = {name: count + i for i, name in enumerate(columns.weighted)}
    return tf.stack([out[weight_of[name]] if name in weight_of else rows for name in columns.names])


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def log_parts(columns: Columns, out: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """One replica's part of the global logs: ``[values * factors, weights, flag]``.

    Summed over the replicas, :func:`global_logs` makes them the global
    batch's; a replica without examples contributes zeros (its mean of
    nothing is NaN).
    """
    count = len(columns.names)
    rows = tf.cast(rows, out.dtype)
    parts = tf.concat([out[:count] * _factors(columns, out, rows), out[count:]], axis=0)
    return tf.where(rows > 0, parts, tf.zeros_like(parts))


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def global_logs(columns: Columns, summed: tf.Tensor, total: tf.Tensor) -> tf.Tensor:
    """The global batch's step logs from the replicas' :func:`log_parts`, ``summed``."""
    count = len(columns.names)
    total = tf.cast(total, summed.dtype)
    weights = summed[count : count + len(columns.weighted)]
    totals = tf.stack(
        [
            weights[columns.weighted.index(name)] if name in columns.weighted else total
            for name in columns.names
        ]
    )
    reduced = [tf.math.divide_no_nan(summed[:count], totals), weights]
    if columns.flag is not None:
        reduced.append(tf.minimum(summed[columns.flag : columns.flag + 1], 1))
    return tf.concat(reduced, axis=0)


BatchOf = Callable[..., tuple[Any, tf.Tensor, tf.Tensor]]
"""``batch_of(*args) -> (batch, rows, total)``: a replica's batch, its examples, the global's."""


class ReplicaLoops:
    """The loops of :mod:`gradfit.training.loops` over a strategy's replicas.

    Args:
        strategy: The strategy.
        columns: The step's log layout (how each log is reduced).
        running: ``running() -> {name: value}``: the running logs (a task's
            ``running_logs``), read after each step in cross-replica context.
    """

    shards = True  # each replica holds its part of the epoch, in step order (see `place`)

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        columns: Columns,
        running: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.strategy = strategy
        self.columns = columns
        self.replicas = strategy.num_replicas_in_sync
        self.running = running
        self.layout: sharding.Shards | None = None
        # Whether every replica is in this process: the step logs are then summed after
        # the step from the replicas' results (a copy), not by an all-reduce (~10x dearer).
        self.local = len(strategy.extended.worker_devices) == self.replicas

    def place(self, arrays: tuple[tf.Tensor, ...], batch_size: int, *, ordered: bool) -> Any:
        """Each replica's shard of ``arrays`` on its device, once per fit if ``ordered``.

        Shuffled data is sharded once per epoch instead (:meth:`epoch_arrays`).
        """
        self.layout = sharding.Shards(int(arrays[0].shape[0]), batch_size, self.replicas)
        return self.layout.place(self.strategy, arrays) if ordered else None

    def epoch_arrays(self, placed: Any, arrays: tuple[tf.Tensor, ...], order: Any) -> Any:
        """The shards of an epoch in ``order``: gathered anew (once per epoch), or ``placed``."""
        assert self.layout is not None  # (`place` comes first)
        return placed if order is None else self.layout.place(self.strategy, arrays, order)

    def distribute(self, dataset: tf.data.Dataset) -> Any:
        """``dataset`` split over the replicas."""
        return sharding.distribute_dataset(self.strategy, dataset)

    def signature(self, spec: Any) -> list[Any] | None:
        """No input signature: the step takes a distributed element."""
        return None

    def run(
        self, step: loops.Step, batch_of: BatchOf, *args: Any, with_total: bool = False
    ) -> tf.Tensor:
        """``step`` on every replica's batch (``batch_of(*args)`` there); the global logs.

        With ``with_total``, the global batch's examples follow the logs.
        """
        columns, local = self.columns, self.local

        def replica(*args: Any) -> tuple[tf.Tensor, tf.Tensor]:
            batch, rows, total = batch_of(*args)
            with sync.replica_batch(rows, total):
                out = step(batch)
            parts = log_parts(columns, out, rows)
            if not local:  # (other workers' replicas: an all-reduce)
                context = tf.distribute.get_replica_context()
                parts = context.all_reduce(tf.distribute.ReduceOp.SUM, parts)
            return parts, total

        parts, totals = self.strategy.run(replica, args=args)
        results = self.strategy.experimental_local_results(parts)
        summed = tf.add_n(list(results)) if local else results[0]
        total = self.strategy.experimental_local_results(totals)[0]
        logs = global_logs(columns, summed, total)
        if with_total:
            logs = tf.concat([logs, tf.cast(total, logs.dtype)[None]], axis=0)
        return self._read_running(logs)

    def _read_running(self, logs: tf.Tensor) -> tf.Tensor:
        """``logs`` with every running log read after the step, across the replicas.

        A replica's running log is its own share's (a Keras metric's
        ``SyncOnRead`` variables hold one partial sum per replica); read here,
        in cross-replica context, the variables are summed: the global value.
        """
        names = self.columns.running
        if not names or self.running is None:
            return logs
        with tf.control_dependencies([logs]):
            values = self.running()
        index = [[self.columns.names.index(name)] for name in names]
        read = tf.stack([tf.cast(values[name], logs.dtype) for name in names])
        return tf.tensor_scatter_nd_update(logs, index, read)

    def _array_batch(self, pack: loops.Pack, *, last: bool) -> BatchOf:
        """``batch_of(shard, step)``: this replica's rows of global batch ``step``, from its shard.

        ``last``: the ragged last batch (its own, smaller share).
        """
        layout = self.layout
        assert layout is not None  # (`place` comes first)

        def batch_of(shard: Any, step: tf.Tensor) -> Any:
            context = tf.distribute.get_replica_context()
            replica = tf.get_static_value(context.replica_id_in_sync_group)
            count, last_count = layout.counts(int(replica))
            size, total = (last_count, layout.rest) if last else (count, layout.batch_size)
            batch = pack(sharding.rows(shard, step * count, size))
            return batch, tf.constant(size), tf.constant(total)

        return batch_of

    def array_loop(
        self,
        step: loops.Step,
        pack: loops.Pack,
        batch_size: int,
        max_steps: int,
        num_logs: int,
        log_dtype: tf.DType,
        *,
        gather: bool = False,
    ) -> Callable[..., tf.Tensor]:
        """:func:`gradfit.training.loops.array_loop` over the replicas' shards.

        ``loop(shards, order, first_step, num_steps)``: ``order`` is unused
        (the shards are in the epoch's order), as is ``gather``.
        """
        batch_of = self._array_batch(pack, last=False)

        def loop(
            shards: Any, order: tf.Tensor, first_step: tf.Tensor, num_steps: tf.Tensor
        ) -> tf.Tensor:
            def body(i: tf.Tensor, logs: Any) -> tuple[tf.Tensor, Any]:
                return i + 1, logs.write(i, self.run(step, batch_of, shards, first_step + i))

            logs = tf.TensorArray(log_dtype, size=max_steps, element_shape=[num_logs])
            _, logs = tf.while_loop(
                lambda i, _: i < num_steps,
                body,
                (tf.constant(0), logs),
                maximum_iterations=max_steps,
            )
            return logs.stack()

        return loop

    def array_last_step(
        self, step: loops.Step, pack: loops.Pack, start: int, size: int, *, shuffled: bool
    ) -> Callable[..., Any]:
        """:func:`gradfit.training.loops.array_last_step` over the replicas' shards.

        ``last(shards, order)``: ``order`` is unused (see :meth:`array_loop`).
        """
        batch_of = self._array_batch(pack, last=True)
        assert self.layout is not None
        full = self.layout.full

        def last(shards: Any, order: tf.Tensor) -> tf.Tensor:
            return self.run(step, batch_of, shards, tf.constant(full))

        return last

    def dataset_step(self, step: loops.Step) -> loops.Step:
        """``step`` on every replica's part of a distributed element; logs, then its examples."""
        strategy = self.strategy

        def batch_of(batch: Any, total: tf.Tensor | None) -> Any:
            rows = loops.batch_rows(batch)
            if total is None:  # (other workers' replicas hold examples too: an all-reduce)
                context = tf.distribute.get_replica_context()
                total = context.all_reduce(tf.distribute.ReduceOp.SUM, rows)
            return batch, rows, total

        def replicated(element: Any) -> tf.Tensor:
            total = None
            if self.local:  # every replica's part is here: counted without a collective
                parts = strategy.experimental_local_results(element)
                total = tf.add_n([loops.batch_rows(part) for part in parts])
            return self.run(step, batch_of, element, total, with_total=True)

        return replicated

    def dataset_loop(
        self,
        step: loops.Step,
        num_logs: int,
        log_dtype: tf.DType,
        *,
        flag: int | None = None,
        limit: int = 1,
    ) -> Callable[..., Any]:
        """:func:`gradfit.training.loops.dataset_loop` over a distributed iterator.

        ``step`` is :meth:`dataset_step`'s (maybe as a ``tf.function``, whose
        Python function the loop traces inline): its last value is the
        element's examples.
        """
        return _dataset_loop(
            getattr(step, "python_function", step), num_logs, log_dtype, flag=flag, limit=limit
        )


def _dataset_loop(
    step: loops.Step, num_logs: int, log_dtype: tf.DType, *, flag: int | None, limit: int
) -> Callable[..., Any]:
    """:func:`gradfit.training.loops.dataset_loop` for a distributed iterator, of any length.

    ``step`` gives the logs, then the element's examples. As in
    :func:`gradfit.training.loops.dataset_loop`, each iteration takes
    ``get_next_as_optional()`` and runs the step under a ``tf.cond`` on its
    ``has_value()`` (true while any replica has examples; the others get
    empty batches), so a dataset of unknown length runs many steps per call
    and stops at its end. The step is traced inline: a ``tf.function``
    taking a distributed element, called inside that ``tf.cond``, fails at
    run time with an unfed placeholder (TensorFlow 2.21); it has no XLA to
    gain under a strategy anyway.
    """

    def loop(
        iterator: Any, num_steps: tf.Tensor, run: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        def more(i: tf.Tensor, run: tf.Tensor, exhausted: tf.Tensor, *_: Any) -> tf.Tensor:
            return tf.logical_and(tf.logical_and(i < num_steps, run < limit), ~exhausted)

        def body(i: tf.Tensor, run: tf.Tensor, exhausted: tf.Tensor, logs: Any, sizes: Any) -> Any:
            element = iterator.get_next_as_optional()

            def consume() -> tuple[Any, ...]:
                out = step(element.get_value())
                if flag is not None:
                    run_ = tf.where(out[flag] > 0, run + 1, tf.zeros_like(run))
                else:
                    run_ = run
                rows = tf.cast(out[num_logs], tf.int32)
                written = (logs.write(i, out[:num_logs]), sizes.write(i, rows))
                return (i + 1, run_, tf.constant(False), *written)

            def stop() -> tuple[Any, ...]:
                return i, run, tf.constant(True), logs, sizes

            return tf.cond(element.has_value(), consume, stop)

        logs = tf.TensorArray(log_dtype, size=0, dynamic_size=True, element_shape=[num_logs])
        sizes = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[])
        start = (tf.constant(0), run, tf.constant(False), logs, sizes)
        _, run, exhausted, logs, sizes = tf.while_loop(more, body, start)
        return logs.stack(), sizes.stack(), run, exhausted

    return loop
