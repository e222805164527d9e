"""RecordVariables: every model variable's value before training and after each epoch."""

from __future__ import annotations

import numpy as np

from gradfit.callbacks.base import Callback, Logs
from gradfit.models import variables_by_path


class RecordVariables(Callback):
    """Keeps each model variable's value before the first epoch and after every epoch.

    Values are keyed by the variable's path in the model (``"W"``, ``"b"``,
    ``"layers/0/W"``). After ``fit(..., epochs=E)``, ``values[path]`` has
    ``E + 1`` NumPy arrays: ``values[path][e]`` is the value at the start of
    epoch ``e``, so ``values["W"][:-1]`` is the TF2 tutorial's list ``Ws``.

    Args:
        trainable_only: Record only trainable variables.
    """

    def __init__(self, *, trainable_only: bool = True) -> None:
        super().__init__()
        self.trainable_only = trainable_only
        self.values: dict[str, list[np.ndarray]] = {}

    def _record(self) -> None:
        if self.trainer is None:
            raise RuntimeError("RecordVariables must be used through Trainer.fit.")
        found = variables_by_path(self.trainer.model, trainable_only=self.trainable_only)
        for path, variable in found.items():
            self.values.setdefault(path, []).append(variable.numpy())

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Starts a fresh record with the initial values."""
        self.values = {}
        self._record()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Records the values after the epoch."""
        self._record()
