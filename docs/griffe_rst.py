"""A griffe extension: the reST bits of gradfit's Google-style docstrings, as Markdown.

gradfit's docstrings are Google style, with two reStructuredText habits
that Markdown does not know:

* cross-reference roles, ``:class:`~gradfit.callbacks.History```,
  ``:func:`accumulate```, ``:meth:`Model.maybe_build```: each becomes an
  optional cross-reference (a link when the target is documented, else
  code), its name resolved from the docstring's scope outwards as Sphinx
  would (``~`` shows the last component only);
* literal blocks, a paragraph ending in ``::`` and an indented block after
  it: the block becomes a fenced code block and ``::`` one colon.

The docstrings themselves stay as they are; mkdocstrings reads them through
this extension (``mkdocs.yml``: ``extensions: [docs/griffe_rst.py]``).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(?P<tilde>~?)(?P<name>[^`]+)`")
_SECTION_TITLES = frozenset(
    {"example", "examples", "note", "notes", "warning", "warnings", "args", "returns", "raises"}
)


def _scopes(obj: griffe.Object) -> list[griffe.Object]:
    """``obj`` and its parents, innermost first: where a relative name is looked up."""
    scopes = []
    current: griffe.Object | None = obj
    while current is not None:
        scopes.append(current)
        current = current.parent
    return scopes


def _resolve(name: str, obj: griffe.Object) -> str:
    """The full identifier of ``name`` as written in ``obj``'s docstring."""
    name = name.lstrip(".").removesuffix("()")
    if name.split(".")[0] == "gradfit":
        return name
    first, _, rest = name.partition(".")
    for scope in _scopes(obj):
        try:
            member = scope.members.get(first)
            if member is None:
                continue
            # An imported name: its canonical path, which mkdocstrings registers.
            path = member.target_path if member.is_alias else member.path
        except Exception:  # an alias that cannot be resolved: try further out
            continue
        return f"{path}.{rest}" if rest else path
    return name


def _role(match: re.Match[str], obj: griffe.Object) -> str:
    name = match["name"].strip()
    identifier = _resolve(name, obj)
    shown = name.lstrip(".").split(".")[-1] if match["tilde"] else name
    return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'


def _literal_blocks(text: str) -> str:
    """``Run it with::`` and the indented block after it, as ``Run it with:`` and a fence."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.rstrip()
        if not stripped.endswith("::") or stripped.strip() == "::":
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        k = j
        while k < len(lines) and (
            not lines[k].strip() or len(lines[k]) - len(lines[k].lstrip()) > indent
        ):
            k += 1
        while k > j and not lines[k - 1].strip():
            k -= 1
        if k == j:  # no indented block follows: leave the line alone
            out.append(line)
            i += 1
            continue
        lead = stripped[:-1]
        title = lead.strip().rstrip(":").lower()
        if title in _SECTION_TITLES:  # "Example::" must not turn into a Google section
            lead = " " * indent + f"**{lead.strip()}**"
        code = textwrap.dedent("\n".join(lines[j:k]))
        first = code.lstrip().split(" ", 1)[0]
        language = "bash" if first in ("python", "pip", "mkdocs", "tensorboard", "$") else "python"
        pad = " " * indent
        out += [lead, "", f"{pad}```{language}"]
        out += [pad + row if row else "" for row in code.split("\n")]
        out += [f"{pad}```"]
        i = k
    return "\n".join(out)


def _rewrite(obj: griffe.Object) -> None:
    """Rewrites the docstrings of ``obj`` and of every object in it (aliases excepted)."""
    docstring = obj.docstring
    if docstring is not None:
        value = _literal_blocks(docstring.value)
        docstring.value = _ROLE.sub(lambda match: _role(match, obj), value)
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite(member)


class RestructuredTextBits(griffe.Extension):
    """Rewrites reST roles and literal blocks of every docstring as Markdown."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrites every docstring of the package once it is loaded (names then resolve)."""
        _rewrite(pkg)
