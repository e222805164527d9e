"""Epoch runners: one pass over the data through the compiled loop, in chunks.

A runner's ``run(callbacks, epoch, start, prior) -> (logs[steps, k],
sizes[steps])`` trains one epoch from its step ``start`` (0, or the steps a
restored backup had done, whose logs and batch sizes are ``prior``) and
returns the whole epoch's step logs and batch sizes. In between it replays
each chunk's step logs to the batch callbacks with their true step numbers,
applies the non-finite policy, and saves mid-epoch backups where due.

:class:`ArrayEpoch` runs in-memory data: shuffled epochs copy their rows
into the epoch's order a block of at most ``loops.BLOCK_BYTES`` at a time
(or gather big batches in the loop), then train on the block in order;
under a strategy each replica's device holds its shard of the epoch
instead, in step order (:mod:`gradfit.data.sharding`). A
flagged (non-finite) step is undone on the host: the loop call returned
the state from before the call, so the runner restores it and replays the
finite steps before the flagged one (deterministic). :class:`DatasetEpoch`
consumes a ``tf.data`` iterator inside the loop and undoes a flagged step
in-graph, or a step cut short by an error on the host, from a copy of the
state taken before each step (:class:`gradfit.training.guard.StepGuard`);
a bad batch becomes a ``ValueError`` naming ``x`` and the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np
import tensorflow as tf

from gradfit import data as data_lib
from gradfit._autograph import function
from gradfit.training import loops
from gradfit.training.compile import Compiled, FunctionCache, Jit, xla_obstacle
from gradfit.training.guard import StepGuard, batch_at, batch_checker, fail, kept_after
from gradfit.training.nonfinite import NonFiniteError, NonFinitePolicy
from gradfit.training.replica_loops import LocalLoops, ReplicaLoops
from gradfit.training.state import RunState
from gradfit.training.step import Columns, keeping_state

Prior = tuple[Any, Any] | None
"""A resumed epoch's step logs and batch sizes so far (``None``: from its start)."""


class StepSaves:
    """The mid-epoch backups of a fit: where chunks of steps end, and the saves after them.

    Args:
        backups: The fit's backups; those with an integer ``save_every`` count
            (``BackupAndRestore(save_every=n)``: ``save_steps`` saves one).
        state: The run's state.
    """

    def __init__(self, backups: Sequence[Any], state: RunState) -> None:
        self.backups: list[Any] = [b for b in backups if isinstance(b.save_every, int)]
        self.state = state

    def begin_epoch(self, generator: tf.random.Generator) -> None:
        """Keeps the generator's state at the epoch's start (a mid-epoch save replays from it)."""
        if self.backups:
            self.state.epoch_generator_state = generator.state.numpy().copy()

    def chunk_end(self, pos: int, end: int) -> int:
        """Where a chunk of steps from epoch step ``pos`` ends: ``end``, or at a step save."""
        if not self.backups:
            return end
        done = self.state.steps_done
        gap = min(int(b.save_every) - done % int(b.save_every) for b in self.backups)
        return min(end, pos + gap)

    def after(
        self,
        epoch: int,
        step: int,
        total: int | None,
        logs: list[np.ndarray],
        sizes: list[np.ndarray] | np.ndarray,
    ) -> None:
        """Saves the backups due after ``step`` steps of ``epoch`` (not at its end).

        ``logs`` and ``sizes`` hold the epoch's step logs and batch sizes so far.
        """
        if not self.backups or (total is not None and step >= total):
            return
        done = self.state.steps_done
        due = [b for b in self.backups if done % int(b.save_every) == 0]
        epoch_state = self.state.epoch_generator_state
        if not due or epoch_state is None:  # (the state is taken when such an epoch begins)
            return
        rows = np.concatenate(logs)
        batch_sizes = sizes[: len(rows)] if isinstance(sizes, np.ndarray) else np.concatenate(sizes)
        for backup in due:
            backup.save_steps(
                epoch, step, rows, batch_sizes, generator_state=epoch_state, steps_done=done
            )


