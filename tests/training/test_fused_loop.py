"""The fused inner loop: many steps per call give what one step per call gives."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.callbacks import Callback

RNG = np.random.default_rng(0)
X = RNG.normal(size=(83, 3)).astype(np.float32)  # 83 = 5 batches of 16 + a ragged 3
Y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)


def sgd():
    return gf.SGD(0.05, momentum=0.9)


def adam():
    return gf.Adam(0.01)


def keras_adam():
    return gf.KerasOptimizer(keras.optimizers.Adam(0.01))


def fit(rule, *, jit=False, per_call=None, shuffle=True, epochs=3, batch_size=16, callbacks=()):
    model = gf.MLP((5,), seed=3)
    trainer = gf.Trainer(model, gf.L2(), rule, jit_compile=jit, steps_per_execution=per_call)
    history = trainer.fit(
        X,
        Y,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=11,
        callbacks=list(callbacks),
    )
    return trainer, [v.numpy() for v in model.trainable_variables], history


class StepLog(Callback):
    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append((batch, logs["loss"]))


@pytest.mark.parametrize(
    "make_rule", [sgd, adam, keras_adam], ids=["sgd-momentum", "adam", "keras-adam"]
)
@pytest.mark.parametrize(
    ("shuffle", "in_loop"),
    [(False, False), (True, False), (True, True)],
    ids=["ordered", "shuffled-blocks", "shuffled-in-loop"],
)
def test_fused_loop_is_bitwise_equal_to_one_step_per_call_without_xla(
    monkeypatch, make_rule, shuffle, in_loop
):
    if in_loop:  # gather each shuffled batch inside the loop (as for big batches)
        monkeypatch.setattr(gf.training.loops, "GATHER_IN_LOOP_BYTES", 1)
    fused_log, single_log = StepLog(), StepLog()
    fused, fused_vars, fused_hist = fit(make_rule(), shuffle=shuffle, callbacks=[fused_log])
    single, single_vars, single_hist = fit(
        make_rule(), shuffle=shuffle, per_call=1, callbacks=[single_log]
    )
    for a, b in zip(fused_vars, single_vars, strict=True):
        np.testing.assert_array_equal(a, b)
    assert fused_hist.history == single_hist.history
    # Batch hooks see every step, with its true number, and the same losses.
    assert fused_log.steps == single_log.steps
    assert [s for s, _ in fused_log.steps] == [0, 1, 2, 3, 4, 5] * 3
    # Traced once per fit: the loop, and the ragged last batch's own step.
    assert fused.train_function.experimental_get_tracing_count() == 1
    assert single.train_function.experimental_get_tracing_count() == 1
    assert int(fused.update_rule.iterations.numpy()) == 18


@pytest.mark.parametrize(
    "make_rule", [sgd, adam, keras_adam], ids=["sgd-momentum", "adam", "keras-adam"]
)
def test_fused_loop_under_xla_matches_one_step_per_call(make_rule):
    _, fused_vars, _ = fit(make_rule(), jit=True)
    trainer, single_vars, _ = fit(make_rule(), jit=True, per_call=1)
    assert trainer.train_function.jit_compile is True
    for a, b in zip(fused_vars, single_vars, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_shuffled_batches_gathered_in_the_loop_under_xla_match_blocks(monkeypatch):
    _, blocks, block_hist = fit(adam(), jit=True)
    monkeypatch.setattr(gf.training.loops, "GATHER_IN_LOOP_BYTES", 1)
    _, in_loop, hist = fit(adam(), jit=True)
    for a, b in zip(blocks, in_loop, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hist.history["loss"], block_hist.history["loss"], rtol=1e-6)


def test_steps_per_execution_chunks_agree_and_never_retrace():
    _, reference, ref_hist = fit(sgd(), per_call=1)
    trainer, chunked, hist = fit(sgd(), per_call=4)  # chunks of 4 and 1, then the ragged step
    for a, b in zip(reference, chunked, strict=True):
        np.testing.assert_array_equal(a, b)
    assert hist.history == ref_hist.history
    assert trainer.train_function.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("block_bytes", [512, 1024], ids=["blocks-of-2", "blocks-of-4"])
@pytest.mark.parametrize("per_call", [None, 3])
def test_shuffled_blocks_give_what_one_block_gives(monkeypatch, block_bytes, per_call):
    # 16 rows of 4 float32 values = 256 bytes per batch; 5 full batches, then a ragged 3.
    _, reference, ref_hist = fit(sgd(), per_call=per_call)
    monkeypatch.setattr(gf.training.loops, "BLOCK_BYTES", block_bytes)
    log = StepLog()
    trainer, blocked, hist = fit(sgd(), per_call=per_call, callbacks=[log])
    for a, b in zip(reference, blocked, strict=True):
        np.testing.assert_array_equal(a, b)
    assert hist.history == ref_hist.history
    assert [s for s, _ in log.steps] == [0, 1, 2, 3, 4, 5] * 3
    assert trainer.train_function.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("block_bytes", [None, 512, "in-loop"])
def test_shuffled_batches_follow_the_generator_permutation(monkeypatch, block_bytes):
    if block_bytes == "in-loop":
        monkeypatch.setattr(gf.training.loops, "GATHER_IN_LOOP_BYTES", 1)
    elif block_bytes is not None:
        monkeypatch.setattr(gf.training.loops, "BLOCK_BYTES", block_bytes)
    # With W = b = 0 and lr = 0, each step's loss is the mean of its targets squared.
    trainer = gf.Trainer(gf.LinearModel(weight_init=0.0, bias_init=0.0), gf.L2(), gf.SGD(0.0))
    log = StepLog()
    trainer.fit(X, Y, epochs=2, batch_size=16, seed=9, callbacks=[log])
    generator = tf.random.Generator.from_seed(9)
    expected = []
    for _ in range(2):
        seed = generator.make_seeds(1)[:, 0]
        order = tf.random.experimental.stateless_shuffle(tf.range(83), seed=seed).numpy()
        for start in range(0, 83, 16):
            rows = order[start : start + 16]
            expected.append(float(np.mean(Y[rows].astype(np.float64) ** 2)))
    np.testing.assert_allclose([loss for _, loss in log.steps], expected, rtol=1e-6)


def test_fused_loop_equals_a_hand_written_tape_loop():
    model = gf.LinearModel(weight_init=0.1, bias_init=0.0)
    gf.Trainer(model, gf.L2(), gf.SGD(0.05), jit_compile=False).fit(
        X, Y, epochs=2, batch_size=16, shuffle=False
    )
    W, b = tf.Variable(tf.fill([3, 1], 0.1)), tf.Variable(tf.zeros([1]))

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.matmul(xb, W) + b - yb))
        dW, db = tape.gradient(loss, [W, b])
        W.assign_sub(0.05 * dW)
        b.assign_sub(0.05 * db)

    for _ in range(2):
        for start in range(0, 83, 16):
            step(tf.constant(X[start : start + 16]), tf.constant(Y[start : start + 16]))
    np.testing.assert_array_equal(model.W.numpy(), W.numpy())
    np.testing.assert_array_equal(model.b.numpy(), b.numpy())


def test_every_step_callback_acts_between_steps():
    class ZeroRateAfterFirstStep(Callback):
        requires_every_step = True

        def on_train_batch_end(self, batch, logs=None):
            self.trainer.update_rule.learning_rate = 0.0

    model = gf.LinearModel(weight_init=0.0, bias_init=0.0)
    gf.Trainer(model, gf.L2(), gf.SGD(0.1)).fit(
        X, Y, epochs=1, batch_size=16, shuffle=False, callbacks=[ZeroRateAfterFirstStep()]
    )
    one_step = gf.LinearModel(weight_init=0.0, bias_init=0.0)
    gf.Trainer(one_step, gf.L2(), gf.SGD(0.1)).fit(X[:16], Y[:16], epochs=1)
    np.testing.assert_allclose(model.W.numpy(), one_step.W.numpy(), rtol=1e-6)


def test_replayed_batch_hooks_can_stop_training_mid_epoch_with_one_step_per_call():
    class StopAtStep2(Callback):
        requires_every_step = True

        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                self.trainer.stop_training = True

    trainer = gf.Trainer(gf.LinearModel(), gf.L2())
    history = trainer.fit(X, Y, epochs=4, batch_size=16, callbacks=[StopAtStep2()])
    assert history.epoch == [0]
    assert int(trainer.update_rule.iterations.numpy()) == 3


def test_epochs_draw_new_permutations_from_the_trainer_generator():
    orders = []

    class RecordFirstBatchLoss(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                orders.append(logs["loss"])

    # lr = 0: the first batch's loss only depends on which examples it holds.
    trainer = gf.Trainer(gf.LinearModel(weight_init=0.0), gf.L2(), gf.SGD(0.0))
    trainer.fit(X, Y, epochs=3, batch_size=16, seed=5, callbacks=[RecordFirstBatchLoss()])
    assert len(set(orders)) == 3
    state = trainer.generator.state.numpy().copy()
    first = list(orders)
    orders.clear()
    trainer.fit(X, Y, epochs=3, batch_size=16, seed=5, callbacks=[RecordFirstBatchLoss()])
    assert orders == first  # reseeding replays the same orders
    assert np.array_equal(trainer.generator.state.numpy(), state)


def test_a_replaced_generator_is_the_one_that_shuffles():
    def run(warm_up):
        trainer = gf.Trainer(gf.LinearModel(weight_init=0.0), gf.L2(), gf.SGD(0.05))
        if warm_up:  # compiles and caches everything with the first generator
            trainer.fit(X, Y, epochs=1, batch_size=16, seed=1)
            for var in trainer.model.variables:
                var.assign(tf.zeros_like(var))
        trainer.generator = tf.random.Generator.from_seed(123)
        trainer.fit(X, Y, epochs=2, batch_size=16)
        return trainer

    fresh, reused = run(False), run(True)
    np.testing.assert_array_equal(fresh.generator.state.numpy(), reused.generator.state.numpy())
    for a, b in zip(fresh.model.variables, reused.model.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_dataset_steps_run_inside_the_compiled_loop_and_match_arrays():
    _, array_vars, array_hist = fit(sgd(), shuffle=False)
    model = gf.MLP((5,), seed=3)
    trainer = gf.Trainer(model, gf.L2(), sgd(), jit_compile=False)
    log = StepLog()
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)
    history = trainer.fit(dataset, epochs=3, callbacks=[log])
    for a, b in zip(array_vars, [v.numpy() for v in model.trainable_variables], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(history.history["loss"], array_hist.history["loss"], rtol=1e-6)
    assert [s for s, _ in log.steps] == [0, 1, 2, 3, 4, 5] * 3
    assert trainer.train_function.experimental_get_tracing_count() == 1


def test_dataset_of_unknown_length_runs_until_exhausted():
    def batches():
        for start in range(0, 83, 16):
            yield X[start : start + 16], Y[start : start + 16]

    spec = (tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None, 1], tf.float32))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=spec)
    for per_call in (None, 4):
        log = StepLog()
        trainer = gf.Trainer(gf.LinearModel(), gf.L2(), steps_per_execution=per_call)
        trainer.fit(dataset, epochs=2, callbacks=[log])
        assert [s for s, _ in log.steps] == [0, 1, 2, 3, 4, 5] * 2
        assert int(trainer.update_rule.iterations.numpy()) == 12


class PyFunctionModel(gf.Model):
    """A model with an op XLA cannot compile (a Python function inside the graph)."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(0.5)

    def __call__(self, x):
        doubled = tf.py_function(lambda t: t * 2.0, [x], tf.float32)
        doubled.set_shape(x.shape)
        return self.w * doubled[:, 0]


