"""EarlyStopping: stop when a monitored quantity has stopped improving."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from gradfit import _validation as v
from gradfit.callbacks.base import Callback, Logs, improved, resolve_monitor


class EarlyStopping(Callback):
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
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(
                f"`monitor` must be a non-empty string. {v.received('monitor', monitor)}"
            )
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(
                f"`patience` must be a non-negative integer. {v.received('patience', patience)}"
            )
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"`mode` must be 'auto', 'min' or 'max'. {v.received('mode', mode)}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(v.non_negative_float("min_delta", min_delta))
        self.restore_best_weights = v.boolean("restore_best_weights", restore_best_weights)
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.mode = mode
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._best_values: list[np.ndarray] | None = None
        self._key = self.monitor

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Resets the state and resolves which log to watch."""
        self._reset()
        self._key = resolve_monitor("EarlyStopping", self.monitor, self.params.get("metrics"))

    def _improved(self, value: float) -> bool:
        return improved(value, self.best, self.mode, self.min_delta)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Tracks the best value and stops training when patience runs out."""
        value = (logs or {}).get(self._key)
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
        if self._improved(value) or self.best_epoch is None:
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
        if not isinstance(state, Mapping):
            raise TypeError(
                "`state` must be a dict from EarlyStopping.get_state(). "
                f"{v.received('state', state)}"
            )
        if set(state) != set(keys):
            raise ValueError(
                f"`state` must have exactly the keys {list(keys)}. {v.received('state', state)}"
            )
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
        return {
            "monitor": self.monitor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "restore_best_weights": self.restore_best_weights,
            "mode": self.mode,
        }
