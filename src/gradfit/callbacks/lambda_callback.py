"""LambdaCallback: a callback made of plain functions, with the Keras keyword names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradfit import _validation as v
from gradfit.callbacks.base import Callback, Logs


class LambdaCallback(Callback):
    """Calls the functions it is given at the matching hooks.

    Args:
        on_train_begin: ``fn(logs)``.
        on_train_end: ``fn(logs)``.
        on_epoch_begin: ``fn(epoch, logs)``.
        on_epoch_end: ``fn(epoch, logs)``.
        on_epoch_resume: ``fn(epoch, step, logs)`` (see
            :meth:`Callback.on_epoch_resume`).
        on_train_batch_begin: ``fn(batch, logs)``.
        on_train_batch_end: ``fn(batch, logs)``.

    Example::

        losses = []
        gf.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: losses.append(logs["loss"]))
    """

    def __init__(
        self,
        on_train_begin: Callable[[Logs], Any] | None = None,
        on_train_end: Callable[[Logs], Any] | None = None,
        on_epoch_begin: Callable[[int, Logs], Any] | None = None,
        on_epoch_end: Callable[[int, Logs], Any] | None = None,
        on_train_batch_begin: Callable[[int, Logs], Any] | None = None,
        on_train_batch_end: Callable[[int, Logs], Any] | None = None,
        on_epoch_resume: Callable[[int, int, Logs], Any] | None = None,
    ) -> None:
        super().__init__()
        given = {
            "on_train_begin": on_train_begin,
            "on_train_end": on_train_end,
            "on_epoch_begin": on_epoch_begin,
            "on_epoch_end": on_epoch_end,
            "on_train_batch_begin": on_train_batch_begin,
            "on_train_batch_end": on_train_batch_end,
            "on_epoch_resume": on_epoch_resume,
        }
        for hook, fn in given.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"`{hook}` must be callable or None. {v.received(hook, fn)}")
        self._fns = {hook: fn for hook, fn in given.items() if fn is not None}
        # Only the given hooks are installed, so CallbackList sees which ones this
        # callback really uses (no host sync per step for an epoch-only lambda).
        for hook, fn in self._fns.items():
            setattr(self, hook, fn)

    @property
    def hooks(self) -> tuple[str, ...]:
        """The names of the hooks this callback implements."""
        return tuple(self._fns)
