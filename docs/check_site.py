"""Renders pages of the built site in headless Chromium and checks they show their content.

Serves the built site (``mkdocs build``'s ``site/``) on a local port, has
Chromium render each page (scripts run, as in a browser), saves a screenshot
of it, and checks the rendered DOM: the page's heading, a phrase of its
text, an element it must contain (an API entry's anchor), and a screenshot
that is not blank. Run it from the repository root after a build::

    mkdocs build --strict && python docs/check_site.py site docs/_screenshots

It exits with status 1, naming the page and what was missing, when a page
does not render its content. ``tests/test_docs_site.py`` runs it on every
test run. Chromium: ``apt-get install chromium`` (Debian) or set
``CHROMIUM`` to the browser's path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import html.parser
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Page:
    """A page to render, and what its rendered DOM must hold.

    Attributes:
        path: The page's path in the built site.
        heading: The text of its ``<h1>``.
        phrase: Text its article must contain.
        element_id: The ``id`` of an element it must contain, or ``None``.
        screenshot: The screenshot's file name.
    """

    path: str
    heading: str
    phrase: str
    element_id: str | None
    screenshot: str


PAGES = (
    Page("index.html", "gradfit", "Reusable, compiled training loops", None, "home.png"),
    Page(
        "guides/checkpoints.html",
        "Checkpoints and surviving a kill",
        "restores the backup and carries on where it stopped",
        "surviving-a-kill-backupandrestore",
        "guide-checkpoints.png",
    ),
    Page(
        "api/training.html",
        "Trainer and tasks",
        "Fits a Task, or a model with a loss and an update rule.",
        "gradfit.Trainer.fit",
        "api-training.png",
    ),
)
"""The home page, a guide and an API page."""

# Offline and quiet: no first-run tasks, updates, sync or QUIC, a throwaway profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,1400",
)


class PageError(AssertionError):
    """A page did not render its content."""


def find_chromium() -> str:
    """The Chromium executable: ``$CHROMIUM``, else the first on ``PATH``.

    Raises:
        FileNotFoundError: No Chromium was found.
    """
    names = [os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"]
    for name in filter(None, names):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        "No Chromium found (tried $CHROMIUM, chromium, chromium-browser, google-chrome); "
        "install it (apt-get install chromium) or set CHROMIUM to its path."
    )


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Logs nothing."""


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serves ``directory`` over HTTP on a free local port while the context lasts.

    Args:
        directory: The built site.

    Yields:
        The site's base URL, ``http://127.0.0.1:<port>/``.
    """
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def render(url: str, screenshot: Path, chromium: str, *, timeout: float = 60) -> str:
    """Renders ``url`` in headless Chromium: saves a screenshot and returns the rendered DOM.

    Args:
        url: The page.
        screenshot: Where the PNG goes.
        chromium: The browser's executable.
        timeout: Seconds before the browser is given up on.

    Returns:
        The DOM after the page's scripts ran, serialised as HTML.

    Raises:
        PageError: Chromium failed or wrote no screenshot.
    """
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="gradfit-chromium-") as profile:
        result = subprocess.run(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={screenshot}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0 or not screenshot.is_file():
        raise PageError(
            f"Chromium could not render {url} (exit status {result.returncode}):\n"
            + result.stderr[-2000:]
        )
    return result.stdout


class _Text(html.parser.HTMLParser):
    """The text of a page's ``<h1>`` and of its ``<article>``, and the ids of its elements."""

    def __init__(self) -> None:
        super().__init__()
        self.h1: list[str] = []
        self.article: list[str] = []
        self.ids: set[str] = set()
        self._in_h1 = self._in_article = 0
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element_id = dict(attrs).get("id")
        if element_id:
            self.ids.add(element_id)
        if tag in ("script", "style"):
            self._skip += 1
        self._in_h1 += tag == "h1"
        self._in_article += tag == "article"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        if tag == "h1":
            self._in_h1 = max(0, self._in_h1 - 1)
        if tag == "article":
            self._in_article = max(0, self._in_article - 1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_h1:
            self.h1.append(data)
        if self._in_article:
            self.article.append(data)


def _blank(screenshot: Path) -> bool:
    """Whether the screenshot is (nearly) one colour: a page that drew nothing."""
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)[..., :3]
    background = pixels[0, 0]
    differs = (abs(pixels - background) > 0.1).any(axis=-1)
    return float(differs.mean()) < 0.01


def check(page: Page, dom: str, screenshot: Path) -> None:
    """Checks a rendered page against what it must show.

    Args:
        page: The page and its expectations.
        dom: Its rendered DOM.
        screenshot: Its screenshot.

    Raises:
        PageError: Naming the page and what is missing.
    """
    parsed = _Text()
    parsed.feed(dom)
    heading = " ".join("".join(parsed.h1).split()).rstrip("¶").strip()
    article = " ".join("".join(parsed.article).split())
    problems = []
    if heading != page.heading:
        problems.append(f"its heading is {heading!r}, not {page.heading!r}")
    if page.phrase not in article:
        problems.append(f"its text lacks {page.phrase!r} ({len(article)} characters of text)")
    if page.element_id and page.element_id not in parsed.ids:
        problems.append(f"it has no element with id {page.element_id!r}")
    if _blank(screenshot):
        problems.append(f"its screenshot {screenshot} is blank")
    if problems:
        raise PageError(f"{page.path} does not render its content: " + "; ".join(problems))


def check_site(
    site: Path, out_dir: Path, pages: Sequence[Page] = PAGES, chromium: str | None = None
) -> list[Path]:
    """Renders and checks ``pages`` of the built ``site``; screenshots go to ``out_dir``.

    Args:
        site: The built site's directory.
        out_dir: Where the screenshots go.
        pages: The pages to check.
        chromium: The browser; :func:`find_chromium`'s by default.

    Returns:
        The screenshots' paths.

    Raises:
        PageError: A page did not render its content.
    """
    chromium = chromium or find_chromium()
    shots = []
    with serve(site) as base:
        for page in pages:
            shot = out_dir / page.screenshot
            check(page, render(base + page.path, shot, chromium), shot)
            shots.append(shot)
    return shots


def main(argv: Sequence[str] | None = None) -> int:
    """Checks the site given on the command line; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    site = Path(args[0] if args else "site")
    out_dir = Path(args[1] if len(args) > 1 else "docs/_screenshots")
    try:
        shots = check_site(site, out_dir)
    except PageError as err:
        print(err, file=sys.stderr)
        return 1
    for shot in shots:
        print(shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
