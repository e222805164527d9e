"""KerasOptimizer: any Keras 3 optimizer as a gradfit UpdateRule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from gradfit import _validation as v
from gradfit.distribute import sync
from gradfit.update_rules.base import UpdateRule, sum_duplicates


class KerasOptimizer(UpdateRule):
    """Wraps a ``keras.optimizers.Optimizer`` (``tf.optimizers.*``) as an UpdateRule.

    The optimizer is built eagerly on the model's variables by the Trainer;
    its slot variables and its own ``iterations`` are tracked by this module,
    so ``tf.train.Checkpoint`` saves them with the rest of the trainer. The
    learning rate is the optimizer's own (a number or a Keras schedule, which
    gradfit's schedules are): read and set it on the optimizer.

    ``tf.IndexedSlices`` gradients reach the optimizer with repeated indices
    summed: given repeated indices, Keras 3's TensorFlow backend (Adam, for
    one) updates differently from the equivalent dense gradient.

    Under a ``tf.distribute`` strategy the optimizer's ``clipnorm``,
    ``global_clipnorm`` and ``clipvalue`` act on the global batch's gradient,
    as on one device: gradfit clips it before the optimizer's own
    all-reduce (which would clip each replica's part of the sum instead).

    Args:
        optimizer: A Keras 3 optimizer instance.
        name: Name of the module.

    Example::

        rule = gf.KerasOptimizer(tf.optimizers.Adam(1e-3))
    """

    supports_sparse = True

    def __init__(self, optimizer: Any, *, name: str | None = None) -> None:
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "`optimizer` must be a Keras optimizer such as tf.optimizers.Adam(1e-3). "
                f"{v.received('optimizer', optimizer)}"
            )
        super().__init__(0.0, name=name)
        self.optimizer = optimizer

    @property
    def learning_rate(self) -> Any:
        """The wrapped optimizer's learning rate."""
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate = value

    def current_learning_rate(self) -> tf.Tensor:
        """The learning rate the wrapped optimizer will use for its next update."""
        return tf.cast(self.optimizer._get_current_learning_rate(), tf.float32)

    def create_state(self, variables: Sequence[tf.Variable]) -> None:
        """Builds the wrapped optimizer on every variable seen so far.

        Raises:
            ValueError: If the Keras optimizer was built already and new
                variables arrive: Keras optimizers cannot grow their state.
        """
        if not variables:
            return
        if self.optimizer.built:
            raise ValueError(
                "`variables` holds variables the wrapped Keras optimizer was not built on, and a "
                "built Keras optimizer cannot add state. Wrap a fresh optimizer. Received new "
                f"variables: {[var.name for var in variables]}"
            )
        self.optimizer.build(list(self._index.variables))

    def apply(self, gradients: Sequence[Any], variables: Sequence[tf.Variable]) -> None:
        """Lets the wrapped optimizer update ``variables``."""
        gradients = [sum_duplicates(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]
        # Under a strategy the optimizer sums the replicas' parts itself, and would clip each
        # part (a fraction of the global gradient): the global gradient is clipped here.
        context = sync.replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            gradients = _clipped(self.optimizer, gradients)
        self.optimizer.apply(sync.for_summing(gradients), list(variables))


def _clipped(optimizer: Any, gradients: Sequence[Any]) -> list[Any]:
    """``gradients`` clipped as ``optimizer`` clips them itself (its three options).

    The same maths as Keras's (``tf.clip_by_norm`` per tensor, the global
    norm's ``clip * min(1 / norm, 1 / clip)``, ``tf.clip_by_value``); its
    own clipping of the parts that follow is then a no-op (to rounding).
    """
    if optimizer.clipnorm and optimizer.clipnorm > 0:
        return [tf.clip_by_norm(g, optimizer.clipnorm) for g in gradients]
    if optimizer.global_clipnorm and optimizer.global_clipnorm > 0:
        return list(tf.clip_by_global_norm(list(gradients), optimizer.global_clipnorm)[0])
    if optimizer.clipvalue and optimizer.clipvalue > 0:
        bound = optimizer.clipvalue
        return [tf.clip_by_value(g, -bound, bound) for g in gradients]
    return list(gradients)
