"""gf.KerasModel and Keras models in the Trainer: equal to Keras ``fit``.

The reference is Keras's own ``fit`` on a clone of the same model with the
same initial weights, the same optimizer and no shuffling: every epoch's
loss and the final weights (BatchNormalization's moving statistics
included) must agree to 1e-5.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf

pytestmark = pytest.mark.xdist_group("keras")

N, FEATURES, CLASSES, BATCH, EPOCHS = 48, 5, 3, 16, 3


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    y = (x @ rng.normal(size=(FEATURES, 1))).astype(np.float32) + 0.5
    labels = rng.integers(0, CLASSES, size=N)
    return x, y, labels


def _regressor(seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(
                8, activation="relu", kernel_regularizer=keras.regularizers.L2(0.05)
            ),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )


def _classifier(seed: int = 2) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(CLASSES),
        ]
    )


def _twin(model: keras.Model) -> keras.Model:
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def _keras_fit(model: keras.Model, loss: Any, x: Any, y: Any, **kwargs: Any) -> dict[str, list]:
    metrics = kwargs.pop("metrics", None)
    weighted = kwargs.pop("weighted_metrics", None)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05), loss=loss, metrics=metrics, weighted_metrics=weighted
    )
    history = model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, shuffle=False, verbose=0, **kwargs)
    return history.history


def _gradfit_fit(model: Any, loss: Any, x: Any, y: Any, **kwargs: Any) -> Any:
    metrics = kwargs.pop("metrics", ())
    weighted = kwargs.pop("weighted_metrics", ())
    trainer = gf.Trainer(
        model, loss, gf.SGD(0.05), metrics=metrics, weighted_metrics=weighted, jit_compile=False
    )
    batch_size = None if isinstance(x, tf.data.Dataset) else BATCH
    return trainer, trainer.fit(x, y, epochs=EPOCHS, batch_size=batch_size, shuffle=False, **kwargs)


def _assert_same_weights(a: keras.Model, b: keras.Model) -> None:
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), atol=1e-5, err_msg=wa.path)


def test_sequential_with_batchnorm_and_regularizer_equals_keras_fit() -> None:
    x, y, _ = _data()
    ours = _regressor()
    theirs = _twin(ours)
    reference = _keras_fit(theirs, keras.losses.MeanSquaredError(), x, y)
    _, history = _gradfit_fit(ours, gf.L2(), x, y)
    np.testing.assert_allclose(history.history["loss"], reference["loss"], atol=1e-5)
    _assert_same_weights(ours, theirs)
    moving = ours.layers[1].moving_mean.numpy()
    assert not np.allclose(moving, 0.0)  # the statistics moved: training=True reached BN


def test_regularization_is_added_to_the_logged_loss() -> None:
    x, y, _ = _data()
    model = _regressor()
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.0), jit_compile=False)
    logs = trainer.evaluate(x, y)
    pred = model(x, training=False).numpy()
    penalty = 0.05 * float(np.sum(model.layers[0].kernel.numpy() ** 2))
    assert penalty > 0.01
    np.testing.assert_allclose(logs["loss"], np.mean((pred - y) ** 2) + penalty, rtol=1e-5)


def test_sample_weight_equals_keras_fit() -> None:
    x, y, _ = _data()
    weights = np.random.default_rng(3).uniform(0.0, 2.0, size=N).astype(np.float32)
    ours = _regressor()
    theirs = _twin(ours)
    reference = _keras_fit(theirs, keras.losses.MeanSquaredError(), x, y, sample_weight=weights)
    _, history = _gradfit_fit(ours, gf.L2(), x, y, sample_weight=weights)
    np.testing.assert_allclose(history.history["loss"], reference["loss"], atol=1e-5)
    _assert_same_weights(ours, theirs)


def test_class_weight_and_accuracy_equal_keras_fit() -> None:
    x, _, labels = _data()
    class_weight = {0: 1.0, 1: 5.0, 2: 0.5}
    ours = _classifier()
    theirs = _twin(ours)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    reference = _keras_fit(
        theirs,
        loss,
        x,
        labels,
        class_weight=class_weight,
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="weighted_acc")],
    )
    _, history = _gradfit_fit(
        ours,
        gf.SparseCategoricalCrossentropy(from_logits=True),
        x,
        labels,
        class_weight=class_weight,
        metrics=[
            gf.metrics.SparseCategoricalAccuracy(),
            keras.metrics.SparseCategoricalAccuracy(name="keras_acc"),
        ],
        weighted_metrics={
            "weighted_acc": gf.metrics.SparseCategoricalAccuracy(),
            "weighted_keras_acc": keras.metrics.SparseCategoricalAccuracy(),
        },
    )
    np.testing.assert_allclose(history.history["loss"], reference["loss"], atol=1e-5)
    for name in ("weighted_acc", "weighted_keras_acc"):
        np.testing.assert_allclose(history.history[name], reference["weighted_acc"], atol=1e-6)
    assert not np.allclose(reference["weighted_acc"], reference["sparse_categorical_accuracy"])
    np.testing.assert_allclose(
        history.history["sparse_categorical_accuracy"],
        reference["sparse_categorical_accuracy"],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        history.history["keras_acc"], reference["sparse_categorical_accuracy"], atol=1e-6
    )
    _assert_same_weights(ours, theirs)


def _hand_loop_accuracy(model: keras.Model, x: np.ndarray, labels: np.ndarray) -> list[float]:
    """Each epoch's accuracy counted with NumPy over the predictions each step made."""
    optimizer = gf.SGD(0.05)
    loss_fn = gf.SparseCategoricalCrossentropy(from_logits=True)
    variables = [v.value for v in model.trainable_variables]
    optimizer.build(variables)
    accuracies = []
    for _ in range(EPOCHS):
        correct = 0
        for start in range(0, N, BATCH):
            xb, yb = x[start : start + BATCH], labels[start : start + BATCH]
            with tf.GradientTape() as tape:
                logits = model(xb, training=True)
                loss = loss_fn(yb, logits)
            correct += int(np.sum(np.argmax(logits.numpy(), axis=-1) == yb))
            optimizer.apply(tape.gradient(loss, variables), variables)
        accuracies.append(correct / N)
    return accuracies


