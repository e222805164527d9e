"""SupervisedTask: a model fitted to targets with a loss and an update rule.

What ``gf.Trainer(model, loss, update_rule, metrics=...)`` trains: the
standard step, a :class:`~gradfit.training.task.Task` like any other. It
takes batches ``(x, y)`` or ``(x, y, sample_weight)``, with ``x`` and
``y`` nested for models of several inputs or outputs; a Keras model is
wrapped as a :class:`gradfit.KerasModel`; a model computing in float16 is
trained with dynamic loss scaling.
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Mapping
from typing import Any

import tensorflow as tf

from gradfit import _validation as v
from gradfit._autograph import traced
from gradfit.keras import KerasModel, as_model
from gradfit.models import Model
from gradfit.training import metric_logs
from gradfit.training.loss_scale import LossScale
from gradfit.training.metric_logs import RESERVED_LOGS, check_metrics
from gradfit.training.objective import Objective
from gradfit.training.probe import Probe
from gradfit.training.task import StepLogs, Task
from gradfit.update_rules import SGD, UpdateRule

__all__ = ["RESERVED_LOGS", "SupervisedTask", "check_metrics", "check_model", "check_update_rule"]


def check_model(model: Any) -> Model:
    """``model`` as a gradfit Model (a Keras model wrapped), else a ``TypeError`` with a hint."""
    model = as_model(model)
    if not isinstance(model, Model):
        hint = ""
        if hasattr(model, "trainable_variables") and callable(model):
            hint = (
                " A keras.Model works as it is (or wrapped: gf.KerasModel(model)); for a "
                "tf.Module of your own, subclass gradfit.Model (a tf.Module with __call__)."
            )
        raise TypeError(
            f"`model` must be a gradfit Model or a keras.Model.{hint} {v.received('model', model)}"
        )
    return model


def _takes_training(model: Any) -> bool:
    try:
        return "training" in inspect.signature(model.__call__).parameters
    except (TypeError, ValueError):
        return False


@tf.autograph.experimental.do_not_convert  # plain Python: not converted while tracing
def _half(dtype: tf.DType) -> bool:
    return dtype in (tf.float16, tf.bfloat16)


@tf.autograph.experimental.do_not_convert  # plain Python: not converted while tracing
def _compute_dtype(model: Any) -> tf.DType:
    """The dtype ``model`` computes in (its ``compute_dtype``, else its ``dtype``)."""
    return getattr(model, "compute_dtype", None) or model.dtype


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


class SupervisedTask(Task):
    """A model fitted to targets with a loss and an update rule: gradfit's standard step.

    ``train_step((x, y))`` (or ``(x, y, sample_weight)``) computes
    ``loss(y, model(x, training=True))`` plus the model's own ``losses``
    under a ``GradientTape`` and applies the gradients of the model's
    trainable variables with the update rule; it logs ``loss`` (the total),
    each output's loss for a dict of losses (``"<key>_loss"``) and each
    metric (:mod:`gradfit.training.metric_logs`).

    Args:
        model: A :class:`gradfit.Model` or a ``keras.Model``.
        loss: A :class:`gradfit.Loss`, a Keras loss or any
            ``callable(y_true, y_pred) -> scalar``; for a model of several
            outputs, a dict of them keyed like ``y`` (or a list, in order).
        update_rule: A :class:`gradfit.UpdateRule`; ``None`` means ``SGD()``.
        metrics: Metrics (:mod:`gradfit.metrics`, Keras metric objects,
            names such as ``"accuracy"``, callables), or a dict by name. As
            in Keras, they do not see sample weights.
        weighted_metrics: Metrics that weigh examples by the sample (or
            class) weights, as Keras's ``weighted_metrics``.
        loss_weights: With several losses, the weight of each in the total.
        loss_scale: Dynamic loss scaling (:class:`gradfit.training.LossScale`):
            ``"auto"`` (the default) scales when the model computes in
            float16, ``True`` always, ``False`` never; or a ``LossScale``.
    """

    needs_targets = True

    def __init__(
        self,
        model: Any,
        loss: Any,
        update_rule: Any = None,
        *,
        metrics: Any = (),
        weighted_metrics: Any = (),
        loss_weights: Any = None,
        loss_scale: Any = "auto",
    ) -> None:
        super().__init__(name="supervised_task")
        self.model = check_model(model)
        self.objective = Objective(loss, loss_weights)
        self.update_rule = check_update_rule(update_rule)
        self._metrics: dict[str, Any] = {}
        self._weighted_metrics: dict[str, Any] = {}
        self.metrics = metrics
        self.weighted_metrics = weighted_metrics
        self.loss_scale = self._loss_scale(loss_scale)
        self._training = _takes_training(self.model)
        self._probe = Probe()

    # -- the parts (the Trainer's properties assign them) -----------------

    @property
    def loss(self) -> Any:
        """The loss (or the losses by output)."""
        return self.objective.loss

    @loss.setter
    def loss(self, value: Any) -> None:
        self.objective = Objective(value, None)

    @property
    def metrics(self) -> dict[str, Any]:
        """The metrics by name (unweighted)."""
        return self._metrics

    @metrics.setter
    def metrics(self, value: Any) -> None:
        self._metrics = self._check_metrics("metrics", value, self._weighted_metrics)
        self.keras_metrics = metric_logs.keras_metrics(self._all_metrics())

    @property
    def weighted_metrics(self) -> dict[str, Any]:
        """The metrics that weigh examples by their sample weights, by name."""
        return self._weighted_metrics

    @weighted_metrics.setter
    def weighted_metrics(self, value: Any) -> None:
        checked = self._check_metrics("weighted_metrics", value, self._metrics)
        metric_logs.check_weighable(checked)
        self._weighted_metrics = checked
        self.keras_metrics = metric_logs.keras_metrics(self._all_metrics())

    def _check_metrics(self, name: str, value: Any, others: Mapping[str, Any]) -> dict[str, Any]:
        metrics = check_metrics(value, self.objective.loss, name)
        clashes = set(metrics) & {*self.objective.output_names, *others}
        if clashes:
            raise ValueError(
                f"`{name}` has names {sorted(clashes)} that other logs use; pass a dict to "
                f"name them. {v.received(name, value)}"
            )
        return metrics

    def _all_metrics(self) -> dict[str, Any]:
        return {**self._metrics, **self._weighted_metrics}

    def _loss_scale(self, loss_scale: Any) -> LossScale | None:
        if isinstance(loss_scale, LossScale):
            return loss_scale
        if loss_scale == "auto" and isinstance(loss_scale, str):
            return LossScale() if _compute_dtype(self.model) == tf.float16 else None
        if isinstance(loss_scale, bool):
            return LossScale() if loss_scale else None
        raise TypeError(
            "`loss_scale` must be 'auto', True, False or a gf.training.LossScale. "
            f"{v.received('loss_scale', loss_scale)}"
        )

    @property
    def dtype(self) -> tf.DType:  # type: ignore[override]
        """The model's float dtype (its variables'), which in-memory features are cast to."""
        return self.model.dtype

    # -- building and checking --------------------------------------------

    def build(self, batch: Any) -> None:
        """Builds the model for ``x``'s shape (unless built) and the rule for its variables."""
        x = batch[0]
        if tf.is_tensor(x):
            if self.model.input_shape is None:
                self.model.maybe_build(x.shape)
        elif isinstance(self.model, KerasModel):
            self.model.maybe_build(tf.nest.map_structure(lambda t: t.shape, x))
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

    # -- the steps ---------------------------------------------------------

    def predictions(self, x: Any, *, training: bool) -> Any:
        """The model's outputs, in float32 when the model computes in half precision."""
        model: Any = self.model  # (its __call__ takes `training` when self._training)
        call = traced(model)
        pred = call(x, training=training) if self._training else call(x)
        if _half(_compute_dtype(self.model)):
            pred = tf.nest.map_structure(
                lambda p: tf.cast(p, tf.float32) if _half(p.dtype) else p, pred
            )
        return pred

    def _logs(
        self, y: Any, pred: Any, weights: Any, loss: tf.Tensor, parts: Mapping[str, tf.Tensor]
    ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        values, epoch_weights = metric_logs.update(self.metrics, y, pred, None, weighted=False)
        if self.weighted_metrics:
            weighted, more = metric_logs.update(
                self.weighted_metrics, y, pred, weights, weighted=True
            )
            values.update(weighted)
            epoch_weights.update(more)
        return {"loss": loss, **parts, **values}, epoch_weights

    @tf.autograph.experimental.do_not_convert
    def _model_losses(self) -> list[tf.Tensor]:
        return list(getattr(self.model, "losses", ()))

    def train_step(self, batch: Any) -> StepLogs:
        """The loss (and the model's own losses), its gradients applied by the update rule."""
        x, y, weights = _unpack(batch)
        variables = self.model.trainable_variables
        scale = self.loss_scale
        with tf.GradientTape() as tape:
            pred = self.predictions(x, training=True)
            loss, parts = self.objective(y, pred, weights, self._model_losses())
            scaled = loss if scale is None else scale.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        logs, epoch_weights = self._logs(y, pred, weights, loss, parts)
        if scale is None:
            self.update_rule.apply(gradients, variables)
            return StepLogs(logs, gradients=gradients, weights=epoch_weights)
        gradients, finite = scale.unscale(gradients)
        scale.apply_if_finite(finite, lambda: self.update_rule.apply(gradients, variables))
        # An overflow step is skipped and lowers the scale; it is not a non-finite step.
        shown = [None if g is None else _zero_unless(finite, g) for g in gradients]
        return StepLogs(logs, gradients=shown, weights=epoch_weights)

    def test_step(self, batch: Any) -> StepLogs:
        """The loss (with the model's own losses) and metrics on ``(x, y)``."""
        x, y, weights = _unpack(batch)
        pred = self.predictions(x, training=False)
        loss, parts = self.objective(y, pred, weights, self._model_losses())
        logs, epoch_weights = self._logs(y, pred, weights, loss, parts)
        return StepLogs(logs, weights=epoch_weights)

    def predict_step(self, batch: Any) -> Any:
        """The model's predictions for ``x``."""
        return self.predictions(batch, training=False)

    # -- what the Trainer reads ------------------------------------------

    def log_names(self) -> list[str]:
        """``loss``, the per-output losses, then the metrics' names."""
        return ["loss", *self.objective.output_names, *self.metrics, *self.weighted_metrics]

    def log_kinds(self) -> dict[str, str]:
        """Weighted metrics are weighted by their examples' weights, Keras metrics running."""
        return {
            **metric_logs.kinds(self.metrics, weighted=False),
            **metric_logs.kinds(self.weighted_metrics, weighted=True),
        }

    def running_logs(self) -> dict[str, tf.Tensor]:
        """The Keras metrics' results (read after each step under a strategy)."""
        return {
            **metric_logs.replica_results(self.metrics, "metrics"),
            **metric_logs.replica_results(self.weighted_metrics, "weighted_metrics"),
        }

    def reset_metrics(self) -> None:
        """Resets the Keras metrics."""
        metric_logs.reset(self._all_metrics())

    def epoch_logs(self) -> dict[str, float]:
        """``lr``: the rate the next update will use (schedules compute it from ``iterations``)."""
        return {"lr": float(self.update_rule.current_learning_rate())}

    def checkpoint_items(self) -> dict[str, tf.Module]:
        """``model`` and ``update_rule`` (0.1's names), Keras metrics and the loss scale if any."""
        items: dict[str, tf.Module] = {"model": self.model, "update_rule": self.update_rule}
        if self.keras_metrics is not None:
            items["metrics"] = self.keras_metrics
        if self.loss_scale is not None:
            items["loss_scale"] = self.loss_scale
        return items

    def cache_key(self) -> Hashable:
        """The identities of the model, losses, rule and metrics: replacing one rebuilds."""
        return (
            id(self),
            id(self.model),
            id(self.objective),
            id(self.update_rule),
            id(self.loss_scale),
            *(id(metric) for metric in self._all_metrics().values()),
        )


@tf.autograph.experimental.do_not_convert  # plain Python: not converted while tracing
def _unpack(batch: Any) -> tuple[Any, Any, Any]:
    """``(x, y, sample_weight)`` from a batch ``(x, y)`` or ``(x, y, w)``."""
    if len(batch) == 3:
        return batch[0], batch[1], batch[2]
    return batch[0], batch[1], None


@tf.autograph.experimental.do_not_convert  # plain Python: not converted while tracing
def _zero_unless(finite: tf.Tensor, gradient: Any) -> Any:
    if isinstance(gradient, tf.IndexedSlices):
        values = tf.where(finite, gradient.values, tf.zeros_like(gradient.values))
        return tf.IndexedSlices(values, gradient.indices, gradient.dense_shape)
    return tf.where(finite, gradient, tf.zeros_like(gradient))
