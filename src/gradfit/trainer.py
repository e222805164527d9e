"""Trainer: fits a Model to data with a Loss and an UpdateRule.

The step (forward pass, loss, ``GradientTape``, ``UpdateRule.apply``) is one
``tf.function``, compiled with XLA when ``jit_compile=True``. It takes a
batch whose examples axis has unknown size, so the ragged last batch of an
epoch does not retrace it, and it is traced at most once per fit, however
many epochs run. The outer loop is eager: it slices batches (``data``),
calls the step, and hands the logs to callbacks.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v
from gradfit import data as data_lib
from gradfit.callbacks import Callback, CallbackList, History
from gradfit.callbacks.base import Logs, check_callbacks
from gradfit.losses import check_loss, loss_name
from gradfit.models import Model
from gradfit.update_rules import SGD, UpdateRule

logger = logging.getLogger("gradfit")

Metric = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def _check_model(model: Any) -> Model:
    if not isinstance(model, Model):
        hint = ""
        if hasattr(model, "trainable_variables") and callable(model):
            hint = " Subclass gradfit.Model (a tf.Module with __call__) to use it."
        raise TypeError(f"`model` must be a gradfit Model.{hint} {v.received('model', model)}")
    return model


def _check_update_rule(update_rule: Any) -> UpdateRule:
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


def _check_metrics(metrics: Any) -> dict[str, Metric]:
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
                f"Received an element: {v._echo(metric)}"
            )
        key = str(name) if name is not None else loss_name(metric)
        if key in named or key == "loss" or key.startswith("val_"):
            raise ValueError(
                f"`metrics` has a clashing name {key!r}; pass a dict to name metrics. "
                f"{v.received('metrics', metrics)}"
            )
        named[key] = metric
    return named


class Trainer:
    """Fits a model with a loss and an update rule.

    Args:
        model: A :class:`gradfit.Model`.
        loss: A :class:`gradfit.Loss` or any ``callable(y_true, y_pred) -> scalar``.
        update_rule: A :class:`gradfit.UpdateRule`; ``None`` means ``SGD()``.
        metrics: Callables ``metric(y_true, y_pred) -> scalar`` (a Loss works),
            or a dict of them by name; their epoch means appear in the History.
        callbacks: Callbacks used by every ``fit``.
        jit_compile: Compile the step with XLA.

    Attributes:
        stop_training: Set it to ``True`` from a callback to end ``fit`` after
            the current epoch.
        train_function: The compiled step of the latest fit (a ``tf.function``).

    Example::

        trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.1))
        history = trainer.fit(x, y, epochs=10)
        history.history["loss"]
    """

    def __init__(
        self,
        model: Model,
        loss: Any,
        update_rule: UpdateRule | None = None,
        *,
        metrics: Sequence[Metric] | Mapping[str, Metric] = (),
        callbacks: Sequence[Callback] = (),
        jit_compile: bool = False,
    ) -> None:
        self.model = _check_model(model)
        self.loss = check_loss(loss)
        self.update_rule = _check_update_rule(update_rule)
        self.metrics = _check_metrics(metrics)
        self.callbacks = check_callbacks("callbacks", callbacks)
        self.jit_compile = v.boolean("jit_compile", jit_compile)
        self.stop_training = False
        self.history: History | None = None
        self.train_function: Any = None
        self._functions: dict[Any, Any] = {}

    # -- public API ------------------------------------------------------

    def fit(
        self,
        x: Any,
        y: Any = None,
        *,
        epochs: int = 1,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        validation_data: Any = None,
        callbacks: Sequence[Callback] = (),
    ) -> History:
        """Trains the model for ``epochs`` passes over the data.

        Every argument and input is checked before any variable changes.

        Args:
            x: Features (NumPy array, tensor or list; integers are cast to
                the model's float dtype), or a ``tf.data.Dataset`` of
                ``(x, y)`` batches.
            y: Targets; ``None`` when ``x`` is a dataset.
            epochs: Number of passes over the data.
            batch_size: Examples per step; ``None`` puts the whole data set
                in one batch (full-batch gradient descent, as in the TF2
                tutorial). Must be ``None`` for datasets.
            shuffle: Visit examples in a new random order every epoch
                (in-memory data only).
            seed: Seed of the shuffling order, for reproducible fits.
            validation_data: ``(x_val, y_val)`` or a dataset of batches; its
                loss and metrics are logged as ``val_*`` after every epoch.
            callbacks: Callbacks for this fit only, after the trainer's own.

        Returns:
            The :class:`~gradfit.callbacks.History` of the fit.
        """
        epochs = v.positive_int("epochs", epochs)
        shuffle = v.boolean("shuffle", shuffle)
        seed = v.optional_seed("seed", seed)
        extra = check_callbacks("callbacks", callbacks)
        train = self._prepare(x, y, batch_size, ("x", "y"))
        val = self._prepare_validation(validation_data, batch_size)
        self._probe(train)
        variables = self._trainable_variables()
        self.update_rule.build(variables)
        step = self._train_function(train, variables)
        self.train_function = step

        history = History()
        callback_list = CallbackList([*self.callbacks, *extra, history])
        callback_list.set_trainer(self)
        metric_names = ["loss", *self.metrics]
        if val is not None:
            metric_names += [f"val_{name}" for name in metric_names]
        metric_names.append("lr")
        callback_list.set_params({"epochs": epochs, "steps": train.steps, "metrics": metric_names})
        generator = (
            tf.random.Generator.from_seed(seed)
            if seed is not None
            else tf.random.Generator.from_non_deterministic_state()
        )
        batch_logs = callback_list.wants_batch_logs
        self.stop_training = False
        self.history = history
        epoch_logs: Logs = {}

        callback_list.on_train_begin()
        for epoch in range(epochs):
            callback_list.on_epoch_begin(epoch)
            results: list[tf.Tensor] = []
            sizes: list[Any] = []
            for batch, (x_batch, y_batch, size) in enumerate(train.batches(shuffle, generator)):
                if batch_logs:
                    callback_list.on_train_batch_begin(batch)
                outputs = step(x_batch, y_batch)
                results.append(outputs)
                sizes.append(size if size is not None else tf.shape(x_batch)[0])
                if batch_logs:
                    callback_list.on_train_batch_end(batch, self._logs(outputs))
            if not results:
                raise ValueError("`x` yielded no batches; the dataset is empty.")
            epoch_logs = self._mean_logs(results, sizes)
            if val is not None:
                epoch_logs.update({f"val_{k}": value for k, value in self._evaluate(val).items()})
            # The rate the next update will use (schedules compute it from `iterations`).
            epoch_logs["lr"] = float(self.update_rule.current_learning_rate())
            callback_list.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
        callback_list.on_train_end(epoch_logs)
        return history

    def evaluate(self, x: Any, y: Any = None, *, batch_size: int | None = None) -> dict[str, float]:
        """Returns the loss and metrics on ``(x, y)``, averaged over the examples.

        Args:
            x: Features, or a ``tf.data.Dataset`` of ``(x, y)`` batches.
            y: Targets; ``None`` when ``x`` is a dataset.
            batch_size: Examples per batch; ``None`` means all at once.
        """
        data = self._prepare(x, y, batch_size, ("x", "y"))
        self._probe(data)
        return self._evaluate(data)

    def predict(self, x: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Returns the model's predictions for ``x`` as a NumPy array.

        Args:
            x: Features, or a ``tf.data.Dataset`` of feature batches (or of
                ``(x, y)`` batches, whose targets are ignored).
            batch_size: Examples per batch; ``None`` means all at once.
        """
        data = self._prepare(x, None, batch_size, ("x", "y"), with_targets=False)
        self._probe(data)
        fn = self._cached(("predict", data.x_spec), lambda: self._make_predict(data.x_spec))
        outputs = [fn(x_batch) for x_batch, _, _ in data.batches()]
        if not outputs:
            raise ValueError("`x` yielded no batches; the dataset is empty.")
        return np.concatenate([o.numpy() for o in outputs], axis=0)

    # -- inputs ----------------------------------------------------------

    def _prepare(
        self,
        x: Any,
        y: Any,
        batch_size: Any,
        names: tuple[str, str],
        *,
        with_targets: bool = True,
    ) -> data_lib.Data:
        prepared = data_lib.prepare(
            x,
            y,
            float_dtype=self.model.dtype,
            batch_size=batch_size,
            names=names,
            with_targets=with_targets,
        )
        shape = (
            prepared.x.shape if isinstance(prepared, data_lib.ArrayData) else prepared.x_spec.shape
        )
        try:
            self.model.maybe_build(shape)
        except ValueError as err:
            if names[0] == "x":
                raise
            name = names[0]
            message = str(err).replace("`x`", f"`{name}`").replace("x.shape", f"{name}.shape")
            raise ValueError(message) from None
        return prepared

    def _prepare_validation(self, validation_data: Any, batch_size: Any) -> data_lib.Data | None:
        if validation_data is None:
            return None
        if isinstance(validation_data, tf.data.Dataset):
            return self._prepare(validation_data, None, None, ("validation_data", "y"))
        if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
            raise ValueError(
                "`validation_data` must be a tuple (x_val, y_val) or a tf.data.Dataset of "
                f"(x, y) batches. {v.received('validation_data', validation_data)}"
            )
        x_val, y_val = validation_data
        if isinstance(x_val, tf.data.Dataset):
            raise ValueError(
                "`validation_data` must be a tuple of arrays or a Dataset, not a tuple holding "
                f"a Dataset. {v.received('validation_data', validation_data)}"
            )
        return self._prepare(x_val, y_val, batch_size, ("validation_data[0]", "validation_data[1]"))

    def _probe(self, prepared: data_lib.Data) -> None:
        """Runs the model (and loss) eagerly on a few all-zero examples.

        Turns a mismatch between the data and the model or loss into a clear
        error before anything is traced or any variable changes.
        """
        x_spec, y_spec = prepared.x_spec, prepared.y_spec
        built = self.model.input_shape
        x_dims = [
            d if d is not None else (built[i] if built and built[i] is not None else 1)
            for i, d in enumerate(x_spec.shape[1:])
        ]
        y_dims = [d or 1 for d in (y_spec.shape[1:] if y_spec is not None else [])]
        # As many examples as no per-example dimension has, so a mismatch between the
        # predictions' and the targets' shapes cannot broadcast by luck.
        n = next(k for k in itertools.count(2) if k not in (*x_dims, *y_dims))
        x0 = tf.zeros([n, *x_dims], x_spec.dtype)
        try:
            pred = self.model(x0)
        except Exception as err:
            raise ValueError(
                f"The model cannot be called on examples of `x` (per-example shape "
                f"{tuple(x_spec.shape[1:])}, dtype {x_spec.dtype.name}): {err}"
            ) from err
        if y_spec is None:
            return
        y0 = tf.zeros([n, *y_dims], y_spec.dtype)
        for name, fn in (("loss", self.loss), *self.metrics.items()):
            arg = "loss" if name == "loss" else "metrics"
            try:
                value = fn(y0, pred)
            except Exception as err:
                raise ValueError(
                    f"`{arg}` ({loss_name(fn)}) failed on targets of per-example shape "
                    f"{tuple(y_spec.shape[1:])} (dtype {y_spec.dtype.name}) and predictions of "
                    f"per-example shape {tuple(pred.shape[1:])}: {err}"
                ) from err
            value = tf.convert_to_tensor(value)
            if value.shape.rank != 0 or not (value.dtype.is_floating):
                raise ValueError(
                    f"`{arg}` ({loss_name(fn)}) must return a floating-point scalar; it returned "
                    f"shape {value.shape} and dtype {value.dtype.name}."
                )

    def _trainable_variables(self) -> list[tf.Variable]:
        variables = list(self.model.trainable_variables)
        if not variables:
            raise ValueError(
                "`model` has no trainable variables; there is nothing to fit. "
                f"{v.received('model', self.model)}"
            )
        return variables

    # -- compiled functions ----------------------------------------------

    def _cached(self, key: Any, make: Callable[[], Any]) -> Any:
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = make()
        return fn

    def _log_dtype(self) -> tf.DType:
        return tf.float64 if self.model.dtype == tf.float64 else tf.float32

    def _outputs(self, y: tf.Tensor, pred: tf.Tensor, loss: tf.Tensor) -> tf.Tensor:
        dtype = self._log_dtype()
        values = [loss] + [metric(y, pred) for metric in self.metrics.values()]
        return tf.stack([tf.cast(value, dtype) for value in values])

    def _train_function(self, data: data_lib.Data, variables: list[tf.Variable]) -> Any:
        key = ("train", data.x_spec, data.y_spec, tuple(id(var) for var in variables))
        return self._cached(key, lambda: self._make_train_step(data, variables))

    def _make_train_step(self, data: data_lib.Data, variables: list[tf.Variable]) -> Any:
        model, loss_fn, rule = self.model, self.loss, self.update_rule

        def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                pred = model(x)
                loss = loss_fn(y, pred)
            gradients = tape.gradient(loss, variables)
            rule.apply(gradients, variables)
            return self._outputs(y, pred, loss)

        return tf.function(
            train_step,
            input_signature=[data.x_spec, data.y_spec],
            jit_compile=self.jit_compile,
        )

    def _make_eval_step(self, x_spec: tf.TensorSpec, y_spec: tf.TensorSpec) -> Any:
        def eval_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            pred = self.model(x)
            return self._outputs(y, pred, self.loss(y, pred))

        return tf.function(
            eval_step, input_signature=[x_spec, y_spec], jit_compile=self.jit_compile
        )

    def _make_predict(self, x_spec: tf.TensorSpec) -> Any:
        return tf.function(
            self.model.__call__, input_signature=[x_spec], jit_compile=self.jit_compile
        )

    def _evaluate(self, prepared: data_lib.Data) -> dict[str, float]:
        key = ("eval", prepared.x_spec, prepared.y_spec)
        fn = self._cached(key, lambda: self._make_eval_step(prepared.x_spec, prepared.y_spec))
        results, sizes = [], []
        for x_batch, y_batch, size in prepared.batches():
            results.append(fn(x_batch, y_batch))
            sizes.append(size if size is not None else tf.shape(x_batch)[0])
        if not results:
            raise ValueError("The evaluation data yielded no batches; the dataset is empty.")
        return self._mean_logs(results, sizes)

    # -- logs ------------------------------------------------------------

    def _names(self) -> list[str]:
        return ["loss", *self.metrics]

    def _logs(self, outputs: tf.Tensor) -> Logs:
        return dict(zip(self._names(), (float(x) for x in outputs.numpy()), strict=True))

    def _mean_logs(self, results: list[tf.Tensor], sizes: list[Any]) -> Logs:
        """Example-weighted means of per-batch logs (one host transfer)."""
        if len(results) == 1:  # full batch: the step's own values, not loss * n / n
            return self._logs(results[0])
        stacked = tf.stack(results)
        weights = tf.cast(tf.stack(sizes), stacked.dtype)
        means = tf.reduce_sum(stacked * weights[:, None], axis=0) / tf.reduce_sum(weights)
        return dict(zip(self._names(), (float(x) for x in means.numpy()), strict=True))
