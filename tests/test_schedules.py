"""Tests of gradfit.schedules and of learning rates that follow a schedule."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit import schedules
from tests.update_rules.helpers import RULES, assert_bad_hyperparameter

STEPS = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144]


def _values(schedule, steps=STEPS):
    return np.array([float(schedule(tf.constant(s, tf.int64))) for s in steps])


# -- each schedule: Keras equivalence and golden values --------------------------------------


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        (
            schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5),
            keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5),
        ),
        (
            schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True),
            keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True),
        ),
        (
            schedules.PiecewiseConstant([3, 20, 89], [1.0, 0.5, 0.1, 0.01]),
            keras.optimizers.schedules.PiecewiseConstantDecay([3, 20, 89], [1.0, 0.5, 0.1, 0.01]),
        ),
        (
            schedules.CosineDecay(0.1, decay_steps=100, alpha=0.1),
            keras.optimizers.schedules.CosineDecay(0.1, 100, alpha=0.1),
        ),
        (
            schedules.CosineDecay(0.1, decay_steps=50, warmup_steps=10, warmup_start=0.01),
            keras.optimizers.schedules.CosineDecay(0.01, 50, warmup_target=0.1, warmup_steps=10),
        ),
    ],
    ids=["exponential", "exponential-staircase", "piecewise", "cosine", "cosine-warmup"],
)
def test_matches_the_keras_schedule(mine, theirs):
    expected = np.array([float(theirs(tf.constant(s, tf.int64))) for s in STEPS])
    np.testing.assert_allclose(_values(mine), expected, rtol=1e-6, atol=1e-9)
    assert len(set(expected)) > 2  # the schedule really varies over these steps


def test_golden_values():
    # A linear warm-up from 0 to 1 over 4 steps, then a half cosine over 4 steps down to 0.
    cosine = schedules.CosineDecay(1.0, decay_steps=4, warmup_steps=4)
    # steps 0, 2: 0 / 4, 2 / 4 of the warm-up ; 4: the peak ; 6: 0.5 * (1 + cos(pi / 2)) = 0.5
    # 8 and later: 0.5 * (1 + cos(pi)) = 0
    np.testing.assert_allclose(
        _values(cosine, [0, 2, 4, 6, 8, 100]), [0, 0.5, 1, 0.5, 0, 0], atol=1e-7
    )
    piecewise = schedules.PiecewiseConstant([2, 5], [1.0, 0.5, 0.1])
    # values[0] while step <= 2, values[1] while step <= 5, then values[2]
    np.testing.assert_allclose(
        _values(piecewise, [0, 2, 3, 5, 6, 1000]), [1, 1, 0.5, 0.5, 0.1, 0.1], rtol=1e-7
    )
    exponential = schedules.ExponentialDecay(0.8, decay_steps=2, decay_rate=0.5)
    # 0.8 * 0.5 ** (step / 2)
    np.testing.assert_allclose(
        _values(exponential, [0, 1, 2, 4]), [0.8, 0.8 / math.sqrt(2), 0.4, 0.2], rtol=1e-6
    )
    assert float(schedules.Constant(0.3)(tf.constant(7, tf.int64))) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.Constant(0.1),
        schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True),
        schedules.PiecewiseConstant([3], [0.1, 0.01]),
        schedules.CosineDecay(0.1, 50, alpha=0.1, warmup_steps=5, warmup_start=0.01),
    ],
    ids=repr,
)
def test_config_round_trip(schedule):
    copy = type(schedule).from_config(schedule.get_config())
    np.testing.assert_array_equal(_values(copy), _values(schedule))
    assert repr(copy) == repr(schedule)


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "echo"),
    [
        (lambda learning_rate: schedules.Constant(learning_rate), {"learning_rate": -1.0},
         ValueError, "learning_rate=-1.0"),
        (lambda decay_steps: schedules.ExponentialDecay(0.1, decay_steps, 0.5),
         {"decay_steps": 0}, ValueError, "decay_steps=0"),
        (lambda decay_rate: schedules.ExponentialDecay(0.1, 10, decay_rate),
         {"decay_rate": 0.0}, ValueError, "decay_rate=0.0"),
        (lambda staircase: schedules.ExponentialDecay(0.1, 10, 0.5, staircase),
         {"staircase": "yes"}, TypeError, "staircase='yes'"),
        (lambda boundaries: schedules.PiecewiseConstant(boundaries, [1.0, 0.5, 0.1]),
         {"boundaries": [5, 2]}, ValueError, "boundaries=[5, 2]"),
        (lambda boundaries: schedules.PiecewiseConstant(boundaries, [1.0, 0.5]),
         {"boundaries": [1.5]}, TypeError, "boundaries=[1.5]"),
        (lambda values: schedules.PiecewiseConstant([1], values),
         {"values": [1.0, -0.5]}, ValueError, "values=-0.5"),
        (lambda alpha: schedules.CosineDecay(0.1, 10, alpha=alpha),
         {"alpha": 1.5}, ValueError, "alpha=1.5"),
        (lambda warmup_steps: schedules.CosineDecay(0.1, 10, warmup_steps=warmup_steps),
         {"warmup_steps": -1}, ValueError, "warmup_steps=-1"),
    ],
)  # fmt: skip
def test_invalid_arguments_raise(make, kwargs, error, echo):
    assert_bad_hyperparameter(make, kwargs, error, echo)


def test_values_and_boundaries_lengths_must_match():
    with pytest.raises(ValueError, match=r"`values`.*len\(boundaries\)=2, len\(values\)=2"):
        schedules.PiecewiseConstant([1, 2], [1.0, 0.5])


# -- rules that follow a schedule ------------------------------------------------------------


@pytest.mark.parametrize("name", list(RULES))
def test_the_kth_update_uses_schedule_of_k(name):
    # The rate is 0 except at step 2: only the third real update may move the variables.
    rule = RULES[name](schedules.PiecewiseConstant([1, 2], [0.0, 1e-2, 0.0]))
    per_update = getattr(rule, "steps", 1)  # micro-batches per real update
    rng = np.random.default_rng(80)
    w = tf.Variable(rng.standard_normal((3, 2)).astype(np.float32))
    start = w.numpy()
    for update in range(3):
        if update < 2:
            np.testing.assert_allclose(float(rule.current_learning_rate()), 0.0)
        for _ in range(per_update):
            rule.apply([tf.constant(rng.standard_normal((3, 2)).astype(np.float32))], [w])
        if update < 2:
            np.testing.assert_array_equal(w.numpy(), start, err_msg=f"update {update}")
    assert not np.allclose(w.numpy(), start)


def test_keras_schedules_and_plain_callables_are_learning_rates():
    keras_schedule = keras.optimizers.schedules.ExponentialDecay(0.5, 1, 0.5)
    for learning_rate in (keras_schedule, lambda step: 0.5 * 0.5 ** tf.cast(step, tf.float32)):
        w = tf.Variable(0.0)
        rule = gf.SGD(learning_rate)
        for _ in range(3):
            rule.apply([tf.constant(-1.0)], [w])
        # w = 0.5 + 0.25 + 0.125: steps 0, 1, 2 of 0.5 * 0.5 ** step
        np.testing.assert_allclose(w.numpy(), 0.875, rtol=1e-6)
        np.testing.assert_allclose(float(rule.current_learning_rate()), 0.0625)
        assert rule.learning_rate is learning_rate


def test_a_scheduled_rule_round_trips_through_a_checkpoint(tmp_path):
    def make():
        return gf.Adam(keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.01]))

    w, rule = tf.Variable([1.0, 2.0]), make()
    for _ in range(3):
        rule.apply([tf.constant([1.0, -1.0])], [w])
    path = tf.train.Checkpoint(rule=rule, w=w).save(str(tmp_path / "ckpt"))
    restored_w, restored = tf.Variable([0.0, 0.0]), make()
    restored.build([restored_w])
    tf.train.Checkpoint(rule=restored, w=restored_w).restore(path).assert_consumed()
    assert int(restored.iterations) == 3
    np.testing.assert_allclose(float(restored.current_learning_rate()), 0.01)


def test_a_scheduled_learning_rate_cannot_be_assigned():
    rule = gf.Adam(schedules.Constant(0.1))
    with pytest.raises(TypeError, match=r"`learning_rate`.*schedule.*Received: learning_rate=0.5"):
        rule.learning_rate = 0.5
    constant = gf.Adam(0.1)
    with pytest.raises(TypeError, match="`learning_rate` can only be set to a number"):
        constant.learning_rate = schedules.Constant(0.1)
    assert float(constant.learning_rate.numpy()) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("learning_rate", "error", "match"),
    [
        (lambda step: 1 / 0, TypeError, "calling it at step 0 failed with ZeroDivisionError"),
        (lambda step: tf.ones([2]), TypeError, "returned shape"),
        (lambda step: "fast", TypeError, "returned shape \\(\\) and dtype string"),
        (lambda step: -0.1, ValueError, "at step 0 it returned -0.1"),
        (lambda step: float("nan"), ValueError, "at step 0 it returned nan"),
    ],
)
def test_a_bad_schedule_is_rejected_at_construction(learning_rate, error, match):
    with pytest.raises(error, match=match) as info:
        gf.RMSProp(learning_rate)
    assert "`learning_rate`" in str(info.value)
    assert "Received: learning_rate=" in str(info.value)


# -- through the Trainer: traced once per fit, "lr" logged ------------------------------------


@pytest.mark.parametrize(
    ("schedule", "jit_compile"),
    [
        (schedules.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5), False),
        (schedules.CosineDecay(0.1, decay_steps=8, warmup_steps=2, warmup_start=0.01), True),
        (keras.optimizers.schedules.PiecewiseConstantDecay([4, 8], [0.1, 0.05, 0.01]), False),
    ],
    ids=["gradfit", "gradfit-xla", "keras"],
)
def test_fit_traces_once_and_logs_the_scheduled_rate(schedule, jit_compile):
    rng = np.random.default_rng(81)
    x = rng.standard_normal((32, 2)).astype(np.float32)
    y = x @ np.array([[2.0], [-1.0]], np.float32)
    rule = gf.Adam(schedule)
    model = gf.LinearModel(weight_init=0.0)
    trainer = gf.Trainer(model, gf.L2(), rule, jit_compile=jit_compile)
    history = trainer.fit(x, y, epochs=3, batch_size=8, seed=0)
    assert trainer.train_function.experimental_get_tracing_count() == 1
    assert int(rule.iterations) == 12
    # After epoch e, 4 * (e + 1) updates are done: the next uses schedule(4 * (e + 1)).
    expected = [float(schedule(tf.constant(4 * (e + 1), tf.int64))) for e in range(3)]
    np.testing.assert_allclose(history.history["lr"], expected, rtol=1e-6)
    assert len(set(expected)) == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
