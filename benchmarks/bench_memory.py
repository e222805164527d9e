"""Peak resident memory of a fit on in-memory float32 data, against the TensorFlow baseline.

The target: fitting on in-memory float32 data of size S keeps the peak
resident set size under the baseline (TensorFlow and gradfit imported, a
tiny fit run so the runtime is initialised) plus 2.5 x S. S counts the
NumPy arrays the user holds, so the bound covers the user's own copy, the
device copy gradfit makes once per fit, and everything the loop allocates.

Each measurement runs in a fresh subprocess, because the peak (``ru_maxrss``)
is a high-water mark that never goes down.

Usage::

    python benchmarks/bench_memory.py            # 300 MB of data (default)
    python benchmarks/bench_memory.py --mb 600
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys


def peak_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(megabytes: int, shuffle: bool, jit: str, batch_size: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    import gradfit as gf

    jit_compile: bool | str = {"true": True, "false": False}.get(jit, jit)
    features = 75
    tiny = np.zeros((8, features), np.float32)
    # The baseline has TensorFlow's runtime, and XLA's when the fit will use it, loaded.
    warm_jit = jit_compile is not False
    gf.Trainer(gf.LinearModel(), gf.L2(), jit_compile=warm_jit).fit(tiny, tiny[:, :1], epochs=1)
    baseline = peak_mib()

    n = megabytes * 2**20 // (4 * (features + 1))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, features), dtype=np.float32)
    y = rng.standard_normal((n, 1), dtype=np.float32)
    size = (x.nbytes + y.nbytes) / 2**20
    trainer = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(1e-3), jit_compile=jit_compile)
    trainer.fit(x, y, epochs=2, batch_size=batch_size, shuffle=shuffle, seed=0)
    peak = peak_mib()
    print(
        json.dumps(
            {
                "tensorflow": tf.__version__,
                "data_mib": size,
                "baseline_mib": baseline,
                "peak_mib": peak,
                "extra_over_data": (peak - baseline) / size,
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="size S of the data, in MiB")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shuffle", default="true", help=argparse.SUPPRESS)
    parser.add_argument("--jit", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.mb, args.shuffle == "true", args.jit, args.batch_size)
        return 0

    print(
        "| shuffle | jit_compile | batch | S (MiB) | baseline (MiB) | peak (MiB) "
        "| (peak - baseline) / S |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    worst = 0.0
    # Batches of 1024 rows (311 KB) are gathered inside the loop when shuffled; batches of
    # 32 rows (9.7 KB) are copied into the epoch's order 16 MiB at a time first.
    configurations = [
        (shuffle, jit, 1024) for shuffle in ("true", "false") for jit in ("auto", "false")
    ]
    configurations += [("true", jit, 32) for jit in ("auto", "false")]
    for shuffle, jit, batch_size in configurations:
        out = (
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    "--mb",
                    str(args.mb),
                    "--shuffle",
                    shuffle,
                    "--jit",
                    jit,
                    "--batch-size",
                    str(batch_size),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        r = json.loads(out)
        worst = max(worst, r["extra_over_data"])
        print(
            f"| {shuffle} | {jit} | {batch_size} | {r['data_mib']:.0f} | "
            f"{r['baseline_mib']:.0f} | "
            f"{r['peak_mib']:.0f} | {r['extra_over_data']:.2f} |"
        )
    print(f"\nworst (peak - baseline) / S: {worst:.2f} (target < 2.5)")
    return 0 if worst < 2.5 else 1


if __name__ == "__main__":
    sys.exit(main())
