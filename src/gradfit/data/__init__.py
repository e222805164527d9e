"""Inputs: validation, conversion and batching of everything ``fit`` receives.

Everything a user hands to ``fit``, ``evaluate`` or ``predict`` passes
through here once, before any variable changes: array-likes are checked
and converted leaf by leaf (:mod:`~gradfit.data.tensors`), nested dicts,
tuples and lists keep their structure (:mod:`~gradfit.data.structure`),
sample and class weights become one weight per example
(:mod:`~gradfit.data.weights`), and the result is in-memory
:class:`ArrayData` (:mod:`~gradfit.data.arrays`) or a checked
``tf.data`` input, :class:`DatasetData` (:mod:`~gradfit.data.datasets`).
"""

from gradfit.data.arrays import ArrayData, example_batch
from gradfit.data.datasets import DatasetData, from_dataset
from gradfit.data.prepare import Data, prepare
from gradfit.data.structure import batch_spec, is_structure
from gradfit.data.tensors import CHUNK_BYTES, CHUNKED_BYTES, describe, to_tensor

__all__ = [
    "CHUNKED_BYTES",
    "CHUNK_BYTES",
    "ArrayData",
    "Data",
    "DatasetData",
    "batch_spec",
    "describe",
    "example_batch",
    "from_dataset",
    "is_structure",
    "prepare",
    "to_tensor",
]
