"""LossScale: dynamic loss scaling for float16 computation (Keras's algorithm).

float16 gradients underflow to zero below about ``6e-8``. Multiplying the loss
by a large ``scale`` before differentiating scales every gradient by it too;
dividing the gradients by ``scale`` afterwards gives the true ones. The scale
adapts, as in ``keras.optimizers.LossScaleOptimizer``:

- a step whose unscaled gradients are not all finite is skipped, the scale
  is halved and the counter of finite steps reset;
- after ``growth_steps`` finite steps in a row the scale is doubled and the
  counter reset.

A Task uses it around its update rule::

    with tf.GradientTape() as tape:
        loss = ...
        scaled = loss_scale.scale_loss(loss)
    grads, finite = loss_scale.unscale(tape.gradient(scaled, variables))
    loss_scale.apply_if_finite(finite, lambda: rule.apply(grads, variables))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v
from gradfit.distribute import sync

_HALF_DTYPES = (tf.float16, tf.bfloat16)


def _positive_scale(name: str, value: Any) -> float:
    number = v.real_number(name, value)
    if not (number > 0 and math.isfinite(float(np.float32(number)))):
        raise ValueError(
            f"`{name}` must be a positive number, finite in float32. {v.received(name, value)}"
        )
    return number


def _unscale_one(gradient: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """``gradient / scale`` in ``gradient``'s dtype (half types divided in float32)."""
    dtype = tf.float32 if gradient.dtype in _HALF_DTYPES else gradient.dtype
    unscaled = tf.cast(gradient, dtype) / tf.cast(scale, dtype)
    return tf.cast(unscaled, gradient.dtype)


def _unscale_gradient(gradient: Any, scale: tf.Tensor) -> Any:
    """``gradient / scale``: a tensor, or ``tf.IndexedSlices`` whose values are divided."""
    if isinstance(gradient, tf.IndexedSlices):
        values = _unscale_one(gradient.values, scale)
        return tf.IndexedSlices(values, gradient.indices, gradient.dense_shape)
    return _unscale_one(tf.convert_to_tensor(gradient), scale)


def _global(gradients: list[Any]) -> list[Any]:
    """A replica's gradients (``None`` kept) as the global batch's, reduced once, here.

    Under a strategy the step's finiteness is the global gradient's, the
    same on every replica, and the rule that :meth:`LossScale.apply_if_finite`
    runs inside its conditional (where no collective can run) finds them
    reduced already (:func:`gradfit.distribute.sync.reduce_gradients`).
    """
    given = [g for g in gradients if g is not None]
    reduced = iter(sync.reduce_gradients(given) if given else [])
    return [None if g is None else next(reduced) for g in gradients]


class LossScale(tf.Module):
    """Dynamic loss scaling for float16 computation (Keras's algorithm).

    The scale and the counter of finite steps are non-trainable variables of
    this module, so ``tf.train.Checkpoint`` saves and restores them and the
    compiled step never retraces as they change. Every method works eagerly,
    inside ``tf.function`` and under XLA (``jit_compile=True``).

    Args:
        initial_scale: The first scale, a positive number finite in float32.
            Keras's default, ``2**15``, is high on purpose: too high a scale
            falls by halving in a few steps; too low a one rises slowly.
        growth_steps: Finite steps in a row after which the scale doubles.
        name: Name of the module.

    Example::

        loss_scale = gf.training.LossScale()
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))  # model(dtype="mixed_float16")
            scaled = loss_scale.scale_loss(loss)
        grads, finite = loss_scale.unscale(tape.gradient(scaled, variables))
        loss_scale.apply_if_finite(finite, lambda: rule.apply(grads, variables))
    """

    def __init__(
        self,
        initial_scale: float = 2.0**15,
        growth_steps: int = 2000,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.initial_scale = _positive_scale("initial_scale", initial_scale)
        self.growth_steps = v.positive_int("growth_steps", growth_steps)
        with tf.init_scope():
            self.scale = tf.Variable(
                self.initial_scale, dtype=tf.float32, trainable=False, name="scale"
            )
            self.counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="counter")

    def scale_loss(self, loss: Any) -> tf.Tensor:
        """Returns ``loss * scale`` in ``loss``'s dtype.

        A half-precision loss is multiplied in float32 and cast back, so it
        overflows only if the product does; compute the loss in float32 (as
        the outputs of gradfit's mixed-policy models are) to avoid that.
        """
        loss = tf.convert_to_tensor(loss)
        dtype = tf.float32 if loss.dtype in _HALF_DTYPES else loss.dtype
        return tf.cast(tf.cast(loss, dtype) * tf.cast(self.scale, dtype), loss.dtype)

    def unscale(self, gradients: Sequence[Any]) -> tuple[list[Any], tf.Tensor]:
        """Divides ``gradients`` by the scale and says whether they are all finite.

        Args:
            gradients: Gradients of a scaled loss: tensors, ``tf.IndexedSlices``
                (their values are divided) or ``None`` (kept ``None``).

        Returns:
            ``(unscaled, finite)``: the gradients divided by the scale, each in
            its own dtype, and a scalar bool tensor, whether every unscaled
            gradient is finite (``True`` when all are ``None``).
        """
        scale = tf.convert_to_tensor(self.scale)
        unscaled = [None if g is None else _unscale_gradient(g, scale) for g in gradients]
        if sync.replicated_step():
            unscaled = _global(unscaled)
        checks = [
            tf.reduce_all(tf.math.is_finite(g.values if isinstance(g, tf.IndexedSlices) else g))
            for g in unscaled
            if g is not None
        ]
        finite = tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)
        return unscaled, finite

    def update(self, finite: Any) -> tf.Tensor:
        """Adapts the scale after a step; returns the new scale.

        ``scale <- scale / 2`` and ``counter <- 0`` if not ``finite``;
        ``scale <- 2 scale`` and ``counter <- 0`` on the ``growth_steps``-th
        finite step in a row; else ``counter <- counter + 1``. Computed with
        ``tf.where``, so it needs no control flow.

        Args:
            finite: Scalar bool, whether the step's gradients were all finite.
        """
        finite = tf.convert_to_tensor(finite, tf.bool)
        counter = self.counter.read_value()
        grow = tf.logical_and(finite, counter >= self.growth_steps - 1)
        factor = tf.where(finite, tf.where(grow, 2.0, 1.0), 0.5)
        keep_counting = tf.logical_and(finite, tf.logical_not(grow))
        new_scale = self.scale.read_value() * factor
        self.counter.assign(tf.where(keep_counting, counter + 1, tf.zeros_like(counter)))
        self.scale.assign(new_scale)
        return new_scale

    def apply_if_finite(self, finite: Any, apply_fn: Callable[[], Any]) -> None:
        """Runs ``apply_fn()`` only if ``finite`` (in a ``tf.cond``), then :meth:`update`.

        A skipped step changes nothing that ``apply_fn`` would change: model
        variables, an update rule's slots and ``iterations``. Build the rule
        eagerly (``rule.build(variables)``) before tracing: ``apply_fn`` must
        not create variables inside the conditional.

        Args:
            finite: Scalar bool, from :meth:`unscale`.
            apply_fn: Applies the unscaled gradients, e.g.
                ``lambda: rule.apply(grads, variables)``; its result is ignored.
        """
        finite = tf.convert_to_tensor(finite, tf.bool)
        sync.cond(finite, apply_fn, lambda: None)  # (a Keras optimizer's merge_call may run there)
        self.update(finite)
