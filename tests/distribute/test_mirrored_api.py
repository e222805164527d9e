"""MirroredStrategy: evaluation, non-finite steps, backups across replica counts, refusals.

The measurements come from the group "api" of ``_mirrored_cases.py``, run
once (with test_mirrored.py's group) in a fresh process with two logical
CPUs by conftest.py's fixture; see that script for what every case does.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.distribute.test_mirrored import TOLERANCE, check_equal

pytestmark = pytest.mark.xdist_group("distribute-mirrored")  # with conftest.py's process


@pytest.fixture(scope="module")
def api(mirrored_cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return mirrored_cases["api"]


def test_evaluate_predict_and_validation(api: dict[str, Any]) -> None:
    result = api["evaluate_predict_validation"]
    check_equal(result)
    assert result["evaluate"] < TOLERANCE
    assert result["predict"] < TOLERANCE
    assert result["predict_shape"] == [30, 1]


def test_nonfinite_steps_are_skipped_on_every_replica(api: dict[str, Any]) -> None:
    check_equal(api["nonfinite_skip"])
    assert api["nonfinite_skip"]["last"]["nonfinite_steps"] == 1


def test_nonfinite_dataset_steps_are_skipped_on_every_replica(api: dict[str, Any]) -> None:
    check_equal(api["nonfinite_skip_dataset"])
    assert api["nonfinite_skip_dataset"]["last"]["nonfinite_steps"] == 1


def test_nonfinite_steps_raise_with_the_step(api: dict[str, Any]) -> None:
    result = api["nonfinite_raise"]
    check_equal(result)
    one, two = result["messages"]
    assert one == two and "epoch 0, step 1" in one


@pytest.mark.parametrize("case", ["epoch_2to1", "step_2to1", "step_1to2"])
def test_backups_resume_on_another_number_of_replicas(api: dict[str, Any], case: str) -> None:
    assert api["elastic_resume"][case] < TOLERANCE


def test_save_on_replicas_restore_on_one_device(api: dict[str, Any]) -> None:
    assert api["save_restore"]["restored"] == 0.0


def test_a_second_fit_traces_nothing_and_runs_without_xla(api: dict[str, Any]) -> None:
    result = api["tracing_and_jit"]
    assert result["traces"] == 1 and result["retraced"] == 0
    assert result["jit_compile"] is False
    assert result["in_scope_replicas"] == 2  # a trainer made in a scope takes its strategy


REFUSALS = {
    "keras_model_outside": ("ValueError", ["`task_or_model`", "strategy.scope()", "kernel"]),
    "built_model_outside": ("ValueError", ["strategy.scope()", "unbuilt"]),
    "keras_optimizer_outside": ("ValueError", ["strategy.scope()", "outside_adam/iteration"]),
    "jit_true": ("ValueError", ["`jit_compile`", "jit_compile=True"]),
    "one_device": ("ValueError", ["`strategy`", "OneDeviceStrategy"]),
    "not_a_strategy": ("TypeError", ["`strategy`", "strategy='mirrored'"]),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_bad_inputs_are_refused_clearly(api: dict[str, Any], name: str) -> None:
    kind, parts = REFUSALS[name]
    refused = api["refusals"][name]
    assert refused["type"] == kind, refused
    for part in parts:
        assert part in refused["message"], (part, refused["message"])


def test_refusals_change_nothing(api: dict[str, Any]) -> None:
    assert api["refusals"]["keras_model_unchanged"] == 0.0
    assert api["refusals"]["rule_iterations"] == 0
