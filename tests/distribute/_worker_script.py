"""One worker of a multi-worker job, or the one-process reference (run by test_multi_worker.py).

Usage: ``python _worker_script.py OUT BACKUP CSV [--pause S] [--hold E:B] [--no-seed]``
with ``TF_CONFIG`` set (a worker: ``gf.distribute.multi_worker_strategy``
with a 3 s coordination heartbeat, so a silent worker is declared lost
after 3 s); the test imports :func:`run` for the one-process reference.
It fits an MLP for 4 epochs on 64 examples (batches of 16, shuffled: with
seed 3, or with ``--no-seed`` an order the workers must agree on) with
Adam behind gradient clipping, a Keras metric (mean absolute error: its
state is read across the workers, and resumed mid-epoch with the rest), a
``BackupAndRestore`` on ``BACKUP`` (saving every 2 steps), a
``CSVLogger`` on ``CSV`` and a ``ModelCheckpoint`` of the whole trainer
next to it. ``--pause S`` sleeps S seconds after every step, or with
``--hold E:B`` only after step B of epoch E (a window to kill or stop a
worker in). Prints ``generator
<state>`` when training begins, ``step <epoch>:<step>`` as each step's logs
reach the callbacks and ``epoch <epoch> <logs as JSON>`` at each epoch's
end, and writes ``OUT`` (JSON: the variables, the History, the generator's
state, the worker's role and a ``WorkerLostError`` if one stopped it).
``{worker}`` in ``OUT`` and ``CSV`` becomes the worker's index.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import gradfit as gf

EPOCHS = 4


class Steps(gf.Callback):
    """Prints each step as its logs arrive and each epoch's logs, pausing ``pause`` s at steps.

    ``hold`` (``"epoch:step"``) limits the pause to that one step.
    """

    def __init__(self, pause: float, hold: str | None = None) -> None:
        super().__init__()
        self.pause, self.hold = pause, hold

    def on_train_begin(self, logs: dict | None = None) -> None:
        state = self.trainer.generator.state.numpy().tolist()
        print(f"generator {json.dumps(state)}", flush=True)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = f"{self.trainer.state.epoch}:{batch}"
        print(f"step {step}", flush=True)
        if self.hold in (None, step):
            time.sleep(self.pause)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {name: float(value) for name, value in (logs or {}).items()}
        print(f"epoch {epoch} {json.dumps(logs)}", flush=True)


def run(
    strategy: Any,
    backup: str,
    csv: str,
    *,
    pause: float = 0.0,
    hold: str | None = None,
    seed: int | None = 3,
    generator: list[int] | None = None,
) -> dict:
    """The fit on ``strategy`` (``None``: one process); what the test compares.

    ``generator`` sets the shuffling state first (a reference for a job without a seed).
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3)[:, None].astype(np.float32)
    rule = gf.chain(gf.clip_by_global_norm(1.0), gf.Adam(0.05))
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        metric = keras.metrics.MeanAbsoluteError(name="kmae")  # (its state: summed on read)
    trainer = gf.Trainer(gf.MLP((8,), seed=1), gf.L2(), rule, metrics=[metric], strategy=strategy)
    if generator is not None:
        trainer.generator.state.assign(np.array(generator, np.int64))
    callbacks = [
        Steps(pause, hold),
        gf.callbacks.CSVLogger(csv, append=True),
        gf.callbacks.BackupAndRestore(backup, save_every=2),
        gf.callbacks.ModelCheckpoint(
            csv.removesuffix(".csv") + "-trainer", save_weights_only=False
        ),
    ]
    result: dict = {}
    began = time.monotonic()
    try:
        history = trainer.fit(x, y, epochs=EPOCHS, batch_size=16, seed=seed, callbacks=callbacks)
        result["history"] = history.history
    except gf.distribute.WorkerLostError as err:
        lost = {"message": str(err), "worker": err.worker, "after": time.monotonic() - began}
        result["lost"] = lost
    if "lost" not in result:  # (reading the metric's state is a collective: not without a peer)
        result["variables"] = [v.numpy().tolist() for v in trainer.task.state_variables()]
    result["generator"] = trainer.generator.state.numpy().tolist()
    result["chief"] = trainer.replicas.writes
    return result


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("out")
    args.add_argument("backup")
    args.add_argument("csv")
    args.add_argument("--pause", type=float, default=0.0)
    args.add_argument("--hold", default=None, help="epoch:step, the one step to pause after")
    args.add_argument("--no-seed", action="store_true")
    options = args.parse_args()
    worker = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = gf.distribute.multi_worker_strategy(heartbeat_timeout=3)
    seed = None if options.no_seed else 3
    csv = options.csv.format(worker=worker)
    result = run(strategy, options.backup, csv, pause=options.pause, hold=options.hold, seed=seed)
    with open(options.out.format(worker=worker), "w") as file:
        json.dump(result, file)
    print("done", flush=True)
    sys.exit(3 if "lost" in result else 0)


if __name__ == "__main__":
    main()