class Run:
    """What both runners share for one fit: the task, policy, layout, state and saves.

    Args:
        task: The task trained.
        functions: The trainer's compiled-function cache.
        generator: The trainer's shuffling generator.
        columns: The step's log layout.
        dtype: The logs' dtype.
        policy: The non-finite policy.
        state: The run's state.
        saves: The mid-epoch backups.
        every_step: Whether a callback requires one step per call.
        loops: The loops to run (:mod:`~gradfit.training.replica_loops`: over a
            strategy's replicas, or on one device, the default).
    """

    def __init__(
        self,
        task: Any,
        functions: FunctionCache,
        generator: tf.random.Generator,
        columns: Columns,
        dtype: tf.DType,
        policy: NonFinitePolicy,
        state: RunState,
        saves: StepSaves,
        *,
        every_step: bool,
        loops: LocalLoops | ReplicaLoops | None = None,
    ) -> None:
        self.task, self.functions, self.generator = task, functions, generator
        self.loops = loops or LocalLoops()
        self.columns, self.dtype, self.policy = columns, dtype, policy
        self.state, self.saves, self.every_step = state, saves, every_step
        self.replay = False  # whether batch hooks want the step logs: see `begin_epoch`

    def begin_epoch(self, callbacks: Any) -> None:
        """Looks up once per epoch (not per chunk) whether any callback has batch hooks."""
        self.replay = callbacks.wants_batch_logs

    def record(
        self, callbacks: Any, chunks: list[np.ndarray], first: int, rows: np.ndarray
    ) -> None:
        """Keeps a chunk's step logs, counts its steps, replays them to the batch hooks."""
        chunks.append(rows)
        self.state.steps_done += len(rows)
        if self.replay:
            replay(callbacks, first, rows, self.columns.names, begin=not self.every_step)

    def state_variables(self, *, always: bool = False) -> list[tf.Variable]:
        """The variables a step may change, looked up once per task structure.

        Without ``always``, none when steps are not checked (nothing to undo).
        """
        if self.columns.flag is None and not always:
            return []
        return self.functions.get(("state", self.task.cache_key()), self.task.state_variables)


def replay(
    callbacks: Any, first: int, rows: np.ndarray, names: list[str], *, begin: bool = True
) -> None:
    """Hands each step's logs to the batch hooks, with the step's own number.

    ``begin=False`` when ``on_train_batch_begin`` already ran before the
    step (one step per call, for callbacks that require every step).
    """
    for i, row in enumerate(rows):
        if begin:
            callbacks.on_train_batch_begin(first + i)
        logs = dict(zip(names, map(float, row[: len(names)]), strict=True))
        callbacks.on_train_batch_end(first + i, logs)


