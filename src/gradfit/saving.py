"""Saving: checkpoints of a whole trainer or of a model, and SavedModel export.

The public face of :mod:`gradfit.checkpoint`: see
:mod:`gradfit.checkpoint.saving` for the three kinds of files and
:func:`write_checkpoint` for the atomic writes behind them.
"""

from gradfit.checkpoint.io import write_checkpoint
from gradfit.checkpoint.saving import (
    export_model,
    restore_model,
    restore_trainer,
    save_model,
    save_trainer,
    trainer_checkpoint,
)

__all__ = [
    "export_model",
    "restore_model",
    "restore_trainer",
    "save_model",
    "save_trainer",
    "trainer_checkpoint",
    "write_checkpoint",
]
