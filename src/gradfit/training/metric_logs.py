"""A supervised step's metrics: named, computed in-graph every step, exact per epoch.

Three kinds of metric, each logged so that the History holds its exact
epoch value:

- gradfit's stateless metrics (:mod:`gradfit.metrics`) and gradfit losses
  used as metrics: ``"weighted"`` logs, the batch's (sample-weighted) mean
  and its weight, so the epoch value is the mean over the epoch's examples;
- Keras metric objects (stateful): updated every step, their value the
  metric's own ``result()``, so the epoch value is the last step's
  (``"running"``); reset before every epoch and evaluation, never fed the
  probe's all-zero examples (the probe checks a fresh copy). Under a
  strategy their variables are ``SyncOnRead`` (each replica sums its own
  share) and the Trainer reads the results after each step in
  cross-replica context, where they are summed (:func:`replica_results`);
- any other ``callable(y_true, y_pred) -> scalar``: the batch-size-weighted
  mean of its batch values (it sees no sample weights).

Names: a list's metrics are named after each metric (Keras's names; a
string is its own name, ``"accuracy"``), a dict names them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from gradfit import _validation as v
from gradfit import losses as losses_lib
from gradfit import metrics as metrics_lib
from gradfit._autograph import traced
from gradfit.distribute import sync
from gradfit.training.objective import keras_unscaled, takes_sample_weight

RESERVED_LOGS = ("loss", "lr", "grad_norm", "nonfinite_steps", "epoch")
"""Log names gradfit writes itself."""

_ACCURACY_BY_LOSS = {
    "SparseCategoricalCrossentropy": metrics_lib.SparseCategoricalAccuracy,
    "BinaryCrossentropy": metrics_lib.BinaryAccuracy,
    "BinaryFocalCrossentropy": metrics_lib.BinaryAccuracy,
    "CategoricalCrossentropy": metrics_lib.CategoricalAccuracy,
    "CategoricalFocalCrossentropy": metrics_lib.CategoricalAccuracy,
}


def _accuracy(loss: Any) -> Any:
    """The accuracy ``"accuracy"`` means for ``loss``, as Keras chooses it."""
    for cls in type(loss).__mro__:
        if cls.__name__ in _ACCURACY_BY_LOSS:
            return _ACCURACY_BY_LOSS[cls.__name__]()
    raise ValueError(
        "`metrics` holds 'accuracy', which needs a cross-entropy loss to tell which accuracy "
        f"is meant; name one: gf.metrics.SparseCategoricalAccuracy(), CategoricalAccuracy() "
        f"or BinaryAccuracy(). Received: loss={v.echo(loss)}"
    )


def _resolve(metric: Any, loss: Any) -> tuple[str | None, Any]:
    """A string as its metric (and its own name); objects as they are."""
    if isinstance(metric, str):
        if metric in ("accuracy", "acc"):
            return metric, _accuracy(loss)
        return metric, metrics_lib.get(metric)
    return None, metric


def _named(metrics: Any, loss: Any, arg: str) -> list[tuple[str, Any]]:
    if metrics is None:
        return []
    if isinstance(metrics, Mapping):
        return [(str(name), _resolve(metric, loss)[1]) for name, metric in metrics.items()]
    if isinstance(metrics, str | bytes) or not isinstance(metrics, Sequence):
        raise TypeError(
            f"`{arg}` must be a sequence of metrics (gf.metrics objects, Keras metrics, "
            "names such as 'accuracy', or callables `metric(y_true, y_pred)`) or a dict of them "
            f"by name. {v.received(arg, metrics)}"
        )
    named = []
    for metric in metrics:
        name, resolved = _resolve(metric, loss)
        named.append((name or losses_lib.loss_name(resolved), resolved))
    return named


def check_metrics(metrics: Any, loss: Any = None, arg: str = "metrics") -> dict[str, Any]:
    """Metrics by name from a sequence (named after each metric) or a dict; clashes refused.

    Args:
        metrics: What the user passed.
        loss: The loss, which tells what ``"accuracy"`` means.
        arg: The argument's name for messages.
    """
    named: dict[str, Any] = {}
    for key, metric in _named(metrics, loss, arg):
        if not callable(metric) and not isinstance(metric, keras.metrics.Metric):
            raise TypeError(
                f"`{arg}` must contain metrics or callables `metric(y_true, y_pred) -> "
                f"scalar`. Received an element: {v.echo(metric)}"
            )
        if key in named or key in RESERVED_LOGS or key.startswith("val_"):
            raise ValueError(
                f"`{arg}` has a clashing name {key!r}; pass a dict to name metrics. "
                f"{v.received(arg, metrics)}"
            )
        named[key] = metric
    return named


def check_weighable(metrics: Mapping[str, Any]) -> None:
    """A ``TypeError`` for a weighted metric that cannot weigh examples."""
    for name, metric in metrics.items():
        if not (_is_keras_metric(metric) or _is_weighted(metric) or takes_sample_weight(metric)):
            raise TypeError(
                f"`weighted_metrics` holds {name!r}, which cannot weigh examples: use a "
                "gf.metrics or Keras metric, or a callable taking `sample_weight=`. "
                f"Received: {v.echo(metric)}"
            )


def _is_keras_metric(metric: Any) -> bool:
    return isinstance(metric, keras.metrics.Metric)


def _is_weighted(metric: Any) -> bool:
    return isinstance(metric, metrics_lib.Metric) or (
        isinstance(metric, losses_lib.Loss) and takes_sample_weight(metric)
    )


def kinds(metrics: Mapping[str, Any], *, weighted: bool) -> dict[str, str]:
    """Each metric's log kind (see :meth:`gradfit.Task.log_kinds`).

    Keras metrics are ``"running"``. Unweighted stateless metrics are plain
    batch means (exact over an epoch when weighted by batch size); weighted
    ones are ``"weighted"`` by their batches' sums of sample weights.
    """
    found = {}
    for name, metric in metrics.items():
        if _is_keras_metric(metric):
            found[name] = "running"
        elif weighted:
            found[name] = "weighted"
    return found


def _weights(y: Any, weights: Any, dtype: tf.DType) -> tf.Tensor:
    """The batch's sample weights, or ones: ``[N]``."""
    if weights is not None:
        return tf.cast(tf.reshape(weights, [-1]), dtype)
    return tf.ones(tf.shape(tf.nest.flatten(y)[0])[:1], dtype)


