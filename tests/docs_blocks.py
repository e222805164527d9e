"""Finds and runs the Python code blocks of the Markdown pages (README.md and docs/).

A page is a script: its ```` ```python ```` blocks run top to bottom in one
namespace, in a fresh working directory, as a reader would paste them. Two
HTML comments, invisible on the rendered page, steer a block:

* ``<!-- docs-test: skip REASON -->`` on the line before a block skips it;
  the page itself must say why too (a skip needs a reason of a few words).
* ``<!-- docs-test: output -->`` on the line before a ```` ```text ```` block
  makes it the expected standard output of the Python block before it,
  compared line by line with trailing spaces stripped.

``--8<-- "path"`` and ``--8<-- "path:section"`` lines (the
``pymdownx.snippets`` includes the site is built with) are expanded first, so
an included block runs on the page that shows it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import linecache
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s+(?P<reason>.+?)\s*-->\s*$")
_OUTPUT = re.compile(r"^\s*<!--\s*docs-test:\s*output\s*-->\s*$")
_SNIPPET = re.compile(r"""^\s*-{1,}8<-{1,}\s+(?P<q>["'])(?P<path>.+?)(?P=q)\s*$""")
_SECTION = re.compile(r"-{1,}8<-{1,}\s+\[\s*(?P<kind>start|end)\s*:\s*(?P<name>[-\w]+)\s*\]")
PYTHON = frozenset({"python", "py", "python3"})


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a page.

    Attributes:
        page: The page's path, relative to the repository root.
        line: The line of the opening fence in the expanded page (1-based).
        language: The fence's language (its info string's first word).
        code: The block's text, dedented to its fence.
        skip: Why the block is not run, or ``None``.
        expected_output: For a Python block, the text block that must equal
            its standard output, or ``None``.
    """

    page: str
    line: int
    language: str
    code: str
    skip: str | None = None
    expected_output: str | None = None


def _section(lines: list[str], name: str, path: Path) -> list[str]:
    """The lines between ``--8<-- [start:name]`` and ``--8<-- [end:name]``, markers dropped."""
    out: list[str] = []
    inside = found = False
    for line in lines:
        marker = _SECTION.search(line)
        if marker and marker["name"] == name:
            inside = marker["kind"] == "start"
            found = found or inside
            continue
        if inside and not marker:
            out.append(line)
    if not found:
        raise ValueError(f"{path}: no snippet section {name!r}")
    return out


def expand(path: Path) -> list[str]:
    """A page's lines with its ``--8<--`` includes expanded (and section markers dropped)."""
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _SNIPPET.match(line)
        if match is None:
            if not _SECTION.search(line):
                out.append(line)
            continue
        target, _, spec = match["path"].partition(":")
        included = (ROOT / target).read_text(encoding="utf-8").splitlines()
        if spec and spec[0].isalpha():
            included = _section(included, spec, ROOT / target)
        elif spec:
            start, _, end = spec.partition(":")
            included = included[int(start) - 1 : int(end) if end else None]
        out.extend(line for line in included if not _SECTION.search(line))
    return out


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, with its skip reason and expected output."""
    lines = expand(path)
    page = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        language = (match["info"].split() or [""])[0].lstrip(".{").lower()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            raise ValueError(f"{page}:{i + 1}: unclosed code fence")
        code = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
        before = lines[i - 1] if i else ""
        skip = _SKIP.match(before)
        if _OUTPUT.match(before):
            if language != "text" or not found or found[-1].language not in PYTHON:
                raise ValueError(f"{page}:{i + 1}: an output block must be text after Python")
            found[-1] = dataclasses.replace(found[-1], expected_output=code)
        else:
            found.append(Block(page, i + 1, language, code, skip["reason"] if skip else None))
        i = end + 1
    return found


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def run_page(path: Path, durations: list[tuple[int, float]] | None = None) -> int:
    """Runs a page's Python blocks top to bottom in one namespace; returns how many ran.

    Args:
        path: The Markdown page.
        durations: If given, ``(line, seconds)`` of each block run is appended.

    Raises:
        AssertionError: A block raised, or printed other than its expected output.
    """
    namespace: dict[str, object] = {"__name__": "docs_page"}
    ran = 0
    for block in blocks(path):
        if block.language not in PYTHON or block.skip:
            continue
        stdout = io.StringIO()
        start = time.perf_counter()
        try:
            filename = f"<{block.page}:{block.line}>"
            # In linecache, so that inspect (autograph, tracebacks) finds the source.
            source = block.code.splitlines(True)
            linecache.cache[filename] = (len(block.code), None, source, filename)
            code = compile(block.code, filename, "exec")
            with contextlib.redirect_stdout(stdout):
                exec(code, namespace)
        except Exception as err:
            raise AssertionError(
                f"{block.page}, the block at line {block.line} raised "
                f"{type(err).__name__}: {err}\n--- block ---\n{block.code}"
            ) from err
        if block.expected_output is not None:
            got = [line.rstrip() for line in stdout.getvalue().rstrip("\n").splitlines()]
            want = [line.rstrip() for line in block.expected_output.rstrip("\n").splitlines()]
            assert got == want, (
                f"{block.page}, the block at line {block.line} printed\n"
                + "\n".join(got)
                + "\ninstead of the page's\n"
                + "\n".join(want)
            )
        ran += 1
        if durations is not None:
            durations.append((block.line, time.perf_counter() - start))
    return ran
