"""Trainer: fits a Model to data with a Loss and an UpdateRule.

The step (forward pass, loss, ``GradientTape``, ``UpdateRule.apply``) runs
inside one compiled function that executes ``steps_per_execution`` steps
per call (a whole epoch by default) over data already on the device,
slicing batches in-graph from a permutation drawn by the trainer's
``tf.random.Generator`` (see ``_loops``). The function is traced at most
once per fit, however many epochs run. The outer loop is eager: it calls
the compiled loop, replays the per-step logs to callbacks with their true
step numbers, validates, and hands the epoch's logs to callbacks.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _loops, saving
from gradfit import _validation as v
from gradfit import data as data_lib
from gradfit.callbacks import BackupAndRestore, Callback, CallbackList, History, ProgressBar
from gradfit.callbacks.base import Logs, check_callbacks
from gradfit.losses import check_loss, loss_name
from gradfit.models import Model
from gradfit.update_rules import SGD, UpdateRule

logger = logging.getLogger("gradfit")

AUTO_JIT_MIN_STEPS = 100
"""With ``jit_compile="auto"``, fits of fewer steps than this skip XLA.

XLA compilation costs about 0.05-0.1 s per function on a CPU (measured on
the 2-core development machine: the tutorial's step traces in 34 ms without
XLA and 99 ms with it); a fit of a few dozen steps cannot win that back, and
the tutorial itself (10 steps) would take 3x longer.
"""

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


_RESERVED = ("loss", "lr", "grad_norm", "nonfinite_steps")  # log names gradfit writes itself


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
        if key in named or key in _RESERVED or key.startswith("val_"):
            raise ValueError(
                f"`metrics` has a clashing name {key!r}; pass a dict to name metrics. "
                f"{v.received('metrics', metrics)}"
            )
        named[key] = metric
    return named


def _check_jit_compile(value: Any) -> bool | str:
    if value == "auto" and isinstance(value, str):
        return "auto"
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise (ValueError if isinstance(value, str) else TypeError)(
        f"`jit_compile` must be True, False or 'auto'. {v.received('jit_compile', value)}"
    )


@functools.lru_cache(maxsize=64)
def _seed_state(seed: int, algorithm: Any) -> np.ndarray:
    """The generator state ``reset_from_seed(seed)`` sets, cached (computing it costs 0.4 ms)."""
    state = tf.random.Generator.from_seed(seed, alg=algorithm).state.numpy()
    state.flags.writeable = False
    return state


class NonFiniteError(FloatingPointError):
    """A training step produced a NaN or infinite loss or gradient.

    The offending update was not applied. Attributes ``epoch`` and ``step``
    (from 0 within the epoch) say where it happened.
    """

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class _Columns:
    """What a training step returns: visible logs, then the optional non-finite flag."""

    def __init__(self, names: list[str], *, flag: bool) -> None:
        self.names = names  # loss, metrics..., maybe grad_norm
        self.flag = len(names) if flag else None  # index of the non-finite flag, if any

    @property
    def width(self) -> int:
        return len(self.names) + (self.flag is not None)


class Trainer:
    """Fits a model with a loss and an update rule.

    Args:
        model: A :class:`gradfit.Model`.
        loss: A :class:`gradfit.Loss` or any ``callable(y_true, y_pred) -> scalar``.
        update_rule: A :class:`gradfit.UpdateRule`; ``None`` means ``SGD()``.
        metrics: Callables ``metric(y_true, y_pred) -> scalar`` (a Loss works),
            or a dict of them by name; their epoch means appear in the History.
        callbacks: Callbacks used by every ``fit``.
        jit_compile: ``True`` compiles the training loop with XLA, ``False``
            does not. ``"auto"`` (the default) uses XLA for runs of at least
            ``AUTO_JIT_MIN_STEPS`` (100) steps, where compiling pays for
            itself, unless XLA cannot compile the graph faithfully (an op
            without an XLA kernel, or ``tf.debugging`` assertions XLA would
            drop); then it logs a note on the ``gradfit`` logger and runs
            without XLA.
        steps_per_execution: Training steps per call of the compiled loop;
            ``None`` (the default) runs a whole epoch per call, so a Python
            round trip is paid per epoch, not per step (shuffled in-memory
            data is copied into the epoch's order 16 MiB at a time, and a call
            runs at most one such block). Batch callbacks still see every
            step, replayed after the call with its true step number. A
            callback whose ``requires_every_step`` is true gets one step per
            call instead; a ``BackupAndRestore(save_every=n)`` ends calls
            at its saves.
        on_nonfinite: What a step whose loss or gradient holds NaN or
            infinity does; it is checked in-graph every step and such an
            update never reaches the variables. ``"raise"`` (the default)
            stops at that step and ``fit`` raises :class:`NonFiniteError`
            naming the epoch and step, the model holding its last finite
            values. ``"skip"`` skips the update, counts it in the History
            (``"nonfinite_steps"``; skipped steps are left out of the
            epoch's means) and raises after ``max_consecutive_nonfinite``
            skips in a row. ``"ignore"`` applies every update unchecked.
        max_consecutive_nonfinite: With ``"skip"``, how many non-finite steps
            in a row make ``fit`` raise.

    Attributes:
        stop_training: Set it to ``True`` from a callback to end ``fit`` after
            the current epoch (or, while a callback with
            ``requires_every_step`` is attached, right after the current step).
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
        jit_compile: bool | str = "auto",
        steps_per_execution: int | None = None,
        on_nonfinite: str = "raise",
        max_consecutive_nonfinite: int = 10,
    ) -> None:
        self.model = _check_model(model)
        self.loss = check_loss(loss)
        self.update_rule = _check_update_rule(update_rule)
        self.metrics = _check_metrics(metrics)
        self.callbacks = check_callbacks("callbacks", callbacks)
        self.jit_compile = _check_jit_compile(jit_compile)
        self.steps_per_execution = v.optional_positive_int(
            "steps_per_execution", steps_per_execution
        )
        if on_nonfinite not in ("raise", "skip", "ignore"):
            raise ValueError(
                "`on_nonfinite` must be 'raise', 'skip' or 'ignore'. "
                f"{v.received('on_nonfinite', on_nonfinite)}"
            )
        self.on_nonfinite = on_nonfinite
        self.max_consecutive_nonfinite = v.positive_int(
            "max_consecutive_nonfinite", max_consecutive_nonfinite
        )
        with tf.init_scope():
            # The shuffling order's source: trainer state, so checkpoints can hold it.
            self.generator = tf.random.Generator.from_non_deterministic_state()
        self.stop_training = False
        self.history: History | None = None
        self.train_function: Any = None
        self._functions: dict[Any, Any] = {}
        # Mid-epoch backups (BackupAndRestore(save_every=n)) during a fit:
        self._step_backups: list[BackupAndRestore] = []
        self._steps_done = 0  # steps trained in this run, across epochs and resumes
        self._epoch_generator_state: np.ndarray | None = None
        self._step_log_width = 0
        self._step_batch_size: int | None = None
        self._probed: dict[Any, int | None] = {}  # probed data specs -> predictions' width

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
            seed: Seed of the shuffling order, for reproducible fits. A
                ``BackupAndRestore`` that restores a backup then sets the
                shuffling state to the saved one, overriding the seed.
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
        if val is not None:
            self._probe(val, names=("validation_data[0]", "validation_data[1]"))
            unknown_length = isinstance(val, data_lib.DatasetData) and val.steps is None
            if unknown_length and not any(True for _ in val.dataset.take(1)):  # type: ignore[union-attr]
                raise ValueError(
                    "`validation_data` yielded no batches; the dataset is empty. "
                    f"Received: validation_data={validation_data}"
                )
        variables = self._trainable_variables()
        self.update_rule.build(variables)

        history = History()
        chosen = [*self.callbacks, *extra]
        if not any(isinstance(cb, ProgressBar) for cb in chosen):
            chosen.append(ProgressBar())  # "auto": a bar when stderr is a terminal, else silent
        callback_list = CallbackList([*chosen, history])
        callback_list.set_trainer(self)
        metric_names = ["loss", *self.metrics]
        if val is not None:
            metric_names += [f"val_{name}" for name in metric_names]
        metric_names.append("lr")
        if self.on_nonfinite == "skip":
            metric_names.append("nonfinite_steps")
        grad_norm = any(cb.wants_grad_norm for cb in callback_list.callbacks)
        if grad_norm:
            metric_names.append("grad_norm")
        callback_list.set_params({"epochs": epochs, "steps": train.steps, "metrics": metric_names})
        if seed is not None:
            self.generator.state.assign(
                _seed_state(seed, self.generator.algorithm), read_value=False
            )
        jit = self._jit_for(None if train.steps is None else epochs * train.steps)
        every_step = any(cb.requires_every_step for cb in callback_list.callbacks)
        self._every_step = every_step
        per_call = 1 if every_step else self.steps_per_execution
        columns = _Columns(
            [*self._names(), *(["grad_norm"] if grad_norm else [])],
            flag=self.on_nonfinite != "ignore",
        )
        run_epoch = (
            self._array_epoch(train, variables, shuffle, per_call, jit, columns)
            if isinstance(train, data_lib.ArrayData)
            else self._dataset_epoch(train, variables, per_call, jit, columns)
        )
        self._nonfinite_run = 0
        self.stop_training = False
        self.history = history
        epoch_logs: Logs = {}

        backups = [cb for cb in callback_list.callbacks if isinstance(cb, BackupAndRestore)]
        if len(backups) > 1:
            raise ValueError(
                "`callbacks` holds more than one BackupAndRestore; a fit resumes from one "
                f"backup. Received: {backups}"
            )
        for backup in backups:
            backup.bind(callback_list.callbacks, history)
        # A mid-epoch backup's logs and batch sizes must fit this fit's:
        self._step_log_width = columns.width
        self._step_batch_size = train.batch_size if isinstance(train, data_lib.ArrayData) else None
        # Backups saved every n steps: chunks of the loop end at those steps (see _chunk_end).
        self._step_backups = [b for b in backups if isinstance(b.save_every, int)]
        callback_list.on_train_begin()
        # A restored backup: carry on where it stopped.
        resume = backups[0].resume() if backups else None
        first_epoch = 0 if resume is None else resume.epoch
        if resume is not None:
            epoch_logs = resume.logs
        self._steps_done = 0 if resume is None else resume.steps_done
        for epoch in range(first_epoch, epochs):
            start, prior = 0, None
            if resume is not None and epoch == resume.epoch and resume.step:
                # Mid-epoch: replay the epoch's order from its start, skip the steps done.
                start, prior = resume.step, (resume.step_logs, resume.step_sizes)
                self.generator.state.assign(resume.generator_state, read_value=False)
            if self._step_backups:
                self._epoch_generator_state = self.generator.state.numpy().copy()
            if start:  # its on_epoch_begin ran before the backup was saved
                callback_list.on_epoch_resume(epoch, start)
            else:
                callback_list.on_epoch_begin(epoch)
            logs, sizes = run_epoch(callback_list, epoch, start, prior)
            epoch_logs = self._epoch_logs(logs, sizes, columns)
            if val is not None:
                val_logs = self._evaluate(val, calls=epochs, name="validation_data")
                epoch_logs.update({f"val_{k}": value for k, value in val_logs.items()})
            # The rate the next update will use (schedules compute it from `iterations`).
            epoch_logs["lr"] = float(self.update_rule.current_learning_rate())
            callback_list.on_epoch_end(epoch, epoch_logs)
            for backup in backups:  # after every callback and the History saw the epoch
                backup.save(epoch, steps_done=self._steps_done)
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
        return self._evaluate(data, calls=1)

    def predict(self, x: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Returns the model's predictions for ``x`` as a NumPy array.

        Args:
            x: Features, or a ``tf.data.Dataset`` of feature batches (or of
                ``(x, y)`` batches, whose targets are ignored).
            batch_size: Examples per batch; ``None`` means all at once.
        """
        data = self._prepare(x, None, batch_size, ("x", "y"), with_targets=False)
        self._probe(data)
        x_spec = data.x_spec  # the cached closure must not hold `data`
        fn = self._compiled(
            ("predict", x_spec, id(self.model)),
            lambda jit: self._make_predict(x_spec, jit),
            "prediction step",
            self._jit_for(data.steps),
        )
        outputs = [fn(x_batch) for x_batch, _, _ in data.batches()]
        if not outputs:
            raise ValueError("`x` yielded no batches; the dataset is empty.")
        return np.concatenate([o.numpy() for o in outputs], axis=0)

    def save(self, path: str | os.PathLike[str]) -> str:
        """Saves the model, the update rule's state and the shuffling state to ``path``.

        Atomic; see :func:`gradfit.saving.save_trainer`. Returns ``path``.
        """
        return saving.save_trainer(self, path)

    def restore(self, path: str | os.PathLike[str]) -> None:
        """Restores :meth:`save`'s checkpoint; a fresh trainer is built first.

        Continuing to fit is then bitwise the same as never having stopped.
        See :func:`gradfit.saving.restore_trainer`.
        """
        saving.restore_trainer(self, path)

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

    def _probe(self, prepared: data_lib.Data, names: tuple[str, str] = ("x", "y")) -> None:
        """Runs the model (and loss) eagerly on a few all-zero examples.

        Turns a mismatch between the data and the model or loss into a clear
        error before anything is traced or any variable changes.
        """
        x_spec, y_spec = prepared.x_spec, prepared.y_spec
        key = (x_spec, y_spec, self._identity())
        if key in self._probed:  # this model, loss and metrics took such data before
            self._check_targets(prepared, names, self._probed[key])
            return
        x0, y0 = self._example_batch(prepared)
        try:
            pred = self.model(x0)
        except Exception as err:
            raise ValueError(
                f"The model cannot be called on examples of `{names[0]}` (per-example shape "
                f"{tuple(x_spec.shape[1:])}, dtype {x_spec.dtype.name}): {err}"
            ) from err
        num_outputs = pred.shape[-1] if pred.shape.rank else None
        if y_spec is None or y0 is None:
            self._probed[key] = num_outputs
            return
        self._check_targets(prepared, names, num_outputs)
        for name, fn in (("loss", self.loss), *self.metrics.items()):
            arg = "loss" if name == "loss" else "metrics"
            try:
                value = fn(y0, pred)
            except Exception as err:
                raise ValueError(
                    f"`{arg}` ({loss_name(fn)}) failed on `{names[1]}` of per-example shape "
                    f"{tuple(y_spec.shape[1:])} (dtype {y_spec.dtype.name}) and predictions of "
                    f"per-example shape {tuple(pred.shape[1:])}: {err}"
                ) from err
            value = tf.convert_to_tensor(value)
            if value.shape.rank != 0 or not (value.dtype.is_floating):
                raise ValueError(
                    f"`{arg}` ({loss_name(fn)}) must return a floating-point scalar; it returned "
                    f"shape {value.shape} and dtype {value.dtype.name}."
                )
        self._probed[key] = num_outputs

    def _check_targets(
        self, prepared: data_lib.Data, names: tuple[str, str], num_outputs: int | None
    ) -> None:
        """Lets the loss reject in-memory targets it can never accept (labels out of range)."""
        check = getattr(self.loss, "check_targets", None)
        if isinstance(prepared, data_lib.ArrayData) and prepared.y is not None and callable(check):
            check(names[1], prepared.y, num_outputs)

    def _example_batch(self, prepared: data_lib.Data) -> tuple[tf.Tensor, tf.Tensor | None]:
        """All-zero ``(x, y)`` batches shaped like the data, with static shapes.

        Unknown feature sizes come from the built model (else 1). The number
        of examples is one no per-example dimension has, so a mismatch between
        the predictions' and the targets' shapes cannot broadcast by luck.
        """
        x_spec, y_spec = prepared.x_spec, prepared.y_spec
        built = self.model.input_shape
        x_dims = [
            d if d is not None else (built[i] if built and built[i] is not None else 1)
            for i, d in enumerate(x_spec.shape[1:])
        ]
        y_dims = [d or 1 for d in (y_spec.shape[1:] if y_spec is not None else [])]
        n = next(k for k in itertools.count(2) if k not in (*x_dims, *y_dims))
        y0 = None if y_spec is None else tf.zeros([n, *y_dims], y_spec.dtype)
        return tf.zeros([n, *x_dims], x_spec.dtype), y0

    def _identity(self) -> tuple[int, ...]:
        """Identifies the model, loss, update rule and metrics compiled functions use.

        Part of every cache key, so that assigning a new ``update_rule``, ``loss``
        or ``metrics`` to the trainer builds new functions instead of silently
        reusing ones that captured the old objects.
        """
        return (
            id(self.model),
            id(self.loss),
            id(self.update_rule),
            *(id(metric) for metric in self.metrics.values()),
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

    def _compiled(
        self, key: Any, make: Callable[[bool], Any], name: str, jit: bool | str | None = None
    ) -> _loops.Compiled:
        jit = self.jit_compile if jit is None else jit
        return self._cached((*key, jit), lambda: _loops.Compiled(make, jit, name))

    def _jit_for(self, steps: int | None) -> bool | str:
        """The jit mode for a run of ``steps`` steps: "auto" skips XLA for short runs."""
        if self.jit_compile == "auto" and steps is not None and steps < AUTO_JIT_MIN_STEPS:
            return False
        return self.jit_compile

    def _log_dtype(self) -> tf.DType:
        return tf.float64 if self.model.dtype == tf.float64 else tf.float32

    def _outputs(self, y: tf.Tensor, pred: tf.Tensor, loss: tf.Tensor) -> list[tf.Tensor]:
        dtype = self._log_dtype()
        values = [loss] + [metric(y, pred) for metric in self.metrics.values()]
        return [tf.cast(value, dtype) for value in values]

    def _step_function(
        self, variables: list[tf.Variable], columns: _Columns, *, guarded: bool = True
    ) -> _loops.Step:
        """The training step; with a flag column, it marks non-finite steps.

        ``guarded`` steps apply the update under ``tf.cond`` on the finiteness
        check. Unguarded ones apply it regardless and only flag it: the
        in-memory loop stops after a flagged step and the host rolls the state
        back (see ``_array_epoch``), which keeps the XLA loop as fast as an
        unchecked one.
        """
        model, loss_fn, rule = self.model, self.loss, self.update_rule
        dtype = self._log_dtype()
        with_norm = "grad_norm" in columns.names

        def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                pred = model(x)
                loss = loss_fn(y, pred)
            gradients = tape.gradient(loss, variables)
            outputs = self._outputs(y, pred, loss)
            present = [
                g.values if isinstance(g, tf.IndexedSlices) else g
                for g in gradients
                if g is not None
            ]
            if with_norm:
                outputs.append(tf.cast(tf.linalg.global_norm(present), dtype))
            if columns.flag is None:
                rule.apply(gradients, variables)
                return tf.stack(outputs)
            finite = tf.math.is_finite(loss)
            for g in present:
                finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
            if not guarded:
                rule.apply(gradients, variables)
                outputs.append(tf.cast(tf.logical_not(finite), dtype))
                return tf.stack(outputs)

            def update() -> tf.Tensor:
                rule.apply(gradients, variables)
                return tf.constant(True)

            # A non-finite loss or gradient never reaches the variables.
            tf.cond(finite, update, lambda: tf.constant(False))
            outputs.append(tf.cast(tf.logical_not(finite), dtype))
            return tf.stack(outputs)

        return train_step

    def _replay(
        self,
        callbacks: CallbackList,
        first: int,
        rows: np.ndarray,
        columns: _Columns,
        *,
        begin: bool = True,
    ) -> None:
        """Hands each step's logs to the batch hooks, with the step's own number.

        ``begin=False`` when ``on_train_batch_begin`` already ran before the
        step (one step per call, for callbacks that require every step).
        """
        names = columns.names
        for i, row in enumerate(rows):
            if begin:
                callbacks.on_train_batch_begin(first + i)
            logs = dict(zip(names, map(float, row[: len(names)]), strict=True))
            callbacks.on_train_batch_end(first + i, logs)

    def _state(self) -> list[Any]:
        """Every variable a training step may change: the model's and the rule's."""
        found: list[Any] = [*self.model.variables, *self.update_rule.variables]
        for module in (self.update_rule, *self.update_rule.submodules):
            optimizer = getattr(module, "optimizer", None)  # a wrapped Keras optimizer
            found.extend(getattr(optimizer, "variables", ()))
        unique = {id(var): var for var in found}
        return list(unique.values())

    def _check_run(self, epoch: int, step: int, run: int, columns: _Columns) -> None:
        """Raises NonFiniteError when the run of non-finite steps reached the limit."""
        self._nonfinite_run = run
        if columns.flag is None:
            return
        if self.on_nonfinite == "raise" and run >= 1:
            raise NonFiniteError(
                f"The loss or a gradient was NaN or infinite at epoch {epoch}, step {step}; "
                "that update was not applied, and the model holds the values it had before "
                "that step. "
                "Pass on_nonfinite='skip' to skip such steps.",
                epoch=epoch,
                step=step,
            )
        if self.on_nonfinite == "skip" and run >= self.max_consecutive_nonfinite:
            raise NonFiniteError(
                f"{run} training steps in a row had a NaN or infinite loss or gradient "
                f"(the last at epoch {epoch}, step {step}); their updates were skipped. "
                f"Stopping after max_consecutive_nonfinite={self.max_consecutive_nonfinite}.",
                epoch=epoch,
                step=step,
            )

    def _limit(self) -> int:
        return 1 if self.on_nonfinite == "raise" else self.max_consecutive_nonfinite

    def _chunk_end(self, pos: int, end: int) -> int:
        """Where a chunk of steps from epoch step ``pos`` ends: ``end``, or at a step save."""
        if not self._step_backups:
            return end
        done = self._steps_done
        gap = min(int(b.save_every) - done % int(b.save_every) for b in self._step_backups)
        return min(end, pos + gap)

    def _step_save(
        self,
        epoch: int,
        step: int,
        total: int | None,
        logs: list[np.ndarray],
        sizes: list[np.ndarray] | np.ndarray,
    ) -> None:
        """Saves the step backups due after ``step`` steps of ``epoch`` (not at its end).

        ``logs`` and ``sizes`` hold the epoch's step logs and batch sizes so far.
        """
        if not self._step_backups or (total is not None and step >= total):
            return
        due = [b for b in self._step_backups if self._steps_done % int(b.save_every) == 0]
        epoch_state = self._epoch_generator_state
        if not due or epoch_state is None:  # (the state is taken when such an epoch begins)
            return
        rows = np.concatenate(logs)
        batch_sizes = sizes[: len(rows)] if isinstance(sizes, np.ndarray) else np.concatenate(sizes)
        for backup in due:
            backup.save_steps(
                epoch,
                step,
                rows,
                batch_sizes,
                generator_state=epoch_state,
                steps_done=self._steps_done,
            )

    def _array_epoch(
        self,
        data: data_lib.ArrayData,
        variables: list[tf.Variable],
        shuffle: bool,
        per_call: int | None,
        jit: bool | str,
        columns: _Columns,
    ) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
        """Returns ``run(callbacks, epoch, start, prior) -> (logs[steps, k], sizes[steps])``.

        ``run`` trains one epoch from its step ``start`` (0, or the steps a
        restored backup had done, whose logs and batch sizes are ``prior``)
        and returns the whole epoch's step logs and batch sizes.

        Shuffled epochs copy their rows into the epoch's order a block of at
        most ``_loops.BLOCK_BYTES`` at a time, then train on the block in
        order; unshuffled ones train on the data as it is.
        """
        n, size = data.num_examples, data.batch_size
        full, rest = divmod(n, size)  # full >= 1: the batch size is at most n
        shuffled = shuffle and data.steps > 1
        y = data.y
        assert y is not None  # fit always prepares targets
        row_bytes = sum(
            int(np.prod(t.shape[1:], dtype=np.int64)) * t.dtype.size for t in (data.x, y)
        )
        # Small shuffled batches are copied into the epoch's order a block at a time, big
        # ones gathered inside the loop (see _loops.GATHER_IN_LOOP_BYTES).
        in_loop = shuffled and size * row_bytes >= _loops.GATHER_IN_LOOP_BYTES
        block = _loops.block_steps(size, row_bytes, full) if shuffled and not in_loop else full
        per_call = min(per_call or block, block)
        step = self._step_function(variables, columns, guarded=False)
        dtype, flag = self._log_dtype(), columns.flag
        # With a non-finite check, each call also returns the values every variable a step
        # may change had before the call, to roll back to (see `run`).
        # (The rule's and optimizer's state follows from the trainable variables it was
        # built for, so it is looked up once per set of them: a walk of the modules.)
        state = (
            self._cached(
                ("state", self._identity(), tuple(id(var) for var in variables)), self._state
            )
            if flag is not None
            else []
        )
        key = (
            "train",
            in_loop,
            data.x.shape,
            data.x.dtype,
            data.y_spec,
            size,
            shuffled,
            tuple(columns.names),
            flag,
            per_call,
            block,
            self._identity(),
            tuple(id(var) for var in variables),
            tuple(id(var) for var in state),
        )

        def keeping_state(fn: Callable[..., tf.Tensor]) -> Callable[..., Any]:
            """``fn`` returning ``(logs, state before the call)`` (empty without a check)."""

            def wrapped(*args: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
                before = [tf.identity(var) for var in state]
                with tf.control_dependencies(before):
                    return fn(*args), before

            return wrapped

        loop = self._compiled(
            (*key, "loop"),
            lambda jit: tf.function(
                keeping_state(
                    # logs rows per call: the most steps one call runs
                    _loops.array_loop(step, size, per_call, columns.width, dtype, gather=in_loop)
                ),
                jit_compile=jit,
            ),
            "training loop",
            jit,
        )
        gather = None
        if shuffled and not in_loop:
            gather = self._compiled(
                (*key, "gather"),
                lambda jit: tf.function(_loops.gather_block(size, block), jit_compile=jit),
                "gather of shuffled batches",
                jit,
            )
        last = None
        if rest:
            last = self._compiled(
                (*key, "last"),
                lambda jit: tf.function(
                    keeping_state(
                        _loops.array_last_step(step, full * size, rest, shuffled=shuffled)
                    ),
                    jit_compile=jit,
                ),
                "training step of the last, smaller batch",
                jit,
            )
        self.train_function = loop
        generator = self.generator

        def permutation() -> tf.Tensor:
            # O(n) shuffle seeded from the generator (argsort of uniforms costs 8x more).
            seed = generator.make_seeds(1)[:, 0]
            return tf.random.experimental.stateless_shuffle(tf.range(n), seed=seed)

        permute = self._cached(("permute", n, id(generator)), lambda: tf.function(permutation))
        no_order = tf.zeros([0], tf.int32)
        sizes = np.full(full + (1 if rest else 0), size, np.float64)
        sizes[full:] = rest
        every_step = self._every_step
        # Concrete functions, kept across fits: a quicker call than the tf.function's.
        calls: dict[str, Any] = self._cached((*key, "concrete", jit, id(generator)), dict)

        def call(name: str, compiled: Any, *args: Any) -> Any:
            fn = calls.get(name)
            if fn is None:
                fn = calls[name] = compiled.get_concrete_function(*args)
            return fn(*args)

        def train(xs: tf.Tensor, ys: tf.Tensor, rows: tf.Tensor, first: int, count: int) -> Any:
            """Steps ``first...first + count - 1`` of the block ``(xs, ys)``: (logs, saved)."""
            return call("loop", loop, xs, ys, rows, tf.constant(first), tf.constant(count))

        def roll_back(saved: list[tf.Tensor]) -> None:
            for var, value in zip(state, saved, strict=True):
                var.assign(value)  # (Keras optimizers' variables take no read_value)

        def run(
            callbacks: CallbackList,
            epoch: int,
            start: int = 0,
            prior: tuple[np.ndarray, np.ndarray] | None = None,
        ) -> tuple[np.ndarray, np.ndarray]:
            order = call("permute", permute) if shuffled else no_order
            rows_order = order if in_loop else no_order  # what the loop gathers rows by
            replay = callbacks.wants_batch_logs
            chunks: list[np.ndarray] = [] if prior is None else [prior[0]]

            def record(first: int, rows: np.ndarray) -> None:
                chunks.append(rows)
                self._steps_done += len(rows)
                if replay:
                    self._replay(callbacks, first, rows, columns, begin=not every_step)

            pos, stopped, loaded = start, False, None
            xs, ys = data.x, y
            while pos < full:
                # A chunk: at most per_call steps, inside one block, ending at any step save.
                block_first = pos - pos % block
                begin = min(block_first, full - block)  # the last block ends with the epoch
                if gather is not None and loaded != begin:
                    xs, ys = call("gather", gather, data.x, y, order, tf.constant(begin))
                    loaded = begin
                end = self._chunk_end(pos, min(pos + per_call, block_first + block, full))
                while pos < end:
                    if every_step:
                        callbacks.on_train_batch_begin(pos)
                    logs, saved = train(xs, ys, rows_order, pos - begin, end - pos)
                    rows = logs.numpy()[: end - pos]
                    flagged: Any = np.flatnonzero(rows[:, flag] > 0) if flag is not None else ()
                    if len(flagged) == 0:
                        record(pos, rows)
                        self._nonfinite_run = 0
                        pos += len(rows)
                        continue
                    # A non-finite step's update was applied (and the steps after it ran on):
                    # roll back and replay the finite steps before it (deterministic).
                    done = int(flagged[0]) + 1
                    rows = rows[:done]
                    roll_back(saved)
                    if done > 1:
                        train(xs, ys, rows_order, pos - begin, done - 1)
                    record(pos, rows)
                    run = (self._nonfinite_run if done == 1 else 0) + 1
                    self._check_run(epoch, pos + done - 1, run, columns)
                    pos += done
                if every_step and self.stop_training:
                    stopped = True  # one step per call: stop right after the step that asked
                    break
                self._step_save(epoch, pos, len(sizes), chunks, sizes)
            if not stopped and last is not None:
                if every_step:
                    callbacks.on_train_batch_begin(full)
                row_t, saved = call("last", last, data.x, y, order)
                row = row_t.numpy()
                record(full, row[None])
                if flag is not None and row[flag] > 0:
                    roll_back(saved)
                    self._check_run(epoch, full, self._nonfinite_run + 1, columns)
                else:
                    self._nonfinite_run = 0
            logs_np = np.concatenate(chunks)
            return logs_np, sizes[: len(logs_np)]

        return run

    def _dataset_epoch(
        self,
        data: data_lib.DatasetData,
        variables: list[tf.Variable],
        per_call: int | None,
        jit: bool | str,
        columns: _Columns,
    ) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
        """Returns ``run(callbacks, epoch, start, prior)`` for one pass; see ``_array_epoch``."""
        step = self._step_function(variables, columns)
        dtype, flag, limit = self._log_dtype(), columns.flag, self._limit()
        known = data.steps
        per_call = per_call or known or 2**31 - 1
        x_spec, y_spec = data.x_spec, data.y_spec  # closures below must not hold `data`
        key = (
            "train-dataset",
            x_spec,
            y_spec,
            tuple(columns.names),
            flag,
            limit,
            self._identity(),
            tuple(id(var) for var in variables),
        )
        inner = self._compiled(
            (*key, "step"),
            lambda jit: tf.function(step, input_signature=[x_spec, y_spec], jit_compile=jit),
            "training step",
            jit,
        )
        if inner.pending:
            # Settle jit_compile="auto" before the loop consumes the iterator. XLA needs
            # static shapes to lower a graph, so check a throwaway copy of the step on a
            # small batch shaped like the data.
            probe = tf.function(step, jit_compile=True)
            inner.settle(_loops.xla_obstacle(probe, *self._example_batch(data)))
        loop = self._cached(
            (*key, "loop", inner.jit_compile),
            lambda: tf.function(
                _loops.dataset_loop(inner.function, columns.width, dtype, flag=flag, limit=limit)
            ),
        )
        self.train_function = loop
        every_step = self._every_step
        dataset = data.dataset

        def run(
            callbacks: CallbackList,
            epoch: int,
            start: int = 0,
            prior: tuple[np.ndarray, np.ndarray] | None = None,
        ) -> tuple[np.ndarray, np.ndarray]:
            # A resumed epoch skips the batches it had done (same order for a dataset that
            # does not reshuffle itself; see BackupAndRestore).
            iterator = iter(dataset.skip(start) if start else dataset)
            replay = callbacks.wants_batch_logs
            chunks: list[np.ndarray] = [] if prior is None else [prior[0]]
            sizes: list[np.ndarray] = [] if prior is None else [prior[1]]
            done = start
            while known is None or done < known:
                if every_step:  # (for a dataset of unknown length, also before its end)
                    callbacks.on_train_batch_begin(done)
                count = self._chunk_end(done, done + per_call) - done
                logs, batch_sizes, run_t, exhausted = loop(
                    iterator, tf.constant(count), tf.constant(self._nonfinite_run)
                )
                rows = logs.numpy()
                if len(rows):
                    chunks.append(rows)
                    sizes.append(batch_sizes.numpy().astype(np.float64))
                    self._steps_done += len(rows)
                    if replay:
                        self._replay(callbacks, done, rows, columns, begin=not every_step)
                done += len(rows)
                self._check_run(epoch, done - 1, int(run_t), columns)
                if bool(exhausted) or (every_step and self.stop_training):
                    break
                if len(rows):
                    self._step_save(epoch, done, known, chunks, sizes)
            if not chunks:
                raise ValueError("`x` yielded no batches; the dataset is empty.")
            return np.concatenate(chunks), np.concatenate(sizes)

        return run

    def _make_eval_step(self, x_spec: tf.TensorSpec, y_spec: tf.TensorSpec, jit: bool) -> Any:
        def eval_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            pred = self.model(x)
            return tf.stack(self._outputs(y, pred, self.loss(y, pred)))

        return tf.function(eval_step, input_signature=[x_spec, y_spec], jit_compile=jit)

    def _make_predict(self, x_spec: tf.TensorSpec, jit: bool) -> Any:
        return tf.function(self.model.__call__, input_signature=[x_spec], jit_compile=jit)

    def _evaluate(
        self, prepared: data_lib.Data, *, calls: int, name: str = "x"
    ) -> dict[str, float]:
        x_spec, y_spec = prepared.x_spec, prepared.y_spec
        steps = None if prepared.steps is None else prepared.steps * calls
        if isinstance(prepared, data_lib.ArrayData) and prepared.y is not None:
            return self._evaluate_arrays(prepared, prepared.y, self._jit_for(steps))
        fn = self._compiled(
            ("eval", x_spec, y_spec, self._identity()),
            lambda jit: self._make_eval_step(x_spec, y_spec, jit),
            "evaluation step",
            self._jit_for(steps),
        )
        results, sizes = [], []
        for x_batch, y_batch, size in prepared.batches():
            results.append(fn(x_batch, y_batch))
            sizes.append(size if size is not None else tf.shape(x_batch)[0])
        if not results:
            raise ValueError(f"`{name}` yielded no batches; the dataset is empty.")
        logs = tf.stack(results).numpy()
        return self._weighted_mean(logs, np.array([int(s) for s in sizes], np.float64))

    def _evaluate_arrays(
        self, data: data_lib.ArrayData, y: tf.Tensor, jit: bool | str
    ) -> dict[str, float]:
        """Loss and metrics on in-memory data: one call runs all full batches.

        The loop takes any number of examples (no retracing for a new data
        size); its step, for a batch of exactly ``batch_size`` examples, is
        compiled on its own (with XLA when asked). A ragged last batch is one
        more call of the per-batch evaluation step.
        """
        n, size = data.num_examples, data.batch_size
        full, rest = divmod(n, size)  # full >= 1: the batch size is at most n
        model, loss_fn, dtype = self.model, self.loss, self._log_dtype()
        width = 1 + len(self.metrics)
        x_spec, y_spec = data.x_spec, tf.TensorSpec([None, *y.shape[1:]], y.dtype)
        batch_x = tf.TensorSpec([size, *x_spec.shape[1:]], x_spec.dtype)
        batch_y = tf.TensorSpec([size, *y_spec.shape[1:]], y_spec.dtype)

        def eval_step(xb: tf.Tensor, yb: tf.Tensor) -> tf.Tensor:
            pred = model(xb)
            return tf.stack(self._outputs(yb, pred, loss_fn(yb, pred)))

        key = ("eval-arrays", x_spec, y_spec, size, self._identity())
        step = self._compiled(
            (*key, "step"),
            lambda jit: tf.function(eval_step, input_signature=[batch_x, batch_y], jit_compile=jit),
            "evaluation step",
            jit,
        )
        step.resolve(tf.zeros(batch_x.shape, batch_x.dtype), tf.zeros(batch_y.shape, batch_y.dtype))
        inner = step.function
        loop = self._cached(
            (*key, "loop", step.jit_compile),
            lambda: tf.function(
                _loops.eval_loop(inner, size, width, dtype), input_signature=[x_spec, y_spec]
            ),
        )
        logs = [loop(data.x, y).numpy()]
        sizes = np.full(full + (1 if rest else 0), size, np.float64)
        if rest:
            sizes[full] = rest
            last = self._compiled(
                ("eval", x_spec, y_spec, self._identity()),
                lambda jit: self._make_eval_step(x_spec, y_spec, jit),
                "evaluation step",
                jit,
            )
            logs.append(last(data.x[full * size :], y[full * size :]).numpy()[None])
        return self._weighted_mean(np.concatenate(logs), sizes)

    # -- logs ------------------------------------------------------------

    def _names(self) -> list[str]:
        return ["loss", *self.metrics]

    def _epoch_logs(self, logs: np.ndarray, sizes: np.ndarray, columns: _Columns) -> Logs:
        """The epoch's means of the step logs, leaving out skipped (non-finite) steps."""
        width = len(columns.names)
        if columns.flag is None:
            return self._weighted_mean(logs[:, :width], sizes, columns.names)
        skipped = logs[:, columns.flag] > 0
        kept = ~skipped
        if kept.any():
            means = self._weighted_mean(logs[kept, :width], sizes[kept], columns.names)
        else:
            means = dict.fromkeys(columns.names, float("nan"))
        if self.on_nonfinite == "skip":
            means["nonfinite_steps"] = float(skipped.sum())
        return means

    def _weighted_mean(
        self, logs: np.ndarray, sizes: np.ndarray, names: list[str] | None = None
    ) -> Logs:
        """Example-weighted means of per-step logs, in float64.

        For a single full batch this is the step's own value exactly
        (``v * n / n`` is exact in float64 for a float32 ``v``).
        """
        means = (logs.astype(np.float64) * sizes[:, None]).sum(axis=0) / sizes.sum()
        return dict(zip(names or self._names(), (float(m) for m in means), strict=True))
