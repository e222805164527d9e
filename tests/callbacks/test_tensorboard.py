"""TensorBoard: the event files read back hold the History's values, per run and per epoch."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.callbacks import Callback, TensorBoard


class AddGradNorm(Callback):
    """Puts a scripted "grad_norm" in the epoch logs, as the Trainer will (runs first)."""

    def on_epoch_end(self, epoch, logs=None):
        logs["grad_norm"] = 10.0 / (epoch + 1)


def data():
    x = np.linspace(-1, 1, 16).astype(np.float32)
    return x, 3 * x + 2


def read_events(run_dir):
    """{tag: [(step, value), ...]} over the run's event files, and the files."""
    # events.out.tfevents.<time>.<host>.<pid>.<writer number>.v2: sort by time, then writer.
    files = sorted(
        run_dir.glob("events.out.tfevents.*"),
        key=lambda p: (int(p.name.split(".")[3]), int(p.name.split(".")[-2])),
    )
    scalars = {}
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                number = tf.make_ndarray(value.tensor)
                assert number.shape == () and number.dtype == np.float32
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars, files


def test_events_hold_the_history(tmp_path):
    x, y = data()
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.1), metrics={"mae": gf.L1()})
    history = trainer.fit(
        x,
        y,
        epochs=3,
        validation_data=(x[::2], y[::2]),
        callbacks=[AddGradNorm(), TensorBoard(tmp_path)],
    )
    h = history.history
    train, train_files = read_events(tmp_path / "train")
    val, val_files = read_events(tmp_path / "validation")
    assert len(train_files) == len(val_files) == 1

    def expected(values):  # one point per epoch, stored as float32 (as tf.summary.scalar does)
        return [(epoch, np.float32(value)) for epoch, value in enumerate(values)]

    assert train == {
        "epoch_loss": expected(h["loss"]),
        "epoch_mae": expected(h["mae"]),
        "epoch_learning_rate": expected(h["lr"]),
        "epoch_grad_norm": expected([10.0, 5.0, 10.0 / 3]),
    }
    assert val == {"epoch_loss": expected(h["val_loss"]), "epoch_mae": expected(h["val_mae"])}
    assert h["loss"] != h["val_loss"]  # the two runs really hold different curves


def test_each_fit_writes_a_new_run_file_and_no_validation_run_without_validation(tmp_path):
    x, y = data()
    callback = TensorBoard(str(tmp_path))
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.1))
    first = trainer.fit(x, y, epochs=2, callbacks=[callback])
    second = trainer.fit(x, y, epochs=1, callbacks=[callback])
    train, files = read_events(tmp_path / "train")
    assert len(files) == 2
    assert not (tmp_path / "validation").exists()
    losses = [value for _, value in train["epoch_loss"]]
    assert losses == [np.float32(v) for v in first.history["loss"] + second.history["loss"]]


@pytest.mark.parametrize(
    ("log_dir", "error"), [(None, TypeError), (3, TypeError), ("", ValueError)]
)
def test_bad_log_dir(log_dir, error):
    with pytest.raises(error, match=rf"`log_dir`.*Received: log_dir={log_dir!r}"):
        TensorBoard(log_dir)
