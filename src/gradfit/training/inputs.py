"""Inputs: what ``fit``, ``evaluate`` and ``predict`` receive, checked and prepared for a task.

Every argument and input is checked here before any variable changes
(:mod:`gradfit.data` validates and converts; the task's ``check_data``
probes); a task's log names are found here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import tensorflow as tf

from gradfit import _validation as v
from gradfit import data as data_lib
from gradfit.training import step as step_lib
from gradfit.training.compile import FunctionCache
from gradfit.training.replica_loops import in_replicas
from gradfit.training.task import Task


def require(task: Task, method: str, user: str) -> None:
    """A ``TypeError`` before anything runs when ``task`` lacks ``method``, which ``user`` needs."""
    if getattr(type(task), method) is getattr(Task, method):
        raise TypeError(
            f"`{user}` needs the task's `{method}`, which {type(task).__name__} does "
            f"not implement. Received: task={v.echo(task)}"
        )


def check_log_names(names: list[str]) -> list[str]:
    """``names`` if none is a name gradfit writes itself, else a ``ValueError``."""
    for name in names:
        if name in ("lr", "nonfinite_steps", "grad_norm", "epoch") or name.startswith("val_"):
            raise ValueError(
                f"`train_step` logs {name!r}, a name gradfit writes itself; rename it. "
                f"Received: log names {names}"
            )
    return names


def _no_scope(task: Task) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


class Inputs:
    """Prepares data for one task (and its compiled-function cache).

    Args:
        task: The task the data is for.
        functions: The trainer's compiled-function cache.
        scope: ``scope(task)``: where the task's variables are made (a strategy's scope).
    """

    def __init__(
        self,
        task: Task,
        functions: FunctionCache,
        scope: Callable[[Task], AbstractContextManager[Any]] = lambda task: (
            contextlib.nullcontext()
        ),
    ) -> None:
        self.task = task
        self.functions = functions
        self.scope = _no_scope if scope is None else scope

    def prepare(
        self,
        x: Any,
        y: Any,
        batch_size: Any,
        names: tuple[str, str],
        *,
        with_targets: bool | None = None,
        sample_weight: Any = None,
        class_weight: Any = None,
        weight_name: str = "sample_weight",
    ) -> data_lib.Data:
        """Validates ``x``, ``y`` and weights (:func:`gradfit.data.prepare`), then the task does.

        ``weight_name`` names ``sample_weight`` in messages.
        """
        if with_targets is None and self.task.needs_targets:
            with_targets = True
        prepared = data_lib.prepare(
            x,
            y,
            float_dtype=self.task.dtype,
            batch_size=batch_size,
            names=names,
            with_targets=with_targets,
            sample_weight=sample_weight,
            class_weight=class_weight,
            weight_name=weight_name,
        )
        with self.scope(self.task):  # (a check may build the task)
            self.task.check_data(prepared, names)
        return prepared

    def validation(self, validation_data: Any, batch_size: Any) -> data_lib.Data | None:
        """``validation_data`` prepared (``None`` if not given); it needs a ``test_step``."""
        if validation_data is None:
            return None
        require(self.task, "test_step", "validation_data")
        if isinstance(validation_data, tf.data.Dataset):
            val = self.prepare(validation_data, None, None, ("validation_data", "y"))
            if val.steps is None and not any(True for _ in val.dataset.take(1)):  # type: ignore[union-attr]
                raise ValueError(
                    "`validation_data` yielded no batches; the dataset is empty. "
                    f"Received: validation_data={validation_data}"
                )
            return val
        if not self.task.needs_targets and not isinstance(validation_data, tuple):
            # Features alone, for a task that trains on features alone (a tuple is (x, y)).
            return self.prepare(validation_data, None, batch_size, ("validation_data", "y"))
        if not isinstance(validation_data, tuple | list) or len(validation_data) not in (2, 3):
            raise ValueError(
                "`validation_data` must be a tuple (x_val, y_val) or (x_val, y_val, "
                "sample_weight_val), or a tf.data.Dataset of (x, y) batches. "
                f"{v.received('validation_data', validation_data)}"
            )
        x_val, y_val, *w_val = validation_data
        if isinstance(x_val, tf.data.Dataset):
            raise ValueError(
                "`validation_data` must be a tuple of arrays or a Dataset, not a tuple holding "
                f"a Dataset. {v.received('validation_data', validation_data)}"
            )
        return self.prepare(
            x_val,
            y_val,
            batch_size,
            ("validation_data[0]", "validation_data[1]"),
            sample_weight=w_val[0] if w_val else None,
            weight_name="validation_data[2]",
        )

    def train_names(self, train: data_lib.Data) -> list[str]:
        """The names ``train_step`` logs (known, or found by tracing it once per data spec)."""
        known = self.task.log_names()
        if known is not None:
            return list(known)
        spec = train.batch_spec
        with self.scope(self.task):  # (traced on the replicas, if any)
            names = self.functions.get(
                ("train-names", spec, self.task.cache_key()),
                lambda: step_lib.traced_names(in_replicas(self.task.train_step), spec),
            )
        return check_log_names(names)
