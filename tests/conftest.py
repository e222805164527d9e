"""Shared test configuration: quiet TensorFlow, deterministic hypothesis profiles."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from hypothesis import HealthCheck, settings

# TensorFlow calls are slow and their first call traces: no deadlines, a few
# dozen examples per property, and no complaints about slow data generation.
settings.register_profile(
    "gradfit",
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile(
    "thorough", parent=settings.get_profile("gradfit"), max_examples=300, derandomize=False
)
settings.load_profile(os.environ.get("GRADFIT_HYPOTHESIS_PROFILE", "gradfit"))
