"""Mixed precision through the Trainer: float32 variables, half compute, dynamic loss scaling.

Digits (scikit-learn's bundled 8x8 images): a ``"mixed_float16"`` MLP must
keep float32 variables, reach the float32 run's accuracy within one point,
survive an injected overflow (a loss scale so large that the float16
gradients overflow) without raising, and round-trip its loss scale through
``Trainer.save/restore``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import gradfit as gf

pytestmark = pytest.mark.xdist_group("mixed")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, ...]:
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def _trainer(dtype: str) -> gf.Trainer:
    model = gf.MLP((64,), units=10, seed=0, dtype=dtype)
    return gf.Trainer(
        model,
        gf.SparseCategoricalCrossentropy(from_logits=True),
        gf.Adam(3e-3),
        metrics=[gf.metrics.SparseCategoricalAccuracy()],
    )


def _accuracy(trainer: gf.Trainer, x: np.ndarray, y: np.ndarray) -> float:
    return float(trainer.evaluate(x, y)["sparse_categorical_accuracy"])


def test_mixed_float16_matches_float32_accuracy_and_survives_an_overflow(
    digits: Any, tmp_path: Any
) -> None:
    x, y, x_val, y_val = digits
    reference = _trainer("float32")
    reference.fit(x, y, epochs=8, batch_size=64, seed=0)
    mixed = _trainer("mixed_float16")
    scale = mixed.task.loss_scale
    assert scale is not None and float(scale.scale) == 2.0**15
    mixed.fit(x, y, epochs=4, batch_size=64, seed=0)
    assert all(var.dtype == tf.float32 for var in mixed.model.trainable_variables)

    weights = [var.numpy() for var in mixed.model.trainable_variables]
    iterations = int(mixed.update_rule.iterations)
    scale.scale.assign(2.0**60)  # the next step's float16 gradients overflow
    history = mixed.fit(x[:64], y[:64], epochs=1, batch_size=64)  # one step: on_nonfinite="raise"
    assert float(scale.scale) == 2.0**59  # halved, the update skipped, nothing raised
    assert "nonfinite_steps" not in history.history
    assert int(mixed.update_rule.iterations) == iterations
    for before, var in zip(weights, mixed.model.trainable_variables, strict=True):
        np.testing.assert_array_equal(before, var.numpy())

    mixed.fit(x, y, epochs=4, batch_size=64, seed=1)  # the scale comes down as it overflows
    assert 1.0 <= float(scale.scale) < 2.0**59
    gap = _accuracy(reference, x_val, y_val) - _accuracy(mixed, x_val, y_val)
    assert _accuracy(reference, x_val, y_val) > 0.9
    assert gap < 0.01

    path = mixed.save(tmp_path / "mixed")
    restored = _trainer("mixed_float16")
    restored.restore(path)
    assert float(restored.task.loss_scale.scale) == float(scale.scale)
    assert int(restored.task.loss_scale.counter) == int(scale.counter)


def test_bfloat16_and_float32_models_have_no_loss_scale() -> None:
    for dtype in ("mixed_bfloat16", "float32"):
        assert _trainer(dtype).task.loss_scale is None
    forced = gf.SupervisedTask(gf.MLP((4,)), gf.L2(), loss_scale=True)
    assert isinstance(forced.loss_scale, gf.training.LossScale)
    with pytest.raises(TypeError, match="`loss_scale`"):
        gf.SupervisedTask(gf.MLP((4,)), gf.L2(), loss_scale="yes")


def test_a_keras_model_of_mixed_float16_layers_trains_with_loss_scaling(digits: Any) -> None:
    x, y, x_val, y_val = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu", dtype="mixed_float16"),
            keras.layers.Dense(10, dtype="mixed_float16"),
        ]
    )
    trainer = gf.Trainer(
        model,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        gf.Adam(3e-3),
        metrics=["accuracy"],
    )
    assert trainer.task.loss_scale is not None
    trainer.fit(x, y, epochs=4, batch_size=64, seed=0)
    assert all(var.dtype == "float32" for var in model.trainable_variables)
    assert trainer.evaluate(x_val, y_val)["accuracy"] > 0.85
