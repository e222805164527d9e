"""Tests of gradfit.training.LossScale: Keras's dynamic loss scaling, in-graph."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.training import LossScale

# ---------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------


def test_defaults_are_keras_s():
    ls = LossScale()
    assert ls.scale.numpy() == 2.0**15
    assert ls.counter.numpy() == 0
    assert ls.growth_steps == 2000
    assert (ls.scale.dtype, ls.counter.dtype) == (tf.float32, tf.int64)
    assert not ls.scale.trainable and not ls.counter.trainable
    assert ls.trainable_variables == ()


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"initial_scale": 0.0}, ValueError, "Received: initial_scale=0.0"),
        ({"initial_scale": -2.0}, ValueError, "Received: initial_scale=-2.0"),
        ({"initial_scale": float("inf")}, ValueError, "Received: initial_scale=inf"),
        ({"initial_scale": float("nan")}, ValueError, "Received: initial_scale=nan"),
        ({"initial_scale": 1e39}, ValueError, "Received: initial_scale=1e+39"),  # inf in float32
        ({"initial_scale": "big"}, TypeError, "Received: initial_scale='big'"),
        ({"initial_scale": True}, TypeError, "Received: initial_scale=True"),
        ({"growth_steps": 0}, ValueError, "Received: growth_steps=0"),
        ({"growth_steps": 2.5}, TypeError, "Received: growth_steps=2.5"),
        ({"growth_steps": True}, TypeError, "Received: growth_steps=True"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, error, text):
    name = next(iter(kwargs))
    with pytest.raises(error, match=f"`{name}`") as info:
        LossScale(**kwargs)
    assert text in str(info.value)


# ---------------------------------------------------------------------------
# scale_loss and unscale
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [tf.float16, tf.float32, tf.float64])
def test_scale_loss_multiplies_in_the_loss_dtype(dtype):
    ls = LossScale(4.0)
    scaled = ls.scale_loss(tf.constant(1.5, dtype))
    assert scaled.dtype == dtype
    assert scaled.numpy() == 6.0  # 1.5 * 4


def test_unscale_divides_each_gradient_in_its_dtype():
    ls = LossScale(2.0**17)
    sparse = tf.IndexedSlices(tf.constant([[2.0**18, 2.0**19]]), tf.constant([3]), [5, 2])
    grads = [
        tf.constant([2.0**17, 2.0**16]),
        None,
        sparse,
        tf.constant(2.0, tf.float16),  # 2 / 2**17 = 2**-16, representable only as a subnormal
        tf.constant([2.0**20], tf.float64),
    ]
    unscaled, finite = ls.unscale(grads)
    assert bool(finite.numpy())
    assert finite.dtype == tf.bool and finite.shape == ()
    np.testing.assert_array_equal(unscaled[0].numpy(), [1.0, 0.5])
    assert unscaled[1] is None
    assert isinstance(unscaled[2], tf.IndexedSlices)
    np.testing.assert_array_equal(unscaled[2].values.numpy(), [[2.0, 4.0]])
    np.testing.assert_array_equal(unscaled[2].indices.numpy(), [3])
    # 2**17 is not a float16 number (max 65504): the division is in float32, then cast.
    assert unscaled[3].dtype == tf.float16
    assert float(unscaled[3].numpy()) == 2.0**-16
    assert unscaled[4].dtype == tf.float64
    assert unscaled[4].numpy()[0] == 8.0


@pytest.mark.parametrize(
    "bad",
    [
        tf.constant([1.0, np.inf]),
        tf.constant([np.nan]),
        tf.IndexedSlices(tf.constant([[np.nan]]), tf.constant([0]), [2, 1]),
        tf.constant([-np.inf], tf.float16),
    ],
)
def test_unscale_flags_non_finite_gradients(bad):
    _, finite = LossScale().unscale([tf.constant([1.0]), None, bad])
    assert not bool(finite.numpy())


def test_unscale_of_only_none_is_finite():
    unscaled, finite = LossScale().unscale([None, None])
    assert unscaled == [None, None]
    assert bool(finite.numpy())


# ---------------------------------------------------------------------------
# update: Keras's rule, eagerly, in tf.function and under XLA
# ---------------------------------------------------------------------------

# (finite, scale after, counter after), from scale 8 with growth_steps=3.
_SCHEDULE = [
    (True, 8.0, 1),
    (True, 8.0, 2),
    (True, 16.0, 0),  # third finite step in a row: double, reset
    (False, 8.0, 0),  # overflow: halve, reset
    (True, 8.0, 1),
    (True, 8.0, 2),
    (False, 4.0, 0),  # an overflow resets the run of finite steps
    (False, 2.0, 0),
    (True, 2.0, 1),
    (True, 2.0, 2),
    (True, 4.0, 0),
    (True, 4.0, 1),
]


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_update_follows_keras_rule(mode):
    ls = LossScale(8.0, growth_steps=3)
    update = {
        "eager": ls.update,
        "function": tf.function(ls.update),
        "xla": tf.function(ls.update, jit_compile=True),
    }[mode]
    for step, (finite, scale, counter) in enumerate(_SCHEDULE):
        new_scale = update(tf.constant(finite))
        assert (ls.scale.numpy(), ls.counter.numpy()) == (scale, counter), step
        assert new_scale.numpy() == scale
    if mode != "eager":
        assert update.experimental_get_tracing_count() == 1


def test_a_restored_counter_past_growth_steps_still_grows():
    ls = LossScale(1.0, growth_steps=3)
    ls.counter.assign(10)  # e.g. restored from a run with more growth steps
    ls.update(True)
    assert (ls.scale.numpy(), ls.counter.numpy()) == (2.0, 0)


def test_checkpoint_round_trips_scale_and_counter(tmp_path):
    ls = LossScale(2.0**15, growth_steps=3)
    for finite in (False, False, True):
        ls.update(finite)
    assert (ls.scale.numpy(), ls.counter.numpy()) == (2.0**13, 1)
    path = tf.train.Checkpoint(loss_scale=ls).save(str(tmp_path / "ckpt"))

    fresh = LossScale(2.0**15, growth_steps=3)
    tf.train.Checkpoint(loss_scale=fresh).restore(path).assert_consumed()
    assert (fresh.scale.numpy(), fresh.counter.numpy()) == (2.0**13, 1)


# ---------------------------------------------------------------------------
# apply_if_finite with update rules
# ---------------------------------------------------------------------------


def _rule_state(rule: gf.UpdateRule) -> list[np.ndarray]:
    variables = list(rule.variables)
    if isinstance(rule, gf.KerasOptimizer):
        variables += [var.value for var in rule.optimizer.variables]
    return [var.numpy().copy() for var in variables]


def _make_step(ls, rule, variables, jit_compile):
    def step(x, factor):
        with tf.GradientTape() as tape:
            loss = factor * tf.reduce_sum(variables[0] * x) + tf.reduce_sum(variables[1] ** 2)
            scaled = ls.scale_loss(loss)
        grads, finite = ls.unscale(tape.gradient(scaled, variables))
        ls.apply_if_finite(finite, lambda: rule.apply(grads, variables))
        return finite

    if jit_compile is None:
        return step
    return tf.function(step, jit_compile=jit_compile)


_RULES = {
    "sgd": lambda: gf.SGD(0.1),
    "adam": lambda: gf.Adam(1e-3),
    "keras_adam": lambda: gf.KerasOptimizer(keras.optimizers.Adam(1e-3)),
}
_CASES = [
    ("sgd", None),
    ("sgd", False),
    ("sgd", True),
    ("adam", False),
    ("adam", True),
    ("keras_adam", None),
    ("keras_adam", False),
]


@pytest.mark.parametrize(("rule_name", "jit_compile"), _CASES)
def test_overflow_is_skipped_and_finite_steps_match_unscaled_training(rule_name, jit_compile):
    ls = LossScale(2.0**10, growth_steps=2)
    rule, reference = _RULES[rule_name](), _RULES[rule_name]()
    variables = [tf.Variable([1.0, -2.0]), tf.Variable(0.5)]
    ref_variables = [tf.Variable(var) for var in variables]
    rule.build(variables)  # eagerly, before tracing
    reference.build(ref_variables)
    step = _make_step(ls, rule, variables, jit_compile)
    x = tf.constant([3.0, 1.0])

    # An overflow step (an infinite loss) changes neither the model nor the rule.
    before_vars = [var.numpy() for var in variables]
    before_rule = _rule_state(rule)
    finite = step(x, tf.constant(np.inf))
    assert not bool(finite.numpy())
    for var, old in zip(variables, before_vars, strict=True):
        np.testing.assert_array_equal(var.numpy(), old)
    for new, old in zip(_rule_state(rule), before_rule, strict=True):
        np.testing.assert_array_equal(new, old)
    assert (ls.scale.numpy(), ls.counter.numpy()) == (2.0**9, 0)

    # Finite steps update as the unscaled loss would: d/dw = factor * x, d/db = 2 b.
    for k in range(3):
        assert bool(step(x, tf.constant(1.0)).numpy())
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(ref_variables[0] * x) + tf.reduce_sum(ref_variables[1] ** 2)
        reference.apply(tape.gradient(loss, ref_variables), ref_variables)
        for var, ref in zip(variables, ref_variables, strict=True):
            np.testing.assert_allclose(var.numpy(), ref.numpy(), rtol=1e-6, atol=1e-7)
        assert ls.counter.numpy() == (1, 0, 1)[k]
    assert ls.scale.numpy() == 2.0**10  # doubled after the second finite step
    assert int(rule.iterations.numpy()) == 3
    if rule_name == "sgd":
        # By hand: w <- w - 0.1 * x three times; b <- 0.8 b three times.
        np.testing.assert_allclose(variables[0].numpy(), [1.0 - 0.9, -2.0 - 0.3], rtol=1e-6)
        np.testing.assert_allclose(variables[1].numpy(), 0.5 * 0.8**3, rtol=1e-6)
    if jit_compile is not None:
        assert step.experimental_get_tracing_count() == 1


# ---------------------------------------------------------------------------
# A float16 MLP
# ---------------------------------------------------------------------------


def _data() -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = np.sin(x.sum(axis=1, keepdims=True)).astype(np.float32)
    return tf.constant(x), tf.constant(y)


def _mse(model: gf.Model, x: tf.Tensor, y: tf.Tensor, weight: float = 1.0) -> tf.Tensor:
    return weight * tf.reduce_mean((model(x) - y) ** 2)


def test_scaling_recovers_float16_gradients_that_underflow():
    x, y = _data()
    model = gf.MLP([16], activation="tanh", seed=0, dtype="mixed_float16")
    exact = gf.MLP([16], activation="tanh", seed=0)  # the same start, in float32
    tiny = 1e-7  # a loss this small has float16 gradients below the smallest subnormal

    with tf.GradientTape(persistent=True) as tape:
        loss = _mse(model, x, y, tiny)
        scaled = LossScale().scale_loss(loss)
    plain = tape.gradient(loss, model.trainable_variables)
    unscaled, finite = LossScale().unscale(tape.gradient(scaled, model.trainable_variables))
    with tf.GradientTape() as tape32:
        loss32 = _mse(exact, x, y, tiny)
    want = tape32.gradient(loss32, exact.trainable_variables)

    assert bool(finite.numpy())
    assert all(np.all(g.numpy() == 0) for g in plain)  # unscaled float16 backprop underflows
    for g, w in zip(unscaled, want, strict=True):
        assert g.dtype == tf.float32
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=0, atol=2e-2 * np.abs(w).max())


def test_float16_training_with_scaling_equals_training_without_when_nothing_overflows():
    x, y = _data()
    scaled_model = gf.MLP([16], activation="tanh", seed=0, dtype="mixed_float16")
    plain_model = gf.MLP([16], activation="tanh", seed=0, dtype="mixed_float16")
    scaled_model(x), plain_model(x)  # build eagerly
    ls = LossScale(2.0**8, growth_steps=5)
    rules = gf.SGD(0.1), gf.SGD(0.1)
    rules[0].build(scaled_model.trainable_variables)
    rules[1].build(plain_model.trainable_variables)

    def scaled_step(model, rule):
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            scaled = ls.scale_loss(_mse(model, x, y))
        grads, finite = ls.unscale(tape.gradient(scaled, variables))
        ls.apply_if_finite(finite, lambda: rule.apply(grads, variables))
        return finite

    def plain_step(model, rule):
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            loss = _mse(model, x, y)
        rule.apply(tape.gradient(loss, variables), variables)

    eager_scaled = scaled_step(scaled_model, rules[0])  # the first step eagerly,
    plain_step(plain_model, rules[1])
    compiled_scaled, compiled_plain = tf.function(scaled_step), tf.function(plain_step)
    for _ in range(11):  # the rest in tf.function
        assert bool(compiled_scaled(scaled_model, rules[0]).numpy())
        compiled_plain(plain_model, rules[1])
    assert bool(eager_scaled.numpy())
    assert ls.scale.numpy() == 2.0**10  # 12 finite steps: doubled after the 5th and 10th
    assert ls.counter.numpy() == 2
    for a, b in zip(scaled_model.trainable_variables, plain_model.trainable_variables, strict=True):
        # Scaling by a power of two is exact in float16 unless a value underflows.
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-5)
    assert (
        _mse(scaled_model, x, y).numpy()
        < _mse(gf.MLP([16], activation="tanh", seed=0), x, y).numpy()
    )
