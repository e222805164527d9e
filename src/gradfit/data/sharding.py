"""Data over a ``tf.distribute`` strategy: in-memory arrays sharded, datasets distributed.

In-memory data is *sharded*: each replica's device holds only the rows
it trains on, about ``1 / replicas`` of the data (:class:`Shards`). Every
global batch of ``batch_size`` rows is split over the replicas as evenly
as it goes (:func:`replica_rows`); a replica's shard is its part of every
batch of the epoch, in step order, so its batch at step ``s`` is a
contiguous slice of its shard and no example crosses devices during the
epoch. Ordered data is sharded once per fit; a shuffled epoch's shards
are gathered from the host copy by the epoch's order once per epoch, so a
replica sees exactly the rows of its part of the single-device batches.

A ``tf.data`` input is distributed by the strategy itself
(:func:`distribute_dataset`): it splits every global batch over the
replicas (and workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf


def replica_rows(batch_size: int, replicas: int, replica: int) -> tuple[int, int]:
    """``(offset, count)`` of replica ``replica``'s rows in a global batch of ``batch_size``.

    The rows are split as evenly as they go, the first replicas taking one
    more; a replica may get none (a ragged last batch smaller than the
    number of replicas).
    """
    share, extra = divmod(batch_size, replicas)
    offset = replica * share + min(replica, extra)
    return offset, share + (1 if replica < extra else 0)


class Shards:
    """Which rows of an epoch each replica trains on (see the module docstring).

    Args:
        num_examples: The examples in the data.
        batch_size: The global batch size (at most ``num_examples``).
        replicas: The replicas in sync.
    """

    def __init__(self, num_examples: int, batch_size: int, replicas: int) -> None:
        self.batch_size, self.replicas = batch_size, replicas
        self.full, self.rest = divmod(num_examples, batch_size)

    def counts(self, replica: int) -> tuple[int, int]:
        """``replica``'s rows of a full batch and of the ragged last batch (0 without one)."""
        return (
            replica_rows(self.batch_size, self.replicas, replica)[1],
            replica_rows(self.rest, self.replicas, replica)[1],
        )

    def positions(self, replica: int) -> np.ndarray:
        """The epoch positions ``replica`` trains on, in step order (int32).

        Position ``p`` is the ``p``-th example of the epoch's order: its row
        of the data itself when the data is not shuffled.
        """
        offset, count = replica_rows(self.batch_size, self.replicas, replica)
        starts = np.arange(self.full, dtype=np.int64)[:, None] * self.batch_size + offset
        full = (starts + np.arange(count)).reshape(-1)
        last_offset, last_count = replica_rows(self.rest, self.replicas, replica)
        last = self.full * self.batch_size + last_offset + np.arange(last_count)
        return np.concatenate([full, last]).astype(np.int32)

    def place(
        self,
        strategy: tf.distribute.Strategy,
        arrays: Sequence[tf.Tensor],
        order: tf.Tensor | None = None,
    ) -> Any:
        """Each replica's shard of ``arrays`` on its device: a per-replica tuple of arrays.

        The rows are gathered where ``arrays`` live (by ``order``, a
        shuffled epoch's, if given) and only the replica's rows are copied
        to its device.
        """
        devices = strategy.extended.worker_devices  # (this worker's replicas, in order)

        def shard(context: Any) -> tuple[tf.Tensor, ...]:
            replica = int(context.replica_id_in_sync_group)
            index = tf.constant(self.positions(replica))
            parts = []
            for x in arrays:
                with tf.device(x.device):
                    rows = tf.gather(order, index) if order is not None else index
                    parts.append(tf.gather(x, rows))
            with tf.device(devices[replica % len(devices)]):
                return tuple(tf.identity(part) for part in parts)

        return strategy.experimental_distribute_values_from_function(shard)


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def rows(arrays: Sequence[tf.Tensor], start: Any, count: int) -> list[tf.Tensor]:
    """Rows ``start...start + count - 1`` of every array (a replica's batch of its shard)."""
    return [tf.slice(x, [start] + [0] * (x.shape.rank - 1), [count, *x.shape[1:]]) for x in arrays]


def distribute_dataset(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset) -> Any:
    """``dataset`` (of global batches) split over the strategy's replicas, batch by batch."""
    return strategy.experimental_distribute_dataset(dataset)
