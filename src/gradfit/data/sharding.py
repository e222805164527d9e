"""Data over a ``tf.distribute`` strategy: in-memory arrays placed once, batches split.

In-memory data is copied onto every replica's device once per fit
(:func:`place`); each step then hands every replica its share of the
global batch: the rows :func:`replica_rows` gives it, sliced (or, for a
shuffled epoch, gathered by the epoch's order) from its own copy, so no
example crosses devices during the fit and any order works. A
``tf.data`` input is distributed by the strategy itself
(:func:`distribute_dataset`): it splits every global batch over the
replicas (and workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf


def place(strategy: tf.distribute.Strategy, arrays: Sequence[tf.Tensor]) -> Any:
    """``arrays`` copied onto every replica's device: a tuple of per-replica values."""

    def copy(_: Any) -> tuple[tf.Tensor, ...]:
        return tuple(tf.identity(t) for t in arrays)  # (runs under the replica's device)

    return strategy.experimental_distribute_values_from_function(copy)


def replica_rows(batch_size: int, replicas: int, replica: int) -> tuple[int, int]:
    """``(offset, count)`` of replica ``replica``'s rows in a global batch of ``batch_size``.

    The rows are split as evenly as they go, the first replicas taking one
    more; a replica may get none (a ragged last batch smaller than the
    number of replicas).
    """
    share, extra = divmod(batch_size, replicas)
    offset = replica * share + min(replica, extra)
    return offset, share + (1 if replica < extra else 0)


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def rows(
    arrays: Sequence[tf.Tensor], order: tf.Tensor | None, start: Any, count: int
) -> list[tf.Tensor]:
    """Rows ``start...start + count - 1`` of every array (of ``order``'s rows, if given)."""
    if order is not None:
        index = tf.slice(order, [start], [count])
        return [tf.gather(x, index) for x in arrays]
    return [tf.slice(x, [start] + [0] * (x.shape.rank - 1), [count, *x.shape[1:]]) for x in arrays]


def distribute_dataset(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset) -> Any:
    """``dataset`` (of global batches) split over the strategy's replicas, batch by batch."""
    return strategy.experimental_distribute_dataset(dataset)
