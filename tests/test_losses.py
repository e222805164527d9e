"""Tests of gradfit.losses: golden values, equivalence with Keras 3, shapes, errors."""

from __future__ import annotations

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradfit as gf
from gradfit.losses import check_loss, loss_name

RTOL = 1e-5
ATOL = 1e-6

# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


def _floats32(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, width=32, allow_nan=False, allow_subnormal=False)


@st.composite
def _regression_pair(draw: st.DrawFn, lo: float = -100.0, hi: float = 100.0):
    """Float32 ``y_true`` and ``y_pred`` of the same shape, ``[N]`` or ``[N, k]``."""
    n = draw(st.integers(1, 40))
    shape = draw(st.sampled_from([(n,), (n, draw(st.integers(1, 4)))]))
    y_true = draw(hnp.arrays(np.float32, shape, elements=_floats32(lo, hi)))
    y_pred = draw(hnp.arrays(np.float32, shape, elements=_floats32(lo, hi)))
    return y_true, y_pred


@st.composite
def _binary_pair(draw: st.DrawFn, *, logits: bool):
    """Targets in [0, 1] and probabilities (0 and 1 included) or logits."""
    n = draw(st.integers(1, 40))
    shape = draw(st.sampled_from([(n,), (n, draw(st.integers(1, 4)))]))
    y_true = draw(
        hnp.arrays(
            np.float32,
            shape,
            elements=st.one_of(st.sampled_from([0.0, 1.0]), _floats32(0.0, 1.0)),
        )
    )
    pred_elements = (
        _floats32(-30.0, 30.0)
        if logits
        else st.one_of(st.sampled_from([0.0, 1.0]), _floats32(0.0, 1.0))
    )
    y_pred = draw(hnp.arrays(np.float32, shape, elements=pred_elements))
    return y_true, y_pred


@st.composite
def _sparse_pair(draw: st.DrawFn, *, logits: bool):
    """Integer labels ``[N]`` and ``[N, classes]`` probabilities (rows sum to 1) or logits."""
    n = draw(st.integers(1, 40))
    classes = draw(st.integers(2, 6))
    labels = draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, classes - 1)))
    scores = draw(hnp.arrays(np.float32, (n, classes), elements=_floats32(-20.0, 20.0)))
    if logits:
        return labels, scores
    shifted = np.exp(scores.astype(np.float64) - scores.max(axis=1, keepdims=True))
    probs = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    return labels, probs


def _close(actual: tf.Tensor, expected: float | tf.Tensor, rtol: float = RTOL) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=ATOL)


# ---------------------------------------------------------------------------
# Golden values, computed by hand
# ---------------------------------------------------------------------------


def test_l2_golden():
    # errors y_pred - y_true = [0, 1, 2]; squares [0, 1, 4]; mean = 5/3.
    loss = gf.L2()([1.0, 2.0, 3.0], [1.0, 3.0, 5.0])
    assert loss.shape == ()
    _close(loss, 5.0 / 3.0)


def test_l2_is_the_tutorials_loss():
    # The tutorial: reduce_mean(square(predicted - desired)).
    # predicted = 5 * [1, 2] + 0 = [5, 10], desired = [5, 7]: errors [0, 3]; mean(0, 9) = 4.5.
    _close(gf.L2()(tf.constant([5.0, 7.0]), tf.constant([5.0, 10.0])), 4.5)


def test_l1_golden():
    # |y_pred - y_true| = |[0.5, 2, 6] - [0, 2, 3]| = [0.5, 0, 3]; mean = 3.5 / 3.
    _close(gf.L1()([0.0, 2.0, 3.0], [0.5, 2.0, 6.0]), 3.5 / 3.0)


def test_huber_golden_quadratic_branch():
    # delta = 1, all |e| <= 1: 0.5 e^2 for e = [0.5, -1.0 (boundary), 0.2]
    # = [0.125, 0.5, 0.02]; mean = 0.645 / 3 = 0.215.
    _close(gf.Huber(1.0)([0.0, 0.0, 0.0], [0.5, -1.0, 0.2]), 0.215)


def test_huber_golden_linear_branch():
    # delta = 1, all |e| > 1: delta * (|e| - delta/2) for |e| = [2, 3]
    # = [1.5, 2.5]; mean = 2.0.
    _close(gf.Huber(1.0)([0.0, 1.0], [2.0, -2.0]), 2.0)


def test_huber_golden_mixed_branches_and_delta():
    # delta = 2.5, e = [1, -3, 4]:
    #   |1| <= 2.5 -> 0.5 * 1 = 0.5
    #   |3| >  2.5 -> 2.5 * (3 - 1.25) = 4.375
    #   |4| >  2.5 -> 2.5 * (4 - 1.25) = 6.875
    # mean = 11.75 / 3 = 3.91666...
    _close(gf.Huber(delta=2.5)([0.0, 0.0, 0.0], [1.0, -3.0, 4.0]), 11.75 / 3.0)


