"""MirroredStrategy review cases against a reference (run by test_review.py).

Usage: ``python _review_cases.py``. Two logical CPU devices must be
configured before TensorFlow initialises its devices, so these checks run
in a fresh process, all in one. Mixed precision trains the same task on
one device and under ``MirroredStrategy`` and measures the differences;
the other cases record what a bad use raises and what it changed. The
last line of stdout is one JSON object ``{case: {measure: value}}``.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _devices
import keras
import numpy as np
import tensorflow as tf
from _cases import Cases, largest, refusal, spread, values

import gradfit as gf

STRATEGY = _devices.STRATEGY
case = Cases()  # (@case registers one)


def regression(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy examples of a linear map of 3 features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


# -- mixed precision: dynamic loss scaling over the replicas ---------------------------------


def half_model() -> keras.Model:
    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1, dtype="float32"),
        ]
    )


def mixed_fit(strategy: Any, x: np.ndarray, y: np.ndarray) -> gf.Trainer:
    """SGD with momentum on a mixed_float16 model, 2 epochs of 16 (ordered)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope() if strategy else contextlib.nullcontext():
            scale = gf.training.LossScale(2.0**8, growth_steps=1000)
            task = gf.SupervisedTask(half_model(), gf.L2(), gf.SGD(0.05, 0.9), loss_scale=scale)
            trainer = gf.Trainer(task, strategy=strategy)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    trainer.fit(x, y, epochs=2, batch_size=16, shuffle=False)
    return trainer


@case
def mixed_precision() -> dict[str, Any]:
    # 70 examples: 4 batches of 16 and one of 6 per epoch; then the same with a target
    # that overflows float16 in the second batch, on replica 1's part only.
    x, y = regression(70)
    result: dict[str, Any] = {}
    for name, rows in (("finite", []), ("overflow", [24])):
        y_ = y.copy()
        y_[rows] = 6e4
        one, two = mixed_fit(None, x, y_), mixed_fit(STRATEGY, x, y_)
        result[name] = {
            "variables": largest(values(one)[:4], values(two)[:4]),  # (the model's)
            "iterations": [int(t.task.update_rule.iterations.numpy()) for t in (one, two)],
            "scale": [float(t.task.loss_scale.scale.numpy()) for t in (one, two)],
            "spread": spread(STRATEGY, two),
        }
    return result


# -- a task of its own whose loss is a sum, by global_batch_size()'s recipe -------------------


class SumOfSquares(gf.Task):
    """Loss: the sum of squared errors over the batch (not a mean)."""

    def __init__(self) -> None:
        super().__init__()
        self.model, self.rule = gf.MLP((4,), seed=2), gf.SGD(0.005)

    def build(self, batch: Any) -> None:
        self.model.maybe_build(batch[0].shape)
        self.rule.build(self.model.trainable_variables)

    def train_step(self, batch: Any) -> dict[str, tf.Tensor]:
        x, y = batch
        total = gf.distribute.global_batch_size()
        with tf.GradientTape() as tape:
            errors = tf.square(self.model(x) - y)
            loss = tf.reduce_sum(errors) if total is None else tf.reduce_mean(errors) * total
        variables = self.model.trainable_variables
        self.rule.apply(tape.gradient(loss, variables), variables)
        return {"loss": loss}


@case
def sum_loss_recipe() -> dict[str, Any]:
    x, y = regression(70)
    one = gf.Trainer(SumOfSquares())
    with STRATEGY.scope():
        two = gf.Trainer(SumOfSquares())
    losses = [t.fit(x, y, epochs=1, batch_size=16, seed=1).history["loss"] for t in (one, two)]
    return {"variables": largest(values(one), values(two)), "loss": largest(*losses)}


# -- refusals ---------------------------------------------------------------------------------


@case
def another_strategys_scope() -> dict[str, Any]:
    x, y = regression(32)
    other = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    plain = gf.Trainer(gf.MLP((4,), seed=1), gf.L2(), gf.SGD(0.1))
    with STRATEGY.scope():
        mirrored = gf.Trainer(gf.MLP((4,), seed=1), gf.L2(), gf.SGD(0.1))
    with other.scope():
        result = {
            "plain": refusal(lambda: plain.fit(x, y, batch_size=16)),
            "mirrored": refusal(lambda: mirrored.fit(x, y, batch_size=16)),
            "evaluate": refusal(lambda: plain.evaluate(x, y)),
            "predict": refusal(lambda: mirrored.predict(x)),
        }
    result["built"] = [len(t.task.model.trainable_variables) for t in (plain, mirrored)]
    return result


@case
def distributed_dataset() -> dict[str, Any]:
    x, y = regression(32)
    dataset = STRATEGY.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    )
    with STRATEGY.scope():
        trainer = gf.Trainer(gf.MLP((4,), seed=1), gf.L2(), gf.SGD(0.1))
    return refusal(lambda: trainer.fit(dataset))


def results() -> dict[str, Any]:
    """Every case's measurements, or the error that stopped it."""
    return case.run()


def main() -> None:
    print(json.dumps(results()))


if __name__ == "__main__":
    main()
