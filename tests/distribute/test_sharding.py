"""In-memory data is sharded onto the replicas' devices: each holds only the rows it trains on.

The measurements come from ``_sharding_script.py``, run in a fresh process
(two logical CPUs) with the other small case scripts (conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.xdist_group("distribute-small")  # with conftest.py's process

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def result(small_cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return small_cases["sharding"]  # (conftest.py runs the case scripts in one process)


def devices(shards: list[dict[str, Any]]) -> list[str]:
    return [shard["device"].rsplit("/", 1)[-1] for shard in shards]


def test_each_replica_holds_its_rows_of_every_batch_on_its_device(result: dict[str, Any]) -> None:
    # 11 rows in batches of 4 over 2 replicas: batches [0-3] [4-7] [8-10], split 2+2, 2+2, 2+1.
    placement = result["placement"]
    assert [s["rows"] for s in placement["ordered"]] == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10]]
    # Shuffled by the order [3, 9, 0, 7, 1, 10, 5, 2, 8, 4, 6]: the same positions of it.
    assert [s["rows"] for s in placement["shuffled"]] == [[3, 9, 1, 10, 8, 4], [0, 7, 5, 2, 6]]
    assert placement["targets_follow"] == 0.0  # every array's rows are the same rows
    for shards in (placement["ordered"], placement["shuffled"]):
        assert devices(shards) == ["device:CPU:0", "device:CPU:1"]


@pytest.mark.parametrize("kind", ["ordered", "shuffled"])
def test_a_sharded_fit_equals_one_device(result: dict[str, Any], kind: str) -> None:
    # Batches of 15 split 8 + 7 (and the last, of 10, 5 + 5): shards of unequal sizes.
    fit = result["fits"][kind]
    assert fit["variables"] < TOLERANCE
    assert fit["logs"] < TOLERANCE


def test_ordered_data_is_sharded_once_per_fit(result: dict[str, Any]) -> None:
    (placed,) = result["fits"]["ordered"]["placed"]
    assert devices(placed) == ["device:CPU:0", "device:CPU:1"]
    assert [len(s["rows"]) for s in placed] == [4 * 8 + 5, 4 * 7 + 5]
    assert placed[0]["rows"][:10] == [*range(8), *range(15, 17)]
    assert sorted(placed[0]["rows"] + placed[1]["rows"]) == list(range(70))


def test_shuffled_data_is_sharded_once_per_epoch_in_its_order(result: dict[str, Any]) -> None:
    placed = result["fits"]["shuffled"]["placed"]
    assert len(placed) == 3  # one placement per epoch, none before
    for epoch in placed:
        assert devices(epoch) == ["device:CPU:0", "device:CPU:1"]
        assert [len(s["rows"]) for s in epoch] == [37, 33]
        assert sorted(epoch[0]["rows"] + epoch[1]["rows"]) == list(range(70))
    orders = [epoch[0]["rows"] + epoch[1]["rows"] for epoch in placed]
    assert len({tuple(order) for order in orders}) == 3  # every epoch draws its own order
    assert orders[0] != sorted(orders[0])
