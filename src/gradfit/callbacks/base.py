"""Callback: no-op hooks the Trainer's eager outer loop calls; CallbackList fans them out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gradfit import _validation as v

if TYPE_CHECKING:
    from gradfit.training.trainer import Trainer

Logs = dict[str, float]


class Callback:
    """Base class of callbacks: override only the hooks you need.

    Hooks run in the eager outer loop, never inside the compiled step. A
    callback reaches the trainer as ``self.trainer`` (and so the model as
    ``self.trainer.model``) and may stop training with
    ``self.trainer.stop_training = True``. ``self.params`` holds
    ``epochs``, ``steps`` (batches per epoch, or ``None``) and ``metrics``
    (the names the epoch logs will carry).

    Logs hold Python floats: batch logs the step's ``loss`` and metrics;
    epoch logs their means over the epoch's examples, plus ``val_*`` entries
    when there is validation data.
    """

    requires_every_step: bool = False
    """Set to ``True`` in a callback that must act between individual steps.

    By default the Trainer runs many steps per compiled call and replays
    their logs to the batch hooks afterwards; with this flag set on any
    callback, ``fit`` runs one step per call, so each batch hook runs before
    the next step starts.
    """

    wants_grad_norm: bool = False
    """Set to ``True`` in a callback that reads ``"grad_norm"`` from the logs.

    The training step then also computes the global norm of the gradients
    (``tf.linalg.global_norm``), logged per step and as the epoch's mean.
    """

    writes_files: bool = False
    """``True`` in a callback that writes files or prints: on a multi-worker job's
    workers other than the chief (``trainer.state.writes_files`` false) none
    of its hooks is called.
    """

    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self.params: dict[str, Any] = {}

    def set_trainer(self, trainer: Trainer) -> None:
        """Attaches the callback to ``trainer`` (done by ``fit``)."""
        self.trainer = trainer

    def set_params(self, params: dict[str, Any]) -> None:
        """Receives the run's parameters (done by ``fit``)."""
        self.params = params

    def check_run(self) -> None:
        """Called by ``fit`` before anything changes: raise here to refuse the run.

        It runs after ``set_trainer`` and ``set_params``, before the task is
        built, the shuffling generator reseeded, a backup restored or any
        ``on_train_begin``: a callback checks here the paths it will write
        and whatever else would make it fail later, so that a refused run
        leaves every variable and file as it was. Raise a ``ValueError`` or
        ``TypeError`` naming the argument at fault.
        """

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Called once, before the first epoch."""

    def on_train_end(self, logs: Logs | None = None) -> None:
        """Called once, after the last epoch, with the last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        """Called at the start of epoch ``epoch`` (from 0)."""

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Called at the end of epoch ``epoch`` with the epoch's logs."""

    def on_epoch_resume(self, epoch: int, step: int, logs: Logs | None = None) -> None:
        """Called instead of ``on_epoch_begin`` for an epoch resumed ``step`` steps in.

        A ``BackupAndRestore`` saved mid-epoch: the epoch's ``on_epoch_begin``
        already ran in the process that saved it, and its effects (a learning
        rate set, a state reset) are in the restored state, so it does not run
        again. Override this to set up per-epoch things that are not saved
        (a progress bar, a clock).
        """

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        """Called before training step ``batch`` (from 0 in each epoch)."""

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        """Called after training step ``batch`` with that step's logs."""


def overrides(callback: Callback, hook: str) -> bool:
    """Whether ``callback`` implements ``hook`` (a no-op base hook costs nothing to skip)."""
    if hook in vars(callback):  # installed on the instance, as LambdaCallback does
        return True
    return getattr(type(callback), hook) is not getattr(Callback, hook)


def check_callbacks(name: str, callbacks: Any) -> list[Callback]:
    """Checks that ``callbacks`` is an iterable of :class:`Callback` instances."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    if isinstance(callbacks, str | bytes | dict) or not isinstance(callbacks, Iterable):
        raise TypeError(
            f"`{name}` must be a sequence of gradfit Callback objects. "
            f"{v.received(name, callbacks)}"
        )
    found = list(callbacks)
    for item in found:
        if not isinstance(item, Callback):
            raise TypeError(
                f"`{name}` must contain only gradfit Callback objects (subclass "
                f"gradfit.callbacks.Callback, or use LambdaCallback). Received an element of "
                f"type {type(item).__name__}: {v.echo(item)}"
            )
    return found


class CallbackList(Callback):
    """Calls every hook on each of its callbacks, in order.

    Args:
        callbacks: The callbacks.
    """

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        super().__init__()
        self.callbacks = check_callbacks("callbacks", list(callbacks))

    @property
    def _called(self) -> list[Callback]:
        """The callbacks whose hooks run: not those that write files where this process must not."""
        state = getattr(self.trainer, "state", None)
        if state is None or state.writes_files:
            return self.callbacks
        return [cb for cb in self.callbacks if not cb.writes_files]

    @property
    def wants_batch_logs(self) -> bool:
        """Whether any callback overrides a batch hook (otherwise steps need no host sync)."""
        return any(
            overrides(cb, hook)
            for cb in self.callbacks
            for hook in ("on_train_batch_begin", "on_train_batch_end")
        )

    def set_trainer(self, trainer: Trainer) -> None:
        """Attaches every callback to ``trainer``."""
        super().set_trainer(trainer)
        for cb in self.callbacks:
            cb.set_trainer(trainer)

    def set_params(self, params: dict[str, Any]) -> None:
        """Passes ``params`` to every callback."""
        super().set_params(params)
        for cb in self.callbacks:
            cb.set_params(params)

    def check_run(self) -> None:
        """Calls ``check_run`` on every callback."""
        for cb in self._called:
            cb.check_run()

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Calls ``on_train_begin`` on every callback."""
        for cb in self._called:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: Logs | None = None) -> None:
        """Calls ``on_train_end`` on every callback."""
        for cb in self._called:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        """Calls ``on_epoch_begin`` on every callback."""
        for cb in self._called:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Calls ``on_epoch_end`` on every callback."""
        for cb in self._called:
            cb.on_epoch_end(epoch, logs)

    def on_epoch_resume(self, epoch: int, step: int, logs: Logs | None = None) -> None:
        """Calls ``on_epoch_resume`` on every callback."""
        for cb in self._called:
            cb.on_epoch_resume(epoch, step, logs)

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        """Calls ``on_train_batch_begin`` on every callback."""
        for cb in self._called:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        """Calls ``on_train_batch_end`` on every callback."""
        for cb in self._called:
            cb.on_train_batch_end(batch, logs)
