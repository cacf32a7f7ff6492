"""The docs site builds strictly, and every page renders in a real browser.

``mkdocs build --strict`` into a temporary directory, served from 127.0.0.1 by
``http.server`` running on our own ``minisocketserver.ThreadingTCPServer``
(dogfooding: the site about the library is served by the library), then
every page is opened in headless Debian Chromium through Playwright.  A page
fails if an image or diagram did not load (failed response, or an ``<img>``
whose ``naturalWidth`` is 0), if it asked for anything from another host
(the site must work offline), or if any internal link is broken.

Needs the ``docs`` extra (mkdocs, mkdocs-material, playwright) and
``/usr/bin/chromium`` (apt package ``chromium``; never ``playwright
install``).  Locally the test skips, saying why, when either is missing; in
CI (``CI=true``) a missing piece is a failure, since .ci/run installs both.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import minisocketserver

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must have it: .ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built with ``mkdocs build --strict``."""
    _require(_importable("mkdocs") and _importable("material"),
             "mkdocs or mkdocs-material is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
        # Material prints a banner about its successor on every build.
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return out


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    """The site served by minisocketserver.ThreadingTCPServer on 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = minisocketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    loop = threading.Thread(target=server.serve_forever, name="docs-site", daemon=True)
    loop.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}/"
    finally:
        server.shutdown()
        loop.join(10)
        server.server_close()


def _pages(site: Path) -> list[str]:
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if p.name != "404.html")


def test_built_html_is_offline(site: Path) -> None:
    """No page loads a script, stylesheet, font or image from another host."""
    resource = re.compile(
        r"<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)=[\"']?(https?:)?//", re.I)
    offenders = {}
    for page in _pages(site):
        html = (site / page).read_text("utf-8")
        found = [m.group(0) for m in resource.finditer(html)
                 if "rel=\"canonical\"" not in m.group(0)]
        if found or "fonts.googleapis" in html or "fonts.gstatic" in html:
            offenders[page] = found
    assert not offenders


@pytest.mark.timeout(90)
def test_every_page_renders_in_chromium(site: Path, base_url: str) -> None:
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    _require(_importable("playwright"), "playwright is not installed (pip install -e '.[docs]')")
    from playwright.sync_api import Request, Route, sync_playwright

    pages = _pages(site)
    assert "index.html" in pages and len(pages) >= 11, pages
    problems: list[str] = []
    internal_links: set[str] = set()
    images_seen = 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()

            def offline_only(route: Route, request: Request) -> None:
                if request.url.startswith(base_url) or request.url.startswith("data:"):
                    route.continue_()
                else:
                    problems.append(f"request to another host: {request.url}")
                    route.abort()

            context.route("**/*", offline_only)
            tab = context.new_page()
            # ERR_ABORTED: the browser dropped a request of a page it was
            # leaving (the favicon, typically); a resource that is really
            # missing answers 404, caught below, and images are checked
            # one by one after each load.
            tab.on("requestfailed", lambda r: r.failure != "net::ERR_ABORTED" and problems.append(
                f"failed: {r.url} {r.failure}"))
            tab.on("response", lambda r: r.status >= 400 and problems.append(
                f"HTTP {r.status}: {r.url}"))
            for page in pages:
                tab.goto(base_url + page, wait_until="load")
                images = tab.eval_on_selector_all(
                    "img", "els => els.map(e => [e.currentSrc || e.src, e.complete,"
                    " e.naturalWidth])")
                for src, complete, width in images:
                    images_seen += 1
                    if not complete or width == 0:
                        problems.append(f"{page}: image did not render: {src}")
                hrefs = tab.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
                for href in hrefs:
                    if href.startswith(base_url):
                        internal_links.add(href)
        finally:
            browser.close()
    assert images_seen >= 10, f"only {images_seen} images on the whole site"
    for link in sorted(internal_links):
        url, _, fragment = link.partition("#")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            problems.append(f"broken link: {link} ({error.code})")
            continue
        if fragment and url.endswith(".html"):
            anchor = urllib.parse.unquote(fragment)
            if f'id="{anchor}"' not in body:
                problems.append(f"broken anchor: {link}")
    assert not problems, "\n".join(problems)
