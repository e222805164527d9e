"""MultiWorkerMirroredStrategy, 2 processes on loopback: one process's result, chief-only files,
a lost worker reported in bounded time, and a rerun that resumes from the chief's backup.

Three runs of ``_worker_script.py`` (see it for the fit): a job without a
seed (its workers must agree on the chief's shuffling state) whose worker 1
is SIGKILLed in its third epoch; the job's rerun, which resumes from the
chief's backup; and, in this process, one uninterrupted process from the
same shuffling state, which the rerun must end equal to.
"""

from __future__ import annotations

import json
import signal
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


def largest(a: list[Any], b: list[Any]) -> float:
    pairs = zip(a, b, strict=True)
    return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in pairs)


def generator_state(lines: list[str]) -> list[int]:
    return json.loads(next(line for line in lines if line.startswith("generator "))[10:])


def killed_job(root: Path, found: dict[str, Any]) -> None:
    """Worker 1 is SIGKILLed 2 steps into epoch 2 (of 4): how worker 0 stops."""
    args = (str(root / "killed{worker}.json"), str(root / "backup"), str(root / "log{worker}.csv"))
    with Job("_worker_script.py", *args, "--no-seed", "--pause", "0.25") as job:
        first, second = job.processes
        seen = []
        for line in second.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if line.strip() == "step 2:1":
                break
        second.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        out, err = first.communicate(timeout=60)
        found["detected_after"] = time.monotonic() - killed
        found["survivor"] = (first.returncode, err[-3000:])
        found["states"] = [generator_state(out.splitlines()), generator_state(seen)]
    found["killed"] = json.loads((root / "killed0.json").read_text())
    found["backup_files"] = sorted(p.name for p in (root / "backup").iterdir())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Runs the job, its rerun and the reference once; what each left behind."""
    root = tmp_path_factory.mktemp("multi_worker")
    found: dict[str, Any] = {"root": root}
    began = time.monotonic()
    killed_job(root, found)
    args = (str(root / "rerun{worker}.json"), str(root / "backup"), str(root / "log{worker}.csv"))
    with Job("_worker_script.py", *args) as job:
        found["rerun_codes"] = [(code, err[-3000:]) for code, _, err in job.wait(timeout=180)]
    found["rerun"] = [json.loads((root / f"rerun{i}.json").read_text()) for i in range(2)]
    found["seconds"] = time.monotonic() - began
    found["reference"] = worker_script.run(
        None,
        str(root / "ref_backup"),
        str(root / "ref.csv"),
        seed=None,
        generator=found["states"][0],
    )
    print({k: found[k] for k in ("seconds", "detected_after")}, file=sys.stderr)
    return found


def test_workers_agree_on_the_chiefs_order_without_a_seed(runs: dict[str, Any]) -> None:
    zero, one = runs["states"]
    assert zero == one  # the chief's shuffling state on both


def test_a_killed_worker_stops_the_other_with_a_gradfit_error(runs: dict[str, Any]) -> None:
    code, err = runs["survivor"]
    assert code == 3, err  # the script's exit for a WorkerLostError
    lost = runs["killed"]["lost"]
    assert lost["worker"] == "worker 1"
    assert "worker 1" in lost["message"] and "rerun the whole job" in lost["message"]
    assert runs["detected_after"] < 30


def test_the_backup_survives_the_loss(runs: dict[str, Any]) -> None:
    assert len(runs["backup_files"]) > 1  # the chief's last backup (and its lock file)


def test_a_rerun_resumes_to_the_uninterrupted_result(runs: dict[str, Any]) -> None:
    assert [code for code, _ in runs["rerun_codes"]] == [0, 0], runs["rerun_codes"]
    reference = runs["reference"]
    zero, one = runs["rerun"]
    assert (zero["chief"], one["chief"]) == (True, False)
    assert largest(reference["variables"], zero["variables"]) < TOLERANCE
    assert zero["variables"] == one["variables"]
    for name, values in reference["history"].items():
        assert largest([values], [zero["history"][name]]) < TOLERANCE, name


def test_only_the_chief_writes_files(runs: dict[str, Any]) -> None:
    root = runs["root"]
    assert not (root / "log1.csv").exists()
    rows = (root / "log0.csv").read_text().splitlines()
    reference = (root / "ref.csv").read_text().splitlines()
    assert rows[0] == reference[0] and len(rows) == len(reference) == 5  # a header, 4 epochs
    assert not (root / "backup").exists()  # the chief removed its backup when the job ended
