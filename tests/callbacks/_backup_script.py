"""A run that BackupAndRestore keeps alive across SIGKILLs (driven by test_backup.py).

Usage: ``python _backup_script.py BACKUP_DIR OUT_PREFIX [--slow] [--no-backup]
[--every N]``,
or ``python _backup_script.py --serve`` (see :func:`serve`). It fits an
MLP for 6 epochs (batch 16, shuffling with a seed, Adam with a schedule behind
gradient clipping, EarlyStopping with patience) with a BackupAndRestore on
BACKUP_DIR, then writes the final variables to OUT_PREFIX.npz and the History
to OUT_PREFIX.json. It prints a line to stdout at each point a test may want
to kill it: ``epoch <e>`` when an epoch begins, ``save <e>`` when its backup
starts, ``save <e>:<s>`` when a backup ``s`` steps into epoch ``e`` starts
(with ``--every N``: ``BackupAndRestore(save_every=N)``), and first
``resumed <e>:<s>`` when it resumed from a backup taken ``s`` steps into
epoch ``e``; with ``--slow`` it sleeps at those points and inside the save's
atomic steps, widening the windows a kill can land in. ``--no-backup`` runs
without BackupAndRestore (the uninterrupted reference). The environment
variable BACKUP_INIT_SEED seeds the model's initial values (default 1).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import gradfit as gf
from gradfit.callbacks import backup as backup_module
from gradfit.checkpoint import backup as engine
from gradfit.checkpoint import io as checkpoint_io

EPOCHS = 6
PAUSE = 0.03


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)  # 4 batches of 16
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
    return x, y


def make_trainer(init_seed: int = 1) -> gf.Trainer:
    schedule = gf.schedules.ExponentialDecay(0.05, decay_steps=5, decay_rate=0.8)
    rule = gf.chain(gf.clip_by_global_norm(1.0), gf.Adam(schedule))
    return gf.Trainer(gf.MLP((8,), seed=init_seed), gf.L2(), rule)


def callbacks(directory: str | None, save_every: str | int = "epoch") -> list[gf.Callback]:
    """The run's callbacks; with a backup, a ``CSVLogger(directory + ".csv", append=True)``."""
    backup: list[gf.Callback] = []
    if directory is not None:
        backup = [
            gf.callbacks.CSVLogger(directory + ".csv", append=True),
            gf.callbacks.BackupAndRestore(directory, save_every),
        ]
    return [*backup, gf.EarlyStopping(monitor="loss", patience=1, min_delta=0.4)]


def fit_kwargs() -> dict:
    return {"epochs": EPOCHS, "batch_size": 16, "shuffle": True, "seed": 0}


def _steps(every: str) -> str | int:
    return every if every == "epoch" else int(every)


def say(text: str, slow: bool) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if slow:
        time.sleep(PAUSE)


def main(argv: list[str]) -> None:
    directory, out, *flags = argv
    slow = "--slow" in flags
    real_write, real_place, real_state = (
        checkpoint_io.write_checkpoint,
        checkpoint_io._place,
        checkpoint_io._write_state,
    )

    real_save_steps = backup_module.BackupAndRestore.save_steps

    def save_steps(self, epoch, step, *args, **kwargs):
        step_now[0] = step
        try:
            return real_save_steps(self, epoch, step, *args, **kwargs)
        finally:
            step_now[0] = None

    def write_checkpoint(*args, **kwargs):
        at = "" if step_now[0] is None else f":{step_now[0]}"
        say(f"save {epoch_now[0]}{at}", slow)
        return real_write(*args, **kwargs)

    def place(*args, **kwargs):
        if slow:
            time.sleep(PAUSE)
        return real_place(*args, **kwargs)

    def write_state(*args, **kwargs):
        if slow:
            time.sleep(PAUSE)
        return real_state(*args, **kwargs)

    checkpoint_io.write_checkpoint, checkpoint_io._place, checkpoint_io._write_state = (
        write_checkpoint,
        place,
        write_state,
    )
    backup_module.BackupAndRestore.save_steps = save_steps  # type: ignore[method-assign]
    assert engine.io is checkpoint_io  # the backup engine writes through these functions
    epoch_now: list[int] = [-1]
    step_now: list[int | None] = [None]
    every = flags[flags.index("--every") + 1] if "--every" in flags else "epoch"
    chosen = callbacks(None if "--no-backup" in flags else directory, _steps(every))

    def on_epoch_begin(epoch, logs=None):
        epoch_now[0] = epoch
        say(f"epoch {epoch}", slow)

    def on_epoch_resume(epoch, step, logs=None):
        say(f"resumed {epoch}:{step}", slow)
        on_epoch_begin(epoch)

    x, y = data()
    trainer = make_trainer(init_seed=int(os.environ.get("BACKUP_INIT_SEED", "1")))
    history = trainer.fit(
        x,
        y,
        callbacks=[
            *chosen,
            gf.LambdaCallback(on_epoch_begin=on_epoch_begin, on_epoch_resume=on_epoch_resume),
        ],
        **fit_kwargs(),
    )
    np.savez(out + ".npz", *[var.numpy() for var in trainer.model.variables])
    with open(out + ".json", "w", encoding="utf-8") as file:
        json.dump({"history": history.history, "epoch": history.epoch}, file)
    say("done", False)


def serve() -> None:
    """Runs fits in forked children, so that each pays for the TensorFlow import once.

    Reads ``LOG INIT_SEED BACKUP_DIR OUT_PREFIX [FLAGS...]`` lines from stdin;
    for each it forks a child that runs :func:`main` with its stdout going to
    the file LOG, prints ``pid <pid>``, waits for the child and prints
    ``exit <code>`` (``-9`` for a SIGKILL, as ``subprocess`` reports it).
    Nothing here has touched TensorFlow's runtime, so the children start clean.
    """
    print("ready", flush=True)
    for line in sys.stdin:
        log, init_seed, *argv = line.split()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the child: one fit, then exit without running the parent's cleanup
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.environ["BACKUP_INIT_SEED"] = init_seed
                main(argv)
                code = 0
            except BaseException:
                traceback.print_exc(file=sys.stdout)  # into LOG, for the test's message
            finally:
                sys.stdout.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main(sys.argv[1:])
