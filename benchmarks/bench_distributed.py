"""Time per step under ``MirroredStrategy`` on 2 logical CPUs: gradfit against Keras ``fit``.

Everything runs in one process (the two logical CPU devices must be set
before TensorFlow starts), one configuration after another, on the same
data: an MLP 32-64-64-1 on 16,384 synthetic examples, global batches of 64
(256 steps an epoch), shuffled, MSE, Adam. Each configuration is timed over
``EPOCHS`` epochs after a warm-up fit (tracing excluded), best of
``--repeats`` runs (the minimum is the figure least disturbed by a noisy,
shared machine). Configurations:

* gradfit under the strategy, a whole epoch per compiled call (the default);
* gradfit on one device, same global batches, with XLA (its default for
  long fits) and without (what replicas run): the overhead of 2 replicas
  (two logical devices share the same two cores, so they add no compute);
* Keras ``fit`` under the strategy with ``steps_per_execution`` 1 and 32, no
  XLA (the issue found that only 1 works for Keras 3 here; a configuration
  that fails is reported and skipped), and Keras on one device.

Usage::

    python benchmarks/bench_distributed.py [--repeats 3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import gradfit as gf  # noqa: E402

N, FEATURES, BATCH = 16_384, 32, 64


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.1 * x[:, 1:2]).astype(np.float32)
    return x, y


def best_seconds(run: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times)


def gradfit_fit(strategy: Any, epochs: int, repeats: int, jit: bool | str = "auto") -> float:
    x, y = data()
    model, rule = gf.MLP((64, 64), seed=0), gf.Adam(1e-3)
    trainer = gf.Trainer(model, gf.L2(), rule, strategy=strategy, jit_compile=jit)
    trainer.fit(x, y, epochs=1, batch_size=BATCH, seed=0)  # warm-up: traces
    return best_seconds(lambda: trainer.fit(x, y, epochs=epochs, batch_size=BATCH), repeats)


def keras_fit(strategy: Any, steps_per_execution: int, epochs: int, repeats: int) -> float:
    x, y = data()
    scope = strategy.scope() if strategy is not None else tf.distribute.get_strategy().scope()
    with scope:
        model = keras.Sequential(
            [
                keras.Input((FEATURES,)),
                keras.layers.Dense(64, "relu"),
                keras.layers.Dense(64, "relu"),
                keras.layers.Dense(1),
            ]
        )
        model.compile(
            keras.optimizers.Adam(1e-3),
            "mse",
            jit_compile=False,
            steps_per_execution=steps_per_execution,
        )
    fit = lambda e: model.fit(x, y, batch_size=BATCH, epochs=e, shuffle=True, verbose=0)  # noqa: E731
    fit(1)  # warm-up: traces
    return best_seconds(lambda: fit(epochs), repeats)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    options = parser.parse_args()
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    steps = options.epochs * (N // BATCH)
    rows: dict[str, float | str] = {}

    def timed(name: str, run: Callable[[], float]) -> None:
        try:
            rows[name] = run() / steps * 1e6
        except Exception as err:  # a configuration Keras cannot run: reported, not timed
            rows[name] = f"fails: {type(err).__name__}: {str(err).splitlines()[0][:80]}"

    e, r = options.epochs, options.repeats
    timed("gradfit, MirroredStrategy (2 CPUs)", lambda: gradfit_fit(strategy, e, r))
    timed("gradfit, one device (XLA: jit_compile='auto')", lambda: gradfit_fit(None, e, r))
    timed("gradfit, one device, jit_compile=False", lambda: gradfit_fit(None, e, r, jit=False))
    for spe in (1, 32):
        timed(
            f"Keras fit, MirroredStrategy, steps_per_execution={spe}",
            lambda spe=spe: keras_fit(strategy, spe, e, r),
        )
    timed("Keras fit, one device, steps_per_execution=32", lambda: keras_fit(None, 32, e, r))

    print(f"{N} examples, batch {BATCH}, {steps} steps timed, best of {r}; us/step:")
    for name, value in rows.items():
        print(f"  {name:58s} {value if isinstance(value, str) else f'{value:9.1f}'}")
    ours = rows["gradfit, MirroredStrategy (2 CPUs)"]
    keras_times = [v for k, v in rows.items() if "Keras" in k and "Mirrored" in k]
    best_keras = min(v for v in keras_times if isinstance(v, float))
    xla, plain = (
        rows["gradfit, one device (XLA: jit_compile='auto')"],
        rows["gradfit, one device, jit_compile=False"],
    )
    assert isinstance(ours, float) and isinstance(xla, float) and isinstance(plain, float)
    print(f"Keras's best under the strategy / gradfit under it: {best_keras / ours:.2f}x")
    print(f"gradfit, 2 replicas / one device without XLA (the overhead): {ours / plain:.2f}x")
    print(f"gradfit, 2 replicas / one device with XLA (its default there): {ours / xla:.2f}x")


if __name__ == "__main__":
    main()