def test_auto_jit_falls_back_when_xla_cannot_compile(caplog):
    trainer = gf.Trainer(PyFunctionModel(), gf.L2(), gf.SGD(0.01))
    with caplog.at_level(logging.INFO, logger="gradfit"):
        trainer.fit(X, Y[:, 0], epochs=65, batch_size=1)  # 5,395 steps: XLA would pay
    assert trainer.train_function.jit_compile is False
    assert any("not using XLA" in r.getMessage() for r in caplog.records)
    assert int(trainer.update_rule.iterations.numpy()) == 5395


def test_auto_jit_uses_xla_for_a_long_run_of_small_steps():
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.01))
    trainer.fit(X, Y, batch_size=1, epochs=120)  # 9,960 steps of ~100 small ops
    assert trainer.jit_compile == "auto"
    assert trainer.train_function.jit_compile is True
    # The compiled loop is kept for later fits of the same shapes, short ones too.
    trainer.fit(X, Y, batch_size=1, epochs=1)
    assert trainer.train_function.jit_compile is True


@pytest.mark.parametrize(
    ("model", "batch_size", "epochs"),
    [(gf.LinearModel, 1, 12), (gf.LinearModel, 16, 120), (lambda: gf.MLP((64, 64)), 16, 120)],
    ids=["short", "few-steps", "mlp"],
)
def test_auto_jit_skips_xla_where_compiling_would_not_pay(model, batch_size, epochs):
    # 996 steps; 720 steps; 720 steps of an MLP (compiling each matmul costs more).
    trainer = gf.Trainer(model(), gf.L2(), gf.SGD(0.01))
    trainer.fit(X, Y, batch_size=batch_size, epochs=epochs)
    assert trainer.train_function.jit_compile is False


@pytest.mark.parametrize(
    ("value", "exc"), [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("10", TypeError)]
)
def test_bad_steps_per_execution(value, exc):
    with pytest.raises(exc, match="`steps_per_execution`"):
        gf.Trainer(gf.LinearModel(), gf.L2(), steps_per_execution=value)
