"""ReduceLROnPlateau: lower the learning rate when a monitored quantity stops improving."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from gradfit import _validation as v
from gradfit.callbacks.base import Logs
from gradfit.callbacks.lr_scheduler import check_settable_learning_rate
from gradfit.callbacks.monitor import MonitorCallback

logger = logging.getLogger("gradfit")

_STATE_KEYS = ("best", "wait", "cooldown_counter")


def _non_negative_int(name: str, value: Any) -> int:
    integral = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if not integral or value < 0:
        raise (ValueError if integral else TypeError)(
            f"`{name}` must be a non-negative integer. {v.received(name, value)}"
        )
    return int(value)


class ReduceLROnPlateau(MonitorCallback):
    """Multiplies the learning rate by ``factor`` when ``monitor`` stops improving.

    Keras's rule, epoch by epoch: an epoch improves on the best so far when
    the monitored value is lower by more than ``min_delta`` (higher, for
    ``mode="max"``); that resets ``wait``. Otherwise, outside a cooldown,
    ``wait`` grows, and when it reaches ``patience`` the rate becomes
    ``max(lr * factor, min_lr)`` (if it is above ``min_lr``), ``wait``
    restarts and a cooldown of ``cooldown`` epochs begins, during which
    ``wait`` stays 0. When there is no validation data, a ``"val_*"``
    monitor falls back to the training quantity (``"val_loss"`` to
    ``"loss"``) with a warning.

    The new rate is set on ``trainer.update_rule.learning_rate`` at the end
    of the epoch, so it shows in the next epoch's ``lr`` log. The rule must
    have been created with a number, not a schedule (a ``TypeError`` at the
    start of training says so).

    Args:
        monitor: The epoch log to watch, e.g. ``"val_loss"`` or ``"loss"``.
        factor: What the rate is multiplied by, in ``(0, 1)``.
        patience: Epochs without improvement before the rate is reduced.
        min_delta: Smallest change that counts as an improvement.
        cooldown: Epochs after a reduction during which no epoch counts
            against ``patience``.
        min_lr: The rate is never reduced below this.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (``"max"`` for monitors
            naming an accuracy, ``"min"`` otherwise).

    Attributes:
        best: The best monitored value seen.
        wait: Epochs since the last improvement (outside cooldowns).
        cooldown_counter: Epochs of cooldown left.

    Example::

        gf.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=3, min_lr=1e-5)
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        *,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        mode: str = "auto",
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        number = v.real_number("factor", factor)
        if not 0.0 < number < 1.0:  # also rejects NaN
            raise ValueError(
                "`factor` must be in the open interval (0, 1): it multiplies the learning rate "
                f"to reduce it. {v.received('factor', factor)}"
            )
        self.factor = number
        self.patience = _non_negative_int("patience", patience)
        self.cooldown = _non_negative_int("cooldown", cooldown)
        self.min_lr = v.non_negative_float("min_lr", min_lr)

    def _reset(self) -> None:
        super()._reset()
        self.wait = 0
        self.cooldown_counter = 0

    def get_state(self) -> dict[str, Any]:
        """Returns the counters a backup must save to resume exactly: plain Python numbers.

        ``{"best": float, "wait": int, "cooldown_counter": int}``. The
        learning rate itself lives in the update rule's variable.
        """
        return {
            "best": float(self.best),
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores the counters from :meth:`get_state`'s dict.

        Call it after ``on_train_begin``, which resets them.

        Args:
            state: A dict with exactly the keys ``get_state`` returns.
        """
        state = self._check_state(state, _STATE_KEYS)
        self.best = v.real_number("state['best']", state["best"])
        self.wait = _non_negative_int("state['wait']", state["wait"])
        self.cooldown_counter = _non_negative_int(
            "state['cooldown_counter']", state["cooldown_counter"]
        )

    def _check_run(self, available: Collection[str] | None) -> None:
        """Checks, before training, that the update rule's rate can be set."""
        if self.trainer is not None:
            check_settable_learning_rate(self.trainer.update_rule, "ReduceLROnPlateau")

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Tracks the best value and reduces the rate when patience runs out."""
        value = self.monitored_value(logs)
        if value is None or self.trainer is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.is_improvement(value):
            self.best, self.wait = value, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        rule = self.trainer.update_rule
        old = float(rule.current_learning_rate())
        # The rate is float32: compare in float32, as Keras does, so a rate already at
        # `min_lr` (rounded) is not "reduced" to itself again and again.
        if old > float(np.float32(self.min_lr)):
            new = max(old * self.factor, self.min_lr)
            rule.learning_rate = new
            logger.info(
                "Epoch %d: ReduceLROnPlateau reduced the learning rate from %g to %g.",
                epoch,
                old,
                new,
            )
            self.cooldown_counter = self.cooldown
            self.wait = 0
