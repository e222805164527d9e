"""Replicas: what a Trainer needs of a ``tf.distribute`` strategy, in one object.

``Trainer(..., strategy=s)`` keeps a :class:`Replicas` of ``s``: it checks
the strategy and ``jit_compile`` (XLA does not compile across replicas),
runs every public entry point under the strategy's scope, checks that the
task's state was created there -- moving an update rule's own scalars
(``iterations``, the learning rate), which rules create when constructed,
and refusing a model built outside -- and gives the epoch runners their
loops (:mod:`gradfit.training.replica_loops`). Without a strategy (or
with TensorFlow's default one) it changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from gradfit import _validation as v
from gradfit.distribute import cluster
from gradfit.errors import WriteError
from gradfit.training.replica_loops import LocalLoops, ReplicaLoops
from gradfit.training.step import Columns
from gradfit.update_rules import KerasOptimizer, UpdateRule

SUPPORTED = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
"""The strategies gradfit trains on (besides TensorFlow's default one)."""


def _check_strategy(strategy: Any) -> tf.distribute.Strategy | None:
    """``strategy`` (``None``: the one whose scope is entered, if any), else an error."""
    if strategy is None:
        strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    if strategy is None:
        return None
    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            "`strategy` must be a tf.distribute.Strategy such as "
            f"tf.distribute.MirroredStrategy(), or None. {v.received('strategy', strategy)}"
        )
    if not isinstance(strategy, SUPPORTED):
        raise ValueError(
            "`strategy` must be a MirroredStrategy or a MultiWorkerMirroredStrategy; gradfit "
            f"does not support {type(strategy).__name__} yet. "
            f"{v.received('strategy', strategy)}"
        )
    return strategy


class Replicas:
    """A trainer's strategy: scope, checks and loops (see the module docstring).

    Args:
        strategy: A ``MirroredStrategy``, a ``MultiWorkerMirroredStrategy``,
            or ``None`` (one device; inside a strategy's scope, that strategy).
    """

    def __init__(self, strategy: Any) -> None:
        self.strategy = _check_strategy(strategy)
        self._adopted: Any = None

    @property
    def distributed(self) -> bool:
        """Whether steps run through a strategy's replicas."""
        return self.strategy is not None

    @property
    def count(self) -> int:
        """The replicas in sync (1 without a strategy)."""
        return 1 if self.strategy is None else int(self.strategy.num_replicas_in_sync)

    @property
    def multi_worker(self) -> bool:
        """Whether the strategy spans several processes."""
        return isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (on several workers: the chief only)."""
        return not self.multi_worker or cluster.is_chief(self.strategy)

    def agree(self, generator: tf.random.Generator) -> None:
        """Sets ``generator`` to the chief's state on every worker (a collective; a no-op alone)."""
        if not self.multi_worker:
            return
        assert self.strategy is not None
        state = generator.state

        @tf.function
        def chief_state() -> tf.Tensor:
            context = tf.distribute.get_replica_context()
            value = state.read_value()
            mine = tf.where(context.replica_id_in_sync_group == 0, value, tf.zeros_like(value))
            return context.all_reduce(tf.distribute.ReduceOp.SUM, mine)

        agreed = self.strategy.run(chief_state)
        state.assign(self.strategy.experimental_local_results(agreed)[0], read_value=False)

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        """Turns a lost worker's collective failure into a :class:`WorkerLostError`.

        Also when a checkpoint's write reported it (a ``WriteError`` caused by
        the collective that reads a Keras metric's state across the workers).
        """
        try:
            yield
        except (tf.errors.OpError, WriteError) as err:
            cause = err.__cause__ if isinstance(err, WriteError) else err
            lost = None
            if self.multi_worker and isinstance(cause, tf.errors.OpError):
                lost = cluster.lost_worker(cause, self.strategy)
            if lost is None:
                raise
            raise lost from cause

    def jit(self, jit_compile: bool | str) -> bool | str:
        """``jit_compile`` for these replicas: no XLA under a strategy, ``True`` refused."""
        if self.strategy is None:
            return jit_compile
        if jit_compile is True:
            raise ValueError(
                "`jit_compile` must be False or 'auto' with a `strategy`: XLA does not compile "
                f"across replicas ({self.count} here). Received: jit_compile=True"
            )
        return False

    def check_scope(self) -> None:
        """A ``ValueError`` if called inside the scope of a strategy other than this one.

        A trainer runs on the strategy it was made with (or with none): one
        made outside a scope and called inside it would build its variables
        there and train them outside the replicas.
        """
        if not tf.distribute.has_strategy() or tf.distribute.get_strategy() is self.strategy:
            return
        mine = "no strategy" if self.strategy is None else type(self.strategy).__name__
        current = type(tf.distribute.get_strategy()).__name__
        raise ValueError(
            f"This Trainer runs on {mine} but is called inside the scope of another "
            f"strategy ({current}): make the Trainer inside that scope, or pass it as "
            "`strategy=`, and call it outside any other strategy's scope. "
            f"Received: tf.distribute.get_strategy()={tf.distribute.get_strategy()!r}"
        )

    @contextlib.contextmanager
    def scope(self, task: Any) -> Iterator[None]:
        """The strategy's scope, where ``task``'s variables are made (no-op without one).

        Its state made outside the scope is moved in first (an update rule's
        own scalars) or refused (a ``ValueError`` naming the variables, before
        any change). Only the task's variables belong there: one made in a
        multi-worker scope is a collective (its initial value is broadcast),
        which the chief's own files must not be.
        """
        if self.strategy is None:
            yield
            return
        with self.strategy.scope():
            self._adopt(task)
            yield

    def check(self, columns: Columns, task: Any) -> None:
        """A ``ValueError`` for a fit these replicas cannot run, before anything changes.

        Its running logs must be ones ``task.running_logs()`` gives (read
        after each step, summed over the replicas); that call also refuses
        a metric whose state would not sum. A Keras optimizer must not
        accumulate gradients itself (:func:`_check_keras_accumulation`).
        """
        if self.strategy is None:
            return
        _check_keras_accumulation(task)
        if not columns.running:
            return
        with self.strategy.scope():
            given = task.running_logs()
        missing = [name for name in columns.running if name not in given]
        if missing:
            raise ValueError(
                f"`task_or_model` logs {missing} as 'running' (see `Task.log_kinds`) but its "
                "`running_logs()` does not give them; under a `strategy` gradfit reads a "
                "running log after each step, across the replicas, from `running_logs()`. "
                f"Received: running_logs() keys {sorted(given)}"
            )

    def loops(self, columns: Columns, task: Any) -> LocalLoops | ReplicaLoops:
        """The loops an epoch runner uses, for step logs of ``columns`` of ``task``."""
        if self.strategy is None:
            return LocalLoops()
        return ReplicaLoops(self.strategy, columns, task.running_logs)

    def _adopt(self, task: Any) -> None:
        """Moves rules' scalars into the scope; a ``ValueError`` for other outside state."""
        key = (task.cache_key(), len(task.state_variables()))
        if key == self._adopted:
            return
        outside = {id(var): var for var in task.state_variables() if not self._inside(var)}
        movable = _rule_variables(task)
        stuck = [var for key_, var in outside.items() if key_ not in movable]
        if stuck:
            raise ValueError(
                "`task_or_model` holds variables created outside `strategy.scope()`, which "
                "the replicas cannot share: create the model (and any Keras optimizer or "
                "metric) inside `with strategy.scope():`, or leave a gradfit model unbuilt "
                "(the Trainer builds it there). Received: variables "
                f"{sorted({var.name for var in stuck})[:6]}"
            )
        for key_ in outside:
            rule, name = movable[key_]
            old = getattr(rule, name)
            setattr(rule, name, _copy(old))
        self._adopted = (task.cache_key(), len(task.state_variables()))

    def _inside(self, var: tf.Variable) -> bool:
        assert self.strategy is not None  # (only called under a strategy)
        return bool(self.strategy.extended.variable_created_in_scope(var))


