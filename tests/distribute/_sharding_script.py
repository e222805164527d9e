"""In-memory data sharded over MirroredStrategy's replicas (run by test_sharding.py).

Usage: ``python _sharding_script.py``. Two logical CPUs are configured
before TensorFlow starts. Records where each replica's shard lives and
which rows it holds (for ordered and shuffled data), every shard a fit
places, and the largest difference from one device for a global batch
that splits unevenly (8 + 7 rows). The last line of stdout is one JSON
object.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _devices
import numpy as np
import tensorflow as tf

import gradfit as gf
from gradfit.data import sharding

STRATEGY = _devices.STRATEGY


def describe(placed: Any) -> list[dict[str, Any]]:
    """Each replica's shard: its device and its rows' first features."""
    return [
        {"device": parts[0].device, "rows": [float(v) for v in parts[0].numpy()[:, 0]]}
        for parts in STRATEGY.experimental_local_results(placed)
    ]


def placement() -> dict[str, Any]:
    """``Shards.place`` of 11 examples (row i holds i) in batches of 4, ordered and shuffled."""
    x = tf.constant(np.arange(11, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32))
    y = tf.constant(np.arange(11, dtype=np.float32)[:, None])
    order = tf.constant([3, 9, 0, 7, 1, 10, 5, 2, 8, 4, 6])
    shards = sharding.Shards(11, 4, 2)
    ordered = shards.place(STRATEGY, (x, y))
    shuffled = shards.place(STRATEGY, (x, y), order)
    pairs = [
        float(np.max(np.abs(p[0].numpy()[:, 0] - p[1].numpy()[:, 0])))
        for p in STRATEGY.experimental_local_results(shuffled)
    ]
    return {
        "ordered": describe(ordered),
        "shuffled": describe(shuffled),
        "targets_follow": max(pairs),
    }


class Recorder:
    """Wraps ``Shards.place`` to record every shard a fit places."""

    def __init__(self) -> None:
        self.placed: list[list[dict[str, Any]]] = []
        self.original = sharding.Shards.place

    def __enter__(self) -> Recorder:
        recorder = self

        def place(shards: sharding.Shards, *args: Any, **kwargs: Any) -> Any:
            placed = recorder.original(shards, *args, **kwargs)
            recorder.placed.append(describe(placed))
            return placed

        sharding.Shards.place = place  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        sharding.Shards.place = self.original  # type: ignore[method-assign]


def fits() -> dict[str, Any]:
    """Fits of 70 examples (batches of 15: 8 + 7 rows a replica) against one device."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(70, 3)).astype(np.float32)
    x[:, 0] = np.arange(70)  # (row i's first feature is i: the shards show their rows)
    x[:, 0] /= 70.0
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
    out: dict[str, Any] = {}
    for shuffle in (False, True):
        trainers = []
        for strategy in (None, STRATEGY):
            with STRATEGY.scope() if strategy else contextlib.nullcontext():
                trainer = gf.Trainer(
                    gf.MLP((8,), seed=1), gf.L2(), gf.Adam(0.01), strategy=strategy
                )
            with Recorder() as recorder:
                history = trainer.fit(x, y, epochs=3, batch_size=15, shuffle=shuffle, seed=5)
            trainers.append((trainer, history, recorder.placed))
        (one, h1, _), (two, h2, placed) = trainers
        out["shuffled" if shuffle else "ordered"] = {
            "variables": max(
                float(np.max(np.abs(a.numpy() - b.numpy())))
                for a, b in zip(one.task.state_variables(), two.task.state_variables(), strict=True)
            ),
            "logs": max(
                float(np.max(np.abs(np.subtract(h1.history[k], h2.history[k])))) for k in h1.history
            ),
            "placed": [
                [{"device": r["device"], "rows": [round(v * 70) for v in r["rows"]]} for r in p]
                for p in placed
            ],
        }
    return out


def results() -> dict[str, Any]:
    """Every measurement (what test_sharding.py checks)."""
    return {"placement": placement(), "fits": fits()}


if __name__ == "__main__":
    print(json.dumps(results()))
