"""EarlyStopping.get_state / set_state: what a backup saves, and an exact resume from it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gradfit as gf
from gradfit.callbacks import EarlyStopping


def start(callback, epochs):
    model = gf.LinearModel(weight_init=0.0, bias_init=0.0)
    callback.set_trainer(gf.Trainer(model, gf.L2()))
    callback.set_params({"epochs": epochs, "steps": 1, "metrics": ["loss", "lr"]})
    callback.on_train_begin()
    return model


def run(callback, losses, first_epoch=0):
    """Feeds scripted losses; returns the epoch it stopped after, or None."""
    trainer = callback.trainer
    for epoch, loss in enumerate(losses, start=first_epoch):
        callback.on_epoch_end(epoch, {"loss": loss})
        if trainer.stop_training:
            return epoch
    return None


LOSSES = [5.0, 4.0, 4.5, 4.2, 3.9, 4.1, 4.0, 4.3, 1.0]


def test_state_after_some_epochs_and_an_exact_resume():
    straight = EarlyStopping("loss", patience=3)
    start(straight, len(LOSSES))
    # best 3.9 at epoch 4, then 4.1, 4.0, 4.3: three epochs without improvement stop at 7.
    assert run(straight, LOSSES) == 7

    first = EarlyStopping("loss", patience=3)
    start(first, len(LOSSES))
    assert run(first, LOSSES[:6]) is None
    state = first.get_state()
    assert state == {
        "best": 3.9,
        "best_epoch": 4,
        "stopped_epoch": None,
        "wait": 1,
        "best_weights": None,
    }
    state = json.loads(json.dumps(state))  # plain values: any backup can store them

    second = EarlyStopping("loss", patience=3)
    start(second, len(LOSSES))  # on_train_begin resets; a backup restores after it
    second.set_state(state)
    assert run(second, LOSSES[6:], first_epoch=6) == 7
    assert second.get_state() == straight.get_state()


def test_best_weights_are_saved_and_restored_as_copies():
    stop = EarlyStopping("loss", patience=5, restore_best_weights=True)
    model = start(stop, 3)
    model(np.zeros(2, np.float32))  # builds W and b
    model.W.assign(np.full(model.W.shape, 2.0, np.float32))
    run(stop, [1.0])
    state = stop.get_state()
    best = {
        var.name: float(np.squeeze(value))
        for var, value in zip(model.variables, state["best_weights"], strict=True)
    }
    assert best == {model.W.name: 2.0, model.b.name: 0.0}  # the values at the best epoch
    state["best_weights"][0][...] = 7.0  # the state is a copy
    assert stop.get_state()["best_weights"][0].max() != 7.0

    resumed = EarlyStopping("loss", patience=5, restore_best_weights=True)
    model = start(resumed, 3)
    model(np.zeros(2, np.float32))
    resumed.set_state(stop.get_state())
    model.W.assign(np.full(model.W.shape, -1.0, np.float32))
    resumed.on_train_end()  # restores the best epoch's values from the restored state
    assert np.all(model.W.numpy() == 2.0)


def test_set_state_rejects_bad_states():
    stop = EarlyStopping()
    good = stop.get_state()
    with pytest.raises(TypeError, match="`state`"):
        stop.set_state("best=1")
    with pytest.raises(ValueError, match="`state` must have exactly the keys"):
        stop.set_state({k: good[k] for k in ("best", "wait")})
    with pytest.raises(ValueError, match=r"`state\['wait'\]`.*None"):
        stop.set_state({**good, "wait": None})
    with pytest.raises(ValueError, match=r"`state\['best_epoch'\]`.*-2"):
        stop.set_state({**good, "best_epoch": -2})
    with pytest.raises(TypeError, match=r"`state\['best'\]`"):
        stop.set_state({**good, "best": "low"})
