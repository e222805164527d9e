"""A user's own update rule: sign-SGD in a few lines, trained with the Trainer.

sign-SGD moves every parameter by a fixed step against the sign of its
gradient: ``param <- param - lr * sign(g)``. gradfit checks the arguments,
skips ``None`` gradients and counts ``iterations`` around any rule's
``apply``, so the rule itself is just the maths.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

import gradfit as gf


class SignSGD(gf.UpdateRule):
    """param <- param - lr * sign(g)."""

    def apply(self, gradients, variables):
        """Steps every variable against the sign of its gradient."""
        lr = self.current_learning_rate()
        for g, var in zip(gradients, variables, strict=True):
            var.assign_sub(tf.cast(lr, var.dtype) * tf.sign(g))


def main() -> int:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3

    trainer = gf.Trainer(gf.LinearModel(weight_init=0.0), gf.L2(), SignSGD(0.02))
    history = trainer.fit(x, y, epochs=20, batch_size=32, seed=0)
    print(f"loss: {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}")
    print(
        "W:",
        np.round(trainer.model.W.numpy().ravel(), 2),
        "updates:",
        int(trainer.update_rule.iterations.numpy()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
