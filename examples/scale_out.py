"""Scale out: one script, trained on every replica of a ``tf.distribute`` strategy.

Run it on this machine's CPU split into two logical devices
(``MirroredStrategy``), or as a job of two worker processes
(``MultiWorkerMirroredStrategy`` on loopback ports)::

    python examples/scale_out.py
    python -m gradfit.distribute.launch --workers 2 examples/scale_out.py

Both print the same losses as one device would on the same global batches
of 64; only the chief (worker 0) prints, and only it writes the backup,
which a rerun after a crash resumes from.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

import gradfit as gf


def make_strategy() -> tf.distribute.Strategy:
    """The job's strategy from ``TF_CONFIG``, else two logical CPUs of this process."""
    if "TF_CONFIG" in os.environ:
        return gf.distribute.multi_worker_strategy(heartbeat_timeout=10)
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def main() -> None:
    strategy = make_strategy()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:2] + 0.1 * rng.normal(size=(2000, 1))).astype(np.float32)
    backup = os.path.join(tempfile.gettempdir(), "gradfit_scale_out_backup")
    trainer = gf.Trainer(
        gf.MLP((32,), seed=0),
        gf.L2(),
        gf.chain(gf.clip_by_global_norm(1.0), gf.Adam(0.01)),
        strategy=strategy,
        callbacks=[gf.callbacks.BackupAndRestore(backup)],
    )
    history = trainer.fit(x, y, epochs=5, batch_size=64, seed=0)
    if gf.distribute.is_chief(strategy):
        replicas = strategy.num_replicas_in_sync
        for epoch, loss in enumerate(history.history["loss"]):
            print(f"Epoch {epoch}: loss={loss:.5f} ({replicas} replicas)")


if __name__ == "__main__":
    main()
