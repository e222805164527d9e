"""MonitorCallback: mode and min_delta, the monitored key, the val_ fallback, bad arguments."""

from __future__ import annotations

import math
import warnings

import pytest

from gradfit.callbacks import (
    EarlyStopping,
    ModelCheckpoint,
    MonitorCallback,
    ReduceLROnPlateau,
)


class Watch(MonitorCallback):
    """Records the epochs that improve on the best so far."""

    def __init__(self, monitor="val_loss", mode="auto", min_delta=0.0):
        super().__init__(monitor, mode, min_delta)
        self.improved_at = []

    def on_epoch_end(self, epoch, logs=None):
        value = self.monitored_value(logs)
        if value is not None and self.is_improvement(value):
            self.best = value
            self.improved_at.append(epoch)


class Refuses(Watch):
    """Refuses every run in `_check_run`, to show it runs before the monitor is resolved."""

    def _check_run(self, available):
        raise RuntimeError(f"refused with {available}")


class Ignores(Watch):
    """Does not read `monitor`, so it is never resolved."""

    def _watches_monitor(self):
        return False


def begin(callback, metrics):
    callback.set_params({"epochs": 3, "steps": 1, "metrics": metrics})
    callback.on_train_begin()
    return callback


@pytest.mark.parametrize(
    ("monitor", "mode", "resolved", "best"),
    [
        ("val_loss", "auto", "min", math.inf),
        ("val_accuracy", "auto", "max", -math.inf),
        ("binary_acc", "auto", "max", -math.inf),
        ("loss", "max", "max", -math.inf),
        ("val_accuracy", "min", "min", math.inf),
    ],
)
def test_mode_resolution_and_initial_best(monitor, mode, resolved, best):
    watch = Watch(monitor, mode)
    assert (watch.monitor, watch.mode, watch.best) == (monitor, resolved, best)


@pytest.mark.parametrize(
    ("mode", "best", "values"),
    [
        # best 1.0, min_delta 0.25: an improvement must be below 1.0 - 0.25 = 0.75.
        ("min", 1.0, {0.75: False, 0.7499: True, 0.9: False, 1.5: False}),
        # ... or, for "max", above 1.0 + 0.25 = 1.25.
        ("max", 1.0, {1.25: False, 1.2501: True, 1.1: False, 0.5: False}),
    ],
)
def test_min_delta_sets_the_improvement_boundary(mode, best, values):
    watch = Watch("loss", mode, min_delta=0.25)
    watch.best = best
    assert {value: watch.is_improvement(value) for value in values} == values


def test_without_min_delta_a_tie_does_not_improve_and_nan_never_does():
    watch = begin(Watch("loss"), ["loss"])
    for epoch, loss in enumerate([2.0, 2.0, float("nan"), 1.5, 1.5]):
        watch.on_epoch_end(epoch, {"loss": loss})
    assert watch.improved_at == [0, 3]
    assert watch.best == 1.5
    assert not watch.is_improvement(float("nan"))


def test_negative_zero_min_delta_is_stored_as_zero():
    assert math.copysign(1.0, Watch(min_delta=-0.0).min_delta) == 1.0


def test_on_train_begin_resets_the_best_value():
    watch = begin(Watch("val_accuracy"), ["loss", "val_accuracy"])
    watch.on_epoch_end(0, {"val_accuracy": 0.5})
    assert watch.best == 0.5
    begin(watch, ["loss", "val_accuracy"])
    assert watch.best == -math.inf


def test_val_monitor_falls_back_to_the_training_quantity_with_a_warning():
    watch = Watch()  # monitors val_loss
    watch.set_params({"epochs": 2, "steps": 1, "metrics": ["loss", "lr"]})
    with pytest.warns(UserWarning) as record:
        watch.on_train_begin()
    assert [str(w.message) for w in record] == [
        "Watch monitors 'val_loss', but there is no validation data; monitoring 'loss' instead."
    ]
    # stacklevel: the warning points at whoever called on_train_begin, here this test.
    assert record[0].filename == __file__
    assert watch.monitored_value({"loss": 2.0, "lr": 0.1}) == 2.0
    assert watch.monitor == "val_loss"


def test_val_monitor_is_read_as_is_when_there_is_validation_data():
    watch = Watch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        begin(watch, ["loss", "val_loss"])
    assert watch.monitored_value({"loss": 2.0, "val_loss": 3.0}) == 3.0
    assert watch.monitored_value({"loss": 2.0}) is None
    assert watch.monitored_value(None) is None


@pytest.mark.parametrize("monitor", ["accuracy", "val_accuracy"])
def test_a_monitor_the_logs_will_not_hold_is_rejected_at_train_begin(monitor):
    watch = Watch(monitor)
    with pytest.raises(
        ValueError,
        match=rf"`monitor` names a quantity.*Available: \['loss', 'lr'\].*"
        rf"Received: monitor='{monitor}'",
    ):
        begin(watch, ["loss", "lr"])


def test_unknown_metrics_leave_the_monitor_unresolved():
    watch = begin(Watch("anything"), None)
    assert watch.monitored_value({"anything": 1.0}) == 1.0


def test_check_run_sees_the_metrics_before_the_monitor_is_resolved():
    with pytest.raises(RuntimeError, match=r"refused with \['loss'\]"):
        begin(Refuses("accuracy"), ["loss"])  # would be a ValueError if resolved first


def test_a_callback_that_does_not_watch_the_monitor_skips_resolving_it():
    watch = begin(Ignores("val_loss"), ["loss"])  # no fallback warning, no error
    assert watch.monitored_value({"loss": 1.0}) is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"monitor": 3}, TypeError, r"`monitor` must be a non-empty string.*Received: monitor=3"),
        ({"monitor": ""}, TypeError, r"`monitor` must be a non-empty string.*monitor=''"),
        ({"mode": "up"}, ValueError, r"`mode` must be 'auto', 'min' or 'max'.*mode='up'"),
        ({"mode": None}, ValueError, r"`mode`.*Received: mode=None"),
        ({"min_delta": -0.5}, ValueError, r"`min_delta`.*non-negative.*min_delta=-0.5"),
        ({"min_delta": float("inf")}, ValueError, r"`min_delta`.*min_delta=inf"),
        ({"min_delta": "0.1"}, TypeError, r"`min_delta`.*Received: min_delta='0.1'"),
    ],
)
def test_bad_arguments_echo_the_value(kwargs, error, match):
    with pytest.raises(error, match=match):
        Watch(**kwargs)


def test_check_state_names_the_subclass_and_the_keys():
    watch = Watch()
    state = {"best": 1.0}
    assert watch._check_state(state, ("best",)) is state
    with pytest.raises(TypeError, match=r"dict from Watch\.get_state\(\).*Received: state=\[1\]"):
        watch._check_state([1], ("best",))
    with pytest.raises(ValueError, match=r"exactly the keys \['best', 'wait'\]"):
        watch._check_state(state, ("best", "wait"))


def test_the_three_monitoring_callbacks_share_the_base():
    for cls in (EarlyStopping, ReduceLROnPlateau, ModelCheckpoint):
        assert issubclass(cls, MonitorCallback)
    checkpoint = ModelCheckpoint("ckpt", "val_accuracy")
    assert (checkpoint.mode, checkpoint.best, checkpoint.min_delta) == ("max", -math.inf, 0.0)
    stop = EarlyStopping("loss", min_delta=0.5)
    stop.best = 1.0
    assert (stop.is_improvement(0.5), stop.is_improvement(0.4)) == (False, True)
