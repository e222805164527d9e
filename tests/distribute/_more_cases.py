"""MirroredStrategy features against a reference (run by test_mirrored_more.py).

Usage: ``python _more_cases.py``. Two logical CPU devices must be
configured before TensorFlow initialises its devices, so these checks run
in a fresh process, all in one. Most cases train the same task twice from
the same initial values -- on one device and under ``MirroredStrategy`` --
on the same global batches and measure the largest absolute differences
of the variables, the epoch logs and every step's logs; the Batch
Normalization case compares with Keras's own ``fit`` under the same
strategy; the error cases record what each bad input raises. The last line
of stdout is one JSON object ``{case: {measure: value}}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _devices
import keras
import numpy as np
import tensorflow as tf
from _cases import Cases, largest, refusal, values

import gradfit as gf

STRATEGY = _devices.STRATEGY
case = Cases()  # (@case registers one)


def classes(n: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples of 3 features, labelled by the largest of ``num_classes`` projections."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    scores = x @ rng.normal(size=(3, num_classes)) + 0.3 * rng.normal(size=(n, num_classes))
    if num_classes == 1:
        return x, (scores > 0).astype(np.float32)
    return x, scores.argmax(axis=1).astype(np.int32)


class Steps(gf.Callback):
    """Keeps every step's logs; asks for ``grad_norm`` when ``norm``."""

    def __init__(self, norm: bool = False) -> None:
        super().__init__()
        self.wants_grad_norm = norm
        self.logs: list[dict[str, float]] = []

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.logs.append(dict(logs or {}))


def step_differences(one: Steps, two: Steps) -> dict[str, float]:
    """Each step log's largest difference (``steps``: the numbers of steps, which must agree)."""
    assert len(one.logs) == len(two.logs), (len(one.logs), len(two.logs))
    names = sorted(one.logs[0])
    return {
        name: largest([s[name] for s in one.logs], [s[name] for s in two.logs]) for name in names
    }


def compare(
    build: Callable[[Any, Steps], gf.Trainer], fit: Callable[[gf.Trainer], Any], norm: bool = False
) -> dict[str, Any]:
    """``fit`` of ``build(None, steps)`` against ``build(STRATEGY, steps)`` (in its scope)."""
    steps = Steps(norm), Steps(norm)
    single = build(None, steps[0])
    one = fit(single)
    with STRATEGY.scope():
        replicated = build(STRATEGY, steps[1])
    two = fit(replicated)
    histories = [h.history if isinstance(h, gf.History) else h for h in (one, two)]
    return {
        "variables": largest(values(single), values(replicated)),
        "epoch": {k: largest(histories[0][k], histories[1][k]) for k in histories[0]},
        "step": step_differences(*steps),
        "steps": len(steps[1].logs),
        "last": {k: v[-1] for k, v in histories[0].items()},
        "norms": [s["grad_norm"] for s in steps[0].logs] if norm else [],
    }


# -- (c) tf.data input of unknown length, and (a) Keras metrics on it ----------------------


@case
def unknown_length() -> dict[str, Any]:
    # 65 examples, batches of 16 through a filter (unknown cardinality): the last global
    # batch holds one example, so one replica's is empty; 3 steps per call, 2 epochs.
    x, y = classes(65, 1)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(16)

    def build(strategy: Any, steps: Steps) -> gf.Trainer:
        return gf.Trainer(
            gf.MLP((8,), seed=1),
            keras.losses.BinaryCrossentropy(from_logits=True),
            gf.Adam(0.02),
            metrics=[keras.metrics.AUC(from_logits=True, name="auc")],
            strategy=strategy,
            steps_per_execution=3,
            callbacks=[steps],
        )

    result = compare(build, lambda t: t.fit(dataset, epochs=2))
    result["cardinality"] = int(dataset.cardinality())
    return result


