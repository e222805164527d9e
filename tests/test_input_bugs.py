"""Regressions for input bugs found by fuzzing: weights and Keras variables.

- ``class_weight`` with a dataset of dict targets (several outputs);
- bad weights in a ``validation_data`` triple, named as such;
- dataset sample weights that are not one per example;
- ``variables_by_path`` (and ``RecordVariables``) for Keras models.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.models import variables_by_path

pytestmark = pytest.mark.xdist_group("keras")

N = 4


def _weights(trainer: gf.Trainer) -> list[np.ndarray]:
    return [np.array(var.numpy()) for var in trainer.model.variables]


def _refuses(trainer: gf.Trainer, call: Any, error: type[Exception], *names: str) -> str:
    """Runs ``call``, expecting ``error`` naming every name; no variable changes."""
    before = _weights(trainer) if trainer.model.built else None
    iterations = int(trainer.update_rule.iterations.numpy())
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for name in names:
        assert f"`{name}`" in message, message
    if before is not None:
        for old, new in zip(before, _weights(trainer), strict=True):
            np.testing.assert_array_equal(old, new)
    assert int(trainer.update_rule.iterations.numpy()) == iterations
    return message


# -- class_weight with a dataset of several targets -------------------------------


@pytest.fixture(scope="module")
def two_outputs() -> gf.Trainer:
    inputs = keras.Input((3,))
    outputs = {"value": keras.layers.Dense(1)(inputs), "kind": keras.layers.Dense(3)(inputs)}
    losses = {
        "value": keras.losses.MeanSquaredError(),
        "kind": gf.SparseCategoricalCrossentropy(from_logits=True),
    }
    return gf.Trainer(keras.Model(inputs, outputs), losses, gf.SGD(0.1), jit_compile=False)


def _two_targets() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    x = np.zeros((N, 3), np.float32)
    return x, {"value": np.zeros(N, np.float32), "kind": np.array([0, 1, 2, 0], np.int32)}


def test_class_weight_with_dataset_of_dict_targets_is_refused(two_outputs: gf.Trainer) -> None:
    x, y = _two_targets()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    message = _refuses(
        two_outputs,
        lambda: two_outputs.fit(dataset, class_weight={0: 2.0}),
        ValueError,
        "class_weight",
    )
    assert "one output" in message


def test_class_weight_with_arrays_of_dict_targets_is_refused_alike(
    two_outputs: gf.Trainer,
) -> None:
    x, y = _two_targets()
    _refuses(
        two_outputs,
        lambda: two_outputs.fit(x, y, class_weight={0: 2.0}),
        ValueError,
        "class_weight",
    )


def test_class_weight_with_dataset_of_one_target_still_weighs() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    loss = gf.SparseCategoricalCrossentropy(from_logits=True)
    trainer = gf.Trainer(model, loss, gf.SGD(0.1), jit_compile=False)
    x, y = np.ones((N, 3), np.float32), np.array([0, 1, 2, 0], np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    history = trainer.fit(dataset, class_weight={0: 2.0}, epochs=1)
    assert math.isfinite(history.history["loss"][0])


# -- weights in a validation triple ----------------------------------------------


@pytest.fixture(scope="module")
def regressor() -> gf.Trainer:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    return gf.Trainer(model, gf.L2(), gf.SGD(0.1), jit_compile=False)


BAD_VALIDATION_WEIGHTS = {
    "too few": (np.ones(2, np.float32), ValueError),
    "NaN": (np.array([1.0, math.nan, 1.0], np.float32), ValueError),
    "strings": (np.array(["a", "b", "c"]), TypeError),
}


@pytest.mark.parametrize("kind", sorted(BAD_VALIDATION_WEIGHTS))
def test_bad_validation_weights_name_validation_data_2(regressor: gf.Trainer, kind: str) -> None:
    weights, error = BAD_VALIDATION_WEIGHTS[kind]
    x, y = np.zeros((5, 3), np.float32), np.zeros(5, np.float32)
    val = (np.zeros((3, 3), np.float32), np.zeros(3, np.float32), weights)
    message = _refuses(
        regressor, lambda: regressor.fit(x, y, validation_data=val), error, "validation_data[2]"
    )
    assert "sample_weight" not in message
    assert "Received: validation_data[2]=" in message
    if kind == "too few":
        assert "`validation_data[0]` (3)" in message
        assert "`x`" not in message


def test_sample_weight_of_fit_still_names_sample_weight_and_x(regressor: gf.Trainer) -> None:
    x, y = np.zeros((5, 3), np.float32), np.zeros(5, np.float32)
    message = _refuses(
        regressor,
        lambda: regressor.fit(x, y, sample_weight=np.ones(2, np.float32)),
        ValueError,
        "sample_weight",
    )
    assert "`x` (5)" in message


# -- dataset sample weights not one per example ----------------------------------


@pytest.fixture(scope="module")
def classifier() -> gf.Trainer:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    loss = gf.SparseCategoricalCrossentropy(from_logits=True)
    return gf.Trainer(model, loss, gf.SGD(0.1), jit_compile=False)


def _classes_dataset(weights: Any) -> tf.data.Dataset:
    x, y = np.zeros((N, 3), np.float32), np.array([0, 1, 2, 0], np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(2)


@pytest.mark.parametrize("method", ["fit", "evaluate"])
@pytest.mark.parametrize("shape", [(N, 2), (N, 1, 1)], ids=str)
def test_dataset_weights_not_one_per_example_are_refused(
    classifier: gf.Trainer, method: str, shape: tuple[int, ...]
) -> None:
    dataset = _classes_dataset(np.ones(shape, np.float32))
    message = _refuses(classifier, lambda: getattr(classifier, method)(dataset), ValueError, "x")
    assert "[B]" in message
    assert "`loss`" not in message
    assert "Incompatible shapes" not in message


def test_dataset_weights_of_several_outputs_are_refused(two_outputs: gf.Trainer) -> None:
    x, y = _two_targets()
    w = np.ones(N, np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y, {"value": w, "kind": w})).batch(2)
    message = _refuses(two_outputs, lambda: two_outputs.fit(dataset), TypeError, "x")
    assert "[B]" in message
    assert "`loss" not in message


@pytest.mark.parametrize("shape", [(N,), (N, 1)], ids=str)
def test_dataset_weights_one_per_example_are_taken(
    classifier: gf.Trainer, shape: tuple[int, ...]
) -> None:
    logs = classifier.evaluate(_classes_dataset(np.ones(shape, np.float32)))
    assert math.isfinite(float(logs["loss"]))


# -- variables_by_path for Keras models ------------------------------------------


def _small_keras(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(2),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )


def test_record_variables_records_a_keras_model() -> None:
    model = _small_keras()
    record = gf.callbacks.RecordVariables()
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.1), jit_compile=False)
    x = np.random.default_rng(0).normal(size=(N, 3)).astype(np.float32)
    trainer.fit(x, np.ones(N, np.float32), epochs=2, callbacks=[record])
    assert set(record.values) == {var.path for var in model.trainable_variables}
    for var in model.trainable_variables:
        values = record.values[var.path]
        assert len(values) == 3
        np.testing.assert_array_equal(values[-1], var.numpy())
        assert not np.array_equal(values[0], values[-1])  # it trained


@pytest.mark.parametrize("wrap", [False, True], ids=["keras.Model", "gf.KerasModel"])
def test_variables_by_path_of_a_keras_model(wrap: bool) -> None:
    model = _small_keras(1)
    wrapped = gf.KerasModel(model)
    found = variables_by_path(wrapped if wrap else model)
    assert list(found) == [var.path for var in model.variables]
    assert all(isinstance(var, tf.Variable) for var in found.values())
    assert [var.ref() for var in found.values()] == [var.ref() for var in wrapped.variables]
    trainable = variables_by_path(wrapped if wrap else model, trainable_only=True)
    assert list(trainable) == [var.path for var in model.trainable_variables]
    assert any("moving_mean" in path for path in set(found) - set(trainable))


def test_variables_by_path_of_gradfit_models_unchanged() -> None:
    model = gf.MLP([2], units=1, seed=0)
    model.maybe_build([None, 3])
    assert list(variables_by_path(model)) == [
        "layers/0/W",
        "layers/0/b",
        "layers/1/W",
        "layers/1/b",
    ]