def test_accuracies_equal_a_numpy_count_of_each_epochs_predictions() -> None:
    x, _, labels = _data(5)
    ours = _classifier(6)
    reference = _hand_loop_accuracy(_twin(ours), x, labels)
    keras_metric = keras.metrics.SparseCategoricalAccuracy(name="keras_accuracy")
    _, history = _gradfit_fit(
        ours,
        gf.SparseCategoricalCrossentropy(from_logits=True),
        x,
        labels,
        metrics={"accuracy": gf.metrics.SparseCategoricalAccuracy(), "keras": keras_metric},
    )
    assert len(set(reference)) > 1  # the accuracy changed over the epochs
    np.testing.assert_allclose(history.history["accuracy"], reference, atol=1e-7)
    np.testing.assert_allclose(history.history["keras"], reference, atol=1e-7)
    # Reset at every epoch, never fed the probe's examples: it counted the last epoch only.
    assert float(keras_metric.variables[1].numpy()) == N


def test_two_input_functional_model_fed_a_dict_equals_keras_fit() -> None:
    x, y, _ = _data()
    keras.utils.set_random_seed(7)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    joined = keras.layers.Concatenate()([keras.layers.Dense(4)(a), b])
    ours = keras.Model({"a": a, "b": b}, keras.layers.Dense(1)(joined))
    theirs = _twin(ours)
    inputs = {"a": x[:, :3], "b": x[:, 3:]}
    reference = _keras_fit(theirs, keras.losses.MeanSquaredError(), inputs, y)
    trainer, history = _gradfit_fit(ours, gf.L2(), inputs, y)
    np.testing.assert_allclose(history.history["loss"], reference["loss"], atol=1e-5)
    _assert_same_weights(ours, theirs)
    np.testing.assert_allclose(
        trainer.predict(inputs), theirs.predict(inputs, verbose=0), atol=1e-5
    )


