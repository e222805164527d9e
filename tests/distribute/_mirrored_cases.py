"""MirroredStrategy over two logical CPUs against one device (run by conftest.py's fixture).

Usage: ``python _mirrored_cases.py GROUP [GROUP ...]``. The two logical CPU
devices must be configured before TensorFlow initialises its devices, so
these checks run in a fresh process -- one for every group, as each costs
seconds to start. Every case of a ``GROUP`` ("training", checked by
test_mirrored.py, or "api", checked by test_mirrored_api.py) trains the
same task twice from the same initial values -- on one device and under
``MirroredStrategy`` -- on the same global batches, and measures the
largest absolute difference of the variables and logs; the error cases
record the exception each bad input raises. The last line of stdout is one
JSON object ``{group: {case: {measure: value}}}``; stderr has each case's
seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _devices
import keras
import numpy as np
import tensorflow as tf
from _cases import Cases, largest, refusal, spread, values

import gradfit as gf

STRATEGY = _devices.STRATEGY
CASES = {"training": Cases(), "api": Cases()}


def case(group: str) -> Cases:
    """The registry of ``group``'s cases (``@case("training")`` registers one)."""
    return CASES[group]


def regression(n: int = 70, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy examples of a linear map of 3 features (70 = 4 batches of 16 and 6)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3 + 0.1 * rng.normal(size=n)
    return x, y.astype(np.float32)[:, None]


def log_difference(one: dict[str, list[float]], two: dict[str, list[float]]) -> float:
    assert sorted(one) == sorted(two), (sorted(one), sorted(two))
    return max(largest([one[k]], [two[k]]) for k in one)


def compare(build: Callable[[Any], gf.Trainer], fit: Callable[[gf.Trainer], Any]) -> dict[str, Any]:
    """Trains ``build(None)`` and ``build(STRATEGY)`` (made inside its scope) by ``fit``."""
    single = build(None)
    one = fit(single)
    with STRATEGY.scope():
        replicated = build(STRATEGY)
    two = fit(replicated)
    result = {
        "variables": largest(values(single), values(replicated)),
        "replicas": replicated.replicas.count,
        "copies": spread(STRATEGY, replicated),
    }
    if isinstance(one, gf.History):
        result["logs"] = log_difference(one.history, two.history)
        result["loss"] = next(iter(one.history.values()))[-1]
        result["last"] = {name: logs[-1] for name, logs in two.history.items()}
    return result


def supervised(rule: Callable[[], gf.UpdateRule], **kwargs: Any) -> Callable[[Any], gf.Trainer]:
    def build(strategy: Any) -> gf.Trainer:
        return gf.Trainer(gf.MLP((8,), seed=1), gf.L2(), rule(), strategy=strategy, **kwargs)

    return build


def fit_regression(*, shuffle: bool = True, batch_size: int = 16, n: int = 70, **kw: Any) -> Any:
    x, y = regression(n)
    return lambda t: t.fit(x, y, epochs=2, batch_size=batch_size, shuffle=shuffle, seed=3, **kw)


# -- training: every kind of rule, ordered and shuffled, ragged batches, datasets --------


@case("training")
def sgd_momentum_ordered() -> dict[str, Any]:
    return compare(supervised(lambda: gf.SGD(0.05, momentum=0.9)), fit_regression(shuffle=False))


@case("training")
def sgd_momentum_shuffled() -> dict[str, Any]:
    return compare(supervised(lambda: gf.SGD(0.05, momentum=0.9)), fit_regression())


@case("training")
def adam() -> dict[str, Any]:
    return compare(supervised(lambda: gf.Adam(0.01)), fit_regression())


@case("training")
def chain_clip_adam() -> dict[str, Any]:
    # A bound the gradients exceed: the clipping acts on the global gradient's norm.
    rule = lambda: gf.chain(gf.clip_by_global_norm(0.5), gf.Adam(0.01))  # noqa: E731
    return compare(supervised(rule), fit_regression())


@case("training")
def accumulate_sgd() -> dict[str, Any]:
    rule = lambda: gf.accumulate(2, gf.SGD(0.1, momentum=0.5))  # noqa: E731
    return compare(supervised(rule), fit_regression())


@case("training")
def keras_optimizer() -> dict[str, Any]:
    rule = lambda: gf.KerasOptimizer(keras.optimizers.Adam(0.01))  # noqa: E731
    return compare(supervised(rule), fit_regression())


@case("training")
def empty_replica() -> dict[str, Any]:
    # 65 examples in batches of 16: the last batch has one example, the second replica none.
    return compare(supervised(lambda: gf.Adam(0.01)), fit_regression(n=65))


@case("training")
def full_batch() -> dict[str, Any]:
    # The tutorial's full-batch descent on 1000 examples.
    x, y = regression(1000)
    build = lambda s: gf.Trainer(gf.LinearModel(seed=0), gf.L2(), gf.SGD(0.1), strategy=s)  # noqa: E731
    return compare(build, lambda t: t.fit(x, y, epochs=10))


@case("training")
def steps_per_execution() -> dict[str, Any]:
    # Chunks of 3 steps per call, every step's logs replayed to a batch callback.
    batches: dict[int, list[float]] = {}

    def build(strategy: Any) -> gf.Trainer:
        key = 0 if strategy is None else 1
        batches[key] = []
        keep = gf.LambdaCallback(
            on_train_batch_end=lambda b, logs: batches[key].append(logs["loss"])
        )
        return gf.Trainer(
            gf.MLP((8,), seed=1),
            gf.L2(),
            gf.Adam(0.01),
            strategy=strategy,
            steps_per_execution=3,
            callbacks=[keep],
        )

    result = compare(build, fit_regression())
    result["batch_logs"] = largest([batches[0]], [batches[1]])
    result["batches"] = len(batches[1])
    return result


class TwoRules(gf.Task):
    """Two models, each with its own rule and loss (a custom Task's own step).

    It also logs the global batch size its step sees (``gf.distribute.global_batch_size``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = gf.MLP((4,), seed=2), gf.LinearModel(seed=3)
        self.rule_a, self.rule_b = gf.SGD(0.05, momentum=0.9), gf.Adam(0.02)

    def build(self, batch: Any) -> None:
        x, _ = batch
        for model, rule in ((self.a, self.rule_a), (self.b, self.rule_b)):
            model.maybe_build(x.shape)
            rule.build(model.trainable_variables)

    def train_step(self, batch: Any) -> dict[str, tf.Tensor]:
        x, y = batch
        logs = {}
        pairs = (("a", self.a, self.rule_a), ("b", self.b, self.rule_b))
        for name, model, rule in pairs:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.abs(model(x) - y))
            variables = model.trainable_variables
            rule.apply(tape.gradient(loss, variables), variables)
            logs[f"{name}_loss"] = loss
        total = gf.distribute.global_batch_size()  # None on one device: the batch is global
        logs["examples"] = tf.cast(tf.shape(x)[0], tf.float32) if total is None else total
        return logs


@case("training")
def custom_task() -> dict[str, Any]:
    return compare(lambda s: gf.Trainer(TwoRules(), strategy=s), fit_regression())


@case("training")
def dataset_input() -> dict[str, Any]:
    # A tf.data input of global batches of 16, the last of 6.
    x, y = regression(70)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    return compare(supervised(lambda: gf.Adam(0.01)), lambda t: t.fit(dataset, epochs=3))


@case("training")
def dataset_empty_replica() -> dict[str, Any]:
    # The last global batch holds one example: one replica gets an empty batch.
    x, y = regression(65)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    build = supervised(lambda: gf.chain(gf.clip_by_global_norm(0.5), gf.Adam(0.01)))
    return compare(build, lambda t: t.fit(dataset, epochs=2))


@case("training")
def weighted_metrics() -> dict[str, Any]:
    # Sample weights (Keras's sum_over_batch_size), a metric and a weighted metric.
    x, y = regression(70)
    weights = np.linspace(0.1, 2.0, 70).astype(np.float32)

    def build(strategy: Any) -> gf.Trainer:
        return gf.Trainer(
            gf.MLP((8,), seed=1),
            gf.L2(),
            gf.Adam(0.01),
            metrics=["mae"],
            weighted_metrics={"wmae": gf.metrics.MeanAbsoluteError()},
            strategy=strategy,
        )

    fit = lambda t: t.fit(x, y, epochs=2, batch_size=16, seed=5, sample_weight=weights)  # noqa: E731
    return compare(build, fit)


@case("training")
def keras_model() -> dict[str, Any]:
    # A Keras model made inside the scope, with a Keras metric.
    def build(strategy: Any) -> gf.Trainer:
        keras.utils.set_random_seed(4)
        layers = [keras.Input((3,)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(1)]
        model = keras.Sequential(layers)
        return gf.Trainer(model, gf.L2(), gf.SGD(0.05), metrics=["mae"], strategy=strategy)

    return compare(build, fit_regression())


class SignMomentum(gf.UpdateRule):
    """A user's own rule, with a slot: steps along the sign of a gradient average."""

    def create_state(self, variables: Any) -> None:
        for var in variables:
            self.add_slot(var, "average")

    def apply(self, gradients: Any, variables: Any) -> None:
        lr = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            average = self.get_slot(var, "average")
            average.assign(0.8 * average + 0.2 * g)
            var.assign_sub(tf.cast(lr, var.dtype) * tf.sign(average))


@case("training")
def user_rule() -> dict[str, Any]:
    return compare(supervised(lambda: SignMomentum(0.01)), fit_regression())


@case("training")
def keras_cnn() -> dict[str, Any]:
    # TF's "custom training with tf.distribute" tutorial in small: a Keras CNN on 8x8 images,
    # 10 classes, cross-entropy from logits and accuracy, shuffled batches of 24 (12 + 12).
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(100, 8, 8, 1)).astype(np.float32)
    labels = (images[:, :4].mean(axis=(1, 2, 3)) * 10 % 10).astype(np.int32)

    def build(strategy: Any) -> gf.Trainer:
        keras.utils.set_random_seed(6)
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Flatten(),
                keras.layers.Dense(10),
            ]
        )
        loss = gf.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [gf.metrics.SparseCategoricalAccuracy()]
        return gf.Trainer(model, loss, gf.Adam(0.01), metrics=metrics, strategy=strategy)

    fit = lambda t: t.fit(images, labels, epochs=2, batch_size=24, seed=1)  # noqa: E731
    return compare(build, fit)


