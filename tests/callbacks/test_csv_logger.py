"""CSVLogger: one row per epoch, header from the first epoch, flushed each epoch, append mode."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import gradfit as gf
from gradfit.callbacks import CSVLogger, LambdaCallback


def data():
    x = np.linspace(-1, 1, 16).astype(np.float32)
    return x, 3 * x + 2


def fit(callbacks, epochs=3, **kwargs):
    x, y = data()
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.1), metrics={"mae": gf.L1()})
    return trainer.fit(x, y, epochs=epochs, callbacks=callbacks, **kwargs)


def read(path, separator=","):
    with open(path, newline="") as file:
        return list(csv.reader(file, delimiter=separator))


def test_rows_hold_the_history_exactly_and_are_written_every_epoch(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("stale,content\n1,2\n")  # append=False overwrites
    rows_seen = []
    # Runs after the logger in the same epoch: the epoch's row is already on disk.
    peek = LambdaCallback(on_epoch_end=lambda epoch, logs: rows_seen.append(len(read(path))))
    x, y = data()
    history = fit([CSVLogger(path), peek], validation_data=(x, y))

    rows = read(path)
    assert rows[0] == ["epoch", "loss", "mae", "val_loss", "val_mae", "lr"]
    assert rows_seen == [2, 3, 4]  # header + one row per finished epoch
    assert [int(row[0]) for row in rows[1:]] == [0, 1, 2]
    for i, key in enumerate(rows[0][1:], start=1):
        # Full precision: the floats read back are the History's, bit for bit.
        assert [float(row[i]) for row in rows[1:]] == history.history[key]


def test_append_continues_without_repeating_the_header(tmp_path):
    path = tmp_path / "log.csv"
    first = fit([CSVLogger(str(path))], epochs=2)
    second = fit([CSVLogger(path, append=True)], epochs=2)
    rows = read(path)
    assert rows[0] == ["epoch", "loss", "mae", "lr"]
    assert [row[0] for row in rows] == ["epoch", "0", "1", "0", "1"]
    losses = [float(row[1]) for row in rows[1:]]
    assert losses == first.history["loss"] + second.history["loss"]


def test_append_to_a_new_file_writes_the_header(tmp_path):
    path = tmp_path / "new.csv"
    fit([CSVLogger(path, append=True)], epochs=1)
    assert read(path)[0] == ["epoch", "loss", "mae", "lr"]


def test_append_keeps_the_existing_columns_and_warns_about_extra_logs(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch;lr;loss;old\n")
    with pytest.warns(UserWarning, match=r"\['mae'\]"):
        history = fit([CSVLogger(path, append=True, separator=";")], epochs=2)
    rows = read(path, ";")
    assert rows[0] == ["epoch", "lr", "loss", "old"]  # the file's order, not the logs'
    assert len(rows) == 3
    assert [float(row[2]) for row in rows[1:]] == history.history["loss"]
    assert [row[3] for row in rows[1:]] == ["", ""]  # a column the logs lack stays empty


def test_separator(tmp_path):
    path = tmp_path / "log.tsv"
    fit([CSVLogger(path, separator="\t")], epochs=1)
    assert path.read_text().splitlines()[0] == "epoch\tloss\tmae\tlr"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path": 3}, TypeError, r"`path`.*Received: path=3"),
        ({"path": ""}, ValueError, r"`path`.*Received: path=''"),
        ({"path": "a.csv", "append": "yes"}, TypeError, r"`append`.*'yes'"),
        ({"path": "a.csv", "separator": ",,"}, ValueError, r"`separator`.*',,'"),
        ({"path": "a.csv", "separator": "\n"}, ValueError, r"`separator`"),
        ({"path": "a.csv", "separator": 9}, TypeError, r"`separator`.*=9"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CSVLogger(**kwargs)
