"""LambdaCallback: Keras keyword names, called with Keras's arguments."""

from __future__ import annotations

import numpy as np
import pytest

import gradfit as gf


def test_each_keyword_is_called_with_its_arguments():
    x = np.arange(6, dtype=np.float32)
    y = x + 1
    seen = []
    cb = gf.LambdaCallback(
        on_train_begin=lambda logs: seen.append(("train_begin",)),
        on_epoch_begin=lambda epoch, logs: seen.append(("epoch_begin", epoch)),
        on_train_batch_begin=lambda batch, logs: seen.append(("batch_begin", batch)),
        on_train_batch_end=lambda batch, logs: seen.append(("batch_end", batch, sorted(logs))),
        on_epoch_end=lambda epoch, logs: seen.append(("epoch_end", epoch, sorted(logs))),
        on_train_end=lambda logs: seen.append(("train_end", sorted(logs))),
    )
    gf.Trainer(gf.LinearModel(), gf.L2()).fit(
        x, y, epochs=1, batch_size=3, shuffle=False, callbacks=[cb]
    )
    assert seen == [
        ("train_begin",),
        ("epoch_begin", 0),
        ("batch_begin", 0),
        ("batch_end", 0, ["loss"]),
        ("batch_begin", 1),
        ("batch_end", 1, ["loss"]),
        ("epoch_end", 0, ["loss", "lr"]),
        ("train_end", ["loss", "lr"]),
    ]
    assert cb.hooks == (
        "on_train_begin",
        "on_train_end",
        "on_epoch_begin",
        "on_epoch_end",
        "on_train_batch_begin",
        "on_train_batch_end",
    )


def test_non_callable_is_rejected_naming_the_keyword():
    with pytest.raises(TypeError, match=r"`on_epoch_end`.*42"):
        gf.LambdaCallback(on_epoch_end=42)


def test_on_epoch_resume_is_a_keyword_too():
    cb = gf.LambdaCallback(on_epoch_resume=lambda epoch, step, logs: None)
    assert cb.hooks == ("on_epoch_resume",)
    with pytest.raises(TypeError, match=r"`on_epoch_resume`.*7"):
        gf.LambdaCallback(on_epoch_resume=7)
