"""ProgressBar: stderr only, silent unless stderr is a terminal, a bar or a line per epoch."""

from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest

import gradfit as gf
from gradfit.callbacks import CallbackList, LambdaCallback, ProgressBar
from gradfit.callbacks.progress_bar import format_value


class Terminal(io.StringIO):
    def isatty(self):
        return True


def data():
    x = np.linspace(-1, 1, 12).astype(np.float32)
    return x, 3 * x + 2


def fit(callbacks, epochs=2, **kwargs):
    x, y = data()
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.1))
    return trainer.fit(x, y, epochs=epochs, callbacks=callbacks, **kwargs)


def test_verbose_2_writes_one_line_per_epoch_to_stderr_only(capsys):
    x, y = data()
    history = fit([ProgressBar(verbose=2)], validation_data=(x, y))
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    h = history.history
    assert len(lines) == 2
    for epoch, line in enumerate(lines):
        match = re.fullmatch(rf"Epoch {epoch + 1}/2 - \d+\.\d\ds - (.*)", line)
        assert match, line
        # e.g. "loss: 6.3462 - val_loss: 3.9871 - lr: 0.1000", in the logs' order.
        assert match.group(1) == (
            f"loss: {h['loss'][epoch]:.4f} - val_loss: {h['val_loss'][epoch]:.4f} - lr: 0.1000"
        )


def test_auto_is_silent_when_stderr_is_not_a_terminal(capsys):
    progress = ProgressBar()
    fit([progress], batch_size=4)
    assert capsys.readouterr() == ("", "")
    assert progress.mode == 0
    # No batch hook was installed, so the Trainer had no step logs to replay for it.
    assert not CallbackList([progress]).wants_batch_logs


def test_auto_shows_a_bar_per_epoch_advanced_per_step_on_a_terminal(monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = ProgressBar()
    positions = []
    # Runs after the bar's own hook: the bar has advanced for this step already.
    probe = LambdaCallback(on_train_batch_end=lambda batch, logs: positions.append(progress._bar.n))
    history = fit([progress, probe], batch_size=4)  # 12 examples: 3 steps per epoch
    assert progress.mode == 1
    assert positions == [1, 2, 3, 1, 2, 3]
    text = terminal.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert "3/3" in text
    assert f"loss: {history.history['loss'][-1]:.4f}" in text  # the epoch's logs, at the end
    assert capsys.readouterr().out == ""
    assert "on_train_batch_end" not in vars(progress)  # removed at the end of training


def test_a_resumed_partial_epoch_starts_its_bar_at_the_steps_done(monkeypatch, tmp_path):
    class CrashAt5(gf.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.seen = getattr(self, "seen", 0) + 1
            if self.seen == 5:
                raise RuntimeError("crash")

    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError):  # saved after run step 4: epoch 1, one step done
        fit([gf.callbacks.BackupAndRestore(backup, save_every=4), CrashAt5()], batch_size=4)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = ProgressBar()
    positions = []
    probe = LambdaCallback(on_train_batch_end=lambda batch, logs: positions.append(progress._bar.n))
    fit([gf.callbacks.BackupAndRestore(backup, save_every=4), progress, probe], batch_size=4)
    assert positions == [2, 3]
    assert "3/3" in terminal.getvalue()


def test_verbose_0_is_silent_even_on_a_terminal(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    fit([ProgressBar(verbose=0)])
    assert terminal.getvalue() == ""


def test_format_value():
    assert format_value(0.123456) == "0.1235"
    assert format_value(0.0) == "0.0000"
    assert format_value(2.5e-5) == "2.5000e-05"
    assert format_value(123456.0) == "1.2346e+05"
    assert format_value(float("nan")) == "nan"


@pytest.mark.parametrize(
    ("verbose", "error"),
    [(3, ValueError), (-1, ValueError), ("yes", ValueError), (True, TypeError), (1.0, TypeError)],
)
def test_bad_verbose(verbose, error):
    with pytest.raises(error, match=rf"`verbose`.*Received: verbose={verbose!r}"):
        ProgressBar(verbose)
