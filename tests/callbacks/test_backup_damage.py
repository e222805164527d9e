"""A backup is used or refused, never ignored; a refused fit changes nothing (issue 13).

Findings 1-3 and 6 of the issue: a damaged backup (pointer, index, data,
document) is refused with a ``ValueError`` naming ``directory`` and the
damaged file, keeping every file; a resume refused for any reason leaves
the variables, the generator, the update rule (not built) and the other
callbacks' files as they were; a second run on a held directory is refused
with the holder's pid, and a killed holder's lock is taken over.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gradfit as gf
from gradfit.callbacks import BackupAndRestore, CSVLogger
from gradfit.checkpoint import backup as engine
from tests.callbacks.runs import CrashAt, CrashError, data, trainer

EPOCHS = 3


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def state(t):
    model = [v.numpy().tobytes() for v in t.model.variables]
    return model, t.generator.state.numpy().tobytes(), t.update_rule.built


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A backup of epoch 0 (the run crashed at the end of epoch 1), to damage in copies."""
    directory = tmp_path_factory.mktemp("crashed") / "backup"
    x, y = data()
    with pytest.raises(CrashError):
        trainer().fit(
            x, y, epochs=EPOCHS, batch_size=16, callbacks=[BackupAndRestore(directory), CrashAt(1)]
        )
    assert sorted(os.listdir(directory)) == [
        "backup.data-00000-of-00001",
        "backup.index",
        "checkpoint",
    ]
    return directory


def _flip_bytes(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw), 5):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _bad_document(directory: Path, text: str = '{"format": 2, "epoch": 0, "call') -> None:
    """Rewrites the backup with a document ``text`` (not JSON, as a bit flip in it makes it)."""
    t = trainer()
    x, y = data()
    t.fit(x, y, epochs=1, batch_size=16)  # (built like the crashed run's)
    store = engine.BackupStore(str(directory), t.checkpoint_items())
    real = json.dumps
    try:
        engine.json.dumps = lambda *a, **k: text  # type: ignore
        store.write({})
    finally:
        engine.json.dumps = real


GOOD_DOCUMENT = {
    "format": 2, "epoch": 0, "steps_done": 4, "stop_training": False, "nonfinite_run": 0,
    "history": {"loss": [1.0]}, "history_epochs": [0], "callbacks": [],
}  # fmt: skip


def _document_without(key: str):
    return lambda d: _bad_document(
        d, json.dumps({k: v for k, v in GOOD_DOCUMENT.items() if k != key})
    )


def _document_with(key: str, value):
    return lambda d: _bad_document(d, json.dumps({**GOOD_DOCUMENT, key: value}))