class ArrayEpoch:
    """Runs epochs over in-memory data; see the module docstring.

    Args:
        run: The fit's shared pieces.
        data: The training data.
        step: The training step (``step(batch) -> logs[k]``).
        shuffle: Whether to shuffle every epoch.
        per_call: The most steps per loop call (``None``: a block's worth).
        jit: The ``jit_compile`` mode of the loop.
    """

    def __init__(
        self,
        run: Run,
        data: data_lib.ArrayData,
        step: loops.Step,
        *,
        shuffle: bool,
        per_call: int | None,
        jit: Jit,
    ) -> None:
        self.run_info, self.data = run, data
        n, size = data.num_examples, data.batch_size
        self.full, self.rest = divmod(n, size)  # full >= 1: the batch size is at most n
        self.shuffled = shuffle and data.steps > 1
        row_bytes = sum(
            int(np.prod(t.shape[1:], dtype=np.int64)) * t.dtype.size for t in data.arrays
        )
        # Small shuffled batches are copied into the epoch's order a block at a time, big
        # ones gathered inside the loop (see loops.GATHER_IN_LOOP_BYTES). Under a strategy
        # each replica's shard holds its rows in the epoch's order instead: neither.
        reordered = self.shuffled and not run.loops.shards
        big = size * row_bytes >= loops.GATHER_IN_LOOP_BYTES
        self.in_loop, self.blocked = reordered and big, reordered and not big
        self.block = loops.block_steps(size, row_bytes, self.full) if self.blocked else self.full
        self.per_call = min(per_call or self.block, self.block)
        self.sizes = np.full(self.full + (1 if self.rest else 0), size, np.float64)
        self.sizes[self.full :] = self.rest
        self.state = run.state_variables()
        # (Under a strategy, each replica's shard; shuffled data's, every epoch.)
        self.arrays = run.loops.place(data.arrays, size, ordered=not self.shuffled)
        self._compile(step, jit)

    def _key(self) -> tuple[Any, ...]:
        data, columns = self.data, self.run_info.columns
        return (
            "train",
            self.in_loop,
            tuple((t.shape, t.dtype) for t in data.arrays),
            data.batch_size,
            self.shuffled,
            tuple(columns.names),
            columns.flag,
            self.per_call,
            self.block,
            self.run_info.task.cache_key(),
            tuple(id(var) for var in self.state),
            type(self.run_info.loops).__name__,
        )

    def _compile(self, step: loops.Step, jit: Jit) -> None:
        """The loop, the block gather, the ragged last step and the permutation."""
        functions, key, data = self.run_info.functions, self._key(), self.data
        columns, dtype, pack, size = (
            self.run_info.columns,
            self.run_info.dtype,
            data.pack,
            data.batch_size,
        )
        kit = self.run_info.loops
        self.loop: Compiled = functions.compiled(
            (*key, "loop"),
            lambda jit: function(
                keeping_state(
                    kit.array_loop(
                        step, pack, size, self.per_call, columns.width, dtype, gather=self.in_loop
                    ),
                    self.state,
                ),
                jit_compile=jit,
            ),
            "training loop",
            jit,
        )
        epochs = None if jit.steps is None else max(jit.steps // data.steps, 1)
        self.gather: Compiled | None = None
        if self.blocked:
            block = self.block
            self.gather = functions.compiled(
                (*key, "gather"),
                lambda jit: function(loops.gather_block(size, block), jit_compile=jit),
                "gather of shuffled batches",
                jit.runs(None if epochs is None else epochs * -(-self.full // block)),
            )
        self.last: Compiled | None = None
        if self.rest:
            start, rest, shuffled = self.full * size, self.rest, self.shuffled
            self.last = functions.compiled(
                (*key, "last"),
                lambda jit: function(
                    keeping_state(
                        kit.array_last_step(step, pack, start, rest, shuffled=shuffled),
                        self.state,
                    ),
                    jit_compile=jit,
                ),
                "training step of the last, smaller batch",
                jit.runs(epochs),
            )
        generator, n = self.run_info.generator, data.num_examples
        self.permute = functions.get(
            ("permute", n, id(generator)), lambda: loops.permutation_function(generator, n)
        )
        # Concrete functions, kept across fits: a quicker call than the tf.function's.
        self.calls: dict[str, Any] = functions.get((*key, "concrete", jit, id(generator)), dict)

    def _call(self, name: str, compiled: Any, *args: Any) -> Any:
        fn = self.calls.get(name)
        if fn is None or (isinstance(compiled, Compiled) and compiled.pending):
            fn = self.calls[name] = compiled.get_concrete_function(*args)  # ("auto" settled)
        return fn(*args)

    def _roll_back(self, saved: list[tf.Tensor]) -> None:
        for var, value in zip(self.state, saved, strict=True):
            var.assign(value)  # (Keras optimizers' variables take no read_value)

    def run(self, callbacks: Any, epoch: int, start: int = 0, prior: Prior = None) -> Any:
        """Trains epoch ``epoch`` from step ``start``; returns its step logs and batch sizes."""
        info = self.run_info
        info.begin_epoch(callbacks)
        no_order = self.run_info.functions.get("no-order", lambda: tf.zeros([0], tf.int32))
        order = self._call("permute", self.permute) if self.shuffled else no_order
        rows_order = order if self.in_loop else no_order  # what the loop gathers rows by
        chunks: list[np.ndarray] = [] if prior is None else [prior[0]]
        epoch_arrays = info.loops.epoch_arrays(
            self.arrays, self.data.arrays, order if self.shuffled else None
        )
        pos, loaded, arrays = start, None, epoch_arrays
        stopped = False
        while pos < self.full:
            # A chunk: at most per_call steps, inside one block, ending at any step save.
            block_first = pos - pos % self.block
            begin = min(block_first, self.full - self.block)  # the last block ends the epoch
            if self.gather is not None and loaded != begin:
                arrays = self._call(
                    "gather", self.gather, self.data.arrays, order, tf.constant(begin)
                )
                loaded = begin
            end = info.saves.chunk_end(
                pos, min(pos + self.per_call, block_first + self.block, self.full)
            )
            pos = self._chunk(callbacks, chunks, epoch, (arrays, rows_order, begin), pos, end)
            if info.every_step and info.state.stop_training:
                stopped = True  # one step per call: stop right after the step that asked
                break
            info.saves.after(epoch, pos, len(self.sizes), chunks, self.sizes)
        if not stopped and self.last is not None:
            self._last_step(callbacks, chunks, epoch, (epoch_arrays, order))
        logs = np.concatenate(chunks)
        return logs, self.sizes[: len(logs)]

    def _chunk(
        self,
        callbacks: Any,
        chunks: list[np.ndarray],
        epoch: int,
        source: tuple[Any, tf.Tensor, int],
        pos: int,
        end: int,
    ) -> int:
        """Trains epoch steps ``pos...end - 1`` (of the block ``source``); returns ``end``."""
        info, flag = self.run_info, self.run_info.columns.flag
        arrays, rows_order, begin = source

        def train(first: int, count: int) -> Any:
            return self._call(
                "loop", self.loop, arrays, rows_order, tf.constant(first), tf.constant(count)
            )

        while pos < end:
            if info.every_step:
                callbacks.on_train_batch_begin(pos)
            logs, saved = train(pos - begin, end - pos)
            rows = logs.numpy()[: end - pos]
            flagged: Any = np.flatnonzero(rows[:, flag] > 0) if flag is not None else ()
            if len(flagged) == 0:
                info.record(callbacks, chunks, pos, rows)
                info.state.nonfinite_run = 0
                pos += len(rows)
                continue
            # A non-finite step's update was applied (and the steps after it ran on):
            # roll back and replay the finite steps before it (deterministic).
            done = int(flagged[0]) + 1
            self._roll_back(saved)
            if done > 1:
                train(pos - begin, done - 1)
            info.record(callbacks, chunks, pos, rows[:done])
            run = (info.state.nonfinite_run if done == 1 else 0) + 1
            info.policy.check(info.state, epoch, pos + done - 1, run)
            pos += done
        return pos

    def _last_step(
        self, callbacks: Any, chunks: list[np.ndarray], epoch: int, source: tuple[Any, tf.Tensor]
    ) -> None:
        """Trains the epoch's ragged last batch (of ``source``: the epoch's arrays, order)."""
        info, flag = self.run_info, self.run_info.columns.flag
        if info.every_step:
            callbacks.on_train_batch_begin(self.full)
        row_t, saved = self._call("last", self.last, *source)
        row = row_t.numpy()
        info.record(callbacks, chunks, self.full, row[None])
        if flag is not None and row[flag] > 0:
            self._roll_back(saved)
            info.policy.check(info.state, epoch, self.full, info.state.nonfinite_run + 1)
        else:
            info.state.nonfinite_run = 0


class DatasetEpoch:
    """Runs epochs over a ``tf.data.Dataset``; see the module docstring.

    Args:
        run: The fit's shared pieces.
        data: The training data.
        step: The training step (``step(batch) -> logs[k]``).
        per_call: The most steps per loop call (``None``: the whole epoch).
        jit: The ``jit_compile`` mode of the step (the iterator loop never uses XLA).
    """

    def __init__(
        self,
        run: Run,
        data: data_lib.DatasetData,
        step: loops.Step,
        *,
        per_call: int | None,
        jit: Jit,
    ) -> None:
        self.run_info, self.dataset, self.known = run, data.dataset, data.steps
        self.distributed: Any = None  # the dataset as the loops iterate it, once made
        self.per_call = per_call or self.known or 2**31 - 1
        columns, policy = run.columns, run.policy
        state = run.state_variables(always=True)
        spec = data.batch_spec  # closures below must not hold `data`
        key = (
            "train-dataset",
            spec,
            tuple(columns.names),
            columns.flag,
            policy.limit,
            run.task.cache_key(),
            tuple(id(var) for var in state),
            type(run.loops).__name__,
        )
        functions = run.functions
        self.guard = functions.get((*key, "guard"), lambda: StepGuard(state))
        guarded = self.guard.wrap(run.loops.dataset_step(step), columns.flag)
        self.check = batch_checker(run.task, functions)
        inner = functions.compiled(
            (*key, "step"),
            lambda jit: function(
                guarded, input_signature=run.loops.signature(spec), jit_compile=jit
            ),
            "training step",
            jit,
        )
        if inner.pending:
            # Settle jit_compile="auto" before the loop consumes the iterator. XLA needs
            # static shapes to lower a graph, so check a throwaway copy of the step on a
            # small batch shaped like the data.
            example = data_lib.example_batch(spec)
            inner.resolve(
                xla_check=lambda _: xla_obstacle(function(guarded, jit_compile=True), example)
            )
        self.loop = functions.get(
            (*key, "loop", inner.jit_compile),
            lambda: function(
                run.loops.dataset_loop(
                    inner.function, columns.width, run.dtype, flag=columns.flag, limit=policy.limit
                )
            ),
        )

    def run(self, callbacks: Any, epoch: int, start: int = 0, prior: Prior = None) -> Any:
        """Trains one pass from batch ``start``; returns its step logs and batch sizes."""
        info, known = self.run_info, self.known
        info.begin_epoch(callbacks)
        # A resumed epoch skips the batches it had done (same order for a dataset that
        # does not reshuffle itself; see BackupAndRestore).
        if start:
            iterator = iter(info.loops.distribute(self.dataset.skip(start)))
        else:  # (distributed once per fit: under a strategy that costs ~10 ms)
            if self.distributed is None:
                self.distributed = info.loops.distribute(self.dataset)
            iterator = iter(self.distributed)
        chunks: list[np.ndarray] = [] if prior is None else [prior[0]]
        sizes: list[np.ndarray] = [] if prior is None else [prior[1]]
        done, counted = start, self.guard.steps_done()
        while known is None or done < known:
            if info.every_step:  # (for a dataset of unknown length, also before its end)
                callbacks.on_train_batch_begin(done)
            count = info.saves.chunk_end(done, done + self.per_call) - done
            if known is not None:  # (no call past a known end)
                count = min(count, known - done)
            logs, batch_sizes, run_t, exhausted = self._call(iterator, count, epoch, done, counted)
            rows = logs.numpy()
            counted += len(rows)
            if len(rows):
                info.record(callbacks, chunks, done, rows)
                sizes.append(batch_sizes.numpy().astype(np.float64))
            done += len(rows)
            if info.columns.flag is not None:
                self._check_policy(epoch, done - 1, int(run_t))
            if bool(exhausted) or (info.every_step and info.state.stop_training):
                break
            if len(rows):
                info.saves.after(epoch, done, known, chunks, sizes)
        if not chunks:
            raise ValueError("`x` yielded no batches; the dataset is empty.")
        return np.concatenate(chunks), np.concatenate(sizes)

    def _call(self, iterator: Any, count: int, epoch: int, done: int, counted: int) -> Any:
        """One loop call; a failing step is undone and explained (:mod:`~.guard`).

        ``counted`` is the guard's count of steps done when the call starts.
        """
        try:
            return self.loop(
                iterator, tf.constant(count), tf.constant(self.run_info.state.nonfinite_run)
            )
        except tf.errors.OpError as err:
            self._fail(err, done + self.guard.recover(counted), epoch)

    def _check_policy(self, epoch: int, step: int, run: int) -> None:
        """The non-finite policy; a NaN that a bad batch explains (under XLA) says so."""
        try:
            self.run_info.policy.check(self.run_info.state, epoch, step, run)
        except NonFiniteError as err:
            self._fail(err, step, epoch)

    def _fail(self, err: BaseException, index: int, epoch: int) -> NoReturn:
        fail(
            err,
            batch_at(self.dataset, index),
            arg="x",
            where=f"at step {index} of epoch {epoch}",
            kept=kept_after(index, epoch),
            check=self.check,
        )
