"""Lion: evolved sign momentum (Chen et al., 2023), with decoupled weight decay.

The update::

    param <- param - lr * (sign(beta_1 * m + (1 - beta_1) * g) + weight_decay * param)
    m     <- beta_2 * m + (1 - beta_2) * g

The decay is Keras's (and the paper's): scaled by the learning rate, and
applied first (:func:`~gradfit.update_rules.base.weight_decay_step`).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from gradfit import _validation as v
from gradfit.update_rules.base import LearningRate, UpdateRule, apply_weight_decay


def lion_step(gradient: tf.Tensor, m: tf.Tensor, lr: tf.Tensor, beta_1: float) -> tf.Tensor:
    """Returns ``delta`` with ``param <- param - delta`` (before the momentum is updated)."""
    beta_1_ = tf.constant(beta_1, m.dtype)
    return lr * tf.sign(m * beta_1_ + gradient * (1 - beta_1_))


def lion_momentum(gradient: tf.Tensor, m: tf.Tensor, beta_2: float) -> tf.Tensor:
    """Returns the new momentum ``beta_2 * m + (1 - beta_2) * g``."""
    beta_2_ = tf.constant(beta_2, m.dtype)
    return m * beta_2_ + gradient * (1 - beta_2_)


class Lion(UpdateRule):
    """Lion, the sign-momentum rule found by program search (Chen et al., 2023).

    Keeps one ``m`` slot per variable; every step moves each parameter by
    exactly ``lr`` (plus decay), so learning rates are typically 3-10x
    smaller than Adam's. Sparse gradients are made dense.

    Args:
        learning_rate: Step size, finite and non-negative, or a schedule.
        beta_1: Interpolation between ``m`` and ``g`` for the step's sign, in ``[0, 1)``.
        beta_2: Decay rate of ``m``, in ``[0, 1)``.
        weight_decay: Non-negative decoupled weight decay, scaled by ``lr``.
        name: Name of the module.

    Example::

        rule = gf.Lion(1e-4, weight_decay=0.1)
    """

    def __init__(
        self,
        learning_rate: LearningRate = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        weight_decay: float = 0.0,
        *,
        name: str | None = None,
    ) -> None:
        beta_1 = v.float_in_unit_interval("beta_1", beta_1)
        beta_2 = v.float_in_unit_interval("beta_2", beta_2)
        weight_decay = v.non_negative_float("weight_decay", weight_decay)
        super().__init__(learning_rate, name=name)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.weight_decay = weight_decay

    def create_state(self, variables: Sequence[tf.Variable]) -> None:
        """Creates the ``m`` slots."""
        for var in variables:
            self.add_slot(var, "m")

    def apply(self, gradients: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """Makes one Lion step on every variable."""
        lr_32 = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            m = self.get_slot(var, "m")
            g = tf.cast(g, m.dtype)
            apply_weight_decay(var, lr_32, self.weight_decay)
            delta = lion_step(g, m, tf.cast(lr_32, m.dtype), self.beta_1)
            var.assign_sub(tf.cast(delta, var.dtype))
            m.assign(lion_momentum(g, m, self.beta_2))

    def __repr__(self) -> str:
        return (
            f"Lion(learning_rate={self._learning_rate_repr()}, beta_1={self.beta_1}, "
            f"beta_2={self.beta_2}, weight_decay={self.weight_decay})"
        )
