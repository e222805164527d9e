"""History: per-epoch lists, reset per fit."""

from __future__ import annotations

import numpy as np

import gradfit as gf


def test_history_holds_one_entry_per_epoch_and_resets_on_train_begin():
    x = np.linspace(-1, 1, 20).astype(np.float32)
    y = 3 * x
    trainer = gf.Trainer(gf.LinearModel(weight_init=0.0), gf.L2(), gf.SGD(0.1))
    history = trainer.fit(x, y, epochs=4, validation_data=(x, y))
    assert history.epoch == [0, 1, 2, 3]
    assert sorted(history.history) == ["loss", "lr", "val_loss"]
    assert all(len(values) == 4 for values in history.history.values())
    # Full-batch gradient descent on a convex problem: the loss only goes down.
    assert np.all(np.diff(history.history["loss"]) < 0)
    assert trainer.history is history
    # The same History instance reused by hand restarts cleanly.
    reused = gf.History()
    trainer.fit(x, y, epochs=2, callbacks=[reused])
    trainer.fit(x, y, epochs=1, callbacks=[reused])
    assert reused.epoch == [0]
    assert len(reused.history["loss"]) == 1
