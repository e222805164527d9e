"""ProgressBar: training progress on stderr, with tqdm."""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

from tqdm import tqdm

from gradfit import _validation as v
from gradfit.callbacks.base import Callback, Logs

_STEP_HOOK = "on_train_batch_end"


def format_value(value: float) -> str:
    """Four decimals for ordinary magnitudes, scientific notation for tiny or huge ones."""
    if value == 0 or not math.isfinite(value) or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.4e}"


def format_logs(logs: Logs) -> str:
    """``"loss: 0.1234 - lr: 0.1000"``: the logs in their order."""
    return " - ".join(f"{key}: {format_value(value)}" for key, value in logs.items())


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an open terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class ProgressBar(Callback):
    """Shows training progress on stderr (never stdout).

    ``verbose=1`` draws a tqdm bar per epoch, advanced step by step as the
    Trainer replays each compiled chunk of steps to the batch hooks, showing
    the running mean of the step logs and, at the end, the epoch's logs.
    ``verbose=2`` writes one line per epoch::

        Epoch 3/10 - 0.02s - loss: 0.1234 - val_loss: 0.2345 - lr: 0.1000

    ``verbose=0`` is silent, and ``"auto"`` (the default) means ``1`` when
    stderr is a terminal at the start of training and ``0`` otherwise, so a
    job whose stderr goes to a file or pipe gets no bar. A silent bar costs
    nothing: only ``verbose=1`` installs a batch hook, so only then does the
    Trainer replay per-step logs.

    Args:
        verbose: ``"auto"``, ``0``, ``1`` or ``2``.

    Attributes:
        mode: The verbosity in effect for the current run (``0``, ``1`` or
            ``2``), resolved from ``verbose`` at the start of training.

    Example::

        trainer.fit(x, y, epochs=10, callbacks=[gf.callbacks.ProgressBar(verbose=2)])
    """

    writes_files = True  # (only the chief of a multi-worker job writes)

    def __init__(self, verbose: int | str = "auto") -> None:
        super().__init__()
        if isinstance(verbose, str):
            if verbose != "auto":
                raise ValueError(
                    f"`verbose` must be 'auto', 0, 1 or 2. {v.received('verbose', verbose)}"
                )
        elif isinstance(verbose, bool) or not isinstance(verbose, int):
            raise TypeError(
                f"`verbose` must be 'auto', 0, 1 or 2. {v.received('verbose', verbose)}"
            )
        elif verbose not in (0, 1, 2):
            raise ValueError(
                f"`verbose` must be 'auto', 0, 1 or 2. {v.received('verbose', verbose)}"
            )
        self.verbose = verbose
        self.mode = 0
        self._stream: IO[str] = sys.stderr
        self._bar: Any = None
        self._started = 0.0
        self._sums: dict[str, float] = {}
        self._count = 0

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Resolves ``"auto"`` against the current stderr and installs the step hook if needed."""
        self._stream = sys.stderr  # looked up now: redirections made after construction count
        if self.verbose == "auto":
            self.mode = 1 if is_terminal(self._stream) else 0
        else:
            self.mode = int(self.verbose)
        # A hook installed on the instance, as LambdaCallback does: the Trainer replays step
        # logs only when some callback has a batch hook, so silent and per-epoch modes cost
        # nothing per step.
        if self.mode == 1:
            setattr(self, _STEP_HOOK, self._advance)
        else:
            self._remove_step_hook()

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        """Starts the epoch's clock and, with ``verbose=1``, its bar."""
        self._start(epoch, 0)

    def on_epoch_resume(self, epoch: int, step: int, logs: Logs | None = None) -> None:
        """Starts the clock and the bar of an epoch resumed ``step`` steps in."""
        self._start(epoch, step)

    def _start(self, epoch: int, step: int) -> None:
        self._started = time.perf_counter()
        self._sums, self._count = {}, 0
        if self.mode == 1:
            self._close_bar()
            self._bar = tqdm(
                total=self.params.get("steps"),
                initial=step,
                desc=f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}",
                unit="step",
                file=self._stream,
                leave=True,
                dynamic_ncols=True,
            )

    def _advance(self, batch: int, logs: Logs | None = None) -> None:
        """Moves the bar to step ``batch + 1`` and shows the running mean of the step logs.

        An epoch resumed from a mid-epoch backup starts past 0: the bar jumps there.
        """
        if self._bar is None:
            return
        self._count += 1
        for key, value in (logs or {}).items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        means = {key: total / self._count for key, total in self._sums.items()}
        self._bar.set_postfix_str(format_logs(means), refresh=False)
        self._bar.update(max(0, batch + 1 - self._bar.n))

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Shows the epoch's logs: the bar's last state, or one line."""
        logs = logs or {}
        if self.mode == 1 and self._bar is not None:
            self._bar.set_postfix_str(format_logs(logs), refresh=False)
            self._close_bar()
        elif self.mode == 2:
            elapsed = time.perf_counter() - self._started
            parts = [f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}", f"{elapsed:.2f}s"]
            if logs:
                parts.append(format_logs(logs))
            tqdm.write(" - ".join(parts), file=self._stream)

    def on_train_end(self, logs: Logs | None = None) -> None:
        """Closes any open bar and removes the step hook."""
        self._close_bar()
        self._remove_step_hook()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _remove_step_hook(self) -> None:
        vars(self).pop(_STEP_HOOK, None)
