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
is. Nothing here uses XLA (it does not compile across replicas).
"""

from __future__ import annotations

from collections.abc import Callable
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
def reduce_logs(
    context: Any, columns: Columns, out: tf.Tensor, rows: tf.Tensor, total: tf.Tensor
) -> tf.Tensor:
    """One replica's step logs ``out`` reduced to the global batch's (in every replica).

    One SUM all-reduce of ``[values * factors, weights, flag]``; a replica
    without examples contributes zeros (its mean of nothing is NaN).
    """
    count, dtype = len(columns.names), out.dtype
    rows, total = tf.cast(rows, dtype), tf.cast(total, dtype)
    factors = _factors(columns, out, rows)
    parts = tf.concat([out[:count] * factors, out[count:]], axis=0)
    summed = context.all_reduce(
        tf.distribute.ReduceOp.SUM, tf.where(rows > 0, parts, tf.zeros_like(parts))
    )
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
    """

    shards = True  # each replica holds its part of the epoch, in step order (see `place`)

    def __init__(self, strategy: tf.distribute.Strategy, columns: Columns) -> None:
        self.strategy = strategy
        self.columns = columns
        self.replicas = strategy.num_replicas_in_sync
        self.layout: sharding.Shards | None = None

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
        columns = self.columns

        def replica(*args: Any) -> tf.Tensor:
            context = tf.distribute.get_replica_context()
            batch, rows, total = batch_of(*args)
            with sync.replica_batch(rows, total):
                out = step(batch)
            logs = reduce_logs(context, columns, out, rows, total)
            if with_total:
                logs = tf.concat([logs, tf.cast(total, logs.dtype)[None]], axis=0)
            return logs

        logs = self.strategy.run(replica, args=args)
        return self.strategy.experimental_local_results(logs)[0]

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

        def batch_of(batch: Any) -> Any:
            context = tf.distribute.get_replica_context()
            rows = loops.batch_rows(batch)
            return batch, rows, context.all_reduce(tf.distribute.ReduceOp.SUM, rows)

        def replicated(element: Any) -> tf.Tensor:
            return self.run(step, batch_of, element, with_total=True)

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

        ``step`` is :meth:`dataset_step`'s: its last value is the element's examples.
        """
        return _dataset_loop(step, num_logs, log_dtype, flag=flag, limit=limit)


def _dataset_loop(
    step: loops.Step, num_logs: int, log_dtype: tf.DType, *, flag: int | None, limit: int
) -> Callable[..., Any]:
    """:func:`gradfit.training.loops.dataset_loop` for a dataset of known length.

    ``step`` (:meth:`ReplicaLoops.dataset_step`'s) gives the logs, then the
    element's examples. Every iteration takes an element and runs
    ``strategy.run``: under a ``tf.cond`` (which ``get_next_as_optional``
    needs) ``MirroredStrategy``'s replica functions do not run, so the
    runner asks for no more steps than the epoch has left.
    """

    def loop(
        iterator: Any, num_steps: tf.Tensor, run: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        def body(i: tf.Tensor, run: tf.Tensor, logs: Any, sizes: Any) -> tuple[Any, ...]:
            out = step(iterator.get_next())
            run = run if flag is None else tf.where(out[flag] > 0, run + 1, tf.zeros_like(run))
            logs = logs.write(i, out[:num_logs])
            return i + 1, run, logs, sizes.write(i, tf.cast(out[num_logs], tf.int32))

        logs = tf.TensorArray(log_dtype, size=0, dynamic_size=True, element_shape=[num_logs])
        sizes = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[])
        _, run, logs, sizes = tf.while_loop(
            lambda i, run, *_: tf.logical_and(i < num_steps, run < limit),
            body,
            (tf.constant(0), run, logs, sizes),
        )
        return logs.stack(), sizes.stack(), run, tf.constant(False)

    return loop
