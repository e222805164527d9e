"""The TF2 tutorial "Custom training: basics", through gradfit.

Fits f(x) = x * W + b, from W=5 and b=0, to 1000 noisy examples of
y = 3x + 2 with the L2 loss and ten epochs of full-batch gradient descent
(learning rate 0.1), prints the tutorial's line per epoch and saves its two
figures. Run it with::

    python examples/linear_regression.py            # also writes two PNG files
    python examples/linear_regression.py --no-plot  # just the ten lines
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

import gradfit as gf

TRUE_W = 3.0
TRUE_b = 2.0
NUM_EXAMPLES = 1000
SEED = 42


def make_data(seed: int = SEED) -> tuple[tf.Tensor, tf.Tensor]:
    """The tutorial's synthetic data, seeded: y = 3x + 2 + unit normal noise."""
    tf.random.set_seed(seed)
    inputs = tf.random.normal(shape=[NUM_EXAMPLES])
    noise = tf.random.normal(shape=[NUM_EXAMPLES])
    outputs = inputs * TRUE_W + TRUE_b + noise
    return inputs, outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-plot", action="store_true", help="do not save the two figures")
    parser.add_argument("--out-dir", type=Path, default=Path("."), help="where the PNGs go")
    args = parser.parse_args(argv)

    inputs, outputs = make_data()
    model = gf.LinearModel(weight_init=5.0, bias_init=0.0)
    predictions_before = model(inputs).numpy()

    record = gf.RecordVariables()
    trainer = gf.Trainer(model, gf.L2(), gf.SGD(0.1))
    history = trainer.fit(inputs, outputs, epochs=10, callbacks=[record])

    # W and b as they were when each epoch's loss was measured: the tutorial's Ws and bs.
    Ws, bs = record.values["W"][:-1], record.values["b"][:-1]
    for epoch, loss in zip(history.epoch, history.history["loss"], strict=True):
        # The tutorial's own format string.
        print("Epoch %2d: W=%1.2f b=%1.2f, loss=%2.5f" % (epoch, Ws[epoch], bs[epoch], loss))  # noqa: UP031

    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from gradfit import plotting

        args.out_dir.mkdir(parents=True, exist_ok=True)
        ax = plotting.plot_fit(
            inputs,
            outputs,
            {"before training": predictions_before, "after training": trainer.predict(inputs)},
        )
        ax.set_title("Data and model predictions")
        fit_path = args.out_dir / "linear_regression_fit.png"
        ax.figure.savefig(fit_path, dpi=100)
        plt.close(ax.figure)

        ax = plotting.plot_variables(record, true_values={"W": TRUE_W, "b": TRUE_b})
        ax.set_title("W and b per epoch")
        trajectory_path = args.out_dir / "linear_regression_variables.png"
        ax.figure.savefig(trajectory_path, dpi=100)
        plt.close(ax.figure)
        print(f"saved {fit_path} and {trajectory_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
