"""SupervisedTask: a model fitted to targets with a loss and an update rule.

What ``gf.Trainer(model, loss, update_rule, metrics=...)`` trains: the
standard step, a :class:`~gradfit.training.task.Task` like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from gradfit import _validation as v
from gradfit.losses import check_loss, loss_name
from gradfit.models import Model
from gradfit.training.probe import Probe
from gradfit.training.task import StepLogs, Task
from gradfit.update_rules import SGD, UpdateRule

Metric = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

RESERVED_LOGS = ("loss", "lr", "grad_norm", "nonfinite_steps")
"""Log names gradfit writes itself."""


def check_model(model: Any) -> Model:
    """``model`` if it is a gradfit Model, else a ``TypeError`` saying what works."""
    if not isinstance(model, Model):
        hint = ""
        if hasattr(model, "trainable_variables") and callable(model):
            hint = " Subclass gradfit.Model (a tf.Module with __call__) to use it."
        raise TypeError(f"`model` must be a gradfit Model.{hint} {v.received('model', model)}")
    return model


def check_update_rule(update_rule: Any) -> UpdateRule:
    """``update_rule`` (``SGD()`` for ``None``), else a ``TypeError`` saying what works."""
    if update_rule is None:
        return SGD()
    if isinstance(update_rule, UpdateRule):
        return update_rule
    module = type(update_rule).__module__
    if module.startswith(("keras", "tf_keras", "tensorflow")) and hasattr(update_rule, "apply"):
        raise TypeError(
            "`update_rule` is a Keras optimizer; gradfit needs an UpdateRule. Wrap it: "
            f"gf.KerasOptimizer({type(update_rule).__name__}(...)). "
            f"{v.received('update_rule', update_rule)}"
        )
    raise TypeError(
        "`update_rule` must be a gradfit UpdateRule (e.g. gf.SGD(0.1)) or None for the "
        f"default SGD. {v.received('update_rule', update_rule)}"
    )


def check_metrics(metrics: Any) -> dict[str, Metric]:
    """Metrics by name from a sequence (named after each metric) or a dict; clashes refused."""
    if metrics is None:
        return {}
    if isinstance(metrics, Mapping):
        items = list(metrics.items())
    elif isinstance(metrics, str | bytes) or not isinstance(metrics, Sequence):
        raise TypeError(
            "`metrics` must be a sequence of callables `metric(y_true, y_pred)` or a dict "
            f"of them by name. {v.received('metrics', metrics)}"
        )
    else:
        items = [(None, m) for m in metrics]
    named: dict[str, Metric] = {}
    for name, metric in items:
        if not callable(metric):
            raise TypeError(
                "`metrics` must contain callables `metric(y_true, y_pred) -> scalar`. "
                f"Received an element: {v.echo(metric)}"
            )
        key = str(name) if name is not None else loss_name(metric)
        if key in named or key in RESERVED_LOGS or key.startswith("val_"):
            raise ValueError(
                f"`metrics` has a clashing name {key!r}; pass a dict to name metrics. "
                f"{v.received('metrics', metrics)}"
            )
        named[key] = metric
    return named


class SupervisedTask(Task):
    """A model fitted to targets with a loss and an update rule: gradfit's standard step.

    ``train_step((x, y))`` computes ``loss(y, model(x))`` under a
    ``GradientTape`` and applies the gradients of the model's trainable
    variables with the update rule; it logs ``loss`` and each metric.

    Args:
        model: A :class:`gradfit.Model`.
        loss: A :class:`gradfit.Loss` or any ``callable(y_true, y_pred) -> scalar``.
        update_rule: A :class:`gradfit.UpdateRule`; ``None`` means ``SGD()``.
        metrics: Callables ``metric(y_true, y_pred) -> scalar`` (a Loss works),
            or a dict of them by name.
    """

    needs_targets = True

    def __init__(
        self,
        model: Any,
        loss: Any,
        update_rule: Any = None,
        *,
        metrics: Any = (),
    ) -> None:
        super().__init__(name="supervised_task")
        self.model = check_model(model)
        self.loss = check_loss(loss)
        self.update_rule = check_update_rule(update_rule)
        self.metrics = check_metrics(metrics)
        self._probe = Probe()

    @property
    def dtype(self) -> tf.DType:  # type: ignore[override]
        """The model's float dtype."""
        return self.model.dtype

    def build(self, batch: Any) -> None:
        """Builds the model for ``x``'s shape (unless built) and the rule for its variables."""
        if self.model.input_shape is None:
            self.model.maybe_build(batch[0].shape)
        variables = self.trainable_model_variables()
        self.update_rule.build(variables)

    def trainable_model_variables(self) -> list[tf.Variable]:
        """The model's trainable variables; a ``ValueError`` when it has none."""
        variables = list(self.model.trainable_variables)
        if not variables:
            raise ValueError(
                "`model` has no trainable variables; there is nothing to fit. "
                f"{v.received('model', self.model)}"
            )
        return variables

    def check_data(self, data: Any, names: tuple[str, str]) -> None:
        """Builds the model for the data and runs it (and the loss) on all-zero examples."""
        self._probe.check(self, data, names)

    def _outputs(self, y: tf.Tensor, pred: tf.Tensor, loss: tf.Tensor) -> dict[str, tf.Tensor]:
        logs = {"loss": loss}
        logs.update((name, metric(y, pred)) for name, metric in self.metrics.items())
        return logs

    def train_step(self, batch: Any) -> StepLogs:
        """``loss(y, model(x))``, its gradients applied by the update rule; logs and gradients."""
        x, y = batch
        with tf.GradientTape() as tape:
            pred = self.model(x)
            loss = self.loss(y, pred)
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)
        logs = self._outputs(y, pred, loss)
        self.update_rule.apply(gradients, variables)
        return StepLogs(logs, gradients=gradients)

    def test_step(self, batch: Any) -> dict[str, tf.Tensor]:
        """The loss and metrics on ``(x, y)``."""
        x, y = batch
        pred = self.model(x)
        return self._outputs(y, pred, self.loss(y, pred))

    def predict_step(self, batch: Any) -> tf.Tensor:
        """The model's predictions for ``x``."""
        return self.model(batch)

    def log_names(self) -> list[str]:
        """``loss``, then the metrics' names."""
        return ["loss", *self.metrics]

    def epoch_logs(self) -> dict[str, float]:
        """``lr``: the rate the next update will use (schedules compute it from ``iterations``)."""
        return {"lr": float(self.update_rule.current_learning_rate())}

    def checkpoint_items(self) -> dict[str, tf.Module]:
        """``model`` and ``update_rule``, the names gradfit 0.1's checkpoints used."""
        return {"model": self.model, "update_rule": self.update_rule}

    def cache_key(self) -> Hashable:
        """The identities of the model, loss, rule and metrics: replacing one rebuilds."""
        return (
            id(self),
            id(self.model),
            id(self.loss),
            id(self.update_rule),
            *(id(metric) for metric in self.metrics.values()),
        )