def test_two_output_model_with_a_dict_of_losses_equals_keras_fit() -> None:
    x, y, labels = _data()
    keras.utils.set_random_seed(8)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(6, activation="relu")(inputs)
    outputs = {
        "value": keras.layers.Dense(1, name="value")(hidden),
        "kind": keras.layers.Dense(CLASSES, name="kind")(hidden),
    }
    ours = keras.Model(inputs, outputs)
    theirs = _twin(ours)
    targets = {"value": y, "kind": labels}
    weights = {"value": 1.0, "kind": 0.5}
    theirs.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss={
            "value": keras.losses.MeanSquaredError(),
            "kind": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
        loss_weights=weights,
    )
    reference = theirs.fit(x, targets, epochs=EPOCHS, batch_size=BATCH, shuffle=False, verbose=0)
    task = gf.SupervisedTask(
        ours,
        {"value": gf.L2(), "kind": gf.SparseCategoricalCrossentropy(from_logits=True)},
        gf.SGD(0.05),
        loss_weights=weights,
    )
    trainer = gf.Trainer(task, jit_compile=False)
    history = trainer.fit(x, targets, epochs=EPOCHS, batch_size=BATCH, shuffle=False)
    np.testing.assert_allclose(history.history["loss"], reference.history["loss"], atol=1e-5)
    assert {"value_loss", "kind_loss"} <= set(history.history)
    _assert_same_weights(ours, theirs)
    predicted = trainer.predict(x)
    assert set(predicted) == {"value", "kind"}
    assert predicted["kind"].shape == (N, CLASSES)


def test_a_tuple_of_two_inputs_is_never_stacked() -> None:
    x, y, _ = _data()
    keras.utils.set_random_seed(9)
    a, b = keras.Input((3,)), keras.Input((2,))
    model = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.05), jit_compile=False)
    history = trainer.fit((x[:, :3], x[:, 3:]), y, epochs=1, batch_size=BATCH)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(ValueError, match=r"`x\[0\]` and `x\[1\]` must have the same number"):
        trainer.fit((x[:, :3], x[:10, 3:]), y, epochs=1)


def test_nonfinite_step_rolls_back_batchnorm_statistics() -> None:
    x, y, _ = _data()
    # The second and third batches' squared errors overflow float32: their steps are skipped.
    bad = np.where(np.arange(N)[:, None] < BATCH, y, np.float32(1e30))
    model = _regressor()
    first_batch_only = _twin(model)
    gf.Trainer(first_batch_only, gf.L2(), gf.SGD(0.0), jit_compile=False).fit(
        x[:BATCH], y[:BATCH], epochs=1
    )
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.0), on_nonfinite="skip", jit_compile=False)
    history = trainer.fit(x, bad, epochs=1, batch_size=BATCH, shuffle=False)
    assert history.history["nonfinite_steps"] == [2.0]
    assert not np.allclose(model.layers[1].moving_mean.numpy(), 0.0)
    _assert_same_weights(model, first_batch_only)


