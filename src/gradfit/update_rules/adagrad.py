"""Adagrad (Duchi et al., 2011), as in Keras.

The update (the second line is :func:`adagrad_step`)::

    accumulator <- accumulator + g^2
    param       <- param - lr * g / sqrt(accumulator + epsilon)

A row whose gradient is zero is left unchanged, so sparse gradients update
only the rows they touch, exactly as their dense equivalent would.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from gradfit import _validation as v
from gradfit.update_rules.base import LearningRate, UpdateRule, check_positive, sum_duplicates


def adagrad_step(
    gradient: tf.Tensor, accumulator: tf.Tensor, lr: tf.Tensor, epsilon: float
) -> tf.Tensor:
    """Returns ``delta`` with ``param <- param - delta``, from the updated accumulator.

    Works on whole parameters or on some of their rows alike.
    """
    # lr * g / sqrt(accumulator + epsilon), in a form TensorFlow's graph optimizer leaves
    # as it is, so that eager execution and tf.function agree to the last bit.
    return gradient / (tf.sqrt(accumulator + epsilon) / lr)


class Adagrad(UpdateRule):
    """Adagrad, as in Keras (``keras.optimizers.Adagrad``).

    Keeps an ``accumulator`` slot per variable. ``tf.IndexedSlices``
    gradients (repeated indices summed) update only the rows they touch.

    Args:
        learning_rate: Step size, finite and non-negative, or a schedule.
        initial_accumulator_value: Non-negative starting value of the accumulators.
        epsilon: Positive constant added under the square root.
        name: Name of the module.

    Example::

        rule = gf.Adagrad(0.1)
    """

    supports_sparse = True

    def __init__(
        self,
        learning_rate: LearningRate = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        *,
        name: str | None = None,
    ) -> None:
        initial_accumulator_value = v.non_negative_float(
            "initial_accumulator_value", initial_accumulator_value
        )
        epsilon = check_positive("epsilon", epsilon)
        super().__init__(learning_rate, name=name)
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon

    def create_state(self, variables: Sequence[tf.Variable]) -> None:
        """Creates the ``accumulator`` slots, filled with ``initial_accumulator_value``."""
        for var in variables:
            self.add_slot(var, "accumulator", self.initial_accumulator_value)

    def apply(self, gradients: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """Makes one Adagrad step on every variable (touched rows only for sparse gradients)."""
        lr_32 = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            accumulator = self.get_slot(var, "accumulator")
            lr = tf.cast(lr_32, accumulator.dtype)
            if isinstance(g, tf.IndexedSlices):
                g = sum_duplicates(g)
                values = tf.cast(g.values, accumulator.dtype)
                rows = accumulator.sparse_read(g.indices) + tf.square(values)
                accumulator.scatter_update(tf.IndexedSlices(rows, g.indices))
                delta = adagrad_step(values, rows, lr, self.epsilon)
                var.scatter_sub(tf.IndexedSlices(tf.cast(delta, var.dtype), g.indices))
            else:
                g = tf.cast(g, accumulator.dtype)
                accumulator.assign_add(tf.square(g))
                var.assign_sub(tf.cast(adagrad_step(g, accumulator, lr, self.epsilon), var.dtype))

    def __repr__(self) -> str:
        return (
            f"Adagrad(learning_rate={self._learning_rate_repr()}, "
            f"initial_accumulator_value={self.initial_accumulator_value}, "
            f"epsilon={self.epsilon})"
        )
