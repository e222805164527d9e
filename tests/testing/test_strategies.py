"""Tests of gradfit.testing.strategies: what they generate is valid and away from kinks."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import gradfit as gf
from gradfit.testing import strategies as gfst


@given(gfst.finite_arrays(max_magnitude=3.0, min_magnitude=0.5, max_dims=3))
def test_finite_arrays_respect_their_magnitudes(x):
    assert x.dtype == np.float32 and x.ndim <= 3
    assert np.all(np.isfinite(x))
    assert np.all((np.abs(x) >= 0.5) & (np.abs(x) <= 3.0))


@given(gfst.finite_arrays((2, 3), dtype=np.float64, max_magnitude=1e-3))
def test_finite_arrays_of_a_given_shape_and_dtype(x):
    assert x.shape == (2, 3) and x.dtype == np.float64
    assert np.all(np.abs(x) <= 1e-3)


def test_finite_arrays_reject_bad_arguments():
    with pytest.raises(ValueError, match="float dtype"):
        gfst.finite_arrays(dtype=np.int32)
    with pytest.raises(ValueError, match="min_magnitude"):
        gfst.finite_arrays(min_magnitude=2.0, max_magnitude=1.0)


@given(gfst.regression_data(outputs=2, max_examples=5))
def test_regression_data(data):
    x, y = data
    assert 1 <= x.shape[0] <= 5 and x.ndim in (1, 2)
    assert y.shape == (x.shape[0], 2)


@given(gfst.classification_data(classes=3, features=2))
def test_classification_data(data):
    x, labels = data
    assert x.shape == (labels.shape[0], 2)
    assert labels.dtype == np.int32 and np.all((labels >= 0) & (labels < 3))


@settings(max_examples=10)
@given(gfst.models(features=st.integers(0, 3), units=2))
def test_models_are_built_with_random_values(model):
    assert isinstance(model, gf.LinearModel | gf.MLP) and model.built
    values = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    assert np.all(np.abs(values) <= 1.5)
    assert np.count_nonzero(values) == values.size  # biases too: no ReLU sits at its kink
    d = model.input_shape[0] if model.input_shape else 0
    x = np.ones((4, d) if d else (4,), np.float32)
    assert model(x).shape == (4, 2)


@pytest.mark.parametrize(
    ("task", "types"),
    [
        ("regression", (gf.L2, gf.L1, gf.Huber)),
        ("binary", (gf.BinaryCrossentropy,)),
        ("categorical", (gf.SparseCategoricalCrossentropy,)),
    ],
)
def test_losses_by_task(task, types):
    @settings(max_examples=10)
    @given(gfst.losses(task))
    def check(loss):
        assert isinstance(loss, types)

    check()


def test_losses_reject_an_unknown_task():
    with pytest.raises(ValueError, match="`task` must be one of"):
        gfst.losses("ranking")


@settings(max_examples=15)
@given(gfst.update_rule_factories())
def test_update_rules_have_valid_hyperparameters_and_make_twins(factory):
    first, second = factory(), factory()
    assert isinstance(first, gf.UpdateRule) and first is not second
    variables = [tf.Variable([1.0, -2.0]), tf.Variable(0.5)]
    first.apply([tf.constant([0.5, 0.5]), tf.constant(1.0)], variables)
    assert all(np.all(np.isfinite(v.numpy())) for v in variables)
    assert repr(factory).startswith(factory.name)


def test_update_rule_names():
    names = gfst.available_rules()
    assert "SGD" in names and "KerasOptimizer(Adam)" in names
    with pytest.raises(ValueError, match="`names` must be drawn from"):
        gfst.update_rule_factories(["Adamax"])


@settings(max_examples=40)
@given(gfst.gradient_check_cases())
def test_gradient_check_cases_stay_away_from_kinks(case):
    pred = np.asarray(case.model(case.x), np.float64)
    loss = case.loss
    if isinstance(loss, gf.L1 | gf.Huber):
        residual = np.abs(pred - case.y.astype(np.float64))
        assert np.all(residual >= 0.1 - 1e-5)
        if isinstance(loss, gf.Huber):
            assert np.all(np.abs(residual - loss.delta) >= 0.1 - 1e-5)
    if not getattr(loss, "from_logits", True):
        assert np.all((pred >= 0.1 - 1e-5) & (pred <= 0.9 + 1e-5))
    if isinstance(loss, gf.SparseCategoricalCrossentropy):
        assert case.y.dtype == np.int32 and np.all(case.y < pred.shape[-1])
    assert np.isfinite(float(loss(case.y, pred)))


def test_gradfit_testing_imports_without_pytest_or_hypothesis(monkeypatch):
    # check_gradients and the contract must work where only TensorFlow is installed.
    monkeypatch.setattr(gf, "testing", sys.modules["gradfit.testing"])  # restored afterwards
    for name in [m for m in sys.modules if m.startswith("gradfit.testing")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pytest", None)
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    testing = importlib.import_module("gradfit.testing")
    assert callable(testing.check_gradients) and testing.UpdateRuleContract
    with pytest.raises(ImportError):
        importlib.import_module("gradfit.testing.strategies")
