"""What the distribution case scripts share: a registry of cases, and how they measure.

A case script registers its cases with a :class:`Cases` (``@CASES``) and
prints ``CASES.run()`` as JSON; a test then asserts on each case's
measurements. Import it after ``_devices`` (the devices come first).
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

import gradfit as gf

Case = Callable[[], dict[str, Any]]


class Cases:
    """A script's cases by name, registered by decorating them, run one after another."""

    def __init__(self) -> None:
        self.cases: dict[str, Case] = {}

    def __call__(self, fn: Case) -> Case:
        self.cases[fn.__name__] = fn
        return fn

    def run(self) -> dict[str, Any]:
        """Every case's measurements, or the error that stopped it (the test names the case)."""
        found: dict[str, Any] = {}
        for name, fn in self.cases.items():
            began = time.perf_counter()
            try:
                found[name] = fn()
            except Exception as err:  # recorded: the test names the case that failed
                found[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
                traceback.print_exc()
            print(f"{name}: {time.perf_counter() - began:.1f} s", file=sys.stderr)
        return found


def largest(a: Any, b: Any) -> float:
    """The largest absolute difference of two equally long lists of arrays (or numbers)."""
    assert len(a) == len(b), (len(a), len(b))
    pairs = zip(a, b, strict=True)
    return max(float(np.max(np.abs(np.asarray(p, np.float64) - np.asarray(q)))) for p, q in pairs)


def values(trainer: gf.Trainer) -> list[np.ndarray]:
    """Every variable of the task (model, rules' slots and counters), as arrays."""
    return [np.asarray(var.numpy()) for var in trainer.task.state_variables()]


def spread(strategy: Any, trainer: gf.Trainer) -> float:
    """The largest difference between two replicas' copies of a variable (0 when in sync)."""
    found = 0.0
    for var in trainer.task.state_variables():
        copies = [np.asarray(c.numpy()) for c in strategy.experimental_local_results(var)]
        found = max([found, *(float(np.max(np.abs(c - copies[0]), initial=0)) for c in copies)])
    return found


def refusal(make: Callable[[], Any]) -> dict[str, Any]:
    """The error ``make()`` raises, as ``{"type", "message"}`` (``None``: it raised none)."""
    try:
        make()
    except Exception as err:
        return {"type": type(err).__name__, "message": str(err)}
    return {"type": None, "message": ""}
