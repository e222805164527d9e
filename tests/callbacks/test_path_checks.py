"""Every path a callback or ``save`` writes is checked before the first step (issue 13, 4/5/7).

Finding 5: bad paths are refused with a ``ValueError`` naming the argument
before any variable changes or any epoch runs. Finding 7: a full disk
during a backup is a :class:`gradfit.WriteError` and the previous backup
still resumes bitwise. Finding 4: ``CSVLogger(append=True)`` keeps one row
per epoch across a resume. Read-only and full file systems are real tmpfs
mounts where this process may mount them, and simulated otherwise.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import tensorflow as tf

import gradfit as gf
from gradfit.callbacks import BackupAndRestore, CSVLogger, ModelCheckpoint, TensorBoard
from gradfit.checkpoint import io as checkpoint_io
from tests.callbacks.runs import CrashAt, CrashError, data, trainer


def values(t):
    return [v.numpy().tobytes() for v in [*t.model.variables, *t.update_rule.variables]]


class Epochs(gf.Callback):
    def __init__(self):
        super().__init__()
        self.begun = []

    def on_epoch_begin(self, epoch, logs=None):
        self.begun.append(epoch)


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, read_only: bool = False):
    """A real tmpfs at ``where`` (``None`` if this process may not mount one)."""
    where.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = (
        shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield where if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A directory on a read-only file system: a real ro tmpfs, or ST_RDONLY simulated."""
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as mounted:
        if mounted is not None:
            yield mounted
            return
        real = os.statvfs
        target = str(tmp_path / "ro")

        class Flags:
            def __init__(self, result):
                self._result = result
                self.f_flag = result.f_flag | os.ST_RDONLY

            def __getattr__(self, name):
                return getattr(self._result, name)

        monkeypatch.setattr(
            os, "statvfs", lambda p: Flags(real(p)) if str(p).startswith(target) else real(p)
        )
        yield tmp_path / "ro"


def _bad_paths(tmp_path: Path, read_only: Path) -> dict[str, tuple[object, str]]:
    (tmp_path / "ck1").mkdir()  # where epoch 1's checkpoint files would go
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    binary = tmp_path / "log.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    return {
        "backup on a file": (BackupAndRestore(a_file), "`directory`"),
        "backup under a file": (BackupAndRestore(a_file / "backup"), "`directory`"),
        "backup on a read-only file system": (BackupAndRestore(read_only / "b"), "read-only"),
        "checkpoint name too long": (ModelCheckpoint(str(tmp_path / "c-{epoch:>1000}")), "`path`"),
        "checkpoint under a file": (ModelCheckpoint(str(a_file / "ckpt")), "`path`"),
        "checkpoint of a later epoch on a directory": (
            ModelCheckpoint(str(tmp_path / "ck{epoch}"), monitor="loss"),
            "`path`",
        ),
        "checkpoint on a read-only file system": (ModelCheckpoint(str(read_only / "c")), "`path`"),
        "tensorboard on a file": (TensorBoard(a_file), "`log_dir`"),
        "tensorboard run on a file": (TensorBoard(tmp_path), "`log_dir`"),
        "tensorboard on a read-only file system": (TensorBoard(read_only / "tb"), "`log_dir`"),
        "csv on a directory": (CSVLogger(tmp_path), "`path`"),
        "csv append to a binary file": (CSVLogger(binary, append=True), "`path`"),
        "csv on a read-only file system": (CSVLogger(read_only / "log.csv"), "`path`"),
    }


def test_bad_paths_are_refused_before_the_first_step_and_change_nothing(tmp_path, read_only_dir):
    (tmp_path / "train").write_text("a file where TensorBoard's run directory goes")
    x, y = data()
    cases = _bad_paths(tmp_path, read_only_dir)
    for name, (callback, argument) in cases.items():
        log = tmp_path / "first.csv"
        log.write_text("epoch,loss\n0,1.0\n")
        listing = sorted(p.name for p in tmp_path.iterdir())
        t, epochs = trainer(), Epochs()
        before = values(t)
        with pytest.raises(ValueError) as info:
            t.fit(
                x, y, epochs=2, batch_size=16, seed=3, callbacks=[CSVLogger(log), epochs, callback]
            )
        assert argument in str(info.value), (name, str(info.value))
        assert epochs.begun == [] and values(t) == before and not t.update_rule.built, name
        assert log.read_text() == "epoch,loss\n0,1.0\n", name  # an earlier callback's file
        assert sorted(p.name for p in tmp_path.iterdir()) == listing, name


def test_a_refused_fit_leaves_no_directory_and_the_trainers_state(tmp_path):
    x, y = data()
    t = trainer()
    t.fit(x, y, epochs=2, batch_size=16)
    state = vars(t.state).copy()
    with pytest.raises(ValueError, match="`path`"):
        t.fit(
            x, y, epochs=1, batch_size=8,
            callbacks=[BackupAndRestore(tmp_path / "new" / "a" / "b"), CSVLogger(tmp_path)],
        )  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == []  # no directory made for the backup left behind
    assert vars(t.state) == state


def test_a_csv_row_cut_short_is_dropped_when_the_file_is_continued(tmp_path):
    """A crash (or a full disk) in the middle of a row: the resumed file has whole rows."""
    x, y = data()
    log, directory = tmp_path / "log.csv", tmp_path / "backup"
    callbacks = functools.partial(logged_and_backed_up, log, directory)
    with pytest.raises(CrashError):
        trainer().fit(x, y, epochs=14, batch_size=32, seed=0, callbacks=callbacks(CrashAt(12)))
    text = log.read_text()
    log.write_text(text[: text.rindex("\n12,") + 2])  # "...\n1": epoch 12's row, cut short
    trainer(seed=9).fit(x, y, epochs=14, batch_size=32, seed=0, callbacks=callbacks())
    with log.open() as file:
        assert [row[0] for row in csv.reader(file)] == ["epoch", *map(str, range(14))]


