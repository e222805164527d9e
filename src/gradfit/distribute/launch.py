"""``python -m gradfit.distribute.launch --workers N script.py [args]``: a local multi-worker job.

Starts ``N`` processes of ``python script.py args``, each with the
``TF_CONFIG`` of one worker of a job on loopback ports chosen now (worker 0
is the chief; :func:`gradfit.distribute.cluster.local_tf_configs`), prints
every line they write prefixed with ``[worker i]``, and, as soon as one
fails, stops the others (SIGTERM, then SIGKILL after a grace period). It
exits with the first failing worker's status, or 0 when every worker
succeeds. In the script, ``gf.distribute.multi_worker_strategy()`` reads
the ``TF_CONFIG``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

from gradfit.distribute.cluster import local_tf_configs

GRACE_SECONDS = 5.0
"""How long a stopped worker gets between SIGTERM and SIGKILL."""

_POLL_SECONDS = 0.05


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gradfit.distribute.launch",
        description="Run a script as N local workers of a MultiWorkerMirroredStrategy job.",
    )
    parser.add_argument("--workers", type=int, required=True, help="number of worker processes")
    parser.add_argument("script", help="the script every worker runs")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    options = parser.parse_args(argv)
    if options.workers < 1:
        parser.error(f"--workers must be a positive integer. Received: --workers {options.workers}")
    if not os.path.isfile(options.script):
        parser.error(f"script must be an existing file. Received: script={options.script!r}")
    return options


def _relay(index: int, stream: IO[str], lock: threading.Lock) -> None:
    """Copies a worker's output to ours, each line prefixed with its index."""
    for line in stream:
        with lock:
            sys.stdout.write(f"[worker {index}] {line}")
            sys.stdout.flush()


def _stop(processes: Sequence[subprocess.Popen[str]]) -> None:
    """Stops every process still running: SIGTERM, then SIGKILL after the grace period."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _first_failure(processes: Sequence[subprocess.Popen[str]]) -> int | None:
    """Waits until a worker fails (its status) or all succeed (``None``)."""
    while True:
        codes = [p.poll() for p in processes]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            return failed[0]
        if all(code == 0 for code in codes):
            return None
        time.sleep(_POLL_SECONDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the job; returns the exit status (the first failing worker's, or 0)."""
    options = _arguments(argv)
    lock = threading.Lock()
    processes: list[subprocess.Popen[str]] = []
    relays = []
    try:
        for index, config in enumerate(local_tf_configs(options.workers)):
            process = subprocess.Popen(
                [sys.executable, options.script, *options.args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "TF_CONFIG": config},
            )
            processes.append(process)
            assert process.stdout is not None
            relay = threading.Thread(target=_relay, args=(index, process.stdout, lock), daemon=True)
            relay.start()
            relays.append(relay)
        failure = _first_failure(processes)
    finally:
        _stop(processes)
        for relay in relays:
            relay.join(timeout=GRACE_SECONDS)
    if failure is not None:
        failed = next(i for i, p in enumerate(processes) if p.returncode == failure)
        sys.stderr.write(f"worker {failed} failed (exit status {failure}); stopped the others\n")
        return failure if failure > 0 else 128 - failure  # (killed by a signal: 128 + signal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
