"""Tests of gf.KerasOptimizer: a Keras 3 optimizer used as a gradfit UpdateRule."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf

SHAPES = [(), (3,), (2, 4)]


def _setup(seed=0, steps=20):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]
    sequence = [
        [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES] for _ in range(steps)
    ]
    return init, sequence


def _assert_same(mine, theirs, init):
    for m, t, start in zip(mine, theirs, init, strict=True):
        np.testing.assert_allclose(m.numpy(), t.numpy(), rtol=1e-6, atol=1e-7)
        assert not np.allclose(m.numpy(), start)  # the variables really moved


def test_adam_matches_keras_adam():
    init, sequence = _setup()
    gf_vars = [tf.Variable(x) for x in init]
    keras_vars = [tf.Variable(x) for x in init]
    rule = gf.KerasOptimizer(keras.optimizers.Adam(1e-2))
    opt = keras.optimizers.Adam(1e-2)
    for grads in sequence:
        tensors = [tf.constant(g) for g in grads]
        rule.apply(tensors, gf_vars)
        opt.apply(tensors, keras_vars)
    _assert_same(gf_vars, keras_vars, init)
    assert int(rule.iterations) == 20
    assert int(rule.optimizer.iterations) == 20


def test_adam_inside_tf_function():
    init, sequence = _setup(seed=1)
    gf_vars = [tf.Variable(x) for x in init]
    keras_vars = [tf.Variable(x) for x in init]
    rule = gf.KerasOptimizer(keras.optimizers.Adam(1e-2))
    rule.build(gf_vars)
    opt = keras.optimizers.Adam(1e-2)

    @tf.function
    def step(grads):
        rule.apply(grads, gf_vars)

    for grads in sequence:
        step([tf.constant(g) for g in grads])
        opt.apply([tf.constant(g) for g in grads], keras_vars)
    assert step.experimental_get_tracing_count() == 1
    _assert_same(gf_vars, keras_vars, init)
    assert int(rule.iterations) == 20


def test_none_gradients_are_skipped():
    a, b = tf.Variable([1.0, 2.0]), tf.Variable(3.0)
    rule = gf.KerasOptimizer(keras.optimizers.SGD(0.5))
    rule.apply([None, tf.constant(2.0)], [a, b])
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0])
    np.testing.assert_allclose(b.numpy(), 2.0)  # 3 - 0.5 * 2
    with pytest.raises(ValueError, match="No gradients provided"):
        rule.apply([None, None], [a, b])
    assert int(rule.iterations) == 1


def test_sparse_gradients_update_as_dense_ones_even_with_repeated_indices():
    # Keras 3's TensorFlow backend applies each repeated index of an IndexedSlices on its
    # own (Adam squares the parts, not their sum), so the wrapper sums repeats first: the
    # result is the dense gradient's, and untouched rows stay untouched.
    init = np.arange(12, dtype=np.float32).reshape(4, 3)
    mine, dense = tf.Variable(init), tf.Variable(init)
    rule = gf.KerasOptimizer(keras.optimizers.Adam(1e-2))
    opt = keras.optimizers.Adam(1e-2)
    for ids in ([1, 3], [0, 0, 3]):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(mine, ids) ** 2)
        grad = tape.gradient(loss, mine)
        assert isinstance(grad, tf.IndexedSlices)
        rule.apply([grad], [mine])
        opt.apply([tf.convert_to_tensor(grad)], [dense])
    np.testing.assert_allclose(mine.numpy(), dense.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(mine.numpy()[2], init[2])  # row 2 was never touched
    assert not np.allclose(mine.numpy()[0], init[0])


def test_learning_rate_is_the_optimizers():
    rule = gf.KerasOptimizer(keras.optimizers.SGD(0.25))
    np.testing.assert_allclose(float(rule.current_learning_rate()), 0.25)
    rule.learning_rate = 0.5
    np.testing.assert_allclose(float(rule.optimizer.learning_rate.numpy()), 0.5)
    w = tf.Variable(1.0)
    rule.apply([tf.constant(2.0)], [w])
    np.testing.assert_allclose(w.numpy(), 0.0)  # 1 - 0.5 * 2


def test_checkpoint_round_trip(tmp_path):
    init, sequence = _setup(seed=2, steps=6)

    def step(rule, variables, grads):
        rule.apply([tf.constant(g) for g in grads], variables)

    straight_vars = [tf.Variable(x) for x in init]
    straight = gf.KerasOptimizer(keras.optimizers.Adam(1e-2))
    for grads in sequence:
        step(straight, straight_vars, grads)

    first_vars = [tf.Variable(x) for x in init]
    first = gf.KerasOptimizer(keras.optimizers.Adam(1e-2))
    for grads in sequence[:3]:
        step(first, first_vars, grads)
    path = tf.train.Checkpoint(rule=first, vars=first_vars).save(str(tmp_path / "ckpt"))

    resumed_vars = [tf.Variable(tf.zeros_like(x)) for x in init]
    resumed = gf.KerasOptimizer(keras.optimizers.Adam(1e-2))
    resumed.build(resumed_vars)
    tf.train.Checkpoint(rule=resumed, vars=resumed_vars).restore(path).assert_consumed()
    assert int(resumed.iterations) == 3
    assert int(resumed.optimizer.iterations) == 3
    for grads in sequence[3:]:
        step(resumed, resumed_vars, grads)
    for mine, theirs in zip(resumed_vars, straight_vars, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_variables_added_after_build_are_updated_or_rejected_untouched():
    # build() promises to add state for variables it has not seen. A Keras optimizer
    # cannot grow after it is built, so the wrapper must either update the new variable
    # like a fresh optimizer would, or reject the call before changing anything.
    a, b = tf.Variable([1.0, 2.0]), tf.Variable([3.0])
    rule = gf.KerasOptimizer(keras.optimizers.SGD(0.5))
    rule.apply([tf.constant([1.0, 1.0])], [a])  # a = [0.5, 1.5]
    try:
        rule.apply([tf.constant([1.0, 1.0]), tf.constant([2.0])], [a, b])
    except ValueError:
        np.testing.assert_array_equal(a.numpy(), [0.5, 1.5])
        np.testing.assert_array_equal(b.numpy(), [3.0])
        assert int(rule.iterations) == 1
    else:
        np.testing.assert_allclose(a.numpy(), [0.0, 1.0])  # 0.5 - 0.5 * 1
        np.testing.assert_allclose(b.numpy(), [2.0])  # 3 - 0.5 * 2
        assert int(rule.iterations) == 2


@pytest.mark.parametrize("bad", ["adam", gf.SGD(0.1), None, keras.optimizers.Adam])
def test_non_optimizer_raises_type_error(bad):
    with pytest.raises(TypeError, match="`optimizer`") as info:
        gf.KerasOptimizer(bad)
    assert f"Received: optimizer={bad!r}"[:60] in str(info.value)


def test_trainer_rejects_raw_keras_optimizer():
    with pytest.raises(TypeError, match="KerasOptimizer"):
        gf.Trainer(gf.LinearModel(), gf.L2(), keras.optimizers.Adam(1e-3))
