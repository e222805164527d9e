"""``python -m gradfit.distribute.launch``: TF_CONFIG per worker, prefixed output, fail-fast."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gradfit.distribute import launch

ECHO = """
import json, os
config = json.loads(os.environ["TF_CONFIG"])
print("index", config["task"]["index"], "of", ",".join(config["cluster"]["worker"]))
print("args", os.sys.argv[1:])
"""

FAIL_ONE = """
import json, os, sys, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
if index == 1:
    time.sleep(0.2)
    sys.exit(5)
time.sleep(60)
open(sys.argv[1], "w").write("finished")
"""


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def lines_of(out: str, worker: int) -> list[str]:
    prefix = f"[worker {worker}] "
    return [line[len(prefix) :] for line in out.splitlines() if line.startswith(prefix)]


def test_every_worker_gets_its_tf_config_and_its_output_is_prefixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launch.main(["--workers", "3", script(tmp_path, "echo.py", ECHO), "a", "--b"]) == 0
    out = capsys.readouterr().out
    seen = []
    for worker in range(3):
        index_line, args_line = lines_of(out, worker)
        words = index_line.split()
        assert words[:2] == ["index", str(worker)]
        seen.append(words[3])
        assert args_line == "args ['a', '--b']"
    addresses = seen[0].split(",")
    assert seen == [seen[0]] * 3 and len(set(addresses)) == 3  # one cluster, three ports
    assert all(address.startswith("127.0.0.1:") for address in addresses)


def test_a_failing_worker_stops_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    finished = tmp_path / "finished"
    status = launch.main(["--workers", "2", script(tmp_path, "fail.py", FAIL_ONE), str(finished)])
    assert status == 5  # the failing worker's status
    assert not finished.exists()  # worker 0 was stopped, not left to sleep its 60 s
    assert "worker 1 failed (exit status 5)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [(["--workers", "0", "x.py"], "--workers 0"), (["--workers", "2", "missing.py"], "missing.py")],
)
def test_bad_arguments_are_refused_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    (tmp_path / "x.py").write_text("")
    argv = [str(tmp_path / a) if a.endswith(".py") else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        launch.main(argv)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
