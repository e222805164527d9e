"""Distribution on ``tf.distribute``: replica arithmetic, multi-worker jobs (never our own comms).

``gf.Trainer(..., strategy=tf.distribute.MirroredStrategy())`` trains on
every replica of a strategy (:mod:`gradfit.training.replicated`). This
package holds what does not depend on the Trainer: :mod:`~.sync`, the
replica-context arithmetic every update rule runs; :mod:`~.cluster`, a
multi-worker job's strategy, roles and lost workers; and
:mod:`~.launch`, ``python -m gradfit.distribute.launch --workers N
script.py``, which runs a job's workers on this machine.
"""

from gradfit.distribute.cluster import (
    HEARTBEAT_TIMEOUT,
    WorkerLostError,
    is_chief,
    local_tf_configs,
    multi_worker_strategy,
)
from gradfit.distribute.sync import global_batch_size

__all__ = [
    "HEARTBEAT_TIMEOUT",
    "WorkerLostError",
    "global_batch_size",
    "is_chief",
    "local_tf_configs",
    "multi_worker_strategy",
]
