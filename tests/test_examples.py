"""The examples run, and linear_regression.py prints what the tutorial's loop prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.test_trainer import tutorial_loop

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LINE = re.compile(r"^Epoch +(\d+): W=(\d+\.\d\d) b=(-?\d+\.\d\d), loss=(\d+\.\d{5})$")


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=True,
    )


@pytest.mark.slow
def test_linear_regression_prints_the_tutorials_lines_and_saves_figures(tmp_path):
    result = run("linear_regression.py", "--out-dir", str(tmp_path), cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert len(lines) == 10
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [int(m.group(1)) for m in matches] == list(range(10))

    # The same numbers from the tutorial's own loop on the example's data.
    sys.path.insert(0, str(EXAMPLES))
    try:
        import linear_regression
    finally:
        sys.path.pop(0)
    Ws, bs, losses, _ = tutorial_loop(*linear_regression.make_data())
    expected = [
        "Epoch %2d: W=%1.2f b=%1.2f, loss=%2.5f" % (e, Ws[e], bs[e], losses[e])  # noqa: UP031
        for e in range(10)
    ]
    assert lines == expected
    for name in ("linear_regression_fit.png", "linear_regression_variables.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_linear_regression_no_plot_writes_no_files(tmp_path):
    run("linear_regression.py", "--no-plot", "--out-dir", str(tmp_path), cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_custom_update_rule_example_trains(tmp_path):
    out = run("custom_update_rule.py", cwd=tmp_path).stdout
    first, last = map(float, re.search(r"loss: ([\d.]+) -> ([\d.]+)", out).groups())
    assert last < first / 100


@pytest.mark.slow
def test_gan_example_learns_the_ring_and_writes_its_figure(tmp_path):
    out = run("gan.py", "--epochs", "25", "--out", "samples.png", cwd=tmp_path).stdout
    mean, std = map(float, re.search(r"radius: mean ([\d.]+), std ([\d.]+)", out).groups())
    assert abs(mean - 2.0) < 0.25  # the ring's radius is 2; an untrained generator is near 0
    assert std < 0.6
    assert (tmp_path / "samples.png").stat().st_size > 10_000
    assert re.search(r"Epoch +24: d_loss=[\d.]+ g_loss=[\d.]+", out)


@pytest.mark.slow
def test_keras_digits_learns_the_rare_classes_too(tmp_path):
    result = run("keras_digits.py", "--epochs", "10", cwd=tmp_path)
    lines = result.stdout.splitlines()
    epochs = [line for line in lines if line.startswith("Epoch")]
    assert len(epochs) == 10
    last = dict(part.split("=") for part in epochs[-1].split(": ")[1].split())
    assert float(last["accuracy"]) > 0.85 and float(last["val_accuracy"]) > 0.85
    rare = float(lines[-1].rsplit(" ", 1)[1])
    assert rare > 0.8  # the class weights keep the rare classes learned
