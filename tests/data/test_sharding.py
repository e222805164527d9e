"""The shard layout of in-memory data over replicas (pure arithmetic: no devices needed).

Placement on real replica devices, and training on the shards, run under
``MirroredStrategy`` in ``tests/distribute/test_sharding.py``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gradfit.data.sharding import Shards, replica_rows


@st.composite
def layouts(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(st.integers(1, 300))
    return n, draw(st.integers(1, n)), draw(st.integers(1, 8))


def batch_rows(n: int, batch_size: int, step: int) -> np.ndarray:
    """The epoch positions of global batch ``step`` (one device's batch)."""
    return np.arange(step * batch_size, min((step + 1) * batch_size, n))


def test_golden_layout() -> None:
    # 11 examples in batches of 4 on 3 replicas: batches [0-3] [4-7] [8-10], split 2+1+1, 1+1+1.
    shards = Shards(11, 4, 3)
    assert [shards.positions(r).tolist() for r in range(3)] == [
        [0, 1, 4, 5, 8],
        [2, 6, 9],
        [3, 7, 10],
    ]
    assert [shards.counts(r) for r in range(3)] == [(2, 1), (1, 1), (1, 1)]


def test_a_replica_can_be_left_without_rows() -> None:
    # 9 = 2 batches of 4 and one of 1: the second replica gets nothing of the last batch.
    shards = Shards(9, 4, 2)
    assert shards.positions(1).tolist() == [2, 3, 6, 7]
    assert shards.counts(1) == (2, 0)
    assert Shards(1, 1, 2).positions(1).tolist() == []


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_every_example_is_on_exactly_one_replica(layout: tuple[int, int, int]) -> None:
    n, batch_size, replicas = layout
    shards = Shards(n, batch_size, replicas)
    every = np.concatenate([shards.positions(r) for r in range(replicas)])
    assert sorted(every.tolist()) == list(range(n))
    assert every.dtype == np.int32


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_each_step_slices_the_replicas_part_of_the_global_batch(
    layout: tuple[int, int, int],
) -> None:
    # A replica's batch at step s is rows s * count ... of its shard (the loops' slice):
    # stacked over the replicas, they are the one-device batch, in order.
    n, batch_size, replicas = layout
    shards = Shards(n, batch_size, replicas)
    steps = -(-n // batch_size)
    for step in range(steps):
        last = step == shards.full
        parts = []
        for r in range(replicas):
            count, last_count = shards.counts(r)
            size = last_count if last else count
            parts.append(shards.positions(r)[step * count : step * count + size])
        assert np.concatenate(parts).tolist() == batch_rows(n, batch_size, step).tolist()


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_a_shard_is_about_one_replicas_part(layout: tuple[int, int, int]) -> None:
    n, batch_size, replicas = layout
    shards = Shards(n, batch_size, replicas)
    sizes = [len(shards.positions(r)) for r in range(replicas)]
    assert max(sizes) <= shards.full * -(-batch_size // replicas) + -(-shards.rest // replicas)
    assert max(sizes) - min(sizes) <= shards.full + 1
    counts = [shards.counts(r)[0] for r in range(replicas)]
    assert counts == [replica_rows(batch_size, replicas, r)[1] for r in range(replicas)]
