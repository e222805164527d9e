"""The compiled-function cache: bounded, and never keeping a replaced task's parts alive."""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.training.compile import Compiled, FunctionCache, Jit, StepCost, jit_for, step_flops


def test_a_new_owner_empties_the_cache_and_size_bounds_it() -> None:
    cache = FunctionCache(size=2)
    cache.owner("a")
    made = [cache.get(k, lambda k=k: [k]) for k in ("x", "y")]
    assert cache.get("x", lambda: ["other"]) is made[0]  # found, not made again
    cache.get("z", lambda: ["z"])  # a third: the least recently used ("y") goes
    assert cache.keys() == ["x", "z"]
    cache.owner("a")  # the same owner keeps everything
    assert len(cache) == 2
    cache.owner("b")
    assert len(cache) == 0


def test_a_jit_mode_is_keyed_by_its_mode_alone() -> None:
    short, long = Jit("auto", steps=10, flops=1.0), Jit("auto", steps=10**6)
    assert short == long and hash(short) == hash(long)  # cached functions are shared
    assert Jit("auto") != Jit(False)
    assert short.runs(3) == Jit("auto", steps=3, flops=1.0) and short.runs(3).steps == 3


def test_step_flops_counts_six_per_parameter_and_example_training_two_otherwise() -> None:
    variables = [tf.zeros([3, 4]), tf.zeros([4])]  # 16 parameters
    assert step_flops(variables, 8, training=True) == 6 * 16 * 8
    assert step_flops(variables, 8, training=False) == 2 * 16 * 8
    assert step_flops(variables, None, training=True) == 6 * 16


class _Data:
    steps, batch_size = 7, 5


def test_jit_for_counts_the_runs_steps_and_flops() -> None:
    jit = jit_for("auto", _Data(), [tf.zeros([2, 1])], epochs=3)
    assert (jit.mode, jit.steps, jit.flops) == ("auto", 21, 6 * 2 * 5)
    assert jit_for(True, None, []).steps is None


def test_xla_gain_by_hand() -> None:
    small = StepCost(ops=100, dots=2)
    # 10,000 steps save 10,000 * 100 * 0.75 us = 0.75 s; compiling costs 100 * 2.5 ms = 0.25 s,
    # counted 1.5 times: 0.375 s. A tenth of the steps saves 0.075 s: less.
    assert small.xla_gain(10_000, 0.0) == pytest.approx(0.375)
    assert small.xla_gain(1_000, 0.0) == pytest.approx(0.075 - 0.375)
    # Five products beyond three add 5 * 0.25 s of compiling (times 1.5).
    assert StepCost(100, 8).xla_gain(10_000, 0.0) == pytest.approx(0.375 - 1.875)
    # 2e8 FLOPs a step save 2e8 * 2.4 ps = 480 us more a step: 4.8 s over 10,000 steps.
    assert small.xla_gain(10_000, 2e8) == pytest.approx(0.375 + 4.8)
    assert small.xla_gain(None, 0.0) == float("-inf")


def test_auto_reconsiders_xla_once_the_runs_together_would_repay_it() -> None:
    def make(jit):
        return tf.function(lambda x: x * x, jit_compile=jit)

    cache = FunctionCache()
    runs = [cache.compiled("f", make, "f", Jit("auto", 2_000)) for _ in range(3)]
    assert runs[0] is runs[1] is runs[2]  # one function, planned for three runs
    compiled = runs[0]
    # Without XLA for the first runs' steps ...
    assert compiled(tf.constant(2.0)).numpy() == 4.0 and compiled.jit_compile is False
    for _ in range(10):  # ... until the steps run so far and the next run's repay compiling
        compiled = cache.compiled("f", make, "f", Jit("auto", 2_000))
        assert compiled(tf.constant(2.0)).numpy() == 4.0
    assert compiled.jit_compile is True


def test_replaced_update_rules_and_models_are_not_kept_alive() -> None:
    x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    y = 2 * x + 1
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.1), jit_compile=False)
    trainer.fit(x, y, epochs=1, batch_size=16, seed=0)
    old_rule = weakref.ref(trainer.update_rule)
    old_task = weakref.ref(trainer.task)
    trainer.update_rule = gf.Adam(0.01)
    trainer.fit(x, y, epochs=1, batch_size=16, seed=0)
    gc.collect()
    assert old_rule() is None  # the first fit's functions, which captured it, were dropped
    trainer.task = gf.SupervisedTask(gf.LinearModel(), gf.L2(), gf.SGD(0.1))
    trainer.fit(x, y, epochs=1, batch_size=16, seed=0)
    gc.collect()
    assert old_task() is None


def test_auto_falls_back_with_a_note_where_xla_cannot_compile(caplog) -> None:
    def step(x):
        return tf.numpy_function(lambda a: a * 2, [x], tf.float32, stateful=False)  # no XLA

    compiled = Compiled(lambda jit: tf.function(step, jit_compile=jit), Jit("auto", 10**9), "step")
    with caplog.at_level(logging.INFO, logger="gradfit"):
        assert compiled(tf.constant([1.5])).numpy().tolist() == [3.0]
    assert compiled.jit_compile is False and not compiled.pending
    assert any("not using XLA for the step" in r.getMessage() for r in caplog.records)


def test_auto_compiles_with_xla_where_the_estimate_says_it_pays() -> None:
    def make(jit):
        return tf.function(lambda x: x * x, jit_compile=jit)

    long, short = Compiled(make, Jit("auto", 10**9), "f"), Compiled(make, Jit("auto", 10), "f")
    assert long(tf.constant(3.0)).numpy() == short(tf.constant(3.0)).numpy() == 9.0
    assert long.jit_compile is True and short.jit_compile is False
