"""MirroredStrategy: unknown-length datasets, Keras metrics, grad_norm, Keras clipping, BatchNorm.

The measurements come from ``_more_cases.py``, run once in a fresh process
(two logical CPUs, with the other small case scripts: conftest.py); see
that script for what every case does. Each is a difference from a
reference: one device on the same global batches, or Keras's own ``fit``
under the same strategy.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.xdist_group("distribute-small")  # with conftest.py's process

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def more(small_cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return small_cases["more"]  # (conftest.py runs the case scripts in one process)


def check_equal(result: dict[str, Any], steps: int) -> None:
    """Variables, epoch logs and every step's logs as the reference's; ``steps`` steps ran."""
    assert "error" not in result, result
    assert result["variables"] < TOLERANCE, result
    assert result["steps"] == steps, result
    for name, difference in [*result["epoch"].items(), *result["step"].items()]:
        assert difference < TOLERANCE, (name, result)


def test_an_unknown_length_dataset_trains_many_steps_per_call(more: dict[str, Any]) -> None:
    # Batches 16, 16, 16, 16, 1 (one replica empty) through a filter, 3 steps per call.
    result = more["unknown_length"]
    assert result["cardinality"] == -2  # tf.data.UNKNOWN_CARDINALITY
    check_equal(result, steps=10)


def test_a_generator_dataset_trains_whole_epochs_per_call(more: dict[str, Any]) -> None:
    result = more["generator_whole_epoch_per_call"]
    assert result["cardinality"] == -2
    check_equal(result, steps=10)


def test_keras_metrics_are_global_in_steps_epochs_validation_and_evaluate(
    more: dict[str, Any],
) -> None:
    result = more["keras_metrics_and_grad_norm"]
    check_equal(result, steps=10)
    for name in ("kacc", "wkacc", "wkloss"):
        assert result["step"][name] < TOLERANCE
        assert result["epoch"][name] < TOLERANCE and result["epoch"][f"val_{name}"] < TOLERANCE
        assert result["evaluate"][name] < TOLERANCE
    assert 0.0 < result["last"]["kacc"] < 1.0  # (a value an error of one replica would move)


def test_an_auc_on_an_unknown_length_dataset_is_global(more: dict[str, Any]) -> None:
    result = more["unknown_length"]
    assert result["step"]["auc"] < TOLERANCE and result["epoch"]["auc"] < TOLERANCE
    assert 0.5 < result["last"]["auc"] < 1.0


def test_grad_norm_is_the_global_gradients_norm(more: dict[str, Any]) -> None:
    result = more["keras_metrics_and_grad_norm"]
    assert result["step"]["grad_norm"] < TOLERANCE
    assert min(result["norms"]) > 0.1  # real norms, not zeros


def test_a_task_of_its_own_gives_its_running_logs(more: dict[str, Any]) -> None:
    check_equal(more["custom_task_running_mean"], steps=10)


@pytest.mark.parametrize("option", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_keras_optimizers_clip_the_global_gradient(more: dict[str, Any], option: str) -> None:
    result = more["keras_clipping"][option]
    check_equal(result, steps=4)
    assert max(result["norms"]) > 5.0  # the gradients exceed every bound: clipping acts


def test_batchnorm_trains_as_keras_fit_under_the_strategy(more: dict[str, Any]) -> None:
    result = more["batchnorm_against_keras_fit"]
    assert "error" not in result, result
    assert result["moving_count"] == 2
    assert result["variables"] < TOLERANCE and result["moving"] < TOLERANCE
    assert result["loss"] < TOLERANCE
    # Each replica normalises by its own batch's statistics, as in Keras: not one device.
    assert result["one_device"] > 1e-3


def test_synchronized_batchnorm_equals_one_device(more: dict[str, Any]) -> None:
    result = more["synchronized_batchnorm"]
    assert "error" not in result, result
    assert result["variables"] < TOLERANCE and result["loss"] < TOLERANCE
    assert result["evaluate"] < TOLERANCE


REFUSALS = {
    "mean_aggregated": ("ValueError", ["`metrics`", "'mean_aggregated'", "MEAN", "MeanAggregated"]),
    "no_running_logs": ("ValueError", ["`task_or_model`", "mean_loss", "running_logs()"]),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_bad_inputs_are_refused_clearly_before_any_change(more: dict[str, Any], name: str) -> None:
    kind, parts = REFUSALS[name]
    refused = more["refusals"][name]
    assert refused["type"] == kind, refused
    for part in parts:
        assert part in refused["message"], (part, refused["message"])
    assert more["refusals"]["rule_iterations"] == 0
    assert more["refusals"]["custom_iterations"] == 0
