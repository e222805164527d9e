"""Tests of gradfit.metrics: golden values, equivalence with Keras 3, exact epoch values, XLA."""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from gradfit import metrics as gm

TOL = 1e-6

KERAS_PAIRS = [
    (gm.SparseCategoricalAccuracy, keras.metrics.SparseCategoricalAccuracy),
    (gm.CategoricalAccuracy, keras.metrics.CategoricalAccuracy),
    (gm.BinaryAccuracy, keras.metrics.BinaryAccuracy),
    (gm.MeanAbsoluteError, keras.metrics.MeanAbsoluteError),
    (gm.MeanSquaredError, keras.metrics.MeanSquaredError),
]


def _f(x: tf.Tensor) -> float:
    return float(np.asarray(x, np.float64))


# ---------------------------------------------------------------------------
# Golden values, by hand
# ---------------------------------------------------------------------------

# Three examples, three classes: argmax rows are 2, 0, 2; labels 2, 1, 0 -> hits 1, 0, 0.
SCORES = np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1], [0.3, 0.3, 0.4]], np.float32)
LABELS = np.array([2, 1, 0])
WEIGHTS = np.array([1.0, 2.0, 3.0], np.float32)


@pytest.mark.parametrize(
    ("metric", "y_true"),
    [
        (gm.SparseCategoricalAccuracy(), LABELS),
        (gm.SparseCategoricalAccuracy(), LABELS[:, None]),  # [N, 1] labels
        (gm.SparseCategoricalAccuracy(), LABELS.astype(np.float32)),  # float labels
        (gm.CategoricalAccuracy(), np.eye(3, dtype=np.float32)[LABELS]),
    ],
)
def test_accuracy_golden(metric, y_true):
    np.testing.assert_array_equal(metric.per_example(y_true, SCORES), [1.0, 0.0, 0.0])
    assert _f(metric(y_true, SCORES)) == pytest.approx(1 / 3)
    # Weighted: (1*1 + 2*0 + 3*0) / (1 + 2 + 3) = 1/6.
    assert _f(metric(y_true, SCORES, WEIGHTS)) == pytest.approx(1 / 6)
    value, weight = metric.weighted(y_true, SCORES, WEIGHTS)
    assert (_f(value), _f(weight)) == pytest.approx((1 / 6, 6.0))
    # Every weight zero: 0, not NaN.
    value, weight = metric.weighted(y_true, SCORES, np.zeros(3, np.float32))
    assert (_f(value), _f(weight)) == (0.0, 0.0)


def test_sparse_categorical_accuracy_over_time_steps():
    # [N=2, T=2] labels against [2, 2, 2] scores: argmaxes [0, 0] and [1, 1].
    y_true = np.array([[0, 1], [1, 1]])
    y_pred = np.array([[[1, 0], [1, 0]], [[0, 1], [0, 1]]], np.float32)
    metric = gm.SparseCategoricalAccuracy()
    np.testing.assert_array_equal(metric.per_example(y_true, y_pred), [0.5, 1.0])
    assert _f(metric(y_true, y_pred)) == pytest.approx(0.75)
    # Weights [3, 1]: (3*0.5 + 1*1) / 4.
    assert _f(metric(y_true, y_pred, [3.0, 1.0])) == pytest.approx(2.5 / 4)
    keras_metric = keras.metrics.SparseCategoricalAccuracy()
    keras_metric.update_state(y_true, y_pred, sample_weight=np.array([3.0, 1.0]))
    assert _f(keras_metric.result()) == pytest.approx(2.5 / 4)


def test_binary_accuracy_golden():
    y_true = np.array([[1], [0], [1], [0]], np.float32)
    y_pred = np.array([[0.6], [0.4], [0.5], [0.51]], np.float32)
    # > 0.5: [1, 0, 0, 1] against [1, 0, 1, 0]: hits [1, 1, 0, 0]; 0.5 itself is not above.
    np.testing.assert_array_equal(gm.BinaryAccuracy().per_example(y_true, y_pred), [1, 1, 0, 0])
    assert _f(gm.BinaryAccuracy()(y_true, y_pred)) == 0.5
    # Weights [1, 1, 2, 2]: (1 + 1) / 6.
    assert _f(gm.BinaryAccuracy()(y_true, y_pred, [1.0, 1.0, 2.0, 2.0])) == pytest.approx(1 / 3)
    # > 0.45: [1, 0, 1, 1]: hits [1, 1, 1, 0].
    assert _f(gm.BinaryAccuracy(threshold=0.45)(y_true, y_pred)) == 0.75
    # Logits with threshold 0; integer and boolean labels alike.
    logits = np.array([[2.0], [-1.0], [-3.0], [0.5]], np.float32)
    for labels in (y_true.astype(np.int32), y_true.astype(bool)):
        assert _f(gm.BinaryAccuracy(threshold=0.0)(labels, logits)) == 0.5
    # Two outputs per example: each example's mean over them.
    per = gm.BinaryAccuracy().per_example([[1, 0], [1, 1]], np.array([[0.9, 0.9], [0.9, 0.1]]))
    np.testing.assert_array_equal(per, [0.5, 0.5])


