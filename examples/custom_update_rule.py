"""A user's own update rule with state, composed and scheduled like a built-in one.

Signum (Bernstein et al., 2018) is sign-SGD with momentum::

    m     <- beta * m + (1 - beta) * g
    param <- param - lr * sign(m)

The maths is a pure function; the class creates one slot per variable in
``create_state`` and calls the function in ``apply``. gradfit checks the
arguments, skips ``None`` gradients, builds the state and counts
``iterations`` around any rule's ``apply``, so the rule itself is the maths.
Its slots are saved by ``tf.train.Checkpoint``; it takes a schedule as its
learning rate and composes with gradient transforms, like a built-in rule.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

import gradfit as gf


def signum_update(g, m, lr, beta):
    """Returns ``(new_m, delta)`` with ``param <- param - delta``."""
    m = beta * m + (1 - beta) * g
    return m, lr * tf.sign(m)


class Signum(gf.UpdateRule):
    """Sign-SGD with momentum: m <- beta * m + (1 - beta) * g ; param <- param - lr * sign(m)."""

    def __init__(self, learning_rate=0.01, beta=0.9):
        super().__init__(learning_rate)
        self.beta = beta

    def create_state(self, variables):
        """One momentum slot per variable (float32 for half-precision variables)."""
        for var in variables:
            self.add_slot(var, "m")

    def apply(self, gradients, variables):
        """Steps every variable against the sign of its momentum."""
        lr = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            m = self.get_slot(var, "m")
            new_m, delta = signum_update(tf.cast(g, m.dtype), m, tf.cast(lr, m.dtype), self.beta)
            m.assign(new_m)
            var.assign_sub(tf.cast(delta, var.dtype))


def main() -> int:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3

    # A cosine-decayed rate, and gradients clipped before Signum sees them.
    schedule = gf.schedules.CosineDecay(0.05, decay_steps=160, warmup_steps=8)
    rule = gf.chain(gf.clip_by_global_norm(10.0), Signum(schedule))
    trainer = gf.Trainer(gf.LinearModel(weight_init=0.0), gf.L2(), rule)
    history = trainer.fit(x, y, epochs=20, batch_size=32, seed=0)
    print(f"loss: {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}")
    print(
        "W:",
        np.round(trainer.model.W.numpy().ravel(), 2),
        "updates:",
        int(rule.iterations.numpy()),
        f"final lr: {history.history['lr'][-1]:.5f}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
