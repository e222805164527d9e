"""Tests of mixed-precision dtype policies on gradfit's own models (LinearModel, MLP)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf

HALF = {"mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}
POLICIES = ["mixed_float16", "mixed_bfloat16"]


def _eps(dtype: tf.DType) -> float:
    # float16 has 10 mantissa bits, bfloat16 7: eps = 2**-10, 2**-7.
    return {tf.float16: 2.0**-10, tf.bfloat16: 2.0**-7}[dtype]


def _x(n: int = 16, d: int = 3) -> tf.Tensor:
    return tf.constant(np.random.default_rng(0).normal(size=(n, d)), tf.float32)


class _Identity(gf.Model):
    def __call__(self, x):
        return x


# ---------------------------------------------------------------------------
# dtype, compute_dtype, policy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [*POLICIES, keras.DTypePolicy("mixed_float16")])
@pytest.mark.parametrize(
    "make", [lambda p: gf.LinearModel(2, dtype=p), lambda p: gf.MLP([4], dtype=p)]
)
def test_mixed_policy_keeps_float32_variables_and_computes_in_half(make, policy):
    model = make(policy)
    name = policy if isinstance(policy, str) else policy.name
    y = model(_x())
    assert model.policy == name
    assert model.dtype == tf.float32
    assert model.compute_dtype == HALF[name]
    assert model.trainable_variables
    assert all(var.dtype == tf.float32 for var in model.trainable_variables)
    assert y.dtype == tf.float32  # outputs come back in float32 for the loss


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("float32", tf.float32),
        (tf.float64, tf.float64),
        ("float16", tf.float16),
        (np.float64, tf.float64),
        (keras.DTypePolicy("float64"), tf.float64),
    ],
)
def test_plain_dtype_computes_in_it_and_returns_it(dtype, expected):
    model = gf.MLP([3], dtype=dtype, seed=0)
    y = model(_x())
    assert model.policy == expected.name
    assert model.dtype == model.compute_dtype == expected
    assert y.dtype == expected
    assert all(var.dtype == expected for var in model.trainable_variables)


def test_a_user_model_gets_the_policy_too():
    class Scale(gf.Model):
        def __init__(self):
            super().__init__(dtype="mixed_bfloat16")
            self.a = tf.Variable(2.0)

        def __call__(self, x):
            return self.a * x

    model = Scale()
    assert (model.dtype, model.compute_dtype, model.policy) == (
        tf.float32,
        tf.bfloat16,
        "mixed_bfloat16",
    )


@pytest.mark.parametrize(
    "bad", ["mixed_float32", "mixed_float64", "int32", "mixed_int8", "float8_e4m3fn", "fp16", 3]
)
@pytest.mark.parametrize(
    "make",
    [
        lambda d: gf.LinearModel(dtype=d),
        lambda d: gf.MLP([2], dtype=d),
        lambda d: _Identity(dtype=d),
    ],
)
def test_unknown_policies_are_rejected(make, bad):
    with pytest.raises(ValueError, match="`dtype`") as info:
        make(bad)
    assert f"Received: dtype={bad!r}" in str(info.value)


# ---------------------------------------------------------------------------
# The computation is in half precision
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_linear_rounds_like_half_precision(policy):
    eps = _eps(HALF[policy])
    # The input 1 + eps/4 rounds to 1 in the half type; so does 1 + b for b = eps/4
    # (b itself is representable): both the cast and the addition are in half.
    x = tf.constant([1.0 + eps / 4, 1.0])
    mixed = gf.LinearModel(weight_init=1.0, bias_init=[0.0], dtype=policy)
    plain = gf.LinearModel(weight_init=1.0, bias_init=[0.0])
    np.testing.assert_array_equal(mixed(x).numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(plain(x).numpy(), np.float32([1.0 + eps / 4, 1.0]))

    mixed.b.assign(eps / 4)
    plain.b.assign(eps / 4)
    one = tf.constant([1.0])
    assert mixed(one).numpy()[0] == 1.0
    assert plain(one).numpy()[0] == np.float32(1.0 + eps / 4)


def _manual_half_mlp(model: gf.MLP, x: tf.Tensor, half: tf.DType) -> tf.Tensor:
    h = tf.cast(x, half)
    for i, layer in enumerate(model.layers):
        h = tf.matmul(h, tf.cast(layer.W, half)) + tf.cast(layer.b, half)
        if i < len(model.layers) - 1:
            h = tf.tanh(h)
    return tf.cast(h, tf.float32)


@pytest.mark.parametrize("policy", POLICIES)
def test_mlp_equals_a_manual_half_computation_not_the_float32_one(policy):
    x = _x()
    mixed = gf.MLP([8], activation="tanh", units=2, seed=0, dtype=policy)
    plain = gf.MLP([8], activation="tanh", units=2, seed=0)
    y, y32 = mixed(x).numpy(), plain(x).numpy()
    for a, b in zip(mixed.trainable_variables, plain.trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # same float32 start
    np.testing.assert_array_equal(y, _manual_half_mlp(mixed, x, HALF[policy]).numpy())
    assert np.any(y != y32)
    eps = _eps(HALF[policy])
    np.testing.assert_allclose(y, y32, rtol=0, atol=16 * eps * np.abs(y32).max())


@pytest.mark.parametrize("policy", POLICIES)
def test_gradients_reach_the_float32_variables(policy):
    x, target = _x(), tf.ones([16, 1])
    mixed = gf.MLP([8], activation="tanh", seed=1, dtype=policy)
    plain = gf.MLP([8], activation="tanh", seed=1)

    def grads(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - target) ** 2)
        return tape.gradient(loss, model.trainable_variables)

    got, want = grads(mixed), grads(plain)
    assert len(got) == 4
    for g, w in zip(got, want, strict=True):
        assert g is not None
        assert g.dtype == tf.float32
        assert np.all(np.isfinite(g.numpy()))
        scale = np.abs(w.numpy()).max()
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=32 * _eps(HALF[policy]) * scale)


@pytest.mark.parametrize("policy", POLICIES)
def test_eager_equals_tf_function_equals_xla(policy):
    x = _x()
    mlp = gf.MLP([8], activation="tanh", seed=2, dtype=policy)
    linear = gf.LinearModel(3, seed=2, dtype=policy)
    for model in (mlp, linear):
        eager = model(x)
        graph = tf.function(model)(x)
        xla = tf.function(model, jit_compile=True)(x)
        assert graph.dtype == xla.dtype == tf.float32
        # Grappler and XLA fuse matmul, bias and activation, and may round their
        # intermediate half results differently: a few units in the last place.
        atol = 8 * _eps(HALF[policy]) * max(1.0, np.abs(eager.numpy()).max())
        np.testing.assert_allclose(graph.numpy(), eager.numpy(), rtol=0, atol=atol)
        np.testing.assert_allclose(xla.numpy(), eager.numpy(), rtol=0, atol=atol)


def test_one_feature_inputs_keep_their_shapes_under_a_mixed_policy():
    mlp = gf.MLP([4], seed=0, dtype="mixed_float16")
    assert mlp(tf.constant([1.0, 2.0, 3.0])).shape == (3,)
    assert mlp(tf.constant(1.0)).shape == ()
    linear = gf.LinearModel(weight_init=2.0, dtype="mixed_float16")
    y = linear(np.array([1.5, 2.5], np.float64))
    assert y.dtype == tf.float32
    np.testing.assert_array_equal(y.numpy(), [3.0, 5.0])
