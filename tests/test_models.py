"""Tests of gradfit.models: LinearModel, MLP, lazy building, initializers, gradients."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradfit as gf
from gradfit.models import variables_by_path


def _floats32(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, width=32, allow_nan=False, allow_subnormal=False)


def _ones(*shape: int) -> tf.Tensor:
    return tf.ones(shape, tf.float32)


# ---------------------------------------------------------------------------
# LinearModel: the tutorial and shapes
# ---------------------------------------------------------------------------


def test_tutorial_start():
    model = gf.LinearModel(weight_init=5.0, bias_init=0.0)
    # The tutorial's assert: 3 * 5 + 0 = 15.
    assert model(3.0).numpy() == 15.0
    assert model.W.numpy() == 5.0
    assert model.b.numpy() == 0.0


def test_linear_one_dimensional_inputs_give_n_predictions_and_scalar_variables():
    model = gf.LinearModel(weight_init=5.0, bias_init=0.5)
    x = tf.constant([1.0, -2.0, 3.0, 0.0])
    y = model(x)
    assert y.shape == (4,)
    assert model.W.shape == ()
    assert model.b.shape == ()
    # 5 * [1, -2, 3, 0] + 0.5 = [5.5, -9.5, 15.5, 0.5]
    np.testing.assert_array_equal(y.numpy(), [5.5, -9.5, 15.5, 0.5])


def test_linear_matrix_inputs():
    w0 = np.array([[1.0, 2.0, 0.0], [-1.0, 0.5, 3.0]], np.float32)  # [d=2, units=3]
    b0 = np.array([0.0, 1.0, -1.0], np.float32)
    model = gf.LinearModel(3, weight_init=w0, bias_init=b0)
    x = tf.constant([[1.0, 2.0], [0.0, -1.0]])
    y = model(x)
    assert y.shape == (2, 3)
    assert model.W.shape == (2, 3)
    assert model.b.shape == (3,)
    # row 0: [1, 2] @ W = [1 - 2, 2 + 1, 0 + 6] = [-1, 3, 6]; + b = [-1, 4, 5]
    # row 1: [0, -1] @ W = [1, -0.5, -3];              + b = [1, 0.5, -4]
    np.testing.assert_allclose(y.numpy(), [[-1.0, 4.0, 5.0], [1.0, 0.5, -4.0]])


def test_linear_several_units_with_one_dimensional_inputs():
    model = gf.LinearModel(2, weight_init=[1.0, 2.0], bias_init=[0.5, 1.0])
    y = model(tf.constant([1.0, 2.0, 3.0]))
    assert y.shape == (3, 2)
    assert model.W.shape == (2,)
    assert model.b.shape == (2,)
    # x[:, None] * [1, 2] + [0.5, 1]: [[1.5, 3], [2.5, 5], [3.5, 7]]
    np.testing.assert_array_equal(y.numpy(), [[1.5, 3.0], [2.5, 5.0], [3.5, 7.0]])


def test_linear_variables_by_path():
    model = gf.LinearModel(weight_init=1.0)
    model(_ones(3))
    paths = variables_by_path(model)
    assert list(paths) == ["W", "b"]
    assert paths["W"] is model.W
    assert paths["b"] is model.b


@pytest.mark.parametrize(
    ("make", "error", "fragment"),
    [
        (lambda: gf.LinearModel(0), ValueError, "Received: units=0"),
        (lambda: gf.LinearModel(1.5), TypeError, "Received: units=1.5"),
        (lambda: gf.LinearModel(seed=-1), ValueError, "Received: seed=-1"),
        (lambda: gf.LinearModel(seed="1"), TypeError, "Received: seed='1'"),
        (lambda: gf.LinearModel(dtype="int32"), ValueError, "Received: dtype='int32'"),
        (lambda: gf.MLP([2], units=0), ValueError, "Received: units=0"),
        (lambda: gf.MLP([2], seed=-3), ValueError, "Received: seed=-3"),
    ],
)
def test_invalid_model_arguments_are_named(make, error, fragment):
    with pytest.raises(error) as info:
        make()
    name = fragment.split("=")[0].removeprefix("Received: ")
    assert f"`{name}`" in str(info.value)
    assert fragment in str(info.value)


# ---------------------------------------------------------------------------
# Initializers
# ---------------------------------------------------------------------------


def test_number_initializers():
    model = gf.LinearModel(2, weight_init=2.0, bias_init=-1)
    model(_ones(4, 3))
    np.testing.assert_array_equal(model.W.numpy(), np.full((3, 2), 2.0))
    np.testing.assert_array_equal(model.b.numpy(), [-1.0, -1.0])


def test_array_initializers():
    model = gf.LinearModel(weight_init=np.array([[1.0], [2.0]]), bias_init=[0.5])
    y = model(tf.constant([[1.0, 1.0], [3.0, -1.0]]))
    np.testing.assert_array_equal(model.W.numpy(), [[1.0], [2.0]])
    # [1 + 2, 3 - 2] + 0.5 = [3.5, 1.5]
    np.testing.assert_array_equal(y.numpy(), [[3.5], [1.5]])
    # A flat array of the right size is reshaped; a tf.Tensor is accepted too.
    model = gf.LinearModel(weight_init=tf.constant([1.0, 2.0]))
    model(_ones(1, 2))
    np.testing.assert_array_equal(model.W.numpy(), [[1.0], [2.0]])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"weight_init": [1.0, 2.0, 3.0]}, "weight_init"),
        ({"weight_init": np.zeros((2, 2))}, "weight_init"),
        ({"bias_init": [0.0, 1.0]}, "bias_init"),
    ],
)
def test_wrong_size_array_initializer_raises_naming_it(kwargs, name):
    model = gf.LinearModel(**kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        model(_ones(4, 2))


def test_keras_initializer_names():
    model = gf.LinearModel(2, weight_init="zeros", bias_init="ones")
    model(_ones(4, 3))
    np.testing.assert_array_equal(model.W.numpy(), np.zeros((3, 2)))
    np.testing.assert_array_equal(model.b.numpy(), np.ones(2))

    model = gf.LinearModel(4, weight_init="glorot_uniform", seed=0)
    model(_ones(2, 6))
    w = model.W.numpy()
    # Glorot uniform: U(-limit, limit) with limit = sqrt(6 / (fan_in + fan_out)) = sqrt(6/10).
    limit = math.sqrt(6.0 / (6 + 4))
    assert np.all(np.abs(w) <= limit)
    assert np.unique(w).size > 1
    assert np.any(w < 0) and np.any(w > 0)


def test_keras_initializer_objects_and_configs():
    model = gf.LinearModel(weight_init=keras.initializers.Constant(0.25))
    model(_ones(2, 3))
    np.testing.assert_array_equal(model.W.numpy(), np.full((3, 1), 0.25))

    config = {"class_name": "Constant", "config": {"value": -0.5}}
    model = gf.LinearModel(weight_init=config)
    model(_ones(2, 3))
    np.testing.assert_array_equal(model.W.numpy(), np.full((3, 1), -0.5))

    # An initializer object takes the model's seed.
    seeded_object = gf.LinearModel(3, weight_init=keras.initializers.GlorotUniform(), seed=4)
    seeded_name = gf.LinearModel(3, weight_init="glorot_uniform", seed=4)
    seeded_object(_ones(2, 5))
    seeded_name(_ones(2, 5))
    np.testing.assert_array_equal(seeded_object.W.numpy(), seeded_name.W.numpy())


def test_callable_initializer_gets_shape_and_dtype():
    calls = []

    def init(shape, dtype):
        calls.append((tuple(shape), tf.as_dtype(dtype)))
        size = math.prod(shape)
        return tf.reshape(tf.range(size, dtype=dtype), shape)

    model = gf.LinearModel(2, weight_init=init, dtype=tf.float64)
    model(np.ones((1, 3)))
    assert calls == [((3, 2), tf.float64)]
    assert model.W.dtype == tf.float64
    np.testing.assert_array_equal(model.W.numpy(), [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])


@pytest.mark.parametrize("init", ["glorot_uniform", "random_normal", "he_uniform"])
def test_seed_makes_random_initializers_reproducible(init):
    def weights(seed):
        model = gf.LinearModel(3, weight_init=init, bias_init=init, seed=seed)
        model(_ones(2, 4))
        return model.W.numpy(), model.b.numpy()

    w1, b1 = weights(7)
    w2, b2 = weights(7)
    w3, b3 = weights(8)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(w1, w3)
    assert not np.array_equal(b1, b3)


def test_unseeded_random_initializers_differ():
    first = gf.LinearModel(3)
    second = gf.LinearModel(3)
    first(_ones(2, 4))
    second(_ones(2, 4))
    assert not np.array_equal(first.W.numpy(), second.W.numpy())


@pytest.mark.parametrize(
    ("kwargs", "error", "name", "echo"),
    [
        ({"weight_init": "not_an_initializer"}, ValueError, "weight_init", "'not_an_initializer'"),
        ({"bias_init": "nope"}, ValueError, "bias_init", "'nope'"),
        ({"weight_init": float("nan")}, ValueError, "weight_init", "nan"),
        ({"weight_init": float("inf")}, ValueError, "weight_init", "inf"),
        ({"weight_init": [1.0, float("nan")]}, ValueError, "weight_init", "nan"),
        ({"bias_init": np.array([np.nan])}, ValueError, "bias_init", "nan"),
        ({"weight_init": True}, TypeError, "weight_init", "True"),
        ({"weight_init": ["a", "b"]}, TypeError, "weight_init", "'a'"),
        ({"weight_init": object()}, TypeError, "weight_init", "object"),
    ],
)
def test_invalid_initializers_raise_at_construction(kwargs, error, name, echo):
    with pytest.raises(error) as info:
        gf.LinearModel(**kwargs)
    message = str(info.value)
    assert f"`{name}`" in message
    assert f"Received: {name}=" in message
    assert echo in message


# ---------------------------------------------------------------------------
# Lazy building
# ---------------------------------------------------------------------------


def test_variables_are_created_on_first_call():
    model = gf.LinearModel(2)
    assert not model.built
    assert model.input_shape is None
    assert model.trainable_variables == ()
    assert not hasattr(model, "W")
    model(_ones(5, 3))
    assert model.built
    assert model.input_shape == (3,)
    assert {v.name.split(":")[0] for v in model.trainable_variables} == {"W", "b"}


def test_maybe_build_builds_once_and_checks_later_inputs():
    model = gf.LinearModel(weight_init=1.0)
    model.maybe_build(tf.TensorShape([None, 3]))
    assert model.built
    assert model.input_shape == (3,)
    w = model.W
    model.maybe_build([8, 3])
    assert model.W is w
    assert model(_ones(4, 3)).shape == (4, 1)
    with pytest.raises(ValueError, match=r"`x`.*Received: x\.shape=\(5, 4\)"):
        model(_ones(5, 4))
    with pytest.raises(ValueError, match="`x`"):
        model(_ones(5))
    with pytest.raises(ValueError, match="`x`"):
        model.maybe_build([2, 3, 1])
    assert model.W is w


def test_one_dimensional_build_rejects_matrices():
    model = gf.LinearModel(weight_init=5.0)
    model(tf.constant([1.0, 2.0]))
    assert model.input_shape == ()
    assert model(tf.constant(3.0)).numpy() == 15.0
    with pytest.raises(ValueError, match="`x`"):
        model(_ones(2, 2))


def test_build_runs_once_in_init_scope_even_under_tf_function():
    class Counted(gf.Model):
        builds = 0

        def build(self, input_shape):
            type(self).builds += 1
            self.w = tf.Variable(tf.ones([input_shape[-1]]))

        def __call__(self, x):
            self.maybe_build(x.shape)
            return tf.reduce_sum(x * self.w, axis=-1)

    model = Counted()
    assert not model.built
    forward = tf.function(model.__call__)
    # The first call traces; variables are created eagerly inside init_scope.
    np.testing.assert_array_equal(forward(_ones(2, 3)).numpy(), [3.0, 3.0])
    np.testing.assert_array_equal(forward(_ones(4, 3)).numpy(), [3.0] * 4)  # retrace, no build
    model(_ones(1, 3))
    assert Counted.builds == 1
    assert model.built
    assert model.input_shape == (3,)


def test_linear_model_first_called_inside_tf_function():
    model = gf.LinearModel(weight_init=2.0, bias_init=1.0)
    forward = tf.function(lambda x: model(x))
    # 2 * [1, 2] + 1 = [3, 5]
    np.testing.assert_array_equal(forward(tf.constant([1.0, 2.0])).numpy(), [3.0, 5.0])
    np.testing.assert_array_equal(model(tf.constant([1.0, 2.0])).numpy(), [3.0, 5.0])
    assert len(model.trainable_variables) == 2


# ---------------------------------------------------------------------------
# dtype
# ---------------------------------------------------------------------------


def test_float64_model_keeps_float64_and_casts_int_inputs():
    model = gf.LinearModel(2, weight_init=0.1, bias_init=0.2, dtype="float64")
    assert model.dtype == tf.float64
    y = model(np.array([[1, 2, 3]], np.int32))
    assert model.W.dtype == tf.float64
    assert model.b.dtype == tf.float64
    assert y.dtype == tf.float64
    # 0.1 * (1 + 2 + 3) + 0.2 = 0.8, exactly as float64 computes it.
    np.testing.assert_allclose(y.numpy(), [[0.8, 0.8]], rtol=1e-15)


def test_float32_model_casts_int_and_float64_inputs():
    model = gf.LinearModel(weight_init=5.0)
    assert model(np.array([1, 2], np.int64)).dtype == tf.float32
    assert model(np.array([1.0, 2.0], np.float64)).dtype == tf.float32
    np.testing.assert_array_equal(model(np.array([3], np.int32)).numpy(), [15.0])


def test_float64_mlp():
    model = gf.MLP([3], dtype=tf.float64, seed=0)
    y = model(np.ones((2, 2), np.int32))
    assert y.dtype == tf.float64
    assert all(v.dtype == tf.float64 for v in model.trainable_variables)


# ---------------------------------------------------------------------------
# MLP
# ---------------------------------------------------------------------------


def test_mlp_variable_paths_and_shapes():
    model = gf.MLP([4, 3], units=2, seed=0)
    assert model.trainable_variables == ()
    y = model(_ones(5, 6))
    assert y.shape == (5, 2)
    paths = variables_by_path(model)
    assert list(paths) == [
        "layers/0/W",
        "layers/0/b",
        "layers/1/W",
        "layers/1/b",
        "layers/2/W",
        "layers/2/b",
    ]
    shapes = {path: tuple(var.shape) for path, var in paths.items()}
    assert shapes == {
        "layers/0/W": (6, 4),
        "layers/0/b": (4,),
        "layers/1/W": (4, 3),
        "layers/1/b": (3,),
        "layers/2/W": (3, 2),
        "layers/2/b": (2,),
    }
    assert model.input_shape == (6,)
    with pytest.raises(ValueError, match="`x`"):
        model(_ones(5, 7))


def test_mlp_one_dimensional_inputs():
    model = gf.MLP([4], seed=1)
    y = model(tf.constant([0.0, 1.0, 2.0]))
    assert y.shape == (3,)
    assert model.layers[0].W.shape == (1, 4)
    wide = gf.MLP([4], units=3, seed=1)
    assert wide(tf.constant([0.0, 1.0, 2.0])).shape == (3, 3)


def _numpy_forward(model: gf.MLP, x: np.ndarray, activation) -> np.ndarray:
    paths = variables_by_path(model)
    h = x.astype(np.float64)
    if h.ndim == 1:
        h = h[:, None]
    n_layers = len(model.layers)
    for i in range(n_layers):
        w = paths[f"layers/{i}/W"].numpy().astype(np.float64)
        b = paths[f"layers/{i}/b"].numpy().astype(np.float64)
        h = h @ w + b
        if i < n_layers - 1:
            h = activation(h)
    return h


@pytest.mark.parametrize(
    ("activation", "reference"),
    [
        ("relu", lambda h: np.maximum(h, 0.0)),
        ("tanh", np.tanh),
        (tf.nn.softplus, lambda h: np.log1p(np.exp(h))),
    ],
    ids=["relu", "tanh", "callable-softplus"],
)
def test_mlp_matches_numpy_forward_pass(activation, reference):
    rng = np.random.default_rng(0)
    model = gf.MLP([5, 4], activation=activation, units=3, seed=2)
    x = rng.normal(size=(7, 3)).astype(np.float32)
    y = model(x).numpy()
    np.testing.assert_allclose(y, _numpy_forward(model, x, reference), rtol=1e-5, atol=1e-5)

    scalar = gf.MLP([5], activation=activation, seed=3)
    x1 = rng.normal(size=(6,)).astype(np.float32)
    y1 = scalar(x1).numpy()
    assert y1.shape == (6,)
    np.testing.assert_allclose(
        y1, _numpy_forward(scalar, x1, reference)[:, 0], rtol=1e-5, atol=1e-5
    )


def test_mlp_relu_actually_clips():
    # One hidden unit, set by hand: h = relu(x * 1 - 0), out = 2 h + 1.
    model = gf.MLP([1], activation="relu", seed=0)
    model(_ones(1))
    model.layers[0].W.assign([[1.0]])
    model.layers[1].W.assign([[2.0]])
    model.layers[1].b.assign([1.0])
    # x = [-2, 3]: relu -> [0, 3]; out = [1, 7]
    np.testing.assert_array_equal(model(tf.constant([-2.0, 3.0])).numpy(), [1.0, 7.0])


def test_mlp_seed_reproducibility():
    def weights(seed):
        model = gf.MLP([4, 4], seed=seed)
        model(_ones(2, 3))
        return [v.numpy() for v in model.trainable_variables]

    first, again, other = weights(11), weights(11), weights(12)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    w_first = [v for v in first if v.ndim == 2]
    w_other = [v for v in other if v.ndim == 2]
    assert all(not np.array_equal(a, b) for a, b in zip(w_first, w_other, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"hidden_units": "abc"}, TypeError, "hidden_units"),
        ({"hidden_units": 3}, TypeError, "hidden_units"),
        ({"hidden_units": [0]}, ValueError, "hidden_units"),
        ({"hidden_units": [4, -1]}, ValueError, "hidden_units"),
        ({"hidden_units": [2.5]}, TypeError, "hidden_units"),
        ({"activation": "no_such_activation"}, ValueError, "activation"),
        ({"activation": 3}, TypeError, "activation"),
    ],
)
def test_mlp_invalid_arguments_are_named(kwargs, error, name):
    with pytest.raises(error) as info:
        gf.MLP(**kwargs)
    assert f"`{name}`" in str(info.value)
    assert f"Received: {name}=" in str(info.value)


# ---------------------------------------------------------------------------
# Gradients of L2 through LinearModel against the closed form
# ---------------------------------------------------------------------------


@st.composite
def _scalar_regression(draw: st.DrawFn):
    n = draw(st.integers(1, 50))
    x = draw(hnp.arrays(np.float32, (n,), elements=_floats32(-10.0, 10.0)))
    y = draw(hnp.arrays(np.float32, (n,), elements=_floats32(-10.0, 10.0)))
    w0 = draw(_floats32(-10.0, 10.0))
    b0 = draw(_floats32(-10.0, 10.0))
    return x, y, w0, b0


@st.composite
def _matrix_regression(draw: st.DrawFn):
    n = draw(st.integers(1, 50))
    d = draw(st.integers(1, 4))
    units = draw(st.integers(1, 3))
    x = draw(hnp.arrays(np.float32, (n, d), elements=_floats32(-10.0, 10.0)))
    y = draw(hnp.arrays(np.float32, (n, units), elements=_floats32(-10.0, 10.0)))
    w0 = draw(hnp.arrays(np.float32, (d, units), elements=_floats32(-3.0, 3.0)))
    b0 = draw(hnp.arrays(np.float32, (units,), elements=_floats32(-10.0, 10.0)))
    return x, y, w0, b0


def _tape_gradients(model: gf.LinearModel, x: np.ndarray, y: np.ndarray):
    model.maybe_build(x.shape)
    loss_fn = gf.L2()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
    grad_w, grad_b = tape.gradient(loss, [model.W, model.b])
    return grad_w.numpy().astype(np.float64), grad_b.numpy().astype(np.float64)


# float32 rounds each residual x W + b - y with an error of a few eps relative to
# |x W| + |b| + |y| (not to the residual, which may cancel), so the tolerance scales
# with the same closed form computed on absolute values. 1e-5 is ~80 float32 eps.
_GRAD_RTOL = 1e-5


@given(_scalar_regression())
def test_l2_gradient_through_linear_model_matches_closed_form(data):
    x32, y32, w0, b0 = data
    model = gf.LinearModel(weight_init=w0, bias_init=b0)
    grad_w, grad_b = _tape_gradients(model, x32, y32)
    assert grad_w.shape == () and grad_b.shape == ()

    x, y, n = x32.astype(np.float64), y32.astype(np.float64), x32.shape[0]
    residual = x * w0 + b0 - y
    expected_w = 2.0 / n * np.sum(residual * x)  # dL/dW = 2/N sum((x W + b - y) x)
    expected_b = 2.0 / n * np.sum(residual)  # dL/db = 2/N sum(x W + b - y)
    magnitude = np.abs(x * w0) + abs(b0) + np.abs(y)
    scale_w = 2.0 / n * np.sum(magnitude * np.abs(x))
    scale_b = 2.0 / n * np.sum(magnitude)
    assert abs(grad_w - expected_w) <= _GRAD_RTOL * scale_w + 1e-6
    assert abs(grad_b - expected_b) <= _GRAD_RTOL * scale_b + 1e-6


@given(_matrix_regression())
def test_l2_gradient_through_linear_model_matches_closed_form_for_matrices(data):
    x32, y32, w32, b32 = data
    model = gf.LinearModel(w32.shape[1], weight_init=w32, bias_init=b32)
    grad_w, grad_b = _tape_gradients(model, x32, y32)
    assert grad_w.shape == w32.shape and grad_b.shape == b32.shape

    x, y = x32.astype(np.float64), y32.astype(np.float64)
    w, b = w32.astype(np.float64), b32.astype(np.float64)
    count = y.size  # L2 averages over N * units entries.
    residual = x @ w + b - y  # [N, units]
    expected_w = 2.0 / count * x.T @ residual  # dL/dW = 2/(N units) x^T (x W + b - y)
    expected_b = 2.0 / count * residual.sum(axis=0)  # dL/db = 2/(N units) sum_n (...)
    magnitude = np.abs(x) @ np.abs(w) + np.abs(b) + np.abs(y)
    scale_w = 2.0 / count * np.abs(x).T @ magnitude
    scale_b = 2.0 / count * magnitude.sum(axis=0)
    assert np.all(np.abs(grad_w - expected_w) <= _GRAD_RTOL * scale_w + 1e-6)
    assert np.all(np.abs(grad_b - expected_b) <= _GRAD_RTOL * scale_b + 1e-6)


def test_l2_gradient_golden():
    # x = [1, 2], y = [3, 5], W = 5, b = 0: residuals [5 - 3, 10 - 5] = [2, 5].
    # dL/dW = 2/2 * (2 * 1 + 5 * 2) = 12; dL/db = 2/2 * (2 + 5) = 7.
    model = gf.LinearModel(weight_init=5.0, bias_init=0.0)
    grad_w, grad_b = _tape_gradients(model, np.array([1.0, 2.0]), np.array([3.0, 5.0]))
    assert grad_w == 12.0
    assert grad_b == 7.0


# ---------------------------------------------------------------------------
# A user's model
# ---------------------------------------------------------------------------


class TutorialModel(gf.Model):
    """The tutorial's model, as a gf.Model."""

    def __init__(self):
        super().__init__()
        self.W = tf.Variable(5.0)
        self.b = tf.Variable(0.0)

    def __call__(self, x):
        return self.W * x + self.b


def test_user_model_with_variables_in_init():
    model = TutorialModel()
    assert model.built
    assert model.dtype == tf.float32
    assert model(3.0).numpy() == 15.0
    variables = model.trainable_variables
    assert len(variables) == 2
    assert {id(v) for v in variables} == {id(model.W), id(model.b)}
    assert variables_by_path(model) == {"W": model.W, "b": model.b}
    # maybe_build is a no-op apart from recording the input shape.
    model.maybe_build([10])
    assert model.input_shape == ()
    assert len(model.trainable_variables) == 2


def test_model_is_abstract():
    with pytest.raises(TypeError):
        gf.Model()
