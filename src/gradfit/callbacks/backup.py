"""BackupAndRestore: a run killed at any moment resumes bit for bit from its last save."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gradfit import _paths
from gradfit import _validation as v
from gradfit.callbacks.base import Callback, Logs
from gradfit.callbacks.history import History
from gradfit.checkpoint import backup as engine
from gradfit.checkpoint.lock import DirectoryLock

if TYPE_CHECKING:
    from gradfit.training.state import RunState

logger = logging.getLogger("gradfit")


@dataclasses.dataclass(frozen=True)
class Resume:
    """Where a restored backup lets a fit carry on (returned by :meth:`BackupAndRestore.resume`).

    Attributes:
        epoch: The first epoch to train.
        logs: The logs of the last finished epoch (``{}`` when none finished).
        steps_done: Steps the run had trained, over all its epochs.
        step: Steps of ``epoch`` already done (0 unless saved mid-epoch).
        step_logs: Those steps' logs, as the trainer records them.
        step_sizes: Their batch sizes.
        generator_state: The shuffling generator's state when ``epoch`` began.
    """

    epoch: int
    logs: Logs
    steps_done: int = 0
    step: int = 0
    step_logs: np.ndarray | None = None
    step_sizes: np.ndarray | None = None
    generator_state: np.ndarray | None = None


def _stateful(callback: Any) -> bool:
    return callable(getattr(callback, "get_state", None)) and callable(
        getattr(callback, "set_state", None)
    )


class BackupAndRestore(Callback):
    """Backs a run up so that a fit killed at any moment resumes exactly.

    At the end of every epoch (and, with ``save_every=n``, after every
    ``n`` training steps) it saves, atomically, everything the run needs
    to continue: the model's variables, the update rule's state (slots,
    ``iterations``, learning rate, transforms' accumulators), the trainer's
    shuffling generator, the number of epochs and steps done, the History
    so far and the state of every callback that has ``get_state``/
    ``set_state`` (``EarlyStopping``, ``ReduceLROnPlateau``,
    ``ModelCheckpoint``, ...). A mid-epoch save also holds the epoch's step
    logs so far and the generator's state when the epoch began, so the
    resumed epoch visits the same examples in the same order, skips the
    steps already done, and logs the same epoch means.
    The tensors go in a ``tf.train.Checkpoint`` and the rest in a JSON
    document held by a ``tf.string`` variable of the same checkpoint, so one
    atomic write (:func:`gradfit.saving.write_checkpoint`, through the
    directory's ``checkpoint`` pointer) covers all of it: a kill during a
    save leaves the previous backup, or the new one, never a mix.

    The next ``fit`` given a ``BackupAndRestore`` on the same directory
    restores the backup and carries on where it stopped: with the next
    epoch, or, from a mid-epoch save, with the next step of that epoch.
    Epoch hooks fire only for the epochs this process trains; a partial
    epoch resumed from a mid-epoch save gets ``on_epoch_resume(epoch,
    step)`` instead of a second ``on_epoch_begin``, whose effects (a
    scheduled learning rate, say) are already in the restored state. The
    returned History
    holds every epoch, and variables and History are bitwise those of a
    run that never stopped, provided the resumed ``fit`` gets the same
    data and arguments (``epochs`` included: it chooses whether XLA
    compiles the loop) and the trainer is made the same way (its initial
    values do not matter). The backup overrides ``seed``: ``fit(...,
    seed=s)`` reseeds the generator before the restore, and the restore then
    sets it to the saved state, so passing the same ``seed`` on every
    attempt is safe.

    Exactness covers in-memory data, shuffled by the trainer's generator. A
    ``tf.data.Dataset`` input is iterated afresh each epoch (a resumed
    partial epoch skips the batches done), so a pipeline that reshuffles
    itself every iteration restarts its own order on resume.

    Saving every ``n`` steps splits the compiled loop's calls at those
    steps (a call runs at most ``n`` steps) and writes a checkpoint each
    time; pick ``n`` so that a save (milliseconds for small models) is rare
    next to ``n`` steps of training.
    A ``CSVLogger`` should use ``append=True`` in a run that may resume.

    A run that finishes (all epochs, or stopped by a callback) removes its
    backup; a run that raises (a crash, ``KeyboardInterrupt``,
    :class:`gradfit.NonFiniteError`) keeps it.

    Put it in the callbacks list before callbacks whose ``on_train_begin``
    reads the model's variables, so that they see the restored values;
    callback states are restored after every ``on_train_begin`` (which
    resets them) has run, wherever it sits.

    Args:
        directory: The backup's directory (created when first needed). Use
            one directory per run.
        save_every: ``"epoch"`` saves at the end of every epoch; a positive
            int ``n`` also saves after every ``n`` training steps (counted
            over the whole run).

    Example::

        backup = gf.callbacks.BackupAndRestore("run/backup", save_every=1000)
        trainer.fit(x, y, epochs=100, batch_size=32, seed=0, callbacks=[backup])
        # killed? run the same script again: it resumes after the last save.
    """

    def __init__(self, directory: str | os.PathLike[str], save_every: str | int = "epoch") -> None:
        super().__init__()
        if not isinstance(directory, str | os.PathLike):
            raise TypeError(
                "`directory` must be a str or an os.PathLike path. "
                f"{v.received('directory', directory)}"
            )
        text = os.fspath(directory)
        if not isinstance(text, str) or not text:
            raise ValueError(
                f"`directory` must be a non-empty path. {v.received('directory', directory)}"
            )
        if isinstance(save_every, int | np.integer) and not isinstance(save_every, bool | np.bool_):
            if save_every < 1:
                raise ValueError(
                    "`save_every` must be 'epoch' or a positive number of steps. "
                    f"{v.received('save_every', save_every)}"
                )
            save_every = int(save_every)
        elif save_every != "epoch" or not isinstance(save_every, str):
            raise (ValueError if isinstance(save_every, str) else TypeError)(
                "`save_every` must be 'epoch' or a positive number of steps. "
                + v.received("save_every", save_every)
            )
        self.directory = text
        self.save_every = save_every
        self.restored_epoch: int | None = None
        """The last whole epoch the restored backup held (``None``: none, or no backup)."""
        self.restored_step = 0
        """Steps of the epoch after ``restored_epoch`` that the restored backup held."""
        self._pending: dict[str, Any] | None = None
        self._store: engine.BackupStore | None = None
        self._latest: str | None = None  # the backup check_run found
        self._lock = DirectoryLock(text, "directory", "BackupAndRestore")
        self._others: list[Any] = []
        self._history: History | None = None

    def _run_state(self) -> RunState:
        trainer = self.trainer
        if trainer is None:
            raise RuntimeError("BackupAndRestore is not attached to a trainer.")
        return trainer.state

    def bind(self, callbacks: Sequence[Callback], history: History) -> None:
        """Receives the fit's callbacks and History before ``on_train_begin`` (by the Trainer).

        Args:
            callbacks: The fit's callbacks; those with ``get_state`` and
                ``set_state`` are saved and restored, in order.
            history: The fit's History.
        """
        self._others = [cb for cb in callbacks if _stateful(cb) and cb is not self]
        self._history = history

    def check_run(self) -> None:
        """Takes the directory for this run and checks its backup, before anything changes.

        The directory must be (or be creatable as) a writable directory that
        no other run holds; a backup in it must be whole (a damaged one is
        refused, never ignored) and match this fit: the stateful callbacks
        it was saved with, the steps of a mid-epoch save, and the variables
        the task has so far. The rest of the layout (an update rule's state
        not built yet) is checked by :meth:`check_layout` once the task is
        built. Raises a ``ValueError`` naming ``directory``; every file is kept.
        """
        trainer = self.trainer
        if trainer is None:
            raise RuntimeError("BackupAndRestore is not attached to a trainer.")
        self._store, self._latest, self._pending = None, None, None
        _paths.check_directory("directory", self.directory, self.directory, extra=80)
        if self._writes():  # (a multi-worker job's other workers only read the chief's)
            self._lock.acquire()
        try:
            store = engine.BackupStore(self.directory, trainer.checkpoint_items())
            latest = store.latest()
            if latest is not None:
                document = store.check(latest)
                self._check_callbacks(document)
                self._check_steps(document)
                store.check_layout(latest, complete=False)
                self._pending = document
        except BaseException:
            self._lock.release()
            raise
        self._store, self._latest = store, latest

    def _writes(self) -> bool:
        """Whether this process writes backups: not a multi-worker job's non-chief workers."""
        return self.trainer is None or self._run_state().writes_files

    def check_layout(self) -> None:
        """Checks the backup against the built task's every variable (the Trainer calls it)."""
        if self._store is not None and self._latest is not None:
            self._store.check_layout(self._latest, complete=True)

    def release(self) -> None:
        """Lets the directory go: the fit ended (the Trainer calls it, however it ended)."""
        self._lock.release()

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Restores the latest backup's tensors, if there is one (the rest comes in resume).

        Everything was checked (by ``check_run`` and ``check_layout``, which
        ``fit`` calls first) before any variable is assigned.
        """
        self.restored_epoch = None
        self.restored_step = 0
        if self._store is None:  # not started by a Trainer's fit: check here
            self.check_run()
            self.check_layout()
        store, latest = self._store, self._latest
        if store is None or latest is None or self._pending is None:
            return
        store.restore(latest)
        logger.info(
            "BackupAndRestore: restored %s (epoch %d done, then %d steps).",
            latest,
            self._pending["epoch"],
            self._pending.get("step", 0),
        )

    def _check_callbacks(self, document: dict[str, Any]) -> None:
        names = [type(cb).__qualname__ for cb in self._others]
        saved = [entry["type"] for entry in document["callbacks"]]
        if names != saved:
            raise ValueError(
                f"The backup in `directory` was saved with stateful callbacks {saved}, but "
                f"this fit has {names}; pass the same callbacks to resume, or remove the "
                f"backup to start afresh. {v.received('directory', self.directory)}"
            )

    def _check_steps(self, document: dict[str, Any]) -> None:
        """A mid-epoch backup must come from a fit of the same shape (steps, logs per step)."""
        step = int(document.get("step", 0))
        if not step:
            return
        run = self._run_state()
        steps, width, batch_size = self.params.get("steps"), run.step_log_width, run.step_batch_size
        saved = engine.decode(document["step_logs"])
        saved_width = saved.shape[1] if saved.ndim == 2 else None
        sizes = engine.decode(document["step_sizes"])
        saved_sizes = sorted({int(size) for size in sizes})
        if (
            (steps is not None and step >= steps)
            or (width and saved_width != width)
            or (batch_size is not None and saved_sizes != [batch_size])
        ):
            raise ValueError(
                f"The backup in `directory` was saved {step} steps into an epoch, with "
                f"{saved_width} values logged per step and batches of {saved_sizes} examples; "
                f"this fit has {steps} steps per epoch, logs {width} values per step and "
                f"makes batches of {batch_size}. Resume with the same data, batch_size, "
                "metrics and callbacks, or remove the backup to start afresh. "
                f"{v.received('directory', self.directory)}"
            )

    def resume(self) -> Resume | None:
        """Finishes a restore after every ``on_train_begin`` ran (the Trainer calls it).

        Restores the other callbacks' states (their ``on_train_begin``
        reset them), pre-fills the History and the run's state.

        Returns:
            Where to carry on, or ``None`` when there was no backup.
        """
        document, self._pending = self._pending, None
        history = self._history
        if document is None or self.trainer is None or history is None:
            return None
        for cb, entry in zip(self._others, document["callbacks"], strict=True):
            cb.set_state(engine.decode(entry["state"]))
        history.history = {k: list(values) for k, values in document["history"].items()}
        history.epoch = [int(e) for e in document["history_epochs"]]
        run = self._run_state()
        run.nonfinite_run = int(document["nonfinite_run"])
        epoch = int(document["epoch"])  # the last whole epoch (-1: none yet)
        step = int(document.get("step", 0))
        self.restored_epoch = epoch if epoch >= 0 else None
        self.restored_step = step
        last = {k: values[-1] for k, values in history.history.items() if values}
        steps_done = int(document.get("steps_done", 0))
        if not step:
            if document["stop_training"]:  # the run had stopped: nothing left to train
                run.stop_training = True
                return Resume(max(epoch + 1, int(self.params.get("epochs", 0))), last, steps_done)
            return Resume(epoch + 1, last, steps_done)
        # Saved mid-epoch: a stop asked for by then ends the run after this epoch, as it did.
        run.stop_training = bool(document["stop_training"])
        return Resume(
            epoch + 1,
            last,
            steps_done,
            step=step,
            step_logs=engine.decode(document["step_logs"]),
            step_sizes=engine.decode(document["step_sizes"]),
            generator_state=engine.decode(document["generator_state"]),
        )

    def _write(self, epoch: int, steps_done: int, extra: dict[str, Any]) -> None:
        if self.trainer is None or self._store is None:
            return
        if not self._writes():  # (a multi-worker job's other workers join the chief's reads)
            self._store.write_elsewhere()
            return
        history, run = self._history, self._run_state()
        self._store.write(
            {
                "epoch": int(epoch),
                "steps_done": int(steps_done),
                "stop_training": bool(run.stop_training),
                "nonfinite_run": int(run.nonfinite_run),
                "history": {} if history is None else history.history,
                "history_epochs": [] if history is None else [int(e) for e in history.epoch],
                "callbacks": [
                    {"type": type(cb).__qualname__, "state": engine.encode(cb.get_state())}
                    for cb in self._others
                ],
                **extra,
            }
        )

    def save(self, epoch: int, *, steps_done: int = 0) -> None:
        """Saves the backup after epoch ``epoch`` (the Trainer calls it after ``on_epoch_end``).

        It runs after every callback's ``on_epoch_end`` and the History's
        record of the epoch, so the saved states include that epoch.

        Args:
            epoch: The epoch just finished.
            steps_done: Steps trained in the run so far.
        """
        self._write(epoch, steps_done, {})

    def save_steps(
        self,
        epoch: int,
        step: int,
        logs: np.ndarray,
        sizes: np.ndarray,
        *,
        generator_state: np.ndarray,
        steps_done: int,
    ) -> None:
        """Saves the backup ``step`` steps into ``epoch`` (the Trainer calls it).

        Args:
            epoch: The epoch in progress.
            step: Its steps done (their batch hooks have run).
            logs: Those steps' logs, one row per step.
            sizes: Their batch sizes.
            generator_state: The shuffling generator's state when the epoch began.
            steps_done: Steps trained in the run so far.
        """
        self._write(
            epoch - 1,
            steps_done,
            {
                "step": int(step),
                "step_logs": engine.encode(np.asarray(logs)),
                "step_sizes": engine.encode(np.asarray(sizes)),
                "generator_state": engine.encode(np.asarray(generator_state)),
            },
        )

    def on_train_end(self, logs: Logs | None = None) -> None:
        """The run finished: removes the backup and lets the directory go."""
        self._store, self._latest = None, None
        if not self._writes():
            return
        engine.remove(self.directory)
        self.release()
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)  # empty now that the lock file is gone

    def remove(self) -> None:
        """Removes the backup's files (and the directory, when that leaves it empty)."""
        engine.remove(self.directory)