def test_save_restore_round_trips_batchnorm_state_and_continues_bitwise(tmp_path: Any) -> None:
    x, y, _ = _data()
    model = _regressor()
    twin = _twin(model)
    straight = gf.Trainer(model, gf.L2(), gf.Adam(0.01), jit_compile=False)
    straight.fit(x, y, epochs=2, batch_size=BATCH, seed=0)
    resumed = gf.Trainer(twin, gf.L2(), gf.Adam(0.01), jit_compile=False)
    resumed.fit(x, y, epochs=1, batch_size=BATCH, seed=0)
    path = resumed.save(tmp_path / "ckpt")
    fresh = _twin(_regressor(99))  # other weights, same structure
    again = gf.Trainer(fresh, gf.L2(), gf.Adam(0.01), jit_compile=False)
    again.restore(path)
    np.testing.assert_array_equal(
        fresh.layers[1].moving_mean.numpy(), twin.layers[1].moving_mean.numpy()
    )
    again.fit(x, y, epochs=1, batch_size=BATCH)
    for a, b in zip(model.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_export_model_serves_a_keras_model(tmp_path: Any) -> None:
    x, y, _ = _data()
    trainer = gf.Trainer(_regressor(), gf.L2(), gf.SGD(0.05), jit_compile=False)
    trainer.fit(x, y, epochs=1, batch_size=BATCH)
    path = gf.saving.export_model(trainer.model, tmp_path / "export")
    loaded = tf.saved_model.load(path)
    np.testing.assert_allclose(loaded(tf.constant(x)).numpy(), trainer.predict(x), atol=1e-6)


def test_a_non_model_is_refused_with_what_works() -> None:
    class NotAModel(tf.Module):
        trainable_variables = ()

        def __call__(self, x: Any) -> Any:
            return x

    with pytest.raises(TypeError, match=r"keras\.Model works as it is.*gf\.KerasModel"):
        gf.Trainer(NotAModel(), gf.L2())
    with pytest.raises(TypeError, match=r"`model` must be a keras\.Model"):
        gf.KerasModel(NotAModel())


def _two_input_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    joined = keras.layers.Concatenate()([keras.layers.Dense(4)(a), b])
    return keras.Model({"a": a, "b": b}, keras.layers.Dense(1)(joined))


def test_datasets_of_nested_weighted_elements_equal_the_same_arrays() -> None:
    x, y, _ = _data()
    weights = np.random.default_rng(4).uniform(0.0, 2.0, size=N).astype(np.float32)
    inputs = {"a": x[:, :3], "b": x[:, 3:]}
    arrays_model = _two_input_model(10)
    dataset_model = _twin(arrays_model)
    _, from_arrays = _gradfit_fit(arrays_model, gf.L2(), inputs, y, sample_weight=weights)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, y, weights)).batch(BATCH)
    _, from_dataset = _gradfit_fit(dataset_model, gf.L2(), dataset, None)
    np.testing.assert_allclose(from_dataset.history["loss"], from_arrays.history["loss"], atol=1e-6)
    _assert_same_weights(arrays_model, dataset_model)


def test_class_weight_on_a_dataset_equals_class_weight_on_arrays() -> None:
    x, _, labels = _data()
    class_weight = {0: 2.0, 2: 0.25}  # class 1 weighs 1.0
    arrays_model = _classifier(11)
    dataset_model = _twin(arrays_model)
    loss = gf.SparseCategoricalCrossentropy(from_logits=True)
    _, from_arrays = _gradfit_fit(arrays_model, loss, x, labels, class_weight=class_weight)
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(BATCH)
    _, from_dataset = _gradfit_fit(dataset_model, loss, dataset, None, class_weight=class_weight)
    np.testing.assert_allclose(from_dataset.history["loss"], from_arrays.history["loss"], atol=1e-6)
    _assert_same_weights(arrays_model, dataset_model)


def test_evaluate_with_sample_weight_equals_keras_evaluate() -> None:
    x, y, _ = _data()
    weights = np.random.default_rng(5).uniform(0.0, 2.0, size=N).astype(np.float32)
    model = _regressor()
    twin = _twin(model)
    twin.compile(loss=keras.losses.MeanSquaredError(), weighted_metrics=["mae"])
    reference = twin.evaluate(x, y, sample_weight=weights, batch_size=BATCH, return_dict=True)
    trainer = gf.Trainer(model, gf.L2(), weighted_metrics={"mae": gf.metrics.MeanAbsoluteError()})
    logs = trainer.evaluate(x, y, sample_weight=weights, batch_size=BATCH)
    np.testing.assert_allclose(logs["loss"], reference["loss"], rtol=1e-5)
    np.testing.assert_allclose(logs["mae"], reference["mae"], rtol=1e-5)