def generator_dataset(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    def rows() -> Any:
        yield from zip(x, y, strict=True)

    spec = (tf.TensorSpec([3], tf.float32), tf.TensorSpec([1], tf.float32))
    return tf.data.Dataset.from_generator(rows, output_signature=spec).batch(16)


@case
def generator_whole_epoch_per_call() -> dict[str, Any]:
    # A generator (unknown length), every epoch in one call, ragged last batch of 6.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(70, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    dataset = generator_dataset(x, y)

    def build(strategy: Any, steps: Steps) -> gf.Trainer:
        return gf.Trainer(
            gf.MLP((8,), seed=1), gf.L2(), gf.SGD(0.05), strategy=strategy, callbacks=[steps]
        )

    result = compare(build, lambda t: t.fit(dataset, epochs=2))
    result["cardinality"] = int(dataset.cardinality())
    return result


# -- (a) Keras metrics in fit, validation and evaluate; (b) grad_norm ------------------------


@case
def keras_metrics_and_grad_norm() -> dict[str, Any]:
    # Three classes, sample weights, a Keras metric and a weighted one, a Keras loss as a
    # weighted metric (its batch value divides by the examples, not the weights), validation data,
    # 3 steps per call, a callback asking for grad_norm; then evaluate.
    x, y = classes(70, 3)
    xv, yv = classes(30, 3, seed=1)
    weights = np.linspace(0.2, 2.0, 70).astype(np.float32)
    evaluated: list[dict[str, float]] = []

    def build(strategy: Any, steps: Steps) -> gf.Trainer:
        return gf.Trainer(
            gf.MLP((8,), units=3, seed=1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            gf.SGD(0.1),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="kacc")],
            weighted_metrics={
                "wkacc": keras.metrics.SparseCategoricalAccuracy(name="wkacc"),
                "wkloss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            },
            strategy=strategy,
            steps_per_execution=3,
            callbacks=[steps],
        )

    def fit(t: gf.Trainer) -> gf.History:
        history = t.fit(
            x, y, epochs=2, batch_size=16, seed=3, sample_weight=weights, validation_data=(xv, yv)
        )
        evaluated.append(t.evaluate(x, y, batch_size=8))
        return history

    result = compare(build, fit, norm=True)
    result["evaluate"] = {k: abs(evaluated[0][k] - evaluated[1][k]) for k in evaluated[0]}
    return result


class MeanLoss(gf.Task):
    """A task of its own whose running log is a ``keras.metrics.Mean`` of its losses."""

    def __init__(self) -> None:
        super().__init__()
        self.model, self.rule = gf.MLP((4,), seed=2), gf.SGD(0.05)
        self.mean = keras.metrics.Mean(name="mean_loss")

    def build(self, batch: Any) -> None:
        self.model.maybe_build(batch[0].shape)
        self.rule.build(self.model.trainable_variables)

    def train_step(self, batch: Any) -> dict[str, tf.Tensor]:
        x, y = batch
        with tf.GradientTape() as tape:
            errors = tf.square(self.model(x) - y)
            loss = tf.reduce_mean(errors)
        self.rule.apply(tape.gradient(loss, self.model.trainable_variables), self.model.variables)
        self.mean.update_state(errors)
        return {"loss": loss, "mean_loss": self.mean.result()}

    def log_kinds(self) -> dict[str, str]:
        return {"mean_loss": "running"}

    def running_logs(self) -> dict[str, tf.Tensor]:
        return {"mean_loss": self.mean.result()}

    def reset_metrics(self) -> None:
        self.mean.reset_state()


@case
def custom_task_running_mean() -> dict[str, Any]:
    # 65 examples: the last batch's one example is on one replica (their counts differ).
    rng = np.random.default_rng(4)
    x = rng.normal(size=(65, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    build = lambda s, steps: gf.Trainer(MeanLoss(), strategy=s, callbacks=[steps])  # noqa: E731
    return compare(build, lambda t: t.fit(x, y, epochs=2, batch_size=16, seed=1))


# -- Keras optimizers' clipping -------------------------------------------------------------


@case
def keras_clipping() -> dict[str, Any]:
    # Bounds the gradients exceed (their norms, logged as grad_norm, go above 1).
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = 3 * (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    results = {}
    for option in ({"clipnorm": 0.5}, {"global_clipnorm": 0.5}, {"clipvalue": 0.1}):

        def build(strategy: Any, steps: Steps, option: Any = option) -> gf.Trainer:
            rule = gf.KerasOptimizer(keras.optimizers.SGD(0.05, **option))
            return gf.Trainer(
                gf.MLP((8,), seed=1), gf.L2(), rule, strategy=strategy, callbacks=[steps]
            )

        fit = lambda t: t.fit(x, y, epochs=1, batch_size=16, seed=1)  # noqa: E731
        results[next(iter(option))] = compare(build, fit, norm=True)
    return results


# -- Keras BatchNormalization: against Keras's own fit under the strategy ------------------


def batchnorm_model(synchronized: bool = False) -> keras.Model:
    keras.utils.set_random_seed(4)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(synchronized=synchronized),
            keras.layers.Activation("tanh"),
            keras.layers.Dense(1),
        ]
    )


@case
def batchnorm_against_keras_fit() -> dict[str, Any]:
    rng = np.random.default_rng(6)
    x = 3 * rng.normal(size=(64, 3)).astype(np.float32) + 1
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    fit = {"epochs": 2, "batch_size": 16, "shuffle": False}
    with STRATEGY.scope():
        reference = batchnorm_model()
        reference.compile(keras.optimizers.SGD(0.05), keras.losses.MeanSquaredError())
    keras_history = reference.fit(x, y, verbose=0, **fit)
    with STRATEGY.scope():
        model = batchnorm_model()
        trainer = gf.Trainer(
            model, keras.losses.MeanSquaredError(), gf.SGD(0.05), strategy=STRATEGY
        )
    history = trainer.fit(x, y, **fit)
    single = batchnorm_model()
    gf.Trainer(single, keras.losses.MeanSquaredError(), gf.SGD(0.05)).fit(x, y, **fit)
    moving = [i for i, var in enumerate(model.variables) if "moving" in var.path]
    return {
        "variables": largest(
            [v.numpy() for v in reference.variables], [v.numpy() for v in model.variables]
        ),
        "moving": largest(
            [reference.variables[i].numpy() for i in moving],
            [model.variables[i].numpy() for i in moving],
        ),
        "moving_count": len(moving),
        "loss": largest(keras_history.history["loss"], history.history["loss"]),
        "one_device": largest(
            [v.numpy() for v in single.variables], [v.numpy() for v in model.variables]
        ),
    }


@case
def synchronized_batchnorm() -> dict[str, Any]:
    # BatchNormalization(synchronized=True) normalises by the global batch's statistics:
    # under the strategy it equals one device's plain BatchNormalization.
    rng = np.random.default_rng(6)
    x = 3 * rng.normal(size=(64, 3)).astype(np.float32) + 1
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    fit = {"epochs": 2, "batch_size": 16, "seed": 1}
    single = batchnorm_model()
    one = gf.Trainer(single, gf.L2(), gf.SGD(0.05))
    one_history = one.fit(x, y, **fit)
    with STRATEGY.scope():
        model = batchnorm_model(synchronized=True)
        trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.05), strategy=STRATEGY)
    history = trainer.fit(x, y, **fit)
    return {
        "variables": largest(
            [v.numpy() for v in single.variables], [v.numpy() for v in model.variables]
        ),
        "loss": largest(one_history.history["loss"], history.history["loss"]),
        "evaluate": abs(one.evaluate(x, y)["loss"] - trainer.evaluate(x, y)["loss"]),
    }