# -- api: evaluation, non-finite steps, checkpoints and backups, tracing, errors ---------


@case("api")
def evaluate_predict_validation() -> dict[str, Any]:
    x, y = regression(70)
    xv, yv = regression(30, seed=1)
    out: dict[int, Any] = {}

    def fit(t: gf.Trainer) -> gf.History:
        history = t.fit(x, y, epochs=2, batch_size=16, seed=3, validation_data=(xv, yv))
        key = len(out)
        out[key] = (t.evaluate(xv, yv, batch_size=8), t.predict(xv, batch_size=7))
        return history

    result = compare(supervised(lambda: gf.Adam(0.01), metrics=["mae"]), fit)
    (ev1, p1), (ev2, p2) = out[0], out[1]
    result["evaluate"] = max(abs(ev1[k] - ev2[k]) for k in ev1)
    result["predict"] = largest([p1], [p2])
    result["predict_shape"] = list(p2.shape)
    result["val_loss"] = out[0][0]["loss"]
    return result


def with_overflow(n: int = 70, row: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A target whose squared error overflows float32, in the second batch of an ordered epoch."""
    x, y = regression(n)
    y[row, 0] = 1e30
    return x, y


@case("api")
def nonfinite_skip() -> dict[str, Any]:
    x, y = with_overflow()
    build = supervised(lambda: gf.SGD(0.05, momentum=0.9), on_nonfinite="skip")
    result = compare(build, lambda t: t.fit(x, y, epochs=2, batch_size=16, shuffle=False))
    return result


@case("api")
def nonfinite_skip_dataset() -> dict[str, Any]:
    x, y = with_overflow()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    build = supervised(lambda: gf.Adam(0.01), on_nonfinite="skip")
    return compare(build, lambda t: t.fit(dataset, epochs=2))


@case("api")
def nonfinite_raise() -> dict[str, Any]:
    x, y = with_overflow()
    messages = []

    def fit(t: gf.Trainer) -> None:
        try:
            t.fit(x, y, epochs=2, batch_size=16, shuffle=False)
        except gf.NonFiniteError as err:
            messages.append(str(err))

    result = compare(supervised(lambda: gf.Adam(0.01)), fit)
    result["messages"] = messages
    return result


class CrashAt(gf.Callback):
    """Raises when epoch ``epoch`` begins (a run cut short after its backup)."""

    def __init__(self, epoch: int, step: int | None = None) -> None:
        super().__init__()
        self.epoch, self.step = epoch, step

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if epoch == self.epoch and self.step is None:
            raise KeyboardInterrupt("crash")

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.step is not None and self.trainer.state.epoch == self.epoch and batch == self.step:
            raise KeyboardInterrupt("crash")


def resumed(first: Any, second: Any, save_every: Any, crash: CrashAt) -> list[np.ndarray]:
    """A backup written by a trainer on ``first``, resumed by one on ``second``: variables."""
    x, y = regression(70)
    with tempfile.TemporaryDirectory() as directory:
        for strategy, callbacks in ((first, [crash]), (second, [])):
            with contextlib.ExitStack() as stack:
                if strategy is not None:
                    stack.enter_context(strategy.scope())
                trainer = supervised(lambda: gf.Adam(0.01))(strategy)
            backup = gf.callbacks.BackupAndRestore(directory, save_every)
            with contextlib.suppress(KeyboardInterrupt):  # (the first run crashes)
                trainer.fit(x, y, epochs=3, batch_size=16, seed=3, callbacks=[*callbacks, backup])
    return values(trainer)


@case("api")
def elastic_resume() -> dict[str, Any]:
    # Backups written on 2 replicas resume on 1 device (at an epoch's end and 3 steps into
    # an epoch) and the other way round, and end where one uninterrupted device does.
    x, y = regression(70)
    reference = supervised(lambda: gf.Adam(0.01))(None)
    reference.fit(x, y, epochs=3, batch_size=16, seed=3)
    goal = values(reference)
    return {
        "epoch_2to1": largest(goal, resumed(STRATEGY, None, "epoch", CrashAt(2))),
        "step_2to1": largest(goal, resumed(STRATEGY, None, 1, CrashAt(1, 2))),
        "step_1to2": largest(goal, resumed(None, STRATEGY, 1, CrashAt(1, 2))),
    }


@case("api")
def save_restore() -> dict[str, Any]:
    x, y = regression(70)
    trainer = supervised(lambda: gf.Adam(0.01))(STRATEGY)
    trainer.fit(x, y, epochs=2, batch_size=16, seed=3)
    with tempfile.TemporaryDirectory() as directory:
        path = trainer.save(os.path.join(directory, "ckpt"))
        single = supervised(lambda: gf.Adam(0.01))(None)
        single.fit(x[:16], y[:16], epochs=1, batch_size=16)  # built, then overwritten
        single.restore(path)
    return {"restored": largest(values(trainer), values(single))}


@case("api")
def tracing_and_jit() -> dict[str, Any]:
    x, y = regression(70)
    trainer = supervised(lambda: gf.Adam(0.01))(STRATEGY)
    trainer.fit(x, y, epochs=1, batch_size=16, seed=3)
    before = trainer.train_function.experimental_get_tracing_count()
    trainer.fit(x + 1, y, epochs=2, batch_size=16, seed=4)
    after = trainer.train_function.experimental_get_tracing_count()
    with STRATEGY.scope():
        in_scope = gf.Trainer(gf.MLP((8,), seed=1), gf.L2(), gf.SGD(0.1))
    return {
        "traces": before,
        "retraced": after - before,
        "jit_compile": trainer.jit_compile,
        "in_scope_replicas": in_scope.replicas.count,
    }


@case("api")
def refusals() -> dict[str, Any]:
    x, y = regression(70)
    keras_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    before = [w.numpy() for w in keras_model.weights]
    built = gf.MLP((8,), seed=1)
    built(tf.zeros([1, 3]))
    outside = keras.optimizers.Adam(0.01, name="outside_adam")  # (named: not "adam_2")
    rule = gf.Adam(0.01)
    cases = {
        "keras_model_outside": lambda: gf.Trainer(
            keras_model, gf.L2(), rule, strategy=STRATEGY
        ).fit(x, y, batch_size=16),
        "built_model_outside": lambda: gf.Trainer(built, gf.L2(), strategy=STRATEGY).fit(x, y),
        "keras_optimizer_outside": lambda: gf.Trainer(
            gf.MLP((8,)), gf.L2(), gf.KerasOptimizer(outside), strategy=STRATEGY
        ).fit(x, y),
        "jit_true": lambda: gf.Trainer(gf.MLP((8,)), gf.L2(), jit_compile=True, strategy=STRATEGY),
        "one_device": lambda: gf.Trainer(
            gf.MLP((8,)), gf.L2(), strategy=tf.distribute.OneDeviceStrategy("/cpu:0")
        ),
        "not_a_strategy": lambda: gf.Trainer(gf.MLP((8,)), gf.L2(), strategy="mirrored"),
    }
    result = {name: refusal(make) for name, make in cases.items()}
    result["keras_model_unchanged"] = largest(before, [w.numpy() for w in keras_model.weights])
    result["rule_iterations"] = int(rule.iterations.numpy())
    return result


def run_group(group: str) -> dict[str, Any]:
    """Every case of ``group``: its measurements, or the error that stopped it."""
    return CASES[group].run()


def main(groups: list[str]) -> None:
    print(json.dumps({group: run_group(group) for group in groups}))


if __name__ == "__main__":
    main(sys.argv[1:])
