"""EarlyStopping: patience, min_delta, fallback to loss, restoring the best weights."""

from __future__ import annotations

import numpy as np
import pytest

import gradfit as gf
from gradfit.callbacks import Callback


class FeedLosses(Callback):
    """Overwrites the epoch's logged loss with scripted values (runs before EarlyStopping)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["loss"] = self.values[epoch]


def data():
    x = np.linspace(-1, 1, 16).astype(np.float32)
    return x, 2 * x + 1


@pytest.mark.parametrize(
    ("losses", "patience", "min_delta", "stopped_after"),
    [
        # patience 0: the first epoch that does not improve stops training.
        ([5, 4, 4, 3, 2, 1], 0, 0.0, 2),
        # patience 2: two epochs without improvement (2 and 3) stop after epoch 3.
        ([5, 4, 4, 4.5, 1, 1], 2, 0.0, 3),
        # an improvement resets the wait.
        ([5, 4, 4.5, 3, 3.5, 3.2, 3.1, 1], 2, 0.0, 5),
        # min_delta: 4 -> 3.95 is not an improvement of more than 0.1.
        ([5, 4, 3.95, 3.9, 1, 1], 1, 0.1, 2),
    ],
)
def test_patience_and_min_delta(losses, patience, min_delta, stopped_after):
    x, y = data()
    stop = gf.EarlyStopping("loss", patience=patience, min_delta=min_delta)
    history = gf.Trainer(gf.LinearModel(), gf.L2()).fit(
        x, y, epochs=len(losses), callbacks=[FeedLosses(losses), stop]
    )
    assert history.epoch[-1] == stopped_after
    assert stop.stopped_epoch == stopped_after


def test_no_stop_while_improving():
    x, y = data()
    stop = gf.EarlyStopping("loss")
    history = gf.Trainer(gf.LinearModel(weight_init=0.0), gf.L2(), gf.SGD(0.1)).fit(
        x, y, epochs=5, callbacks=[stop]
    )
    assert history.epoch == [0, 1, 2, 3, 4]
    assert stop.stopped_epoch is None and stop.best_epoch == 4


def test_val_loss_falls_back_to_loss_with_a_warning():
    x, y = data()
    stop = gf.EarlyStopping()  # monitors val_loss
    with pytest.warns(UserWarning, match="no validation data"):
        history = gf.Trainer(gf.LinearModel(), gf.L2()).fit(
            x, y, epochs=4, callbacks=[FeedLosses([3, 2, 2, 1]), stop]
        )
    assert history.epoch == [0, 1, 2]


def test_unknown_monitor_is_rejected_before_training():
    x, y = data()
    model = gf.LinearModel(weight_init=0.5, bias_init=0.0)
    with pytest.raises(ValueError, match=r"`monitor`.*'accuracy'"):
        gf.Trainer(model, gf.L2()).fit(x, y, callbacks=[gf.EarlyStopping("accuracy")])
    assert model.W.numpy() == 0.5


def test_restore_best_weights():
    x, y = data()
    model = gf.LinearModel(weight_init=0.0, bias_init=0.0)
    seen = []
    snapshot = gf.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(model.W.numpy()))
    stop = gf.EarlyStopping("loss", patience=1, restore_best_weights=True)
    gf.Trainer(model, gf.L2(), gf.SGD(0.1)).fit(
        x, y, epochs=5, callbacks=[snapshot, FeedLosses([5, 1, 4, 3, 2]), stop]
    )
    # Best epoch is 1; training stops after epoch 2; W goes back to its value after epoch 1.
    assert stop.best_epoch == 1 and stop.stopped_epoch == 2
    assert model.W.numpy() == seen[1]
    assert model.W.numpy() != seen[2]


def test_mode_max_for_accuracy_and_bad_arguments():
    assert gf.EarlyStopping("val_accuracy").mode == "max"
    assert gf.EarlyStopping("val_loss").mode == "min"
    with pytest.raises(ValueError, match=r"`patience`.*-1"):
        gf.EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="`mode`"):
        gf.EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="`min_delta`"):
        gf.EarlyStopping(min_delta=float("nan"))


def test_a_nan_epoch_is_never_the_best():
    x, y = data()
    model = gf.LinearModel(weight_init=0.0, bias_init=0.0)
    stop = gf.EarlyStopping("loss", patience=2, restore_best_weights=True)
    history = gf.Trainer(model, gf.L2(), gf.SGD(0.1)).fit(
        x, y, epochs=6, callbacks=[FeedLosses([float("nan"), 0.5, 0.4, 0.3, 0.35, 0.36]), stop]
    )
    assert stop.best == 0.3 and stop.best_epoch == 3
    assert history.epoch == [0, 1, 2, 3, 4, 5]
    assert stop.stopped_epoch == 5
