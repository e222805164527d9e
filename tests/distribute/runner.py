"""Runs distribution scripts in fresh processes (their devices configured before TF starts).

:func:`run_json` runs one script and returns the JSON object it prints
last; :class:`Job` runs the processes of a multi-worker job on loopback.
Every child has a hard timeout and is killed when it is not needed any more.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SRC = HERE.parent.parent / "src"


def environment(**extra: str) -> dict[str, str]:
    """The child's environment: this checkout's gradfit first, TensorFlow quiet."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("TF_CONFIG", None)
    return {**env, **extra}


def run_json(script: str, *args: str, timeout: float) -> dict[str, Any]:
    """Runs ``tests/distribute/<script> args`` and returns the JSON object on its last line.

    The child is killed if it outlives ``timeout`` seconds (then the test fails).
    """
    child = subprocess.Popen(
        [sys.executable, str(HERE / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        out, err = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    lines = out.strip().splitlines()
    assert child.returncode == 0 and lines, f"{script} {args} failed:\n{err[-4000:]}"
    return json.loads(lines[-1])


class Job:
    """The processes of a multi-worker job on loopback, each ``script args`` (``{worker}``-able).

    Use as a context manager: every process still running at its exit is killed.
    """

    def __init__(self, script: str, *args: str, workers: int = 2) -> None:
        from gradfit.distribute.cluster import local_tf_configs

        self.processes = [
            subprocess.Popen(
                [sys.executable, str(HERE / script), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment(TF_CONFIG=config),
            )
            for config in local_tf_configs(workers)
        ]

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()

    def wait(self, timeout: float) -> list[tuple[int, str, str]]:
        """Every process's ``(returncode, stdout, stderr)``, waiting at most ``timeout`` s each."""
        outputs = [p.communicate(timeout=timeout) for p in self.processes]
        return [
            (p.returncode, out, err) for p, (out, err) in zip(self.processes, outputs, strict=True)
        ]

    def read_until(self, worker: int, line: str, timeout: float) -> list[str]:
        """Worker ``worker``'s stdout lines up to the first that is ``line``, read from now.

        Reads at most ``timeout`` seconds; raises ``TimeoutError`` (with the lines
        seen) if ``line`` did not come by then, or the worker ended without it.
        The lines are read by a helper thread, which ends when the worker's
        stdout closes (at the latest when the job's context exits and kills it).
        """
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = self.processes[worker].stdout
        assert stdout is not None

        def pump() -> None:
            for text in stdout:
                lines.put(text.strip())
                if text.strip() == line:
                    return
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        seen: list[str] = []
        end = time.monotonic() + timeout
        while not seen or seen[-1] != line:
            try:
                text = lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                text = None
            if text is None:
                raise TimeoutError(f"worker {worker} never printed {line!r}; it printed {seen}")
            seen.append(text)
        return seen
