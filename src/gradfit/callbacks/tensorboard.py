"""TensorBoard: the epoch logs as TensorBoard scalars, written with ``tf.summary``."""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from gradfit import _paths, errors
from gradfit import _validation as v
from gradfit.callbacks.base import Callback, Logs

# What tensorboard's own `tf.summary.scalar` attaches: the "scalars" plugin, content
# `ScalarPluginData(version=0)`, which serialises to b"". Written with TensorFlow's
# `tf.summary.write`, so no tensorboard package is needed to log.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
)

TAGS = {"lr": "learning_rate"}
"""Log keys written under another name (Keras's), before the ``epoch_`` prefix."""


def tag(key: str) -> str:
    """The scalar's tag for epoch log ``key`` (``"val_loss"`` -> ``"epoch_loss"``)."""
    name = key[4:] if key.startswith("val_") else key
    return "epoch_" + TAGS.get(name, name)


class TensorBoard(Callback):
    """Writes the epoch logs as scalars for TensorBoard, one point per epoch.

    Each run gets a ``tf.summary`` file writer under ``log_dir/train`` and,
    when there is validation data, one under ``log_dir/validation``. Tags
    follow Keras, so a training curve and its validation curve share a
    chart: ``epoch_loss``, ``epoch_<metric>``, ``epoch_learning_rate`` (the
    ``lr`` log) and ``epoch_grad_norm`` (the global gradient norm, when the
    logs carry ``grad_norm``) go to ``train``; every ``val_<name>`` log goes
    to ``validation`` as ``epoch_<name>``. Every other numeric epoch log is
    written to ``train`` as ``epoch_<key>``. The step is the epoch number
    (from 0); values are float32, as ``tf.summary.scalar`` writes them; the
    writers are flushed after every epoch.

    ``log_dir`` is checked before the first step (a directory that exists
    or can be created, writable); a write that fails during the fit raises
    :class:`gradfit.WriteError`.

    Args:
        log_dir: The run's directory (created if needed); point TensorBoard
            at it or at its parent: ``tensorboard --logdir logs``.

    Example::

        trainer.fit(x, y, epochs=10, callbacks=[gf.callbacks.TensorBoard("logs/run1")])
    """

    writes_files = True  # (only the chief of a multi-worker job writes)

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        super().__init__()
        self.log_dir = v.path("log_dir", log_dir)
        self._writers: dict[str, Any] = {}

    def _writer(self, run: str) -> Any:
        writer = self._writers.get(run)
        if writer is None:
            with tf.init_scope():
                writer = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
            self._writers[run] = writer
        return writer

    def check_run(self) -> None:
        """Checks, before anything changes, that ``log_dir`` and its runs can be written."""
        for run in ("", "train", "validation"):
            path = os.path.join(self.log_dir, run) if run else self.log_dir
            _paths.check_directory("log_dir", path, self.log_dir, extra=120)

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Opens this run's ``train`` writer (``validation`` opens with its first value)."""
        self._close()
        with self._writing():
            self._writer("train")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """OS and TensorFlow I/O errors become a :class:`gradfit.WriteError` naming ``log_dir``."""
        try:
            yield
        except errors.IO_ERRORS as err:
            with contextlib.suppress(*errors.IO_ERRORS):
                self._close()  # (no event file left open)
            raise errors.write_error(
                "TensorBoard", "log_dir", self.log_dir, err, "The events written before are kept."
            ) from err

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Writes the epoch's logs at step ``epoch`` and flushes."""
        runs: dict[str, dict[str, float]] = {}
        for key, value in (logs or {}).items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            run = "validation" if key.startswith("val_") else "train"
            runs.setdefault(run, {})[tag(key)] = float(value)
        with self._writing():
            self._write(epoch, runs)

    def _write(self, epoch: int, runs: dict[str, dict[str, float]]) -> None:
        for run, scalars in runs.items():
            writer = self._writer(run)
            with writer.as_default():
                for name, value in scalars.items():
                    tf.summary.write(
                        name,
                        tf.constant(value, tf.float32),
                        step=epoch,
                        metadata=_SCALAR_METADATA,
                    )
            writer.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        """Closes the writers."""
        self._close()

    def _close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
