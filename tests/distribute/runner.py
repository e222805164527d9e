"""Runs a distribution script in a fresh process (its devices configured before TF starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SRC = HERE.parent.parent / "src"


def environment(**extra: str) -> dict[str, str]:
    """The child's environment: this checkout's gradfit first, TensorFlow quiet."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("TF_CONFIG", None)
    return {**env, **extra}


def run_json(script: str, *args: str, timeout: float) -> dict[str, Any]:
    """Runs ``tests/distribute/<script> args`` and returns the JSON object on its last line.

    The child is killed if it outlives ``timeout`` seconds (then the test fails).
    """
    child = subprocess.Popen(
        [sys.executable, str(HERE / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        out, err = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    lines = out.strip().splitlines()
    assert child.returncode == 0 and lines, f"{script} {args} failed:\n{err[-4000:]}"
    return json.loads(lines[-1])
