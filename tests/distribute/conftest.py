"""Fixtures shared by the distribution tests' modules.

``mirrored_cases`` runs ``_mirrored_cases.py`` once for the session, in one
fresh process, for both modules that check its groups (test_mirrored.py and
test_mirrored_api.py): starting a process with two logical devices costs
seconds. Both modules are in the xdist group ``distribute-mirrored``, so
under ``--dist loadgroup`` one worker runs them and the process once.
``small_cases`` does the same for the smaller case scripts
(``_small_cases.py``: test_sharding.py, test_mirrored_more.py,
test_review.py and test_keras_cond.py, the xdist group ``distribute-small``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.distribute.runner import run_json


@pytest.fixture(scope="session")
def mirrored_cases() -> dict[str, dict[str, Any]]:
    """``{group: {case: measurements}}`` for the groups "training" and "api"."""
    return run_json("_mirrored_cases.py", "training", "api", timeout=480)


@pytest.fixture(scope="session")
def small_cases() -> dict[str, dict[str, Any]]:
    """``{module: results}`` for the sharding, more, review and keras_cond case scripts."""
    return run_json("_small_cases.py", timeout=480)
