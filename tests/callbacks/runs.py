"""Shared pieces of the backup tests: a crash at an epoch's end, small data, a built trainer."""

from __future__ import annotations

import numpy as np

import gradfit as gf


class CrashError(Exception):
    """What :class:`CrashAt` raises (a crash of the process, as a test can have one)."""


class CrashAt(gf.Callback):
    """Raises :class:`CrashError` at the end of ``epoch``, before that epoch's backup is saved."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise CrashError(f"crashed at the end of epoch {epoch}")


def data():
    """64 examples of 3 features and a linear target: 4 batches of 16."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    return x, (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]


def trainer(seed=1, width=4):
    """A trainer whose model is built (as the probe of a fit's data builds it)."""
    t = gf.Trainer(gf.MLP((width,), seed=seed), gf.L2(), gf.Adam(0.01))
    t.model.maybe_build((None, 3))
    return t
