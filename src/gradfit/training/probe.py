"""The probe: a supervised task's model and loss run eagerly on all-zero examples.

Turns a mismatch between the data and the model, loss or metrics into a
clear ``ValueError`` naming the argument, before anything is traced or any
variable changes. A data spec checked once is not probed again.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from gradfit import data as data_lib
from gradfit.losses import loss_name


class Probe:
    """Remembers which data specs a task took; see the module docstring."""

    def __init__(self) -> None:
        self._probed: dict[Any, int | None] = {}  # data specs -> the predictions' width

    def check(self, task: Any, data: data_lib.Data, names: tuple[str, str]) -> None:
        """Builds ``task.model`` for ``data`` and probes it (and the loss and metrics).

        Args:
            task: A :class:`~gradfit.training.supervised.SupervisedTask`.
            data: The prepared data.
            names: The features' and targets' argument names, for messages.
        """
        self._build(task.model, data, names)
        x_spec, y_spec = data.x_spec, data.y_spec
        key = (x_spec, y_spec, task.cache_key())
        if key in self._probed:  # this model, loss and metrics took such data before
            _check_targets(task, data, names, self._probed[key])
            return
        x0, y0 = example_batch(task.model, data)
        try:
            pred = task.model(x0)
        except Exception as err:
            raise ValueError(
                f"The model cannot be called on examples of `{names[0]}` (per-example shape "
                f"{tuple(x_spec.shape[1:])}, dtype {x_spec.dtype.name}): {err}"
            ) from err
        num_outputs = pred.shape[-1] if pred.shape.rank else None
        if y_spec is not None and y0 is not None:
            _check_targets(task, data, names, num_outputs)
            for name, fn in (("loss", task.loss), *task.metrics.items()):
                _check_loss_output("loss" if name == "loss" else "metrics", fn, y0, pred, names)
        self._probed[key] = num_outputs

    @staticmethod
    def _build(model: Any, data: data_lib.Data, names: tuple[str, str]) -> None:
        shape = data.x.shape if isinstance(data, data_lib.ArrayData) else data.x_spec.shape
        try:
            model.maybe_build(shape)
        except ValueError as err:
            if names[0] == "x":
                raise
            name = names[0]
            message = str(err).replace("`x`", f"`{name}`").replace("x.shape", f"{name}.shape")
            raise ValueError(message) from None


def _check_loss_output(
    arg: str, fn: Any, y0: tf.Tensor, pred: tf.Tensor, names: tuple[str, str]
) -> None:
    """Runs a loss or metric on the probe's batch; it must give a float scalar."""
    try:
        value = fn(y0, pred)
    except Exception as err:
        raise ValueError(
            f"`{arg}` ({loss_name(fn)}) failed on `{names[1]}` of per-example shape "
            f"{tuple(y0.shape[1:])} (dtype {y0.dtype.name}) and predictions of "
            f"per-example shape {tuple(pred.shape[1:])}: {err}"
        ) from err
    value = tf.convert_to_tensor(value)
    if value.shape.rank != 0 or not (value.dtype.is_floating):
        raise ValueError(
            f"`{arg}` ({loss_name(fn)}) must return a floating-point scalar; it returned "
            f"shape {value.shape} and dtype {value.dtype.name}."
        )


def _check_targets(
    task: Any, data: data_lib.Data, names: tuple[str, str], num_outputs: int | None
) -> None:
    """Lets the loss reject in-memory targets it can never accept (labels out of range)."""
    check = getattr(task.loss, "check_targets", None)
    if isinstance(data, data_lib.ArrayData) and data.y is not None and callable(check):
        check(names[1], data.y, num_outputs)


def example_batch(model: Any, data: data_lib.Data) -> tuple[tf.Tensor, tf.Tensor | None]:
    """All-zero ``(x, y)`` batches shaped like the data (:func:`gradfit.data.example_batch`).

    Unknown feature sizes come from the built model where it knows them.
    """
    x_spec, y_spec = data.x_spec, data.y_spec
    built = getattr(model, "input_shape", None)
    dims = [d if d is not None or not built else built[i] for i, d in enumerate(x_spec.shape[1:])]
    x_spec = tf.TensorSpec([None, *dims], x_spec.dtype)
    if y_spec is None:
        return data_lib.example_batch(x_spec), None
    x0, y0 = data_lib.example_batch((x_spec, y_spec))
    return x0, y0
