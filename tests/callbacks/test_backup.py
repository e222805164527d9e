"""BackupAndRestore: a run killed at any moment resumes bit for bit."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.callbacks import BackupAndRestore
from tests.callbacks import _backup_script as script
from tests.callbacks.runs import CrashAt, CrashError

SCRIPT = Path(script.__file__)
KILLS = 10


def early_stopping():
    return gf.EarlyStopping(monitor="loss", patience=2, min_delta=0.3)


def variables(trainer):
    return [v.numpy() for v in trainer.model.variables] + [
        v.numpy() for v in trainer.update_rule.variables
    ]


def assert_bitwise(a, b):
    assert len(a) == len(b)
    for left, right in zip(a, b, strict=True):
        assert left.dtype == right.dtype and left.shape == right.shape
        assert left.tobytes() == right.tobytes()


def epochs_seen():
    seen = []
    return seen, gf.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: seen.append(epoch))


def test_a_crashed_fit_resumes_bitwise_like_an_uninterrupted_run(tmp_path):
    x, y = script.data()
    kwargs = {**script.fit_kwargs()}
    directory = tmp_path / "backup"

    reference = script.make_trainer(init_seed=1)
    ref_stop = early_stopping()
    ref_history = reference.fit(x, y, callbacks=[ref_stop], **kwargs)
    assert ref_history.epoch == list(range(6))  # patience is not exhausted: all 6 epochs

    crashed = script.make_trainer(init_seed=1)
    seen, record = epochs_seen()
    with pytest.raises(CrashError):
        crashed.fit(
            x,
            y,
            callbacks=[BackupAndRestore(directory), early_stopping(), CrashAt(3), record],
            **kwargs,
        )
    assert seen == [0, 1, 2, 3]
    assert (directory / "checkpoint").exists()  # epochs 0-2 saved; epoch 3 crashed before

    # A fresh trainer, other initial values, no seed: the backup supplies everything.
    resumed = script.make_trainer(init_seed=2)
    stop = early_stopping()
    seen, record = epochs_seen()
    kwargs.pop("seed")
    backup = BackupAndRestore(directory)
    history = resumed.fit(x, y, callbacks=[backup, stop, record], **kwargs)

    assert backup.restored_epoch == 2
    assert seen == [3, 4, 5]  # epoch hooks only for the epochs this fit trained
    assert history.epoch == ref_history.epoch
    assert history.history == ref_history.history  # floats compared exactly
    assert_bitwise(variables(resumed), variables(reference))
    assert int(resumed.update_rule.iterations) == int(reference.update_rule.iterations) == 24
    assert stop.get_state()["wait"] == ref_stop.get_state()["wait"]
    assert stop.get_state()["best"] == ref_stop.get_state()["best"]
    assert stop.best_epoch == ref_stop.best_epoch
    assert not directory.exists()  # a finished run removes its backup


class CrashAtStep(gf.Callback):
    """Raises in the batch hook of the run's ``step``-th step (from 1)."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise CrashError(f"crashed at step {batch} of the run's step {self.step}")


