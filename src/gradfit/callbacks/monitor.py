"""MonitorCallback: the shared base of callbacks that watch one epoch log for improvement."""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping
from typing import Any

from gradfit import _validation as v
from gradfit.callbacks.base import Callback, Logs

MODES = ("auto", "min", "max")


def improved(value: float, best: float, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (lower for ``"min"``)."""
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def resolve_monitor(owner: str, monitor: str, available: Any, stacklevel: int = 3) -> str:
    """The epoch log a monitoring callback should watch.

    ``monitor`` itself when the logs will hold it (or nothing is known);
    without validation data a ``"val_*"`` monitor falls back to the training
    quantity, with a warning; anything else is a ``ValueError`` naming
    ``monitor``, raised before training starts.

    Args:
        owner: The callback's class name, for the warning.
        monitor: The requested log name.
        available: The names the epoch logs will carry (``params["metrics"]``).
        stacklevel: The warning's stack level (3: the caller of its caller).
    """
    if available is None or monitor in available:
        return monitor
    fallback = monitor[4:] if monitor.startswith("val_") else None
    if fallback is not None and fallback in available:
        warnings.warn(
            f"{owner} monitors {monitor!r}, but there is no validation data; "
            f"monitoring {fallback!r} instead.",
            UserWarning,
            stacklevel=stacklevel,
        )
        return fallback
    raise ValueError(
        f"`monitor` names a quantity the epoch logs will not hold. Available: "
        f"{sorted(available)}. {v.received('monitor', monitor)}"
    )


class MonitorCallback(Callback):
    """Base class of callbacks that act when an epoch log stops (or starts) improving.

    It validates ``monitor``, ``mode`` and ``min_delta``, keeps the best value
    seen, resolves at the start of training which epoch log to read (without
    validation data a ``"val_*"`` monitor falls back to the training quantity,
    with a warning; a log the epochs will not hold is a ``ValueError`` before
    training starts) and says whether a value improves on the best.

    A subclass extends :meth:`_reset` (calling ``super()._reset()``) with its
    own state; the base calls it at the end of ``__init__`` and at the start of
    every ``fit``, so it may only use the attributes set up to then. It may
    override :meth:`_check_run` to refuse a run before training, and
    :meth:`_watches_monitor` to skip resolving ``monitor`` when it will not
    read it.

    Args:
        monitor: The epoch log to watch, e.g. ``"val_loss"`` or ``"loss"``.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (``"max"`` for monitors
            naming an accuracy, ``"min"`` otherwise).
        min_delta: Smallest change that counts as an improvement.

    Attributes:
        monitor: The requested epoch log.
        mode: ``"min"`` or ``"max"`` (``"auto"`` resolved).
        min_delta: The smallest change that counts as an improvement.
        best: The best monitored value seen (``inf`` for ``"min"``, ``-inf``
            for ``"max"`` before any).
    """

    def __init__(
        self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0
    ) -> None:
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(
                f"`monitor` must be a non-empty string. {v.received('monitor', monitor)}"
            )
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"`mode` must be 'auto', 'min' or 'max'. {v.received('mode', mode)}")
        self.monitor = monitor
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.mode = mode
        self.min_delta = abs(v.non_negative_float("min_delta", min_delta))
        self._key = monitor
        self._checked = False  # check_run ran for the fit about to begin
        self._reset()

    def _reset(self) -> None:
        """Resets the state to that of a fresh run: here, ``best``."""
        self.best = math.inf if self.mode == "min" else -math.inf

    def _check_run(self, available: Collection[str] | None) -> None:
        """Raises if the run cannot be monitored; called before ``monitor`` is resolved.

        Args:
            available: The names the epoch logs will carry, or ``None`` if unknown.
        """

    def _watches_monitor(self) -> bool:
        """Whether this run reads ``monitor`` (so it must be resolved against the logs)."""
        return True

    def check_run(self) -> None:
        """Checks the run before anything changes and resolves which epoch log to watch."""
        self._resolve(stacklevel=4)  # (warnings point at whoever called check_run)

    def _resolve(self, stacklevel: int) -> None:
        available = self.params.get("metrics")
        self._check_run(available)
        self._key = self.monitor
        if self._watches_monitor():
            name = type(self).__name__
            self._key = resolve_monitor(name, self.monitor, available, stacklevel)
        self._checked = True

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Resets the state (and checks the run, unless ``fit`` already did)."""
        self._reset()
        if not self._checked:
            self._resolve(stacklevel=4)
        self._checked = False

    def monitored_value(self, logs: Logs | None) -> float | None:
        """The watched quantity in epoch ``logs``, or ``None`` when they lack it."""
        return (logs or {}).get(self._key)

    def is_improvement(self, value: float) -> bool:
        """Whether ``value`` beats ``best`` by more than ``min_delta`` (NaN never does)."""
        return improved(value, self.best, self.mode, self.min_delta)

    def _check_state(self, state: Any, keys: Collection[str]) -> Mapping[str, Any]:
        """Checks that ``state`` is a mapping with exactly ``keys``, as ``get_state`` returns.

        Args:
            state: What ``set_state`` received.
            keys: The keys ``get_state`` returns, in order.

        Returns:
            ``state``.
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"`state` must be a dict from {type(self).__name__}.get_state(). "
                f"{v.received('state', state)}"
            )
        if set(state) != set(keys):
            raise ValueError(
                f"`state` must have exactly the keys {list(keys)}. {v.received('state', state)}"
            )
        return state

    def _config(self, *names: str) -> dict[str, Any]:
        """The attributes ``names``, in order, as a ``get_config`` dict."""
        return {name: getattr(self, name) for name in names}
