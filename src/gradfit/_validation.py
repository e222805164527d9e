"""Argument validators shared by every public entry point.

Each validator either returns the (normalised) value or raises a
``ValueError``/``TypeError`` whose message names the argument in backticks
and echoes what was received, e.g.::

    `epochs` must be a positive integer. Received: epochs=0
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np


def echo(value: Any) -> str:
    """Returns a short, readable rendering of ``value`` for error messages."""
    text = repr(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return text


def received(name: str, value: Any) -> str:
    """Returns the ``Received: name=value`` suffix used by every message."""
    return f"Received: {name}={echo(value)}"


def positive_int(name: str, value: Any) -> int:
    """Checks that ``value`` is an ``int`` (not a bool) greater than zero."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer. {received(name, value)}")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. {received(name, value)}")
    return int(value)


def optional_positive_int(name: str, value: Any) -> int | None:
    """Like :func:`positive_int`, but ``None`` is allowed and returned as is."""
    return None if value is None else positive_int(name, value)


def real_number(name: str, value: Any) -> float:
    """Checks that ``value`` is a real Python or NumPy number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
            return float(value)
        raise TypeError(f"`{name}` must be a real number. {received(name, value)}")
    return float(value)


def non_negative_float(name: str, value: Any) -> float:
    """Checks that ``value`` is a finite real number >= 0."""
    number = real_number(name, value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"`{name}` must be a finite, non-negative number. {received(name, value)}")
    return number


def float_in_unit_interval(name: str, value: Any) -> float:
    """Checks that ``value`` is a real number in ``[0, 1)``."""
    number = real_number(name, value)
    if not 0.0 <= number < 1.0:  # also rejects NaN
        raise ValueError(f"`{name}` must be in the interval [0, 1). {received(name, value)}")
    return number


def boolean(name: str, value: Any) -> bool:
    """Checks that ``value`` is a bool (or a NumPy bool)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be True or False. {received(name, value)}")
    return bool(value)


def optional_seed(name: str, value: Any) -> int | None:
    """Checks that ``value`` is ``None`` or a non-negative integer seed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be None or a non-negative integer. {received(name, value)}")
    if value < 0:
        raise ValueError(
            f"`{name}` must be None or a non-negative integer. {received(name, value)}"
        )
    return int(value)


def path(name: str, value: Any) -> str:
    """Checks that ``value`` is a non-empty ``str`` or ``os.PathLike`` and returns it as a str."""
    text = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(text, str):
        raise TypeError(f"`{name}` must be a str or an os.PathLike path. {received(name, value)}")
    if not text:
        raise ValueError(f"`{name}` must be a non-empty path. {received(name, value)}")
    return text