class BatchLog(gf.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_resume(self, epoch, step, logs=None):
        self.epoch = epoch
        self.resumed = (epoch, step)

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append((self.epoch, batch, logs["loss"]))


def ragged_data():
    x, y = script.data()
    extra = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    return np.concatenate([x, extra]), np.concatenate([y, extra @ [1.0, -2.0, 0.5]]).astype(
        np.float32
    )  # 4 batches of 16 and a ragged 6


@pytest.mark.parametrize(
    ("save_every", "crash_step", "restored", "ragged", "per_call"),
    [
        (3, 11, (1, 1), False, None),  # saved after run steps 3, 6, 9 = epoch 2 step 1
        (5, 8, (0, 1), False, None),  # saved after step 5: epoch 1 step 1
        (2, 14, (1, 2), True, None),  # 5 steps an epoch: saved after step 12 = epoch 2 step 2
        (4, 9, (0, 3), True, 3),  # saved after steps 4 (before epoch 0's ragged one) and 8
        (2, 3, (None, 2), False, None),  # saved inside the first epoch
        (3, 2, (None, 0), False, None),  # crashed before the first save: starts afresh
    ],
)
def test_a_fit_crashed_mid_epoch_resumes_bitwise_from_its_step_save(
    tmp_path, save_every, crash_step, restored, ragged, per_call
):
    x, y = ragged_data() if ragged else script.data()
    kwargs = {**script.fit_kwargs()}
    directory = tmp_path / "backup"

    def trainer(init_seed):
        made = script.make_trainer(init_seed=init_seed)
        made.steps_per_execution = per_call
        return made

    reference = trainer(1)
    ref_log = BatchLog()
    ref_history = reference.fit(x, y, callbacks=[early_stopping(), ref_log], **kwargs)

    crashed = trainer(1)
    with pytest.raises(CrashError):
        crashed.fit(
            x,
            y,
            callbacks=[
                BackupAndRestore(directory, save_every=save_every),
                early_stopping(),
                CrashAtStep(crash_step),
            ],
            **kwargs,
        )

    # A fresh trainer with other initial values: a backup supplies everything.
    fresh_start = restored == (None, 0)
    assert (directory / "checkpoint").exists() != fresh_start
    resumed = trainer(1 if fresh_start else 2)
    log = BatchLog()
    seen, record = epochs_seen()
    backup = BackupAndRestore(directory, save_every=save_every)
    history = resumed.fit(x, y, callbacks=[backup, early_stopping(), log, record], **kwargs)
    last_epoch, step = restored
    assert (backup.restored_epoch, backup.restored_step) == (last_epoch, step)
    first = 0 if last_epoch is None else last_epoch + 1
    # on_epoch_begin of a partial epoch ran before its save: it gets on_epoch_resume instead.
    assert seen == list(range(first + (1 if step else 0), len(ref_history.epoch)))
    assert getattr(log, "resumed", None) == ((first, step) if step else None)
    # The resumed epoch's batch hooks start after the steps done, with the same losses.
    assert log.rows == [row for row in ref_log.rows if (row[0], row[1]) >= (first, step)]
    assert history.history == ref_history.history  # floats compared exactly
    assert_bitwise(variables(resumed), variables(reference))
    assert int(resumed.update_rule.iterations) == int(reference.update_rule.iterations)
    assert not directory.exists()


def test_a_mid_epoch_resume_under_xla_is_bitwise_too(tmp_path):
    x, y = script.data()
    kwargs = {**script.fit_kwargs(), "epochs": 3}
    directory = tmp_path / "backup"

    def trainer(init_seed):
        made = script.make_trainer(init_seed=init_seed)
        made.jit_compile = True
        return made

    reference = trainer(1)
    ref_history = reference.fit(x, y, **kwargs)  # no backup: one call per epoch
    with pytest.raises(CrashError):
        trainer(1).fit(
            x, y, callbacks=[BackupAndRestore(directory, save_every=3), CrashAtStep(8)], **kwargs
        )
    resumed = trainer(2)
    backup = BackupAndRestore(directory, save_every=3)
    history = resumed.fit(x, y, callbacks=[backup], **kwargs)
    assert (backup.restored_epoch, backup.restored_step) == (0, 2)
    assert resumed.train_function.jit_compile is True
    assert history.history == ref_history.history
    assert_bitwise(variables(resumed), variables(reference))


class StopAt(gf.Callback):
    """Asks the trainer to stop after step ``step`` of epoch ``epoch``."""

    def __init__(self, epoch, step, every_step=False):
        super().__init__()
        self.at, self.requires_every_step = (epoch, step), every_step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_resume(self, epoch, step, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.trainer.stop_training = True


@pytest.mark.parametrize(
    ("every_step", "step", "crash"),
    [
        (False, 0, lambda: CrashAtStep(8)),  # stop asked at run step 5, saved at 6, crash at 8
        (True, 1, lambda: CrashAt(1)),  # stops right after run step 6 (a save step)
    ],
    ids=["after-the-epoch", "at-once"],
)
def test_a_stop_asked_for_before_a_mid_epoch_save_still_ends_the_resumed_run(
    tmp_path, every_step, step, crash
):
    x, y = script.data()
    kwargs = {**script.fit_kwargs(), "epochs": 3}
    directory = tmp_path / "backup"
    reference = script.make_trainer(1)
    ref_history = reference.fit(x, y, callbacks=[StopAt(1, step, every_step)], **kwargs)
    assert ref_history.epoch == [0, 1]
    with pytest.raises(CrashError):
        script.make_trainer(1).fit(
            x,
            y,
            callbacks=[
                BackupAndRestore(directory, save_every=2),
                StopAt(1, step, every_step),
                crash(),
            ],
            **kwargs,
        )
    resumed = script.make_trainer(2)
    history = resumed.fit(
        x,
        y,
        callbacks=[BackupAndRestore(directory, save_every=2), StopAt(1, step, every_step)],
        **kwargs,
    )
    assert history.history == ref_history.history
    assert_bitwise(variables(resumed), variables(reference))


def test_epoch_begin_effects_are_not_applied_twice_on_a_mid_epoch_resume(tmp_path):
    x, y = script.data()
    directory = tmp_path / "backup"

    def make():
        return gf.Trainer(gf.MLP((8,), seed=1), gf.L2(), gf.Adam(0.05))

    def halve():
        return gf.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)

    kwargs = {"epochs": 3, "batch_size": 16, "seed": 0}
    reference = make()
    ref_history = reference.fit(x, y, callbacks=[halve()], **kwargs)
    with pytest.raises(CrashError):
        make().fit(
            x,
            y,
            callbacks=[BackupAndRestore(directory, save_every=3), halve(), CrashAtStep(8)],
            **kwargs,
        )
    resumed = make()
    backup = BackupAndRestore(directory, save_every=3)
    history = resumed.fit(x, y, callbacks=[backup, halve()], **kwargs)
    assert (backup.restored_epoch, backup.restored_step) == (0, 2)  # saved after run step 6
    assert history.history["lr"] == ref_history.history["lr"]  # 0.025, 0.0125, 0.00625
    assert history.history == ref_history.history
    assert_bitwise(variables(resumed), variables(reference))


def test_one_backup_per_fit(tmp_path):
    x, y = script.data()
    trainer = script.make_trainer(1)
    with pytest.raises(ValueError, match="more than one BackupAndRestore"):
        trainer.fit(
            x,
            y,
            callbacks=[BackupAndRestore(tmp_path / "a"), BackupAndRestore(tmp_path / "b")],
        )


def test_a_mid_epoch_backup_refuses_a_fit_of_another_shape(tmp_path):
    x, y = script.data()
    directory = tmp_path / "backup"
    with pytest.raises(CrashError):  # saved 3 steps into epoch 0 (4 steps of 16 an epoch)
        script.make_trainer(1).fit(
            x,
            y,
            epochs=2,
            batch_size=16,
            callbacks=[BackupAndRestore(directory, save_every=3), CrashAtStep(4)],
        )
    trainer = script.make_trainer(2)
    trainer.fit(x[:16], y[:16], epochs=1, batch_size=16)  # build the model and the rule
    before = variables(trainer)
    with pytest.raises(ValueError, match=r"3 steps into an epoch.*2 steps per epoch"):
        trainer.fit(
            x, y, epochs=2, batch_size=32, callbacks=[BackupAndRestore(directory, save_every=3)]
        )
    with pytest.raises(ValueError, match="makes batches of 20"):  # 4 steps too, other batches
        trainer.fit(
            x[:60], y[:60], epochs=2, batch_size=20, callbacks=[BackupAndRestore(directory, 3)]
        )
    with pytest.raises(ValueError, match="logs 3 values per step"):
        gf.Trainer(trainer.model, gf.L2(), trainer.update_rule, metrics=[gf.L1()]).fit(
            x, y, epochs=2, batch_size=16, callbacks=[BackupAndRestore(directory, save_every=3)]
        )
    assert_bitwise(variables(trainer), before)  # refused before anything was restored
    assert (directory / "checkpoint").exists()


def test_a_dataset_fit_resumes_mid_epoch_from_its_step_save(tmp_path):
    x, y = script.data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y[:, None])).batch(16)
    directory = tmp_path / "backup"
    reference = script.make_trainer(1)
    ref_history = reference.fit(dataset, epochs=3)
    with pytest.raises(CrashError):
        script.make_trainer(1).fit(
            dataset,
            epochs=3,
            callbacks=[BackupAndRestore(directory, save_every=3), CrashAtStep(8)],
        )
    resumed = script.make_trainer(2)
    backup = BackupAndRestore(directory, save_every=3)
    history = resumed.fit(dataset, epochs=3, callbacks=[backup])
    assert (backup.restored_epoch, backup.restored_step) == (0, 2)  # saved after step 6
    assert history.history == ref_history.history
    assert_bitwise(variables(resumed), variables(reference))


