"""ModelCheckpoint: save the model, or the whole trainer, at the end of epochs."""

from __future__ import annotations

import logging
import numbers
import os
import re
import string
from collections.abc import Collection, Mapping
from typing import Any

from gradfit import _validation as v
from gradfit import errors, saving
from gradfit.callbacks.base import Logs
from gradfit.callbacks.monitor import MonitorCallback
from gradfit.checkpoint.io import check_prefix

logger = logging.getLogger("gradfit")

_STATE_KEYS = ("best", "best_epoch", "best_path")
_CHECKED_EPOCHS = 10_000  # check_run checks the paths of up to this many epochs


def _template_fields(path: str) -> set[str]:
    """The field names of format string ``path``; checks it formats an int epoch and floats."""
    try:
        parsed = list(string.Formatter().parse(path))
    except ValueError as err:
        raise ValueError(
            f"`path` is not a valid format string ({err}). {v.received('path', path)}"
        ) from None
    fields: set[str] = set()
    for _, field, _, _ in parsed:
        if field is None:
            continue
        name = re.split(r"[.\[]", field, maxsplit=1)[0]
        if not name or name.isdigit():
            raise ValueError(
                "`path` may only use named fields: {epoch} and names of epoch logs such as "
                f"{{loss}} or {{val_loss:.3f}}. {v.received('path', path)}"
            )
        fields.add(name)
    sample = {name: 0 if name == "epoch" else 0.0 for name in fields}
    try:
        path.format_map(sample)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise ValueError(
            f"`path` cannot be formatted with `epoch` (an int) and epoch logs (floats): {err}. "
            f"{v.received('path', path)}"
        ) from None
    return fields