def test_regression_golden():
    y_true = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    y_pred = np.array([[2.0, 2.0], [3.0, 1.0]], np.float32)
    weights = np.array([3.0, 1.0], np.float32)
    mae, mse = gm.MeanAbsoluteError(), gm.MeanSquaredError()
    # Errors [1, 0] and [0, -3]: MAE per example 0.5, 1.5; MSE 0.5, 4.5.
    np.testing.assert_array_equal(mae.per_example(y_true, y_pred), [0.5, 1.5])
    np.testing.assert_array_equal(mse.per_example(y_true, y_pred), [0.5, 4.5])
    assert _f(mae(y_true, y_pred)) == 1.0
    assert _f(mse(y_true, y_pred)) == 2.5
    assert _f(mae(y_true, y_pred, weights)) == pytest.approx((3 * 0.5 + 1.5) / 4)
    assert _f(mse(y_true, y_pred, weights)) == pytest.approx((3 * 0.5 + 4.5) / 4)
    assert _f(mse(y_true, y_pred, np.zeros(2))) == 0.0


def test_empty_batch_is_zero_not_nan():
    for metric in (gm.MeanSquaredError(), gm.SparseCategoricalAccuracy()):
        y_true = np.zeros([0], np.int64)
        y_pred = np.zeros([0, 1], np.float32)
        assert _f(metric(y_true, y_pred)) == 0.0
        value, weight = metric.weighted(y_true, y_pred, np.zeros([0], np.float32))
        assert (_f(value), _f(weight)) == (0.0, 0.0)


# ---------------------------------------------------------------------------
# Equivalence with Keras's metric objects
# ---------------------------------------------------------------------------


def _random_case(cls, rng: np.random.Generator, n: int, true_shape: str):
    """Random targets and float32 predictions; ``true_shape`` is "N" or "N1" for labels."""
    if cls is gm.SparseCategoricalAccuracy:
        y_pred = rng.normal(size=(n, 5)).astype(np.float32)
        y_true = rng.integers(0, 5, size=n)
    elif cls is gm.CategoricalAccuracy:
        y_pred = rng.normal(size=(n, 5)).astype(np.float32)
        y_true = np.eye(5, dtype=np.float32)[rng.integers(0, 5, size=n)]
        return y_true, y_pred
    elif cls is gm.BinaryAccuracy:
        y_pred = rng.random(size=(n, 1)).astype(np.float32)
        y_true = rng.integers(0, 2, size=n).astype(np.float32)
    else:  # Keras reduces MAE/MSE over the last axis: [N] against [N] is one value per batch.
        y_pred = rng.normal(size=(n, 1)).astype(np.float32)
        y_true = rng.normal(size=n).astype(np.float32)
    return (y_true[:, None] if true_shape == "N1" else y_true), y_pred


@pytest.mark.parametrize(("cls", "keras_cls"), KERAS_PAIRS)
@pytest.mark.parametrize("true_shape", ["N", "N1"])
@pytest.mark.parametrize("weight_shape", [None, "N", "N1"])
def test_matches_keras(cls, keras_cls, true_shape, weight_shape):
    rng = np.random.default_rng(len(cls.__name__) + len(true_shape) + len(str(weight_shape)))
    y_true, y_pred = _random_case(cls, rng, 64, true_shape)
    weights = None
    if weight_shape is not None:
        weights = rng.random(64).astype(np.float32) * (rng.random(64) > 0.2)  # some zeros
        weights = weights[:, None] if weight_shape == "N1" else weights
    keras_metric = keras_cls()
    keras_metric.update_state(y_true, y_pred, sample_weight=weights)
    ours = cls()(y_true, y_pred, weights)
    assert ours.shape == ()
    assert _f(ours) == pytest.approx(_f(keras_metric.result()), abs=TOL)


