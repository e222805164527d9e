"""gradfit: reusable, compiled training loops for TensorFlow 2.

Bring a :class:`Model`, a :class:`Loss` and an :class:`UpdateRule` -- or a
whole :class:`Task` with its own training step -- and a :class:`Trainer`
fits it with a compiled ``GradientTape`` loop while callbacks record what
happened::

    import gradfit as gf

    history = gf.Trainer(gf.LinearModel(), gf.L2(), gf.SGD(0.1)).fit(x, y, epochs=10)
"""

from gradfit import callbacks, distribute, metrics, saving, schedules, training
from gradfit.callbacks import (
    Callback,
    EarlyStopping,
    History,
    LambdaCallback,
    RecordVariables,
)
from gradfit.errors import WriteError
from gradfit.keras import KerasModel
from gradfit.losses import (
    L1,
    L2,
    BinaryCrossentropy,
    Huber,
    Loss,
    SparseCategoricalCrossentropy,
)
from gradfit.models import MLP, LinearModel, Model
from gradfit.training import NonFiniteError, StepLogs, SupervisedTask, Task, Trainer
from gradfit.update_rules import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    GradientTransform,
    KerasOptimizer,
    Lion,
    RMSProp,
    UpdateRule,
    accumulate,
    chain,
    clip_by_global_norm,
    clip_by_value,
)

__version__ = "0.1.0"

__all__ = [
    "L1",
    "L2",
    "MLP",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "BinaryCrossentropy",
    "Callback",
    "EarlyStopping",
    "GradientTransform",
    "History",
    "Huber",
    "KerasModel",
    "KerasOptimizer",
    "LambdaCallback",
    "LinearModel",
    "Lion",
    "Loss",
    "Model",
    "NonFiniteError",
    "RMSProp",
    "RecordVariables",
    "SparseCategoricalCrossentropy",
    "StepLogs",
    "SupervisedTask",
    "Task",
    "Trainer",
    "UpdateRule",
    "WriteError",
    "__version__",
    "accumulate",
    "callbacks",
    "chain",
    "clip_by_global_norm",
    "clip_by_value",
    "distribute",
    "metrics",
    "saving",
    "schedules",
    "training",
]
