"""Update rules: how gradients change variables, inside the compiled step.

One rule per module, each a pure update function and a thin class that owns
the state: :class:`SGD`, :class:`Adam`, :class:`AdamW`, :class:`RMSProp`,
:class:`Adagrad`, :class:`Lion`; :class:`KerasOptimizer` wraps any Keras
optimizer. :mod:`~gradfit.update_rules.transforms` composes them with
gradient transforms (``chain``) and accumulation (``accumulate``).
"""

from gradfit.update_rules.adagrad import Adagrad
from gradfit.update_rules.adam import Adam
from gradfit.update_rules.adamw import AdamW
from gradfit.update_rules.base import UpdateRule
from gradfit.update_rules.keras import KerasOptimizer
from gradfit.update_rules.lion import Lion
from gradfit.update_rules.rmsprop import RMSProp
from gradfit.update_rules.sgd import SGD
from gradfit.update_rules.transforms import (
    GradientTransform,
    accumulate,
    chain,
    clip_by_global_norm,
    clip_by_value,
)

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "GradientTransform",
    "KerasOptimizer",
    "Lion",
    "RMSProp",
    "UpdateRule",
    "accumulate",
    "chain",
    "clip_by_global_norm",
    "clip_by_value",
]
