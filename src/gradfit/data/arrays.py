"""In-memory data: features, targets and sample weights on the device, sliced into batches.

The compiled loops see :attr:`ArrayData.arrays`, a flat tuple of tensors
with the examples first (every leaf of ``x``, then of ``y``, then the
weights), and hand a task :meth:`ArrayData.pack` of their slices: ``x``,
``(x, y)`` or ``(x, y, w)``, each in its own nested structure.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from gradfit.data.structure import batch_of, batch_spec


@dataclass
class ArrayData:
    """In-memory examples, sliced into batches of ``batch_size``.

    Attributes:
        x: Features, examples first: a tensor or a nested structure of them.
        y: Targets (``None`` for ``predict``), examples first, likewise.
        batch_size: Examples per batch; the last batch may be smaller.
        sample_weight: One weight per example (``[N]``), or ``None``.
    """

    x: Any
    y: Any
    batch_size: int
    sample_weight: tf.Tensor | None = None

    @property
    def num_examples(self) -> int:
        """Number of examples."""
        return int(tf.nest.flatten(self.x)[0].shape[0])

    @property
    def steps(self) -> int:
        """Number of batches per pass over the data."""
        return math.ceil(self.num_examples / self.batch_size)

    @property
    def x_spec(self) -> Any:
        """Spec of a batch of features (examples axis of unknown size)."""
        return batch_spec(self.x)

    @property
    def y_spec(self) -> Any:
        """Spec of a batch of targets (examples axis of unknown size), or ``None``."""
        return None if self.y is None else batch_spec(self.y)

    @property
    def weight_spec(self) -> tf.TensorSpec | None:
        """Spec of a batch of sample weights, or ``None``."""
        return None if self.sample_weight is None else batch_spec(self.sample_weight)

    @property
    def structure(self) -> Any:
        """The whole data as a task sees a batch: ``x``, ``(x, y)`` or ``(x, y, w)``."""
        return batch_of(self.x, self.y, self.sample_weight)

    @property
    def arrays(self) -> tuple[tf.Tensor, ...]:
        """The tensors a batch is sliced from: every leaf of :attr:`structure`, flat."""
        return tuple(tf.nest.flatten(self.structure))

    @property
    def batch_spec(self) -> Any:
        """The spec of a batch as a task sees it (the structure of :attr:`structure`)."""
        return batch_spec(self.structure)

    @tf.autograph.experimental.do_not_convert  # plain Python over static values
    def pack(self, tensors: Sequence[tf.Tensor]) -> Any:
        """The batch a task sees from tensors sliced like :attr:`arrays`."""
        return tf.nest.pack_sequence_as(self.batch_spec, list(tensors))

    def elements(self) -> Iterator[tuple[Any, int]]:
        """Yields ``(batch, batch_size)`` for one pass over the data, in order."""
        n, size = self.num_examples, self.batch_size
        arrays = self.arrays
        for start in range(0, n, size):
            stop = min(start + size, n)
            if start == 0 and stop == n:
                yield self.structure, n
            else:
                yield self.pack([t[start:stop] for t in arrays]), stop - start

    def batches(self) -> Iterator[tuple[Any, Any, int]]:
        """Yields ``(x_batch, y_batch, batch_size)`` for one pass (``y_batch`` may be ``None``)."""
        for batch, size in self.elements():
            if self.y is None:
                yield batch, None, size
            else:
                yield batch[0], batch[1], size


def example_batch(spec: Any) -> Any:
    """An all-zero batch of the structure ``spec`` (nested ``tf.TensorSpec``), static shapes.

    Unknown per-example sizes are 1; the number of examples is the specs'
    own when they fix it, else one no per-example dimension has, so shapes
    cannot match by luck.
    """
    specs = tf.nest.flatten(spec)
    dims = [[d or 1 for d in s.shape[1:]] for s in specs]
    fixed = {s.shape[0] for s in specs} - {None}
    if len(fixed) == 1:
        n = fixed.pop()
    else:
        n = next(k for k in range(2, 2**31) if all(k not in d for d in dims))
    zeros = [tf.zeros([n, *d], s.dtype) for s, d in zip(specs, dims, strict=True)]
    return tf.nest.pack_sequence_as(spec, zeros)
