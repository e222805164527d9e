"""Metrics: ``metric(y_true, y_pred, sample_weight=None) -> scalar``, stateless.

A metric gives each example a value (a hit or a miss, an absolute or squared
error); a batch's value is their (sample-weighted) mean. Nothing is stored
between calls, so an epoch's value is exact without state: each batch
reports ``weighted(...) -> (value, weight)`` and the epoch's value is

    sum_b value_b * weight_b / sum_b weight_b

which is the weighted mean over every example of the epoch, whatever the
batch sizes. Names, shapes and results match ``keras.metrics``.

Keras metric objects (stateful, with ``update_state`` and ``result``) are
accepted by the Trainer too; it resets them each epoch. That is the
Trainer's business, not this module's.
"""

from __future__ import annotations

import abc
import math
import re
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v
from gradfit.losses import align, mean_per_example, same_rank

__all__ = [
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Metric",
    "SparseCategoricalAccuracy",
    "get",
]


def _dtypes(y_pred: tf.Tensor) -> tuple[tf.DType, tf.DType]:
    """The dtype a metric returns (``y_pred``'s float dtype) and the one it computes in.

    Half-precision predictions are computed in float32, so that squares do
    not overflow and sums do not round at every step; the result is cast back.
    """
    out = y_pred.dtype if y_pred.dtype.is_floating else tf.float32
    return out, (tf.float64 if out == tf.float64 else tf.float32)


def _argmax(x: tf.Tensor) -> tf.Tensor:
    """``argmax(x, -1)`` as Keras computes it: ``-0.0`` counts as less than ``+0.0``."""
    if x.dtype == tf.bool:
        x = tf.cast(x, tf.int32)
    if x.dtype.is_floating:
        if x.dtype != tf.float64:
            x = tf.cast(x, tf.float32)
        sign = tf.bitcast(x, tf.int64 if x.dtype == tf.float64 else tf.int32) < 0
        tiny = tf.constant(np.finfo(x.dtype.as_numpy_dtype).tiny, x.dtype)
        x = tf.where(tf.logical_and(tf.equal(x, 0), sign), -tiny, x)
    return tf.argmax(x, axis=-1, output_type=tf.int64)