def test_binary_crossentropy_golden_probabilities():
    # -[1 * log(0.8)] = 0.2231435513; -[1 * log(1 - 0.25)] = 0.2876820725;
    # mean = 0.2554128119.
    _close(gf.BinaryCrossentropy()([1.0, 0.0], [0.8, 0.25]), 0.2554128119)


def test_binary_crossentropy_clips_probabilities_at_zero_and_one():
    # Totally wrong, confident predictions: p = 0 for y = 1 and p = 1 for y = 0 are
    # clipped to 1e-7 and 1 - 1e-7, so each term is -log(1e-7) = 7 ln 10 = 16.11809565.
    loss = gf.BinaryCrossentropy()(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert np.isfinite(loss.numpy())
    _close(loss, 7.0 * math.log(10.0))
    # Perfect predictions cost -log(1 - 1e-7) = 1.00000005e-7 each (float64 inputs), not 0.
    loss = gf.BinaryCrossentropy()(np.array([1.0, 0.0]), np.array([1.0, 0.0]))
    assert loss.dtype == tf.float64
    _close(loss, -math.log1p(-1e-7), rtol=1e-9)
    assert loss.numpy() > 0.0


def test_binary_crossentropy_golden_logits():
    # max(x, 0) - x z + log(1 + exp(-|x|)) for (z, x) in [(1, 0), (0, 2), (1, -1)]:
    #   (1, 0):  0 - 0 + log 2                 = 0.6931471806
    #   (0, 2):  2 - 0 + log(1 + e^-2)         = 2 + 0.1269280110 = 2.1269280110
    #   (1, -1): 0 + 1 + log(1 + e^-1)         = 1 + 0.3132616875 = 1.3132616875
    # mean = 4.1333368791 / 3 = 1.3777789597.
    loss = gf.BinaryCrossentropy(from_logits=True)([1.0, 0.0, 1.0], [0.0, 2.0, -1.0])
    _close(loss, 1.3777789597)


def test_binary_crossentropy_logits_is_stable_for_large_logits():
    # (z=0, x=100): 100 + log(1 + e^-100) = 100; (z=1, x=-100): 0 + 100 + log(1 + e^-100) = 100.
    loss = gf.BinaryCrossentropy(from_logits=True)([0.0, 1.0], [100.0, -100.0])
    _close(loss, 100.0)


def test_sparse_categorical_crossentropy_golden_probabilities():
    # Rows sum to 1 and no entry is clipped, so the loss is -log p[label]:
    #   -log 0.7 = 0.3566749439, -log 0.6 = 0.5108256238; mean = 0.4337502838.
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]
    _close(gf.SparseCategoricalCrossentropy()([0, 2], probs), 0.4337502838)


def test_sparse_categorical_crossentropy_clips_probabilities():
    # [1, 0, 0] is clipped to [1 - 1e-7, 1e-7, 1e-7] and renormalised by the softmax of
    # its logs: p[1] = 1e-7 / (1 + 1e-7), so the loss is 7 ln 10 + log(1 + 1e-7)
    # = 16.1180956510 + 0.0000001 = 16.1180957510.
    loss = gf.SparseCategoricalCrossentropy()(np.array([1]), np.array([[1.0, 0.0, 0.0]]))
    assert np.isfinite(loss.numpy())
    _close(loss, 16.1180957510)


def test_sparse_categorical_crossentropy_golden_logits():
    # row 0, label 1, logits [1, 2, 3]: logsumexp = 3 + log(1 + e^-1 + e^-2)
    #   = 3 + log(1.5032147244) = 3.4076059644; loss = 3.4076059644 - 2 = 1.4076059644.
    # row 1, label 0, logits [0, 0, 0]: log 3 = 1.0986122887.
    # mean = 2.5062182531 / 2 = 1.2531091265.
    logits = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    loss_fn = gf.SparseCategoricalCrossentropy(from_logits=True)
    _close(loss_fn([1, 0], logits), 1.2531091265)
    # Labels of shape [N, 1] give the same loss.
    _close(loss_fn([[1], [0]], logits), 1.2531091265)


def test_sparse_categorical_crossentropy_labels_n_by_1():
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]
    # Same numbers as the [N] golden test: mean(-log 0.7, -log 0.6) = 0.4337502838.
    _close(gf.SparseCategoricalCrossentropy()(np.array([[0], [2]]), probs), 0.4337502838)
    # Float labels are cast to class indices.
    _close(gf.SparseCategoricalCrossentropy()(np.array([0.0, 2.0]), probs), 0.4337502838)


# ---------------------------------------------------------------------------
# Equivalence with keras.losses on generated data
# ---------------------------------------------------------------------------


