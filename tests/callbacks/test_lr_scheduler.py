"""LearningRateScheduler: schedule(epoch, lr) at each epoch's start, no retracing, clear errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.callbacks import LearningRateScheduler


def data():
    x = np.linspace(-1, 1, 16).astype(np.float32)
    return x, 3 * x + 2


def test_sets_the_rate_before_each_epoch_without_retracing():
    x, y = data()
    calls = []

    def schedule(epoch, lr):
        calls.append((epoch, lr))
        return 0.4 if epoch == 0 else lr / 2

    model = gf.LinearModel(weight_init=0.0, bias_init=0.0)
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(1.0))
    history = trainer.fit(x, y, epochs=4, callbacks=[LearningRateScheduler(schedule)])

    rates = np.float32([0.4, 0.2, 0.1, 0.05])
    # `lr` is the current rate: the rule's 1.0 first, then the rate set for the epoch before.
    assert calls == [(0, 1.0), *((e, float(rates[e - 1])) for e in (1, 2, 3))]
    np.testing.assert_array_equal(np.float32(history.history["lr"]), rates)
    assert trainer.train_function.experimental_get_tracing_count() == 1

    # Full-batch gradient descent on mean((x W + b - y)^2), one step per epoch at its rate.
    W = b = 0.0
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    for lr in rates.astype(np.float64):
        error = x64 * W + b - y64
        W, b = W - lr * np.mean(2 * error * x64), b - lr * np.mean(2 * error)
    np.testing.assert_allclose([model.W.numpy(), model.b.numpy()], [W, b], rtol=1e-5)


def test_sets_a_wrapped_keras_optimizers_rate_from_numpy_and_tensor_values():
    x, y = data()
    rule = gf.KerasOptimizer(tf.optimizers.SGD(0.1))
    values = [np.float32(0.3), tf.constant(0.2), np.array(0.1)]
    scheduler = LearningRateScheduler(lambda epoch, lr: values[epoch])
    history = gf.Trainer(gf.LinearModel(), gf.L2(), rule).fit(x, y, epochs=3, callbacks=[scheduler])
    np.testing.assert_array_equal(np.float32(history.history["lr"]), np.float32([0.3, 0.2, 0.1]))


@pytest.mark.parametrize(
    "rule",
    [
        gf.SGD(gf.schedules.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5)),
        gf.KerasOptimizer(
            tf.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5))
        ),
    ],
    ids=["gradfit-schedule", "keras-schedule"],
)
def test_a_rule_following_a_schedule_is_refused_before_training(rule):
    x, y = data()
    model = gf.LinearModel(weight_init=0.5)
    scheduler = LearningRateScheduler(lambda epoch, lr: lr)
    with pytest.raises(TypeError, match=r"LearningRateScheduler.*schedule.*Received: update_rule="):
        gf.Trainer(model, gf.L2(), rule).fit(x, y, callbacks=[scheduler])
    assert model.W.numpy() == 0.5


@pytest.mark.parametrize(
    ("returned", "error", "match"),
    [
        ("fast", TypeError, r"`schedule` must return a real number.*at epoch 0.*'fast'"),
        (None, TypeError, r"`schedule` must return a real number.*None"),
        (-0.1, ValueError, r"`schedule` must return a finite, non-negative.*-0.1"),
        (float("nan"), ValueError, r"`schedule` must return a finite, non-negative.*nan"),
    ],
)
def test_a_bad_rate_is_rejected_before_the_epoch_trains(returned, error, match):
    x, y = data()
    model = gf.LinearModel(weight_init=0.5)
    rule = gf.SGD(0.1)
    with pytest.raises(error, match=match):
        gf.Trainer(model, gf.L2(), rule).fit(
            x, y, callbacks=[LearningRateScheduler(lambda epoch, lr: returned)]
        )
    assert model.W.numpy() == 0.5
    assert rule.learning_rate.numpy() == np.float32(0.1)


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        (0.1, r"`schedule` must be a callable.*Received: schedule=0.1"),
        (lambda epoch: 0.1, r"`schedule` must accept two positional arguments.*\(epoch\)"),
        (lambda epoch, lr, extra: 0.1, r"`schedule` must accept two positional arguments"),
    ],
)
def test_bad_schedules(schedule, match):
    with pytest.raises(TypeError, match=match):
        LearningRateScheduler(schedule)


def test_callables_with_defaults_or_without_a_signature_are_accepted():
    LearningRateScheduler(lambda epoch, lr=0.1, *rest: lr)
    LearningRateScheduler(max)  # a builtin: max(epoch, lr)
