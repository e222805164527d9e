"""Every Python block of README.md and docs/ runs, page by page; the figures stay drawable.

Each page is one test: its blocks run top to bottom in one namespace, in a
fresh working directory, and a block followed by an output block must print
exactly that (see :mod:`tests.docs_blocks`). The site's build, its API
reference and its rendering in a browser are in ``test_docs_site.py``.
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests import docs_blocks
from tests.docs_blocks import DOCS, PYTHON, ROOT, Block, blocks, pages, run_page

FIGURES = DOCS / "figures"
IMAGE = re.compile(r"!\[[^\]]*\]\((?P<path>[^)\s]+)\)")


def python_blocks(path):
    return [block for block in blocks(path) if block.language in PYTHON]


# docs/index.md shows the README's blocks (a snippet include): they run once, as the README's.
RUNNABLE = [path for path in pages() if python_blocks(path) and path != DOCS / "index.md"]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda path: str(path.relative_to(ROOT)))
def test_page_runs_top_to_bottom(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_page(page) == len([b for b in python_blocks(page) if not b.skip])


def test_every_python_block_runs():
    everything = [block for path in pages() for block in python_blocks(path)]
    skipped = [f"{block.page}:{block.line}" for block in everything if block.skip]
    assert skipped == []  # no block needs what CI cannot have; a skip would say why
    # The parser misses no fence: every ```python line of the expanded pages is a block.
    fences = sum(
        1
        for path in pages()
        for line in docs_blocks.expand(path)
        if re.match(r"^\s*```\s*python\b", line)
    )
    assert len(everything) == fences
    assert {block.page for block in everything} >= {"README.md", "docs/index.md"}
    assert len(everything) >= 40


def test_the_home_page_shows_the_readme_it_includes():
    readme = [b.code for b in python_blocks(ROOT / "README.md")]
    home = [b.code for b in python_blocks(DOCS / "index.md")]
    assert readme and home == readme  # the README's taste, word for word


def test_the_readme_stays_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 120
    assert 'pip install -e ".[plot]" && python examples/linear_regression.py' in text
    assert 'pip install -e ".[dev]" && python -m pytest' in text
    # Every link into the docs names a page that exists.
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert links and all((ROOT / link).is_file() for link in links)


# -- the harness can fail ------------------------------------------------------


def write(tmp_path, text):
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    return page


def test_a_block_that_raises_fails_its_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = write(tmp_path, "# P\n\n```python\nx = 1\n```\n\n```python\nx / 0\n```\n")
    with pytest.raises(AssertionError, match=r"page\.md, the block at line 7 raised ZeroDiv"):
        run_page(page)


def test_a_block_that_prints_otherwise_fails_its_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = "```python\nprint(1 + 1)\n```\n\n<!-- docs-test: output -->\n```text\n3\n```\n"
    with pytest.raises(AssertionError, match="printed\n2\ninstead of the page's\n3"):
        run_page(write(tmp_path, text))


def test_blocks_share_one_namespace_and_skips_need_a_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (
        "```python\nx = 2\n```\n\n<!-- docs-test: skip needs a GPU -->\n```python\n1 / 0\n```\n\n"
        "- a list\n\n    ```python\n    print(x * 3)\n    ```\n\n"
        "<!-- docs-test: output -->\n```text\n6\n```\n"
    )
    page = write(tmp_path, text)
    assert [(b.language, b.skip) for b in blocks(page)] == [
        ("python", None),
        ("python", "needs a GPU"),
        ("python", None),
    ]
    assert run_page(page) == 2


def test_includes_are_expanded_as_the_site_shows_them(tmp_path):
    assert isinstance(python_blocks(DOCS / "index.md")[0], Block)
    speed = "\n".join(docs_blocks.expand(DOCS / "guides" / "speed.md"))
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    assert results.split("\n", 1)[1].strip() in speed  # RESULTS.md, less its title


# -- figures -----------------------------------------------------------------


def figure_script():
    spec = importlib.util.spec_from_file_location("make_figures", FIGURES / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_figures_are_committed_small_and_shown():
    committed = {path.name for path in FIGURES.glob("*.png")}
    shown = set()
    for path in pages():
        for match in IMAGE.finditer(path.read_text(encoding="utf-8")):
            target = (path.parent / match["path"]).resolve()
            assert target.is_file(), f"{path.name} shows a missing image {match['path']}"
            shown.add(target.name)
    assert (
        committed
        == shown
        == {
            "linear_regression_fit.png",
            "linear_regression_variables.png",
            "convergence.png",
            "gan_samples.png",
        }
    )
    for name in committed:
        assert (FIGURES / name).stat().st_size < 150_000, name


def test_the_figure_script_still_draws(tmp_path):
    # The tutorial's figures in full (ten full-batch steps), the convergence figure
    # quick; the GAN's comes from examples/gan.py, which test_examples.py runs.
    written = figure_script().main(
        ["tutorial", "convergence", "--quick", "--out-dir", str(tmp_path)]
    )
    assert sorted(path.name for path in written) == [
        "convergence.png",
        "linear_regression_fit.png",
        "linear_regression_variables.png",
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
