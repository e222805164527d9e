"""ModelCheckpoint: file names from the logs, save_best_only, restoring the best epoch."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit import saving
from gradfit.callbacks import Callback, LambdaCallback, ModelCheckpoint


class FeedLosses(Callback):
    """Overwrites an epoch log with scripted values (runs before ModelCheckpoint)."""

    def __init__(self, values, key="loss"):
        super().__init__()
        self.values, self.key = values, key

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


def data():
    x = np.linspace(-1, 1, 16).astype(np.float32)
    return x, 2 * x + 1


def fit(callbacks, epochs, **kwargs):
    """Fits the tutorial's model; returns it and W after every epoch."""
    x, y = data()
    model = gf.LinearModel(weight_init=0.0, bias_init=0.0)
    seen = []
    record = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(model.W.numpy()))
    gf.Trainer(model, gf.L2(), gf.SGD(0.1)).fit(
        x, y, epochs=epochs, callbacks=[record, *callbacks], **kwargs
    )
    return model, seen


def restored_W(path):
    model = gf.LinearModel()
    saving.restore_model(model, path)
    return model.W.numpy()


def checkpoints(directory):
    return sorted(
        name[: -len(".index")] for name in os.listdir(directory) if name.endswith(".index")
    )


def test_saves_every_epoch_under_a_name_formatted_from_the_logs(tmp_path):
    losses = [5.0, 4.0, 4.5]
    checkpoint = ModelCheckpoint(tmp_path / "ckpts" / "ckpt-{epoch:02d}-{loss:.1f}")
    _, seen = fit([FeedLosses(losses), checkpoint], epochs=3)

    assert checkpoints(tmp_path / "ckpts") == ["ckpt-00-5.0", "ckpt-01-4.0", "ckpt-02-4.5"]
    assert sorted(os.listdir(tmp_path / "ckpts")) == sorted(
        ["checkpoint"]
        + [
            f"ckpt-{e:02d}-{loss:.1f}{s}"
            for e, loss in enumerate(losses)
            for s in (".index", ".data-00000-of-00001")
        ]
    )
    assert checkpoint.last_path == str(tmp_path / "ckpts" / "ckpt-02-4.5")
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpts")) == checkpoint.last_path
    for epoch, loss in enumerate(losses):
        assert restored_W(tmp_path / "ckpts" / f"ckpt-{epoch:02d}-{loss:.1f}") == seen[epoch]
    assert checkpoint.best_epoch is None  # tracked only with save_best_only


@pytest.mark.parametrize(
    ("losses", "mode", "saved"),
    [
        ([5.0, 4.0, 4.5, 3.0, 3.5], "min", [0, 1, 3]),
        ([float("nan"), 4.0, 4.0, 3.9, 5.0], "min", [1, 3]),  # NaN never improves; ties neither
        ([1.0, 3.0, 2.0, 3.5, 3.5], "max", [0, 1, 3]),
    ],
)
def test_save_best_only_keeps_improving_epochs_and_the_best_restores(tmp_path, losses, mode, saved):
    checkpoint = ModelCheckpoint(
        tmp_path / "ckpt-{epoch}", monitor="loss", save_best_only=True, mode=mode
    )
    _, seen = fit([FeedLosses(losses), checkpoint], epochs=len(losses))

    assert checkpoints(tmp_path) == [f"ckpt-{e}" for e in saved]
    best = saved[-1]
    assert (checkpoint.best, checkpoint.best_epoch) == (losses[best], best)
    assert checkpoint.best_path == str(tmp_path / f"ckpt-{best}")
    assert tf.train.latest_checkpoint(str(tmp_path)) == checkpoint.best_path
    assert restored_W(checkpoint.best_path) == seen[best]
    assert seen[best] != seen[-1]


def test_a_fixed_path_always_holds_the_best_epoch(tmp_path):
    checkpoint = ModelCheckpoint(tmp_path / "best", monitor="loss", save_best_only=True)
    model, seen = fit([FeedLosses([5.0, 3.0, 4.0, 3.5]), checkpoint], epochs=4)
    assert sorted(os.listdir(tmp_path)) == ["best.data-00000-of-00001", "best.index", "checkpoint"]
    assert restored_W(tmp_path / "best") == seen[1]
    # Restoring into the trained model itself sets it back to epoch 1.
    saving.restore_model(model, tmp_path)
    assert model.W.numpy() == seen[1]


