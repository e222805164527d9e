"""The compiled-function cache: bounded, and never keeping a replaced task's parts alive."""

from __future__ import annotations

import gc
import weakref

import numpy as np

import gradfit as gf
from gradfit.training.compile import FunctionCache, jit_for


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


def test_jit_for_skips_xla_only_for_short_auto_runs() -> None:
    assert jit_for("auto", 99) is False
    assert jit_for("auto", 100) == "auto"
    assert jit_for("auto", None) == "auto"
    assert jit_for(True, 1) is True


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