@pytest.mark.parametrize(("cls", "keras_cls"), KERAS_PAIRS)
def test_epoch_value_matches_keras_over_batches(cls, keras_cls):
    rng = np.random.default_rng(7)
    keras_metric, metric = keras_cls(), cls()
    total = weight_total = 0.0
    for n in (5, 17, 1, 9):
        y_true, y_pred = _random_case(cls, rng, n, "N1")
        w = rng.random(n).astype(np.float32)
        keras_metric.update_state(y_true, y_pred, sample_weight=w)
        value, weight = metric.weighted(y_true, y_pred, w)
        total, weight_total = total + _f(value) * _f(weight), weight_total + _f(weight)
    assert total / weight_total == pytest.approx(_f(keras_metric.result()), abs=TOL)


def test_names_match_keras():
    for cls, keras_cls in KERAS_PAIRS:
        assert cls().name == keras_cls().name


def test_keras_quirks_reproduced():
    # A soft target is never a hit: the thresholded prediction (0 or 1) must equal it.
    y_true, y_pred = np.array([[0.7], [1.0]], np.float32), np.array([[0.9], [0.9]], np.float32)
    keras_metric = keras.metrics.BinaryAccuracy()
    keras_metric.update_state(y_true, y_pred)
    assert _f(gm.BinaryAccuracy()(y_true, y_pred)) == _f(keras_metric.result()) == 0.5
    # The threshold is a float32 number, even for float64 predictions.
    y_pred64 = np.array([[float(np.float32(0.3)) - 1e-12], [0.30000001]], np.float64)
    keras_metric = keras.metrics.BinaryAccuracy(threshold=0.3)
    keras_metric.update_state(np.ones((2, 1)), y_pred64)
    assert _f(gm.BinaryAccuracy(threshold=0.3)(np.ones((2, 1)), y_pred64)) == 0.0
    assert _f(keras_metric.result()) == 0.0
    # -0.0 counts as less than +0.0 in argmax.
    keras_metric = keras.metrics.SparseCategoricalAccuracy()
    keras_metric.update_state([1], np.array([[-0.0, 0.0]], np.float32))
    assert _f(gm.SparseCategoricalAccuracy()([1], np.array([[-0.0, 0.0]], np.float32))) == 1.0
    assert _f(keras_metric.result()) == 1.0


def test_sparse_labels_compared_exactly_in_low_precision():
    # Keras casts labels to the predictions' dtype: in bfloat16 257 rounds to 256 and counts
    # as a hit. Integer labels are compared as integers here.
    y_pred = tf.one_hot([256, 256], 300, dtype=tf.bfloat16)
    np.testing.assert_array_equal(
        gm.SparseCategoricalAccuracy().per_example(np.array([257, 256]), y_pred), [0.0, 1.0]
    )


# ---------------------------------------------------------------------------
# Exact epoch values: property test over random batchings
# ---------------------------------------------------------------------------


def _spec(*shape: int | None, dtype: tf.DType = tf.float64) -> tf.TensorSpec:
    return tf.TensorSpec(shape, dtype)


# Each case: metric, target spec, prediction spec (the batch axis unknown, so no retracing).
CASES = {
    "sparse": (gm.SparseCategoricalAccuracy(), _spec(None, dtype=tf.int64), _spec(None, 4)),
    "sparse_seq": (
        gm.SparseCategoricalAccuracy(),
        _spec(None, 3, dtype=tf.int64),
        _spec(None, 3, 4),
    ),
    "categorical": (gm.CategoricalAccuracy(), _spec(None, 4), _spec(None, 4)),
    "binary": (gm.BinaryAccuracy(threshold=0.3), _spec(None, 1), _spec(None)),
    "mae": (gm.MeanAbsoluteError(), _spec(None), _spec(None, 1)),
    "mse": (gm.MeanSquaredError(), _spec(None, 3), _spec(None, 3)),
}


def _compile(metric, true_spec, pred_spec):
    weight_spec = _spec(None)
    weighted = tf.function(metric.weighted, input_signature=[true_spec, pred_spec, weight_spec])
    plain = tf.function(lambda y, p: metric(y, p), input_signature=[true_spec, pred_spec])
    return weighted, plain


# Built once, shared across hypothesis examples.
COMPILED = {key: _compile(*case) for key, case in CASES.items()}


def _data(key: str, rng: np.random.Generator, n: int):
    _, true_spec, pred_spec = CASES[key]
    y_pred = rng.normal(size=(n, *pred_spec.shape[1:]))
    if key.startswith("sparse"):
        y_true = rng.integers(0, 4, size=(n, *true_spec.shape[1:]))
    elif key == "categorical":
        y_true = np.eye(4)[rng.integers(0, 4, size=n)]
    elif key == "binary":
        y_true = rng.integers(0, 2, size=(n, 1)).astype(np.float64)
    else:
        y_true = rng.normal(size=(n, *true_spec.shape[1:]))
    return y_true, y_pred


