"""MultiWorkerMirroredStrategy, 2 processes on loopback: one process's result, chief-only files,
a killed or hung worker reported in bounded time, and reruns that resume from the chief's backup.

One chain of three jobs of ``_worker_script.py`` (see it for the fit) shares
one backup directory and one CSV log:

1. a job without a seed (its workers must agree on the chief's shuffling
   state) whose worker 1 is SIGKILLed 2 steps into epoch 2;
2. its rerun, which resumes from the chief's backup, and whose worker 1 is
   SIGSTOPped (hung: alive, silent) 2 steps into epoch 3 -- the script's
   coordination heartbeat of 3 s (``gf.distribute.multi_worker_strategy(
   heartbeat_timeout=3)``) bounds how long worker 0 waits for it;
3. the rerun of that, which resumes again and finishes;

and, in this process, one uninterrupted process from the same shuffling
state, which every job's epoch logs and the last job's result must equal.
Each stage's failure is recorded, not raised, so that only its own tests fail.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.distribute import _worker_script as worker_script
from tests.distribute.runner import Job

pytestmark = pytest.mark.xdist_group("distribute-multi-worker")

TOLERANCE = 1e-5
SCRIPT = "_worker_script.py"
STARTED = 120.0  # seconds a job's workers get to import TensorFlow and reach a step
STOPPED = 60.0  # seconds worker 0 gets to stop once worker 1 is lost (the bound tested is 30)
FINISHED = 180.0  # seconds a whole job gets to finish


def largest(a: list[Any], b: list[Any]) -> float:
    pairs = zip(a, b, strict=True)
    return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in pairs)


def generator_state(lines: list[str]) -> list[int]:
    return json.loads(next(line for line in lines if line.startswith("generator "))[10:])


def first_step(lines: list[str]) -> str:
    """The first ``epoch:step`` a worker printed (where a rerun resumed)."""
    return next(line for line in lines if line.startswith("step "))[5:]


def epoch_logs(lines: list[str]) -> dict[int, dict[str, float]]:
    """The logs of every epoch a worker finished, by epoch."""
    found = {}
    for line in lines:
        if line.startswith("epoch "):
            epoch, logs = line[6:].split(" ", 1)
            found[int(epoch)] = json.loads(logs)
    return found


def job_args(root: Path, name: str) -> tuple[str, str, str]:
    """``OUT BACKUP CSV`` for job ``name``: every job shares the backup and the CSV log."""
    return str(root / f"{name}{{worker}}.json"), str(root / "backup"), str(root / "log{worker}.csv")


def interrupted(root: Path, name: str, how: signal.Signals, hold: str, *args: str) -> dict:
    """A job whose worker 1 gets ``how`` while it pauses after step ``hold``: how worker 0 ends.

    Worker 1 (killed, or stopped) is killed when the job's context exits.
    """
    with Job(SCRIPT, *job_args(root, name), "--pause", "0.5", "--hold", hold, *args) as job:
        zero, one = job.processes
        try:
            seen = job.read_until(1, f"step {hold}", timeout=STARTED)
        except TimeoutError as error:
            return {"error": str(error)}
        one.send_signal(how)
        sent = time.monotonic()
        try:
            out, err = zero.communicate(timeout=STOPPED)
        except subprocess.TimeoutExpired:
            return {"error": f"worker 0 still ran {STOPPED} s after worker 1 got {how.name}"}
        found = {"detected_after": time.monotonic() - sent, "code": zero.returncode}
    found |= {"stderr": err[-3000:], "lines": out.splitlines(), "seen": seen}
    out0 = root / f"{name}0.json"
    found["result"] = json.loads(out0.read_text()) if out0.exists() else {}
    backup = root / "backup"
    found["backup_files"] = sorted(p.name for p in backup.iterdir()) if backup.exists() else []
    return found


def finished(root: Path, name: str) -> dict:
    """A job left to finish: every worker's exit status, stderr, output lines and result."""
    with Job(SCRIPT, *job_args(root, name)) as job:
        try:
            outputs = job.wait(timeout=FINISHED)
        except subprocess.TimeoutExpired:
            return {"error": f"the job did not finish in {FINISHED} s"}
    return {
        "codes": [(code, err[-3000:]) for code, _, err in outputs],
        "lines": [out.splitlines() for _, out, _ in outputs],
        "results": [json.loads((root / f"{name}{i}.json").read_text()) for i in range(2)],
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Runs the three jobs and the reference once; what each left behind."""
    root = tmp_path_factory.mktemp("multi_worker")
    began = time.monotonic()
    killed = interrupted(root, "killed", signal.SIGKILL, "2:1", "--no-seed")
    hung = interrupted(root, "hung", signal.SIGSTOP, "3:1")
    rerun = finished(root, "rerun")
    seconds = time.monotonic() - began
    reference = None
    if "error" not in killed:
        generator = generator_state(killed["lines"])
        args = (str(root / "ref_backup"), str(root / "ref.csv"))
        reference = worker_script.run(None, *args, seed=None, generator=generator)
    detected = {k: j.get("detected_after") for k, j in (("killed", killed), ("hung", hung))}
    print({"seconds": seconds, "detected_after": detected}, file=sys.stderr)
    return {"root": root, "killed": killed, "hung": hung, "rerun": rerun, "reference": reference}


def stage(runs: dict[str, Any], name: str) -> dict[str, Any]:
    """Stage ``name``'s record (the test fails with its error if it did not run through)."""
    found = runs[name]
    assert "error" not in found, found["error"]
    return found


def reference(runs: dict[str, Any]) -> dict[str, Any]:
    assert runs["reference"] is not None, "no reference: the first job failed"
    return runs["reference"]


def check_lost(found: dict[str, Any]) -> None:
    """Worker 0 stopped with the script's exit for a WorkerLostError naming worker 1, in time."""
    assert found["code"] == 3, found["stderr"]
    assert "lost" in found["result"], found["result"]
    lost = found["result"]["lost"]
    assert lost["worker"] == "worker 1", lost
    assert "worker 1" in lost["message"] and "rerun the whole job" in lost["message"], lost
    assert found["detected_after"] < 30


def check_epochs(lines: list[str], reference: dict[str, Any]) -> list[int]:
    """The epochs the worker finished (returned), each with the uninterrupted run's logs."""
    logs = epoch_logs(lines)
    for epoch, values in logs.items():
        for name, value in values.items():
            assert abs(value - reference["history"][name][epoch]) < TOLERANCE, (epoch, name)
    return sorted(logs)


def test_workers_agree_on_the_chiefs_order_without_a_seed(runs: dict[str, Any]) -> None:
    killed = stage(runs, "killed")
    assert generator_state(killed["lines"]) == generator_state(killed["seen"])


def test_a_killed_worker_stops_the_other_with_a_gradfit_error(runs: dict[str, Any]) -> None:
    check_lost(stage(runs, "killed"))


def test_the_backup_survives_the_loss(runs: dict[str, Any]) -> None:
    killed = stage(runs, "killed")
    assert len(killed["backup_files"]) > 1  # the chief's last backup (and its lock file)
    assert check_epochs(killed["lines"], reference(runs)) == [0, 1]  # killed in epoch 2


def test_a_rerun_after_a_kill_resumes_from_the_backup(runs: dict[str, Any]) -> None:
    hung = stage(runs, "hung")
    assert first_step(hung["lines"]).startswith("2:"), hung["lines"]  # inside the killed epoch
    epochs = check_epochs(hung["lines"], reference(runs))  # each as if never interrupted
    assert epochs[:1] == [2], hung["lines"]  # the killed epoch, finished this time


def test_a_hung_worker_stops_the_other_with_a_gradfit_error(runs: dict[str, Any]) -> None:
    check_lost(stage(runs, "hung"))


def test_the_backup_survives_a_hung_worker(runs: dict[str, Any]) -> None:
    assert len(stage(runs, "hung")["backup_files"]) > 1


def test_a_rerun_resumes_to_the_uninterrupted_result(runs: dict[str, Any]) -> None:
    rerun = stage(runs, "rerun")
    assert [code for code, _ in rerun["codes"]] == [0, 0], rerun["codes"]
    goal = reference(runs)
    zero, one = rerun["results"]
    assert (zero["chief"], one["chief"]) == (True, False)
    assert first_step(rerun["lines"][0]).startswith("3:")  # inside the epoch of the hang
    assert largest(goal["variables"], zero["variables"]) < TOLERANCE
    assert zero["variables"] == one["variables"]
    for name, values in goal["history"].items():
        assert largest([values], [zero["history"][name]]) < TOLERANCE, name


def test_only_the_chief_writes_files(runs: dict[str, Any]) -> None:
    stage(runs, "rerun")
    reference(runs)
    root = runs["root"]
    assert not (root / "log1.csv").exists()
    # The whole trainer's ModelCheckpoint (its Keras metric's state read across the workers):
    assert (root / "log0-trainer.index").exists()
    assert not list(root.glob("log1-trainer*"))
    rows = (root / "log0.csv").read_text().splitlines()
    expected = (root / "ref.csv").read_text().splitlines()
    assert rows[0] == expected[0] and len(rows) == len(expected) == 5  # a header, 4 epochs
    assert not (root / "backup").exists()  # the chief removed its backup when the job ended
