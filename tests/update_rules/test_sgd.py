"""Tests of gf.SGD: Keras equivalence, golden steps, sparse path, errors, state."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import gradfit as gf
from tests.update_rules.helpers import assert_matches_keras

SHAPES = [(), (3,), (2, 4)]


def _random_arrays(rng, shapes, dtype=np.float32):
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


def _gradient_sequence(seed, steps, shapes=SHAPES, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [_random_arrays(rng, shapes, dtype) for _ in range(steps)]


def _variables(arrays):
    return [tf.Variable(x) for x in arrays]


def _values(variables):
    return [var.numpy() for var in variables]


# -- equivalence with keras.optimizers.SGD ---------------------------------


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_matches_keras_sgd_over_100_steps(momentum, nesterov):
    rng = np.random.default_rng(7)
    init = _random_arrays(rng, SHAPES)
    gf_vars, keras_vars = _variables(init), _variables(init)
    rule = gf.SGD(0.05, momentum=momentum, nesterov=nesterov)
    opt = keras.optimizers.SGD(0.05, momentum=momentum, nesterov=nesterov)
    for grads in _gradient_sequence(seed=11, steps=100):
        tensors = [tf.constant(g) for g in grads]
        rule.apply(tensors, gf_vars)
        opt.apply(tensors, keras_vars)
    for mine, theirs, start in zip(gf_vars, keras_vars, init, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)
        assert not np.allclose(mine.numpy(), start)  # the variables really moved
    assert int(rule.iterations) == 100


# -- golden steps, computed by hand -----------------------------------------


def test_golden_plain_step():
    w = tf.Variable(1.0)
    rule = gf.SGD(0.1)
    rule.apply([tf.constant(2.0)], [w])
    # w <- 1 - 0.1 * 2 = 0.8
    np.testing.assert_allclose(w.numpy(), 0.8, rtol=1e-7)
    # Without momentum SGD has no slots: only the learning rate and iterations.
    assert sorted(v.name for v in rule.variables) == ["iterations:0", "learning_rate:0"]


def test_golden_momentum_two_steps():
    w = tf.Variable(1.0)
    rule = gf.SGD(0.1, momentum=0.9)
    rule.apply([tf.constant(2.0)], [w])
    # v1 = 0.9 * 0 - 0.1 * 2 = -0.2 ; w1 = 1 + (-0.2) = 0.8
    np.testing.assert_allclose(w.numpy(), 0.8, rtol=1e-6)
    np.testing.assert_allclose(rule.get_slot(w, "velocity").numpy(), -0.2, rtol=1e-6)
    rule.apply([tf.constant(2.0)], [w])
    # v2 = 0.9 * (-0.2) - 0.1 * 2 = -0.18 - 0.2 = -0.38 ; w2 = 0.8 - 0.38 = 0.42
    np.testing.assert_allclose(w.numpy(), 0.42, rtol=1e-6)
    np.testing.assert_allclose(rule.get_slot(w, "velocity").numpy(), -0.38, rtol=1e-6)


def test_golden_nesterov_two_steps():
    w = tf.Variable(1.0)
    rule = gf.SGD(0.1, momentum=0.9, nesterov=True)
    rule.apply([tf.constant(2.0)], [w])
    # v1 = -0.2 ; w1 = 1 + 0.9 * (-0.2) - 0.1 * 2 = 1 - 0.18 - 0.2 = 0.62
    np.testing.assert_allclose(w.numpy(), 0.62, rtol=1e-6)
    rule.apply([tf.constant(2.0)], [w])
    # v2 = 0.9 * (-0.2) - 0.2 = -0.38 ; w2 = 0.62 + 0.9 * (-0.38) - 0.2 = 0.62 - 0.342 - 0.2 = 0.078
    np.testing.assert_allclose(w.numpy(), 0.078, rtol=1e-5)
    np.testing.assert_allclose(rule.get_slot(w, "velocity").numpy(), -0.38, rtol=1e-6)


def test_golden_sparse_duplicate_indices():
    table = tf.Variable(tf.ones([3, 2]))
    rule = gf.SGD(0.1)
    grad = tf.IndexedSlices(
        values=tf.constant([[1.0, 0.0], [2.0, 4.0]]),
        indices=tf.constant([1, 1]),
        dense_shape=tf.constant([3, 2]),
    )
    rule.apply([grad], [table])
    # row 1: 1 - 0.1 * (1 + 2) = 0.7 ; 1 - 0.1 * (0 + 4) = 0.6 ; rows 0 and 2 untouched
    np.testing.assert_allclose(table.numpy(), [[1.0, 1.0], [0.7, 0.6], [1.0, 1.0]], rtol=1e-6)


# -- sparse path ------------------------------------------------------------


def _embedding_gradient(table_init, ids, weights):
    """The gradient of sum(gather(table, ids) * weights) w.r.t. table, as IndexedSlices."""
    table = tf.Variable(table_init)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table, ids) * weights)
    grad = tape.gradient(loss, table)
    assert isinstance(grad, tf.IndexedSlices)
    return grad


@given(
    ids=st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=6), min_size=1, max_size=3),
    momentum=st.sampled_from([0.0, 0.9]),
    nesterov=st.booleans(),
)
def test_sparse_gradients_match_dense(ids, momentum, nesterov):
    rng = np.random.default_rng(len(ids))
    init = rng.standard_normal((6, 3)).astype(np.float32)
    sparse_var, dense_var = tf.Variable(init), tf.Variable(init)
    sparse_rule = gf.SGD(0.1, momentum=momentum, nesterov=nesterov)
    dense_rule = gf.SGD(0.1, momentum=momentum, nesterov=nesterov)
    for step_ids in ids:
        weights = rng.standard_normal((len(step_ids), 3)).astype(np.float32)
        grad = _embedding_gradient(init, tf.constant(step_ids), weights)
        sparse_rule.apply([grad], [sparse_var])
        dense_rule.apply([tf.convert_to_tensor(grad)], [dense_var])
    np.testing.assert_allclose(sparse_var.numpy(), dense_var.numpy(), rtol=1e-6, atol=1e-6)
    if momentum == 0.0:
        touched = sorted({i for step_ids in ids for i in step_ids})
        untouched = [i for i in range(6) if i not in touched]
        np.testing.assert_array_equal(sparse_var.numpy()[untouched], init[untouched])
        # Every touched row with a non-zero gradient changed.
        assert not np.any(np.all(sparse_var.numpy()[touched] == init[touched], axis=1))


# -- None gradients and argument errors --------------------------------------


def _two_variables():
    return tf.Variable([1.0, 2.0]), tf.Variable([[3.0, 4.0]])


def test_none_gradient_is_skipped():
    a, b = _two_variables()
    rule = gf.SGD(0.5, momentum=0.5)
    rule.apply([None, tf.constant([[2.0, 2.0]])], [a, b])
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    # v = -0.5 * 2 = -1 ; b = [3 - 1, 4 - 1]
    np.testing.assert_allclose(b.numpy(), [[2.0, 3.0]])
    assert int(rule.iterations) == 1


def _assert_untouched(rule, a, b):
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(b.numpy(), [[3.0, 4.0]])
    assert int(rule.iterations) == 0


def test_all_none_gradients_raise():
    a, b = _two_variables()
    rule = gf.SGD(0.5)
    with pytest.raises(ValueError, match="No gradients provided"):
        rule.apply([None, None], [a, b])
    _assert_untouched(rule, a, b)


def test_length_mismatch_raises():
    a, b = _two_variables()
    rule = gf.SGD(0.5, momentum=0.9)
    with pytest.raises(ValueError, match="same length"):
        rule.apply([tf.constant([1.0, 1.0])], [a, b])
    _assert_untouched(rule, a, b)


def test_dtype_mismatch_raises_before_any_change():
    a, b = _two_variables()
    rule = gf.SGD(0.5)
    with pytest.raises(TypeError, match="float64"):
        rule.apply([tf.constant([1.0, 1.0]), tf.constant([[1.0, 1.0]], tf.float64)], [a, b])
    _assert_untouched(rule, a, b)


def test_shape_mismatch_raises_before_any_change():
    a, b = _two_variables()
    rule = gf.SGD(0.5)
    with pytest.raises(ValueError, match="shape"):
        rule.apply([tf.constant([1.0, 1.0]), tf.constant([1.0, 1.0])], [a, b])
    _assert_untouched(rule, a, b)


def test_sparse_shape_mismatch_raises_before_any_change():
    # An IndexedSlices whose rows are 1 wide cannot update a [1, 2] variable.
    a, b = _two_variables()
    rule = gf.SGD(0.5)
    bad = tf.IndexedSlices(tf.constant([[1.0]]), tf.constant([0]), tf.constant([1, 1]))
    with pytest.raises(ValueError, match="shape"):
        rule.apply([tf.constant([1.0, 1.0]), bad], [a, b])
    _assert_untouched(rule, a, b)


# -- hyperparameter validation -----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "echo"),
    [
        ({"learning_rate": -0.1}, ValueError, "learning_rate=-0.1"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate=nan"),
        ({"learning_rate": float("inf")}, ValueError, "learning_rate=inf"),
        ({"learning_rate": "0.1"}, TypeError, "learning_rate='0.1'"),
        ({"momentum": -0.1}, ValueError, "momentum=-0.1"),
        ({"momentum": 1.0}, ValueError, "momentum=1.0"),
        ({"momentum": float("nan")}, ValueError, "momentum=nan"),
        ({"nesterov": "yes"}, TypeError, "nesterov='yes'"),
        ({"nesterov": 1}, TypeError, "nesterov=1"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, error, echo):
    (name,) = kwargs
    with pytest.raises(error) as info:
        gf.SGD(**kwargs)
    message = str(info.value)
    assert f"`{name}`" in message
    assert f"Received: {echo}" in message


# -- learning rate as a variable, iterations ----------------------------------


def test_learning_rate_change_does_not_retrace():
    w = tf.Variable(1.0)
    rule = gf.SGD(0.1)

    @tf.function
    def step(grad):
        rule.apply([grad], [w])

    step(tf.constant(2.0))
    # 1 - 0.1 * 2 = 0.8
    np.testing.assert_allclose(w.numpy(), 0.8, rtol=1e-6)
    rule.learning_rate = 0.5
    step(tf.constant(2.0))
    # 0.8 - 0.5 * 2 = -0.2
    np.testing.assert_allclose(w.numpy(), -0.2, rtol=1e-5)
    assert step.experimental_get_tracing_count() == 1
    assert int(rule.iterations) == 2

    with pytest.raises(ValueError, match=r"`learning_rate`.*Received: learning_rate=-1\.0"):
        rule.learning_rate = -1.0
    with pytest.raises(TypeError, match="`learning_rate`"):
        rule.learning_rate = "fast"
    assert float(rule.learning_rate.numpy()) == 0.5


def test_iterations_count_applies():
    w = tf.Variable([1.0, 1.0])
    rule = gf.SGD(0.1, momentum=0.5)
    assert int(rule.iterations) == 0
    for expected in range(1, 4):
        rule.apply([tf.constant([1.0, -1.0])], [w])
        assert int(rule.iterations) == expected


# -- execution modes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("momentum", "nesterov", "sparse"), [(0.0, False, True), (0.9, True, False)]
)
def test_eager_function_and_xla_agree(momentum, nesterov, sparse):
    init = _random_arrays(np.random.default_rng(3), [(4, 3), (5,)])
    sequence = _gradient_sequence(seed=5, steps=20, shapes=[(2, 3), (5,)])
    indices = tf.constant([3, 0])

    def run(mode):
        variables = _variables(init)
        rule = gf.SGD(0.05, momentum=momentum, nesterov=nesterov)
        rule.build(variables)

        def step(rows, grad):
            first = tf.IndexedSlices(rows, indices, tf.constant([4, 3]))
            if not sparse:
                first = tf.convert_to_tensor(first)
            rule.apply([first, grad], variables)

        if mode != "eager":
            step = tf.function(step, jit_compile=mode == "xla")
        for rows, grad in sequence:
            step(tf.constant(rows), tf.constant(grad))
        if mode != "eager":
            assert step.experimental_get_tracing_count() == 1
        assert int(rule.iterations) == 20
        return _values(variables)

    eager, graph, xla = run("eager"), run("graph"), run("xla")
    for e, g, x in zip(eager, graph, xla, strict=True):
        np.testing.assert_array_equal(e, g)
        # XLA on CPU contracts a * b + c into fused multiply-adds, so its last bits
        # differ from the unfused kernels; it agrees to float32 rounding.
        np.testing.assert_allclose(e, x, rtol=1e-6, atol=1e-6)


# -- dtypes --------------------------------------------------------------------


def _numpy_sgd(w, grads, lr, momentum, nesterov, dtype, slot_dtype):
    w = np.array(w, dtype)
    velocity = np.zeros_like(w, slot_dtype)
    # The learning rate is held in a float32 variable and cast to the update's dtype.
    lr_slot, mu = slot_dtype(np.float32(lr)), slot_dtype(momentum)
    for g in grads:
        g = np.asarray(g, dtype).astype(slot_dtype)
        velocity = mu * velocity - lr_slot * g
        delta = mu * velocity - lr_slot * g if nesterov else velocity
        w = (w + delta.astype(dtype)).astype(dtype)
    return w


@pytest.mark.parametrize("nesterov", [False, True])
def test_float64_variables(nesterov):
    init = np.array([0.5, -1.5, 2.0])
    grads = _gradient_sequence(seed=1, steps=10, shapes=[(3,)], dtype=np.float64)
    w = tf.Variable(init)
    rule = gf.SGD(0.1, momentum=0.9, nesterov=nesterov)
    for (g,) in grads:
        rule.apply([tf.constant(g)], [w])
    assert w.dtype == tf.float64
    assert rule.get_slot(w, "velocity").dtype == tf.float64
    expected = _numpy_sgd(init, [g for (g,) in grads], 0.1, 0.9, nesterov, np.float64, np.float64)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_slots_are_float32(dtype):
    w = tf.Variable(tf.constant([1.0, 2.0], dtype))
    rule = gf.SGD(0.25, momentum=0.5)
    rule.apply([tf.constant([2.0, -2.0], dtype)], [w])
    velocity = rule.get_slot(w, "velocity")
    assert velocity.dtype == tf.float32
    assert w.dtype == dtype
    # v = 0.5 * 0 - 0.25 * [2, -2] = [-0.5, 0.5] ; w = [1 - 0.5, 2 + 0.5] = [0.5, 2.5]
    np.testing.assert_array_equal(velocity.numpy(), [-0.5, 0.5])
    np.testing.assert_array_equal(tf.cast(w, tf.float32).numpy(), [0.5, 2.5])


def test_float16_matches_numpy_reference():
    init = np.array([0.5, -1.5, 2.0, 0.25], np.float16)
    grads = [g for (g,) in _gradient_sequence(seed=2, steps=10, shapes=[(4,)], dtype=np.float16)]
    for momentum in (0.0, 0.9):
        w = tf.Variable(init)
        rule = gf.SGD(0.125, momentum=momentum, nesterov=True)
        for g in grads:
            rule.apply([tf.constant(g)], [w])
        assert w.dtype == tf.float16
        slot_dtype = np.float32 if momentum else np.float16
        expected = _numpy_sgd(init, grads, 0.125, momentum, True, np.float16, slot_dtype)
        np.testing.assert_allclose(w.numpy(), expected, rtol=2e-3, atol=2e-3)
        assert not np.allclose(w.numpy(), init)


# -- checkpoints -----------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    init = _random_arrays(np.random.default_rng(4), SHAPES)
    sequence = _gradient_sequence(seed=9, steps=10)

    def new_rule():
        return gf.SGD(0.05, momentum=0.9, nesterov=True)

    def step(rule, variables, grads):
        rule.apply([tf.constant(g) for g in grads], variables)

    straight_vars, straight = _variables(init), new_rule()
    straight.learning_rate = 0.07
    for grads in sequence:
        step(straight, straight_vars, grads)

    first_vars, first = _variables(init), new_rule()
    first.learning_rate = 0.07
    for grads in sequence[:5]:
        step(first, first_vars, grads)
    path = tf.train.Checkpoint(rule=first, vars=first_vars).save(str(tmp_path / "ckpt"))

    resumed_vars = [tf.Variable(tf.zeros_like(x)) for x in init]
    resumed = new_rule()  # learning rate 0.05 until restored
    resumed.build(resumed_vars)
    tf.train.Checkpoint(rule=resumed, vars=resumed_vars).restore(path).assert_consumed()
    assert int(resumed.iterations) == 5
    assert float(resumed.learning_rate.numpy()) == pytest.approx(0.07)
    for mine, theirs in zip(resumed_vars, first_vars, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
        np.testing.assert_array_equal(
            resumed.get_slot(mine, "velocity").numpy(), first.get_slot(theirs, "velocity").numpy()
        )
        assert np.any(resumed.get_slot(mine, "velocity").numpy() != 0)

    for grads in sequence[5:]:
        step(resumed, resumed_vars, grads)
    assert int(resumed.iterations) == 10
    for mine, theirs in zip(resumed_vars, straight_vars, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_repr_shows_hyperparameters():
    assert repr(gf.SGD(0.5, momentum=0.25, nesterov=True)) == (
        "SGD(learning_rate=0.5, momentum=0.25, nesterov=True)"
    )


# -- weight decay (Keras's decoupled decay) ---------------------------------------


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.9, True)])
def test_weight_decay_matches_keras_over_100_steps(momentum, nesterov):
    kwargs = {"learning_rate": 0.05, "momentum": momentum, "nesterov": nesterov}
    assert_matches_keras(
        gf.SGD(**kwargs, weight_decay=0.1),
        keras.optimizers.SGD(**kwargs, weight_decay=0.1),
        seed=90,
    )


def test_golden_weight_decay_touches_every_row_of_a_sparse_update():
    table = tf.Variable(tf.ones([3, 2]))
    rule = gf.SGD(0.1, weight_decay=0.5)
    grad = tf.IndexedSlices(tf.constant([[1.0, 2.0]]), tf.constant([1]), tf.constant([3, 2]))
    rule.apply([grad], [table])
    # every row decays: 1 - 1 * 0.5 * 0.1 = 0.95 ; row 1 then steps: 0.95 - 0.1 * [1, 2]
    np.testing.assert_allclose(table.numpy(), [[0.95, 0.95], [0.85, 0.75], [0.95, 0.95]], rtol=1e-6)


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_invalid_weight_decay_raises(bad):
    with pytest.raises(ValueError, match=r"`weight_decay`.*Received: weight_decay="):
        gf.SGD(0.1, weight_decay=bad)


def test_repr_shows_weight_decay_when_set():
    assert repr(gf.SGD(0.5, weight_decay=0.01)) == (
        "SGD(learning_rate=0.5, momentum=0.0, nesterov=False, weight_decay=0.01)"
    )