def _keras_accumulation(task: Any) -> str | None:
    """Which Keras optimizer of ``task`` accumulates gradients itself, else ``None``.

    Keras's ``gradient_accumulation_steps`` puts the optimizer's update (a
    ``merge_call``: its all-reduce, then every replica's copy) inside a
    conditional of its own ``apply``, which TensorFlow cannot run in a
    replica's step. gradfit's own conditionals (``gf.accumulate``, dynamic
    loss scaling) hold a Keras optimizer through
    :func:`gradfit.distribute.sync.cond`.
    """
    for module in (task, *task.submodules):
        if isinstance(module, KerasOptimizer) and module.optimizer.gradient_accumulation_steps:
            return f"gradient_accumulation_steps={module.optimizer.gradient_accumulation_steps}"
    return None


def _check_keras_accumulation(task: Any) -> None:
    """A ``ValueError`` for a Keras optimizer that accumulates gradients itself (see above)."""
    where = _keras_accumulation(task)
    if where is not None:
        raise ValueError(
            "`task_or_model` updates with a gf.KerasOptimizer whose optimizer accumulates "
            "gradients itself, which TensorFlow cannot run on a `strategy`'s replicas (its update, "
            "a merge_call, runs inside a conditional of the optimizer's own): accumulate with "
            "gradfit instead, gf.accumulate(n, gf.KerasOptimizer(optimizer)) with an optimizer "
            "made without `gradient_accumulation_steps` (its `iterations` and learning-rate "
            f"schedule then count updates, not micro-batches). Received: {where}"
        )


def _rule_variables(task: Any) -> dict[int, tuple[UpdateRule, str]]:
    """The variables update rules hold as attributes (made when a rule is constructed)."""
    found: dict[int, tuple[UpdateRule, str]] = {}
    for module in (task, *task.submodules):
        if isinstance(module, UpdateRule):
            for name, value in vars(module).items():
                if isinstance(value, tf.Variable):
                    found[id(value)] = (module, name)
    return found


def _copy(var: tf.Variable) -> tf.Variable:
    """A new variable (in the current scope) with ``var``'s value, dtype and name."""
    return tf.Variable(
        var.read_value(), trainable=var.trainable, name=var.name.split(":")[0], dtype=var.dtype
    )
