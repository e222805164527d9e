"""The first ``fit`` of a fresh process: gradfit against Keras ``fit`` (issue 14).

What a user waits for is the first fit: tracing, compiling, probing, the
eager model build and the callbacks' start-up, as well as the steps. Each
contender runs in its own fresh Python process (so nothing is traced or
compiled yet), the fit timed from after the imports (``tensorflow`` and
the contender's own library) and the data's creation to the fit's return.
Contenders alternate round by round, so a slow spell of this shared
machine hits all of them alike; the median over the rounds is printed,
with ratios to Keras ``fit`` (default) and, for gradfit's default
(``jit_compile="auto"``), to the faster of gradfit's ``jit_compile=True``
and ``False``.

Workloads (synthetic data of the real shapes):
  tutorial  the TF2 tutorial: linear model, 1,000 examples, full batch,
            10 epochs, SGD 0.1 (also its plain eager loop);
  iris      MLP 4-10-10-3, 150 examples, batch 32, 200 epochs, SGD 0.01;
  digits    MLP 64-64-64-10, 1,797 examples, batch 64, 20 epochs, Adam 1e-3;
  mlp       bench_fit.py's MLP 784-256-256-10, 60,000 examples, batch 128,
            3 epochs, SGD 0.1.

``--breakdown`` instead profiles gradfit's default first fit of each
workload (cProfile, fresh process) and prints where its time goes: tracing
(of which autograph converting code), the XLA check, the probe of the
model and loss on zeros, the callbacks' start-up, and the rest (running
the compiled functions, XLA's compiling included, and Python around them),
as shares of the profiled fit.

Usage::

    python benchmarks/bench_first_fit.py                 # 2 rounds, every workload
    python benchmarks/bench_first_fit.py --rounds 3 --workloads tutorial,digits
    python benchmarks/bench_first_fit.py --breakdown --workloads tutorial
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKLOADS = {
    # name: (features, hidden, classes (0: regression), examples, batch, epochs, rule, rate)
    "tutorial": (1, (), 0, 1000, None, 10, "sgd", 0.1),
    "iris": (4, (10, 10), 3, 150, 32, 200, "sgd", 0.01),
    "digits": (64, (64, 64), 10, 1797, 64, 20, "adam", 1e-3),
    "mlp": (784, (256, 256), 10, 60000, 128, 3, "sgd", 0.1),
}
CONTENDERS = ("keras", "gradfit", "gradfit-nojit", "gradfit-jit")
EAGER = "tutorial eager loop"


def _data(features: int, classes: int, examples: int) -> tuple[object, object]:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, features)).astype(np.float32)
    if classes:
        return x, rng.integers(0, classes, size=examples).astype(np.int32)
    w = rng.normal(size=(features, 1)).astype(np.float32)
    return x, (x @ w + 2.0 + rng.normal(size=(examples, 1)) * 0.1).astype(np.float32)


def _keras(workload: tuple, x: object, y: object) -> None:
    import keras

    features, hidden, classes, _, batch, epochs, rule, rate = workload
    layers = [keras.Input((features,)), *(keras.layers.Dense(h, "relu") for h in hidden)]
    model = keras.Sequential([*layers, keras.layers.Dense(classes or 1)])
    optimizer = keras.optimizers.SGD(rate) if rule == "sgd" else keras.optimizers.Adam(rate)
    loss = (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if classes
        else keras.losses.MeanSquaredError()
    )
    model.compile(optimizer=optimizer, loss=loss)
    model.fit(x, y, batch_size=batch or len(x), epochs=epochs, verbose=0)


def _gradfit(workload: tuple, x: object, y: object, jit: object) -> None:
    import gradfit as gf

    _, hidden, classes, _, batch, epochs, rule, rate = workload
    if hidden:
        model: object = gf.MLP(hidden, units=classes or 1, seed=0)
    else:
        model = gf.LinearModel()
    loss = gf.SparseCategoricalCrossentropy(from_logits=True) if classes else gf.L2()
    update = gf.SGD(rate) if rule == "sgd" else gf.Adam(rate)
    gf.Trainer(model, loss, update, jit_compile=jit).fit(x, y, epochs=epochs, batch_size=batch)


def _eager_tutorial(workload: tuple, x: object, y: object) -> None:
    """The tutorial's own loop: a tf.Module, GradientTape, assign_sub, eagerly."""
    import tensorflow as tf

    w, b = tf.Variable(5.0), tf.Variable(0.0)
    xs, ys = tf.constant(x[:, 0]), tf.constant(y[:, 0])  # type: ignore[index]
    for _ in range(workload[5]):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(w * xs + b - ys))
        dw, db = tape.gradient(loss, [w, b])
        w.assign_sub(workload[7] * dw)
        b.assign_sub(workload[7] * db)


