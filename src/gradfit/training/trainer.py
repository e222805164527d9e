"""Trainer: the eager outer loop, a controller over a Task and the pieces that run it.

``fit`` checks every argument and input, builds the task, and then, per
epoch, hands the epoch to a runner (:mod:`gradfit.training.epoch`) that
calls the compiled many-steps loop (:mod:`gradfit.training.loops`) and
replays its per-step logs to the batch callbacks; it then validates
(:mod:`gradfit.training.evaluation`), gives the epoch's logs to the
callbacks and the History, and saves backups. Where the run stands lives
in one :class:`~gradfit.training.state.RunState` (``trainer.state``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from gradfit import _validation as v
from gradfit import data as data_lib
from gradfit.callbacks import BackupAndRestore, Callback, CallbackList, History, ProgressBar
from gradfit.callbacks.base import Logs, check_callbacks
from gradfit.checkpoint import saving
from gradfit.training import compile as compile_lib
from gradfit.training import step as step_lib
from gradfit.training.epoch import ArrayEpoch, DatasetEpoch, Run, StepSaves
from gradfit.training.evaluation import Evaluator
from gradfit.training.inputs import Inputs, require
from gradfit.training.nonfinite import NonFinitePolicy
from gradfit.training.objective import check_losses
from gradfit.training.replicated import Replicas
from gradfit.training.state import RunState
from gradfit.training.supervised import SupervisedTask, check_update_rule
from gradfit.training.task import Task


def _check_jit_compile(value: Any) -> bool | str:
    if value == "auto" and isinstance(value, str):
        return "auto"
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise (ValueError if isinstance(value, str) else TypeError)(
        f"`jit_compile` must be True, False or 'auto'. {v.received('jit_compile', value)}"
    )


def _make_task(
    task_or_model: Any, loss: Any, update_rule: Any, metrics: Any, weighted_metrics: Any
) -> Task:
    """The task to train: ``task_or_model`` itself, or a SupervisedTask of the model."""
    if not isinstance(task_or_model, Task):
        return SupervisedTask(
            task_or_model, loss, update_rule, metrics=metrics, weighted_metrics=weighted_metrics
        )
    given = {
        "loss": loss,
        "update_rule": update_rule,
        "metrics": metrics or None,
        "weighted_metrics": weighted_metrics or None,
    }
    for name, value in given.items():
        if value is not None:
            raise TypeError(
                f"`{name}` must not be given with a Task: the task's own step uses its own "
                f"losses, rules and metrics. {v.received(name, value)}"
            )
    return task_or_model


@functools.lru_cache(maxsize=64)
def _seed_state(seed: int, algorithm: Any) -> np.ndarray:
    """The generator state ``reset_from_seed(seed)`` sets, cached (computing it costs 0.4 ms)."""
    state = tf.random.Generator.from_seed(seed, alg=algorithm).state.numpy()
    state.flags.writeable = False
    return state


def _reseed(generator: tf.random.Generator, seed: int) -> None:
    """Sets ``generator`` to the state ``reset_from_seed(seed)`` gives."""
    generator.state.assign(_seed_state(seed, generator.algorithm), read_value=False)


def _columns(task: Task, names: list[str], callbacks: CallbackList, *, flag: bool) -> Any:
    """The step's log layout: the task's logs, ``grad_norm`` if a callback wants it, the flag."""
    wants_norm = any(cb.wants_grad_norm for cb in callbacks.callbacks)
    return step_lib.Columns(
        [*names, *(["grad_norm"] if wants_norm else [])], flag=flag, kinds=task.log_kinds()
    )


def _bind_backups(callbacks: CallbackList, history: History) -> list[BackupAndRestore]:
    """The fit's BackupAndRestore (at most one), given the callbacks and the History."""
    backups = [cb for cb in callbacks.callbacks if isinstance(cb, BackupAndRestore)]
    if len(backups) > 1:
        raise ValueError(
            "`callbacks` holds more than one BackupAndRestore; a fit resumes from one "
            f"backup. Received: {backups}"
        )
    for backup in backups:
        backup.bind(callbacks.callbacks, history)
    return backups


def _run_state(
    columns: step_lib.Columns, train: data_lib.Data, replicas: Replicas, task: Task
) -> RunState:
    """A fresh run's state: where a fit of these logs and data stands before its first step.

    A fit the replicas cannot run is refused first (:meth:`Replicas.check`).
    """
    replicas.check(columns, task)
    return RunState(
        writes_files=replicas.writes,
        step_log_width=columns.width,
        step_batch_size=train.batch_size if isinstance(train, data_lib.ArrayData) else None,
        steps_per_epoch=train.steps,
    )


