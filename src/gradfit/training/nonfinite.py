"""The non-finite policy: what a step whose logs or gradients hold NaN or infinity does."""

from __future__ import annotations

import numpy as np

from gradfit import _validation as v
from gradfit.training.state import RunState
from gradfit.training.step import Columns

MODES = ("raise", "skip", "ignore")


class NonFiniteError(FloatingPointError):
    """A training step produced a NaN or infinite loss or gradient.

    The offending update was not applied. Attributes ``epoch`` and ``step``
    (from 0 within the epoch) say where it happened.
    """

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class NonFinitePolicy:
    """``on_nonfinite`` and ``max_consecutive_nonfinite``: checks, limits, epoch means.

    Args:
        mode: ``"raise"``, ``"skip"`` or ``"ignore"``.
        max_consecutive: With ``"skip"``, how many non-finite steps in a row raise.
    """

    def __init__(self, mode: str, max_consecutive: int) -> None:
        if mode not in MODES:
            raise ValueError(
                "`on_nonfinite` must be 'raise', 'skip' or 'ignore'. "
                f"{v.received('on_nonfinite', mode)}"
            )
        self.mode = mode
        self.max_consecutive = v.positive_int("max_consecutive_nonfinite", max_consecutive)

    @property
    def checks(self) -> bool:
        """Whether steps are checked (and so carry a non-finite flag column)."""
        return self.mode != "ignore"

    @property
    def limit(self) -> int:
        """Non-finite steps in a row that end the fit."""
        return 1 if self.mode == "raise" else self.max_consecutive

    def check(self, state: RunState, epoch: int, step: int, run: int) -> None:
        """Records ``run`` non-finite steps in a row; raises when it reached the limit."""
        state.nonfinite_run = run
        if self.mode == "raise" and run >= 1:
            raise NonFiniteError(
                f"The loss or a gradient was NaN or infinite at epoch {epoch}, step {step}; "
                "that update was not applied, and the model holds the values it had before "
                "that step. "
                "Pass on_nonfinite='skip' to skip such steps.",
                epoch=epoch,
                step=step,
            )
        if self.mode == "skip" and run >= self.max_consecutive:
            raise NonFiniteError(
                f"{run} training steps in a row had a NaN or infinite loss or gradient "
                f"(the last at epoch {epoch}, step {step}); their updates were skipped. "
                f"Stopping after max_consecutive_nonfinite={self.max_consecutive}.",
                epoch=epoch,
                step=step,
            )

    def epoch_logs(self, logs: np.ndarray, sizes: np.ndarray, columns: Columns) -> dict[str, float]:
        """The epoch's values of the step logs (:meth:`Columns.reduce`), skipped steps left out."""
        if columns.flag is None:
            return columns.reduce(logs, sizes)
        skipped = logs[:, columns.flag] > 0
        kept = ~skipped
        if kept.any():
            means = columns.reduce(logs[kept], sizes[kept])
        else:
            means = dict.fromkeys(columns.names, float("nan"))
        if self.mode == "skip":
            means["nonfinite_steps"] = float(skipped.sum())
        return means
