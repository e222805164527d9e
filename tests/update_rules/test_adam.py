"""Tests of gf.Adam: Keras equivalence, golden steps, hyperparameter validation."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from tests.update_rules.helpers import assert_bad_hyperparameter, assert_matches_keras

HYPERPARAMETERS = [
    {"learning_rate": 1e-2},
    {"learning_rate": 3e-2, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3},
]


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("kwargs", HYPERPARAMETERS, ids=["default-betas", "small-betas"])
def test_matches_keras_adam_over_100_steps(kwargs, amsgrad):
    assert_matches_keras(
        gf.Adam(**kwargs, amsgrad=amsgrad),
        keras.optimizers.Adam(**kwargs, amsgrad=amsgrad),
        seed=len(kwargs) + 10 * amsgrad,
    )


def test_golden_two_steps():
    w = tf.Variable(1.0)
    rule = gf.Adam(0.1)
    rule.apply([tf.constant(2.0)], [w])
    # t = 1: m = 0.1 * 2 = 0.2 ; v = 0.001 * 4 = 0.004
    # alpha = 0.1 * sqrt(1 - 0.999) / (1 - 0.9) = 0.0316228
    # w = 1 - 0.2 * 0.0316228 / (sqrt(0.004) + 1e-7) = 1 - 0.0999998 = 0.9000002
    np.testing.assert_allclose(rule.get_slot(w, "m").numpy(), 0.2, rtol=1e-6)
    np.testing.assert_allclose(rule.get_slot(w, "v").numpy(), 0.004, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), 0.9000002, rtol=1e-6)
    rule.apply([tf.constant(-1.0)], [w])
    # t = 2: m = 0.2 + 0.1 * (-1 - 0.2) = 0.08 ; v = 0.004 + 0.001 * (1 - 0.004) = 0.004996
    # alpha = 0.1 * sqrt(1 - 0.999^2) / (1 - 0.9^2) = 0.0235317
    # w = 0.9000002 - 0.08 * 0.0235317 / (sqrt(0.004996) + 1e-7) = 0.9000002 - 0.0266337 = 0.8733665
    np.testing.assert_allclose(rule.get_slot(w, "m").numpy(), 0.08, rtol=1e-6)
    np.testing.assert_allclose(rule.get_slot(w, "v").numpy(), 0.004996, rtol=1e-6)
    # (float32 rounds 1 - 0.999^2 to 1.3e-5 relative error; hence rtol 1e-5.)
    np.testing.assert_allclose(w.numpy(), 0.8733665, rtol=1e-5)


@pytest.mark.parametrize(("amsgrad", "expected"), [(True, 0.8330279), (False, 0.8329944)])
def test_golden_amsgrad_keeps_the_largest_v(amsgrad, expected):
    w = tf.Variable(1.0)
    rule = gf.Adam(0.1, amsgrad=amsgrad)
    rule.apply([tf.constant(2.0)], [w])  # w = 0.9000002 as above ; v = v_max = 0.004
    rule.apply([tf.constant(0.0)], [w])
    # m = 0.9 * 0.2 = 0.18 ; v = 0.999 * 0.004 = 0.003996 < v_max = 0.004 ; alpha = 0.0235317
    # AMSGrad: w = 0.9000002 - 0.18 * 0.0235317 / (sqrt(0.004) + 1e-7) = 0.8330279
    # Adam:    w = 0.9000002 - 0.18 * 0.0235317 / (sqrt(0.003996) + 1e-7) = 0.8329944
    # The two differ by 4e-5 relative; float32 rounding of 1 - 0.999^2 is about 1e-5.
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5)
    if amsgrad:
        np.testing.assert_allclose(rule.get_slot(w, "v_max").numpy(), 0.004, rtol=1e-6)
    else:
        with pytest.raises(KeyError):
            rule.get_slot(w, "v_max")


@pytest.mark.parametrize(
    ("kwargs", "error", "echo"),
    [
        ({"learning_rate": -1e-3}, ValueError, "learning_rate=-0.001"),
        ({"beta_1": 1.0}, ValueError, "beta_1=1.0"),
        ({"beta_1": -0.1}, ValueError, "beta_1=-0.1"),
        ({"beta_2": 1.5}, ValueError, "beta_2=1.5"),
        ({"beta_2": math.nan}, ValueError, "beta_2=nan"),
        ({"epsilon": 0.0}, ValueError, "epsilon=0.0"),
        ({"epsilon": -1e-7}, ValueError, "epsilon=-1e-07"),
        ({"epsilon": "1e-7"}, TypeError, "epsilon='1e-7'"),
        ({"amsgrad": 1}, TypeError, "amsgrad=1"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, error, echo):
    assert_bad_hyperparameter(gf.Adam, kwargs, error, echo)


def test_repr_shows_hyperparameters():
    assert repr(gf.Adam(0.5, beta_1=0.8, amsgrad=True)) == (
        "Adam(learning_rate=0.5, beta_1=0.8, beta_2=0.999, epsilon=1e-07, amsgrad=True)"
    )
