"""RunState: where a fit stands, in one object the Trainer, its runners and callbacks share."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class RunState:
    """The counters and flags of the fit in progress (``trainer.state``).

    Callbacks read it (and a backup saves and restores it) instead of the
    Trainer's internals.

    Attributes:
        epoch: The epoch being trained (from 0).
        steps_done: Steps trained in this run, across epochs and resumes.
        nonfinite_run: Non-finite steps in a row so far (``on_nonfinite="skip"``).
        stop_training: Set it to ``True`` to end the fit after the current
            epoch (or, with a callback that requires every step, after the
            current step).
        epoch_generator_state: The shuffling generator's state when the
            current epoch began (kept while mid-epoch backups are on).
        step_log_width: Values the compiled loop logs per step.
        step_batch_size: Examples per full batch of in-memory data (``None``
            for datasets).
        steps_per_epoch: Batches per epoch, when known.
        writes_files: Whether this process writes the run's files: ``False`` on
            the workers of a multi-worker job other than the chief, where
            callbacks that write files (or print) are not called and backups
            are only read.
    """

    epoch: int = 0
    steps_done: int = 0
    nonfinite_run: int = 0
    stop_training: bool = False
    epoch_generator_state: np.ndarray | None = None
    step_log_width: int = 0
    step_batch_size: int | None = None
    steps_per_epoch: int | None = None
    writes_files: bool = True
