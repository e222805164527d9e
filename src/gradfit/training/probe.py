"""The probe: a supervised task's model, losses and metrics run eagerly on all-zero examples.

Turns a mismatch between the data and the model, loss or metrics into a
clear ``ValueError`` naming the argument, before anything is traced or any
variable changes. A data spec checked once is not probed again. Keras
metrics are probed through fresh copies: the real ones never see the
probe's examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from gradfit import data as data_lib
from gradfit.keras import KerasModel
from gradfit.losses import Loss, SparseCategoricalCrossentropy, loss_name
from gradfit.training import metric_logs
from gradfit.training.compile import hashable
from gradfit.training.objective import takes_sample_weight, weighted_loss


class Probe:
    """Remembers which data specs a task took; see the module docstring."""

    def __init__(self) -> None:
        self._probed: dict[Any, Any] = {}  # data specs -> the predictions' widths

    def check(self, task: Any, data: data_lib.Data, names: tuple[str, str]) -> None:
        """Builds ``task.model`` for ``data`` and probes it (and the losses and metrics).

        Args:
            task: A :class:`~gradfit.training.supervised.SupervisedTask`.
            data: The prepared data.
            names: The features' and targets' argument names, for messages.
        """
        self._build(task, data, names)
        key = hashable((data.batch_spec, task.cache_key()))
        if key in self._probed:  # this model, loss and metrics took such data before
            _check_targets(task, data, names, self._probed[key])
            return
        batch = example_batch(task.model, data)
        x0 = batch[0] if data.y_spec is not None else batch
        try:
            pred = task.predictions(x0, training=False)
        except Exception as err:
            raise ValueError(
                f"The model cannot be called on examples of `{names[0]}` (per-example "
                f"{_shapes(data.x_spec)}): {err}"
            ) from err
        widths = tf.nest.map_structure(lambda p: p.shape[-1] if p.shape.rank else None, pred)
        if data.y_spec is not None:
            y0 = batch[1]
            w0 = batch[2] if len(batch) == 3 else None
            _check_structure(task, y0, pred, names)
            _check_target_shapes(task, data, pred, names)
            _check_targets(task, data, names, widths)
            _check_losses(task, y0, pred, w0, names)
            for name, metric in task.metrics.items():
                _check_output("metrics", name, metric_logs.probe_copy(metric), y0, pred, names)
        self._probed[key] = widths

    @staticmethod
    def _build(task: Any, data: data_lib.Data, names: tuple[str, str]) -> None:
        spec = data.x_spec
        shape: Any = tf.nest.map_structure(lambda s: s.shape, spec)
        if isinstance(data, data_lib.ArrayData) and tf.is_tensor(data.x):
            shape = data.x.shape
        elif not isinstance(spec, tf.TensorSpec) and not isinstance(task.model, KerasModel):
            return  # nested inputs: a model of your own builds on its first call (the probe's)
        try:
            task.model.maybe_build(shape)
        except ValueError as err:
            if names[0] == "x":
                raise
            name = names[0]
            message = str(err).replace("`x`", f"`{name}`").replace("x.shape", f"{name}.shape")
            raise ValueError(message) from None


def _shapes(spec: Any) -> str:
    described = tf.nest.map_structure(lambda s: (tuple(s.shape[1:]), s.dtype.name), spec)
    if isinstance(spec, tf.TensorSpec):
        shape, dtype = described
        return f"shape {shape}, dtype {dtype}"
    return f"shapes and dtypes {described}"


def _check_structure(task: Any, y0: Any, pred: Any, names: tuple[str, str]) -> None:
    """Several losses need targets and predictions keyed (or ordered) like them."""
    loss = task.objective.loss
    if isinstance(loss, Mapping):
        for part, value in ((names[1], y0), ("the model's outputs", pred)):
            keys = sorted(value) if isinstance(value, Mapping) else None
            if keys is None or set(loss) - set(keys):
                raise ValueError(
                    f"`loss` is a dict keyed {sorted(loss)}; {_quote(part)} must be a dict with "
                    f"those keys. Received: keys {keys}"
                )
    elif isinstance(loss, list):
        for part, value in ((names[1], y0), ("the model's outputs", pred)):
            if not isinstance(value, list | tuple) or len(value) != len(loss):
                raise ValueError(
                    f"`loss` is a list of {len(loss)} losses; {_quote(part)} must be a tuple or "
                    f"list of {len(loss)} parts. Received: {type(value).__name__}"
                )
    elif not isinstance(y0, tf.Tensor):
        raise ValueError(
            f"`loss` is a single loss, but {_quote(names[1])} holds targets of several parts "
            f"(a {type(y0).__name__}); pass a dict or list of losses, one per output. "
            f"Received: `{names[0]}` with targets {_shapes(data_lib.batch_spec(y0))}"
        )


_SPARSE_LOSSES = ("SparseCategoricalCrossentropy",)
"""Losses whose targets have no class axis: labels ``[N]`` against scores ``[N, C]``."""

_KNOWN_LOSSES = (Loss, keras.losses.Loss)
"""Losses whose shape rules are known: their targets must match the predictions."""


def _loose(shape: list[int | None]) -> list[int | None]:
    return shape[:-1] if shape and shape[-1] == 1 else shape


def _agree(a: list[int | None], b: list[int | None]) -> bool:
    a, b = _loose(a), _loose(b)
    return len(a) == len(b) and all(
        i is None or j is None or i == j for i, j in zip(a, b, strict=True)
    )


def _check_target_shapes(task: Any, data: data_lib.Data, pred: Any, names: tuple[str, str]) -> None:
    """Targets that fit the predictions only by broadcasting are refused (for known losses).

    ``y`` and the predictions must agree on every per-example axis but a
    trailing axis of size 1 (sparse labels: on every axis but the classes').
    """
    y_spec = data.y_spec
    root = names[0] if isinstance(data, data_lib.DatasetData) else names[1]  # (a dataset's)
    for key, loss in task.objective.items():
        if not isinstance(loss, _KNOWN_LOSSES):
            continue
        spec = y_spec if key is None else y_spec[key]
        out = pred if key is None else pred[key]
        if not isinstance(spec, tf.TensorSpec) or not tf.is_tensor(out):
            continue
        targets = spec.shape.as_list()[1:]
        outputs = out.shape.as_list()[1:]
        sparse = any(cls.__name__ in _SPARSE_LOSSES for cls in type(loss).__mro__)
        expected = outputs[:-1] if sparse else outputs
        if not _agree(targets, expected):
            label = root if key is None else f"{root}[{key!r}]"
            raise ValueError(
                f"`{label}` has targets of per-example shape {tuple(targets)}, but the model's "
                f"predictions "
                f"have {tuple(outputs)}: they would only meet by broadcasting, which trains on "
                f"wrong pairs. {'Labels for ' if sparse else 'Targets for '}{loss_name(loss)} "
                f"need per-example shape {tuple(expected)} (or with a trailing 1)."
            )


def _quote(part: str) -> str:
    return part if part.startswith("the ") else f"`{part}`"


def _check_losses(task: Any, y0: Any, pred: Any, w0: Any, names: tuple[str, str]) -> None:
    for key, loss in task.objective.items():
        y_part = y0 if key is None else y0[key]
        pred_part = pred if key is None else pred[key]
        label = "loss" if key is None else f"loss[{key!r}]"
        if w0 is not None and not takes_sample_weight(loss):
            raise TypeError(
                f"`{label}` ({loss_name(loss)}) cannot weigh examples, and sample weights were "
                "given: use a gradfit or Keras loss, a gradfit Loss with `per_example`, or a "
                "callable taking `sample_weight=`."
            )
        _check_output(
            label,
            None,
            _weighted(loss, w0),
            y_part,
            pred_part,
            names,
            fn_name=loss_name(loss),
        )
    losses = list(getattr(task.model, "losses", ()))
    for term in losses:
        if not tf.convert_to_tensor(term).dtype.is_floating:
            raise ValueError(f"The model's `losses` must be float scalars. Received: {term}")


def _weighted(loss: Any, weights: Any) -> Any:
    return lambda y, pred: weighted_loss(loss, y, pred, weights)


def _check_output(
    arg: str,
    name: str | None,
    fn: Any,
    y0: Any,
    pred: Any,
    names: tuple[str, str],
    *,
    fn_name: str | None = None,
) -> None:
    """Runs a loss or metric on the probe's batch; it must give a float scalar."""
    label = fn_name or name or loss_name(fn)
    try:
        value = fn(y0, pred)
    except Exception as err:
        raise ValueError(
            f"`{arg}` ({label}) failed on `{names[1]}` of per-example "
            f"{_shapes(data_lib.batch_spec(y0))} and predictions of per-example "
            f"{_shapes(data_lib.batch_spec(pred))}: {err}"
        ) from err
    value = tf.convert_to_tensor(value)
    if value.shape.rank != 0 or not (value.dtype.is_floating):
        raise ValueError(
            f"`{arg}` ({label}) must return a floating-point scalar; it returned "
            f"shape {value.shape} and dtype {value.dtype.name}."
        )


def _check_targets(task: Any, data: data_lib.Data, names: tuple[str, str], widths: Any) -> None:
    """Lets each loss reject in-memory targets it can never accept (labels out of range)."""
    if not isinstance(data, data_lib.ArrayData) or data.y is None:
        return
    for key, loss in task.objective.items():
        check = getattr(loss, "check_targets", None)
        if _keras_sparse(loss):  # Keras's own sparse cross-entropy: the same labels
            check = _SPARSE.check_targets
        if not callable(check):
            continue
        y = data.y if key is None else data.y[key]
        width = widths if key is None else widths[key]
        label = names[1] if key is None else f"{names[1]}[{key!r}]"
        if tf.is_tensor(y) and (width is None or isinstance(width, int)):
            check(label, y, width)


_SPARSE = SparseCategoricalCrossentropy()


def _keras_sparse(loss: Any) -> bool:
    """Whether ``loss`` is Keras's sparse categorical cross-entropy (object or function)."""
    return isinstance(loss, keras.losses.SparseCategoricalCrossentropy) or (
        loss is keras.losses.sparse_categorical_crossentropy
    )


def example_batch(model: Any, data: data_lib.Data) -> Any:
    """An all-zero batch shaped like the data (:func:`gradfit.data.example_batch`).

    Unknown feature sizes of a single input come from the built model where it knows them.
    """
    spec = data.batch_spec
    built = getattr(model, "input_shape", None)
    x_spec = data.x_spec
    if built and isinstance(x_spec, tf.TensorSpec):
        dims = [d if d is not None else built[i] for i, d in enumerate(x_spec.shape[1:])]
        x_spec = tf.TensorSpec([None, *dims], x_spec.dtype)
        spec = x_spec if data.y_spec is None else (x_spec, *spec[1:])
    return data_lib.example_batch(spec)