def _example(functions: compile_lib.FunctionCache, spec: Any) -> Any:
    """An all-zero batch of ``spec`` (the task is built for it), cached."""
    return functions.get(("example", spec), lambda: data_lib.example_batch(spec))


def _start(
    trainer: Trainer,
    previous: RunState,
    callbacks: CallbackList,
    backups: list[BackupAndRestore],
    example: Any,
    seed: int | None,
) -> None:
    """The last checks of a fit, then its first changes: the task built, the generator seeded.

    A run refused here changes nothing: no callback has opened a file and
    the generator is not reseeded; a backup that does not match the
    variables the task has so far (a model's) is refused before the update
    rule is built, one that does not match its state right after. A refused
    run also gives the trainer back its ``previous`` run state.
    """
    try:
        callbacks.check_run()
        _build(trainer, example)
        for backup in backups:
            backup.check_layout()  # the rule's state, now that it exists
    except BaseException:
        trainer.state = previous
        raise
    if seed is not None:
        _reseed(trainer.generator, seed)
    trainer.replicas.agree(trainer.generator)  # (a multi-worker job shuffles as its chief)


def _build(trainer: Trainer, example: Any) -> None:
    """Builds the task for ``example`` (under the trainer's strategy's scope, if any)."""
    with trainer.replicas.scope(trainer.task):
        trainer.task.build(example)


def _part(name: str, check: Callable[[Any], Any]) -> Any:
    """A property for a part of a supervised task, checked by ``check`` when assigned."""

    def get(trainer: Trainer) -> Any:
        return getattr(trainer._supervised(name), name)

    def set_(trainer: Trainer, value: Any) -> None:
        setattr(trainer._supervised(name), name, check(value))

    return property(get, set_, doc=f"The supervised task's ``{name}``; assigning replaces it.")


