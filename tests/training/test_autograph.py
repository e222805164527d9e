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


# Each part below branches on a tensor with plain Python, which only works converted. The
# problem: one weight w (from 1.0), predictions x * w on x = 1, targets 4, the L2 loss:
# loss (w - 4)^2 = 9 and gradient 2 (w - 4) = -6 at the start.


class Scale(gf.Model):
    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(1.0)

    def __call__(self, x):
        return x * self.w


class DoublingSGD(gf.UpdateRule):
    """SGD that doubles the step while the gradient is negative."""

    def apply(self, gradients, variables):
        lr = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            if tf.reduce_sum(g) < 0:
                g = g * 2.0
            var.assign_sub(lr * g)


def two_rates(step):
    """0.1 for the first update, 0.05 after."""
    if step < 1:
        return tf.constant(0.1)
    return tf.constant(0.05)


def double_small(gradients):
    """A gradient transform doubling gradients under 10 in size."""
    out = []
    for g in gradients:
        if tf.abs(tf.reduce_sum(g)) < 10.0:
            g = g * 2.0
        out.append(g)
    return out


def capped_error(y_true, y_pred):
    """The mean absolute error, capped at 2."""
    error = tf.reduce_mean(tf.abs(y_true - y_pred))
    if error > 2.0:
        error = tf.constant(2.0)
    return error


def _fit(rule, jit, epochs=2, metrics=()):
    x, y = np.ones((4, 1), np.float32), np.full((4, 1), 4.0, np.float32)
    trainer = gf.Trainer(Scale(), gf.L2(), rule, metrics=metrics, jit_compile=jit)
    return trainer.fit(x, y, epochs=epochs, batch_size=4).history


JITS = pytest.mark.parametrize("jit", [False, True], ids=["no-xla", "xla"])


@JITS
def test_a_users_rule_branches_on_a_tensor(jit):
    # The gradient -6 is doubled: w = 1 + 0.1 * 12 = 2.2, loss (2.2 - 4)^2 = 3.24.
    assert _fit(DoublingSGD(0.1), jit)["loss"] == pytest.approx([9.0, 3.24])


@JITS
def test_a_users_schedule_branches_on_a_tensor(jit):
    # w = 1 + 0.1 * 6 = 1.6 (loss 5.76), then w = 1.6 + 0.05 * 4.8 = 1.84 (loss 4.6656).
    assert _fit(gf.SGD(two_rates), jit, epochs=3)["loss"] == pytest.approx([9.0, 5.76, 4.6656])


@JITS
def test_a_users_gradient_transform_branches_on_a_tensor(jit):
    rule = gf.chain(double_small, gf.SGD(0.1))  # -6 doubled: as DoublingSGD above
    assert _fit(rule, jit)["loss"] == pytest.approx([9.0, 3.24])


@JITS
def test_a_users_metric_branches_on_a_tensor(jit):
    # The error 3 is capped at 2; after one step (w = 1.6) it is 2.4, capped again.
    history = _fit(gf.SGD(0.1), jit, metrics={"capped": capped_error})
    assert history["capped"] == pytest.approx([2.0, 2.0])


def tanh_if_large(h):
    """tanh where the batch's largest value is over 1, else the identity."""
    if tf.reduce_max(h) > 1.0:
        return tf.tanh(h)
    return h


@JITS
def test_a_users_activation_branches_on_a_tensor(jit):
    model = gf.MLP((8,), activation=tanh_if_large, seed=0)
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(6, 2)
    compiled = gf.Trainer(model, gf.L2(), jit_compile=jit).predict(x)
    np.testing.assert_allclose(compiled, model(tf.constant(x)).numpy(), rtol=1e-6)  # eager


class CountingTask(gf.Task):
    """A task whose step runs a Python ``while`` over a tensor: it counts to 3."""

    def __init__(self) -> None:
        super().__init__()
        self.model, self.rule = Scale(), gf.SGD(0.1)

    def train_step(self, batch):
        x, y = batch
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self.model(x) - y))
        self.rule.apply(tape.gradient(loss, [self.model.w]), [self.model.w])
        count = tf.constant(0.0)
        while count < 3.0:
            count += 1.0
        return {"loss": loss, "count": count}


@JITS
def test_a_users_task_branches_on_a_tensor(jit):
    x, y = np.ones((4, 1), np.float32), np.full((4, 1), 4.0, np.float32)
    history = gf.Trainer(CountingTask(), jit_compile=jit).fit(x, y, epochs=2, batch_size=4)
    assert history.history["count"] == [3.0, 3.0]
    assert history.history["loss"] == pytest.approx([9.0, 5.76])
