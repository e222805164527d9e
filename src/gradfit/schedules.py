"""Learning-rate schedules: ``schedule(step) -> rate``, computed in-graph.

Pass a schedule wherever a learning rate goes; the rule evaluates it at its
``iterations`` counter inside the compiled step, so the k-th update (from 0)
uses ``schedule(k)`` and the step is traced once per fit::

    rule = gf.Adam(gf.schedules.CosineDecay(1e-3, decay_steps=10_000, warmup_steps=500))

Any ``callable(step) -> rate`` built from TensorFlow ops works as well, as
does a Keras ``LearningRateSchedule``. ``step`` is an int64 scalar tensor;
every schedule here returns a float32 scalar tensor. gradfit's schedules are
Keras ``LearningRateSchedule`` objects too, so a wrapped Keras optimizer
takes them: ``gf.KerasOptimizer(tf.optimizers.Adam(gf.schedules.Constant(1e-3)))``.
"""

from __future__ import annotations

import abc
import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from gradfit import _validation as v

__all__ = ["Constant", "CosineDecay", "ExponentialDecay", "PiecewiseConstant", "Schedule"]


def _rate(name: str, value: Any) -> float:
    return v.non_negative_float(name, value)


def _steps(name: str, value: Any, *, allow_zero: bool = False) -> int:
    integral = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if allow_zero and integral and value == 0:
        return 0
    return v.positive_int(name, value)


def _float_step(step: Any) -> tf.Tensor:
    return tf.cast(step, tf.float32)


class Schedule(keras.optimizers.schedules.LearningRateSchedule, abc.ABC):
    """Base class of gradfit's schedules: a pure function of the step number.

    Subclasses implement ``__call__`` and ``get_config`` (their constructor's
    arguments, for Keras serialisation).
    """

    @abc.abstractmethod
    def __call__(self, step: Any) -> tf.Tensor:
        """Returns the learning rate at ``step`` (an integer scalar tensor) as float32."""

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Returns the constructor's arguments."""


class Constant(Schedule):
    """The same rate at every step.

    Args:
        learning_rate: Finite, non-negative rate.
    """

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = _rate("learning_rate", learning_rate)

    def __call__(self, step: Any) -> tf.Tensor:
        """Returns ``learning_rate``."""
        del step
        return tf.constant(self.learning_rate, tf.float32)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor's arguments."""
        return {"learning_rate": self.learning_rate}

    def __repr__(self) -> str:
        return f"Constant({self.learning_rate})"


class ExponentialDecay(Schedule):
    """``learning_rate * decay_rate ** (step / decay_steps)`` (as Keras's ExponentialDecay).

    Args:
        learning_rate: Finite, non-negative rate at step 0.
        decay_steps: Positive number of steps over which the rate is
            multiplied by ``decay_rate``.
        decay_rate: Finite, positive factor.
        staircase: Decay in jumps: ``step / decay_steps`` rounded down.
    """

    def __init__(
        self,
        learning_rate: float,
        decay_steps: int,
        decay_rate: float,
        staircase: bool = False,
    ) -> None:
        self.learning_rate = _rate("learning_rate", learning_rate)
        self.decay_steps = _steps("decay_steps", decay_steps)
        self.decay_rate = v.non_negative_float("decay_rate", decay_rate)
        if self.decay_rate == 0:
            raise ValueError(
                f"`decay_rate` must be a finite, positive number. "
                f"{v.received('decay_rate', decay_rate)}"
            )
        self.staircase = v.boolean("staircase", staircase)

    def __call__(self, step: Any) -> tf.Tensor:
        """Returns the decayed rate at ``step``."""
        p = _float_step(step) / self.decay_steps
        if self.staircase:
            p = tf.floor(p)
        return self.learning_rate * tf.pow(tf.constant(self.decay_rate, tf.float32), p)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor's arguments."""
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
        }

    def __repr__(self) -> str:
        return (
            f"ExponentialDecay({self.learning_rate}, decay_steps={self.decay_steps}, "
            f"decay_rate={self.decay_rate}, staircase={self.staircase})"
        )