@given(_regression_pair())
def test_l2_matches_keras(pair):
    y_true, y_pred = pair
    _close(gf.L2()(y_true, y_pred), keras.losses.MeanSquaredError()(y_true, y_pred))


@given(_regression_pair())
def test_l1_matches_keras(pair):
    y_true, y_pred = pair
    _close(gf.L1()(y_true, y_pred), keras.losses.MeanAbsoluteError()(y_true, y_pred))


@given(_regression_pair(-10.0, 10.0), st.floats(0.01, 20.0))
def test_huber_matches_keras(pair, delta):
    y_true, y_pred = pair
    expected = keras.losses.Huber(delta=delta)(y_true, y_pred)
    _close(gf.Huber(delta)(y_true, y_pred), expected)


@given(_binary_pair(logits=False))
def test_binary_crossentropy_matches_keras(pair):
    y_true, y_pred = pair
    expected = keras.losses.BinaryCrossentropy()(y_true, y_pred)
    _close(gf.BinaryCrossentropy()(y_true, y_pred), expected)


@given(_binary_pair(logits=True))
def test_binary_crossentropy_from_logits_matches_keras(pair):
    y_true, y_pred = pair
    expected = keras.losses.BinaryCrossentropy(from_logits=True)(y_true, y_pred)
    _close(gf.BinaryCrossentropy(from_logits=True)(y_true, y_pred), expected)


@given(_sparse_pair(logits=False), st.booleans())
def test_sparse_categorical_crossentropy_matches_keras(pair, column_labels):
    labels, probs = pair
    if column_labels:
        labels = labels[:, None]
    expected = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    _close(gf.SparseCategoricalCrossentropy()(labels, probs), expected)


@given(_sparse_pair(logits=True), st.booleans())
def test_sparse_categorical_crossentropy_from_logits_matches_keras(pair, column_labels):
    labels, logits = pair
    if column_labels:
        labels = labels[:, None]
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    _close(gf.SparseCategoricalCrossentropy(from_logits=True)(labels, logits), expected)


@given(_regression_pair(-10.0, 10.0))
def test_huber_with_a_large_delta_is_half_the_l2_loss(pair):
    # max |e| <= 20 < delta, so every term is 0.5 e^2.
    y_true, y_pred = pair
    _close(gf.Huber(delta=1e3)(y_true, y_pred), 0.5 * gf.L2()(y_true, y_pred))


# ---------------------------------------------------------------------------
# Shapes and dtypes
# ---------------------------------------------------------------------------


def test_column_predictions_do_not_broadcast_to_n_by_n():
    # y_true [2] vs y_pred [2, 1]: errors [0, 1] -> L2 = 0.5.
    # A [2, 2] broadcast would give pred_i - true_j = [0, -1, 2, 1] -> mean(0, 1, 4, 1) = 1.5.
    y_true = tf.constant([1.0, 2.0])
    y_pred = tf.constant([[1.0], [3.0]])
    _close(gf.L2()(y_true, y_pred), 0.5)
    _close(gf.L2()(tf.reshape(y_true, [2, 1]), tf.reshape(y_pred, [2])), 0.5)


_ELEMENTWISE_LOSSES = [
    gf.L2(),
    gf.L1(),
    gf.Huber(0.7),
    gf.BinaryCrossentropy(),
    gf.BinaryCrossentropy(from_logits=True),
]


@pytest.mark.parametrize("loss", _ELEMENTWISE_LOSSES, ids=repr)
@given(data=st.data())
def test_n_vs_n_by_1_equals_n_vs_n(loss, data):
    n = data.draw(st.integers(1, 30))
    y_true = data.draw(hnp.arrays(np.float32, (n,), elements=_floats32(0.0, 1.0)))
    y_pred = data.draw(hnp.arrays(np.float32, (n,), elements=_floats32(0.0, 1.0)))
    flat = loss(y_true, y_pred).numpy()
    assert flat.shape == ()
    _close(loss(y_true, y_pred[:, None]), flat)
    _close(loss(y_true[:, None], y_pred), flat)
    _close(loss(y_true[:, None], y_pred[:, None]), flat)


@pytest.mark.parametrize("loss", [gf.L2(), gf.L1(), gf.Huber(), gf.BinaryCrossentropy()], ids=repr)
def test_integer_targets_are_cast(loss):
    y_pred = tf.constant([0.25, 0.5, 1.0, 0.0])
    as_int = loss(np.array([0, 1, 1, 0], np.int32), y_pred)
    as_float = loss(np.array([0.0, 1.0, 1.0, 0.0], np.float32), y_pred)
    assert as_int.dtype == tf.float32
    _close(as_int, as_float)
    # L2 by hand: errors [0.25, -0.5, 0, 0] -> mean(0.0625, 0.25, 0, 0) = 0.078125.
    if isinstance(loss, gf.L2):
        _close(as_int, 0.078125)


