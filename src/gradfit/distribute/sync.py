"""Replica-context arithmetic: each replica's share of the global batch, gradients summed.

Under a ``tf.distribute`` strategy every replica runs the task's step on
its shard of the global batch and computes the gradients of its *local*
mean loss. gradfit's replicated step (:mod:`gradfit.training.replicated`)
tells the replica its share of the global batch, ``n_r / N`` (examples on
this replica over examples in the global batch), and
:func:`summed_gradients` -- which every :class:`gradfit.UpdateRule`'s
``apply`` runs before its maths -- all-reduces ``sum_r share_r * g_r``.
For a loss that is a mean over examples (every gradfit loss, Keras's
``sum_over_batch_size``, sample weights included) that sum is exactly the
gradient one device computes on the whole global batch, so any rule sees
the single-device gradient; a replica with no examples in a ragged batch
contributes zeros and still joins the collective.

Outside a strategy's replica context everything here is the identity, and
a rule's ``apply`` called by a loop of the user's own under
``strategy.run`` (no share set) sums the replicas' gradients, as
``tf.distribute``'s convention (losses scaled by the global batch size)
expects.

:func:`global_gradients` gives the global batch's gradients of a step
(for ``grad_norm``): those a rule has reduced, without another collective.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import tensorflow as tf


class _ReplicaLocal(threading.local):
    """Per replica thread (``MirroredStrategy`` traces each replica in its own thread)."""

    share: tf.Tensor | None = None
    rows: tf.Tensor | None = None
    total: tf.Tensor | None = None
    depth: int = 0
    applying: frozenset[int] = frozenset()
    reduced: tuple[tuple[Any, tf.Tensor], ...] = ()  # (a gradient, its all-reduced value)


_local = _ReplicaLocal()

_STATE = ("share", "rows", "total", "depth", "applying", "reduced")


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def replica_context() -> Any:
    """The replica context of a strategy's ``run``, else ``None`` (no strategy, cross-replica)."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    return tf.distribute.get_replica_context()


@contextlib.contextmanager
def replica_batch(rows: tf.Tensor, total: tf.Tensor) -> Iterator[None]:
    """While tracing one replica's step: it holds ``rows`` of the global batch's ``total``.

    Args:
        rows: The examples on this replica (a scalar tensor).
        total: The examples in the global batch, over all replicas.
    """
    before = (_local.share, _local.rows, _local.total, _local.reduced)
    rows_f = tf.cast(rows, tf.float32)
    total_f = tf.cast(total, tf.float32)
    _local.share = tf.math.divide_no_nan(rows_f, total_f)
    _local.rows, _local.total, _local.reduced = rows_f, total_f, ()
    try:
        yield
    finally:
        _local.share, _local.rows, _local.total, _local.reduced = before


def replicated_step() -> bool:
    """Whether one replica's step of gradfit's replicated loop is being traced."""
    return _local.share is not None and replica_context() is not None


def applying(rule: object) -> bool:
    """Whether ``rule``'s ``apply`` is running on this thread (replica threads apply at once)."""
    return id(rule) in _local.applying


@contextlib.contextmanager
def in_apply(rule: object) -> Iterator[None]:
    """Marks ``rule``'s ``apply`` as running on this thread (see :func:`applying`)."""
    before = _local.applying
    _local.applying = before | {id(rule)}
    try:
        yield
    finally:
        _local.applying = before


def global_batch_size() -> tf.Tensor | None:
    """The examples in the global batch of the step being traced (a float32 scalar tensor).

    Every replica's gradient is weighed by its share of the global batch
    (examples here over examples there), so a replica's loss must be its
    *mean* over its own batch times what one device multiplies the mean by.
    For a :class:`gradfit.Task` whose loss is a sum over its batch,
    ``tf.reduce_mean(per_example_losses) * global_batch_size()`` on a
    replica is ``tf.reduce_sum(per_example_losses)`` on one device (not
    ``sum / global_batch_size()``, TensorFlow's convention for summed
    gradients: weighed again, its gradient would be ``1 / replicas`` too
    small). ``None`` outside gradfit's replicated step (on one device, the
    batch is the global batch).
    """
    return _local.total


def global_batch_mean(value: tf.Tensor) -> tf.Tensor:
    """A replica's mean over its own examples as the mean over the global batch.

    One SUM all-reduce of ``value * rows`` (zero for a replica without
    examples), over the global batch's examples: every replica gets the
    value one device computes on the global batch. ``value`` itself outside
    gradfit's replicated step. For a batch value that divides by examples
    but is combined across steps by another weight (a Keras loss as a
    weighted metric divides its weighted sum by the examples).
    """
    context = replica_context()
    if context is None or _local.rows is None or _local.total is None:
        return value
    rows = tf.cast(_local.rows, value.dtype)
    part = tf.where(rows > 0, value * rows, tf.zeros_like(value))
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, part)
    return summed / tf.cast(_local.total, value.dtype)


@tf.autograph.experimental.do_not_convert  # plain Python over static values: fast to trace
def _weighted(gradient: tf.Tensor, share: tf.Tensor) -> tf.Tensor:
    """``share * gradient``; exactly zero for a replica without examples (no NaN leaks)."""
    weighted = gradient * tf.cast(share, gradient.dtype)
    return tf.where(share > 0, weighted, tf.zeros_like(weighted))