def test_val_loss_falls_back_to_loss_with_a_warning(tmp_path):
    checkpoint = ModelCheckpoint(tmp_path / "ckpt-{epoch}", save_best_only=True)
    with pytest.warns(UserWarning, match="ModelCheckpoint.*no validation data"):
        fit([FeedLosses([3.0, 2.0, 2.5]), checkpoint], epochs=3)
    assert checkpoints(tmp_path) == ["ckpt-0", "ckpt-1"]


def test_monitors_val_loss_when_there_is_validation_data(tmp_path):
    checkpoint = ModelCheckpoint(tmp_path / "ckpt-{epoch}-{val_loss:.0f}", save_best_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(
            [FeedLosses([3.0, 4.0, 2.0], key="val_loss"), checkpoint],
            epochs=3,
            validation_data=data(),
        )
    assert checkpoints(tmp_path) == ["ckpt-0-3", "ckpt-2-2"]


def test_save_weights_only_false_saves_the_whole_trainer(tmp_path):
    x, y = data()
    trainer = gf.Trainer(gf.LinearModel(weight_init=0.0), gf.L2(), gf.Adam(0.1))
    checkpoint = ModelCheckpoint(tmp_path / "trainer-{epoch}", save_weights_only=False)
    trainer.fit(x, y, epochs=2, callbacks=[checkpoint], seed=0)
    fresh = gf.Trainer(gf.LinearModel(), gf.L2(), gf.Adam(0.1))
    saving.restore_trainer(fresh, tmp_path / "trainer-1")
    assert fresh.model.W.numpy() == trainer.model.W.numpy()
    assert int(fresh.update_rule.iterations) == 2
    assert np.array_equal(fresh.generator.state.numpy(), trainer.generator.state.numpy())


def test_fields_and_monitor_the_logs_lack_are_rejected_before_training(tmp_path):
    x, y = data()
    model = gf.LinearModel(weight_init=0.5, bias_init=0.0)
    trainer = gf.Trainer(model, gf.L2())
    with pytest.raises(ValueError, match=r"`path` names \['val_loss'\].*Available"):
        trainer.fit(x, y, callbacks=[ModelCheckpoint(tmp_path / "c-{val_loss:.2f}")])
    with pytest.raises(ValueError, match=r"`monitor`.*Received: monitor='accuracy'"):
        trainer.fit(x, y, callbacks=[ModelCheckpoint(tmp_path / "c", "accuracy", True)])
    assert model.W.numpy() == 0.5
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path": None}, TypeError, r"`path` must be a str.*Received: path=None"),
        ({"path": ""}, ValueError, r"`path` must be a non-empty path"),
        ({"path": "ckpt-{}"}, ValueError, r"`path` may only use named fields"),
        ({"path": "ckpt-{0}"}, ValueError, r"`path` may only use named fields"),
        ({"path": "ckpt-{epoch"}, ValueError, r"`path` is not a valid format string"),
        (
            {"path": "ckpt-{loss:02d}"},
            ValueError,
            r"`path` cannot be formatted.*'ckpt-\{loss:02d\}'",
        ),
        ({"monitor": 3}, TypeError, r"`monitor` must be a non-empty string.*monitor=3"),
        ({"mode": "up"}, ValueError, r"`mode` must be 'auto', 'min' or 'max'.*mode='up'"),
        ({"save_best_only": "yes"}, TypeError, r"`save_best_only` must be True or False"),
        (
            {"save_weights_only": 1},
            TypeError,
            r"`save_weights_only`.*Received: save_weights_only=1",
        ),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ModelCheckpoint(**{"path": "ckpt", **kwargs})


def test_state_round_trip_and_mode_auto():
    checkpoint = ModelCheckpoint("ckpt-{epoch}", save_best_only=True)
    assert checkpoint.mode == "min" and ModelCheckpoint("c", "val_accuracy").mode == "max"
    state = {"best": 0.25, "best_epoch": 3, "best_path": "ckpt-3"}
    checkpoint.set_state(state)
    assert checkpoint.get_state() == state
    assert checkpoint.get_config()["path"] == "ckpt-{epoch}"
    with pytest.raises(ValueError, match="exactly the keys"):
        checkpoint.set_state({"best": 1.0})
    with pytest.raises(ValueError, match=r"best_epoch.*-1"):
        checkpoint.set_state({**state, "best_epoch": -1})
    with pytest.raises(TypeError, match="`state` must be a dict"):
        checkpoint.set_state([1])
    assert "ModelCheckpoint" in gf.callbacks.__all__