@settings(deadline=None, max_examples=30)
@given(
    key=st.sampled_from(sorted(CASES)),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    cuts=st.lists(st.floats(0.0, 1.0), max_size=6),
    weighted=st.booleans(),
    zero_weights=st.booleans(),
)
def test_batches_combine_to_the_exact_epoch_value(key, n, seed, cuts, weighted, zero_weights):
    rng = np.random.default_rng(seed)
    y_true, y_pred = _data(key, rng, n)
    weights = rng.random(n) * (rng.random(n) > 0.3) if weighted else np.ones(n)
    if weighted and zero_weights:
        weights[: n // 2] = 0.0
    compiled_weighted, compiled_plain = COMPILED[key]
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    total = weight_total = 0.0
    for lo, hi in itertools.pairwise(bounds):
        if weighted:
            value, weight = compiled_weighted(y_true[lo:hi], y_pred[lo:hi], weights[lo:hi])
        else:  # an unweighted batch weighs its number of examples
            value, weight = compiled_plain(y_true[lo:hi], y_pred[lo:hi]), hi - lo
        total, weight_total = total + _f(value) * _f(weight), weight_total + _f(weight)
    epoch = total / weight_total if weight_total else 0.0
    metric = CASES[key][0]
    whole = metric(y_true, y_pred, weights if weighted else None)
    assert epoch == pytest.approx(_f(whole), abs=TOL, rel=TOL)
    # And both equal the weighted mean over examples.
    per_example = np.asarray(metric.per_example(y_true, y_pred))
    expected = (per_example * weights).sum() / weights.sum() if weights.sum() else 0.0
    assert epoch == pytest.approx(expected, abs=TOL, rel=TOL)


# ---------------------------------------------------------------------------
# Shapes, dtypes, XLA
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric", [gm.MeanAbsoluteError(), gm.MeanSquaredError(), gm.BinaryAccuracy()]
)
def test_trailing_axis_of_one_never_broadcasts(metric):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=8).astype(np.float32)
    p = rng.random(8).astype(np.float32)
    expected = metric.per_example(y, p)  # [N] against [N]: elementwise
    assert expected.shape == (8,)
    for y_true, y_pred in [(y, p[:, None]), (y[:, None], p), (y[:, None], p[:, None])]:
        np.testing.assert_array_equal(metric.per_example(y_true, y_pred), expected)
    # With the batch axis unknown, in a graph: still [N], never [N, N].
    traced = tf.function(
        metric.per_example, input_signature=[_spec(None, dtype=tf.float32), _spec(None, 1)]
    ).get_concrete_function()
    assert traced.structured_outputs.shape.as_list() == [None]


def test_sparse_labels_of_shape_n1_give_n_values():
    traced = tf.function(
        gm.SparseCategoricalAccuracy().per_example,
        input_signature=[_spec(None, 1, dtype=tf.int32), _spec(None, 4)],
    ).get_concrete_function()
    assert traced.structured_outputs.shape.as_list() == [None]


def _all_metrics(y_int, y_onehot, y_binary, y_real, y_pred, w):
    """Every metric's weighted value and weight, and an unweighted value, as one structure."""
    cases = {
        "sparse": (gm.SparseCategoricalAccuracy(), y_int[:, None]),
        "categorical": (gm.CategoricalAccuracy(), y_onehot),
        "binary": (gm.BinaryAccuracy(), y_binary),
        "mae": (gm.MeanAbsoluteError(), y_real),
        "mse": (gm.MeanSquaredError(), y_real),
    }
    return {
        key: (*metric.weighted(y, y_pred, w), metric(y, y_pred))
        for key, (metric, y) in cases.items()
    }


