"""Figures of fits and histories (needs matplotlib: ``pip install "gradfit[plot]"``).

Each function draws on the ``ax`` it is given, or on a new figure, and
returns the axes, so figures compose and can be saved by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from gradfit.callbacks import History, RecordVariables

_COLORS = ("r", "b", "g", "m", "c", "y", "k")


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'gradfit.plotting needs matplotlib; install it with: pip install "gradfit[plot]"'
        ) from err
    return plt


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    _, new_ax = _pyplot().subplots()
    return new_ax


def plot_fit(
    x: Any,
    y: Any,
    predictions: Any | Mapping[str, Any],
    *,
    ax: Axes | None = None,
) -> Axes:
    """Scatters the data (blue) and model predictions (red, then other colours).

    This is the TF2 tutorial's first figure.

    Args:
        x: One feature per example, shape ``[N]``.
        y: Targets, shape ``[N]``.
        predictions: Predictions of shape ``[N]``, or a mapping from a label
            (``"before training"``) to such predictions.
        ax: Axes to draw on; a new figure when ``None``.

    Returns:
        The axes drawn on.
    """
    ax = _axes(ax)
    x = np.asarray(x).ravel()
    ax.scatter(x, np.asarray(y).ravel(), c="b", s=8, label="data")
    series = predictions if isinstance(predictions, Mapping) else {"predictions": predictions}
    colors = [c for c in _COLORS if c != "b"]
    for (label, values), color in zip(series.items(), colors, strict=False):
        ax.scatter(x, np.asarray(values).ravel(), c=color, s=8, label=label)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend()
    return ax


def plot_variables(
    record: RecordVariables,
    *,
    true_values: Mapping[str, float] | None = None,
    names: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Plots scalar variables per epoch, with dashed lines at their true values.

    This is the TF2 tutorial's second figure: ``W`` and ``b`` at the start of
    each epoch (``record.values[name][:-1]``) against ``TRUE_W`` and ``TRUE_b``.

    Args:
        record: A :class:`~gradfit.callbacks.RecordVariables` used in a fit.
        true_values: Reference value per variable name, drawn dashed.
        names: Variables to draw; default: every scalar variable recorded.
        ax: Axes to draw on; a new figure when ``None``.

    Returns:
        The axes drawn on.
    """
    ax = _axes(ax)
    true_values = dict(true_values or {})
    if names is None:
        names = [n for n, vals in record.values.items() if np.asarray(vals[0]).size == 1]
    for name, color in zip(names, _COLORS, strict=False):
        values = [float(np.asarray(v).ravel()[0]) for v in record.values[name][:-1]]
        epochs = range(len(values))
        ax.plot(epochs, values, color, label=name)
        if name in true_values:
            ax.plot(epochs, [true_values[name]] * len(values), color + "--", label=f"true {name}")
    ax.set_xlabel("epoch")
    ax.legend()
    return ax


def plot_history(
    history: History, *, keys: Sequence[str] | None = None, ax: Axes | None = None
) -> Axes:
    """Plots logged quantities (``"loss"``, ``"val_loss"``, ...) per epoch.

    Args:
        history: The History returned by ``fit``.
        keys: Which logs to draw; default: all of them.
        ax: Axes to draw on; a new figure when ``None``.

    Returns:
        The axes drawn on.
    """
    ax = _axes(ax)
    for key in keys or list(history.history):
        ax.plot(history.epoch, history.history[key], label=key)
    ax.set_xlabel("epoch")
    ax.legend()
    return ax
