"""Tests of gf.chain, gf.accumulate and the clipping transforms."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from tests.update_rules.helpers import assert_bad_hyperparameter, assert_matches_keras

# -- clipping: Keras equivalence and golden values -----------------------------------------


def test_clip_by_global_norm_then_adam_matches_keras_global_clipnorm():
    # Random gradients have global norms of 2-5, so a bound of 1.5 clips most steps.
    assert_matches_keras(
        gf.chain(gf.clip_by_global_norm(1.5), gf.Adam(1e-2)),
        keras.optimizers.Adam(1e-2, global_clipnorm=1.5),
        seed=60,
    )


def test_clip_by_value_then_sgd_matches_keras_clipvalue():
    assert_matches_keras(
        gf.chain(gf.clip_by_value(0.5), gf.SGD(0.05, momentum=0.9)),
        keras.optimizers.SGD(0.05, momentum=0.9, clipvalue=0.5),
        seed=61,
    )


def test_clip_by_global_norm_golden():
    clip = gf.clip_by_global_norm(1.0)
    # global norm = sqrt(3^2 + 4^2 + 0^2) = 5 > 1: every gradient is scaled by 1 / 5
    small, large = clip([tf.constant([3.0, 4.0]), tf.constant(0.0)])
    np.testing.assert_allclose(small.numpy(), [0.6, 0.8], rtol=1e-6)
    assert large.numpy() == 0.0
    # global norm = 0.5 <= 1: unchanged
    (same,) = clip([tf.constant([0.3, 0.4])])
    np.testing.assert_allclose(same.numpy(), [0.3, 0.4], rtol=1e-6)


def test_clipping_sums_repeated_rows_of_sparse_gradients_first():
    # Two parts of row 1: the dense gradient's row 1 is [2, 4].
    grad = tf.IndexedSlices(tf.constant([[1.0, 2.0], [1.0, 2.0]]), tf.constant([1, 1]), [3, 2])
    (by_value,) = gf.clip_by_value(1.5)([grad])
    # clip([2, 4]) = [1.5, 1.5], not clip([1, 2]) twice = [2, 2.5]
    np.testing.assert_allclose(tf.convert_to_tensor(by_value).numpy()[1], [1.5, 1.5])
    (by_norm,) = gf.clip_by_global_norm(1.0)([grad])
    # norm of [2, 4] = sqrt(20) = 4.4721360 ; scaled to [0.4472136, 0.8944272]
    np.testing.assert_allclose(
        tf.convert_to_tensor(by_norm).numpy()[1], [0.4472136, 0.8944272], rtol=1e-6
    )


def test_a_plain_callable_is_a_transform():
    w = tf.Variable(1.0)
    rule = gf.chain(lambda gradients: [2.0 * g for g in gradients], gf.SGD(0.1))
    rule.apply([tf.constant(1.0)], [w])
    # w = 1 - 0.1 * (2 * 1) = 0.8
    np.testing.assert_allclose(w.numpy(), 0.8, rtol=1e-6)


def test_nesting_order_decides_what_is_clipped():
    def run(rule):
        w = tf.Variable(0.0)
        rule.apply([tf.constant(4.0)], [w])
        rule.apply([tf.constant(0.0)], [w])
        return float(w.numpy())

    # Clip every micro-batch, then average: (clip(4) + clip(0)) / 2 = 0.5 ; w = 0 - 1 * 0.5
    assert run(gf.chain(gf.clip_by_value(1.0), gf.accumulate(2, gf.SGD(1.0)))) == -0.5
    # Average, then clip: clip((4 + 0) / 2) = 1 ; w = 0 - 1 * 1
    assert run(gf.accumulate(2, gf.chain(gf.clip_by_value(1.0), gf.SGD(1.0)))) == -1.0


# -- accumulation ---------------------------------------------------------------------------

K, B, UPDATES = 4, 8, 5


def _regression_data():
    rng = np.random.default_rng(70)
    x = rng.standard_normal((K * B, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)
    return tf.constant(x), tf.constant(y)


def _gradients(params, x, y):
    w, b = params
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(x @ w + b - y))
    return tape.gradient(loss, [w, b])


@pytest.mark.parametrize(
    "make",
    [lambda: gf.SGD(0.05, momentum=0.9), lambda: gf.Adam(0.05)],
    ids=["sgd-momentum", "adam"],
)
def test_k_micro_batches_update_as_one_batch_of_k_times_b(make):
    x, y = _regression_data()
    full = [tf.Variable(tf.zeros([3, 1])), tf.Variable(tf.zeros([1]))]
    micro = [tf.Variable(tf.zeros([3, 1])), tf.Variable(tf.zeros([1]))]
    full_rule = make()
    inner = make()
    micro_rule = gf.accumulate(K, inner)
    full_rule.build(full)
    micro_rule.build(micro)

    @tf.function
    def train():
        for _ in tf.range(UPDATES):
            full_rule.apply(_gradients(full, x, y), full)
            for k in range(K):
                part = slice(k * B, (k + 1) * B)
                micro_rule.apply(_gradients(micro, x[part], y[part]), micro)

    train()
    for mine, theirs in zip(micro, full, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6)
        assert not np.allclose(theirs.numpy(), 0.0)
    # The inner rule counts real updates (Adam's bias correction depends on it).
    assert int(inner.iterations) == UPDATES == int(full_rule.iterations)
    assert int(micro_rule.iterations) == K * UPDATES


def test_variables_change_only_on_every_kth_micro_batch():
    w = tf.Variable(1.0)
    rule = gf.accumulate(3, gf.SGD(0.1))
    values = []
    for g in [1.0, 2.0, 6.0, 3.0]:
        rule.apply([tf.constant(g)], [w])
        values.append(float(w.numpy()))
    # micro-batches 1 and 2 only accumulate; the 3rd updates with the mean (1 + 2 + 6) / 3 = 3:
    # w = 1 - 0.1 * 3 = 0.7 ; the 4th starts a new sum.
    np.testing.assert_allclose(values, [1.0, 1.0, 0.7, 0.7], rtol=1e-6)
    np.testing.assert_allclose(rule.get_slot(w, "gradient_sum").numpy(), 3.0)
    assert int(rule.rule.iterations) == 1


def test_accumulation_in_a_trainer_traces_once_and_counts_real_updates():
    x, y = _regression_data()
    inner = gf.Adam(0.05)
    rule = gf.accumulate(K, inner)
    trainer = gf.Trainer(gf.LinearModel(weight_init=0.0), gf.L2(), rule)
    history = trainer.fit(x.numpy(), y.numpy(), epochs=3, batch_size=B, shuffle=False)
    # K * B examples in batches of B: K micro-batches, one real update, per epoch.
    assert int(rule.iterations) == 3 * K
    assert int(inner.iterations) == 3
    assert trainer.train_function.experimental_get_tracing_count() == 1
    assert history.history["loss"][-1] < history.history["loss"][0]


# -- the composed rule is an UpdateRule --------------------------------------------------------


def test_learning_rate_is_the_inner_rules():
    inner = gf.SGD(0.25)
    rule = gf.accumulate(2, gf.chain(gf.clip_by_global_norm(1.0), inner))
    assert float(rule.current_learning_rate()) == 0.25
    rule.learning_rate = 0.5
    assert float(inner.learning_rate.numpy()) == 0.5
    assert rule.learning_rate is inner.learning_rate


def test_repr_shows_the_composition():
    rule = gf.accumulate(2, gf.chain(gf.clip_by_global_norm(1.0), gf.clip_by_value(0.5), gf.SGD()))
    assert repr(rule) == (
        "accumulate(2, chain(clip_by_global_norm(1.0), clip_by_value(0.5), "
        "SGD(learning_rate=0.01, momentum=0.0, nesterov=False)))"
    )


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "echo"),
    [
        (gf.clip_by_global_norm, {"max_norm": 0.0}, ValueError, "max_norm=0.0"),
        (gf.clip_by_global_norm, {"max_norm": "1"}, TypeError, "max_norm='1'"),
        (gf.clip_by_value, {"limit": -1.0}, ValueError, "limit=-1.0"),
        (gf.clip_by_value, {"limit": float("inf")}, ValueError, "limit=inf"),
    ],
)
def test_invalid_transform_arguments_raise(make, kwargs, error, echo):
    assert_bad_hyperparameter(make, kwargs, error, echo)


def test_invalid_accumulate_arguments_raise():
    assert_bad_hyperparameter(
        lambda steps: gf.accumulate(steps, gf.SGD()), {"steps": 0}, ValueError, "steps=0"
    )
    assert_bad_hyperparameter(
        lambda steps: gf.accumulate(steps, gf.SGD()), {"steps": 1.5}, TypeError, "steps=1.5"
    )
    optimizer = keras.optimizers.Adam()
    with pytest.raises(TypeError, match=r"`rule`.*KerasOptimizer"):
        gf.accumulate(2, optimizer)


def test_invalid_chain_arguments_raise():
    with pytest.raises(TypeError, match="last argument"):
        gf.chain()
    with pytest.raises(TypeError, match="`rule`"):
        gf.chain(gf.clip_by_value(1.0))
    with pytest.raises(TypeError, match="`transforms`"):
        gf.chain(gf.SGD(), gf.Adam())
    with pytest.raises(TypeError, match="`transforms`"):
        gf.chain(1.0, gf.Adam())


def test_a_transform_returning_the_wrong_number_of_gradients_raises_before_any_change():
    w = tf.Variable(1.0)
    rule = gf.chain(lambda gradients: [], gf.SGD(0.1))
    with pytest.raises(ValueError, match="one gradient per input gradient"):
        rule.apply([tf.constant(1.0)], [w])
    assert w.numpy() == 1.0
    assert int(rule.iterations) == 0