class Metric(abc.ABC):
    """A stateless metric: a value per example; a batch's (and an epoch's) value is their mean.

    Subclasses implement one method, :meth:`per_example`; calling, sample
    weights and epoch values follow from it.
    """

    @property
    def name(self) -> str:
        """The class name in snake case, as Keras names its metrics: ``"binary_accuracy"``."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    @abc.abstractmethod
    def per_example(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Each example's value, shape ``[N]``, in ``y_pred``'s float dtype.

        Trailing axes (time steps, outputs) are averaged down to one value
        per example; float32 for integer predictions.
        """

    def __call__(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> tf.Tensor:
        """The batch's value: the mean of :meth:`per_example`, weighted by ``sample_weight``.

        Args:
            y_true: The targets.
            y_pred: The predictions, examples along the first axis.
            sample_weight: Optional weights, ``[N]`` or ``[N, 1]``. With
                weights ``w`` the value is ``sum(v * w) / sum(w)``, and 0
                where every weight is 0.

        Returns:
            A scalar in ``y_pred``'s float dtype.
        """
        if sample_weight is None:
            values = self._wide_per_example(y_true, y_pred)
            count = tf.cast(tf.shape(values)[0], values.dtype)
            value = tf.math.divide_no_nan(tf.reduce_sum(values), count)
            return tf.cast(value, _dtypes(tf.convert_to_tensor(y_pred))[0])
        return self.weighted(y_true, y_pred, sample_weight)[0]

    def weighted(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The batch's weighted value and its weight in an epoch's value.

        ``value = sum(v * w) / sum(w)`` (0 where every weight is 0) and
        ``weight = sum(w)``, both in ``y_pred``'s float dtype, so that over
        the batches of an epoch ``sum(value * weight) / sum(weight)`` is the
        weighted mean over all its examples.
        """
        values = self._wide_per_example(y_true, y_pred)
        weights = tf.reshape(tf.cast(sample_weight, values.dtype), [-1])
        total = tf.reduce_sum(weights)
        value = tf.math.divide_no_nan(tf.reduce_sum(values * weights), total)
        out = _dtypes(tf.convert_to_tensor(y_pred))[0]
        return tf.cast(value, out), tf.cast(total, out)

    def _wide_per_example(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """:meth:`per_example`, in float32 rather than half precision (the class's own sums)."""
        y_pred = tf.convert_to_tensor(y_pred)
        return tf.cast(self.per_example(y_true, y_pred), _dtypes(y_pred)[1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _ElementwiseMetric(Metric):
    """A metric defined elementwise, averaged over trailing axes into one value per example."""

    def per_example(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Each example's mean of :meth:`_elementwise`, ``[N]``."""
        y_pred = tf.convert_to_tensor(y_pred)
        out, compute = _dtypes(y_pred)
        values = tf.cast(self._elementwise(y_true, tf.cast(y_pred, compute)), compute)
        return tf.cast(mean_per_example(values), out)

    @abc.abstractmethod
    def _elementwise(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """The values before averaging; ``y_pred`` is float32 or float64 here."""


class SparseCategoricalAccuracy(_ElementwiseMetric):
    """1 where ``argmax(y_pred, -1)`` is the integer label ``y_true``, else 0.

    ``y_true`` holds class indices, ``[N]`` or ``[N, 1]`` (or ``[N, T]``
    against ``y_pred`` of ``[N, T, classes]``, averaged over ``T``). Integer
    labels are compared as integers, exactly at any prediction dtype.
    """

    def _elementwise(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.convert_to_tensor(y_true)
        true_rank, pred_rank = labels.shape.rank, y_pred.shape.rank
        if true_rank is not None and true_rank == pred_rank and labels.shape[-1] == 1:
            labels = tf.squeeze(labels, -1)
        predicted = _argmax(y_pred)
        if labels.dtype.is_floating:  # float labels: no rounding to an integer
            hits = tf.equal(tf.cast(predicted, labels.dtype), labels)
        else:
            hits = tf.equal(predicted, tf.cast(labels, tf.int64))
        return tf.cast(hits, y_pred.dtype)

    def check_targets(self, name: str, y_true: tf.Tensor, num_outputs: int | None) -> None:
        """Raises ``ValueError`` naming ``name`` unless every label lies in ``[0, num_outputs)``.

        Args:
            name: The argument the targets came from (``"y"``, ...).
            y_true: All the targets.
            num_outputs: Size of the predictions' last axis, if known.
        """
        if num_outputs is None or tf.size(y_true) == 0:
            return
        low, high = float(tf.reduce_min(y_true)), float(tf.reduce_max(y_true))
        if low < 0 or high >= num_outputs:
            raise ValueError(
                f"`{name}` holds class labels outside [0, {num_outputs}) for a model with "
                f"{num_outputs} outputs: they range from {low:g} to {high:g}."
            )


class CategoricalAccuracy(_ElementwiseMetric):
    """1 where ``argmax(y_pred, -1) == argmax(y_true, -1)``, else 0.

    ``y_true`` holds one-hot (or probability) rows, the shape of ``y_pred``.
    """

    def _elementwise(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = _argmax(tf.convert_to_tensor(y_true))
        return tf.cast(tf.equal(labels, _argmax(y_pred)), y_pred.dtype)


class BinaryAccuracy(_ElementwiseMetric):
    """1 where ``y_pred > threshold`` agrees with the 0/1 target, else 0; averaged per example.

    As Keras: the thresholded prediction (0 or 1) must equal ``y_true``, so a
    soft target such as 0.7 is never a hit, and the threshold is a float32
    number, even against float64 predictions.

    Args:
        threshold: A prediction above it counts as 1; a finite number
            (0.0 for logits).
    """

    def __init__(self, threshold: float = 0.5) -> None:
        number = v.real_number("threshold", threshold)
        if not math.isfinite(number):
            raise ValueError(
                f"`threshold` must be a finite number. {v.received('threshold', threshold)}"
            )
        self.threshold = number

    def _elementwise(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels, y_pred = same_rank(tf.convert_to_tensor(y_true), y_pred)
        threshold = tf.cast(tf.constant(self.threshold, tf.float32), y_pred.dtype)
        above = tf.greater(y_pred, threshold)
        if labels.dtype == tf.bool:
            return tf.cast(tf.equal(above, labels), y_pred.dtype)
        return tf.cast(tf.equal(tf.cast(above, labels.dtype), labels), y_pred.dtype)

    def __repr__(self) -> str:
        return f"BinaryAccuracy(threshold={self.threshold})"


class MeanAbsoluteError(_ElementwiseMetric):
    """Each example's mean of ``|y_pred - y_true|`` over its trailing axes."""

    def _elementwise(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true, y_pred = align(y_true, y_pred)
        return tf.abs(y_pred - y_true)


class MeanSquaredError(_ElementwiseMetric):
    """Each example's mean of ``(y_pred - y_true) ** 2`` over its trailing axes."""

    def _elementwise(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true, y_pred = align(y_true, y_pred)
        return tf.square(y_pred - y_true)


_BY_NAME: dict[str, type[Metric]] = {
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
}


def get(identifier: Any) -> Any:
    """Returns a new metric for a name such as ``"mae"``; anything else unchanged.

    ``"accuracy"`` is not resolved here: which accuracy it means depends on
    the loss, so the task resolves it.

    Raises:
        ValueError: For a string that names no metric.
    """
    if not isinstance(identifier, str):
        return identifier
    if identifier not in _BY_NAME:
        raise ValueError(
            f"`metrics` holds an unknown metric name; known names are "
            f"{', '.join(sorted(_BY_NAME))} (and 'accuracy'). {v.received('metrics', identifier)}"
        )
    return _BY_NAME[identifier]()
