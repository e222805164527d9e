"""Time per training step: gradfit against Keras ``fit``, a hand-written loop, and the floor.

Everything runs in one process, one configuration after another, on the
same data, so the ratios printed at the end compare like with like. Each
configuration is timed over a run of ``EPOCHS`` epochs after a warm-up run
(tracing and XLA compilation excluded; per-fit costs such as input
validation included, spread over the epochs), and the best of at least
``--repeats`` runs (and of a second's worth of runs, for short ones) is
kept: the minimum is the figure least disturbed by a noisy, shared machine.
Every configuration runs the same whole batches (the ragged remainder is
dropped). The floor neither shuffles nor checks each step for
non-finite values, so gradfit is also timed doing exactly the floor's work
(``shuffle=False, on_nonfinite="ignore"``); a second floor shuffles every
epoch the cheapest way a hand-written loop can (``tf.random.shuffle``, one
gather of the epoch, then the same loop), the reference for shuffled fits.

Workloads:
  (a) linear regression, 100,000 x 1, batch 32, L2 loss, SGD;
  (b) an MLP 784-256-256-10 on 60,000 synthetic examples, batch 128, softmax
      cross-entropy, SGD;
  (c) the TF2 tutorial (1,000 examples, full batch, 10 epochs): whole ``fit``
      time including tracing, against the tutorial's eager loop.

Usage::

    python benchmarks/bench_fit.py            # full run, writes benchmarks/RESULTS.md
    python benchmarks/bench_fit.py --quick    # smaller data, no RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import gradfit as gf

HERE = Path(__file__).resolve().parent
EPOCHS = 3
# gradfit doing exactly the floor's work: same batches in order, no non-finite check.
FLOOR_WORK = "gradfit (jit_compile=True, shuffle=False, on_nonfinite='ignore')"
IN_ORDER = "gradfit (jit_compile=True, shuffle=False)"
FLOOR = "floor (epoch in one XLA while loop)"
# The floor plus what shuffling costs anyone: a new permutation and a gather per epoch.
SHUFFLED_FLOOR = "floor, shuffled (tf.random.shuffle + gather per epoch)"


# -- timing helpers --------------------------------------------------------------


def best_time(run: Callable[[], None], repeats: int) -> float:
    """Seconds for one call of ``run``: one warm-up call, then the best of the timed calls.

    Calls are timed at least ``repeats`` times and, for short calls, until
    about a second has been spent (at most 200 calls), so that a few-millisecond
    fit gets as many chances to dodge the shared machine's noise as the
    floor it is compared with.
    """
    run()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < 1.0 and len(times) < 200):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


# -- peers -----------------------------------------------------------------------


def keras_model(kind: str) -> keras.Model:
    if kind == "linear":
        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def keras_loss(kind: str) -> keras.losses.Loss:
    if kind == "linear":
        return keras.losses.MeanSquaredError()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def gradfit_model(kind: str) -> gf.Model:
    if kind == "linear":
        return gf.LinearModel(seed=0)
    return gf.MLP((256, 256), units=10, seed=0)


def gradfit_loss(kind: str) -> gf.Loss:
    if kind == "linear":
        return gf.L2()
    return gf.SparseCategoricalCrossentropy(from_logits=True)


def time_keras(kind, x, y, batch, lr, repeats, *, fast: bool) -> float:
    model = keras_model(kind)
    steps = len(x) // batch
    kwargs = {"steps_per_execution": steps, "jit_compile": True} if fast else {}
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=keras_loss(kind), **kwargs)
    xs, ys = x[: steps * batch], y[: steps * batch]

    def run():
        model.fit(xs, ys, batch_size=batch, epochs=EPOCHS, shuffle=True, verbose=0)

    return best_time(run, repeats) / (steps * EPOCHS)


def time_gradfit(kind, x, y, batch, lr, repeats, shuffle=True, **trainer_kwargs) -> float:
    steps = len(x) // batch
    xs, ys = x[: steps * batch], y[: steps * batch]
    trainer = gf.Trainer(gradfit_model(kind), gradfit_loss(kind), gf.SGD(lr), **trainer_kwargs)

    def run():
        trainer.fit(xs, ys, epochs=EPOCHS, batch_size=batch, shuffle=shuffle, seed=0)

    return best_time(run, repeats) / (steps * EPOCHS)


def hand_written(kind, x, y, batch, lr):
    """Model, loss, variables and a one-step function written by hand."""
    model = keras_model(kind)
    loss_fn = keras_loss(kind)
    variables = model.trainable_variables

    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb))
        for var, g in zip(variables, tape.gradient(loss, variables), strict=True):
            var.assign_sub(lr * g)
        return loss

    return step


def time_tf_function_loop(kind, x, y, batch, lr, repeats) -> float:
    """A ``tf.function`` step called from a Python loop over pre-sliced batches."""
    step = tf.function(hand_written(kind, x, y, batch, lr))
    steps = len(x) // batch
    xt, yt = tf.constant(x), tf.constant(y)

    def run():
        for _ in range(EPOCHS):
            for i in range(steps):
                step(xt[i * batch : (i + 1) * batch], yt[i * batch : (i + 1) * batch])

    return best_time(run, repeats) / (steps * EPOCHS)


def time_floor_shuffled(kind, x, y, batch, lr, repeats) -> float:
    """The floor with a new order every epoch: ``tf.random.shuffle``, one gather, the loop."""
    step = hand_written(kind, x, y, batch, lr)
    steps = len(x) // batch
    m = steps * batch
    xt, yt = tf.constant(x[:m]), tf.constant(y[:m])

    @tf.function(jit_compile=True)
    def epoch(xt, yt, perm):
        xb = tf.reshape(tf.gather(xt, perm), [steps, batch, *x.shape[1:]])
        yb = tf.reshape(tf.gather(yt, perm), [steps, batch, *y.shape[1:]])

        def body(i, total):
            return i + 1, total + step(xb[i], yb[i])

        return tf.while_loop(lambda i, _: i < steps, body, (0, 0.0))[1]

    def run():
        for _ in range(EPOCHS):
            epoch(xt, yt, tf.random.shuffle(tf.range(m))).numpy()

    return best_time(run, repeats) / (steps * EPOCHS)


def time_floor(kind, x, y, batch, lr, repeats) -> float:
    """All steps of an epoch in one XLA-compiled while loop over pre-batched tensors."""
    step = hand_written(kind, x, y, batch, lr)
    steps = len(x) // batch
    xb = tf.constant(x[: steps * batch].reshape(steps, batch, *x.shape[1:]))
    yb = tf.constant(y[: steps * batch].reshape(steps, batch, *y.shape[1:]))

    @tf.function(jit_compile=True)
    def epoch(xb, yb):
        def body(i, total):
            return i + 1, total + step(xb[i], yb[i])

        return tf.while_loop(lambda i, _: i < steps, body, (0, 0.0))[1]

    def run():
        for _ in range(EPOCHS):
            epoch(xb, yb).numpy()

    return best_time(run, repeats) / (steps * EPOCHS)


# -- workloads -------------------------------------------------------------------


def workload_data(kind: str, quick: bool) -> tuple[np.ndarray, np.ndarray, int, float]:
    rng = np.random.default_rng(0)
    if kind == "linear":
        n = 20_000 if quick else 100_000
        x = rng.normal(size=(n, 1)).astype(np.float32)
        y = (3 * x + 2 + rng.normal(size=(n, 1))).astype(np.float32)
        return x, y, 32, 0.01
    n = 12_000 if quick else 60_000
    x = rng.normal(size=(n, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    return x, y, 128, 0.01


def run_workload(kind: str, quick: bool, repeats: int) -> dict[str, float]:
    x, y, batch, lr = workload_data(kind, quick)
    args = (kind, x, y, batch, lr, repeats)
    results = {
        "gradfit (default)": time_gradfit(*args),
        "gradfit (jit_compile=True)": time_gradfit(*args, jit_compile=True),
        IN_ORDER: time_gradfit(*args, shuffle=False, jit_compile=True),
        FLOOR_WORK: time_gradfit(*args, shuffle=False, jit_compile=True, on_nonfinite="ignore"),
        "Keras fit (default)": time_keras(*args, fast=False),
        "Keras fit (steps_per_execution=epoch, XLA)": time_keras(*args, fast=True),
        "tf.function step, Python loop": time_tf_function_loop(*args),
        FLOOR: time_floor(*args),
        SHUFFLED_FLOOR: time_floor_shuffled(*args),
    }
    return results


def tutorial_times(repeats: int) -> dict[str, float]:
    """Whole-fit seconds for the tutorial, tracing included (a fresh trainer each time)."""
    gen = tf.random.Generator.from_seed(0)
    inputs = gen.normal([1000])
    outputs = inputs * 3.0 + 2.0 + gen.normal([1000])

    def eager_loop():
        W, b = tf.Variable(5.0), tf.Variable(0.0)
        for _ in range(10):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(W * inputs + b - outputs))
            dW, db = tape.gradient(loss, [W, b])
            W.assign_sub(0.1 * dW)
            b.assign_sub(0.1 * db)

    def gradfit_fit():
        model = gf.LinearModel(weight_init=5.0, bias_init=0.0)
        gf.Trainer(model, gf.L2(), gf.SGD(0.1)).fit(inputs, outputs, epochs=10)

    return {
        "tutorial eager loop": best_time(eager_loop, repeats),
        "gradfit fit (tracing included)": best_time(gradfit_fit, repeats),
    }


# -- report ----------------------------------------------------------------------


def table(title: str, results: dict[str, float], reference: str, unit: str) -> list[str]:
    scale, suffix = (1e6, "us") if unit == "step" else (1e3, "ms")
    lines = [
        f"### {title}",
        "",
        f"| configuration | time per {unit} ({suffix}) | ratio to {reference} |",
        "|---|---:|---:|",
    ]
    for name, seconds in results.items():
        ratio = seconds / results[reference]
        lines.append(f"| {name} | {seconds * scale:,.2f} | {ratio:.2f} |")
    return [*lines, ""]


def headline(a: dict[str, float], b: dict[str, float], c: dict[str, float]) -> list[str]:
    keras_best_a = a["Keras fit (steps_per_execution=epoch, XLA)"]
    return [
        "### Headline ratios",
        "",
        f"- (a) gradfit with XLA / floor (target <= 2): {a[FLOOR_WORK] / a[FLOOR]:.2f} doing the floor's work, {a[IN_ORDER] / a[FLOOR]:.2f} in order with the non-finite check; shuffled, against the shuffled floor: {a['gradfit (jit_compile=True)'] / a[SHUFFLED_FLOOR]:.2f} (default: {a['gradfit (default)'] / a[SHUFFLED_FLOOR]:.2f})",  # noqa: E501
        f"- (a) Keras best / gradfit default: {keras_best_a / a['gradfit (default)']:.1f}x (target >= 3)",  # noqa: E501
        f"- (a) Keras default / gradfit default: {a['Keras fit (default)'] / a['gradfit (default)']:.1f}x (target >= 20)",  # noqa: E501
        f"- (b) gradfit default / Keras best: {b['gradfit (default)'] / b['Keras fit (steps_per_execution=epoch, XLA)']:.2f} (target <= 1.0)",  # noqa: E501
        f"- (c) gradfit fit / tutorial eager loop: {c['gradfit fit (tracing included)'] / c['tutorial eager loop']:.2f} (target <= 5)",  # noqa: E501
        "",
    ]


OWN_SECTIONS = ("### (a)", "### (b)", "### (c)", "### Headline ratios")


def with_other_sections(text: str, old: str) -> str:
    """``text``, then the sections of ``old`` this script does not write (first fit, notes...)."""
    sections = ["### " + part for part in old.split("\n### ")[1:]]
    kept = [part.rstrip("\n") for part in sections if not part.startswith(OWN_SECTIONS)]
    return "\n\n".join([text, *kept])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data; no RESULTS.md")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="abc", help="subset of 'abc' to run")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)

    device = (
        "GPU: " + tf.config.list_physical_devices("GPU")[0].name
        if tf.config.list_physical_devices("GPU")
        else "CPU"
    )
    header = [
        "# gradfit benchmark results",
        "",
        f"Run on {datetime.date.today().isoformat()} with `python benchmarks/bench_fit.py"
        f"{' --quick' if args.quick else ''}`: {platform.machine()}, {os.cpu_count()} cores, "
        f"{device}, Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, gradfit {gf.__version__}. Best of at least "
        f"{args.repeats} runs (and of a second's worth) of {EPOCHS} epochs, after a warm-up "
        "run; ratios are within this one run.",
        "",
    ]
    lines = list(header)
    found: dict[str, dict[str, float]] = {}
    if "a" in args.workloads:
        found["a"] = run_workload("linear", args.quick, args.repeats)
        lines += table(
            "(a) linear regression, 100,000 x 1, batch 32",
            found["a"],
            FLOOR,
            "step",
        )
    if "b" in args.workloads:
        found["b"] = run_workload("mlp", args.quick, args.repeats)
        lines += table(
            "(b) MLP 784-256-256-10, 60,000 examples, batch 128",
            found["b"],
            "Keras fit (steps_per_execution=epoch, XLA)",
            "step",
        )
    if "c" in args.workloads:
        found["c"] = tutorial_times(args.repeats)
        lines += table(
            "(c) the tutorial: 1,000 examples, full batch, 10 epochs",
            found["c"],
            "tutorial eager loop",
            "fit",
        )
    if set(found) == {"a", "b", "c"}:
        lines += headline(found["a"], found["b"], found["c"])
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        old = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        args.output.write_text(with_other_sections(text, old) + "\n", encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
