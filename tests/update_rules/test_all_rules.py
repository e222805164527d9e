"""What every rule must do, table-driven over helpers.RULES.

Hand-written rules, the Keras wrapper and compositions: dense and sparse
gradients agree; eager, tf.function and XLA agree; a checkpoint taken
mid-training continues exactly; learning-rate changes never retrace; None
gradients are skipped; half precision keeps float32 slots; and every rule
reduces the loss on a convex quadratic and on Rosenbrock's function.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.update_rules.helpers import HAND_WRITTEN, RULES

ALL = list(RULES)
TABLE_SHAPE = (6, 3)


def _sparse_problem(seed, steps):
    """Initial values of a [6, 3] table and a [4] vector, and per-step gradients.

    The table's gradients are IndexedSlices with repeated indices, as
    tf.gather produces for an embedding lookup.
    """
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(TABLE_SHAPE).astype(np.float32), rng.standard_normal(4)]
    init[1] = init[1].astype(np.float32)
    sequence = []
    for _ in range(steps):
        ids = rng.integers(0, TABLE_SHAPE[0] - 1, size=5)  # the last row is never touched
        rows = rng.standard_normal((5, TABLE_SHAPE[1])).astype(np.float32)
        vector = rng.standard_normal(4).astype(np.float32)
        sequence.append((tf.constant(ids, tf.int64), tf.constant(rows), tf.constant(vector)))
    return init, sequence


def _slices(ids, rows):
    return tf.IndexedSlices(rows, ids, tf.constant(TABLE_SHAPE, tf.int64))


# -- dense and sparse gradients --------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_dense_and_sparse_gradients_agree(name):
    init, sequence = _sparse_problem(seed=1, steps=6)
    results = []
    for sparse in (True, False):
        variables = [tf.Variable(x) for x in init]
        rule = RULES[name](0.05)
        for ids, rows, vector in sequence:
            table_grad = _slices(ids, rows)
            if not sparse:
                table_grad = tf.convert_to_tensor(table_grad)
            rule.apply([table_grad, vector], variables)
        results.append([v.numpy() for v in variables])
    (sparse_table, sparse_vector), (dense_table, dense_vector) = results
    np.testing.assert_allclose(sparse_table, dense_table, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sparse_vector, dense_vector, rtol=1e-6, atol=1e-7)
    assert not np.allclose(sparse_table[:-1], init[0][:-1])


# -- execution modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_eager_function_and_xla_agree(name):
    init, sequence = _sparse_problem(seed=2, steps=7)

    def run(mode):
        variables = [tf.Variable(x) for x in init]
        rule = RULES[name](0.05)
        rule.build(variables)

        def step(ids, rows, vector):
            rule.apply([_slices(ids, rows), vector], variables)

        if mode != "eager":
            step = tf.function(step, jit_compile=mode == "xla")
        for args in sequence:
            step(*args)
        if mode != "eager":
            assert step.experimental_get_tracing_count() == 1
        assert int(rule.iterations) == len(sequence)
        return [v.numpy() for v in variables]

    eager, graph, xla = run("eager"), run("graph"), run("xla")
    for e, g, x, start in zip(eager, graph, xla, init, strict=True):
        np.testing.assert_array_equal(e, g)
        # XLA on CPU fuses a * b + c into fused multiply-adds: the last bits may differ.
        np.testing.assert_allclose(e, x, rtol=1e-6, atol=1e-6)
        assert not np.allclose(e, start)


# -- checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_round_trip_continues_exactly(name, tmp_path):
    init, sequence = _sparse_problem(seed=3, steps=10)

    def train(rule, variables, steps):
        for ids, rows, vector in steps:
            rule.apply([_slices(ids, rows), vector], variables)

    straight_vars = [tf.Variable(x) for x in init]
    straight = RULES[name](0.05)
    train(straight, straight_vars, sequence)

    # Five steps: an accumulating rule is half-way through a sum when saved.
    first_vars = [tf.Variable(x) for x in init]
    first = RULES[name](0.05)
    train(first, first_vars, sequence[:5])
    path = tf.train.Checkpoint(rule=first, vars=first_vars).save(str(tmp_path / "ckpt"))

    resumed_vars = [tf.Variable(tf.zeros_like(x)) for x in init]
    resumed = RULES[name](0.05)
    resumed.build(resumed_vars)
    tf.train.Checkpoint(rule=resumed, vars=resumed_vars).restore(path).assert_consumed()
    assert int(resumed.iterations) == 5
    for mine, theirs in zip(resumed.variables, first.variables, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())

    train(resumed, resumed_vars, sequence[5:])
    for mine, theirs in zip(resumed_vars, straight_vars, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # A fresh rule (state lost) would not continue the same way.
    fresh_vars = [tf.Variable(v) for v in first_vars]
    train(RULES[name](0.05), fresh_vars, sequence[5:])
    if len(first.variables) > 2:  # the rule has state beyond lr and iterations
        assert not np.allclose(fresh_vars[0].numpy(), straight_vars[0].numpy())


# -- hyperparameters never retrace; None gradients -------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_learning_rate_change_takes_effect_without_retracing(name):
    init, sequence = _sparse_problem(seed=4, steps=4)
    variables = [tf.Variable(x) for x in init]
    rule = RULES[name](0.05)
    rule.build(variables)

    @tf.function
    def step(ids, rows, vector):
        rule.apply([_slices(ids, rows), vector], variables)

    rule.learning_rate = 0.0
    step(*sequence[0])
    step(*sequence[1])
    for var, start in zip(variables, init, strict=True):
        np.testing.assert_array_equal(var.numpy(), start)  # a zero rate moves nothing
    rule.learning_rate = 0.05
    step(*sequence[2])
    step(*sequence[3])
    assert not np.allclose(variables[1].numpy(), init[1])
    assert step.experimental_get_tracing_count() == 1
    assert int(rule.iterations) == 4


@pytest.mark.parametrize("name", ALL)
def test_none_gradients_are_skipped(name):
    a, b = tf.Variable([1.0, 2.0]), tf.Variable([[3.0, 4.0]])
    rule = RULES[name](0.1)
    for _ in range(2):
        rule.apply([None, tf.constant([[1.0, -1.0]])], [a, b])
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    assert not np.allclose(b.numpy(), [[3.0, 4.0]])
    assert int(rule.iterations) == 2
    with pytest.raises(ValueError, match="No gradients provided"):
        rule.apply([None, None], [a, b])


# -- dtypes ------------------------------------------------------------------------------------


def _run_in_dtype(name, dtype, steps=5):
    rng = np.random.default_rng(5)
    init = rng.standard_normal((3, 2)).astype(np.float32)
    grads = rng.standard_normal((steps, 3, 2)).astype(np.float32)
    var = tf.Variable(tf.cast(init, dtype))
    rule = RULES[name](0.05)
    for g in grads:
        rule.apply([tf.cast(g, dtype)], [var])
    slots = [s for s in rule.variables if s.shape == var.shape]
    return var, slots


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_half_and_double_precision(name):
    reference, _ = _run_in_dtype(name, tf.float32)
    for dtype, slot_dtype, rtol in [
        (tf.float64, tf.float64, 1e-5),
        (tf.float16, tf.float32, 1e-2),
        (tf.bfloat16, tf.float32, 2e-2),
    ]:
        var, slots = _run_in_dtype(name, dtype)
        assert var.dtype == dtype
        assert all(slot.dtype == slot_dtype for slot in slots), [s.dtype for s in slots]
        np.testing.assert_allclose(
            tf.cast(var, tf.float32).numpy(), reference.numpy(), rtol=rtol, atol=rtol
        )


# -- convergence table -------------------------------------------------------------------------

CURVATURE = tf.constant([1.0, 10.0])


def quadratic(x):
    """A convex quadratic with condition number 10; minimum 0 at the origin."""
    return 0.5 * tf.reduce_sum(CURVATURE * tf.square(x))


def rosenbrock(x):
    """Rosenbrock's banana; minimum 0 at (1, 1)."""
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


