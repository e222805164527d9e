"""MirroredStrategy: a gf.KerasOptimizer updating inside gradfit's conditionals.

``gf.accumulate(n, gf.KerasOptimizer(...))`` and dynamic loss scaling with
a Keras optimizer train on two replicas as on one device; Keras's own
``gradient_accumulation_steps`` is refused. The measurements come from
``_keras_cond_cases.py``, run once in a fresh process (two logical CPUs)
with the other small case scripts (conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.xdist_group("distribute-small")  # with conftest.py's process

# float16 computation: the replicas' partial sums round differently from one device's.
HALF_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def cases(small_cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return small_cases["keras_cond"]  # (conftest.py runs the case scripts in one process)


def test_accumulate_with_a_keras_optimizer_equals_one_device(cases: dict[str, Any]) -> None:
    result = cases["accumulate"]
    assert "error" not in result, result
    assert result["variables"] < 1e-5 and result["spread"] == 0.0, result
    assert result["count"][0] == result["count"][1], result
    assert result["iterations"] == [10, 10] and result["updates"] == [5, 5], result


@pytest.mark.parametrize("name", ["finite", "overflow"])
def test_mixed_precision_with_a_keras_optimizer_equals_one_device(
    cases: dict[str, Any], name: str
) -> None:
    result = cases["mixed_precision"]
    assert "error" not in result, result
    result = result[name]
    assert result["variables"] < HALF_TOLERANCE, result
    assert result["spread"] == 0.0, result  # every replica applied (or skipped) the same steps
    assert result["iterations"][0] == result["iterations"][1], result
    assert result["keras_iterations"][0] == result["keras_iterations"][1], result
    assert result["scale"][0] == result["scale"][1], result


def test_an_overflow_on_one_replica_skips_the_keras_update_on_all(cases: dict[str, Any]) -> None:
    result = cases["mixed_precision"]["overflow"]
    assert result["keras_iterations"] == [8, 8]  # 10 steps, the overflowing batch skipped twice
    assert result["scale"] == [64.0, 64.0]  # 256 halved twice


def test_keras_gradient_accumulation_is_refused(cases: dict[str, Any]) -> None:
    refused = cases["keras_accumulation"]
    assert refused["type"] == "ValueError", refused
    for part in ("`task_or_model`", "gf.accumulate(n", "Received: gradient_accumulation_steps=2"):
        assert part in refused["message"], (part, refused)
    assert refused["changed"] == 0, refused  # no update made (nor a counter moved)
