"""LearningRateScheduler: set the learning rate at the start of every epoch."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from gradfit import _validation as v
from gradfit.callbacks.base import Callback, Logs

if TYPE_CHECKING:
    from gradfit.update_rules import UpdateRule


def check_settable_learning_rate(rule: UpdateRule, callback: str) -> None:
    """Raises a ``TypeError`` unless ``rule``'s learning rate is a number held in a variable.

    A rule built with a schedule (gradfit's, or a Keras optimizer's) computes
    its rate from its step counter, and a callback cannot set it.

    Args:
        rule: The trainer's update rule.
        callback: The callback's name, for the message.
    """
    rate = rule.learning_rate
    if isinstance(rate, tf.Variable | keras.Variable):
        return
    raise TypeError(
        f"{callback} sets the learning rate, but `update_rule` follows a schedule "
        f"({rate!r}); a rule's rate can only be set when it was created with a number. Use "
        f"either the schedule or {callback}. {v.received('update_rule', rule)}"
    )


def learning_rate_value(name: str, value: Any, where: str) -> float:
    """Checks that ``value`` (a number, NumPy scalar or scalar tensor) is a rate; returns it."""
    number = value
    if isinstance(number, tf.Tensor | tf.Variable):
        number = number.numpy()
    if isinstance(number, np.ndarray) and number.ndim == 0:
        number = number[()]
    if isinstance(number, bool | np.bool_) or not isinstance(number, numbers.Real):
        raise TypeError(
            f"`{name}` must return a real number (the new learning rate); {where} it returned "
            f"{v.echo(value)} of type {type(value).__name__}."
        )
    rate = float(number)
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(
            f"`{name}` must return a finite, non-negative learning rate; {where} it returned "
            f"{v.echo(value)}."
        )
    return rate


class LearningRateScheduler(Callback):
    """Sets the learning rate from ``schedule(epoch, lr)`` at the start of every epoch.

    As in Keras: before epoch ``epoch`` (from 0), the update rule's learning
    rate becomes ``schedule(epoch, lr)``, where ``lr`` is the current rate as
    a Python float. The rate lives in a ``tf.Variable``, so the compiled step
    is not retraced. The epoch's ``lr`` log is the rate set for it.

    The rule must have been created with a number, not a schedule (a
    ``TypeError`` at the start of training says so): a per-step schedule
    passed to the rule is the other way to vary the rate, and is evaluated
    in-graph.

    Args:
        schedule: ``callable(epoch: int, lr: float) -> float``, returning a
            finite, non-negative rate.

    Example::

        halve_every_10 = gf.callbacks.LearningRateScheduler(
            lambda epoch, lr: lr / 2 if epoch and epoch % 10 == 0 else lr
        )
    """

    def __init__(self, schedule: Callable[[int, float], float]) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(
                "`schedule` must be a callable `schedule(epoch, lr) -> new lr`. "
                f"{v.received('schedule', schedule)}"
            )
        try:
            signature = inspect.signature(schedule)
        except (TypeError, ValueError):  # some builtins have no signature: trust them
            signature = None
        if signature is not None:
            try:
                signature.bind(0, 0.0)
            except TypeError:
                raise TypeError(
                    "`schedule` must accept two positional arguments, `schedule(epoch, lr)`; "
                    f"its signature is {signature}. {v.received('schedule', schedule)}"
                ) from None
        self.schedule = schedule

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Checks that the rule's learning rate can be set."""
        if self.trainer is not None:
            check_settable_learning_rate(self.trainer.update_rule, "LearningRateScheduler")

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        """Sets the rate for epoch ``epoch`` to ``schedule(epoch, lr)``."""
        if self.trainer is None:
            return
        rule = self.trainer.update_rule
        current = float(rule.current_learning_rate())
        rule.learning_rate = learning_rate_value(
            "schedule", self.schedule(epoch, current), f"at epoch {epoch}"
        )