class Trainer:
    """Fits a Task, or a model with a loss and an update rule.

    Args:
        task_or_model: A :class:`gradfit.Task`, or a :class:`gradfit.Model`
            or ``keras.Model`` (then ``Trainer(model, loss, update_rule,
            metrics=...)`` trains ``gf.SupervisedTask(model, loss,
            update_rule, metrics=...)``).
        loss: With a model: a :class:`gradfit.Loss`, a Keras loss or any
            ``callable(y_true, y_pred) -> scalar``; a dict of them keyed
            like ``y`` for a model of several outputs.
        update_rule: With a model: a :class:`gradfit.UpdateRule`; ``None``
            means ``SGD()``.
        metrics: With a model: :mod:`gradfit.metrics`, Keras metric
            objects, names (``"accuracy"``) or callables ``metric(y_true,
            y_pred) -> scalar`` (a Loss works), or a dict of them by name;
            their exact epoch values appear in the History. As in Keras,
            they ignore sample weights.
        weighted_metrics: With a model: metrics that weigh examples by the
            sample (or class) weights, as Keras's ``weighted_metrics``.
        callbacks: Callbacks used by every ``fit``.
        jit_compile: ``True`` compiles the training loop with XLA, ``False``
            does not. ``"auto"`` (the default): XLA where a cost model of the
            traced graph and the run's length says compiling pays and XLA
            compiles it faithfully (:class:`gradfit.training.compile.StepCost`).
        steps_per_execution: Training steps per call of the compiled loop;
            ``None`` (the default) runs a whole epoch per call, so a Python
            round trip is paid per epoch, not per step (shuffled in-memory
            data is copied into the epoch's order 16 MiB at a time, and a call
            runs at most one such block). Batch callbacks still see every
            step, replayed after the call with its true step number. A
            callback whose ``requires_every_step`` is true gets one step per
            call instead; a ``BackupAndRestore(save_every=n)`` ends calls
            at its saves.
        on_nonfinite: What a step whose logged values (or, for a
            :class:`gradfit.StepLogs`, gradients) hold NaN or infinity does;
            it is checked in-graph every step and such a step never leaves
            its changes in the task's variables. ``"raise"`` (the default)
            stops at that step and ``fit`` raises
            :class:`NonFiniteError` naming the epoch and step, every
            variable of the task holding its value after the last finite
            step. ``"skip"`` undoes the step, counts it in the History
            (``"nonfinite_steps"``; skipped steps are left out of the
            epoch's means) and raises after ``max_consecutive_nonfinite``
            skips in a row. ``"ignore"`` keeps every step unchecked.
        max_consecutive_nonfinite: With ``"skip"``, how many non-finite steps
            in a row make ``fit`` raise.
        strategy: ``MirroredStrategy``/``MultiWorkerMirroredStrategy``; ``None``: the scope's.

    Attributes:
        task: The task trained.
        state: Where the latest fit stands (:class:`gradfit.training.RunState`).
        generator: The shuffling order's source (checkpointed with the task).
        train_function: The compiled training loop of the latest fit.

    Example::

        trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.1))
        history = trainer.fit(x, y, epochs=10)
        history.history["loss"]
    """

    def __init__(
        self,
        task_or_model: Any,
        loss: Any = None,
        update_rule: Any = None,
        *,
        metrics: Any = (),
        weighted_metrics: Any = (),
        callbacks: Sequence[Callback] = (),
        jit_compile: bool | str = "auto",
        steps_per_execution: int | None = None,
        on_nonfinite: str = "raise",
        max_consecutive_nonfinite: int = 10,
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        self.replicas = Replicas(strategy)
        self.task = _make_task(task_or_model, loss, update_rule, metrics, weighted_metrics)
        self.callbacks = check_callbacks("callbacks", callbacks)
        self.jit_compile = self.replicas.jit(_check_jit_compile(jit_compile))
        self.steps_per_execution = v.optional_positive_int(
            "steps_per_execution", steps_per_execution
        )
        self.nonfinite = NonFinitePolicy(on_nonfinite, max_consecutive_nonfinite)
        with tf.init_scope():
            # The shuffling order's source: trainer state, so checkpoints can hold it.
            self.generator = tf.random.Generator.from_non_deterministic_state()
        self.state = RunState()
        self.history: History | None = None
        self.train_function: Any = None
        self.functions = compile_lib.FunctionCache()

    @property
    def model(self) -> Any:
        """The task's model (callbacks save, restore and record it); the task itself if none."""
        model = getattr(self.task, "model", None)
        return model if isinstance(model, tf.Module) else self.task

    update_rule = _part("update_rule", check_update_rule)
    loss = _part("loss", check_losses)
    metrics = _part("metrics", lambda metrics: metrics)  # (the task checks them)
    weighted_metrics = _part("weighted_metrics", lambda metrics: metrics)

    def _supervised(self, name: str) -> SupervisedTask:
        if not isinstance(self.task, SupervisedTask):
            raise TypeError(  # (a callback asking for one gets this message before training)
                f"`{name}` belongs to a SupervisedTask; this trainer's task is a "
                f"{type(self.task).__name__}."
            )
        return self.task

    @property
    def stop_training(self) -> bool:
        """Set it to ``True`` from a callback to end ``fit`` after the current epoch.

        (While a callback with ``requires_every_step`` is attached, right
        after the current step.)
        """
        return self.state.stop_training

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self.state.stop_training = bool(value)

    def _inputs(self) -> Inputs:
        """Every public entry point starts here: the scope checked, stale functions dropped."""
        self.replicas.check_scope()
        self.functions.owner(self.task.cache_key())
        return Inputs(self.task, self.functions, scope=self.replicas.scope)

    def checkpoint_items(self) -> dict[str, tf.Module]:
        """What checkpoints and backups of this trainer hold: the task's items and the generator."""
        return {**self.task.checkpoint_items(), "generator": self.generator}

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
        sample_weight: Any = None,
        class_weight: Any = None,
        validation_data: Any = None,
        callbacks: Sequence[Callback] = (),
    ) -> History:
        """Trains the task for ``epochs`` passes over the data.

        Every argument and input is checked before any variable changes.

        Args:
            x: Features (NumPy array, tensor or list; integers are cast to
                the task's float dtype), a dict, tuple or list of them for a
                model of several inputs, or a ``tf.data.Dataset`` of
                ``(x, y)`` or ``(x, y, sample_weight)`` batches (any
                elements, for a task of your own).
            y: Targets, likewise (a dict or tuple for several outputs);
                ``None`` when ``x`` is a dataset, or for a task that trains
                on features alone.
            epochs: Number of passes over the data.
            batch_size: Examples per step; ``None`` puts the whole data set
                in one batch (full-batch gradient descent, as in the TF2
                tutorial). Must be ``None`` for datasets.
            shuffle: Visit examples in a new random order every epoch
                (in-memory data only).
            seed: Seed of the shuffling order, for reproducible fits. A
                ``BackupAndRestore`` that restores a backup then sets the
                shuffling state to the saved one, overriding the seed.
            sample_weight: One weight per example (``[N]``): losses and
                metrics weight each example by it, as Keras ``fit`` does.
            class_weight: ``{class: weight}``: every example weighs its
                class's weight (classes not listed weigh 1.0); works with
                datasets too. Not together with ``sample_weight``.
            validation_data: ``(x_val, y_val)``, ``(x_val, y_val,
                sample_weight_val)`` or a dataset of batches; the
                task's ``test_step`` logs on it appear as ``val_*`` after
                every epoch.
            callbacks: Callbacks for this fit only, after the trainer's own.

        Returns:
            The :class:`~gradfit.callbacks.History` of the fit.
        """
        epochs = v.positive_int("epochs", epochs)
        shuffle = v.boolean("shuffle", shuffle)
        seed = v.optional_seed("seed", seed)
        extra = check_callbacks("callbacks", callbacks)
        inputs = self._inputs()
        train = inputs.prepare(
            x, y, batch_size, ("x", "y"), sample_weight=sample_weight, class_weight=class_weight
        )
        val = inputs.validation(validation_data, batch_size)
        example = _example(self.functions, train.batch_spec)
        if self.task.log_names() is None:  # its logs are found by tracing: built first
            _build(self, example)  # (so its own build runs before the callbacks' checks)
        names = inputs.train_names(train)
        callback_list, history = self._callbacks(extra)
        columns = _columns(self.task, names, callback_list, flag=self.nonfinite.checks)
        self._set_params(callback_list, epochs, train, val, columns)
        previous, self.state = self.state, _run_state(columns, train, self.replicas, self.task)
        backups = _bind_backups(callback_list, history)
        try:
            _start(self, previous, callback_list, backups, example, seed)
            runner = self._runner(train, names, columns, callback_list, backups, shuffle, epochs)
            self.history = history
            with self.replicas.reporting():  # (a lost worker of a multi-worker job, named)
                self._run_epochs(runner, callback_list, backups, epochs, val, columns)
        finally:
            for backup in backups:
                backup.release()
        return history

    def evaluate(
        self,
        x: Any,
        y: Any = None,
        *,
        batch_size: int | None = None,
        sample_weight: Any = None,
    ) -> dict[str, float]:
        """Returns the task's ``test_step`` logs on ``(x, y)``, averaged over the examples.

        Stateful (Keras) metrics are reset first.

        Args:
            x: Features (nested for several inputs), or a ``tf.data.Dataset``
                of ``(x, y)`` or ``(x, y, sample_weight)`` batches.
            y: Targets; ``None`` when ``x`` is a dataset.
            batch_size: Examples per batch; ``None`` means all at once.
            sample_weight: One weight per example, as in :meth:`fit`.
        """
        require(self.task, "test_step", "evaluate")
        data = self._inputs().prepare(x, y, batch_size, ("x", "y"), sample_weight=sample_weight)
        variables = self.task.trainable_variables
        jit = compile_lib.jit_for(self.jit_compile, data, variables, training=False)
        return Evaluator(self.task, self.functions).evaluate(data, jit)

    def predict(self, x: Any, *, batch_size: int | None = None) -> Any:
        """Returns the task's predictions for ``x`` as a NumPy array.

        A model of several outputs gives their structure (a dict or tuple of
        arrays).

        Args:
            x: Features, or a ``tf.data.Dataset`` of feature batches (or of
                ``(x, y)`` batches, whose targets are ignored).
            batch_size: Examples per batch; ``None`` means all at once.
        """
        require(self.task, "predict_step", "predict")
        data = self._inputs().prepare(x, None, batch_size, ("x", "y"), with_targets=False)
        variables = self.task.trainable_variables
        jit = compile_lib.jit_for(self.jit_compile, data, variables, training=False)
        return Evaluator(self.task, self.functions).predict(data, jit)

    def save(self, path: str | os.PathLike[str]) -> str:
        """Saves the task's state and the shuffling state to ``path``.

        Atomic; see :func:`gradfit.saving.save_trainer`. Returns ``path``.
        """
        return saving.save_trainer(self, path)

    def restore(self, path: str | os.PathLike[str]) -> None:
        """Restores :meth:`save`'s checkpoint; a fresh trainer is built first.

        Continuing to fit is then bitwise the same as never having stopped.
        See :func:`gradfit.saving.restore_trainer`.
        """
        saving.restore_trainer(self, path)

    # -- the run ---------------------------------------------------------

    def _callbacks(self, extra: list[Callback]) -> tuple[CallbackList, History]:
        history = History()
        chosen = [*self.callbacks, *extra]
        if not any(isinstance(cb, ProgressBar) for cb in chosen):
            chosen.append(ProgressBar())  # "auto": a bar when stderr is a terminal, else silent
        callback_list = CallbackList([*chosen, history])
        callback_list.set_trainer(self)
        return callback_list, history

    def _set_params(
        self,
        callbacks: CallbackList,
        epochs: int,
        train: data_lib.Data,
        val: data_lib.Data | None,
        columns: step_lib.Columns,
    ) -> None:
        names = [n for n in columns.names if n != "grad_norm"]
        if val is not None:
            val_names = Evaluator(self.task, self.functions).names(val.batch_spec)
            names += [f"val_{name}" for name in val_names]
        names += list(self.task.epoch_logs())
        if self.nonfinite.mode == "skip":
            names.append("nonfinite_steps")
        if "grad_norm" in columns.names:
            names.append("grad_norm")
        callbacks.set_params({"epochs": epochs, "steps": train.steps, "metrics": names})

    def _runner(
        self,
        train: data_lib.Data,
        names: list[str],
        columns: step_lib.Columns,
        callbacks: CallbackList,
        backups: list[BackupAndRestore],
        shuffle: bool,
        epochs: int,
    ) -> ArrayEpoch | DatasetEpoch:
        dtype = step_lib.log_dtype(self.task)
        every_step = any(cb.requires_every_step for cb in callbacks.callbacks)
        run = Run(
            self.task,
            self.functions,
            self.generator,
            columns,
            dtype,
            self.nonfinite,
            self.state,
            StepSaves(backups, self.state),
            every_step=every_step,
            loops=self.replicas.loops(columns, self.task),
        )
        step = step_lib.train_step(self.task, names, columns, dtype)
        per_call = 1 if every_step else self.steps_per_execution
        jit = compile_lib.jit_for(
            self.jit_compile, train, self.task.trainable_variables, epochs=epochs
        )
        if isinstance(train, data_lib.ArrayData):
            runner: ArrayEpoch | DatasetEpoch = ArrayEpoch(
                run, train, step, shuffle=shuffle, per_call=per_call, jit=jit
            )
        else:
            runner = DatasetEpoch(run, train, step, per_call=per_call, jit=jit)
        self.train_function = runner.loop
        return runner

    def _run_epochs(
        self,
        runner: ArrayEpoch | DatasetEpoch,
        callbacks: CallbackList,
        backups: list[BackupAndRestore],
        epochs: int,
        val: data_lib.Data | None,
        columns: step_lib.Columns,
    ) -> None:
        state, epoch_logs = self.state, {}
        saves = runner.run_info.saves
        callbacks.on_train_begin()
        # A restored backup: carry on where it stopped.
        resume = backups[0].resume() if backups else None
        first_epoch = 0 if resume is None else resume.epoch
        if resume is not None:
            epoch_logs = resume.logs
            state.steps_done = resume.steps_done
        val_jit = compile_lib.jit_for(
            self.jit_compile, val, self.task.trainable_variables, epochs=epochs, training=False
        )
        for epoch in range(first_epoch, epochs):
            state.epoch = epoch
            start, prior = 0, None
            if resume is not None and epoch == resume.epoch and resume.step:
                # Mid-epoch: replay the epoch's order from its start, skip the steps done.
                start, prior = resume.step, (resume.step_logs, resume.step_sizes)
                self.generator.state.assign(resume.generator_state, read_value=False)
            saves.begin_epoch(self.generator)
            if start:  # its on_epoch_begin ran before the backup was saved
                callbacks.on_epoch_resume(epoch, start)
            else:
                self.task.reset_metrics()
                callbacks.on_epoch_begin(epoch)
            logs, sizes = runner.run(callbacks, epoch, start, prior)
            epoch_logs = self._epoch_logs(logs, sizes, columns, val, val_jit)
            callbacks.on_epoch_end(epoch, epoch_logs)
            for backup in backups:  # after every callback and the History saw the epoch
                backup.save(epoch, steps_done=state.steps_done)
            if state.stop_training:
                break
        callbacks.on_train_end(epoch_logs)

    def _epoch_logs(
        self,
        logs: np.ndarray,
        sizes: np.ndarray,
        columns: step_lib.Columns,
        val: data_lib.Data | None,
        val_jit: compile_lib.Jit,
    ) -> Logs:
        epoch_logs = self.nonfinite.epoch_logs(logs, sizes, columns)
        if val is not None:
            evaluator = Evaluator(self.task, self.functions)
            val_logs = evaluator.evaluate(val, val_jit, name="validation_data")
            epoch_logs.update({f"val_{k}": value for k, value in val_logs.items()})
        epoch_logs.update(self.task.epoch_logs())
        return epoch_logs
