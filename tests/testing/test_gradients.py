"""Tests of gradfit.testing.check_gradients and check_model_gradients.

The checker must catch real bugs: each case below is a function with a
hand-written gradient (``tf.custom_gradient``) in a right and a wrong
version, and the check must accept the right one and reject the wrong one,
naming where it is wrong.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import gradfit as gf
from gradfit.testing import check_gradients, check_model_gradients
from gradfit.testing import strategies as gfst

X = np.array([-1.5, -0.4, 0.3, 0.8, 2.0], np.float32)  # negative and positive entries


def custom(forward: Callable[..., Any], backward: Callable[..., Any]) -> Callable[..., Any]:
    """A function with a hand-written gradient: ``backward(*args, dy) -> grads``."""

    @tf.custom_gradient
    def f(*args):
        return forward(*args), lambda dy: backward(*args, dy)

    return f


@dataclasses.dataclass
class Bug:
    name: str
    right: Callable[..., Any]
    wrong: Callable[..., Any]
    args: list[Any]
    where: str  # must appear in the report
    order: int = 1


def _diff_vjp(dy, last_entry_lost):
    # d(x[1:] - x[:-1]) / dx, transposed: pad(dy, [1, 0]) - pad(dy, [0, 1]).
    g = tf.pad(dy, [[1, 0]]) - tf.pad(dy, [[0, 1]])
    if last_entry_lost:  # an off-by-one slice: the last entry of the gradient is dropped
        g = tf.concat([g[:-1], [0.0]], axis=0)
    return g


BUGS = [
    Bug(  # reduce_mean's gradient without the 1/n: off by a constant factor (n = 5)
        "constant factor",
        custom(lambda x: tf.reduce_mean(x**2), lambda x, dy: dy * 2 * x / 5),
        custom(lambda x: tf.reduce_mean(x**2), lambda x, dy: dy * 2 * x),
        [X],
        "args[0][",
    ),
    Bug(  # d/dx exp(-x) = -exp(-x): the minus sign forgotten
        "wrong sign",
        custom(lambda x: tf.exp(-x), lambda x, dy: -dy * tf.exp(-x)),
        custom(lambda x: tf.exp(-x), lambda x, dy: dy * tf.exp(-x)),
        [X],
        "args[0][",
    ),
    Bug(  # product rule: d/dx x sin x = sin x + x cos x; the sin x term is missing
        "missing term",
        custom(lambda x: x * tf.sin(x), lambda x, dy: dy * (tf.sin(x) + x * tf.cos(x))),
        custom(lambda x: x * tf.sin(x), lambda x, dy: dy * x * tf.cos(x)),
        [X],
        "args[0][",
    ),
    Bug(  # ELU: for x < 0 the derivative is elu(x) + 1 = exp(x), not elu(x)
        "wrong only for negative inputs",
        custom(tf.nn.elu, lambda x, dy: dy * tf.where(x > 0, 1.0, tf.exp(x))),
        custom(tf.nn.elu, lambda x, dy: dy * tf.where(x > 0, 1.0, tf.nn.elu(x))),
        [X],
        "args[0][0]",  # the most negative entry has the largest error
    ),
    Bug(  # x[1:] - x[:-1] with an off-by-one in its vector-Jacobian product
        "wrong only in one element",
        custom(lambda x: x[1:] - x[:-1], lambda x, dy: _diff_vjp(dy, False)),
        custom(lambda x: x[1:] - x[:-1], lambda x, dy: _diff_vjp(dy, True)),
        [X],
        "args[0][4]",
    ),
    Bug(  # x**3 whose backward pass stops gradients: the second derivative is lost
        "wrong second derivative",
        custom(lambda x: x**3, lambda x, dy: dy * 3 * x**2),
        custom(lambda x: x**3, lambda x, dy: dy * 3 * tf.stop_gradient(x) ** 2),
        [X],
        "grad args[0][",
        order=2,
    ),
    Bug(  # cumsum's VJP is the reversed cumsum; forgetting to reverse it is a transpose bug
        "wrong transpose",
        custom(tf.cumsum, lambda x, dy: tf.cumsum(dy, reverse=True)),
        custom(tf.cumsum, lambda x, dy: tf.cumsum(dy)),
        [X],
        "args[0][",
    ),
    Bug(  # a * exp(b) with the two gradients swapped
        "gradients swapped",
        custom(lambda a, b: a * tf.exp(b), lambda a, b, dy: (dy * tf.exp(b), dy * a * tf.exp(b))),
        custom(lambda a, b: a * tf.exp(b), lambda a, b, dy: (dy * a * tf.exp(b), dy * tf.exp(b))),
        [np.array([2.0, 0.5, -1.0], np.float32), np.array([0.5, -1.0, 2.0], np.float32)],
        "'args[1]'",
    ),
]


@pytest.mark.parametrize("bug", BUGS, ids=lambda bug: bug.name)
def test_accepts_the_right_gradient(bug):
    check_gradients(bug.right, bug.args, order=bug.order)


@pytest.mark.parametrize("bug", BUGS, ids=lambda bug: bug.name)
def test_rejects_the_wrong_gradient_and_says_where(bug):
    with pytest.raises(AssertionError) as info:
        check_gradients(bug.wrong, bug.args, order=bug.order)
    report = str(info.value)
    assert f"Gradient check failed (order {bug.order})" in report
    assert bug.where in report
    assert "largest absolute error" in report and "largest relative error" in report


def test_a_wrong_second_derivative_passes_a_first_order_check():
    # ... which is why order=2 exists.
    check_gradients(BUGS[5].wrong, [X], order=1)


def test_report_names_the_argument_and_the_worst_entry():
    square = custom(lambda x: tf.reduce_sum(x**2), lambda x, dy: dy * 2 * x * [1, 1, 1, 1.5, 1])
    with pytest.raises(AssertionError) as info:
        check_gradients(lambda weights: square(weights), {"weights": X})
    report = str(info.value)
    assert "'weights' (shape (5,), float32): 1 of 5 checks" in report
    # d/dx[3] of sum(x^2) at 0.8 is 1.6; the bug gives 2.4: 0.8 absolute, 1/3 relative.
    assert re.search(r"largest absolute error 0\.8 at d f / d weights\[3\]", report), report
    assert "reverse mode 2.4, finite differences 1.6" in report
    assert re.search(r"largest relative error 0\.333", report), report
    assert "in float64" in report


@given(
    gfst.finite_arrays(st.integers(1, 6).map(lambda n: (n,)), max_magnitude=3.0, min_magnitude=0.1)
)
def test_elu_bug_is_caught_exactly_when_an_input_is_negative(x):
    wrong = BUGS[3].wrong
    if np.any(x < 0):
        with pytest.raises(AssertionError, match="reverse-mode gradient disagrees"):
            check_gradients(wrong, [x])
    else:
        check_gradients(wrong, [x])
    check_gradients(BUGS[3].right, [x])


def test_large_inputs_are_checked_along_directions_and_the_bug_is_bisected():
    x = np.random.default_rng(0).standard_normal(600).astype(np.float32)

    def grad(x, dy):  # right everywhere but entry 417
        return dy * 2 * x + tf.one_hot(417, 600) * dy

    wrong = custom(lambda x: tf.reduce_sum(x**2), grad)
    right = custom(lambda x: tf.reduce_sum(x**2), lambda x, dy: dy * 2 * x)
    check_gradients(right, [x])
    with pytest.raises(
        AssertionError, match=r"along a random direction \(bisected to args\[0\]\[417\]\)"
    ):
        check_gradients(wrong, [x])


def test_large_outputs_are_checked_through_random_cotangents():
    x = np.linspace(-2.0, 2.0, 50, dtype=np.float32)
    right = custom(tf.cumsum, lambda x, dy: tf.cumsum(dy, reverse=True))
    wrong = custom(tf.cumsum, lambda x, dy: tf.cumsum(dy))
    check_gradients(right, [x], max_elements=8)
    with pytest.raises(AssertionError, match=r"vector-Jacobian product J\^T u"):
        check_gradients(wrong, [x], max_elements=8)


def test_nested_outputs_and_keyword_arguments():
    def f(x, scale):
        return {"a": x * scale, "b": [tf.reduce_sum(tf.sin(x)), scale**2]}

    check_gradients(f, {"x": X, "scale": np.float32(1.5)})
    check_gradients(f, {"x": X, "scale": np.float32(1.5)}, argnums="scale", order=2)


def test_integer_arguments_pass_through_and_argnums_select():
    labels = np.array([0, 2, 1], np.int32)
    logits = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)

    def loss(labels, logits):
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )

    check_gradients(loss, [labels, logits])
    check_gradients(loss, [labels, logits], argnums=1, order=2)
    with pytest.raises(TypeError, match="non-floating dtype int32"):
        check_gradients(loss, [labels, logits], argnums=0)


def test_float64_arguments_get_float64_tolerances():
    x = X.astype(np.float64)
    check_gradients(lambda x: tf.reduce_sum(tf.tanh(x) ** 2), [x], order=2)
    # A relative error of 1e-4 passes a float32 check but not a float64 one.
    slightly = custom(lambda x: tf.reduce_sum(x**2), lambda x, dy: dy * 2 * x * (1 + 1e-4))
    check_gradients(slightly, [X])
    with pytest.raises(AssertionError, match="float64"):
        check_gradients(slightly, [x])


def test_functions_that_refuse_float64_are_differenced_in_their_own_dtype():
    two = tf.constant(2.0)  # a float32 constant: float64 arguments fail

    def right(x):
        return tf.reduce_sum(tf.sin(x) * two)

    wrong = custom(right, lambda x, dy: dy * tf.cos(x))  # the factor 2 is missing
    check_gradients(right, [X])
    with pytest.raises(AssertionError, match=r"in float32 \(`f` failed on float64 arguments"):
        check_gradients(wrong, [X])


def test_a_kink_at_the_point_is_reported_as_not_differentiable():
    with pytest.raises(AssertionError, match="not differentiable at this point"):
        check_gradients(lambda x: tf.reduce_sum(tf.nn.relu(x)), [np.array([0.0, 1.0], np.float32)])
    # Near a kink, but not on it: the step shrinks and the check passes.
    check_gradients(lambda x: tf.reduce_sum(tf.abs(x)), [np.array([3e-6, -1.0], np.float32)])


def test_a_random_function_is_reported_as_not_deterministic():
    with pytest.raises(AssertionError, match="not deterministic"):
        check_gradients(lambda x: tf.reduce_sum(x * tf.random.uniform([5])), [X])


def test_indexed_slices_gradients_are_checked():
    table = np.random.default_rng(2).standard_normal((6, 2)).astype(np.float32)
    check_gradients(lambda t: tf.reduce_sum(tf.gather(t, [0, 3, 3]) ** 2), [table])


@pytest.mark.parametrize(
    ("kwargs", "error", "echo"),
    [
        ({"order": 0}, ValueError, "order=0"),
        ({"eps": -1.0}, ValueError, "eps=-1.0"),
        ({"rtol": -1e-3}, ValueError, "rtol=-0.001"),
        ({"num_directions": 0}, ValueError, "num_directions=0"),
        ({"max_elements": -1}, ValueError, "max_elements=-1"),
        ({"argnums": 3}, ValueError, "argnums=3"),
        ({"argnums": "y"}, ValueError, "argnums='y'"),
    ],
)
def test_invalid_options_raise_and_echo(kwargs, error, echo):
    with pytest.raises(error, match=re.escape(echo)):
        check_gradients(lambda x: tf.reduce_sum(x), [X], **kwargs)


def test_invalid_functions_and_arguments_raise():
    with pytest.raises(TypeError, match="`f` must be callable"):
        check_gradients("sin", [X])
    with pytest.raises(TypeError, match="no floating-point argument"):
        check_gradients(lambda n: tf.cast(n, tf.float32), [np.array([1, 2])])
    with pytest.raises(TypeError, match="at least one floating-point tensor"):
        check_gradients(lambda x: tf.shape(x), [X])


# -- models ------------------------------------------------------------------


def _data(features=3, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, features)).astype(np.float32),
        rng.standard_normal(n).astype(np.float32),
    )


def test_model_gradients_of_the_tutorial():
    x = np.linspace(-2.0, 2.0, 20, dtype=np.float32)
    check_model_gradients(gf.LinearModel(weight_init=5.0), gf.L2(), x, 3 * x + 2, order=2)


def test_a_wrong_activation_gradient_inside_a_model_is_caught_and_located():
    t = custom(tf.tanh, lambda z, dy: dy * (1 - tf.tanh(z)))  # should be 1 - tanh(z)**2
    x, y = _data()
    model = gf.MLP((4,), activation=t, seed=1)
    with pytest.raises(AssertionError) as info:
        check_model_gradients(model, gf.L2(), x, y)
    report = str(info.value)
    assert "Variable 'layers/0/W' (shape (3, 4), float32)" in report
    assert "d loss / d layers/0/W[" in report
    assert "Variable 'layers/1/W'" not in report  # the output layer's gradient is right
    check_model_gradients(gf.MLP((4,), activation="tanh", seed=1), gf.L2(), x, y)


def test_a_wrong_custom_loss_is_caught():
    class LogCosh(gf.Loss):
        def __init__(self, right):
            self.right = right

        def __call__(self, y_true, y_pred):
            def backward(e, dy):
                return dy * (tf.tanh(e) if self.right else tf.sinh(e))

            e = tf.squeeze(y_pred, -1) - y_true
            per_example = custom(lambda e: tf.math.log(tf.cosh(e)), backward)(e)
            return tf.reduce_mean(per_example)

    x, y = _data()
    check_model_gradients(gf.LinearModel(), LogCosh(right=True), x, y)
    with pytest.raises(AssertionError, match="Variable 'W'"):
        check_model_gradients(gf.LinearModel(), LogCosh(right=False), x, y)


def test_the_model_is_built_and_its_variables_restored():
    x, y = _data()
    model = gf.MLP((3,), activation="softplus", seed=2)
    assert not model.built
    check_model_gradients(model, gf.Huber(), x, y * 3)
    before = [var.numpy().copy() for var in model.trainable_variables]
    check_model_gradients(model, gf.L2(), x, y, order=2)
    for var, old in zip(model.trainable_variables, before, strict=True):
        np.testing.assert_array_equal(var.numpy(), old)


def test_float64_models_and_plain_loss_callables():
    x, y = _data()
    model = gf.MLP((4,), activation="tanh", dtype=tf.float64, seed=3)
    check_model_gradients(model, lambda t, p: tf.reduce_mean((p[:, 0] - t) ** 4), x, y)


class _TupleModel(tf.Module):
    """A plain tf.Module keeping its variables in a tuple: no float64 copy can be made."""

    def __init__(self, activation=tf.tanh):
        super().__init__()
        self.params = (tf.Variable([[0.5], [-0.3], [0.2]]), tf.Variable([0.1]))
        self.activation = activation

    def __call__(self, x):
        return self.activation(tf.matmul(x, self.params[0]) + self.params[1])


def test_models_without_a_float64_copy_are_differenced_in_their_dtype():
    x, y = _data()
    check_model_gradients(_TupleModel(), gf.L2(), x, y)
    leaky_tanh = custom(tf.tanh, lambda z, dy: dy)  # tanh with the identity's gradient
    with pytest.raises(AssertionError, match=r"in float32 \(no float64 copy"):
        check_model_gradients(_TupleModel(leaky_tanh), gf.L2(), x, y)


def test_model_argument_errors():
    x, y = _data()
    with pytest.raises(TypeError, match="`model` must be a gradfit Model"):
        check_model_gradients(lambda x: x, gf.L2(), x, y)
    with pytest.raises(TypeError, match="`loss` must be"):
        check_model_gradients(gf.LinearModel(), "l2", x, y)
    with pytest.raises(ValueError, match="one floating-point scalar"):
        check_model_gradients(gf.LinearModel(), lambda t, p: p, x, y)


def test_keras_models_are_checked_through_their_variables():
    import keras

    x, y = _data()
    model = keras.Sequential([keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)])
    check_model_gradients(model, gf.L2(), x, y[:, None])

    def leaky(t, p):  # a loss whose gradient misses a term hidden behind stop_gradient
        kernel = model.trainable_variables[0]
        return gf.L2()(t, p) + tf.reduce_sum(tf.stop_gradient(kernel) ** 2)

    with pytest.raises(AssertionError, match=r"Variable 'sequential(_\d+)?/dense(_\d+)?/kernel'"):
        check_model_gradients(model, leaky, x, y[:, None])