def _plain(metric: Any, y: Any, pred: Any) -> tf.Tensor:
    """An unweighted metric's batch value."""
    if _is_weighted(metric) and not isinstance(metric, metrics_lib.Metric):
        return tf.reduce_mean(traced(metric.per_example)(y, pred))  # a gradfit Loss as a metric
    return keras_unscaled(metric, traced(metric)(y, pred))  # (a Keras loss as a metric)


def _weighted(metric: Any, y: Any, pred: Any, weights: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """A weighted metric's batch value and its weight in the epoch's value (the weights' sum)."""
    if isinstance(metric, metrics_lib.Metric):
        if weights is None:
            value = traced(metric)(y, pred)
            return value, tf.reduce_sum(_weights(y, None, value.dtype))
        return traced(metric.weighted)(y, pred, weights)
    if _is_weighted(metric):  # a gradfit Loss as a metric
        values = traced(metric.per_example)(y, pred)
        w = _weights(y, weights, values.dtype)
        total = tf.reduce_sum(w)
        return tf.math.divide_no_nan(tf.reduce_sum(values * w), total), total
    weighing = _weights(y, weights, tf.float32)
    value = tf.convert_to_tensor(
        keras_unscaled(metric, traced(metric)(y, pred, sample_weight=weighing))
    )
    # (Its value divides by the examples, so replicas combine by examples, not weights.)
    return sync.global_batch_mean(value), tf.reduce_sum(_weights(y, weights, value.dtype))


def update(
    metrics: Mapping[str, Any], y: Any, pred: Any, weights: Any, *, weighted: bool
) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    """In-graph: every metric's value for this batch, and (``weighted``) their weights.

    Unweighted metrics ignore ``weights``, as Keras's ``metrics`` do.
    """
    values: dict[str, tf.Tensor] = {}
    epoch_weights: dict[str, tf.Tensor] = {}
    for name, metric in metrics.items():
        if _is_keras_metric(metric):
            metric.update_state(y, pred, sample_weight=weights if weighted else None)
            values[name] = metric.result()
        elif weighted:
            values[name], epoch_weights[name] = _weighted(metric, y, pred, weights)
        else:
            values[name] = _plain(metric, y, pred)
    return values, epoch_weights


def reset(metrics: Mapping[str, Any]) -> None:
    """Resets every Keras metric, eagerly."""
    for metric in metrics.values():
        if _is_keras_metric(metric):
            metric.reset_state()


_SUMMED_ON_READ = (tf.VariableSynchronization.ON_READ, tf.VariableAggregation.SUM)
"""How a Keras metric's variables must be made to read summed over the replicas."""


def replica_results(metrics: Mapping[str, Any], arg: str) -> dict[str, tf.Tensor]:
    """Every Keras metric's ``result()``, to read in cross-replica context (see the module).

    Under a strategy a Keras metric's variables are ``SyncOnRead`` and
    summed over the replicas when read there; a metric with a variable
    aggregated otherwise (a custom metric's ``aggregation="mean"``, say)
    would read wrong, so it is refused with a ``ValueError``.

    Args:
        metrics: The metrics by name.
        arg: The argument that holds them, for messages.
    """
    results = {}
    for name, metric in metrics.items():
        if not _is_keras_metric(metric):
            continue
        for var in metric.variables:
            value = getattr(var, "value", var)
            if (value.synchronization, value.aggregation) != _SUMMED_ON_READ:
                raise ValueError(
                    f"`{arg}` holds {name!r}, a Keras metric whose variable {var.name!r} is "
                    f"{value.synchronization.name.lower()} and aggregated by "
                    f"{value.aggregation.name}; under a `strategy` gradfit reads a metric's "
                    "state summed over the replicas, which needs variables made with "
                    "`add_variable(..., aggregation='sum')` (Keras's own metrics are). "
                    f"Received: {v.echo(metric)}"
                )
        results[name] = metric.result()
    return results


def probe_copy(metric: Any) -> Callable[..., Any]:
    """``metric``, or for a Keras metric a fresh copy's update-and-result: nothing of it changes."""
    if not _is_keras_metric(metric):
        return lambda y, pred: _plain(metric, y, pred)
    copy = type(metric).from_config(metric.get_config())

    def run(y: Any, pred: Any) -> tf.Tensor:
        copy.update_state(y, pred)
        return copy.result()

    return run


class KerasMetrics(tf.Module):
    """The state of a task's Keras metrics, as ``tf.Variable`` objects the task tracks.

    Keras metrics are not ``tf.train`` trackables, so neither checkpoints nor
    a ``tf.Module`` would find their variables; this module holds them (the
    ``tf.Variable`` under each Keras variable), so rollback, checkpoints and
    backups keep the metrics' state with the rest of the task's.

    Args:
        metrics: The metrics by name; only Keras metric objects are kept.
    """

    def __init__(self, metrics: Mapping[str, Any]) -> None:
        super().__init__(name="metrics")
        kept = {name: m for name, m in metrics.items() if _is_keras_metric(m)}
        self.names = list(kept)
        self.state = {name: [var.value for var in m.variables] for name, m in kept.items()}


def keras_metrics(metrics: Mapping[str, Any]) -> KerasMetrics | None:
    """A :class:`KerasMetrics` of the Keras metrics among ``metrics``, or ``None`` if none."""
    return KerasMetrics(metrics) if any(map(_is_keras_metric, metrics.values())) else None
