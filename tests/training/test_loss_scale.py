"""LossScale: Keras's dynamic loss scaling, step by step, eagerly, in graphs and under XLA."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.training import LossScale


def _setup(growth_steps: int = 3) -> tuple[LossScale, gf.Model, gf.UpdateRule, list[tf.Variable]]:
    model = gf.MLP((4,), units=2, seed=0, dtype="mixed_float16")
    model.maybe_build([None, 3])
    rule = gf.Adam(0.01)
    variables = list(model.trainable_variables)
    rule.build(variables)
    return LossScale(growth_steps=growth_steps), model, rule, variables


def _step_fn(scale: LossScale, model: Any, rule: Any, variables: list[tf.Variable]) -> Any:
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
            scaled = scale.scale_loss(loss)
        grads, finite = scale.unscale(tape.gradient(scaled, variables))
        scale.apply_if_finite(finite, lambda: rule.apply(grads, variables))
        return finite

    return step


X = tf.constant(np.random.default_rng(0).normal(size=(8, 3)), tf.float32)
Y = tf.constant(np.random.default_rng(1).normal(size=(8, 2)), tf.float32)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_halves_on_overflow_without_changing_anything_and_doubles_after_growth_steps(
    mode: str,
) -> None:
    scale, model, rule, variables = _setup(growth_steps=3)
    step = _step_fn(scale, model, rule, variables)
    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla")
    scale.scale.assign(2.0**40)  # float16 gradients overflow
    state = [*variables, *rule.variables]
    before = [v.numpy() for v in state]
    assert not bool(step(X, Y))
    assert float(scale.scale) == 2.0**39 and int(scale.counter) == 0
    for value, var in zip(before, state, strict=True):
        np.testing.assert_array_equal(value, var.numpy())  # weights, slots, iterations
    scale.scale.assign(8.0)
    for expected_counter in (1, 2):
        assert bool(step(X, Y))
        assert float(scale.scale) == 8.0 and int(scale.counter) == expected_counter
    assert bool(step(X, Y))  # the third finite step in a row
    assert float(scale.scale) == 16.0 and int(scale.counter) == 0
    assert int(rule.iterations) == 3


def test_unscaled_gradients_equal_the_unscaled_loss_gradients() -> None:
    scale, model, _, variables = _setup()
    scale.scale.assign(1024.0)  # a power of two: scaling is exact in binary floats
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_mean(tf.square(model(X) - Y))
        scaled = scale.scale_loss(loss)
    plain = tape.gradient(loss, variables)
    unscaled, finite = scale.unscale(tape.gradient(scaled, variables))
    assert bool(finite)
    for a, b in zip(plain, unscaled, strict=True):
        assert b.dtype == tf.float32
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=1e-6)


def test_none_and_sparse_gradients() -> None:
    scale = LossScale(4.0)
    sparse = tf.IndexedSlices(tf.constant([[8.0, 4.0]]), tf.constant([1]), tf.constant([3, 2]))
    unscaled, finite = scale.unscale([None, sparse, tf.constant([np.inf])])
    assert unscaled[0] is None
    np.testing.assert_array_equal(unscaled[1].values.numpy(), [[2.0, 1.0]])
    assert not bool(finite)
    assert bool(scale.unscale([None])[1])


def test_checkpoint_round_trips_scale_and_counter(tmp_path: Any) -> None:
    scale = LossScale()
    scale.scale.assign(512.0)
    scale.counter.assign(17)
    path = tf.train.Checkpoint(scale=scale).write(str(tmp_path / "ck"))
    fresh = LossScale()
    tf.train.Checkpoint(scale=fresh).read(path).assert_consumed()
    assert float(fresh.scale) == 512.0 and int(fresh.counter) == 17


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"initial_scale": 0.0}, ValueError, "initial_scale"),
        ({"initial_scale": 1e39}, ValueError, "initial_scale"),
        ({"initial_scale": "big"}, TypeError, "initial_scale"),
        ({"growth_steps": 0}, ValueError, "growth_steps"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], error: type, name: str) -> None:
    with pytest.raises(error, match=f"`{name}`"):
        LossScale(**kwargs)
