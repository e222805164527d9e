"""ReduceLROnPlateau: Keras's rule on scripted losses, fallback, schedules refused, state."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.callbacks import Callback, LambdaCallback, ReduceLROnPlateau


class FeedLosses(Callback):
    """Overwrites the epoch's logged loss with scripted values (runs before the callback)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["loss"] = self.values[epoch]


def data():
    x = np.linspace(-1, 1, 16).astype(np.float32)
    return x, 2 * x + 1


def drive(callback, rule, losses, metrics=("loss", "lr")):
    """Runs the callback's hooks on scripted losses; returns the rate after each epoch."""
    callback.set_trainer(gf.Trainer(gf.LinearModel(), gf.L2(), rule))
    callback.set_params({"epochs": len(losses), "steps": 1, "metrics": list(metrics)})
    callback.on_train_begin()
    rates = []
    for epoch, loss in enumerate(losses):
        callback.on_epoch_end(epoch, {"loss": loss})
        rates.append(float(rule.current_learning_rate()))
    return rates


def test_reduces_after_patience_epochs_without_improvement_in_a_fit():
    x, y = data()
    rule = gf.SGD(0.1)
    reduce = ReduceLROnPlateau("loss", factor=0.5, patience=2, min_delta=0.0)
    after = []
    record = LambdaCallback(on_epoch_end=lambda e, logs: after.append(rule.learning_rate.numpy()))
    losses = [5, 4, 4, 4, 4, 3, 3, 3]
    history = gf.Trainer(gf.LinearModel(), gf.L2(), rule).fit(
        x, y, epochs=len(losses), callbacks=[FeedLosses(losses), reduce, record]
    )
    # Epoch 1 sets best=4; epochs 2 and 3 do not improve: wait reaches 2 at epoch 3, the rate
    # halves and wait restarts. Epoch 4: wait 1. Epoch 5: best=3. Epochs 6, 7: wait 2, halve.
    np.testing.assert_array_equal(after, np.float32([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025]))
    # The epoch's "lr" log is the rate it trained with; a reduction shows from the next epoch.
    np.testing.assert_array_equal(history.history["lr"], np.float32([0.1] * 4 + [0.05] * 4))
    assert (reduce.best, reduce.wait, reduce.cooldown_counter) == (3, 0, 0)


def test_cooldown():
    # patience 1: every non-improving epoch outside a cooldown reduces. After a reduction at
    # epoch e (cooldown_counter=2), epoch e+1 is in cooldown (counter -> 1, not counted);
    # epoch e+2 counts the counter down to 0 and, no longer in cooldown, counts and reduces.
    rates = drive(ReduceLROnPlateau("loss", 0.5, 1, cooldown=2), gf.SGD(0.1), [5.0] * 7)
    np.testing.assert_array_equal(
        np.float32(rates), np.float32([0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])
    )
    no_cooldown = drive(ReduceLROnPlateau("loss", 0.5, 1), gf.SGD(0.1), [5.0] * 4)
    np.testing.assert_array_equal(np.float32(no_cooldown), np.float32([0.1, 0.05, 0.025, 0.0125]))


def test_min_lr_and_min_delta():
    # patience 0: each epoch that does not improve on the best by more than 0.5 halves the
    # rate, down to 0.03: 0.1 -> 0.05 -> max(0.025, 0.03) = 0.03, then no further change.
    reduce = ReduceLROnPlateau("loss", 0.5, 0, min_delta=0.5, min_lr=0.03)
    rates = drive(reduce, gf.SGD(0.1), [5.0, 4.6, 4.55, 4.4, 4.0, 3.95])
    # 4.6 and 4.55 are not below 5.0 - 0.5: reductions. 4.4 is: best = 4.4. 4.0 and 3.95 are
    # not below 3.9: no improvement, but the rate is at min_lr, so it stays and wait grows.
    np.testing.assert_array_equal(
        np.float32(rates), np.float32([0.1, 0.05, 0.03, 0.03, 0.03, 0.03])
    )
    assert (reduce.best, reduce.wait) == (4.4, 2)


@pytest.mark.parametrize(
    ("losses", "kwargs"),
    [
        ([5, 4, 4, 4.5, 3, 3, 3, 3.5, 2, 2, 2, 2, 2], {"patience": 2}),
        ([1, 2, 3, 3, 2, 1, 0.5, 0.6, 0.7, 0.8, 0.9], {"patience": 1, "cooldown": 2}),
        ([1.0, 0.99995, 0.9999, 0.99985, 0.9, 0.9, 0.9, 0.9], {"patience": 0}),  # min_delta 1e-4
        ([3, 2, 1, 1, 1, 1, 1, 1, 1, 1], {"patience": 0, "min_lr": 0.0125, "cooldown": 1}),
        ([0.1, 0.2, 0.2, 0.3, 0.25, 0.2, 0.2], {"patience": 1, "mode": "max"}),
    ],
)
def test_agrees_with_keras(losses, kwargs):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.optimizer = keras.optimizers.SGD(0.1)
    reference = keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, **kwargs)
    reference.set_model(model)
    reference.on_train_begin()
    expected = []
    for epoch, loss in enumerate(losses):
        reference.on_epoch_end(epoch, {"loss": loss})
        expected.append(float(model.optimizer.learning_rate.numpy()))
    rates = drive(ReduceLROnPlateau("loss", 0.5, **kwargs), gf.SGD(0.1), losses)
    assert rates == expected
    assert len(set(rates)) > 1


