"""Callback hooks: order, arguments, batch numbering, stop_training, params."""

from __future__ import annotations

import numpy as np
import pytest

import gradfit as gf
from gradfit.callbacks import Callback, CallbackList


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", logs))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", logs))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def on_train_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, dict(logs)))


def data(n=10):
    x = np.arange(n, dtype=np.float32) / n
    return x, 2 * x + 1


def test_hooks_fire_in_order_with_true_step_numbers():
    x, y = data(10)
    rec = Recorder()
    gf.Trainer(gf.LinearModel(weight_init=0.0), gf.L2(), gf.SGD(0.1)).fit(
        x, y, epochs=2, batch_size=4, shuffle=False, callbacks=[rec]
    )
    kinds = [
        c[0] if c[0] not in ("batch_begin", "batch_end", "epoch_begin") else c[:2]
        for c in rec.calls
    ]
    expected_epoch = [
        ("batch_begin", 0),
        ("batch_end", 0),
        ("batch_begin", 1),
        ("batch_end", 1),
        ("batch_begin", 2),
        ("batch_end", 2),
    ]
    assert kinds == [
        "train_begin",
        ("epoch_begin", 0),
        *expected_epoch,
        "epoch_end",
        ("epoch_begin", 1),
        *expected_epoch,
        "epoch_end",
        "train_end",
    ]
    assert rec.params == {"epochs": 2, "steps": 3, "metrics": ["loss", "lr"]}


def test_epoch_loss_is_the_example_weighted_mean_of_batch_losses():
    x, y = data(10)
    rec = Recorder()
    gf.Trainer(gf.LinearModel(weight_init=0.0), gf.L2(), gf.SGD(0.1)).fit(
        x, y, epochs=1, batch_size=4, shuffle=False, callbacks=[rec]
    )
    batch_losses = [c[2]["loss"] for c in rec.calls if c[0] == "batch_end"]
    epoch_loss = next(c[2]["loss"] for c in rec.calls if c[0] == "epoch_end")
    # Batches of 4, 4 and 2 examples.
    expected = (4 * batch_losses[0] + 4 * batch_losses[1] + 2 * batch_losses[2]) / 10
    assert epoch_loss == pytest.approx(expected, rel=1e-6)
    assert all(isinstance(v, float) for v in batch_losses)


def test_stop_training_ends_fit_after_the_current_epoch():
    x, y = data()

    class StopAtOne(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.trainer.stop_training = True

    trainer = gf.Trainer(gf.LinearModel(), gf.L2())
    history = trainer.fit(x, y, epochs=10, callbacks=[StopAtOne()])
    assert history.epoch == [0, 1]
    # A new fit starts afresh.
    assert trainer.fit(x, y, epochs=3).epoch == [0, 1, 2]


def test_trainer_callbacks_run_before_fit_callbacks_and_see_the_trainer():
    x, y = data()
    order = []
    first = gf.LambdaCallback(on_train_begin=lambda logs: order.append("trainer"))
    second = gf.LambdaCallback(on_train_begin=lambda logs: order.append("fit"))
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), callbacks=[first])
    trainer.fit(x, y, callbacks=[second])
    assert order == ["trainer", "fit"]
    assert first.trainer is trainer and second.trainer is trainer


def test_callback_list_reports_whether_batch_logs_are_needed():
    assert not CallbackList([gf.History(), gf.RecordVariables()]).wants_batch_logs
    assert not CallbackList([gf.LambdaCallback(on_epoch_end=print)]).wants_batch_logs
    assert CallbackList([gf.LambdaCallback(on_train_batch_end=print)]).wants_batch_logs
    assert CallbackList([Recorder()]).wants_batch_logs


def test_callback_list_rejects_non_callbacks():
    with pytest.raises(TypeError, match="`callbacks`"):
        CallbackList([object()])
