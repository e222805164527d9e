"""The documentation site: a strict build, an API reference of every public name, real rendering.

The site is built once per session (``mkdocs build --strict`` into a
temporary directory, as on a fresh clone: mkdocstrings reads ``src/``). Its
``objects.inv`` lists what the API reference documents; headless Chromium
renders three pages (``docs/check_site.py``), whose screenshots go to
``docs/_screenshots/`` (ignored by git).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import zlib

import pytest

import gradfit
from tests.docs_blocks import DOCS, ROOT

pytestmark = pytest.mark.xdist_group("docs_site")  # one build, in one worker

# The public modules: gradfit, the submodules it exports in __all__, and those imported
# on their own (testing, its hypothesis strategies, plotting); update_rules adds no name.
PUBLIC_MODULES = (
    "gradfit",
    *(f"gradfit.{name}" for name in gradfit.__all__ if inspect.ismodule(getattr(gradfit, name))),
    "gradfit.update_rules",
    "gradfit.testing",
    "gradfit.testing.strategies",
    "gradfit.plotting",
)
SCREENSHOTS = DOCS / "_screenshots"


def check_site_module():
    spec = importlib.util.spec_from_file_location("check_site", DOCS / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_site", module)  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-5000:]}"
    return out, result.stderr


def public_names(module_name):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:  # plotting: its own public functions
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module_name
        ]
    return {(module_name, name): getattr(module, name) for name in names}


def inventory(site_dir):
    """``(name, role, uri)`` of every object in the site's ``objects.inv``."""
    data = (site_dir / "objects.inv").read_bytes()
    header, _, body = data.partition(b"zlib.\n")
    assert header.startswith(b"# Sphinx inventory version 2")
    entries = []
    for line in zlib.decompress(body).decode().splitlines():
        name, role, _priority, uri, _title = line.split(" ", 4)
        entries.append((name, role, uri))
    return entries


def resolve(path):
    """The object a documented dotted path names."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise LookupError(path)


def test_the_site_builds_strict_without_warnings(site):
    site_dir, log = site
    assert "WARNING" not in log
    for page in DOCS.rglob("*.md"):
        built = site_dir / page.relative_to(DOCS).with_suffix(".html")
        assert built.is_file(), built


def test_the_api_reference_documents_every_public_name_once(site):
    site_dir, _ = site
    public = {}  # (module, name) -> object, submodules left out
    for module_name in PUBLIC_MODULES:
        public.update(
            (key, obj)
            for key, obj in public_names(module_name).items()
            if not inspect.ismodule(obj)
        )
    objects = {id(obj) for obj in public.values()}  # a name exported twice is one object
    # An entry documented in place (not an alias pointing at another anchor) of a
    # public module is a public name's entry; members of classes are not counted.
    documented = [
        name
        for name, role, uri in inventory(site_dir)
        if role != "py:module" and uri.endswith("#$") and name.rsplit(".", 1)[0] in PUBLIC_MODULES
    ]
    documented_objects = {id(resolve(name)) for name in documented}
    assert len(documented_objects) == len(documented)  # no object documented twice
    undocumented = [
        f"{m}.{n}" for (m, n), obj in public.items() if id(obj) not in documented_objects
    ]
    assert undocumented == []
    assert documented_objects == objects  # and nothing documented that is not public
    assert len(documented) == len(objects)


def test_three_pages_render_their_content_in_chromium(site):
    site_dir, _ = site
    check_site = check_site_module()
    shots = check_site.check_site(site_dir, SCREENSHOTS)
    assert [shot.name for shot in shots] == [
        "home.png",
        "guide-checkpoints.png",
        "api-training.png",
    ]


def test_a_page_whose_content_does_not_render_fails_the_check(site):
    site_dir, _ = site
    check_site = check_site_module()
    # The home page's HTML, whose article a script empties once loaded: the file holds
    # the text, the rendered page does not.
    html = (site_dir / "index.html").read_text(encoding="utf-8")
    script = "<script>document.querySelector('article').innerHTML = '<h1>gradfit</h1>';</script>"
    (site_dir / "broken.html").write_text(html.replace("</body>", script + "</body>"))
    home = check_site.PAGES[0]
    assert home.phrase in html
    broken = check_site.Page("broken.html", home.heading, home.phrase, None, "broken.png")
    with pytest.raises(check_site.PageError, match=r"broken\.html does not render its content"):
        check_site.check_site(site_dir, SCREENSHOTS, [broken])
