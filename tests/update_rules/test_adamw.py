"""Tests of gf.AdamW: Keras equivalence, golden steps, Keras's decay, validation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from tests.update_rules.helpers import assert_bad_hyperparameter, assert_matches_keras


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("weight_decay", [0.004, 0.2])
def test_matches_keras_adamw_over_100_steps(weight_decay, amsgrad):
    kwargs = {"learning_rate": 2e-2, "weight_decay": weight_decay, "amsgrad": amsgrad}
    assert_matches_keras(
        gf.AdamW(**kwargs), keras.optimizers.AdamW(**kwargs), seed=20 + 10 * amsgrad
    )


def test_golden_step():
    w = tf.Variable(1.0)
    rule = gf.AdamW(0.1, weight_decay=0.5)
    rule.apply([tf.constant(2.0)], [w])
    # decay: 1 - 1 * 0.5 * 0.1 = 0.95 ; Adam's first step (see test_adam): 0.0999998
    # w = 0.95 - 0.0999998 = 0.8500002
    np.testing.assert_allclose(w.numpy(), 0.8500002, rtol=1e-6)


def test_decay_reaches_every_variable_given_and_scales_with_the_learning_rate():
    # A zero gradient makes no Adam step (m = v = 0): only the decay moves the variable.
    a, b = tf.Variable([2.0, -4.0]), tf.Variable(1.0)
    rule = gf.AdamW(0.1, weight_decay=0.5)
    rule.apply([tf.zeros([2]), tf.constant(0.0)], [a, b])
    # a = a * (1 - 0.5 * 0.1) = [1.9, -3.8] ; b = 0.95
    np.testing.assert_allclose(a.numpy(), [1.9, -3.8], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), 0.95, rtol=1e-6)
    rule.learning_rate = 0.2
    rule.apply([tf.zeros([2]), tf.constant(0.0)], [a, b])
    # a = [1.9, -3.8] * (1 - 0.5 * 0.2) = [1.71, -3.42]
    np.testing.assert_allclose(a.numpy(), [1.71, -3.42], rtol=1e-6)
    # Adam itself never decays.
    c = tf.Variable(2.0)
    gf.Adam(0.1).apply([tf.constant(0.0)], [c])
    assert c.numpy() == 2.0


@pytest.mark.parametrize(
    ("kwargs", "error", "echo"),
    [
        ({"weight_decay": -0.1}, ValueError, "weight_decay=-0.1"),
        ({"weight_decay": float("inf")}, ValueError, "weight_decay=inf"),
        ({"weight_decay": None}, TypeError, "weight_decay=None"),
        ({"beta_1": 1.0}, ValueError, "beta_1=1.0"),
        ({"epsilon": 0}, ValueError, "epsilon=0"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, error, echo):
    assert_bad_hyperparameter(gf.AdamW, kwargs, error, echo)


def test_repr_shows_hyperparameters():
    assert repr(gf.AdamW(0.5, weight_decay=0.1)) == (
        "AdamW(learning_rate=0.5, weight_decay=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-07, "
        "amsgrad=False)"
    )
