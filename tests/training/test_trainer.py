"""Trainer: the tutorial reproduced, tracing, batching, shuffling, validation, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf

TRUE_W, TRUE_B, NUM_EXAMPLES = 3.0, 2.0, 1000


@pytest.fixture(scope="module")
def tutorial_data() -> tuple[tf.Tensor, tf.Tensor]:
    gen = tf.random.Generator.from_seed(1234)
    inputs = gen.normal([NUM_EXAMPLES])
    noise = gen.normal([NUM_EXAMPLES])
    return inputs, inputs * TRUE_W + TRUE_B + noise


def tutorial_loop(inputs: tf.Tensor, outputs: tf.Tensor, epochs: int = 10):
    """The TF2 tutorial "Custom training: basics", verbatim but for the print."""

    class Model:
        def __init__(self):
            self.W = tf.Variable(5.0)
            self.b = tf.Variable(0.0)

        def __call__(self, x):
            return self.W * x + self.b

    def loss(predicted_y, desired_y):
        return tf.reduce_mean(tf.square(predicted_y - desired_y))

    def train(model, inputs, outputs, learning_rate):
        with tf.GradientTape() as t:
            current_loss = loss(model(inputs), outputs)
        dW, db = t.gradient(current_loss, [model.W, model.b])
        model.W.assign_sub(learning_rate * dW)
        model.b.assign_sub(learning_rate * db)

    model = Model()
    Ws, bs, losses = [], [], []
    for _ in range(epochs):
        Ws.append(model.W.numpy())
        bs.append(model.b.numpy())
        current_loss = loss(model(inputs), outputs)
        losses.append(current_loss.numpy())
        train(model, inputs, outputs, learning_rate=0.1)
    return np.array(Ws), np.array(bs), np.array(losses), model


def test_fit_reproduces_the_tutorial_loop(tutorial_data):
    inputs, outputs = tutorial_data
    Ws, bs, losses, ref = tutorial_loop(inputs, outputs)

    record = gf.RecordVariables()
    model = gf.LinearModel(weight_init=5.0, bias_init=0.0)
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.1))
    history = trainer.fit(inputs, outputs, epochs=10, shuffle=False, callbacks=[record])

    assert history.epoch == list(range(10))
    np.testing.assert_allclose(record.values["W"][:-1], Ws, rtol=0, atol=1e-6)
    np.testing.assert_allclose(record.values["b"][:-1], bs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-6, atol=0)
    np.testing.assert_allclose(model.W.numpy(), ref.W.numpy(), atol=1e-6)
    np.testing.assert_allclose(model.b.numpy(), ref.b.numpy(), atol=1e-6)
    # The fit converges towards the true line, as the tutorial's does.
    assert abs(model.W.numpy() - TRUE_W) < abs(5.0 - TRUE_W) / 2


def test_full_batch_shuffle_does_not_change_the_tutorial(tutorial_data):
    inputs, outputs = tutorial_data
    Ws, _, losses, _ = tutorial_loop(inputs, outputs)
    record = gf.RecordVariables()
    trainer = gf.Trainer(gf.LinearModel(weight_init=5.0, bias_init=0.0), gf.L2(), gf.SGD(0.1))
    history = trainer.fit(inputs, outputs, epochs=10, callbacks=[record])  # shuffle=True
    np.testing.assert_allclose(record.values["W"][:-1], Ws, atol=1e-6)
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-6)


def test_step_is_traced_once_per_fit_whatever_the_epochs(tutorial_data):
    inputs, outputs = tutorial_data
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.01))
    # batch 300 over 1000 examples: three batches of 300 and a ragged one of 100.
    trainer.fit(inputs, outputs, epochs=7, batch_size=300, seed=0)
    assert trainer.train_function.experimental_get_tracing_count() == 1
    # Changing the learning rate between fits, or fitting again, does not retrace.
    trainer.update_rule.learning_rate = 0.02
    trainer.fit(inputs, outputs, epochs=3, batch_size=300, seed=1)
    assert trainer.train_function.experimental_get_tracing_count() == 1


def test_step_under_xla_matches_the_plain_step(tutorial_data):
    inputs, outputs = tutorial_data
    results = []
    for jit in (False, True):
        model = gf.LinearModel(weight_init=5.0, bias_init=0.0)
        trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.1), jit_compile=jit)
        history = trainer.fit(inputs, outputs, epochs=4, batch_size=256, seed=3)
        results.append((model.W.numpy(), model.b.numpy(), history.history["loss"]))
        assert trainer.train_function.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
    np.testing.assert_allclose(results[0][2], results[1][2], rtol=1e-6)


def _minibatch_reference(x, y, w0, b0, lr, batch_size, orders):
    """Plain NumPy mini-batch SGD on f(x) = x W + b with the L2 loss."""
    w, b = np.float64(w0), np.float64(b0)
    losses = []
    for order in orders:
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x[idx], y[idx]
            err = xb * w + b - yb
            total += np.mean(err**2) * len(idx)
            w, b = w - lr * 2 * np.mean(err * xb), b - lr * 2 * np.mean(err)
        losses.append(total / len(x))
    return w, b, losses


def test_minibatch_fit_equals_numpy_reference_without_shuffle():
    rng = np.random.default_rng(0)
    x = rng.normal(size=103).astype(np.float32)
    y = (2 * x - 1 + 0.1 * rng.normal(size=103)).astype(np.float32)
    model = gf.LinearModel(weight_init=0.5, bias_init=0.25)
    history = gf.Trainer(model, gf.L2(), gf.SGD(0.05)).fit(
        x, y, epochs=3, batch_size=10, shuffle=False
    )
    order = np.arange(103)
    w, b, losses = _minibatch_reference(x, y, 0.5, 0.25, 0.05, 10, [order] * 3)
    np.testing.assert_allclose(model.W.numpy(), w, rtol=1e-5)
    np.testing.assert_allclose(model.b.numpy(), b, rtol=1e-5)
    # The epoch loss is the example-weighted mean of the step losses (last batch has 3).
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5)


def test_seeded_shuffle_is_reproducible_and_differs_between_seeds():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = rng.normal(size=(64, 1)).astype(np.float32)

    def run(seed):
        model = gf.LinearModel(weight_init=0.1, bias_init=0.0)
        history = gf.Trainer(model, gf.L2(), gf.SGD(0.1)).fit(
            x, y, epochs=3, batch_size=8, seed=seed
        )
        return model.W.numpy(), history.history["loss"]

    w1, l1 = run(7)
    w2, l2 = run(7)
    w3, _ = run(8)
    np.testing.assert_array_equal(w1, w2)
    assert l1 == l2
    assert not np.array_equal(w1, w3)


def test_shuffled_epoch_visits_every_example_once():
    # With lr=0 nothing moves, so the epoch loss is the loss of the initial model over
    # all examples, whatever the order, if and only if every example is seen once.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 2)).astype(np.float32)
    y = rng.normal(size=(50, 1)).astype(np.float32)
    model = gf.LinearModel(weight_init=0.3, bias_init=0.1)
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.0))
    history = trainer.fit(x, y, epochs=2, batch_size=7, seed=5)
    expected = np.mean((x @ np.full((2, 1), 0.3) + 0.1 - y) ** 2)
    np.testing.assert_allclose(history.history["loss"], [expected, expected], rtol=1e-5)


def test_validation_data_and_metrics_are_logged():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0]]) + 0.5).astype(np.float32)
    xv, yv = x[:10] + 1.0, y[:10]
    model = gf.LinearModel(weight_init=0.0, bias_init=0.0)
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.0), metrics={"mae": gf.L1()})
    history = trainer.fit(x, y, epochs=2, batch_size=16, validation_data=(xv, yv))
    assert set(history.history) == {"loss", "mae", "val_loss", "val_mae", "lr"}
    assert history.history["lr"] == [0.0, 0.0]
    # lr=0: the model stays at zero, predictions are 0, every figure is a plain mean.
    np.testing.assert_allclose(history.history["loss"], [np.mean(y**2)] * 2, rtol=1e-5)
    np.testing.assert_allclose(history.history["mae"], [np.mean(abs(y))] * 2, rtol=1e-5)
    np.testing.assert_allclose(history.history["val_loss"], [np.mean(yv**2)] * 2, rtol=1e-5)
    np.testing.assert_allclose(history.history["val_mae"], [np.mean(abs(yv))] * 2, rtol=1e-5)
    assert trainer.evaluate(xv, yv) == pytest.approx(
        {"loss": history.history["val_loss"][-1], "mae": history.history["val_mae"][-1]}
    )


def test_inputs_as_lists_tensors_ints_and_datasets_train_the_same():
    x = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0]]
    y = [[1.0], [2.0], [3.0], [5.0]]

    def fit(xs, ys=None, **kwargs):
        model = gf.LinearModel(weight_init=0.0, bias_init=0.0)
        gf.Trainer(model, gf.L2(), gf.SGD(0.05)).fit(xs, ys, epochs=5, shuffle=False, **kwargs)
        return np.concatenate([model.W.numpy().ravel(), model.b.numpy().ravel()])

    reference = fit(np.array(x, np.float32), np.array(y, np.float32))
    np.testing.assert_allclose(fit(x, y), reference, rtol=1e-6)
    np.testing.assert_allclose(fit(tf.constant(x), tf.constant(y)), reference, rtol=1e-6)
    np.testing.assert_allclose(fit(np.array(x, np.int64), y), reference, rtol=1e-6)
    np.testing.assert_allclose(fit(np.array(x, np.float64), y), reference, rtol=1e-6)
    dataset = tf.data.Dataset.from_tensor_slices((np.array(x, np.int32), y)).batch(4)
    np.testing.assert_allclose(fit(dataset), reference, rtol=1e-6)


def test_dataset_minibatches_match_array_minibatches():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    y = rng.normal(size=(30,)).astype(np.float32)
    y2 = y[:, None]

    def fit(*args, **kwargs):
        model = gf.LinearModel(weight_init=0.2, bias_init=0.0)
        trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.1))
        history = trainer.fit(*args, epochs=2, **kwargs)
        assert trainer.train_function.experimental_get_tracing_count() == 1
        return model.W.numpy(), history.history["loss"]

    w_arr, l_arr = fit(x, y2, batch_size=8, shuffle=False)
    w_ds, l_ds = fit(tf.data.Dataset.from_tensor_slices((x, y2)).batch(8))
    np.testing.assert_allclose(w_ds, w_arr, rtol=1e-6)
    np.testing.assert_allclose(l_ds, l_arr, rtol=1e-6)
    # Targets of shape [N] against predictions [N, 1] give the same fit (no [N, N] broadcast).
    w_flat, _ = fit(x, y, batch_size=8, shuffle=False)
    np.testing.assert_allclose(w_flat, w_arr, rtol=1e-6)


def test_predict_and_evaluate_batching_agree_with_whole_batch():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(25, 4)).astype(np.float32)
    y = rng.normal(size=(25, 2)).astype(np.float32)
    model = gf.MLP((6,), units=2, seed=0)
    trainer = gf.Trainer(model, gf.L2())
    whole = trainer.predict(x)
    assert isinstance(whole, np.ndarray) and whole.shape == (25, 2)
    # XLA (compiled per batch shape) may fuse multiply-adds differently.
    np.testing.assert_allclose(trainer.predict(x, batch_size=4), whole, rtol=1e-5, atol=1e-6)
    # XLA (jit_compile="auto") may fuse multiply-adds: agreement to float32 rounding.
    np.testing.assert_allclose(whole, model(x).numpy(), rtol=1e-5, atol=1e-6)
    expected = np.mean((whole - y) ** 2)
    assert trainer.evaluate(x, y)["loss"] == pytest.approx(expected, rel=1e-5)
    assert trainer.evaluate(x, y, batch_size=6)["loss"] == pytest.approx(expected, rel=1e-5)


def test_evaluate_runs_all_batches_in_one_compiled_call_with_exact_weighted_means():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(27, 3)).astype(np.float32)  # 4 batches of 6 and a ragged 3
    y = rng.normal(size=(27, 1)).astype(np.float32)
    model = gf.MLP((5,), seed=2)
    trainer = gf.Trainer(model, gf.L2(), metrics={"mae": gf.L1()}, jit_compile=False)
    got = trainer.evaluate(x, y, batch_size=6)
    pred = model(x).numpy().astype(np.float64)
    losses, maes, sizes = [], [], []
    for start in range(0, 27, 6):
        p, t = pred[start : start + 6], y[start : start + 6].astype(np.float64)
        losses.append(np.mean((p - t) ** 2))
        maes.append(np.mean(np.abs(p - t)))
        sizes.append(len(t))
    assert got["loss"] == pytest.approx(np.average(losses, weights=sizes), rel=1e-6)
    assert got["mae"] == pytest.approx(np.average(maes, weights=sizes), rel=1e-6)
    loops = [f for k, f in trainer.functions.items() if k[0] == "eval-arrays" and "loop" in k]
    assert len(loops) == 1
    # Validation every epoch, another evaluate and data of other sizes reuse the same trace.
    trainer.fit(x, y, epochs=3, batch_size=6, validation_data=(x, y))
    assert trainer.evaluate(x, y, batch_size=6)["loss"] != got["loss"]  # it trained
    for n in (6, 12, 24):
        trainer.evaluate(x[:n], y[:n], batch_size=6)
    assert loops[0].experimental_get_tracing_count() == 1
    assert sum(k[0] == "eval-arrays" and "loop" in k for k in trainer.functions) == 1


def test_mlp_classifier_learns_a_separable_problem():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64)

    def accuracy(y_true, y_pred):
        return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(y_pred, -1), y_true), tf.float32))

    model = gf.MLP((16,), units=2, seed=1)
    trainer = gf.Trainer(
        model,
        gf.SparseCategoricalCrossentropy(from_logits=True),
        gf.SGD(0.1, momentum=0.9),
        metrics=[accuracy],
    )
    history = trainer.fit(x, labels, epochs=10, batch_size=32, seed=0)
    assert history.history["loss"][-1] < history.history["loss"][0] / 2
    assert history.history["accuracy"][-1] > 0.9


def test_default_update_rule_is_sgd_and_plain_callable_losses_work():
    def loss(y_true, y_pred):
        return tf.reduce_mean(tf.square(y_pred - y_true))

    trainer = gf.Trainer(gf.LinearModel(weight_init=1.0, bias_init=0.0), loss)
    assert isinstance(trainer.update_rule, gf.SGD)
    assert float(trainer.update_rule.learning_rate.numpy()) == pytest.approx(0.01)
    x = np.array([1.0, 2.0], np.float32)
    y = np.array([3.0, 5.0], np.float32)
    trainer.fit(x, y, epochs=1)
    # err = [1 - 3, 2 - 5] = [-2, -3]; dW = 2/2 * (-2*1 + -3*2) = -8; W = 1 + 0.01 * 8 = 1.08
    assert trainer.model.W.numpy() == pytest.approx(1.08)
    # db = 2/2 * (-2 - 3) = -5; b = 0 + 0.01 * 5 = 0.05
    assert trainer.model.b.numpy() == pytest.approx(0.05)


def test_gradfit_writes_nothing_to_stdout(capsys, tutorial_data):
    inputs, outputs = tutorial_data
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.1))
    trainer.fit(inputs, outputs, epochs=2, validation_data=(inputs, outputs))
    trainer.evaluate(inputs, outputs)
    trainer.predict(inputs)
    assert capsys.readouterr().out == ""


def test_learning_rate_changed_by_a_callback_is_used_logged_and_never_retraces():
    x = np.array([1.0, 2.0], np.float32)
    y = np.array([3.0, 5.0], np.float32)

    def halve(epoch, logs):
        trainer.update_rule.learning_rate = logs["lr"] / 2

    model = gf.LinearModel(weight_init=1.0, bias_init=0.0)
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.02))
    record = gf.RecordVariables()
    history = trainer.fit(x, y, epochs=3, callbacks=[record, gf.LambdaCallback(on_epoch_end=halve)])
    assert history.history["lr"] == pytest.approx([0.02, 0.01, 0.005])
    assert trainer.train_function.experimental_get_tracing_count() == 1
    # Epoch 1 starts from the values after epoch 0 and steps with lr 0.01.
    w, b = float(record.values["W"][1]), float(record.values["b"][1])
    err = np.array([1.0, 2.0]) * w + b - np.array([3.0, 5.0])
    w_next = w - 0.01 * 2 * np.mean(err * np.array([1.0, 2.0]))
    assert float(record.values["W"][2]) == pytest.approx(w_next, rel=1e-6)
