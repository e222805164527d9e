"""A multi-worker job on ``tf.distribute``: its strategy, its workers' roles, its addresses.

Every worker of a job runs the same script. ``TF_CONFIG`` (JSON, in the
environment) tells each its cluster and its own index, as
``MultiWorkerMirroredStrategy`` expects; :func:`local_tf_configs` writes
them for ``N`` processes on this machine, on loopback ports free now
(what :mod:`gradfit.distribute.launch` starts).

:func:`multi_worker_strategy` makes the strategy with a bounded
heartbeat: TensorFlow's coordination service declares a worker that stops
answering (killed, or hung) lost after ``heartbeat_timeout`` seconds and
every other worker's next collective then fails -- which gradfit reports as
a :class:`WorkerLostError` naming the worker. It must run before
TensorFlow starts its runtime (before the first op), as the strategy does.
"""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any

import tensorflow as tf
from tensorflow.python.eager import context as tf_context  # (no public API sets the heartbeat)

from gradfit import _validation as v

HEARTBEAT_TIMEOUT = 10.0
"""Seconds without a heartbeat after which the coordination service declares a worker lost."""


class WorkerLostError(RuntimeError):
    """A worker of a multi-worker job stopped (died, hung, or lost its network).

    The others stop at their next collective; the chief's last backup is
    intact, and rerunning the whole job resumes from it.

    Attributes:
        worker: The lost worker's task (``"worker 1"``), when TensorFlow says.
    """

    def __init__(self, message: str, worker: str | None = None) -> None:
        super().__init__(message)
        self.worker = worker


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on the loopback interface, free at the time of the call."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def local_tf_configs(workers: int) -> list[str]:
    """``TF_CONFIG`` for each of ``workers`` processes on this machine (worker 0 is the chief)."""
    workers = v.positive_int("workers", workers)
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    return [
        json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})
        for i in range(workers)
    ]


def multi_worker_strategy(
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
) -> tf.distribute.MultiWorkerMirroredStrategy:
    """A ``MultiWorkerMirroredStrategy`` of the ``TF_CONFIG`` job, lost workers found in time.

    Ring collectives (CPU-friendly), and a coordination service whose
    heartbeat declares a silent worker lost after ``heartbeat_timeout``
    seconds (TensorFlow's own default is longer). Call it once, before any
    TensorFlow op runs.

    Args:
        heartbeat_timeout: Seconds, at least 1.
    """
    timeout = v.real_number("heartbeat_timeout", heartbeat_timeout)
    if not timeout >= 1:
        raise ValueError(
            "`heartbeat_timeout` must be at least 1 second. "
            f"{v.received('heartbeat_timeout', heartbeat_timeout)}"
        )
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    spec = resolver.cluster_spec()
    if not spec.jobs:
        raise ValueError(
            "`TF_CONFIG` must describe the job's cluster (run the script with "
            "`python -m gradfit.distribute.launch --workers N script.py`). "
            f"Received: TF_CONFIG={os.environ.get('TF_CONFIG')!r}"
        )
    if tf_context.context().coordination_service is None:
        jobs = spec.as_dict()
        leader = "chief" if "chief" in jobs else "worker"
        tf_context.context().configure_coordination_service(
            service_type="standalone",
            service_leader=f"/job:{leader}/replica:0/task:0",
            heartbeat_timeout_in_ms=int(timeout * 1000),
            coordinated_jobs=_coordinated_jobs(jobs),
        )
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver, communication_options=options
    )


def _coordinated_jobs(jobs: dict[str, Any]) -> list[Any]:
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2

    return [
        coordination_config_pb2.CoordinatedJob(name=name, num_tasks=len(tasks))
        for name, tasks in jobs.items()
        if name in ("chief", "worker")
    ]


def role(strategy: Any) -> tuple[str, int]:
    """``(task_type, task_id)`` of this process in ``strategy``'s job (``("worker", 0)`` alone)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", None)
    if task_type is None or task_id is None:
        return "worker", 0
    return str(task_type), int(task_id)


def is_chief(strategy: Any) -> bool:
    """Whether this process writes the job's files: the chief, else worker 0."""
    task_type, task_id = role(strategy)
    return task_type == "chief" or (task_type == "worker" and task_id == 0)


_LOST_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.DeadlineExceededError,
    tf.errors.InternalError,
)
_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")


def lost_worker(error: BaseException, strategy: Any) -> WorkerLostError | None:
    """``error`` as a :class:`WorkerLostError` if it says a peer is gone, else ``None``."""
    if not isinstance(error, _LOST_ERRORS):
        return None
    text = str(error)
    if not re.search(r"[Cc]ollective|[Cc]oordination|heartbeat|[Uu]navailable|[Ss]ocket", text):
        return None
    mine = role(strategy)
    others = [(job, int(task)) for job, task in _TASK.findall(text) if (job, int(task)) != mine]
    worker = f"{others[0][0]} {others[0][1]}" if others else None
    summary = _telling_line(text)
    return WorkerLostError(
        f"{worker or 'Another worker'} of the multi-worker job was lost (it died, hung or "
        f"lost its network), so this worker ({mine[0]} {mine[1]}) stopped. The chief's last "
        "backup is intact: rerun the whole job to resume from it. TensorFlow said: "
        f"{summary}",
        worker,
    )


def _telling_line(text: str) -> str:
    """The line of a collective's error that says what happened (not "Graph execution error")."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if re.search(r"aborted|heartbeat|[Uu]navailable|[Ss]ocket|[Cc]onnection", line):
            return line[:300]
    return (lines[0] if lines else type(text).__name__)[:300]