DATA = "backup.data-00000-of-00001"
DAMAGES = {
    "pointer removed": (
        "checkpoint",
        "pointer file is missing",
        lambda d: (d / "checkpoint").unlink(),
    ),
    "pointer empty": (
        "checkpoint",
        "names no checkpoint",
        lambda d: (d / "checkpoint").write_text(""),
    ),
    "pointer garbled": (
        "checkpoint",
        "names no checkpoint",
        lambda d: (d / "checkpoint").write_text("model_checkpoint_path: backup\n\x00\x01"),
    ),
    "pointer names a missing checkpoint": (
        "elsewhere.index",
        "index the pointer names is missing",
        lambda d: (d / "checkpoint").write_text('model_checkpoint_path: "elsewhere"\n'),
    ),
    "index removed": (
        "backup.index",
        "index the pointer names",
        lambda d: (d / "backup.index").unlink(),
    ),
    "index empty": (
        "backup.index",
        "index cannot be read",
        lambda d: (d / "backup.index").write_bytes(b""),
    ),
    "data removed": (DATA, "data file is missing", lambda d: (d / DATA).unlink()),
    "data empty": (DATA, "data cannot be read", lambda d: (d / DATA).write_bytes(b"")),
    "data truncated": (
        DATA,
        "data cannot be read",
        lambda d: (d / DATA).write_bytes((d / DATA).read_bytes()[:40]),
    ),
    "data corrupt": (DATA, "data cannot be read", lambda d: _flip_bytes(d / DATA)),
    "document not JSON": ("backup", "JSON document does not parse", _bad_document),
    "document without a field": (
        "backup",
        "lacks ['nonfinite_run']",
        _document_without("nonfinite_run"),
    ),
    "document with a field of another type": (
        "backup",
        "'epoch' is 'one'",
        _document_with("epoch", "one"),
    ),
    "pointer naming another directory's backup": (
        "checkpoint",
        "outside the directory",
        lambda d: (d / "checkpoint").write_text('model_checkpoint_path: "../other/backup"\n'),
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_backup_is_refused_naming_the_file_and_nothing_changes(crashed, tmp_path, damage):
    file, message, apply = DAMAGES[damage]
    directory = tmp_path / "backup"
    shutil.copytree(crashed, directory)
    apply(directory)
    files = snapshot(directory)
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n0,1.5\n")
    t = trainer(seed=2)
    before = state(t)
    x, y = data()
    with pytest.raises(ValueError, match="damaged") as info:
        t.fit(
            x,
            y,
            epochs=EPOCHS,
            batch_size=16,
            seed=7,
            callbacks=[CSVLogger(log, append=False), BackupAndRestore(directory)],
        )
    text = str(info.value)
    assert message in text and "`directory`" in text and str(directory) in text
    assert repr(str(directory / file)) in text  # the damaged file, by its path
    assert "delete the directory" in text  # how to start over deliberately
    assert snapshot(directory) == files  # every file kept, none changed or added
    assert log.read_text() == "epoch,loss\n0,1.5\n"  # the CSV file was not truncated
    assert state(t) == before  # variables, generator, and the rule is not built


def test_a_refused_resume_changes_no_file_no_seed_and_builds_no_rule(tmp_path):
    """Finding 2: a backup of another model, with a CSVLogger listed first."""
    directory, log = tmp_path / "backup", tmp_path / "log.csv"
    x, y = data()
    with pytest.raises(CrashError):
        trainer().fit(
            x,
            y,
            epochs=EPOCHS,
            batch_size=16,
            callbacks=[CSVLogger(log), BackupAndRestore(directory), CrashAt(1)],
        )
    files = snapshot(directory)
    log.write_text("epoch,loss\n0,1.5\n")
    t = trainer(seed=2, width=5)  # another hidden width than the backup's
    before = state(t)
    with pytest.raises(ValueError, match="does not match") as info:
        t.fit(
            x,
            y,
            epochs=EPOCHS,
            batch_size=16,
            seed=7,
            callbacks=[CSVLogger(log), BackupAndRestore(directory)],
        )
    assert "`directory`" in str(info.value) and "`path`" not in str(info.value)  # finding 3
    assert log.read_text() == "epoch,loss\n0,1.5\n"
    assert state(t) == before and not t.update_rule.built
    assert snapshot(directory) == files
    # The same trainer, given a directory of its own, then trains as if nothing happened.
    fresh = trainer(seed=2, width=5)
    fresh.fit(x, y, epochs=1, batch_size=16, seed=7)
    t.fit(x, y, epochs=1, batch_size=16, seed=7)
    assert [v.numpy().tobytes() for v in t.model.variables] == [
        v.numpy().tobytes() for v in fresh.model.variables
    ]


def test_an_undamaged_backup_still_resumes_after_the_checks(crashed, tmp_path):
    directory = tmp_path / "backup"
    shutil.copytree(crashed, directory)
    x, y = data()
    backup = BackupAndRestore(directory)
    history = trainer(seed=5).fit(x, y, epochs=EPOCHS, batch_size=16, callbacks=[backup])
    assert backup.restored_epoch == 0 and history.epoch == [0, 1, 2]
    assert not directory.exists()  # a finished run removes its backup (and the lock file)


def test_an_interrupted_removal_reads_as_no_backup_until_a_new_run_saves(crashed, tmp_path):
    """A finished run renames the pointer first; killed then, its leftovers are no backup."""
    directory = tmp_path / "backup"
    shutil.copytree(crashed, directory)
    os.replace(directory / "checkpoint", directory / engine.TOMBSTONE)
    x, y = data()
    backup = BackupAndRestore(directory)
    with pytest.raises(CrashError):  # a new run's backups, beside the tombstone, are used
        trainer(seed=5).fit(x, y, epochs=EPOCHS, batch_size=16, callbacks=[backup, CrashAt(2)])
    assert backup.restored_epoch is None
    backup = BackupAndRestore(directory)
    history = trainer(seed=6).fit(x, y, epochs=EPOCHS, batch_size=16, callbacks=[backup])
    assert backup.restored_epoch == 1 and history.epoch == [0, 1, 2]


HOLDER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import gradfit as gf

    class Hold(gf.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # epoch 0 is backed up
                print("holding", flush=True)
                time.sleep(120)

    x = np.zeros((8, 3), np.float32)
    y = np.zeros((8, 1), np.float32)
    trainer = gf.Trainer(gf.MLP((4,), seed=1), gf.L2(), gf.Adam(0.01))
    trainer.fit(x, y, epochs=2, callbacks=[gf.callbacks.BackupAndRestore(sys.argv[1]), Hold()])
    """
)


def test_a_second_run_on_a_held_directory_is_refused_and_a_killed_holders_lock_is_taken(
    tmp_path,
):
    directory = tmp_path / "backup"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "holding"  # inside its fit, lock held
        x, y = np.zeros((8, 3), np.float32), np.zeros((8, 1), np.float32)
        t = gf.Trainer(gf.MLP((4,), seed=1), gf.L2(), gf.Adam(0.01))
        with pytest.raises(ValueError, match="in use by another run") as info:
            t.fit(x, y, epochs=2, callbacks=[BackupAndRestore(directory)])
        assert f"pid {child.pid}" in str(info.value) and str(directory) in str(info.value)
        assert not t.update_rule.built
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        # The killed holder's lock went with it: this run takes the directory over and
        # resumes the backup it left (epoch 0 done).
        backup = BackupAndRestore(directory)
        t.fit(x, y, epochs=2, callbacks=[backup])
        assert backup.restored_epoch == 0
        assert not directory.exists()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
