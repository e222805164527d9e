"""The probe refuses data that would only train by accident, before any variable changes."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf

X = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)


def _unchanged(trainer: gf.Trainer, call) -> None:  # type: ignore[no-untyped-def]
    before = [v.numpy() for v in trainer.task.state_variables()]
    call()
    after = [v.numpy() for v in trainer.task.state_variables()]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def _built(loss: gf.Loss, units: int = 1) -> gf.Trainer:
    trainer = gf.Trainer(gf.LinearModel(units, seed=0), loss, gf.SGD(0.1))
    trainer.fit(X, np.zeros((12, units), np.float32) if units == 1 else np.zeros(12, np.int64))
    return trainer


def test_targets_that_only_broadcast_are_refused_everywhere() -> None:
    trainer = _built(gf.L2())
    wide = np.zeros((12, 2), np.float32)
    match = r"per-example shape \(2,\), but the model's predictions have \(1,\)"
    with pytest.raises(ValueError, match="`y` has targets of " + match):
        _unchanged(trainer, lambda: trainer.fit(X, wide))
    with pytest.raises(ValueError, match=r"`validation_data\[1\]` has targets"):
        _unchanged(trainer, lambda: trainer.fit(X, wide[:, :1], validation_data=(X, wide)))
    dataset = tf.data.Dataset.from_tensor_slices((X, wide)).batch(4)
    with pytest.raises(ValueError, match="`x` has targets of " + match):
        _unchanged(trainer, lambda: trainer.fit(dataset))
    trainer.fit(X, np.zeros(12, np.float32))  # [N] against [N, 1]: a trailing 1 is fine


def test_sparse_labels_must_be_whole_numbers_and_match_all_but_the_class_axis() -> None:
    trainer = _built(gf.SparseCategoricalCrossentropy(from_logits=True), units=3)
    labels = np.zeros(12, np.float32)
    labels[5] = 2.5
    with pytest.raises(ValueError, match=r"`y` holds class labels that are not whole.*\(5,\)"):
        _unchanged(trainer, lambda: trainer.fit(X, labels))
    with pytest.raises(ValueError, match=r"per-example shape \(3,\).*need per-example shape \(\)"):
        _unchanged(trainer, lambda: trainer.fit(X, np.zeros((12, 3), np.int64)))
    trainer.fit(X, np.ones((12, 1), np.float32))  # whole float labels, [N, 1]: fine


def test_a_metric_or_task_log_named_epoch_is_refused() -> None:
    with pytest.raises(ValueError, match="`metrics` has a clashing name 'epoch'"):
        gf.Trainer(gf.LinearModel(), gf.L2(), metrics={"epoch": gf.L1()})

    class LogsEpoch(gf.Task):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(1.0)

        def train_step(self, batch):  # type: ignore[no-untyped-def]
            return {"epoch": self.w * 1.0}

    with pytest.raises(ValueError, match="'epoch', a name gradfit writes itself"):
        gf.Trainer(LogsEpoch()).fit(X)
