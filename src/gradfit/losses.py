"""Losses: ``loss(y_true, y_pred) -> scalar``, in the Keras argument order.

Every loss here averages over all examples (and outputs), so the loss of a
batch is the mean of its per-example losses. Any plain callable with the
same signature is accepted wherever a :class:`Loss` is.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, TypeAlias

import tensorflow as tf

from gradfit import _validation as v

LossLike: TypeAlias = "Loss | Callable[[tf.Tensor, tf.Tensor], tf.Tensor]"

_EPSILON = 1e-7  # Keras's backend epsilon, used to clip probabilities.


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def same_rank(y_true: tf.Tensor, y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Squeezes a trailing axis of size one off whichever has one axis more; no casts.

    ``y_true`` of shape ``[N]`` against ``y_pred`` of shape ``[N, 1]`` (or the
    reverse) would otherwise broadcast to ``[N, N]``: a silent, classic bug.
    """
    true_rank, pred_rank = y_true.shape.rank, y_pred.shape.rank
    if true_rank is not None and pred_rank is not None:
        if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
            y_pred = tf.squeeze(y_pred, -1)
        elif true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
            y_true = tf.squeeze(y_true, -1)
    return y_true, y_pred


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def align(y_true: tf.Tensor, y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Casts ``y_true`` to ``y_pred``'s float dtype, then :func:`same_rank`."""
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:  # integer predictions: compute in float32, as Keras
        y_pred = tf.cast(y_pred, tf.float32)
    return same_rank(tf.cast(y_true, y_pred.dtype), y_pred)


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def mean_per_example(values: tf.Tensor) -> tf.Tensor:
    """``values`` averaged over every axis but the first (examples): shape ``[N]``."""
    rank = values.shape.rank
    if rank is None:
        return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)
    if rank <= 1:
        return values if rank == 1 else values[None]
    return tf.reduce_mean(values, axis=list(range(1, rank)))