def test_a_resumed_early_stop_does_not_train_again_and_a_seed_is_overridden(tmp_path):
    x, y = script.data()
    kwargs = script.fit_kwargs()
    directory = tmp_path / "backup"
    stopper = gf.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)  # stops at epoch 1

    reference = script.make_trainer()
    ref = reference.fit(
        x, y, callbacks=[gf.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)], **kwargs
    )
    assert ref.epoch == [0, 1]

    class KillAfterSave(gf.Callback):
        def on_train_end(self, logs=None):  # the backup of epoch 1 exists: "die" now
            raise CrashError("killed before the backup was removed")

    first = script.make_trainer()
    with pytest.raises(CrashError):
        first.fit(x, y, callbacks=[KillAfterSave(), BackupAndRestore(directory), stopper], **kwargs)
    assert (directory / "checkpoint").exists()

    resumed = script.make_trainer(init_seed=3)
    seen, record = epochs_seen()
    history = resumed.fit(  # same seed again: reseeds, then the restore overrides it
        x,
        y,
        callbacks=[
            BackupAndRestore(directory),
            gf.EarlyStopping(monitor="loss", patience=0, min_delta=10.0),
            record,
        ],
        **kwargs,
    )
    assert seen == []
    assert history.epoch == [0, 1]
    assert history.history == ref.history
    assert_bitwise(variables(resumed), variables(reference))
    assert not directory.exists()


