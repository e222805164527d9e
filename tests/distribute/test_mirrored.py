"""MirroredStrategy on two logical CPUs trains exactly as one device on the same global batch.

Each check's measurements come from the group "training" of
``_mirrored_cases.py``, run once (with test_mirrored_api.py's group) in a
fresh process by conftest.py's fixture -- its two logical devices must be
configured before TensorFlow starts; see that script for what every case trains.
"""

from __future__ import annotations

from typing import Any

import pytest

# One worker runs this module's and test_mirrored_api.py's tests, so their process runs once.
pytestmark = pytest.mark.xdist_group("distribute-mirrored")  # with conftest.py's process

TOLERANCE = 1e-5
TRAINING = [
    "sgd_momentum_ordered",
    "sgd_momentum_shuffled",
    "adam",
    "chain_clip_adam",
    "accumulate_sgd",
    "keras_optimizer",
    "empty_replica",
    "full_batch",
    "steps_per_execution",
    "custom_task",
    "dataset_input",
    "dataset_empty_replica",
    "weighted_metrics",
    "keras_model",
    "user_rule",
    "keras_cnn",
]


@pytest.fixture(scope="module")
def training(mirrored_cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return mirrored_cases["training"]


def check_equal(result: dict[str, Any]) -> None:
    assert "error" not in result, result.get("error")
    assert result["replicas"] == 2
    assert result["copies"] == 0.0  # the replicas' copies of every variable stay identical
    assert result["variables"] < TOLERANCE
    if "logs" in result:
        assert result["logs"] < TOLERANCE


@pytest.mark.parametrize("name", TRAINING)
def test_training_equals_one_device(training: dict[str, Any], name: str) -> None:
    check_equal(training[name])


def test_every_training_case_ran(training: dict[str, Any]) -> None:
    assert sorted(training) == sorted(TRAINING)


def test_training_moves_the_variables(training: dict[str, Any]) -> None:
    # The comparisons are of runs that learn: the tutorial's full-batch fit gets close to the
    # noise (0.01 per example) from a loss of several units, and each run logs a finite loss.
    assert training["full_batch"]["loss"] < 0.5
    for name in TRAINING:
        assert 0 < training[name]["loss"] < 10, name


def test_batch_logs_are_the_global_batches(training: dict[str, Any]) -> None:
    result = training["steps_per_execution"]
    assert result["batches"] == 10  # 2 epochs of 5 steps, replayed from calls of 3 steps
    assert result["batch_logs"] < TOLERANCE


def test_a_custom_task_sees_the_global_batch_size(training: dict[str, Any]) -> None:
    # Epoch mean of the batch sizes, weighted by themselves: (4 * 16 * 16 + 6 * 6) / 70.
    assert abs(training["custom_task"]["last"]["examples"] - 1060 / 70) < 1e-9


def test_metrics_are_the_global_batches(training: dict[str, Any]) -> None:
    last = training["keras_model"]["last"]
    assert 0 < last["mae"] < 2
