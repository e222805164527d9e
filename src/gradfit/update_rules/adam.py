"""Adam: adaptive moment estimation (Kingma & Ba, 2015), optionally AMSGrad.

With ``t = iterations + 1`` (the Keras formulation, epsilon outside the root)::

    m     <- m + (1 - beta_1) * (g - m)
    v     <- v + (1 - beta_2) * (g^2 - v)
    v_max <- max(v_max, v); use v_max for v                 (AMSGrad only)
    param <- param - lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

The maths is two pure functions: :func:`adam_moments` (the moments'
increments) and :func:`adam_step` (the parameter's decrement). The class
adds them to its slots and parameters in place, which saves a buffer per
update on large variables.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from gradfit import _validation as v
from gradfit.update_rules.base import LearningRate, UpdateRule, check_positive


def adam_moments(
    gradient: tf.Tensor, m: tf.Tensor, v: tf.Tensor, beta_1: float, beta_2: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns the increments ``(dm, dv)`` with ``m <- m + dm`` and ``v <- v + dv``."""
    return (gradient - m) * (1 - beta_1), (tf.square(gradient) - v) * (1 - beta_2)


def adam_step(
    m: tf.Tensor,
    v: tf.Tensor,
    lr: tf.Tensor,
    t: tf.Tensor,
    beta_1: float,
    beta_2: float,
    epsilon: float,
) -> tf.Tensor:
    """Returns ``delta`` with ``param <- param - delta``, from the updated moments.

    Args:
        m: First moment, after this step's update.
        v: Second moment after this step's update (its running maximum for AMSGrad).
        lr: Learning rate.
        t: The 1-based step number, as a float.
        beta_1: Decay rate of ``m``.
        beta_2: Decay rate of ``v``.
        epsilon: Added to ``sqrt(v)``.
    """
    beta_1_power = tf.pow(tf.constant(beta_1, m.dtype), t)
    beta_2_power = tf.pow(tf.constant(beta_2, m.dtype), t)
    alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    return (m * alpha) / (tf.sqrt(v) + epsilon)


class Adam(UpdateRule):
    """Adam, as in Keras (``keras.optimizers.Adam``), optionally AMSGrad.

    Keeps ``m`` and ``v`` slots per variable (and ``v_max`` with AMSGrad),
    float32 for half-precision variables. Sparse gradients are made dense:
    every row's moments decay at every step, as in the dense rule.

    Args:
        learning_rate: Step size, finite and non-negative, or a schedule.
        beta_1: Decay rate of the first moment, in ``[0, 1)``.
        beta_2: Decay rate of the second moment, in ``[0, 1)``.
        epsilon: Positive constant added to ``sqrt(v)``.
        amsgrad: Divide by the running maximum of ``v`` (Reddi et al., 2018).
        name: Name of the module.

    Example::

        rule = gf.Adam(1e-3)
    """

    def __init__(
        self,
        learning_rate: LearningRate = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        beta_1 = v.float_in_unit_interval("beta_1", beta_1)
        beta_2 = v.float_in_unit_interval("beta_2", beta_2)
        epsilon = check_positive("epsilon", epsilon)
        amsgrad = v.boolean("amsgrad", amsgrad)
        super().__init__(learning_rate, name=name)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.amsgrad = amsgrad

    def create_state(self, variables: Sequence[tf.Variable]) -> None:
        """Creates the ``m`` and ``v`` slots (and ``v_max`` with AMSGrad)."""
        for var in variables:
            self.add_slot(var, "m")
            self.add_slot(var, "v")
            if self.amsgrad:
                self.add_slot(var, "v_max")

    def _adam_delta(
        self, gradient: tf.Tensor, var: tf.Variable, lr_32: tf.Tensor, t_64: tf.Tensor
    ) -> tf.Tensor:
        """Updates the moments of ``var`` in place; returns its step, in the slots' dtype."""
        m, v_ = self.get_slot(var, "m"), self.get_slot(var, "v")
        dm, dv = adam_moments(tf.cast(gradient, m.dtype), m, v_, self.beta_1, self.beta_2)
        m.assign_add(dm)
        v_.assign_add(dv)
        if self.amsgrad:
            v_max = self.get_slot(var, "v_max")
            v_max.assign(tf.maximum(v_max, v_))
            v_ = v_max
        lr, t = tf.cast(lr_32, m.dtype), tf.cast(t_64, m.dtype)
        return adam_step(m, v_, lr, t, self.beta_1, self.beta_2, self.epsilon)

    def apply(self, gradients: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """Makes one Adam step on every variable."""
        lr_32 = self.current_learning_rate()
        t_64 = self.iterations + 1
        for g, var in zip(gradients, variables, strict=True):
            var.assign_sub(tf.cast(self._adam_delta(g, var, lr_32, t_64), var.dtype))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(learning_rate={self._learning_rate_repr()}, "
            f"beta_1={self.beta_1}, beta_2={self.beta_2}, epsilon={self.epsilon}, "
            f"amsgrad={self.amsgrad})"
        )