# Where a first fit's time goes: (phase, file suffix, function names) of the profiled calls.
PHASES = (
    ("tracing", "framework/func_graph.py", ("func_graph_from_py_func",)),
    ("of which autograph", "autograph/pyct/transpiler.py", ("transform",)),
    ("XLA check", "gradfit/training/compile.py", ("xla_obstacle",)),
    ("probe on zeros", "gradfit/training/probe.py", ("check",)),
    ("callbacks' start-up", "gradfit/callbacks/base.py", ("check_run", "on_train_begin")),
)


def breakdown(name: str) -> None:
    """Profiles gradfit's default first fit of ``name`` here; prints each phase's share as JSON."""
    import cProfile
    import pstats

    import gradfit  # noqa: F401

    workload = WORKLOADS[name]
    x, y = _data(workload[0], workload[2], workload[3])
    profile = cProfile.Profile()
    profile.runcall(_gradfit, workload, x, y, "auto")
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, _), (_, _, _, ct, _) in stats.items())
    shares = {
        phase: sum(
            ct
            for (file, _, function), (_, _, _, ct, _) in stats.items()
            if file.endswith(suffix) and function in functions
        )
        / total
        for phase, suffix, functions in PHASES
    }
    print(json.dumps({"profiled_seconds": total, **shares}))


def child(name: str, contender: str) -> None:
    """Runs one first fit in this (fresh) process and prints its time as JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The libraries' imports are not timed (each contender imports only its own).
    if contender == "keras":
        import keras  # noqa: F401
    elif contender != EAGER:
        import gradfit  # noqa: F401
    import tensorflow as tf  # noqa: F401

    workload = WORKLOADS[name]
    x, y = _data(workload[0], workload[2], workload[3])
    start = time.perf_counter()
    if contender == "keras":
        _keras(workload, x, y)
    elif contender == EAGER:
        _eager_tutorial(workload, x, y)
    else:
        jit = {"gradfit": "auto", "gradfit-nojit": False, "gradfit-jit": True}[contender]
        _gradfit(workload, x, y, jit)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def _child(*args: str) -> dict[str, float]:
    """Runs this script with ``args`` in a fresh process; its last line of JSON."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def report_breakdown(names: list[str]) -> str:
    """A Markdown table of each workload's phase shares (cProfile slows everything alike)."""
    phases = [phase for phase, _, _ in PHASES]
    lines = [
        "Where gradfit's default first fit goes (cProfile, fresh process; shares of the fit).",
        "",
        f"| workload | profiled (s) | {' | '.join(phases)} | the rest |",
        "|---|---:|" + "---:|" * (len(phases) + 1),
    ]
    for name in names:
        found = _child("--child-breakdown", name)
        counted = sum(found[p] for p in phases if not p.startswith("of which"))
        cells = " | ".join(f"{found[p]:.0%}" for p in phases)
        lines.append(f"| {name} | {found['profiled_seconds']:.2f} | {cells} | {1 - counted:.0%} |")
    return "\n".join(lines)


def _run(name: str, contender: str) -> float:
    return _child("--child", name, contender)["seconds"]


def measure(names: list[str], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Every contender's first-fit times, per workload, over ``rounds`` alternating rounds."""
    times: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for _ in range(rounds):
        for name in names:
            contenders = (*CONTENDERS, EAGER) if name == "tutorial" else CONTENDERS
            for contender in contenders:
                times[name].setdefault(contender, []).append(_run(name, contender))
    return times


def report(times: dict[str, dict[str, list[float]]], rounds: int) -> str:
    """A Markdown table of medians and ratios."""
    lines = [
        f"First fit in a fresh process, median of {rounds} alternating rounds (seconds).",
        "",
        "| workload | Keras fit | gradfit default | jit False | jit True | default / Keras "
        "| default / best gradfit | eager loop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, found in times.items():
        med = {c: statistics.median(v) for c, v in found.items()}
        best = min(med["gradfit-nojit"], med["gradfit-jit"])
        eager = (
            f"{med[EAGER]:.3f} (default {med['gradfit'] / med[EAGER]:.1f}x)" if EAGER in med else ""
        )
        lines.append(
            f"| {name} | {med['keras']:.3f} | {med['gradfit']:.3f} | {med['gradfit-nojit']:.3f} "
            f"| {med['gradfit-jit']:.3f} | {med['gradfit'] / med['keras']:.2f} "
            f"| {med['gradfit'] / best:.2f} | {eager} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--breakdown", action="store_true", help="profile gradfit's first fit")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "CONTENDER"))
    parser.add_argument("--child-breakdown", metavar="WORKLOAD")
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.child_breakdown:
        breakdown(args.child_breakdown)
        return 0
    names = [n for n in args.workloads.split(",") if n]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown or args.rounds < 1:
        parser.error(f"--workloads must name {sorted(WORKLOADS)}; --rounds >= 1: {unknown}")
    if args.breakdown:
        print(report_breakdown(names))
        return 0
    print(report(measure(names, args.rounds), args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