class ModelCheckpoint(MonitorCallback):
    """Saves the model's variables at the end of every epoch, or of every improving one.

    ``path`` is a checkpoint prefix and a format string, filled in at each
    save with ``epoch`` (from 0, as in the History) and the epoch's logs:
    ``"ckpts/ckpt-{epoch:02d}-{val_loss:.3f}"`` writes
    ``ckpts/ckpt-03-0.125.index`` and ``ckpts/ckpt-03-0.125.data-00000-of-00001``
    after epoch 3 (the directory is created if needed).

    With ``save_best_only``, an epoch is saved only when ``monitor``
    improves on the best value so far in this fit (is lower, or higher for
    ``mode="max"``; NaN never improves). A ``path`` without fields is then
    overwritten and always holds the best epoch. When there is no
    validation data, a ``"val_*"`` monitor falls back to the training
    quantity (``"val_loss"`` to ``"loss"``) with a warning. Like every
    gradfit callback, each ``fit`` starts afresh.

    ``path`` is checked before the first step, formatted with every epoch
    of the fit and sample logs (``0.0``): its directory must exist or be
    creatable and be writable, its names within the OS's limits. A save
    that fails during the fit raises :class:`gradfit.WriteError`.

    Every save is atomic (:func:`gradfit.saving.write_checkpoint`) and then
    points the directory's ``checkpoint`` file at it, so
    ``tf.train.latest_checkpoint(directory)`` names a complete checkpoint
    even if the process was killed during a save.

    Args:
        path: The checkpoint prefix, a format string with ``{epoch}`` and
            epoch-log fields (``{loss}``, ``{val_loss}``, a metric's name,
            ``{lr}``) and format specs such as ``{epoch:02d}``, ``{loss:.3f}``.
        monitor: The epoch log ``save_best_only`` watches.
        save_best_only: Save only epochs that improve on the best so far.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (``"max"`` for monitors
            naming an accuracy, ``"min"`` otherwise).
        save_weights_only: ``True`` saves the model's variables (restore with
            :func:`gradfit.saving.restore_model`); ``False`` saves the whole
            trainer state as :func:`gradfit.saving.save_trainer` does
            (restore with :func:`gradfit.saving.restore_trainer`).

    Attributes:
        best: The best monitored value saved (``save_best_only`` only).
        best_epoch: The epoch it was seen in, or ``None``.
        best_path: Where that epoch was saved, or ``None``.
        last_path: The latest checkpoint this callback wrote, or ``None``.

    Example::

        checkpoint = gf.callbacks.ModelCheckpoint("ckpts/best", save_best_only=True)
        trainer.fit(x, y, epochs=20, validation_data=(x_val, y_val), callbacks=[checkpoint])
        gf.saving.restore_model(trainer.model, checkpoint.best_path)
    """

    # It runs on every worker of a multi-worker job: only the chief writes, but saving the
    # trainer reads its state with the chief (a Keras metric's is a collective).
    writes_files = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        monitor: str = "val_loss",
        save_best_only: bool = False,
        *,
        mode: str = "auto",
        save_weights_only: bool = True,
    ) -> None:
        checked = v.path("path", path)
        fields = _template_fields(checked)
        super().__init__(monitor, mode)
        self.path, self._fields = checked, fields
        self.save_best_only = v.boolean("save_best_only", save_best_only)
        self.save_weights_only = v.boolean("save_weights_only", save_weights_only)

    def _reset(self) -> None:
        super()._reset()
        self.best_epoch: int | None = None
        self.best_path: str | None = None
        self.last_path: str | None = None

    def _watches_monitor(self) -> bool:
        """Only ``save_best_only`` reads ``monitor``."""
        return self.save_best_only

    def _check_run(self, available: Collection[str] | None) -> None:
        """Checks, before training, that the epoch logs will hold ``path``'s fields."""
        if available is None:
            return
        missing = sorted(self._fields - {"epoch", *available})
        if missing:
            raise ValueError(
                f"`path` names {missing}, which the epoch logs will not hold. Available: "
                f"['epoch', *{sorted(available)}]. {v.received('path', self.path)}"
            )

    def check_run(self) -> None:
        """Checks the run, and ``path`` formatted with sample values, before anything changes."""
        super().check_run()
        if not self._chief():
            return
        epochs = int(self.params.get("epochs") or 1) if "epoch" in self._fields else 1
        checked: set[str] = set()
        for epoch in range(min(epochs, _CHECKED_EPOCHS)):  # every epoch's path, where known
            values = {name: epoch if name == "epoch" else 0.0 for name in self._fields}
            path = self.path.format_map(values)
            if path not in checked:
                check_prefix("path", path, self.path)
                checked.add(path)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Saves the epoch (every epoch, or only an improving one with ``save_best_only``)."""
        if self.trainer is None:
            return
        logs = logs or {}
        if self.save_best_only:
            value = self.monitored_value(logs)
            if value is None or not self.is_improvement(value):
                return
        try:
            path = self.path.format_map({**logs, "epoch": epoch})
        except KeyError as err:
            raise ValueError(
                f"`path` names {err}, which epoch {epoch}'s logs do not hold. Available: "
                f"{['epoch', *logs]}. {v.received('path', self.path)}"
            ) from None
        try:
            if not self.save_weights_only:  # (on the other workers: the reads, no files)
                saving.save_trainer(self.trainer, path, update_latest=True)
            elif self._chief():
                saving.save_model(self.trainer.model, path, update_latest=True)
        except errors.IO_ERRORS as err:
            raise errors.write_error(
                "ModelCheckpoint", "path", path, err, "The checkpoints saved before are intact."
            ) from err
        self.last_path = path
        if self.save_best_only:
            self.best, self.best_epoch, self.best_path = float(logs[self._key]), epoch, path
        if self._chief():
            logger.info("Epoch %d: ModelCheckpoint saved %s.", epoch, path)

    def _chief(self) -> bool:
        """Whether this process writes files (not a multi-worker job's other workers)."""
        state = getattr(self.trainer, "state", None)
        return state is None or bool(state.writes_files)

    def get_state(self) -> dict[str, Any]:
        """Returns what a backup must save to resume this callback exactly.

        ``{"best": float, "best_epoch": int | None, "best_path": str | None}``.
        """
        return {
            "best": float(self.best),
            "best_epoch": self.best_epoch,
            "best_path": self.best_path,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores the state from :meth:`get_state`'s dict.

        Call it after ``on_train_begin``, which resets the state.

        Args:
            state: A dict with exactly the keys ``get_state`` returns.
        """
        state = self._check_state(state, _STATE_KEYS)
        epoch, best_path = state["best_epoch"], state["best_path"]
        integral = not isinstance(epoch, bool) and isinstance(epoch, numbers.Integral)
        if epoch is not None and not (integral and epoch >= 0):
            raise ValueError(
                "`state['best_epoch']` must be a non-negative integer or None. "
                f"{v.received('state[best_epoch]', epoch)}"
            )
        if best_path is not None and not isinstance(best_path, str):
            raise TypeError(
                "`state['best_path']` must be a str or None. "
                f"{v.received('state[best_path]', best_path)}"
            )
        self.best = v.real_number("state['best']", state["best"])
        self.best_epoch = None if epoch is None else int(epoch)
        self.best_path = best_path

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments."""
        return self._config("path", "monitor", "save_best_only", "mode", "save_weights_only")
