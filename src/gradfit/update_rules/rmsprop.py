"""RMSProp (Hinton, 2012), as in Keras, with optional momentum and centering.

The update::

    v     <- rho * v + (1 - rho) * g^2
    mean  <- rho * mean + (1 - rho) * g                  (centered only)
    step  <- lr * g / sqrt(v - mean^2 + epsilon)         (centered; else sqrt(v + epsilon))
    mom   <- momentum * mom + step                       (momentum > 0 only; step <- mom)
    param <- param - step
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from gradfit import _validation as v
from gradfit.update_rules.base import LearningRate, UpdateRule, check_positive


def rmsprop_update(
    gradient: tf.Tensor,
    velocity: tf.Tensor,
    mean: tf.Tensor | None,
    momentum_buffer: tf.Tensor | None,
    lr: tf.Tensor,
    rho: float,
    momentum: float,
    epsilon: float,
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None, tf.Tensor]:
    """One RMSProp step for one parameter; all tensors share a floating dtype.

    Args:
        gradient: The gradient ``g``.
        velocity: Moving average of ``g^2``.
        mean: Moving average of ``g`` (centered RMSProp), or ``None``.
        momentum_buffer: Accumulated steps when ``momentum > 0``, or ``None``.
        lr: Learning rate.
        rho: Decay rate of the moving averages.
        momentum: Momentum coefficient (used when ``momentum_buffer`` is given).
        epsilon: Added under the square root.

    Returns:
        ``(velocity, mean, momentum_buffer, delta)``: the new state and the
        step, ``param <- param - delta``.
    """
    velocity = rho * velocity + (1 - rho) * tf.square(gradient)
    if mean is not None:
        mean = rho * mean + (1 - rho) * gradient
        denominator = (velocity + epsilon) - tf.square(mean)
    else:
        denominator = velocity + epsilon
    # lr * g / sqrt(denominator), and the denominator above, in forms TensorFlow's graph
    # optimizer leaves as they are (it turns x / sqrt(y) into a product and reassociates
    # chains of products and sums), so eager execution and tf.function agree to the bit.
    delta = gradient / (tf.sqrt(denominator) / lr)
    if momentum_buffer is not None:
        momentum_buffer = momentum * momentum_buffer + delta
        delta = momentum_buffer
    return velocity, mean, momentum_buffer, delta


class RMSProp(UpdateRule):
    """RMSProp, as in Keras (``keras.optimizers.RMSprop``).

    Keeps a ``velocity`` slot per variable, plus ``mean`` when centered and
    ``momentum`` when ``momentum > 0``. Sparse gradients are made dense.

    Args:
        learning_rate: Step size, finite and non-negative, or a schedule.
        rho: Decay rate of the moving averages, in ``[0, 1)``.
        momentum: Momentum coefficient in ``[0, 1)``; 0 disables it.
        epsilon: Positive constant added under the square root.
        centered: Normalise by the estimated variance of ``g`` rather than
            its second moment.
        name: Name of the module.

    Example::

        rule = gf.RMSProp(1e-3, momentum=0.9, centered=True)
    """

    def __init__(
        self,
        learning_rate: LearningRate = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        rho = v.float_in_unit_interval("rho", rho)
        momentum = v.float_in_unit_interval("momentum", momentum)
        epsilon = check_positive("epsilon", epsilon)
        centered = v.boolean("centered", centered)
        super().__init__(learning_rate, name=name)
        self.rho = rho
        self.momentum = momentum
        self.epsilon = epsilon
        self.centered = centered

    def create_state(self, variables: Sequence[tf.Variable]) -> None:
        """Creates the ``velocity`` slots, and ``mean`` and ``momentum`` when used."""
        for var in variables:
            self.add_slot(var, "velocity")
            if self.centered:
                self.add_slot(var, "mean")
            if self.momentum:
                self.add_slot(var, "momentum")

    def apply(self, gradients: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """Makes one RMSProp step on every variable."""
        lr_32 = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            velocity = self.get_slot(var, "velocity")
            mean = self.get_slot(var, "mean") if self.centered else None
            buffer = self.get_slot(var, "momentum") if self.momentum else None
            new_velocity, new_mean, new_buffer, delta = rmsprop_update(
                tf.cast(g, velocity.dtype),
                velocity,
                mean,
                buffer,
                tf.cast(lr_32, velocity.dtype),
                self.rho,
                self.momentum,
                self.epsilon,
            )
            velocity.assign(new_velocity)
            if mean is not None:
                mean.assign(new_mean)
            if buffer is not None:
                buffer.assign(new_buffer)
            var.assign_sub(tf.cast(delta, var.dtype))

    def __repr__(self) -> str:
        return (
            f"RMSProp(learning_rate={self._learning_rate_repr()}, rho={self.rho}, "
            f"momentum={self.momentum}, epsilon={self.epsilon}, centered={self.centered})"
        )
