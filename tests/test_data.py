"""gradfit.data: conversion to tensors, batching, shuffling and datasets."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit import data

# -- to_tensor ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(np.array([1, 2, 3], np.int64), [1.0, 2.0, 3.0], id="int64-array"),
        pytest.param(np.array([1, 2], np.uint8), [1.0, 2.0], id="uint8-array"),
        pytest.param([4, 5], [4.0, 5.0], id="int-list"),
        pytest.param(np.array([True, False]), [1.0, 0.0], id="bool-array"),
        pytest.param([[True], [False]], [[1.0], [0.0]], id="bool-list"),
        pytest.param(tf.constant([7, 8], tf.int32), [7.0, 8.0], id="int32-tensor"),
        pytest.param(tf.constant([True, False]), [1.0, 0.0], id="bool-tensor"),
    ],
)
@pytest.mark.parametrize("float_dtype", [tf.float32, tf.float64])
def test_to_tensor_casts_ints_and_bools_to_the_float_dtype(
    value: object, expected: list[float], float_dtype: tf.DType
) -> None:
    tensor = data.to_tensor("x", value, float_dtype)
    assert isinstance(tensor, tf.Tensor)
    assert tensor.dtype == float_dtype
    np.testing.assert_array_equal(tensor.numpy(), np.array(expected))


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        pytest.param(np.array([0, 2, 1], np.int64), tf.int64, id="int64-array"),
        pytest.param(np.array([0, 2, 1], np.int32), tf.int32, id="int32-array"),
        pytest.param(np.array([0, 2, 1], np.uint8), tf.uint8, id="uint8-array"),
        pytest.param(tf.constant([0, 2, 1], tf.int32), tf.int32, id="int32-tensor"),
    ],
)
def test_to_tensor_keeps_int_targets_with_keep_int(value: object, dtype: tf.DType) -> None:
    tensor = data.to_tensor("y", value, tf.float32, keep_int=True)
    assert tensor.dtype == dtype
    np.testing.assert_array_equal(tensor.numpy(), [0, 2, 1])


def test_keep_int_still_casts_bools_and_floats() -> None:
    bools = data.to_tensor("y", np.array([True, False]), tf.float32, keep_int=True)
    floats = data.to_tensor("y", np.array([0.5, 1.5], np.float64), tf.float32, keep_int=True)
    assert bools.dtype == tf.float32
    assert floats.dtype == tf.float32
    np.testing.assert_array_equal(bools.numpy(), [1.0, 0.0])


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(np.array([[0.1, 0.2], [0.3, 0.4]], np.float64), id="array"),
        pytest.param([[0.1, 0.2], [0.3, 0.4]], id="list"),
        pytest.param(tf.constant([[0.1, 0.2], [0.3, 0.4]], tf.float64), id="tensor"),
    ],
)
def test_to_tensor_casts_float64_to_float32(value: object) -> None:
    tensor = data.to_tensor("x", value, tf.float32)
    assert tensor.dtype == tf.float32
    assert tensor.shape == (2, 2)
    np.testing.assert_allclose(tensor.numpy(), [[0.1, 0.2], [0.3, 0.4]], rtol=1e-7)


def test_to_tensor_keeps_float64_for_a_float64_model() -> None:
    value = np.array([0.1, 1e-300], np.float64)
    tensor = data.to_tensor("x", value, tf.float64)
    assert tensor.dtype == tf.float64
    np.testing.assert_array_equal(tensor.numpy(), value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64, tf.float16])
def test_to_tensor_rejects_non_finite_tensors(bad: float, dtype: tf.DType) -> None:
    value = tf.constant([[1.0, 2.0], [3.0, bad]], dtype)
    with pytest.raises(ValueError) as info:
        data.to_tensor("y", value, tf.float32)
    message = str(info.value)
    assert "`y`" in message
    assert "(2, 2)" in message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_to_tensor_rejects_non_finite_arrays_with_the_index(bad: float) -> None:
    value = np.zeros((3, 2))
    value[2, 1] = bad
    with pytest.raises(ValueError) as info:
        data.to_tensor("x", value, tf.float32)
    assert "`x`" in str(info.value)
    assert "(2, 1)" in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(np.array([1.0, 1e300]), id="float64-array"),
        pytest.param([1.0, -1e39], id="list"),
        pytest.param(tf.constant([1e300, 1.0], tf.float64), id="float64-tensor"),
    ],
)
def test_to_tensor_rejects_values_that_overflow_the_float_dtype(value: object) -> None:
    """Finite as float64 but infinite once cast to float32: as bad as NaN for training."""
    with pytest.raises(ValueError) as info:
        data.to_tensor("x", value, tf.float32)
    assert "`x`" in str(info.value)


@pytest.mark.parametrize(
    ("value", "exc"),
    [
        pytest.param(None, TypeError, id="none"),
        pytest.param(["a", "b"], TypeError, id="str-list"),
        pytest.param(np.array([1, None], dtype=object), TypeError, id="object"),
        pytest.param(tf.constant(["a"]), TypeError, id="str-tensor"),
        pytest.param(tf.sparse.from_dense([[1.0, 0.0]]), TypeError, id="sparse"),
        pytest.param(tf.data.Dataset.range(3), TypeError, id="dataset"),
        pytest.param([[1.0], [2.0, 3.0]], ValueError, id="ragged"),
        pytest.param(2.0, ValueError, id="scalar"),
        pytest.param(tf.constant(2.0), ValueError, id="scalar-tensor"),
        pytest.param(np.zeros((3, 0)), ValueError, id="empty"),
    ],
)
def test_to_tensor_rejects_bad_data_naming_the_argument(
    value: object, exc: type[Exception]
) -> None:
    with pytest.raises(exc) as info:
        data.to_tensor("features", value, tf.float32)
    assert "`features`" in str(info.value)


# -- ArrayData.batches ---------------------------------------------------------


def _array_data(n: int, batch_size: int, features: int = 2) -> data.ArrayData:
    x = tf.reshape(tf.range(n * features, dtype=tf.float32), [n, features])
    y = tf.range(n, dtype=tf.int64)  # y[i] == i identifies the example x[i]
    return data.ArrayData(x, y, batch_size)


def _rows(batches: list[tuple[tf.Tensor, tf.Tensor | None, int]]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    return x, y


def test_batches_without_shuffle_are_consecutive_slices() -> None:
    d = _array_data(10, 3)
    batches = list(d.batches())
    assert d.steps == 4
    assert [b[2] for b in batches] == [3, 3, 3, 1]  # the ragged last batch
    assert [int(b[0].shape[0]) for b in batches] == [3, 3, 3, 1]
    for i, (x_batch, y_batch, _) in enumerate(batches):
        np.testing.assert_array_equal(x_batch.numpy(), d.x.numpy()[3 * i : 3 * i + 3])
        np.testing.assert_array_equal(y_batch.numpy(), np.arange(10)[3 * i : 3 * i + 3])
    x, y = _rows(batches)
    np.testing.assert_array_equal(x, d.x.numpy())
    np.testing.assert_array_equal(y, np.arange(10))


def test_batches_without_targets_yield_none() -> None:
    d = data.ArrayData(tf.ones([5, 2]), None, 2)
    batches = list(d.batches())
    assert [b[1] for b in batches] == [None, None, None]
    assert [b[2] for b in batches] == [2, 2, 1]
    assert d.y_spec is None


@pytest.mark.parametrize("batch_size", [10, 11, 1000])
def test_batch_size_at_least_n_gives_one_batch(batch_size: int) -> None:
    d = _array_data(10, batch_size)
    batches = list(d.batches())
    assert d.steps == 1
    assert len(batches) == 1
    x_batch, y_batch, size = batches[0]
    assert size == 10
    np.testing.assert_array_equal(x_batch.numpy(), d.x.numpy())
    np.testing.assert_array_equal(y_batch.numpy(), np.arange(10))


def test_prepare_clamps_batch_size_to_the_number_of_examples() -> None:
    prepared = data.prepare(np.ones((4, 2)), np.ones(4), float_dtype=tf.float32, batch_size=100)
    assert isinstance(prepared, data.ArrayData)
    assert prepared.batch_size == 4
    assert prepared.steps == 1
    assert [b[2] for b in prepared.batches()] == [4]


def test_prepare_without_batch_size_is_one_full_batch() -> None:
    prepared = data.prepare(np.ones((7, 2)), np.ones(7), float_dtype=tf.float32, batch_size=None)
    assert isinstance(prepared, data.ArrayData)
    assert prepared.batch_size == 7
    assert prepared.x_spec.shape.as_list() == [None, 2]
    assert prepared.y_spec.shape.as_list() == [None]


# -- datasets ---------------------------------------------------------------


def test_prepare_dataset_casts_int_features_and_has_unknown_batch_dim() -> None:
    x = np.arange(12, dtype=np.int32).reshape(6, 2)
    y = np.arange(6, dtype=np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4, drop_remainder=True)
    assert dataset.element_spec[0].shape.as_list() == [4, 2]  # a known batch dim going in
    prepared = data.prepare(dataset, None, float_dtype=tf.float32, batch_size=None)
    assert isinstance(prepared, data.DatasetData)
    assert prepared.x_spec == tf.TensorSpec([None, 2], tf.float32)
    assert prepared.y_spec == tf.TensorSpec([None], tf.int64)  # targets keep their ints
    assert prepared.steps == 1
    batches = list(prepared.batches())
    assert len(batches) == 1
    x_batch, y_batch, size = batches[0]
    assert size is None
    assert x_batch.dtype == tf.float32
    assert y_batch.dtype == tf.int64
    np.testing.assert_array_equal(x_batch.numpy(), x[:4].astype(np.float32))
    np.testing.assert_array_equal(y_batch.numpy(), y[:4])


def test_prepare_dataset_casts_float_targets_and_features_to_float64() -> None:
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.ones((5, 3), np.float32), np.ones((5, 1), np.float16))
    ).batch(2)
    prepared = data.prepare(dataset, None, float_dtype=tf.float64, batch_size=None)
    assert prepared.x_spec == tf.TensorSpec([None, 3], tf.float64)
    assert prepared.y_spec == tf.TensorSpec([None, 1], tf.float64)
    assert prepared.steps == 3
    dtypes = {(b[0].dtype, b[1].dtype) for b in prepared.batches()}
    assert dtypes == {(tf.float64, tf.float64)}


def test_prepare_dataset_for_predict_drops_the_targets() -> None:
    x = np.arange(6, dtype=np.int64).reshape(3, 2)
    pairs = tf.data.Dataset.from_tensor_slices((x, np.zeros(3))).batch(2)
    features = tf.data.Dataset.from_tensor_slices(x).batch(2)
    for dataset in (pairs, features):
        prepared = data.prepare(
            dataset, None, float_dtype=tf.float32, batch_size=None, with_targets=False
        )
        assert isinstance(prepared, data.DatasetData)
        assert prepared.x_spec == tf.TensorSpec([None, 2], tf.float32)
        assert prepared.y_spec is None
        batches = list(prepared.batches())
        assert [b[1] for b in batches] == [None, None]
        np.testing.assert_array_equal(
            np.concatenate([b[0].numpy() for b in batches]), x.astype(np.float32)
        )


def test_unknown_dataset_length_gives_unknown_steps() -> None:
    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield np.ones((2, 2), np.float32), np.ones(2, np.float32)

    signature = (tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None], tf.float32))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    prepared = data.prepare(dataset, None, float_dtype=tf.float32, batch_size=None)
    assert prepared.steps is None
    assert len(list(prepared.batches())) == 1


def test_prepare_array_keeps_int_targets_and_casts_int_features() -> None:
    prepared = data.prepare(
        np.arange(6).reshape(3, 2), np.array([0, 1, 2]), float_dtype=tf.float32, batch_size=2
    )
    assert isinstance(prepared, data.ArrayData)
    assert prepared.x.dtype == tf.float32
    assert prepared.y.dtype == tf.int64
    assert prepared.steps == 2


# -- large arrays are copied to the device in slices ---------------------------


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every array 'large' and slices 3 rows long, to exercise the sliced copy."""
    monkeypatch.setattr(data.tensors, "CHUNKED_BYTES", 0)
    monkeypatch.setattr(data.tensors, "CHUNK_BYTES", 3 * 2 * 8)


