"""The docs site builds strictly, and every page renders in a real browser.

``mkdocs build --strict`` into a temporary directory, served from 127.0.0.1 by
``http.server`` running on our own ``minisocketserver.ThreadingTCPServer``
(dogfooding: the site about the library is served by the library), then
every page is opened in headless Debian Chromium through Playwright.  A page
fails if an image or diagram did not load (failed response, or an ``<img>``
whose ``naturalWidth`` is 0), if it asked for anything from another host
(the site must work offline), or if any internal link is broken.

Diagrams must be legible where they stand: on every page, each diagram's
smallest label is measured as Chromium draws it (the ``<text>``'s font size
times the SVG's scale at the width the page gives the image, checked
against its ``getBoundingClientRect``) and must be at least 11 px, and every
sequence diagram's lifelines must reach its last message.  The CJK
characters the pages print (好) must be drawn with the subset font the site
ships (docs/assets/fonts/, built by tools/build_cjk_subset.py): the test
machine has no CJK font, so without it they would be empty boxes.

Needs the ``docs`` extra (mkdocs, mkdocs-material, playwright, fonttools) and
``/usr/bin/chromium`` (apt package ``chromium``; never ``playwright
install``).  Locally the test skips, saying why, when either is missing; in
CI (``CI=true``) a missing piece is a failure, since .ci/run installs both.
"""

from __future__ import annotations

import base64
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
#: The smallest label size, in CSS px, a reader is asked to read.
MIN_LABEL_PX = 11
#: A laptop-sized window: Material shows both sidebars, so the content
#: column is at its narrowest desktop width.
VIEWPORT = {"width": 1280, "height": 900}
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