class PiecewiseConstant(Schedule):
    """``values[i]`` for steps in ``(boundaries[i-1], boundaries[i]]`` (as Keras's).

    That is ``values[0]`` while ``step <= boundaries[0]``, ``values[1]``
    while ``step <= boundaries[1]``, ..., and ``values[-1]`` after the last
    boundary.

    Args:
        boundaries: Strictly increasing, non-negative integer steps.
        values: Finite, non-negative rates; one more than ``boundaries``.
    """

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]) -> None:
        boundaries = self._sequence("boundaries", boundaries)
        values = self._sequence("values", values)
        for b in boundaries:
            if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 0:
                raise TypeError(
                    "`boundaries` must be non-negative integers. "
                    f"{v.received('boundaries', boundaries)}"
                )
        if any(b >= c for b, c in itertools.pairwise(boundaries)):
            raise ValueError(
                f"`boundaries` must be strictly increasing. {v.received('boundaries', boundaries)}"
            )
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "`values` must have one more element than `boundaries`. Received: "
                f"len(boundaries)={len(boundaries)}, len(values)={len(values)}"
            )
        self.boundaries = [int(b) for b in boundaries]
        self.values = [_rate("values", x) for x in values]

    @staticmethod
    def _sequence(name: str, value: Any) -> list[Any]:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise TypeError(f"`{name}` must be a list. {v.received(name, value)}")
        return list(value)

    def __call__(self, step: Any) -> tf.Tensor:
        """Returns the value of the interval holding ``step``."""
        step = tf.cast(step, tf.int64)
        passed = tf.cast(step > tf.constant(self.boundaries, tf.int64), tf.int32)
        return tf.gather(tf.constant(self.values, tf.float32), tf.reduce_sum(passed))

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor's arguments."""
        return {"boundaries": list(self.boundaries), "values": list(self.values)}

    def __repr__(self) -> str:
        return f"PiecewiseConstant(boundaries={self.boundaries}, values={self.values})"


class CosineDecay(Schedule):
    """Optional linear warm-up, then a half cosine from ``learning_rate`` down to a floor.

    For ``step < warmup_steps`` the rate rises linearly from ``warmup_start``
    to ``learning_rate``; over the next ``decay_steps`` steps it follows
    ``learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha)``
    (``s`` counted from the end of the warm-up), and then stays at
    ``alpha * learning_rate``. This is Keras's CosineDecay with
    ``initial_learning_rate=warmup_start`` and ``warmup_target=learning_rate``.

    Args:
        learning_rate: Finite, non-negative peak rate.
        decay_steps: Positive length of the cosine decay.
        alpha: Final rate as a fraction of ``learning_rate``, in ``[0, 1]``.
        warmup_steps: Non-negative length of the linear warm-up; 0 for none.
        warmup_start: Finite, non-negative rate at step 0 when warming up.
    """

    def __init__(
        self,
        learning_rate: float,
        decay_steps: int,
        *,
        alpha: float = 0.0,
        warmup_steps: int = 0,
        warmup_start: float = 0.0,
    ) -> None:
        self.learning_rate = _rate("learning_rate", learning_rate)
        self.decay_steps = _steps("decay_steps", decay_steps)
        self.alpha = v.real_number("alpha", alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(
                f"`alpha` must be in the interval [0, 1]. {v.received('alpha', alpha)}"
            )
        self.warmup_steps = _steps("warmup_steps", warmup_steps, allow_zero=True)
        self.warmup_start = _rate("warmup_start", warmup_start)

    def __call__(self, step: Any) -> tf.Tensor:
        """Returns the warmed-up or cosine-decayed rate at ``step``."""
        step = tf.minimum(_float_step(step), float(self.warmup_steps + self.decay_steps))
        decayed = step - self.warmup_steps
        completed = tf.maximum(decayed, 0.0) / self.decay_steps
        cosine = 0.5 * (1.0 + tf.cos(tf.constant(math.pi, tf.float32) * completed))
        rate = self.learning_rate * ((1 - self.alpha) * cosine + self.alpha)
        if not self.warmup_steps:
            return rate
        warm = (self.learning_rate - self.warmup_start) * (
            step / self.warmup_steps
        ) + self.warmup_start
        return tf.where(decayed < 0, warm, rate)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor's arguments."""
        return {
            "learning_rate": self.learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "warmup_steps": self.warmup_steps,
            "warmup_start": self.warmup_start,
        }

    def __repr__(self) -> str:
        warmup = (
            f", warmup_steps={self.warmup_steps}, warmup_start={self.warmup_start}"
            if self.warmup_steps
            else ""
        )
        return (
            f"CosineDecay({self.learning_rate}, decay_steps={self.decay_steps}, "
            f"alpha={self.alpha}{warmup})"
        )