def test_nested_input_errors_name_the_leaf() -> None:
    x, y, _ = _data()
    trainer = gf.Trainer(_two_input_model(12), gf.L2(), jit_compile=False)
    bad = x[:, 3:].copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"`x\['b'\]` must be finite"):
        trainer.fit({"a": x[:, :3], "b": bad}, y)
    with pytest.raises(ValueError, match=r"`x\['a'\]` and `x\['b'\]` must have the same number"):
        trainer.fit({"a": x[:, :3], "b": x[:5, 3:]}, y)
    with pytest.raises(TypeError, match=r"`sample_weight` must be one array"):
        trainer.fit({"a": x[:, :3], "b": x[:, 3:]}, y, sample_weight={"a": np.ones(N)})
    with pytest.raises(ValueError, match=r"`sample_weight` and `class_weight` cannot both"):
        trainer.fit(
            {"a": x[:, :3], "b": x[:, 3:]}, y, sample_weight=np.ones(N), class_weight={0: 1.0}
        )


class _Interrupt(gf.Callback):
    """Raises KeyboardInterrupt at the ``at``-th training step of the fit (a kill, in-process)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt


def _metric_trainer() -> gf.Trainer:
    keras.utils.set_random_seed(13)  # the same initial weights every time
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(CLASSES),
        ]
    )
    return gf.Trainer(
        model,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        gf.Adam(1e-2),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="keras_acc")],
        jit_compile=False,
    )


def test_a_mid_epoch_resume_restores_keras_metric_state_bitwise(tmp_path: Any) -> None:
    x, _, labels = _data(14)
    straight = _metric_trainer().fit(x, labels, epochs=3, batch_size=8, seed=0).history
    directory = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):  # 6 steps an epoch: killed 2 steps into epoch 1
        _metric_trainer().fit(
            x,
            labels,
            epochs=3,
            batch_size=8,
            seed=0,
            callbacks=[gf.callbacks.BackupAndRestore(directory, save_every=2), _Interrupt(9)],
        )
    resumed = (
        _metric_trainer()
        .fit(
            x,
            labels,
            epochs=3,
            batch_size=8,
            seed=0,
            callbacks=[gf.callbacks.BackupAndRestore(directory, save_every=2)],
        )
        .history
    )
    assert resumed["keras_acc"] == straight["keras_acc"]
    assert resumed["loss"] == straight["loss"]


def test_a_skipped_step_rolls_back_keras_metric_state() -> None:
    x, y, _ = _data()
    metric = keras.metrics.MeanAbsoluteError(name="keras_mae")
    bad = np.where(np.arange(N)[:, None] < 2 * BATCH, y, np.float32(1e30))  # last batch: inf
    trainer = gf.Trainer(
        _regressor(), gf.L2(), gf.SGD(0.0), metrics=[metric], on_nonfinite="skip", jit_compile=False
    )
    history = trainer.fit(x, bad, epochs=1, batch_size=BATCH, shuffle=False)
    assert history.history["nonfinite_steps"] == [1.0]
    assert float(metric.variables[1].numpy()) == 2 * BATCH  # the skipped batch is not counted
    assert history.history["keras_mae"][0] == pytest.approx(float(metric.result()))


@pytest.mark.parametrize(
    "loss",
    [
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        keras.losses.sparse_categorical_crossentropy,
    ],
    ids=["object", "function"],
)
def test_keras_sparse_cross_entropy_refuses_labels_out_of_range_naming_y(loss):
    """Found by the fuzz suite: Keras's own loss got the raw InvalidArgumentError."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    trainer = gf.Trainer(model, loss, gf.SGD(0.1), jit_compile=False)
    x = np.zeros((4, 3), np.float32)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=r"`y` holds class labels outside \[0, 3\)"):
        trainer.fit(x, np.array([3, 1, 2, 0], np.int32))
    with pytest.raises(ValueError, match="`y`"):
        trainer.evaluate(x, np.array([0, 1, 2, -1], np.int32))
    assert all((w.numpy() == b).all() for w, b in zip(model.weights, before, strict=True))
