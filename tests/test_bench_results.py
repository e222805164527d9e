"""bench_fit.py rewrites its own sections of RESULTS.md and keeps everyone else's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fit.py"


def test_a_new_run_replaces_its_own_sections_and_keeps_the_others():
    spec = importlib.util.spec_from_file_location("bench_fit", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    old = (
        "# results\n\nrun 1\n\n### (a) x\n\nold a\n\n### First fit\n\nkept\n\n"
        "### Headline ratios\n\nold h\n\n### Notes\n\n- a note\n"
    )
    new = "# results\n\nrun 2\n\n### (a) x\n\nnew a\n\n### Headline ratios\n\nnew h"
    merged = bench.with_other_sections(new, old)
    assert merged == new + "\n\n### First fit\n\nkept\n\n### Notes\n\n- a note"
    assert bench.with_other_sections(new, "") == new