@contextlib.contextmanager
def summed_gradients(gradients: Sequence[Any]) -> Iterator[list[Any]]:
    """Yields ``gradients`` all-reduced across replicas, once per update.

    In a strategy's replica context: ``sum_r share_r * g_r`` (every
    replica gets the global gradient; ``tf.IndexedSlices`` are made dense).
    Elsewhere, or inside a rule that a reducing rule calls (``chain``'s
    rule, ``accumulate``'s), the gradients as they are.
    """
    # (reduce_gradients is the identity outside a replica context)
    reduced = list(gradients) if _local.depth else reduce_gradients(gradients)
    _local.depth += 1
    try:
        yield reduced
    finally:
        _local.depth -= 1


def reduce_gradients(gradients: Sequence[Any]) -> list[Any]:
    """``gradients`` as the global batch's: ``sum_r share_r * g_r`` (dense), in every replica.

    A gradient that is already one of this step's all-reduced values
    passes through, so gradients reduced once -- by a loss scale deciding,
    before its conditional, whether the step is finite -- are not reduced
    again by the rule applying them inside it (where a collective cannot
    run). In gradfit's step the pairs are kept for :func:`global_gradients`.
    Outside a replica context, the gradients as they are.
    """
    context = replica_context()
    if context is None:
        return list(gradients)
    reduced = _reduced(context, gradients)
    if _local.share is not None:  # (gradfit's step: kept for global_gradients)
        _local.reduced += tuple(zip(gradients, reduced, strict=True))
    return reduced


def _reduced(context: Any, gradients: Sequence[Any]) -> list[tf.Tensor]:
    """Every gradient's all-reduced value: this step's, else from one collective for the rest."""
    done = [_reduced_value(g) for g in gradients]
    missing = [g for g, r in zip(gradients, done, strict=True) if r is None]
    extra = iter(_all_reduced(context, missing) if missing else [])
    return [next(extra) if r is None else r for r in done]


def _reduced_value(gradient: Any) -> tf.Tensor | None:
    """``gradient``'s all-reduced value if this step reduced it (or it is one), else ``None``."""
    for given, reduced in _local.reduced:
        if gradient is given or gradient is reduced:
            return reduced
    return None


def _all_reduced(context: Any, gradients: Sequence[Any]) -> list[tf.Tensor]:
    """``sum_r share_r * g_r`` (dense) in every replica; without a share, ``sum_r g_r``."""
    dense = [tf.convert_to_tensor(g) for g in gradients]
    if _local.share is not None:
        dense = [_weighted(g, _local.share) for g in dense]
    return list(context.all_reduce(tf.distribute.ReduceOp.SUM, dense))


def global_gradients(gradients: Sequence[Any]) -> list[Any]:
    """``gradients`` of this replica's step as the global batch's (dense), for their norm.

    A gradient an update rule of this step has all-reduced already
    (:func:`summed_gradients`) is taken as reduced; the others are
    all-reduced here, in one collective. Outside a replica context, the
    gradients as they are.
    """
    context = replica_context()
    return list(gradients) if context is None else _reduced(context, gradients)


def for_summing(gradients: Sequence[Any]) -> list[Any]:
    """Global gradients as parts of a SUM all-reduce someone else makes (a Keras optimizer's).

    In a replica context, each replica's part is ``g / num_replicas`` (exact
    for a power of two); elsewhere the gradients as they are.
    """
    context = replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return list(gradients)
    scale = 1.0 / context.num_replicas_in_sync
    return [tf.convert_to_tensor(g) * tf.cast(scale, g.dtype) for g in gradients]


class _Branches:
    """One replica's two branches and its replica-local state (one value to ``merge_call``)."""

    def __init__(self, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> None:
        self.fns = (false_fn, true_fn)
        self.state = {name: getattr(_local, name) for name in _STATE}


def cond(pred: tf.Tensor, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> None:
    """``tf.cond(pred, true_fn, false_fn)`` whose branches may ``merge_call`` (results ignored).

    A Keras optimizer updates through ``merge_call``, which TensorFlow cannot
    run inside a conditional of a replica's step. In a strategy's replica
    context the conditional therefore runs in cross-replica context (as
    Keras's ``LossScaleOptimizer`` runs its own), on replica 0's ``pred`` --
    which must be the same on every replica, e.g. a test of the global
    gradients -- and each branch runs on every replica again, with that
    replica's own branch function and replica-local state. Elsewhere, a
    plain ``tf.cond``.

    Args:
        pred: A scalar bool tensor, equal on every replica.
        true_fn: Runs if ``pred``.
        false_fn: Runs otherwise.
    """
    context = replica_context()
    if context is None:
        tf.cond(pred, _returning_true(true_fn), _returning_true(false_fn))
        return
    context.merge_call(_merged_cond, args=(pred, _Branches(true_fn, false_fn)))


def _merged_cond(strategy: tf.distribute.Strategy, pred: Any, branches: Any) -> None:
    """The cross-replica half of :func:`cond`: one conditional, each branch on every replica."""
    first = strategy.experimental_local_results(pred)[0]

    def branch(which: bool) -> Callable[[], tf.Tensor]:
        def run() -> None:
            strategy.extended.call_for_each_replica(_run_branch, args=(branches, which))

        return _returning_true(run)

    tf.cond(first, branch(True), branch(False))


def _run_branch(branches: _Branches, which: bool) -> None:
    """Runs one replica's branch with the replica-local state it had at the conditional."""
    before = {name: getattr(_local, name) for name in _STATE}
    for name, value in branches.state.items():
        setattr(_local, name, value)
    try:
        branches.fns[which]()
    finally:
        for name, value in before.items():
            setattr(_local, name, value)


def _returning_true(fn: Callable[[], Any]) -> Callable[[], tf.Tensor]:
    """``fn`` as a ``tf.cond`` branch: its result ignored, ``True`` returned."""

    def branch() -> tf.Tensor:
        fn()
        return tf.constant(True)

    return branch
