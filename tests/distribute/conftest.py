"""Fixtures shared by the distribution tests' modules.

``mirrored_cases`` runs ``_mirrored_cases.py`` once for the session, in one
fresh process, for both modules that check its groups (test_mirrored.py and
test_mirrored_api.py): starting a process with two logical devices costs
seconds. Both modules are in the xdist group ``distribute-mirrored``, so
under ``--dist loadgroup`` one worker runs them and the process once.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.distribute.runner import run_json


@pytest.fixture(scope="session")
def mirrored_cases() -> dict[str, dict[str, Any]]:
    """``{group: {case: measurements}}`` for the groups "training" and "api"."""
    return run_json("_mirrored_cases.py", "training", "api", timeout=480)
