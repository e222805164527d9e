"""Tests of gf.Lion: a NumPy reference, three golden steps, Keras's Lion, validation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from tests.update_rules.helpers import (
    assert_bad_hyperparameter,
    assert_matches_keras,
    random_problem,
    run_side_by_side,
)


def numpy_lion(init, grads, lr, beta_1, beta_2, weight_decay):
    """Lion in float32 NumPy, straight from the paper's Algorithm 2."""
    f32 = np.float32
    params = [np.array(x, f32) for x in init]
    moments = [np.zeros_like(x) for x in params]
    for step in zip(*grads, strict=True):
        for i, g in enumerate(step):
            g = np.asarray(g, f32)
            c = moments[i] * f32(beta_1) + g * (f32(1) - f32(beta_1))
            params[i] = params[i] - params[i] * f32(weight_decay) * f32(lr)
            params[i] = params[i] - f32(lr) * np.sign(c)
            moments[i] = moments[i] * f32(beta_2) + g * (f32(1) - f32(beta_2))
    return params


class _Unused(keras.optimizers.Optimizer):
    """A Keras optimizer that never updates: run_side_by_side needs a partner."""

    def update_step(self, gradient, variable, learning_rate):
        del gradient, variable, learning_rate


@pytest.mark.parametrize(
    ("beta_1", "beta_2", "weight_decay"), [(0.9, 0.99, 0.0), (0.95, 0.98, 0.1), (0.5, 0.9, 1.0)]
)
def test_matches_numpy_reference_over_100_steps(beta_1, beta_2, weight_decay):
    init, grads = random_problem(seed=50, steps=100)
    rule = gf.Lion(0.01, beta_1=beta_1, beta_2=beta_2, weight_decay=weight_decay)
    mine, _ = run_side_by_side(rule, _Unused(0.0), init, grads)
    expected = numpy_lion(init, [g.numpy() for g in grads], 0.01, beta_1, beta_2, weight_decay)
    for m, e, start in zip(mine, expected, init, strict=True):
        np.testing.assert_allclose(m, e, rtol=1e-5, atol=1e-6)
        assert not np.allclose(m, start)


@pytest.mark.skipif(not hasattr(keras.optimizers, "Lion"), reason="this Keras has no Lion")
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_keras_lion_where_keras_has_one(weight_decay):
    kwargs = {"learning_rate": 0.01, "beta_1": 0.8, "weight_decay": weight_decay}
    assert_matches_keras(gf.Lion(**kwargs), keras.optimizers.Lion(**kwargs), seed=51)


def test_golden_three_steps():
    w = tf.Variable(1.0)
    rule = gf.Lion(0.1, beta_1=0.9, beta_2=0.99, weight_decay=0.5)
    rule.apply([tf.constant(2.0)], [w])
    # c = 0.9 * 0 + 0.1 * 2 = 0.2 > 0 ; w = 1 - 0.1 * (sign(0.2) + 0.5 * 1) = 1 - 0.15 = 0.85
    # m = 0.99 * 0 + 0.01 * 2 = 0.02
    np.testing.assert_allclose(w.numpy(), 0.85, rtol=1e-6)
    np.testing.assert_allclose(rule.get_slot(w, "m").numpy(), 0.02, rtol=1e-6)
    rule.apply([tf.constant(-1.0)], [w])
    # c = 0.9 * 0.02 + 0.1 * (-1) = -0.082 < 0 ; w = 0.85 - 0.1 * (-1 + 0.5 * 0.85) = 0.9075
    # m = 0.99 * 0.02 + 0.01 * (-1) = 0.0098
    np.testing.assert_allclose(w.numpy(), 0.9075, rtol=1e-6)
    np.testing.assert_allclose(rule.get_slot(w, "m").numpy(), 0.0098, rtol=1e-5)
    rule.apply([tf.constant(-0.05)], [w])
    # c = 0.9 * 0.0098 + 0.1 * (-0.05) = 0.00382 > 0: the momentum outvotes the gradient
    # w = 0.9075 - 0.1 * (1 + 0.5 * 0.9075) = 0.9075 - 0.145375 = 0.762125
    # m = 0.99 * 0.0098 + 0.01 * (-0.05) = 0.009202
    np.testing.assert_allclose(w.numpy(), 0.762125, rtol=1e-6)
    np.testing.assert_allclose(rule.get_slot(w, "m").numpy(), 0.009202, rtol=1e-5)
    assert int(rule.iterations) == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "echo"),
    [
        ({"beta_1": 1.0}, ValueError, "beta_1=1.0"),
        ({"beta_2": -0.5}, ValueError, "beta_2=-0.5"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay=-1.0"),
        ({"learning_rate": "1e-4"}, TypeError, "learning_rate='1e-4'"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, error, echo):
    assert_bad_hyperparameter(gf.Lion, kwargs, error, echo)


def test_repr_shows_hyperparameters():
    assert repr(gf.Lion(0.5, weight_decay=0.1)) == (
        "Lion(learning_rate=0.5, beta_1=0.9, beta_2=0.99, weight_decay=0.1)"
    )