class Loss(abc.ABC):
    """Base class of gradfit's losses: one abstract method, ``__call__``."""

    @abc.abstractmethod
    def __call__(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Returns the scalar loss of predictions ``y_pred`` against targets ``y_true``."""

    @property
    def name(self) -> str:
        """A short name for logs, e.g. ``"l2"``."""
        return type(self).__name__.lower()

    def per_example(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Each example's loss, shape ``[N]``: what sample weights weigh.

        gradfit's losses implement it (their ``__call__`` is the mean of
        it); a Loss of your own that takes sample weights implements it too.
        """
        raise TypeError(
            f"{type(self).__name__} does not implement `per_example`, which sample weights "
            "need: implement it, returning one loss per example."
        )

    def weighted(self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor) -> tf.Tensor:
        """The loss with examples weighted by ``sample_weight``, as Keras reduces it.

        ``sum(loss_i * w_i) / N`` (Keras's ``"sum_over_batch_size"``), so
        the numbers equal Keras ``fit``'s with the same weights.
        """
        losses = self.per_example(y_true, y_pred)
        weights = tf.reshape(tf.cast(sample_weight, losses.dtype), [-1])
        count = tf.cast(tf.shape(losses)[0], losses.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(losses * weights), count)

    def check_targets(  # noqa: B027 - an optional hook, not an abstract method
        self, name: str, y_true: tf.Tensor, num_outputs: int | None
    ) -> None:
        """Raises ``ValueError`` naming ``name`` if ``y_true`` can never be valid targets.

        Called by the Trainer, once per fit, on in-memory targets before any
        variable changes. The default accepts everything.

        Args:
            name: The argument the targets came from (``"y"``, ...).
            y_true: All the targets.
            num_outputs: Size of the predictions' last axis, if known.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class L2(Loss):
    """Mean squared error, ``mean((y_pred - y_true) ** 2)``: the tutorial's loss."""

    def __call__(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Returns the mean squared error."""
        y_true, y_pred = align(y_true, y_pred)
        return tf.reduce_mean(tf.square(y_pred - y_true))

    def per_example(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Each example's mean squared error, ``[N]``."""
        y_true, y_pred = align(y_true, y_pred)
        return mean_per_example(tf.square(y_pred - y_true))


class L1(Loss):
    """Mean absolute error, ``mean(|y_pred - y_true|)``."""

    def __call__(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Returns the mean absolute error."""
        y_true, y_pred = align(y_true, y_pred)
        return tf.reduce_mean(tf.abs(y_pred - y_true))

    def per_example(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Each example's mean absolute error, ``[N]``."""
        y_true, y_pred = align(y_true, y_pred)
        return mean_per_example(tf.abs(y_pred - y_true))


class Huber(Loss):
    """Huber loss: quadratic for small errors, linear for large ones.

    For ``e = y_pred - y_true``: ``0.5 e**2`` where ``|e| <= delta``, else
    ``delta * (|e| - 0.5 delta)``; averaged. Matches ``keras.losses.Huber``.

    Args:
        delta: Where the loss turns from quadratic to linear; positive.
    """

    def __init__(self, delta: float = 1.0) -> None:
        self.delta = v.non_negative_float("delta", delta)
        if self.delta == 0.0:
            raise ValueError(f"`delta` must be positive. {v.received('delta', delta)}")

    def __call__(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Returns the mean Huber loss."""
        return tf.reduce_mean(self._elementwise(y_true, y_pred))

    def per_example(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Each example's mean Huber loss, ``[N]``."""
        return mean_per_example(self._elementwise(y_true, y_pred))

    def _elementwise(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true, y_pred = align(y_true, y_pred)
        error = tf.abs(y_pred - y_true)
        delta = tf.cast(self.delta, y_pred.dtype)
        quadratic = 0.5 * tf.square(error)
        linear = delta * (error - 0.5 * delta)
        return tf.where(error <= delta, quadratic, linear)

    def __repr__(self) -> str:
        return f"Huber(delta={self.delta})"


class BinaryCrossentropy(Loss):
    """Binary cross-entropy for targets in ``[0, 1]``.

    With ``from_logits=False`` predictions are probabilities, clipped to
    ``[1e-7, 1 - 1e-7]`` as Keras does; with ``from_logits=True`` they are
    logits and the numerically stable sigmoid form is used.

    Args:
        from_logits: Whether ``y_pred`` holds logits rather than probabilities.
    """

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = v.boolean("from_logits", from_logits)

    def __call__(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Returns the mean binary cross-entropy."""
        return tf.reduce_mean(self._elementwise(y_true, y_pred))

    def per_example(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Each example's mean binary cross-entropy, ``[N]``."""
        return mean_per_example(self._elementwise(y_true, y_pred))

    def _elementwise(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true, y_pred = align(y_true, y_pred)
        if self.from_logits:
            return tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true, logits=y_pred)
        p = tf.clip_by_value(y_pred, _EPSILON, 1.0 - _EPSILON)
        return -(y_true * tf.math.log(p) + (1.0 - y_true) * tf.math.log(1.0 - p))

    @property
    def name(self) -> str:
        """``"binary_crossentropy"``."""
        return "binary_crossentropy"

    def __repr__(self) -> str:
        return f"BinaryCrossentropy(from_logits={self.from_logits})"


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy for integer class labels against per-class scores.

    ``y_true`` holds class indices of shape ``[N]`` (or ``[N, 1]``);
    ``y_pred`` holds ``[N, classes]`` probabilities (clipped to
    ``[1e-7, 1 - 1e-7]`` and renormalised, as Keras does) or, with
    ``from_logits=True``, logits.

    Args:
        from_logits: Whether ``y_pred`` holds logits rather than probabilities.
    """

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = v.boolean("from_logits", from_logits)

    def __call__(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Returns the mean sparse categorical cross-entropy."""
        return tf.reduce_mean(self._elementwise(y_true, y_pred))

    def per_example(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Each example's (mean) sparse categorical cross-entropy, ``[N]``."""
        return mean_per_example(self._elementwise(y_true, y_pred))

    def _elementwise(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_pred = tf.convert_to_tensor(y_pred)
        labels = tf.convert_to_tensor(y_true)
        if labels.shape.rank is not None and labels.shape.rank == y_pred.shape.rank:
            labels = tf.squeeze(labels, -1)
        labels = tf.cast(labels, tf.int32)
        if self.from_logits:
            logits = y_pred
        else:
            # As Keras: clip, take logs, and let the softmax renormalise.
            logits = tf.math.log(tf.clip_by_value(y_pred, _EPSILON, 1.0 - _EPSILON))
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)

    def check_targets(self, name: str, y_true: tf.Tensor, num_outputs: int | None) -> None:
        """Checks that every label is a class index in ``[0, num_outputs)``."""
        if tf.size(y_true) == 0:
            return
        if y_true.dtype.is_floating and not bool(tf.reduce_all(tf.equal(y_true, tf.round(y_true)))):
            first = tf.where(tf.not_equal(y_true, tf.round(y_true)))[0].numpy()
            raise ValueError(
                f"`{name}` holds class labels that are not whole numbers (first at index "
                f"{tuple(int(i) for i in first)}); sparse cross-entropy would truncate them. "
                "Pass integer class indices."
            )
        if num_outputs is None:
            return
        low, high = float(tf.reduce_min(y_true)), float(tf.reduce_max(y_true))
        if low < 0 or high >= num_outputs:
            raise ValueError(
                f"`{name}` holds class labels outside [0, {num_outputs}) for a model with "
                f"{num_outputs} outputs: they range from {low:g} to {high:g}."
            )

    @property
    def name(self) -> str:
        """``"sparse_categorical_crossentropy"``."""
        return "sparse_categorical_crossentropy"

    def __repr__(self) -> str:
        return f"SparseCategoricalCrossentropy(from_logits={self.from_logits})"


def check_loss(loss: Any, name: str = "loss") -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Returns ``loss`` if it is a :class:`Loss` or a callable, else raises ``TypeError``."""
    if not callable(loss):
        raise TypeError(
            f"`{name}` must be a gradfit Loss or a callable `loss(y_true, y_pred)`. "
            f"{v.received(name, loss)}"
        )
    return loss


def loss_name(loss: Callable[..., Any]) -> str:
    """Returns a readable name for a loss or metric callable."""
    if isinstance(loss, Loss):
        return loss.name
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None)
    return str(name) if name else type(loss).__name__.lower()
