"""The supervised objective: the loss of each output, weighted, plus the model's own losses.

One loss for one output (``loss(y, pred)``), or a dict of losses keyed like
``y`` for a model of several outputs (a list or tuple, in the outputs'
order, works too), each scaled by ``loss_weights`` (1.0 when not given).
Sample weights weigh each example as Keras does
(``sum(loss_i * w_i) / N``), and the model's ``losses`` (regularization
penalties, ``add_loss`` terms) are added: the total is what is minimised
and what is logged as ``loss``, as Keras logs it.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from gradfit import _validation as v
from gradfit._autograph import traced
from gradfit.distribute import sync
from gradfit.losses import Loss, check_loss, loss_name


def takes_sample_weight(loss: Any) -> bool:
    """Whether ``loss`` can weigh examples: a gradfit or Keras loss, or ``sample_weight=``."""
    if isinstance(loss, Loss):
        return type(loss).per_example is not Loss.per_example
    if isinstance(loss, keras.losses.Loss):
        return True
    try:
        parameters = inspect.signature(loss).parameters
    except (TypeError, ValueError):
        return False
    return "sample_weight" in parameters


def weighted_loss(loss: Callable[..., Any], y: Any, pred: Any, weights: Any) -> tf.Tensor:
    """``loss(y, pred)``, examples weighted by ``weights`` (``None``: unweighted)."""
    if weights is None:
        return keras_unscaled(loss, traced(loss)(y, pred))
    if isinstance(loss, Loss):
        return traced(loss.weighted)(y, pred, weights)
    return keras_unscaled(loss, traced(loss)(y, pred, sample_weight=weights))


_SCALED_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def keras_unscaled(loss: Any, value: Any) -> Any:
    """A Keras loss's ``value`` as on one device: its replica's mean, not ``1 / replicas`` of it.

    In a strategy's replica context a Keras 3 loss divides its mean by the
    replicas in sync (Keras's ``fit`` then sums the replicas' gradients);
    gradfit weighs each replica's mean by its share of the global batch
    itself (:mod:`gradfit.distribute.sync`), so the factor is undone. On a
    replica without examples (a ragged last batch) Keras returns its empty
    per-example values; that replica's loss is their sum, zero (and its
    share of the gradient nothing).
    """
    context = sync.replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    if not isinstance(loss, keras.losses.Loss) or loss.reduction not in _SCALED_REDUCTIONS:
        return value
    if value.shape.rank == 1 and value.shape[0] == 0:
        return tf.reduce_sum(value)
    return value * tf.cast(context.num_replicas_in_sync, value.dtype)


def _is_nested(loss: Any) -> bool:
    return isinstance(loss, Mapping | list | tuple)


def check_losses(loss: Any) -> Any:
    """``loss``: one callable, or a dict (or list) of them, one per output."""
    if isinstance(loss, Mapping):
        if not loss:
            raise ValueError(f"`loss` is an empty dict. {v.received('loss', loss)}")
        return {str(key): check_loss(item, f"loss[{key!r}]") for key, item in loss.items()}
    if isinstance(loss, list | tuple):
        if not loss:
            raise ValueError(f"`loss` is empty. {v.received('loss', loss)}")
        return [check_loss(item, f"loss[{i}]") for i, item in enumerate(loss)]
    return check_loss(loss)


def check_loss_weights(loss_weights: Any, loss: Any) -> Any:
    """``loss_weights`` keyed (or ordered) like ``loss``: finite numbers; ``None`` stays."""
    if loss_weights is None:
        return None
    if not _is_nested(loss):
        raise ValueError(
            "`loss_weights` needs a dict (or list) of losses, one per output. "
            f"{v.received('loss_weights', loss_weights)}"
        )
    keys = list(loss) if isinstance(loss, Mapping) else list(range(len(loss)))
    given = (
        dict(loss_weights)
        if isinstance(loss_weights, Mapping)
        else dict(enumerate(loss_weights))
        if isinstance(loss_weights, list | tuple)
        else None
    )
    if given is None or set(given) - set(keys):
        raise ValueError(
            f"`loss_weights` must be keyed like `loss` ({keys}). "
            f"{v.received('loss_weights', loss_weights)}"
        )
    for key, weight in given.items():
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise TypeError(f"`loss_weights` must hold numbers. Received {key!r}: {weight!r}")
        if not math.isfinite(float(weight)):
            raise ValueError(f"`loss_weights` must be finite. Received {key!r}: {weight!r}")
    return {key: float(given.get(key, 1.0)) for key in keys}


class Objective:
    """The total loss of a supervised step; see the module docstring.

    Args:
        loss: One loss, or a dict (list) of losses keyed (ordered) like ``y``.
        loss_weights: With several losses, a number per loss.
    """

    def __init__(self, loss: Any, loss_weights: Any = None) -> None:
        self.loss = check_losses(loss)
        self.loss_weights = check_loss_weights(loss_weights, self.loss)

    @property
    def output_names(self) -> list[str]:
        """The per-output loss logs: ``"<key>_loss"`` for a dict of losses, else none."""
        if isinstance(self.loss, Mapping):
            return [f"{key}_loss" for key in self.loss]
        return []

    @tf.autograph.experimental.do_not_convert  # plain Python, called while tracing
    def items(self) -> list[tuple[Any, Callable[..., Any]]]:
        """``(key, loss)`` pairs: ``(None, loss)`` for one loss."""
        if isinstance(self.loss, Mapping):
            return list(self.loss.items())
        if isinstance(self.loss, list):
            return list(enumerate(self.loss))
        return [(None, self.loss)]

    def __call__(
        self, y: Any, pred: Any, weights: Any, extra: Sequence[tf.Tensor] = ()
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """The total loss and the per-output losses (unweighted by ``loss_weights``)."""
        parts: dict[str, tf.Tensor] = {}
        terms = []
        for key, loss in self.items():
            if key is None:
                value = weighted_loss(loss, y, pred, weights)
                terms.append(value)
                continue
            value = weighted_loss(loss, y[key], pred[key], weights)
            if isinstance(key, str):
                parts[f"{key}_loss"] = value
            scale = 1.0 if self.loss_weights is None else self.loss_weights[key]
            terms.append(value if scale == 1.0 else value * tf.cast(scale, value.dtype))
        total = terms[0] if len(terms) == 1 else tf.add_n(terms)
        if extra:
            total = total + tf.add_n([tf.cast(term, total.dtype) for term in extra])
        return total, parts

    def name(self) -> str:
        """A readable name of the loss, for messages."""
        return ", ".join(loss_name(loss) for _, loss in self.items())
