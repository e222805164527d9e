"""MirroredStrategy: a Keras optimizer updating inside a conditional (run by test_keras_cond.py).

Usage: ``python _keras_cond_cases.py``. Two logical CPU devices must be
configured before TensorFlow initialises its devices, so these checks run
in a fresh process, all in one. Each case trains the same task on one
device and under ``MirroredStrategy`` on the same global batches (70
examples: four batches of 16 and a ragged one of 6 per epoch) and measures
the differences; the last records what Keras's own gradient accumulation
raises. The last line of stdout is one JSON object ``{case: {measure: value}}``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _devices
import keras
import numpy as np
from _cases import Cases, largest, spread, values

import gradfit as gf

STRATEGY = _devices.STRATEGY
case = Cases()  # (@case registers one)


def regression(n: int = 70) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy examples of a linear map of 3 features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


def half_model() -> keras.Model:
    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1, dtype="float32"),
        ]
    )


def fit(strategy: Any, make: Callable[[], Any], y: np.ndarray, policy: str) -> gf.Trainer:
    """A trainer of ``make()`` (a task or a model, rule) fitted 2 epochs of 16 (ordered)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope() if strategy else contextlib.nullcontext():
            trainer = gf.Trainer(*make(), strategy=strategy)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    trainer.fit(regression()[0], y, epochs=2, batch_size=16, shuffle=False)
    return trainer


def compare(make: Callable[[], Any], y: np.ndarray, policy: str = "float32") -> dict[str, Any]:
    """One device against two replicas: differences, iterations, the replicas' spread."""
    one, two = fit(None, make, y, policy), fit(STRATEGY, make, y, policy)
    return {
        "variables": largest(values(one), values(two)),
        "count": [len(values(one)), len(values(two))],
        "iterations": [int(t.task.update_rule.iterations.numpy()) for t in (one, two)],
        "spread": spread(STRATEGY, two),
        "trainers": (one, two),
    }


def without_trainers(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != "trainers"}


@case
def accumulate() -> dict[str, Any]:
    # 10 micro-batches (the last of each epoch ragged): 5 Adam updates of the mean of two.
    def make() -> tuple[Any, ...]:
        rule = gf.accumulate(2, gf.KerasOptimizer(keras.optimizers.Adam(0.01)))
        return gf.MLP((4,), seed=1), gf.L2(), rule

    result = compare(make, regression()[1])
    one, two = result["trainers"]
    inner = [int(t.task.update_rule.rule.optimizer.iterations.numpy()) for t in (one, two)]
    return {**without_trainers(result), "updates": inner}


@case
def mixed_precision() -> dict[str, Any]:
    # Dynamic loss scaling with a Keras Adam; then a target that overflows float16 in the
    # second batch, on replica 1's part only (the step is skipped on both replicas).
    result: dict[str, Any] = {}
    for name, rows in (("finite", []), ("overflow", [24])):
        y = regression()[1].copy()
        y[rows] = 6e4

        def make() -> tuple[Any, ...]:
            rule = gf.KerasOptimizer(keras.optimizers.Adam(0.01))
            scale = gf.training.LossScale(2.0**8, growth_steps=1000)
            return (gf.SupervisedTask(half_model(), gf.L2(), rule, loss_scale=scale),)

        measured = compare(make, y, "mixed_float16")
        one, two = measured["trainers"]
        keras_steps = [int(t.task.update_rule.optimizer.iterations.numpy()) for t in (one, two)]
        result[name] = {
            **without_trainers(measured),
            "keras_iterations": keras_steps,
            "scale": [float(t.task.loss_scale.scale.numpy()) for t in (one, two)],
        }
    return result


@case
def keras_accumulation() -> dict[str, Any]:
    # Keras's own gradient_accumulation_steps: its update is a merge_call inside its own cond.
    x, y = regression(32)
    with STRATEGY.scope():
        rule = gf.KerasOptimizer(keras.optimizers.SGD(0.1, gradient_accumulation_steps=2))
        trainer = gf.Trainer(gf.MLP((4,), seed=1), gf.L2(), rule)
    try:
        trainer.fit(x, y, batch_size=16)
        refused = {"type": None, "message": ""}
    except Exception as err:
        refused = {"type": type(err).__name__, "message": str(err)}
    return {**refused, "changed": int(rule.iterations.numpy() + rule.optimizer.iterations.numpy())}


def results() -> dict[str, Any]:
    """Every case's measurements, or the error that stopped it."""
    return case.run()


def main() -> None:
    print(json.dumps(results()))


if __name__ == "__main__":
    main()
