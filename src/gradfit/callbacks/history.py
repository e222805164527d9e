"""History: the per-epoch logs of a fit, returned by ``Trainer.fit``."""

from __future__ import annotations

from gradfit.callbacks.base import Callback, Logs


class History(Callback):
    """Records every epoch's logs.

    Attributes:
        history: ``{"loss": [...], "val_loss": [...], <metric>: [...]}``, one
            entry per epoch.
        epoch: The epoch numbers recorded, from 0.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Starts a fresh record."""
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Appends the epoch's logs."""
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"