def test_sets_a_wrapped_keras_optimizers_rate():
    rule = gf.KerasOptimizer(tf.optimizers.SGD(0.2))
    drive(ReduceLROnPlateau("loss", 0.5, 0), rule, [2.0, 2.0])
    assert float(rule.optimizer.learning_rate.numpy()) == np.float32(0.1)


def test_val_loss_falls_back_to_loss_with_a_warning():
    reduce = ReduceLROnPlateau(factor=0.5, patience=0)  # monitors val_loss
    with pytest.warns(UserWarning, match="no validation data.*'loss'"):
        rates = drive(reduce, gf.SGD(0.1), [3.0, 3.0])
    np.testing.assert_array_equal(np.float32(rates), np.float32([0.1, 0.05]))


def test_mode_auto_is_max_for_accuracies():
    assert ReduceLROnPlateau("val_accuracy").mode == "max"
    assert ReduceLROnPlateau("val_loss").mode == "min"


@pytest.mark.parametrize(
    "rule",
    [
        gf.SGD(gf.schedules.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5)),
        gf.chain(gf.clip_by_global_norm(1.0), gf.Adam(gf.schedules.Constant(0.1))),
        gf.KerasOptimizer(
            tf.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5))
        ),
    ],
    ids=["gradfit-schedule", "chain", "keras-schedule"],
)
def test_a_rule_following_a_schedule_is_refused_before_training(rule):
    x, y = data()
    model = gf.LinearModel(weight_init=0.5)
    with pytest.raises(TypeError, match=r"ReduceLROnPlateau.*schedule.*Received: update_rule="):
        gf.Trainer(model, gf.L2(), rule).fit(x, y, callbacks=[ReduceLROnPlateau("loss")])
    assert model.W.numpy() == 0.5


def test_unknown_monitor_is_rejected_before_training():
    x, y = data()
    model = gf.LinearModel(weight_init=0.5)
    with pytest.raises(ValueError, match=r"`monitor`.*'accuracy'"):
        gf.Trainer(model, gf.L2()).fit(x, y, callbacks=[ReduceLROnPlateau("accuracy")])
    assert model.W.numpy() == 0.5


def test_state_round_trip_resumes_the_same_decisions():
    losses = [5.0, 4.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0]
    kwargs = {"factor": 0.5, "patience": 2, "cooldown": 1}
    straight = drive(ReduceLROnPlateau("loss", **kwargs), gf.SGD(0.1), losses)

    first = ReduceLROnPlateau("loss", **kwargs)
    rule = gf.SGD(0.1)
    before = drive(first, rule, losses[:4])
    state = first.get_state()
    # Epoch 3 reduced (wait hit 2) and started a cooldown of 1.
    assert state == {"best": 4.0, "wait": 0, "cooldown_counter": 1}
    state = json.loads(json.dumps(state))  # plain numbers: any backup can store them

    second = ReduceLROnPlateau("loss", **kwargs)
    second.set_trainer(gf.Trainer(gf.LinearModel(), gf.L2(), rule))
    second.set_params({"epochs": len(losses), "steps": 1, "metrics": ["loss", "lr"]})
    second.on_train_begin()  # resets; the backup restores after it
    second.set_state(state)
    after = []
    for epoch, loss in enumerate(losses[4:], start=4):
        second.on_epoch_end(epoch, {"loss": loss})
        after.append(float(rule.current_learning_rate()))
    assert before + after == straight


def test_set_state_rejects_bad_states():
    reduce = ReduceLROnPlateau()
    with pytest.raises(TypeError, match="`state`"):
        reduce.set_state([1, 2, 3])
    with pytest.raises(ValueError, match=r"`state` must have exactly the keys"):
        reduce.set_state({"best": 1.0, "wait": 0})
    with pytest.raises(ValueError, match=r"`state\['wait'\]`.*-1"):
        reduce.set_state({"best": 1.0, "wait": -1, "cooldown_counter": 0})
    with pytest.raises(TypeError, match=r"`state\['best'\]`"):
        reduce.set_state({"best": "low", "wait": 0, "cooldown_counter": 0})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"monitor": ""}, TypeError, r"`monitor`.*''"),
        ({"factor": 1.0}, ValueError, r"`factor`.*\(0, 1\).*factor=1.0"),
        ({"factor": 0}, ValueError, r"`factor`.*factor=0"),
        ({"factor": "half"}, TypeError, r"`factor`.*'half'"),
        ({"patience": -1}, ValueError, r"`patience`.*-1"),
        ({"patience": 2.5}, TypeError, r"`patience`.*2.5"),
        ({"cooldown": True}, TypeError, r"`cooldown`.*True"),
        ({"min_delta": float("nan")}, ValueError, r"`min_delta`"),
        ({"min_lr": -1e-3}, ValueError, r"`min_lr`.*-0.001"),
        ({"mode": "up"}, ValueError, r"`mode`.*'up'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ReduceLROnPlateau(**kwargs)


def test_arguments_past_patience_are_keyword_only():
    # Keras's 4th positional argument is `verbose`; a positional 4th here would silently differ.
    with pytest.raises(TypeError):
        ReduceLROnPlateau("loss", 0.5, 3, 1)
