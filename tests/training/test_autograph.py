"""A user's own models and losses are converted by autograph, though gradfit's helpers are not.

gradfit marks its plain-Python helpers on the traced path ``do_not_convert``
(converting them cost a fresh process most of its first fit); code a user
brings must still get autograph's Python control flow over tensors.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf


def halving_loss(y_true, y_pred):
    """Mean squared error, halved when over 5: a Python ``if`` on a tensor."""
    d = tf.reduce_mean(tf.square(y_pred - tf.cast(y_true, y_pred.dtype)))
    if d > 5.0:
        d = d / 2.0
    return d


class Looping(gf.Model):
    """``x * w``, with a Python ``for`` over ``tf.range`` that adds ``b`` twice."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(1.0)
        self.b = tf.Variable(0.25)

    def __call__(self, x):
        out = x * self.w
        for _ in tf.range(2):
            out = out + self.b
        return out


@pytest.mark.parametrize("jit", [False, True], ids=["no-xla", "xla"])
def test_user_models_and_losses_keep_autograph_control_flow(jit):
    x = np.ones((8, 1), np.float32)
    y = np.full((8, 1), 4.0, np.float32)
    history = gf.Trainer(Looping(), halving_loss, gf.SGD(0.1), jit_compile=jit).fit(x, y, epochs=2)
    # Epoch 0: predictions 1.5, error 2.5, d = 6.25 > 5 is halved: 3.125 (by hand).
    assert history.history["loss"][0] == pytest.approx(3.125)
    # Its gradient: d/dw = d/db/2 = -2.5 (halved); w = 1.25, b = 0.25 + 0.1 * 2 * 2.5 = 0.75,
    # so the prediction is 1.25 + 1.5 = 2.75, error 1.25, d = 1.5625 (not halved).
    assert history.history["loss"][1] == pytest.approx(1.5625)
