"""Evaluation and prediction: a task's ``test_step`` and ``predict_step``, compiled.

In-memory data is evaluated by one call of a loop over its full batches
(:func:`gradfit.training.loops.eval_loop`; one trace for any data size),
plus one call for a ragged last batch; a dataset by one call per batch.
The results are the example-weighted means of the per-batch logs.
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
import tensorflow as tf

from gradfit import data as data_lib
from gradfit._autograph import function
from gradfit.training import guard, loops
from gradfit.training import step as step_lib
from gradfit.training.compile import FunctionCache, Jit


class Evaluator:
    """Runs a task's ``test_step`` and ``predict_step`` over prepared data.

    Args:
        task: The task.
        functions: The trainer's compiled-function cache.
    """

    def __init__(self, task: Any, functions: FunctionCache) -> None:
        self.task = task
        self.functions = functions

    def names(self, spec: Any) -> list[str]:
        """The names ``test_step`` logs for batches of ``spec``."""
        known = self.task.log_names()
        if known is not None:
            return list(known)
        return self.functions.get(
            ("test-names", spec, self.task.cache_key()),
            lambda: step_lib.traced_names(self.task.test_step, spec),
        )

    def columns(self, spec: Any) -> step_lib.Columns:
        """The layout of ``test_step``'s log vector for batches of ``spec``."""
        return step_lib.Columns(self.names(spec), flag=False, kinds=self.task.log_kinds())

    def evaluate(self, data: data_lib.Data, jit: Jit, name: str = "x") -> dict[str, float]:
        """The epoch values of ``test_step``'s logs over ``data`` (metrics reset first)."""
        columns = self.columns(data.batch_spec)
        self.task.reset_metrics()
        if isinstance(data, data_lib.ArrayData):
            logs, sizes = self._arrays(data, columns, jit)
        else:
            logs, sizes = self._batches(data, columns, jit, name)
        return columns.reduce(logs, sizes)

    def _step(self, spec: Any, columns: step_lib.Columns, jit: Jit) -> Any:
        task, dtype = self.task, step_lib.log_dtype(self.task)
        fn = step_lib.test_step(task, columns, dtype)
        return self.functions.compiled(
            ("eval", spec, task.cache_key()),
            lambda jit: function(fn, input_signature=[spec], jit_compile=jit),
            "evaluation step",
            jit,
        )

    def _batches(
        self, data: data_lib.Data, columns: step_lib.Columns, jit: Jit, name: str
    ) -> tuple[np.ndarray, np.ndarray]:
        fn = self._step(data.batch_spec, columns, jit)
        results: list[Any] = []
        sizes: list[Any] = []
        elements = iter(data.elements())
        while True:
            try:
                batch, size = next(elements)
            except StopIteration:
                break
            except tf.errors.OpError as err:  # the pipeline fails at this batch
                self._fail(err, name, len(results), None, data)
            try:
                results.append(fn(batch))
            except tf.errors.OpError as err:  # a batch the step cannot take
                self._fail(err, name, len(results), batch, data)
            sizes.append(size if size is not None else loops.batch_rows(batch))
        if not results:
            raise ValueError(f"`{name}` yielded no batches; the dataset is empty.")
        logs = tf.stack(results).numpy()
        bad = np.flatnonzero(~np.isfinite(logs).all(axis=1))
        if len(bad) and isinstance(data, data_lib.DatasetData):  # (XLA: bad labels give NaN)
            explained = guard.explain(
                FloatingPointError(),
                guard.batch_at(data.dataset, int(bad[0])),
                arg=name,
                where=f"at batch {int(bad[0])}",
                check=self._check,
            )
            if isinstance(explained, ValueError):
                raise explained
        return logs, np.array([int(s) for s in sizes], np.float64)

    @property
    def _check(self) -> Any:
        return guard.batch_checker(self.task, self.functions)

    def _fail(self, err: Exception, name: str, index: int, batch: Any, data: Any) -> NoReturn:
        """Raises the gradfit error for an evaluation batch that failed (``err`` if none fits)."""
        source = (lambda: batch) if batch is not None else guard.batch_at(data.dataset, index)
        guard.fail(err, source, arg=name, where=f"at batch {index}", check=self._check)

    def _arrays(
        self, data: data_lib.ArrayData, columns: step_lib.Columns, jit: Jit
    ) -> tuple[np.ndarray, np.ndarray]:
        """One call runs all full batches; a ragged last batch is one more call of the step.

        The loop takes any number of examples (no retracing for a new data
        size); its step, for a batch of exactly ``batch_size`` examples, is
        compiled on its own (with XLA when asked).
        """
        n, size = data.num_examples, data.batch_size
        full, rest = divmod(n, size)  # full >= 1: the batch size is at most n
        task, dtype = self.task, step_lib.log_dtype(self.task)
        spec = data.batch_spec
        batch = tf.nest.map_structure(lambda s: tf.TensorSpec([size, *s.shape[1:]], s.dtype), spec)
        key = ("eval-arrays", spec, size, task.cache_key())
        fn = step_lib.test_step(task, columns, dtype)
        step = self.functions.compiled(
            (*key, "step"),
            lambda jit: function(fn, input_signature=[batch], jit_compile=jit),
            "evaluation step",
            jit,
        )
        step.resolve(data_lib.example_batch(batch))
        inner, pack = step.function, data.pack
        arrays_spec = tuple(tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in data.arrays)
        loop = self.functions.get(
            (*key, "loop", step.jit_compile),
            lambda: function(
                loops.eval_loop(inner, pack, size, columns.width, dtype),
                input_signature=[arrays_spec],
            ),
        )
        logs = [loop(data.arrays).numpy()]
        sizes = np.full(full + (1 if rest else 0), size, np.float64)
        if rest:
            sizes[full] = rest
            calls = None if jit.steps is None else max(jit.steps // data.steps, 1)
            last = self._step(spec, columns, jit.runs(calls))
            tail = data.pack([t[full * size :] for t in data.arrays])
            logs.append(last(tail).numpy()[None])
        return np.concatenate(logs), sizes

    def predict(self, data: data_lib.Data, jit: Jit) -> Any:
        """``predict_step`` on every batch of features, concatenated (leaf by leaf, if nested)."""
        task, x_spec = self.task, data.x_spec  # the cached closure must not hold `data`
        fn = self.functions.compiled(
            ("predict", x_spec, task.cache_key()),
            lambda jit: function(
                step_lib.predict_step(task), input_signature=[x_spec], jit_compile=jit
            ),
            "prediction step",
            jit,
        )
        outputs = [fn(batch) for batch, _ in data.elements()]
        if not outputs:
            raise ValueError("`x` yielded no batches; the dataset is empty.")
        return tf.nest.map_structure(
            lambda *parts: np.concatenate([p.numpy() for p in parts], axis=0), *outputs
        )