def test_a_nonfinite_error_keeps_the_backup(tmp_path):
    x, y = script.data()
    directory = tmp_path / "backup"

    def poison(epoch, logs=None):
        if epoch == 2:
            trainer.model.variables[-1].assign(
                tf.fill(trainer.model.variables[-1].shape, float("nan"))
            )

    trainer = gf.Trainer(gf.MLP((4,), seed=1), gf.L2(), gf.SGD(0.01))
    with pytest.raises(gf.NonFiniteError):
        trainer.fit(
            x,
            y,
            epochs=4,
            batch_size=32,
            seed=0,
            callbacks=[BackupAndRestore(directory), gf.LambdaCallback(on_epoch_begin=poison)],
        )
    assert (directory / "checkpoint").exists()

    fresh = gf.Trainer(gf.MLP((4,), seed=2), gf.L2(), gf.SGD(0.01))
    seen, record = epochs_seen()
    history = fresh.fit(
        x, y, epochs=4, batch_size=32, callbacks=[BackupAndRestore(directory), record]
    )
    assert seen == [2, 3]
    assert history.epoch == [0, 1, 2, 3]
    assert all(np.isfinite(v.numpy()).all() for v in fresh.model.variables)
    assert not directory.exists()


def test_mismatched_callbacks_and_bad_arguments_are_clear_errors(tmp_path):
    x, y = script.data()
    directory = tmp_path / "backup"
    trainer = gf.Trainer(gf.MLP((4,), seed=1), gf.L2(), gf.SGD(0.01))
    with pytest.raises(CrashError):
        trainer.fit(
            x,
            y,
            epochs=3,
            batch_size=32,
            callbacks=[BackupAndRestore(directory), early_stopping(), CrashAt(1)],
        )
    before = variables(trainer)
    with pytest.raises(ValueError, match="stateful callbacks"):
        trainer.fit(x, y, epochs=3, batch_size=32, callbacks=[BackupAndRestore(directory)])
    assert_bitwise(variables(trainer), before)  # checked before anything was restored
    assert (directory / "checkpoint").exists()

    assert BackupAndRestore(directory, save_every=np.int64(10)).save_every == 10
    with pytest.raises(TypeError, match="save_every"):
        BackupAndRestore(directory, save_every=True)
    with pytest.raises(TypeError, match="save_every"):
        BackupAndRestore(directory, save_every=2.5)
    with pytest.raises(ValueError, match="save_every"):
        BackupAndRestore(directory, save_every=-3)
    with pytest.raises(ValueError, match="save_every"):
        BackupAndRestore(directory, save_every="batch")
    with pytest.raises(ValueError, match="save_every"):
        BackupAndRestore(directory, save_every=0)
    with pytest.raises(TypeError, match="directory"):
        BackupAndRestore(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="directory"):
        BackupAndRestore("")


# -- SIGKILL at random moments ------------------------------------------------------------


