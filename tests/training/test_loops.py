"""The epoch's shuffle (loops.permutation) and the block gather, against NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from gradfit.training import loops

_PERMUTE: dict[int, tuple[tf.random.Generator, object]] = {}


def _order(n: int, seed: int) -> np.ndarray:
    """One epoch's order from a generator seeded with ``seed`` (one compiled function per n)."""
    if n not in _PERMUTE:
        generator = tf.random.Generator.from_seed(0)
        _PERMUTE[n] = (generator, loops.permutation_function(generator, n))
    generator, permute = _PERMUTE[n]
    generator.reset_from_seed(seed)
    return permute().numpy()  # type: ignore[operator]


def test_an_epoch_order_is_a_permutation_of_all_examples() -> None:
    order = _order(10, 7)
    assert sorted(order.tolist()) == list(range(10))
    assert not np.array_equal(order, np.arange(10)), "the epoch was not shuffled"


def test_same_seed_gives_the_same_orders_and_epochs_differ() -> None:
    def epochs(seed: int) -> list[np.ndarray]:
        generator = tf.random.Generator.from_seed(seed)
        permute = loops.permutation_function(generator, 12)
        return [permute().numpy() for _ in range(3)]

    first, second = epochs(1234), epochs(1234)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[1], first[2])
    assert not np.array_equal(epochs(4321)[0], first[0])


def test_the_order_uses_one_draw_of_the_generator() -> None:
    # The trainer's documented shuffle: a stateless shuffle seeded by make_seeds(1).
    generator = tf.random.Generator.from_seed(5)
    expected_seed = tf.random.Generator.from_seed(5).make_seeds(1)[:, 0]
    expected = tf.random.experimental.stateless_shuffle(tf.range(9), seed=expected_seed)
    np.testing.assert_array_equal(loops.permutation(generator, 9).numpy(), expected.numpy())


@settings(deadline=None, max_examples=40)
@given(
    n=st.sampled_from([1, 7, 40]),
    batch_size=st.integers(1, 45),
    seed=st.integers(0, 2**31 - 1),
)
def test_blocks_in_the_epoch_order_visit_each_example_once(
    n: int, batch_size: int, seed: int
) -> None:
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int64)  # y[i] == i identifies the example x[i]
    size = min(batch_size, n)
    full = n // size
    order = _order(n, seed)
    gather = loops.gather_block(size, full)
    xs, ys = gather((tf.constant(x), tf.constant(y)), tf.constant(order, tf.int32), tf.constant(0))
    assert xs.shape[0] == ys.shape[0] == full * size
    np.testing.assert_array_equal(ys.numpy(), order[: full * size])
    np.testing.assert_array_equal(xs.numpy(), x[ys.numpy()])  # rows stay paired
    rest = sorted(order[full * size :].tolist())
    assert sorted(ys.numpy().tolist() + rest) == list(range(n))  # the ragged rest: the others
    assert math.ceil(n / size) == full + (1 if n % size else 0)


@pytest.mark.parametrize(("batch_size", "row_bytes", "full"), [(32, 8, 3125), (128, 3140, 468)])
def test_a_block_holds_at_most_block_bytes(batch_size: int, row_bytes: int, full: int) -> None:
    block = loops.block_steps(batch_size, row_bytes, full)
    assert 1 <= block <= full
    assert block * batch_size * row_bytes <= max(loops.BLOCK_BYTES, batch_size * row_bytes)
    if block < full:  # one more batch would not fit
        assert (block + 1) * batch_size * row_bytes > loops.BLOCK_BYTES