# name: (learning rate, final-loss bound) on the quadratic (300 steps from (1, 1), loss 5.5),
#       then on Rosenbrock (1000 steps from (-1.2, 1), loss 24.2).
CONVERGENCE = {
    "sgd": ((0.1, 1e-6), (3e-3, 0.2)),
    "sgd-nesterov-decay": ((0.02, 1e-6), (1e-3, 1e-2)),
    "adam": ((0.1, 1e-6), (0.1, 1e-3)),
    "adam-amsgrad": ((0.1, 1e-6), (0.1, 1e-3)),
    "adamw": ((0.1, 1e-6), (0.1, 0.3)),  # the decay pulls towards 0, away from (1, 1)
    "rmsprop": ((0.01, 1e-3), (1e-2, 0.1)),
    "rmsprop-centered-momentum": ((0.01, 1e-3), (1e-2, 1e-2)),
    "adagrad": ((0.5, 1e-6), (0.3, 0.5)),
    "lion": ((0.01, 1e-3), (3e-3, 1e-2)),
    "keras-adam": ((0.1, 1e-6), (0.1, 1e-3)),
    "chain-clip-adam": ((0.1, 1e-6), (0.1, 0.2)),
    "accumulate-adam": ((0.1, 1e-4), (0.1, 0.05)),
}


def _minimise(name, loss, start, learning_rate, steps):
    x = tf.Variable(start)
    rule = RULES[name](learning_rate)
    rule.build([x])

    @tf.function
    def run(steps):
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                value = loss(x)
            rule.apply([tape.gradient(value, x)], [x])
        return loss(x)

    final = float(run(tf.constant(steps)))
    assert run.experimental_get_tracing_count() == 1
    return float(loss(tf.constant(start))), final


def test_convergence_table_covers_every_rule():
    assert set(CONVERGENCE) == set(RULES)


@pytest.mark.parametrize("name", ALL)
def test_reduces_the_loss_on_a_quadratic_and_on_rosenbrock(name):
    (quad_lr, quad_bound), (rosen_lr, rosen_bound) = CONVERGENCE[name]
    start, final = _minimise(name, quadratic, [1.0, 1.0], quad_lr, 300)
    assert start == pytest.approx(5.5)
    assert final < quad_bound, final
    start, final = _minimise(name, rosenbrock, [-1.2, 1.0], rosen_lr, 1000)
    assert start == pytest.approx(24.2)
    assert final < rosen_bound, final
