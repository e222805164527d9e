"""RecordVariables: initial values plus one entry per epoch, keyed by path."""

from __future__ import annotations

import numpy as np

import gradfit as gf


def test_records_initial_and_per_epoch_values_by_path():
    x = np.array([1.0, 2.0], np.float32)
    y = np.array([3.0, 5.0], np.float32)
    record = gf.RecordVariables()
    model = gf.LinearModel(weight_init=1.0, bias_init=0.0)
    gf.Trainer(model, gf.L2(), gf.SGD(0.01)).fit(x, y, epochs=2, callbacks=[record])
    assert sorted(record.values) == ["W", "b"]
    assert len(record.values["W"]) == 3
    # Epoch 0 from W=1, b=0: dW = -8, db = -5 (see test_trainer); W=1.08, b=0.05.
    np.testing.assert_allclose(record.values["W"][:2], [1.0, 1.08], rtol=1e-6)
    np.testing.assert_allclose(record.values["b"][:2], [0.0, 0.05], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(record.values["W"][-1], model.W.numpy())


def test_mlp_paths_and_copies_not_views():
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.zeros((8, 1), np.float32)
    record = gf.RecordVariables()
    model = gf.MLP((4,), seed=0)
    gf.Trainer(model, gf.L2(), gf.SGD(0.1)).fit(x, y, epochs=2, callbacks=[record])
    assert sorted(record.values) == ["layers/0/W", "layers/0/b", "layers/1/W", "layers/1/b"]
    first, last = record.values["layers/1/W"][0], record.values["layers/1/W"][-1]
    assert first.shape == (4, 1)
    assert not np.array_equal(first, last)  # stored values do not follow the variable
