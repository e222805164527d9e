"""Tests of gf.Adagrad: Keras equivalence, golden steps, row-sparse updates, validation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from tests.update_rules.helpers import assert_bad_hyperparameter, assert_matches_keras


@pytest.mark.parametrize(
    "kwargs",
    [
        {"learning_rate": 0.1},
        {"learning_rate": 0.05, "initial_accumulator_value": 0.0, "epsilon": 1e-3},
        {"learning_rate": 0.2, "initial_accumulator_value": 2.0},
    ],
)
def test_matches_keras_adagrad_over_100_steps(kwargs):
    assert_matches_keras(gf.Adagrad(**kwargs), keras.optimizers.Adagrad(**kwargs), seed=40)


def test_golden_two_steps():
    w = tf.Variable(1.0)
    rule = gf.Adagrad(0.1, initial_accumulator_value=0.1)
    rule.apply([tf.constant(2.0)], [w])
    # accumulator = 0.1 + 4 = 4.1 ; w = 1 - 0.1 * 2 / sqrt(4.1 + 1e-7) = 1 - 0.0987730 = 0.9012270
    np.testing.assert_allclose(rule.get_slot(w, "accumulator").numpy(), 4.1, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), 0.9012270, rtol=1e-6)
    rule.apply([tf.constant(-1.0)], [w])
    # accumulator = 5.1 ; w = 0.9012270 + 0.1 / sqrt(5.1 + 1e-7) = 0.9012270 + 0.0442807 = 0.9455078
    np.testing.assert_allclose(w.numpy(), 0.9455078, rtol=1e-6)


def test_sparse_gradient_touches_only_its_rows_and_sums_duplicates():
    table = tf.Variable(tf.ones([4, 2]))
    rule = gf.Adagrad(0.1, initial_accumulator_value=0.0, epsilon=1e-7)
    grad = tf.IndexedSlices(
        values=tf.constant([[1.0, 0.0], [2.0, -3.0]]),
        indices=tf.constant([2, 2]),
        dense_shape=tf.constant([4, 2]),
    )
    rule.apply([grad], [table])
    # row 2: g = [3, -3] (duplicates summed first) ; accumulator = [9, 9]
    # table = 1 - 0.1 * [3, -3] / sqrt(9 + 1e-7) = [0.9, 1.1] ; other rows untouched
    accumulator = rule.get_slot(table, "accumulator").numpy()
    np.testing.assert_allclose(accumulator, [[0, 0], [0, 0], [9, 9], [0, 0]], rtol=1e-6)
    np.testing.assert_allclose(
        table.numpy(), [[1, 1], [1, 1], [0.9, 1.1], [1, 1]], rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "echo"),
    [
        ({"initial_accumulator_value": -0.1}, ValueError, "initial_accumulator_value=-0.1"),
        ({"initial_accumulator_value": "0"}, TypeError, "initial_accumulator_value='0'"),
        ({"epsilon": 0.0}, ValueError, "epsilon=0.0"),
        ({"learning_rate": -1}, ValueError, "learning_rate=-1"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, error, echo):
    assert_bad_hyperparameter(gf.Adagrad, kwargs, error, echo)


def test_repr_shows_hyperparameters():
    assert repr(gf.Adagrad(0.5)) == (
        "Adagrad(learning_rate=0.5, initial_accumulator_value=0.1, epsilon=1e-07)"
    )
