"""Draws the documentation's figures from real runs of gradfit.

Each figure is a function of the output directory; the PNGs are committed
next to this script (``docs/figures/``), so building the site needs no
training run. Run it from the repository root::

    python docs/figures/make_figures.py              # every figure, into docs/figures/
    python docs/figures/make_figures.py convergence  # just one (tutorial, convergence, gan)
    python docs/figures/make_figures.py --quick --out-dir /tmp/figs  # small runs, for the tests

``--quick`` draws every figure from far fewer steps (and the convergence
figure from two rules): the tests check that the script still runs; the
committed figures come from full runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import gradfit as gf

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"


def _example(name: str) -> ModuleType:
    """Imports ``examples/<name>.py`` as a module."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_gradfit_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tutorial(out_dir: Path, *, quick: bool = False) -> list[Path]:
    """The tutorial's two figures, drawn by ``examples/linear_regression.py`` itself.

    Args:
        out_dir: Where the PNGs go.
        quick: Unused: the tutorial is already ten full-batch steps.

    Returns:
        The paths written.
    """
    del quick
    example = _example("linear_regression")
    # The example prints the tutorial's ten lines.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        example.main(["--out-dir", str(out_dir)])
    return [out_dir / "linear_regression_fit.png", out_dir / "linear_regression_variables.png"]


# Each rule at a learning rate typical for it (none tuned to this problem).
RULES: dict[str, Callable[[], gf.UpdateRule]] = {
    "SGD(0.05)": lambda: gf.SGD(0.05),
    "SGD(0.05, momentum=0.9)": lambda: gf.SGD(0.05, momentum=0.9),
    "Adam(0.01)": lambda: gf.Adam(0.01),
    "AdamW(0.01)": lambda: gf.AdamW(0.01),
    "RMSProp(0.01)": lambda: gf.RMSProp(0.01),
    "Adagrad(0.1)": lambda: gf.Adagrad(0.1),
    "Lion(0.001)": lambda: gf.Lion(0.001),
    # Keras's own Adam, wrapped: its curve lies on gradfit's Adam(0.01).
    "KerasOptimizer(keras Adam(0.01))": lambda: gf.KerasOptimizer(keras.optimizers.Adam(0.01)),
}


def convergence_data(n: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """A smooth regression problem every rule is run on: 4 inputs, one noisy target.

    Args:
        n: Number of examples.

    Returns:
        ``(x, y)``, float32, shapes ``(n, 4)`` and ``(n, 1)``.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = np.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3] - 0.5 * x[:, 3:4]
    return x, (y + 0.05 * rng.normal(size=y.shape)).astype("float32")


def convergence(out_dir: Path, *, quick: bool = False) -> list[Path]:
    """The training loss per epoch of every built-in rule, on the same MLP and data.

    Args:
        out_dir: Where the PNG goes.
        quick: Two epochs on 128 examples instead of 40 on 1024, and only two of
            the rules (SGD and Keras's Adam).

    Returns:
        The path written.
    """
    x, y = convergence_data(128 if quick else 1024)
    epochs = 2 if quick else 40
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rules = list(RULES.items())
    if quick:
        rules = [rules[0], rules[-1]]
    for label, make_rule in rules:
        # The same initial values for every rule: the same seed.
        trainer = gf.Trainer(gf.MLP((32, 32), activation="tanh", seed=0), gf.L2(), make_rule())
        history = trainer.fit(x, y, epochs=epochs, batch_size=32, seed=0)
        style = {"linestyle": ":", "color": "k"} if label.startswith("Keras") else {}
        ax.plot(np.arange(1, epochs + 1), history.history["loss"], label=label, **style)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean over the epoch)")
    ax.set_title("Every rule on the same problem: MLP 4-32-32-1, batch 32")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path = out_dir / "convergence.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def gan(out_dir: Path, *, quick: bool = False) -> list[Path]:
    """Real against generated points, from ``examples/gan.py``'s GAN on a ring.

    Args:
        out_dir: Where the PNG goes.
        quick: One epoch on 512 points instead of the example's defaults.

    Returns:
        The path written.
    """
    example = _example("gan")
    path = out_dir / "gan_samples.png"
    args = ["--out", str(path)] + (["--epochs", "1", "--examples", "512"] if quick else [])
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        example.main(args)  # (it prints its losses)
    return [path]


FIGURES: dict[str, Callable[..., list[Path]]] = {
    "tutorial": tutorial,
    "convergence": convergence,
    "gan": gan,
}
"""Each figure's name and the function that draws it."""


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Draws the figures named on the command line (all by default).

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when ``None``.

    Returns:
        The paths written.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", nargs="*", choices=[[], *FIGURES], default=[])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where the PNGs go")
    parser.add_argument("--quick", action="store_true", help="small runs (for the tests)")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in args.figures or FIGURES:
        written += FIGURES[name](args.out_dir, quick=args.quick)
    return written


if __name__ == "__main__":
    for written_path in main():
        print(written_path)