def _sys_path_tools() -> None:
    if str(ROOT / "tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "tools"))


def test_cjk_subset_covers_every_cjk_character_of_the_docs() -> None:
    _require(_importable("fontTools"), "fonttools is not installed (pip install -e '.[docs]')")
    from fontTools.ttLib import TTFont

    _sys_path_tools()
    import build_cjk_subset

    used = build_cjk_subset.cjk_characters(build_cjk_subset.sources())
    assert "好" in used
    cmap = TTFont(str(build_cjk_subset.FONT))["cmap"].getBestCmap()
    missing = [c for c in used if ord(c) not in cmap]
    assert not missing, f"run tools/build_cjk_subset.py: the subset lacks {missing}"
    css = build_cjk_subset.CSS.read_text(encoding="utf-8")
    assert build_cjk_subset.unicode_range(used) in css, "cjk.css is stale: run the script"
    assert build_cjk_subset.LICENCE.is_file()


#: Run in an SVG document shown at ``width`` CSS px: the smallest label as
#: drawn, and each lifeline's end against the lowest message.
_MEASURE_SVG = """width => {
    const svg = document.documentElement;
    svg.removeAttribute('style');
    // Both sizes: a root <svg> without a height fills the window's height,
    // and a tall diagram would be scaled to fit it.
    const box = svg.viewBox.baseVal;
    svg.setAttribute('width', width);
    svg.setAttribute('height', width * box.height / box.width);
    let smallest = null;
    for (const text of svg.querySelectorAll('text')) {
        if (!text.textContent.trim()) continue;
        const rect = text.getBoundingClientRect();
        if (rect.width === 0) continue;
        const size = parseFloat(getComputedStyle(text).fontSize) * text.getScreenCTM().a;
        if (smallest === null || size < smallest.size)
            smallest = {size, height: rect.height, text: text.textContent.slice(0, 60)};
    }
    let lastMessage = -Infinity;
    for (const el of svg.querySelectorAll('.messageLine0, .messageLine1, .messageText')) {
        const box = el.getBBox();
        lastMessage = Math.max(lastMessage, box.y + box.height);
    }
    const lifelines = [...svg.querySelectorAll('line.actor-line')].map(
        l => [l.getAttribute('name') || l.id, parseFloat(l.getAttribute('y2'))]);
    return {smallest, lastMessage, lifelines};
}"""

#: Run in a page: is 好 drawn with the shipped face, and how does it look
#: next to a character no font has (U+0378 is unassigned)?
_GLYPH_CHECK = """async () => {
    await document.fonts.ready;
    const faces = await document.fonts.load('16px "Minisocketserver CJK"', '好');
    const probe = document.createElement('div');
    probe.id = 'glyph-probe';
    probe.style.cssText = 'position:fixed;top:0;left:0;z-index:99999;background:#fff;'
        + 'color:#000;font-size:48px;line-height:1;padding:4px';
    probe.innerHTML = '<span id="g-cjk">好</span> <span id="g-none">\u0378</span>';
    document.body.appendChild(probe);
    return {faces: faces.map(f => [f.family, f.status]),
            check: document.fonts.check('16px "Minisocketserver CJK"', '好')};
}"""


@pytest.mark.timeout(120)
def test_diagrams_legible_and_cjk_drawn_in_chromium(site: Path, base_url: str) -> None:
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    _require(_importable("playwright"), "playwright is not installed (pip install -e '.[docs]')")
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    shown: list[tuple[str, str, float]] = []       # (page, svg url, width in px)
    cjk_pages = [p for p in _pages(site) if "好" in (site / p).read_text("utf-8")]
    assert cjk_pages, "no page prints 好 any more: update this test"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport=VIEWPORT)
            for page in _pages(site):
                tab.goto(base_url + page, wait_until="load")
                for src, width in tab.eval_on_selector_all(
                        "img[src*='diagrams/']",
                        "els => els.map(e => [e.src, e.getBoundingClientRect().width])"):
                    shown.append((page, src, width))
            assert len({src for _, src, _ in shown}) >= 10, shown
            for page, src, width in shown:
                tab.goto(src, wait_until="load")
                m = tab.evaluate(_MEASURE_SVG, width)
                name = f"{page}: {src.rsplit('/', 1)[-1]} at {width:.0f} px"
                smallest = m["smallest"]
                assert smallest is not None, f"{name}: no text"
                # The bounding box is the font's line box: a label drawn
                # smaller than its font size claims would show here.
                if smallest["size"] < MIN_LABEL_PX or smallest["height"] < MIN_LABEL_PX:
                    problems.append(f"{name}: label {smallest['text']!r} drawn at "
                                    f"{smallest['size']:.1f} px (box {smallest['height']:.1f})")
                for lifeline, end in m["lifelines"]:
                    if end < m["lastMessage"]:
                        problems.append(f"{name}: lifeline {lifeline} ends at y={end:.0f}, "
                                        f"above the last message at y={m['lastMessage']:.0f}")
            for page in cjk_pages:
                tab.goto(base_url + page, wait_until="load")
                fonts = tab.evaluate(_GLYPH_CHECK)
                if ["Minisocketserver CJK", "loaded"] not in fonts["faces"] or not fonts["check"]:
                    problems.append(f"{page}: the CJK subset did not load for 好: {fonts}")
                cjk, tofu = (tab.evaluate(_BOXINESS, base64.b64encode(
                    tab.locator(probe).screenshot()).decode()) for probe in ("#g-cjk", "#g-none"))
                # The control: a character no font has must look like a box,
                # or this check could not tell a box from a glyph.
                assert tofu["boxiness"] > 0.8, tofu
                if cjk["ink"] == 0 or cjk["boxiness"] > 0.5:
                    problems.append(f"{page}: 好 is drawn as a box, not a glyph: {cjk}"
                                    f" (a missing glyph: {tofu})")
        finally:
            browser.close()
    assert not problems, "\n".join(problems)


#: How much a PNG screenshot looks like a missing-glyph box, read by the
#: browser's own decoder: the share of the inked height that the leftmost and
#: rightmost inked columns cover (the smaller of the two).  A missing glyph
#: is drawn as a rectangle, whose sides are inked top to bottom (~1.0); the
#: strokes at the edges of 好 are slanted or short (< 0.5).
_BOXINESS = """async png => {
    const image = new Image();
    image.src = 'data:image/png;base64,' + png;
    await image.decode();
    const [w, h] = [image.width, image.height];
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    const pixels = context.getImageData(0, 0, w, h).data;
    const dark = (x, y) => pixels[(y * w + x) * 4] < 128;
    let [left, right, top, bottom] = [w, -1, h, -1];
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (dark(x, y)) {
        left = Math.min(left, x); right = Math.max(right, x);
        top = Math.min(top, y); bottom = Math.max(bottom, y);
    }
    if (right < 0) return {ink: 0, boxiness: 1};
    const cover = x => {
        let n = 0;
        for (let y = top; y <= bottom; y++) if (dark(x, y) || dark(Math.min(x + 1, w - 1), y)) n++;
        return n / (bottom - top + 1);
    };
    let ink = 0;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (dark(x, y)) ink++;
    return {ink: ink / (w * h), boxiness: Math.min(cover(left), cover(Math.max(right - 1, 0)))};
}"""