@pytest.mark.usefixtures("tiny_chunks")
def test_sliced_copy_equals_plain_conversion_and_casts() -> None:
    array = np.arange(22, dtype=np.float64).reshape(11, 2) / 3
    tensor = data.to_tensor("x", array, tf.float32)
    assert tensor.dtype == tf.float32
    np.testing.assert_array_equal(tensor.numpy(), array.astype(np.float32))
    labels = data.to_tensor("y", np.arange(11), tf.float32, keep_int=True)
    assert labels.dtype == tf.int64
    np.testing.assert_array_equal(labels.numpy(), np.arange(11))


@pytest.mark.usefixtures("tiny_chunks")
def test_sliced_copy_reports_the_first_non_finite_index_across_slices() -> None:
    array = np.zeros((11, 2))
    array[7, 1] = 1e300  # finite in float64, inf in float32, in the third slice
    with pytest.raises(ValueError, match=r"`x` must be finite in float32.*\(7, 1\)"):
        data.to_tensor("x", array, tf.float32)


@pytest.mark.usefixtures("tiny_chunks")
def test_fit_on_sliced_copies_matches_fit_on_small_arrays() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = rng.normal(size=(20, 1)).astype(np.float32)
    model = gf.LinearModel(weight_init=0.1, bias_init=0.0)
    gf.Trainer(model, gf.L2(), gf.SGD(0.1), jit_compile=False).fit(
        x, y, epochs=2, batch_size=6, seed=0
    )
    sliced = model.W.numpy()
    data.tensors.CHUNKED_BYTES = 2**62  # back to the plain conversion
    model = gf.LinearModel(weight_init=0.1, bias_init=0.0)
    gf.Trainer(model, gf.L2(), gf.SGD(0.1), jit_compile=False).fit(
        x, y, epochs=2, batch_size=6, seed=0
    )
    np.testing.assert_array_equal(sliced, model.W.numpy())


def test_example_batch_keeps_a_fixed_number_of_examples() -> None:
    # A spec of exactly 64 examples of 64 features (an evaluation step's) gets 64 rows.
    spec = (tf.TensorSpec([64, 64], tf.float32), tf.TensorSpec([64], tf.int64))
    x0, y0 = data.example_batch(spec)
    assert x0.shape == (64, 64) and y0.shape == (64,)
    x1 = data.example_batch(tf.TensorSpec([None, 2], tf.float32))
    assert x1.shape[0] not in (None, 2)


def test_validation_of_many_steps_with_batch_size_equal_to_the_width() -> None:
    # jit_compile="auto" settles the evaluation step on a batch of the step's own shape.
    x = np.random.default_rng(0).normal(size=(130, 8)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True)
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.01))
    history = trainer.fit(x, y, epochs=13, batch_size=8, validation_data=(x, y))
    assert len(history.history["val_loss"]) == 13