def test_trainer_save_checks_its_path_first(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    t = trainer()
    with pytest.raises(ValueError, match="`path`"):
        t.save(a_file / "ckpt")
    with pytest.raises(ValueError, match="limit"):
        t.save(tmp_path / ("c" * 300))


def logged_and_backed_up(log, directory, *extra):
    """A CSVLogger continuing ``log``, ``extra`` callbacks, a BackupAndRestore of ``directory``."""
    return [CSVLogger(log, append=True), *extra, BackupAndRestore(directory)]


def test_csv_append_keeps_one_row_per_epoch_across_a_resume(tmp_path):
    """Finding 4: the row of epoch 2 was written, then the run died before its backup."""
    x, y = data()
    log, directory = tmp_path / "log.csv", tmp_path / "backup"
    callbacks = functools.partial(logged_and_backed_up, log, directory)
    with pytest.raises(CrashError):
        trainer().fit(x, y, epochs=5, batch_size=16, seed=0, callbacks=callbacks(CrashAt(2)))
    with log.open() as file:
        assert [row[0] for row in csv.reader(file)] == ["epoch", "0", "1", "2"]
    history = trainer(seed=9).fit(x, y, epochs=5, batch_size=16, seed=0, callbacks=callbacks())
    with log.open() as file:
        rows = list(csv.reader(file))
    assert [row[0] for row in rows] == ["epoch", "0", "1", "2", "3", "4"]
    assert [float(row[1]) for row in rows[1:]] == history.history["loss"]
    clean = tmp_path / "clean.csv"
    trainer().fit(x, y, epochs=5, batch_size=16, seed=0, callbacks=[CSVLogger(clean)])
    assert log.read_text() == clean.read_text()  # the uninterrupted run's file, exactly


def _full_disk_run(directory: Path, x, y, fill) -> None:
    """Backs up epoch 0, then fills the disk (``fill``) so epoch 1's backup cannot be written."""

    class Fill(gf.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                fill()

    t = trainer(width=64)
    with pytest.raises(gf.WriteError) as info:
        t.fit(
            x, y, epochs=3, batch_size=16, seed=0, callbacks=[Fill(), BackupAndRestore(directory)]
        )
    assert info.value.errno == errno.ENOSPC and "`directory`" in str(info.value)
    assert "last complete backup in it is intact" in str(info.value)
    # No half-written copy is left, but the complete one the pointer may name (a failure
    # while the files were moved into place, when the pointer named the new copy).
    latest = os.path.basename(checkpoint_io.read_pointer(str(directory)) or "")
    leftovers = [n for n in os.listdir(directory) if "gradfit-tmp" in n]
    assert all(n.startswith(latest + ".") for n in leftovers), (latest, leftovers)


def _resumes_bitwise(directory: Path, tmp_path: Path, x, y, epoch: int = 0) -> None:
    copy = tmp_path / "resume"
    shutil.copytree(directory, copy, ignore=shutil.ignore_patterns(".gradfit-lock"))
    resumed, backup = trainer(seed=5, width=64), BackupAndRestore(copy)
    resumed.fit(x, y, epochs=3, batch_size=16, seed=0, callbacks=[backup])
    assert backup.restored_epoch == epoch
    clean = trainer(width=64)
    clean.fit(x, y, epochs=3, batch_size=16, seed=0)
    assert values(resumed) == values(clean)


def test_a_full_disk_during_a_backup_is_a_write_error_and_the_previous_backup_resumes(
    tmp_path, monkeypatch
):
    """Finding 7, on a real 1 MiB tmpfs filled up after epoch 0's backup.

    Where this process may not mount one, TensorFlow's checkpoint write is
    made to fail with ENOSPC instead (as in the next test).
    """
    x, y = data()
    with tmpfs(tmp_path / "disk", "1m") as disk:
        root = disk if disk is not None else tmp_path / "disk"

        def fill():
            if disk is None:
                monkeypatch.setattr(tf.train.Checkpoint, "write", _no_space)
                return
            with contextlib.suppress(OSError), (disk / "ballast").open("wb") as file:
                while True:
                    file.write(b"\0" * 65536)
                    file.flush()

        _full_disk_run(root / "backup", x, y, fill)
        monkeypatch.undo()
        if disk is not None:
            (disk / "ballast").unlink()
        _resumes_bitwise(root / "backup", tmp_path, x, y)


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("phase", ["write", "_place", "_write_state"])
def test_a_simulated_full_disk_in_every_phase_of_a_save_keeps_the_previous_backup(
    tmp_path, monkeypatch, phase
):
    """ENOSPC raised by the data write, the moves into place or the pointer's write."""
    x, y = data()
    owner, name = (tf.train.Checkpoint, "write") if phase == "write" else (checkpoint_io, phase)
    real, full = getattr(owner, name), [False]

    def maybe_full(*args, **kwargs):
        if full[0]:
            _no_space()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, maybe_full)
    _full_disk_run(tmp_path / "backup", x, y, lambda: full.__setitem__(0, True))
    monkeypatch.undo()
    # Moving the files into place failed after the pointer named the new, complete copy.
    _resumes_bitwise(tmp_path / "backup", tmp_path, x, y, epoch=1 if phase == "_place" else 0)
