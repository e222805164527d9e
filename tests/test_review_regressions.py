"""Regression tests for defects found in review of the fused loop and the Trainer."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.callbacks import Callback


def test_one_full_batch_and_a_ragged_one_train_on_the_right_rows():
    x = np.linspace(-1, 1, 10).astype(np.float32)
    y = 3 * x + 2
    model = gf.LinearModel(weight_init=5.0, bias_init=0.0)
    gf.Trainer(model, gf.L2(), gf.SGD(0.1), jit_compile=False).fit(
        x, y, batch_size=6, shuffle=False
    )
    w, b = 5.0, 0.0
    for rows in (slice(0, 6), slice(6, 10)):
        err = x[rows] * w + b - y[rows]
        w, b = w - 0.1 * 2 * np.mean(err * x[rows]), b - 0.1 * 2 * np.mean(err)
    np.testing.assert_allclose(model.W.numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(model.b.numpy(), b, rtol=1e-6)


def test_bad_validation_targets_are_rejected_before_training():
    x = np.ones((6, 2), np.float32)
    model = gf.LinearModel(weight_init=0.5, bias_init=0.0)
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.1))
    with pytest.raises(ValueError, match=r"`validation_data\[1\]`"):
        trainer.fit(
            x, np.ones((6, 1), np.float32), validation_data=(x[:5], np.zeros((5, 3, 2), np.float32))
        )
    np.testing.assert_array_equal(model.W.numpy(), np.full((2, 1), 0.5, np.float32))


def test_infinite_and_empty_datasets_are_rejected():
    ds = tf.data.Dataset.from_tensor_slices((np.ones((4, 1), "f4"), np.ones((4, 1), "f4")))
    trainer = gf.Trainer(gf.LinearModel(), gf.L2())
    with pytest.raises(ValueError, match="`x` is an infinite"):
        trainer.fit(ds.batch(2).repeat())
    with pytest.raises(ValueError, match="`x` is an infinite"):
        trainer.evaluate(ds.batch(2).repeat())
    with pytest.raises(ValueError, match="`x` is an empty"):
        trainer.fit(ds.batch(2).take(0))


def test_every_step_callbacks_run_their_begin_hook_before_the_step():
    x = np.linspace(-1, 1, 12).astype(np.float32)
    y = 3 * x

    class FreezeFromStep1(Callback):
        requires_every_step = True

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                self.trainer.update_rule.learning_rate = 0.0

    model = gf.LinearModel(weight_init=0.0, bias_init=0.0)
    gf.Trainer(model, gf.L2(), gf.SGD(0.1)).fit(
        x, y, batch_size=4, shuffle=False, callbacks=[FreezeFromStep1()]
    )
    one = gf.LinearModel(weight_init=0.0, bias_init=0.0)
    gf.Trainer(one, gf.L2(), gf.SGD(0.1)).fit(x[:4], y[:4])  # only step 0 moved anything
    np.testing.assert_allclose(model.W.numpy(), one.W.numpy(), rtol=1e-6)


def test_stop_training_from_a_batch_hook_finishes_the_epoch_whatever_the_chunking():
    x = np.linspace(-1, 1, 23).astype(np.float32)

    class StopAtFirstBatch(Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.trainer.stop_training = True

    counts = []
    for per_call in (None, 1, 2):
        t = gf.Trainer(gf.LinearModel(), gf.L2(), steps_per_execution=per_call)
        history = t.fit(x, x, epochs=3, batch_size=4, callbacks=[StopAtFirstBatch()])
        assert history.epoch == [0]
        counts.append(int(t.update_rule.iterations.numpy()))
    assert counts == [6, 6, 6]  # five full batches and the ragged one


def test_assigning_a_new_update_rule_or_loss_takes_effect():
    x = np.linspace(-1, 1, 16).astype(np.float32)
    t = gf.Trainer(gf.LinearModel(weight_init=1.0), gf.L2(), gf.SGD(0.1))
    t.fit(x, 2 * x, batch_size=8)
    t.update_rule = gf.SGD(0.0)
    before = t.model.W.numpy()
    t.fit(x, 2 * x, batch_size=8)
    assert t.model.W.numpy() == before
    assert int(t.update_rule.iterations.numpy()) == 2
    t.update_rule = gf.SGD(0.1)
    t.loss = lambda y_true, y_pred: tf.reduce_mean(y_pred * 0.0)  # no gradient signal
    t.fit(x, 2 * x, batch_size=8)
    assert t.model.W.numpy() == before


def test_compiled_functions_do_not_keep_user_data_alive():
    t = gf.Trainer(gf.LinearModel(), gf.L2())
    ds = tf.data.Dataset.from_tensor_slices((np.ones((8, 2), "f4"), np.ones((8, 1), "f4")))
    ds = ds.batch(4)
    t.fit(ds)
    t.predict(ds)
    ref = weakref.ref(ds)
    del ds
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("name", ["lr", "grad_norm", "nonfinite_steps", "loss"])
def test_reserved_metric_names_are_rejected(name):
    with pytest.raises(ValueError, match="`metrics`"):
        gf.Trainer(gf.LinearModel(), gf.L2(), metrics={name: gf.L1()})