class Server:
    """The helper script in ``--serve`` mode: each fit runs in a forked child process.

    The children are real processes, killed with SIGKILL; forking them from a
    process that has imported TensorFlow (but never run it) saves the import,
    about 3 s, per run.
    """

    def __init__(self, tmp):
        self.tmp = tmp
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self._read() == "ready"
        self.runs = 0

    def _read(self):
        line = self.process.stdout.readline()
        assert line, "the helper script's server died"
        return line.strip()

    def run(self, directory, out, *flags, init_seed=1, kill=None):
        """Runs one fit; ``kill=(target, delay)`` kills it after its target-th line.

        Returns the exit code and the lines the child printed.
        """
        self.runs += 1
        log = self.tmp / f"log{self.runs}.txt"
        command = [str(log), str(init_seed), str(directory), str(out), *flags]
        self.process.stdin.write(" ".join(command) + "\n")
        self.process.stdin.flush()
        kind, pid = self._read().split()
        assert kind == "pid"
        if kill is not None:
            target, delay = kill
            while True:  # wait for the child's target-th line (or its end)
                lines = log.read_text().splitlines() if log.exists() else []
                if len(lines) > target or "done" in lines:
                    break
                time.sleep(0.002)
            if "done" not in lines:
                time.sleep(delay)
                os.kill(int(pid), signal.SIGKILL)
        kind, code = self._read().split()
        assert kind == "exit"
        return int(code), log.read_text().splitlines()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def _load(out):
    arrays = np.load(f"{out}.npz")
    with open(f"{out}.json", encoding="utf-8") as file:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))], json.load(file)


@pytest.mark.slow
def test_runs_killed_at_random_moments_resume_bitwise(tmp_path):
    seed = int(os.environ.get("GRADFIT_KILL_SEED", "20261128"))
    rng = random.Random(seed)
    server = Server(tmp_path)
    try:
        code, lines = server.run(tmp_path / "unused", tmp_path / "reference", "--no-backup")
        assert code == 0, lines
        ref_vars, ref_history = _load(tmp_path / "reference")
        assert ref_history["epoch"] == [0, 1, 2, 3, 4]  # EarlyStopping(patience=1) ends it

        kills, finished, trial, firsts = [], 0, 0, []
        directory = tmp_path / "backup"
        # Each attempt backs up every epoch, or also every 3 or 2 steps (4 steps an epoch),
        # whatever the backup it resumes from was saved with.
        modes = [[], ["--every", "3"], ["--every", "2"]]
        while len(kills) < KILLS or (directory / "checkpoint").exists():
            # Half the runs sleep at each marker and inside the save's atomic steps.
            slow = trial % 2 == 1
            flags = [*(["--slow"] if slow else []), *modes[trial % len(modes)]]
            trial += 1
            resuming = (directory / "checkpoint").exists()
            out = tmp_path / f"out{trial}"
            kill = None
            if len(kills) < KILLS:
                kill = (rng.randrange(0, 12), rng.uniform(0, 0.12 if slow else 0.01))
            code, lines = server.run(
                directory, out, *flags, init_seed=2 if resuming else 1, kill=kill
            )
            firsts.append(lines[0] if lines else "")
            if code == -signal.SIGKILL:
                kills.append(lines)
                continue
            assert code == 0, (code, lines)
            finished += 1
            got_vars, got_history = _load(out)
            assert got_history == ref_history  # floats compare exactly
            assert_bitwise(got_vars, ref_vars)
            assert not directory.exists()  # the finished run removed its backup
            # Its CSV log, written across kills and resumes, holds one row per epoch.
            log = tmp_path / "backup.csv"
            with log.open() as file:
                rows = list(csv.reader(file))
            assert [row[0] for row in rows] == ["epoch", *map(str, ref_history["epoch"])]
            assert [float(row[1]) for row in rows[1:]] == ref_history["history"]["loss"]
            log.unlink()  # (the next run starts afresh, appending to nothing)
    finally:
        server.close()
    print(f"{len(kills)} kills, {finished} finished runs, all bitwise equal: {kills}")
    assert len(kills) >= KILLS and finished >= 1
    # Kills inside a save: the last line printed was "save e" or "save e:s" (mid-epoch).
    in_saves = [k[-1] for k in kills if k and k[-1].startswith("save")]
    assert len(in_saves) >= 3, kills
    assert any(":" in line for line in in_saves), kills
    # Killed processes that had resumed from a backup (their first line is a later epoch),
    # and runs that resumed from a mid-epoch backup.
    assert any(k and k[0] not in ("epoch 0", "save 0") for k in kills), kills
    assert any(first.startswith("resumed") for first in firsts), firsts
