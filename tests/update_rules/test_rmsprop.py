"""Tests of gf.RMSProp: Keras equivalence, golden steps, validation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from tests.update_rules.helpers import assert_bad_hyperparameter, assert_matches_keras


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_matches_keras_rmsprop_over_100_steps(momentum, centered):
    kwargs = {"learning_rate": 1e-2, "rho": 0.8, "momentum": momentum, "centered": centered}
    assert_matches_keras(
        gf.RMSProp(**kwargs), keras.optimizers.RMSprop(**kwargs), seed=30 + centered
    )


def test_golden_two_centered_momentum_steps():
    w = tf.Variable(1.0)
    rule = gf.RMSProp(0.1, rho=0.9, momentum=0.5, centered=True)
    rule.apply([tf.constant(2.0)], [w])
    # velocity = 0.1 * 4 = 0.4 ; mean = 0.1 * 2 = 0.2
    # step = 0.1 * 2 / sqrt(0.4 - 0.2^2 + 1e-7) = 0.2 / 0.6 = 0.3333333 ; momentum = 0.3333333
    # w = 1 - 0.3333333 = 0.6666667
    np.testing.assert_allclose(rule.get_slot(w, "velocity").numpy(), 0.4, rtol=1e-6)
    np.testing.assert_allclose(rule.get_slot(w, "mean").numpy(), 0.2, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), 0.6666667, rtol=1e-6)
    rule.apply([tf.constant(2.0)], [w])
    # velocity = 0.9 * 0.4 + 0.4 = 0.76 ; mean = 0.9 * 0.2 + 0.2 = 0.38
    # step = 0.2 / sqrt(0.76 - 0.1444 + 1e-7) = 0.2549064
    # momentum = 0.5 * 0.3333333 + 0.2549064 = 0.4215730 ; w = 0.6666667 - 0.4215730 = 0.2450937
    np.testing.assert_allclose(rule.get_slot(w, "momentum").numpy(), 0.421573, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), 0.2450937, rtol=1e-5)


def test_golden_plain_step_has_only_a_velocity_slot():
    w = tf.Variable(1.0)
    rule = gf.RMSProp(0.1)
    rule.apply([tf.constant(2.0)], [w])
    # velocity = 0.1 * 4 = 0.4 ; w = 1 - 0.2 / sqrt(0.4 + 1e-7) = 1 - 0.3162277 = 0.6837723
    np.testing.assert_allclose(w.numpy(), 0.6837723, rtol=1e-6)
    assert len(rule.variables) == 3  # learning rate, iterations, velocity


@pytest.mark.parametrize(
    ("kwargs", "error", "echo"),
    [
        ({"rho": -0.1}, ValueError, "rho=-0.1"),
        ({"rho": 1.0}, ValueError, "rho=1.0"),
        ({"momentum": 1.0}, ValueError, "momentum=1.0"),
        ({"epsilon": -1.0}, ValueError, "epsilon=-1.0"),
        ({"centered": "no"}, TypeError, "centered='no'"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate=nan"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, error, echo):
    assert_bad_hyperparameter(gf.RMSProp, kwargs, error, echo)


def test_repr_shows_hyperparameters():
    assert repr(gf.RMSProp(0.5, momentum=0.5, centered=True)) == (
        "RMSProp(learning_rate=0.5, rho=0.9, momentum=0.5, epsilon=1e-07, centered=True)"
    )