XLA_ALL = tf.function(_all_metrics, jit_compile=True)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32, tf.float64])
def test_xla_equals_eager_in_every_float_dtype(dtype):
    rng = np.random.default_rng(11)
    n = 24
    labels = rng.integers(0, 3, size=n)
    inputs = (
        labels,
        np.eye(3, dtype=np.float32)[labels],
        rng.integers(0, 2, size=(n, 3)).astype(np.float32),
        rng.normal(size=(n, 3)).astype(np.float32),
        tf.cast(rng.random(size=(n, 3)), dtype),
        rng.random(n).astype(np.float32),
    )
    eager = _all_metrics(*inputs)
    compiled = XLA_ALL(*inputs)
    reference = _all_metrics(*inputs[:4], tf.cast(inputs[4], tf.float64), inputs[5])
    low_precision = dtype in (tf.float16, tf.bfloat16)
    for key, values in eager.items():
        for ours, xla, ref in zip(values, compiled[key], reference[key], strict=True):
            assert ours.dtype == xla.dtype == dtype  # the predictions' float dtype
            assert _f(xla) == pytest.approx(_f(ours), rel=1e-6, abs=1e-6), key
            # Computed in float32 and cast back once: one rounding of the float64 answer.
            tolerance = 1e-2 if low_precision else 1e-6
            assert _f(ours) == pytest.approx(_f(ref), rel=tolerance, abs=tolerance), key


def test_integer_predictions_give_float32():
    value = gm.MeanAbsoluteError()([1, 2], [[1], [4]])
    assert value.dtype == tf.float32
    assert _f(value) == 1.0
    assert gm.SparseCategoricalAccuracy().per_example([1], [[0, 3]]).dtype == tf.float32


# ---------------------------------------------------------------------------
# The interface, `get`, errors
# ---------------------------------------------------------------------------


def test_a_user_metric_implements_only_per_example():
    class AbsoluteLogError(gm.Metric):
        def per_example(self, y_true, y_pred):
            return tf.abs(tf.math.log(tf.cast(y_pred, tf.float32) / tf.cast(y_true, tf.float32)))

    metric = AbsoluteLogError()
    assert metric.name == "absolute_log_error"
    y_true, y_pred = [1.0, math.e], [math.e, math.e]
    assert _f(metric(y_true, y_pred)) == pytest.approx(0.5)
    assert _f(metric(y_true, y_pred, [1.0, 3.0])) == pytest.approx(0.25)
    with pytest.raises(TypeError):
        gm.Metric()  # abstract


def test_repr():
    assert repr(gm.MeanSquaredError()) == "MeanSquaredError()"
    assert repr(gm.BinaryAccuracy(threshold=0.25)) == "BinaryAccuracy(threshold=0.25)"


@pytest.mark.parametrize(
    ("identifier", "cls"),
    [
        ("mae", gm.MeanAbsoluteError),
        ("mean_absolute_error", gm.MeanAbsoluteError),
        ("mse", gm.MeanSquaredError),
        ("mean_squared_error", gm.MeanSquaredError),
        ("sparse_categorical_accuracy", gm.SparseCategoricalAccuracy),
        ("categorical_accuracy", gm.CategoricalAccuracy),
        ("binary_accuracy", gm.BinaryAccuracy),
    ],
)
def test_get_resolves_names(identifier, cls):
    metric = gm.get(identifier)
    assert type(metric) is cls
    assert metric is not gm.get(identifier)  # a new object each time


def test_get_returns_other_objects_unchanged():
    metric, keras_metric = gm.MeanSquaredError(), keras.metrics.AUC()
    assert gm.get(metric) is metric
    assert gm.get(keras_metric) is keras_metric
    assert gm.get(len) is len


@pytest.mark.parametrize("identifier", ["accuracy", "acc", "msee", "MSE", ""])
def test_get_refuses_unknown_names(identifier):
    with pytest.raises(ValueError, match="`metrics`") as error:
        gm.get(identifier)
    assert f"Received: metrics={identifier!r}" in str(error.value)


@pytest.mark.parametrize(
    ("threshold", "error"),
    [
        ("0.5", TypeError),
        (True, TypeError),
        (None, TypeError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
    ],
)
def test_bad_threshold(threshold, error):
    with pytest.raises(error, match="`threshold`") as raised:
        gm.BinaryAccuracy(threshold=threshold)
    assert f"Received: threshold={threshold!r}" in str(raised.value)


def test_threshold_accepts_numpy_numbers():
    assert gm.BinaryAccuracy(threshold=np.float32(0.25)).threshold == 0.25
    assert gm.BinaryAccuracy(threshold=0).threshold == 0.0


def test_check_targets():
    metric = gm.SparseCategoricalAccuracy()
    metric.check_targets("y", np.array([0, 2, 1]), 3)
    metric.check_targets("y", np.array([0, 7]), None)  # width unknown: nothing to check
    metric.check_targets("y", np.zeros([0], np.int64), 3)
    for labels in (np.array([0, 3]), np.array([-1, 0]), np.array([[0.0], [3.0]])):
        with pytest.raises(ValueError, match=r"`y` holds class labels outside \[0, 3\)"):
            metric.check_targets("y", labels, 3)
