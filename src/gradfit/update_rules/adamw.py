"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as in Keras.

Keras's definition: the decay is scaled by the learning rate and applied to
every variable the rule is given, before the Adam step (see :mod:`.adam`)::

    param <- param - param * weight_decay * lr
    param <- param - adam_step(g)
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from gradfit import _validation as v
from gradfit.update_rules.adam import Adam
from gradfit.update_rules.base import LearningRate, apply_weight_decay


class AdamW(Adam):
    """AdamW, as in Keras (``keras.optimizers.AdamW``): Adam plus decoupled weight decay.

    The maths is Adam's (:func:`~gradfit.update_rules.adam.adam_moments`,
    :func:`~gradfit.update_rules.adam.adam_step`) after
    :func:`~gradfit.update_rules.base.weight_decay_step`.

    Args:
        learning_rate: Step size, finite and non-negative, or a schedule.
        weight_decay: Non-negative decay rate; every step first multiplies
            each variable by ``1 - weight_decay * lr``.
        beta_1: Decay rate of the first moment, in ``[0, 1)``.
        beta_2: Decay rate of the second moment, in ``[0, 1)``.
        epsilon: Positive constant added to ``sqrt(v)``.
        amsgrad: Divide by the running maximum of ``v``.
        name: Name of the module.

    Example::

        rule = gf.AdamW(1e-3, weight_decay=0.01)
    """

    def __init__(
        self,
        learning_rate: LearningRate = 0.001,
        weight_decay: float = 0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        weight_decay = v.non_negative_float("weight_decay", weight_decay)
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, name=name)
        self.weight_decay = weight_decay

    def apply(self, gradients: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        """Decays every variable, then makes one Adam step on it."""
        lr_32 = self.current_learning_rate()
        t_64 = self.iterations + 1
        for g, var in zip(gradients, variables, strict=True):
            apply_weight_decay(var, lr_32, self.weight_decay)
            var.assign_sub(tf.cast(self._adam_delta(g, var, lr_32, t_64), var.dtype))

    def __repr__(self) -> str:
        return (
            f"AdamW(learning_rate={self._learning_rate_repr()}, "
            f"weight_decay={self.weight_decay}, beta_1={self.beta_1}, beta_2={self.beta_2}, "
            f"epsilon={self.epsilon}, amsgrad={self.amsgrad})"
        )
