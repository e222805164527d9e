"""EarlyStopping: stop when a monitored quantity has stopped improving."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from gradfit import _validation as v
from gradfit.callbacks.base import Logs
from gradfit.callbacks.monitor import MonitorCallback


class EarlyStopping(MonitorCallback):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    An epoch improves on the best so far when the monitored value is lower
    by more than ``min_delta`` (higher, for ``mode="max"``). When there is no
    validation data, a ``"val_*"`` monitor falls back to the training
    quantity (``"val_loss"`` to ``"loss"``) with a warning.

    Args:
        monitor: The epoch log to watch, e.g. ``"val_loss"`` or ``"loss"``.
        patience: Epochs without improvement before stopping.
        min_delta: Smallest change that counts as an improvement.
        restore_best_weights: When training ends (stopped early or not),
            set the model's variables back to their values at the best epoch.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (``"max"`` for monitors
            naming an accuracy, ``"min"`` otherwise).

    Attributes:
        best: The best monitored value seen.
        best_epoch: The epoch it was seen in.
        stopped_epoch: The epoch training stopped after, or ``None``.
        wait: Epochs since the last improvement.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        restore_best_weights: bool = False,
        *,
        mode: str = "auto",
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(
                f"`patience` must be a non-negative integer. {v.received('patience', patience)}"
            )
        self.patience = patience
        self.restore_best_weights = v.boolean("restore_best_weights", restore_best_weights)

    def _reset(self) -> None:
        super()._reset()
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._best_values: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Tracks the best value and stops training when patience runs out."""
        value = self.monitored_value(logs)
        if value is None or self.trainer is None:
            return
        if not math.isfinite(value):
            # A NaN epoch (every step skipped as non-finite, say) is never the best one;
            # it counts as an epoch without improvement.
            self.wait += 1
            if self.best_epoch is not None and self.wait >= self.patience:
                self.stopped_epoch = epoch
                self.trainer.stop_training = True
            return
        if self.is_improvement(value) or self.best_epoch is None:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_values = [var.numpy() for var in self.trainer.model.variables]
            return
        self.wait += 1
        if self.wait >= self.patience:  # as Keras: `patience` epochs without improvement
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: Logs | None = None) -> None:
        """Restores the best epoch's variables when asked to."""
        if self.restore_best_weights and self._best_values is not None and self.trainer:
            for var, value in zip(self.trainer.model.variables, self._best_values, strict=True):
                var.assign(value)

    def get_state(self) -> dict[str, Any]:
        """Returns what a backup must save to resume this callback exactly.

        ``best`` (a float), ``best_epoch`` and ``stopped_epoch`` (an int or
        ``None``), ``wait`` (an int), and ``best_weights``: copies of the
        model's variable values at the best epoch as NumPy arrays, held for
        ``restore_best_weights`` (``None`` when there are none).
        """
        weights = self._best_values
        return {
            "best": float(self.best),
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "wait": self.wait,
            "best_weights": None if weights is None else [np.array(w) for w in weights],
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores the state from :meth:`get_state`'s dict.

        Call it after ``on_train_begin``, which resets the state.

        Args:
            state: A dict with exactly the keys ``get_state`` returns.
        """
        keys = ("best", "best_epoch", "stopped_epoch", "wait", "best_weights")
        state = self._check_state(state, keys)
        counters: dict[str, int | None] = {}
        for key, optional in (("best_epoch", True), ("stopped_epoch", True), ("wait", False)):
            value = state[key]
            integral = not isinstance(value, bool) and isinstance(value, numbers.Integral)
            if value is None and optional:
                counters[key] = None
            elif integral and value >= 0:
                counters[key] = int(value)
            else:
                name = f"state[{key!r}]"
                raise ValueError(
                    f"`{name}` must be a non-negative integer{' or None' if optional else ''}. "
                    f"{v.received(name, value)}"
                )
        weights = state["best_weights"]
        self.best = v.real_number("state['best']", state["best"])
        self.best_epoch = counters["best_epoch"]
        self.stopped_epoch = counters["stopped_epoch"]
        self.wait = int(counters["wait"] or 0)
        self._best_values = None if weights is None else [np.array(w) for w in weights]

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments."""
        return self._config("monitor", "patience", "min_delta", "restore_best_weights", "mode")
