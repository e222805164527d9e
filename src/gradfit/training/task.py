"""Task: the unit a Trainer trains; SupervisedTask: a model, a loss and an update rule.

A :class:`Task` owns everything one training step touches (models, update
rules, their variables) and says what a step is. The Trainer runs
``train_step`` inside its compiled many-steps loop, ``test_step`` for
evaluation and validation, ``predict_step`` for predictions; it never looks
inside the step. Every ``tf.Variable`` the task tracks is its state: a
non-finite step rolls all of it back, and checkpoints and backups save all
of it.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf


class StepLogs(dict):  # type: ignore[type-arg]
    """What a ``train_step`` may return instead of a plain dict: logs plus its gradients.

    The Trainer then also counts a step non-finite when a gradient holds
    NaN or infinity (not only when a logged value does), and logs the
    gradients' global norm as ``"grad_norm"`` when a callback asks for it.

    A log the task declares ``"weighted"`` (:meth:`Task.log_kinds`) also
    needs its weight for this step in ``weights``: its epoch value is then
    the mean of its step values weighted by them (a weighted metric's sum
    of sample weights, say), instead of by the batch sizes.

    Args:
        logs: The step's scalar logs by name.
        gradients: The gradients the step applied (``None`` entries skipped).
        weights: Each weighted log's weight for this step, by name.
    """

    def __init__(
        self,
        logs: Mapping[str, Any],
        *,
        gradients: Sequence[Any] = (),
        weights: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(logs)
        self.gradients = list(gradients)
        self.weights = dict(weights or {})


class Task(tf.Module, abc.ABC):
    """A training step and what it trains: models, update rules, their state.

    Subclass it and implement :meth:`train_step`; create variables in
    ``__init__`` or in :meth:`build`, which the Trainer calls eagerly
    before anything is traced. ``batch`` is what the data yields: ``x``
    alone for ``fit(x)``, ``(x, y)`` for ``fit(x, y)``, a dataset's
    elements as they are.

    Example::

        class TwoModels(gf.Task):
            def __init__(self):
                super().__init__()
                self.a, self.b = gf.LinearModel(), gf.LinearModel()
                self.rule_a, self.rule_b = gf.SGD(0.1), gf.Adam(0.01)

            def build(self, batch):
                x, _ = batch
                for model, rule in ((self.a, self.rule_a), (self.b, self.rule_b)):
                    model.maybe_build(x.shape)
                    rule.build(model.trainable_variables)

            def train_step(self, batch):
                x, y = batch
                logs = {}
                for name, model, rule in (("a", self.a, self.rule_a), ("b", self.b, self.rule_b)):
                    with tf.GradientTape() as tape:
                        loss = tf.reduce_mean((model(x) - y) ** 2)
                    variables = model.trainable_variables
                    rule.apply(tape.gradient(loss, variables), variables)
                    logs[f"{name}_loss"] = loss
                return logs
    """

    needs_targets: bool = False
    """Whether ``fit`` and ``evaluate`` on arrays require ``y``."""

    dtype: tf.DType = tf.float32
    """The floating-point dtype in-memory features are cast to (float64: logs in float64)."""

    def build(self, batch: Any) -> None:
        """Creates the task's variables for batches like ``batch``, eagerly; idempotent.

        The Trainer calls it before tracing any step, with a small all-zero
        batch of the data's structure, dtypes and per-example shapes. The
        default does nothing (a task that creates its variables in
        ``__init__`` needs no ``build``).

        Args:
            batch: An example batch.
        """

    def check_data(self, data: Any, names: tuple[str, str]) -> None:
        """Raises a ``ValueError`` for data the task can never take, before training.

        The default accepts everything; errors then surface when the step
        is traced.

        Args:
            data: The prepared data (:mod:`gradfit.data`).
            names: The names of the features' and targets' arguments.
        """

    @abc.abstractmethod
    def train_step(self, batch: Any) -> Mapping[str, tf.Tensor]:
        """One training step, run inside the compiled loop; returns scalar logs by name.

        It computes gradients (``tf.GradientTape``) and calls its rules'
        ``apply``. What it returns is logged per step and averaged,
        weighted by batch size, per epoch into the History. Return a
        :class:`StepLogs` to have gradients checked for finiteness too.
        """

    def test_step(self, batch: Any) -> Mapping[str, tf.Tensor]:
        """One evaluation step (``evaluate``, ``validation_data``); changes no variable."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement `test_step`, which `evaluate` and "
            "`validation_data` need."
        )

    def predict_step(self, batch: Any) -> tf.Tensor:
        """Predictions for one batch of features (``predict``)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement `predict_step`, which `predict` needs."
        )

    def log_names(self) -> list[str] | None:
        """The names ``train_step`` logs, in order, if known without tracing it (else ``None``)."""
        return None

    def log_kinds(self) -> Mapping[str, str]:
        """How the epoch value of each log that is not a plain batch mean is formed, by name.

        ``"weighted"``: the step returns a :class:`StepLogs` with the log's
        weight, and the epoch value is the weighted mean of its step values
        (exact epoch values of weighted metrics). ``"running"``: the value
        already sums up the epoch so far (a stateful metric's ``result()``):
        the epoch value is the last step's. Other logs (the default, all of
        them) are means of the step values weighted by batch size.
        """
        return {}

    def running_logs(self) -> Mapping[str, Any]:
        """The current values of the ``"running"`` logs, from the task's state, by name.

        Under a ``tf.distribute`` strategy each replica's step sees only its
        share of a stateful metric: a Keras metric's variables are
        ``SyncOnRead``, one partial sum per replica, and its ``result()`` in
        the step is that replica's. So after every step the Trainer reads
        the running logs here instead, in cross-replica context, where such
        variables read as their sum over the replicas: the global batch's
        value, as on one device. A task that declares ``"running"`` logs
        trains under a strategy only if it gives them here (the default
        gives none). Called while tracing the loop, and once eagerly to check.
        """
        return {}

    def reset_metrics(self) -> None:
        """Resets stateful metrics, eagerly: before every epoch's first step and every evaluation.

        A resumed epoch (a restored mid-epoch backup) does not reset: the
        metrics' state comes back with the rest of the task's. The default
        does nothing.
        """

    def epoch_logs(self) -> dict[str, float]:
        """Values added to every epoch's logs after training it (e.g. the learning rate)."""
        return {}

    def checkpoint_items(self) -> dict[str, tf.Module]:
        """The objects checkpoints and backups save, by name (default: the whole task)."""
        return {"task": self}

    def cache_key(self) -> Hashable:
        """What compiled functions depend on besides the data: rebuilt when this changes."""
        return (id(self),)

    def state_variables(self) -> list[tf.Variable]:
        """Every variable a training step may change: all the task tracks.

        The task's ``tf.Module`` variables, every ``tf.Variable`` in its
        checkpoint graph (a ``tf.random.Generator``'s state, say: what a
        backup saves, a rollback restores), and the ``tf.Variable`` under
        every Keras variable it holds (Keras models' weights and BatchNorm
        statistics, Keras metrics' and wrapped Keras optimizers' state).
        """
        found: list[Any] = list(self.variables)
        for obj in tf.train.TrackableView(self).descendants():
            if isinstance(obj, keras.Variable):
                obj = obj.value
            if isinstance(obj, tf.Variable):
                found.append(obj)
        for module in (self, *self.submodules):
            optimizer = getattr(module, "optimizer", None)  # a wrapped Keras optimizer
            found.extend(var.value for var in getattr(optimizer, "variables", ()))
        unique = {id(var): var for var in found}
        return list(unique.values())
