"""Saving: checkpoints of a whole trainer or of a model, and SavedModel export.

The public face of :mod:`gradfit.checkpoint.saving`, which documents the
three kinds of files and the atomic writes behind them.
"""

from gradfit.checkpoint.saving import *  # noqa: F403 - the same public names
from gradfit.checkpoint.saving import __all__  # noqa: F401
