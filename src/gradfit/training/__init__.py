"""Training: Task and SupervisedTask, the step wrapper, compiled loops, epoch runners, Trainer.

Arrows point down: ``trainer`` drives ``epoch`` and ``evaluation``, which
run ``loops`` over steps made by ``step`` from a ``task``; ``state`` holds
where a run stands.
"""

from gradfit.training.loss_scale import LossScale
from gradfit.training.nonfinite import NonFiniteError
from gradfit.training.state import RunState
from gradfit.training.supervised import SupervisedTask
from gradfit.training.task import StepLogs, Task
from gradfit.training.trainer import Trainer

__all__ = [
    "LossScale",
    "NonFiniteError",
    "RunState",
    "StepLogs",
    "SupervisedTask",
    "Task",
    "Trainer",
]