@pytest.mark.parametrize("loss", [gf.L2(), gf.L1(), gf.Huber()], ids=repr)
def test_float64_inputs_give_float64_loss(loss):
    y = np.array([1.0, 2.0], np.float64)
    assert loss(y, y + 0.5).dtype == tf.float64


def test_integer_predictions_do_not_truncate_float_targets():
    # y_true [0.5, 2.0] vs y_pred [1, 3]: errors [0.5, 1] -> mean(0.25, 1) = 0.625, as Keras
    # computes. Casting the float targets to the predictions' int dtype would give
    # errors [1, 1] and an integer mean of 1.
    expected = keras.losses.MeanSquaredError()([0.5, 2.0], [1, 3])
    _close(expected, 0.625)
    loss = gf.L2()([0.5, 2.0], [1, 3])
    assert loss.dtype.is_floating
    _close(loss, 0.625)


# ---------------------------------------------------------------------------
# Constructor validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "fragments"),
    [
        (lambda: gf.Huber(delta=-1), ValueError, ["`delta`", "Received: delta=-1"]),
        (lambda: gf.Huber(delta=0), ValueError, ["`delta`", "Received: delta=0"]),
        (lambda: gf.Huber(delta=float("nan")), ValueError, ["`delta`", "delta=nan"]),
        (lambda: gf.Huber(delta=float("inf")), ValueError, ["`delta`", "delta=inf"]),
        (lambda: gf.Huber(delta="1"), TypeError, ["`delta`", "delta='1'"]),
        (lambda: gf.Huber(delta=True), TypeError, ["`delta`", "delta=True"]),
        (
            lambda: gf.BinaryCrossentropy(from_logits="yes"),
            TypeError,
            ["`from_logits`", "Received: from_logits='yes'"],
        ),
        (
            lambda: gf.SparseCategoricalCrossentropy(from_logits=1),
            TypeError,
            ["`from_logits`", "Received: from_logits=1"],
        ),
    ],
)
def test_invalid_constructor_arguments_are_named(make, error, fragments):
    with pytest.raises(error) as info:
        make()
    for fragment in fragments:
        assert fragment in str(info.value)


def test_valid_constructor_arguments_are_normalised():
    assert gf.Huber(np.float32(0.5)).delta == 0.5
    assert gf.Huber(2).delta == 2.0
    assert gf.BinaryCrossentropy(from_logits=np.bool_(True)).from_logits is True


# ---------------------------------------------------------------------------
# Names, the Loss interface and check_loss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "name", "text"),
    [
        (gf.L2(), "l2", "L2()"),
        (gf.L1(), "l1", "L1()"),
        (gf.Huber(2.0), "huber", "Huber(delta=2.0)"),
        (gf.BinaryCrossentropy(), "binary_crossentropy", "BinaryCrossentropy(from_logits=False)"),
        (
            gf.SparseCategoricalCrossentropy(from_logits=True),
            "sparse_categorical_crossentropy",
            "SparseCategoricalCrossentropy(from_logits=True)",
        ),
    ],
)
def test_names_and_reprs(loss, name, text):
    assert isinstance(loss, gf.Loss)
    assert loss.name == name
    assert loss_name(loss) == name
    assert repr(loss) == text


def test_loss_is_abstract_and_a_subclass_needs_only_call():
    with pytest.raises(TypeError):
        gf.Loss()

    class MaxError(gf.Loss):
        def __call__(self, y_true, y_pred):
            return tf.reduce_max(tf.abs(tf.convert_to_tensor(y_pred) - y_true))

    loss = MaxError()
    assert loss.name == "maxerror"
    # max |[1, 5] - [0, 2]| = max(1, 3) = 3.
    _close(loss([0.0, 2.0], [1.0, 5.0]), 3.0)


def test_check_loss_accepts_losses_and_plain_callables():
    def tutorial_loss(y_true, y_pred):
        return tf.reduce_mean(tf.square(y_pred - y_true))

    l2 = gf.L2()
    assert check_loss(l2) is l2
    assert check_loss(tutorial_loss) is tutorial_loss
    assert loss_name(tutorial_loss) == "tutorial_loss"
    keras_mse = keras.losses.MeanSquaredError()
    assert check_loss(keras_mse) is keras_mse


@pytest.mark.parametrize("bad", [3, "l2", None, [gf.L2()]])
def test_check_loss_rejects_non_callables_naming_loss(bad):
    with pytest.raises(TypeError, match=re.escape(f"Received: loss={bad!r}")) as info:
        check_loss(bad)
    assert "`loss`" in str(info.value)


def test_check_loss_uses_the_given_argument_name():
    with pytest.raises(TypeError, match=r"`metric`.*Received: metric=3"):
        check_loss(3, "metric")
