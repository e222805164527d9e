"""MirroredStrategy: mixed precision, and uses that are refused clearly (review cases).

The measurements come from ``_review_cases.py``, run once in a fresh
process (two logical CPUs, with the other small case scripts: conftest.py);
see that script for what every case does.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.xdist_group("distribute-small")  # with conftest.py's process

# float16 computation: the replicas' partial sums round differently from one device's.
HALF_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def review(small_cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return small_cases["review"]  # (conftest.py runs the case scripts in one process)


@pytest.mark.parametrize("name", ["finite", "overflow"])
def test_mixed_precision_trains_as_one_device(review: dict[str, Any], name: str) -> None:
    result = review["mixed_precision"]
    assert "error" not in result, result
    result = result[name]
    assert result["variables"] < HALF_TOLERANCE, result
    assert result["spread"] == 0.0, result  # every replica applied (or skipped) the same steps
    one, two = result["iterations"]
    assert one == two and result["scale"][0] == result["scale"][1], result


def test_an_overflow_on_one_replica_skips_the_step_on_all(review: dict[str, Any]) -> None:
    result = review["mixed_precision"]["overflow"]
    assert result["iterations"] == [8, 8]  # 10 steps, the overflowing batch skipped twice
    assert result["scale"] == [64.0, 64.0]  # 256 halved twice


@pytest.mark.parametrize("name", ["plain", "mirrored", "evaluate", "predict"])
def test_a_call_inside_another_strategys_scope_is_refused(
    review: dict[str, Any], name: str
) -> None:
    refused = review["another_strategys_scope"][name]
    assert refused["type"] == "ValueError", refused
    assert "inside the scope of another strategy" in refused["message"], refused
    assert review["another_strategys_scope"]["built"] == [0, 0]


def test_an_already_distributed_dataset_is_refused(review: dict[str, Any]) -> None:
    refused = review["distributed_dataset"]
    assert refused["type"] == "TypeError", refused
    assert "`x`" in refused["message"] and "distributed already" in refused["message"], refused


def test_global_batch_size_recipe_for_a_sum_loss_equals_one_device(review: dict[str, Any]) -> None:
    result = review["sum_loss_recipe"]
    assert "error" not in result, result
    assert result["variables"] < 1e-5 and result["loss"] < 1e-4, result  # (a loss of ~100)
