"""Time per compiled update step: each hand-written gradfit rule against its Keras twin.

Both apply the same fixed gradients to their own copy of about one million
float32 parameters (an MLP's kernels and biases, 784-512-1024-64), inside
one ``tf.function`` that runs ``--steps`` updates in a ``tf.range`` loop, so
Python is paid once per call and the figure is the update itself. The
forward and backward passes are left out on purpose: they are the same for
both and would only dilute the ratio.

Everything runs in one process. Each repeat times every configuration once,
gradfit and Keras back to back (in alternating order), and the best of
``--repeats`` is kept: the minimum is the figure least disturbed by a noisy,
shared machine. The median of the per-repeat gradfit/Keras ratios is shown
too, as a check on the ratio of the minima.

Usage::

    python benchmarks/bench_update_rules.py              # tf.function
    python benchmarks/bench_update_rules.py --jit        # XLA (jit_compile=True)
    python benchmarks/bench_update_rules.py --quick      # fewer steps and repeats
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import gradfit as gf

SHAPES = [(784, 512), (512,), (512, 1024), (1024,), (1024, 64), (64,)]
TARGET = 1.05

# name: (gradfit rule, Keras optimizer), with the same hyperparameters.
PAIRS: dict[str, tuple[Callable[[], gf.UpdateRule], Callable[[], keras.optimizers.Optimizer]]] = {
    "SGD(momentum=0.9, nesterov)": (
        lambda: gf.SGD(0.01, momentum=0.9, nesterov=True),
        lambda: keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
    ),
    "Adam": (lambda: gf.Adam(1e-3), lambda: keras.optimizers.Adam(1e-3)),
    "Adam(amsgrad)": (
        lambda: gf.Adam(1e-3, amsgrad=True),
        lambda: keras.optimizers.Adam(1e-3, amsgrad=True),
    ),
    "AdamW": (
        lambda: gf.AdamW(1e-3, weight_decay=0.004),
        lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.004),
    ),
    "RMSProp": (lambda: gf.RMSProp(1e-3), lambda: keras.optimizers.RMSprop(1e-3)),
    "RMSProp(centered, momentum)": (
        lambda: gf.RMSProp(1e-3, momentum=0.9, centered=True),
        lambda: keras.optimizers.RMSprop(1e-3, momentum=0.9, centered=True),
    ),
    "Adagrad": (lambda: gf.Adagrad(1e-2), lambda: keras.optimizers.Adagrad(1e-2)),
    "Lion": (
        lambda: gf.Lion(1e-4, weight_decay=0.01),
        lambda: keras.optimizers.Lion(1e-4, weight_decay=0.01),
    ),
}


def make_loop(
    apply: Callable[[list[tf.Tensor]], None], steps: int, jit: bool
) -> Callable[[list[tf.Tensor]], None]:
    """A compiled function that applies ``grads`` ``steps`` times."""

    def loop(grads: list[tf.Tensor]) -> None:
        for _ in tf.range(steps):
            apply(grads)

    return tf.function(loop, jit_compile=jit)


def prepare(name: str, steps: int, jit: bool) -> dict[str, Callable[[], None]]:
    """Builds both rules on fresh parameters; returns a zero-argument timed call for each."""
    make_mine, make_theirs = PAIRS[name]
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(shape).astype(np.float32) * 0.05 for shape in SHAPES]
    grads = [tf.constant(rng.standard_normal(shape).astype(np.float32)) for shape in SHAPES]
    calls = {}
    for side, make in (("gradfit", make_mine), ("keras", make_theirs)):
        variables = [tf.Variable(x) for x in init]
        rule = make()
        rule.build(variables)
        loop = make_loop(
            lambda g, rule=rule, variables=variables: rule.apply(g, variables), steps, jit
        )
        loop(grads)  # trace, compile and warm up
        calls[side] = lambda loop=loop: loop(grads)
    return calls


def seconds(call: Callable[[], None]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="updates per timed call")
    parser.add_argument("--repeats", type=int, default=31, help="timed calls; the best is kept")
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    parser.add_argument("--quick", action="store_true", help="10 steps, 3 repeats")
    parser.add_argument("--only", nargs="*", default=None, help="rule names to run")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 10, 3

    names = args.only or list(PAIRS)
    n_params = sum(int(np.prod(shape)) for shape in SHAPES)
    print(
        f"gradfit {gf.__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{n_params:,} float32 parameters; {'XLA' if args.jit else 'tf.function'}; "
        f"{args.steps} steps per call, best of {args.repeats}"
    )
    prepared = {name: prepare(name, args.steps, args.jit) for name in names}
    times: dict[tuple[str, str], list[float]] = {
        (name, side): [] for name in names for side in ("gradfit", "keras")
    }
    for repeat in range(args.repeats):
        for name in names:
            sides = ["gradfit", "keras"] if repeat % 2 == 0 else ["keras", "gradfit"]
            for side in sides:  # alternate the order, so drift in the load cancels
                times[name, side].append(seconds(prepared[name][side]) / args.steps)

    width = max(map(len, names))
    print(
        f"{'rule':<{width}}  {'gradfit ms':>10}  {'keras ms':>9}  {'ratio':>6}  "
        f"{'median paired ratio':>19}"
    )
    worst = 0.0
    for name in names:
        mine, theirs = times[name, "gradfit"], times[name, "keras"]
        ratio = min(mine) / min(theirs)
        paired = float(np.median(np.array(mine) / np.array(theirs)))
        worst = max(worst, ratio)
        mark = "" if ratio <= TARGET else f"  > {TARGET}"
        print(
            f"{name:<{width}}  {min(mine) * 1e3:>10.3f}  {min(theirs) * 1e3:>9.3f}  "
            f"{ratio:>6.3f}  {paired:>19.3f}{mark}"
        )
    print(f"worst ratio {worst:.3f} (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
