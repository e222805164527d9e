"""Stochastic gradient descent, with optional (Nesterov) momentum and weight decay.

Without momentum::

    param <- param - lr * g

With momentum ``mu`` (the Keras formulation)::

    velocity <- mu * velocity - lr * g
    param    <- param + velocity                      (classical)
    param    <- param + mu * velocity - lr * g        (Nesterov)

With ``weight_decay`` ``wd``, the parameter first decays, as in Keras:
``param <- param - param * wd * lr`` (see
:func:`~gradfit.update_rules.base.weight_decay_step`).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from gradfit import _validation as v
from gradfit.update_rules.base import LearningRate, UpdateRule, apply_weight_decay


def momentum_update(
    gradient: tf.Tensor, velocity: tf.Tensor, lr: tf.Tensor, momentum: float, nesterov: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns ``(new_velocity, delta)``: the new velocity and the step to add to the param."""
    new_velocity = momentum * velocity - lr * gradient
    delta = momentum * new_velocity - lr * gradient if nesterov else new_velocity
    return new_velocity, delta


class SGD(UpdateRule):
    """Stochastic gradient descent; gradfit's default update rule.

    Dense and ``tf.IndexedSlices`` gradients are both supported; sparse
    gradients (from ``tf.gather`` on an embedding table, say) update only the
    rows they touch when there is neither momentum nor weight decay.

    Args:
        learning_rate: Step size, finite and non-negative, or a schedule
            (see :mod:`gradfit.schedules`).
        momentum: Momentum coefficient in ``[0, 1)``; 0 disables it (no state).
        nesterov: Use Nesterov momentum.
        weight_decay: Decoupled weight decay, scaled by the learning rate as
            in Keras: ``param <- param - param * weight_decay * lr`` before the
            step. Non-negative; 0 disables it.
        name: Name of the module.

    Example::

        trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.1, momentum=0.9))
    """

    supports_sparse = True

    def __init__(
        self,
        learning_rate: LearningRate = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        *,
        name: str | None = None,
    ) -> None:
        momentum = v.float_in_unit_interval("momentum", momentum)
        nesterov = v.boolean("nesterov", nesterov)
        weight_decay = v.non_negative_float("weight_decay", weight_decay)
        super().__init__(learning_rate, name=name)
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay

    def create_state(self, variables: Sequence[tf.Variable]) -> None:
        """Creates a velocity slot per variable when momentum is on."""
        if self.momentum:
            for var in variables:
                self.add_slot(var, "velocity")

    def apply(self, gradients: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """Makes one SGD step on every variable."""
        lr_32 = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            apply_weight_decay(var, lr_32, self.weight_decay)  # touches every row
            if not self.momentum:
                lr = tf.cast(lr_32, var.dtype)
                if isinstance(g, tf.IndexedSlices):
                    var.scatter_sub(tf.IndexedSlices(lr * g.values, g.indices, g.dense_shape))
                else:
                    var.assign_sub(lr * g)
                continue
            velocity = self.get_slot(var, "velocity")
            new_velocity, delta = momentum_update(
                tf.cast(tf.convert_to_tensor(g), velocity.dtype),
                velocity,
                tf.cast(lr_32, velocity.dtype),
                self.momentum,
                self.nesterov,
            )
            velocity.assign(new_velocity)
            var.assign_add(tf.cast(delta, var.dtype))

    def __repr__(self) -> str:
        decay = f", weight_decay={self.weight_decay}" if self.weight_decay else ""
        return (
            f"SGD(learning_rate={self._learning_rate_repr()}, momentum={self.momentum}, "
            f"nesterov={self.nesterov}{decay})"
        )