# -- refusals ---------------------------------------------------------------------------------


class MeanAggregated(keras.metrics.Metric):
    """A Keras metric whose state is averaged across replicas (which gradfit cannot sum)."""

    def __init__(self, name: str = "mean_aggregated", dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable((), "zeros", aggregation="mean", name="total")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        self.total.assign_add(tf.reduce_sum(y_pred))

    def result(self) -> Any:
        return self.total


class NoRunningLogs(MeanLoss):
    def running_logs(self) -> dict[str, tf.Tensor]:
        return {}


@case
def refusals() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = x[:, :1]
    with STRATEGY.scope():
        metric = MeanAggregated()
        rule = gf.SGD(0.1)
        trainer = gf.Trainer(gf.MLP((4,), seed=1), gf.L2(), rule, metrics=[metric])
        custom = gf.Trainer(NoRunningLogs())
    result = {
        "mean_aggregated": refusal(lambda: trainer.fit(x, y, batch_size=16)),
        "no_running_logs": refusal(lambda: custom.fit(x, y, batch_size=16)),
        "rule_iterations": int(rule.iterations.numpy()),
        "custom_iterations": int(custom.task.rule.iterations.numpy()),
    }
    return result


def results() -> dict[str, Any]:
    """Every case's measurements, or the error that stopped it."""
    return case.run()


def main() -> None:
    print(json.dumps(results()))


if __name__ == "__main__":
    main()
