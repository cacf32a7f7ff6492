"""mkdocs hooks for the walkthrough site (named in mkdocs.yml under ``hooks:``).

Diagrams.  The diagrams are generated into the repository's ``diagrams/`` directory (by
``python -m minisocketserver.diagrams`` and its SVG renderer), next to the
code they are recorded from, not inside ``docs/``.  Rather than keep a second
copy in ``docs/`` that could drift, this hook hands every ``diagrams/*.svg``
to mkdocs as if it lived at ``docs/diagrams/``: a chapter embeds
``![...](diagrams/construction.svg)``, mkdocs validates that link like any
other (so ``--strict`` fails on a diagram that does not exist), and the SVG
is copied into the built site.

Measured pages.  Other scripts write pages into ``docs/`` (the benchmark
reports: select-poll-epoll.md, multiplexing-scale.md, performance.md...).
A page missing from ``nav`` would fail ``mkdocs build --strict``, and the
scripts do not edit mkdocs.yml, so any top-level page that ``nav`` does not
list is appended to its last section ("Measured"), titled by its first
heading.

Links to repository files.  The site serves ``docs/`` only, so a page's
link to a file elsewhere in the repository (``[the harness](../benchmarks/run.py)``)
would be broken on the site.  Such a link, when its target exists, becomes
the file's repository path in code style (``benchmarks/run.py``), which a
reader finds in their checkout; a link to a file that does not exist is
left alone, for mkdocs and the browser test to report.

Legible diagrams.  A recorded diagram is as wide as its longest call
labels (1,200-3,100 px at 16 px text), and a browser shrinks an image to the
content column (~700 px), so its labels came out at 7-8 px.  Wrapping the
labels would break Python names mid-identifier, so instead each diagram
``<img>`` gets a ``min-width`` at which its smallest text is still
``MIN_LABEL_PX`` on screen, and sits in a horizontally scrollable
``.diagram-scroll`` (docs/stylesheets/extra.css); the link around it still
opens it full size.  A diagram narrow enough simply fits the column.
tests/test_docs_site.py measures the rendered text in Chromium.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

#: The generated diagrams, relative to mkdocs.yml.
DIAGRAMS = "diagrams"
#: The smallest label size, in CSS px, a diagram may be shown at.
MIN_LABEL_PX = 11


def _diagram_dir(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent / DIAGRAMS


def _listed(nav: Any) -> set[str]:
    """Every page path that ``nav`` (a nested list of dicts and strings) names."""
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(_listed(v) for v in nav.values()))
    if isinstance(nav, list):
        return set().union(*(_listed(v) for v in nav))
    return set()


def on_config(config: MkDocsConfig, **kwargs: Any) -> MkDocsConfig:
    """Called by mkdocs after loading mkdocs.yml: list unlisted pages under the last section."""
    nav = config.nav
    if not nav:
        return config
    listed = _listed(nav)
    section = next(iter(nav[-1].values()))
    for page in sorted(Path(config.docs_dir).glob("*.md")):
        if page.name in listed:
            continue
        heading = re.search(r"^# (.+)$", page.read_text(encoding="utf-8"), re.M)
        section.append({heading.group(1).strip() if heading else page.stem: page.name})
    return config


#: A Markdown inline link whose target climbs out of the page's directory.
_OUTWARD_LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<target>\.\./[^)\s#]+)\)")


def on_page_markdown(markdown: str, page: Any, config: MkDocsConfig, files: Files,
                     **kwargs: Any) -> str:
    """Called by mkdocs for each page: turn links to repository files into their paths."""
    docs = Path(config.docs_dir).resolve()
    root = Path(config.config_file_path).resolve().parent
    here = (docs / page.file.src_uri).parent

    def replace(match: re.Match[str]) -> str:
        target = (here / match.group("target")).resolve()
        if docs in target.parents or root not in target.parents or not target.exists():
            return match.group(0)
        path = target.relative_to(root).as_posix()
        text = match.group("text").strip("`")
        return f"`{path}`" if text == path else f"{match.group('text')} (`{path}`)"

    return _OUTWARD_LINK.sub(replace, markdown)


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Called by mkdocs after it collected docs/: add diagrams/*.svg as docs/diagrams/*.svg."""
    for svg in sorted(_diagram_dir(config).glob("*.svg")):
        uri = f"{DIAGRAMS}/{svg.name}"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(svg)))
    return files


def on_serve(server: Any, config: MkDocsConfig, builder: Any, **kwargs: Any) -> Any:
    """Called by ``mkdocs serve``: rebuild when a diagram is regenerated."""
    directory = _diagram_dir(config)
    if directory.is_dir():
        server.watch(str(directory))
    return server


#: A rendered diagram image (mkdocs writes ``<img alt=... src=...>``).
_DIAGRAM_IMG = re.compile(
    r'<img (?P<attrs>[^>]*\bsrc="(?P<src>(?:\.\./)*diagrams/[^"]+\.svg)"[^>]*)>')
#: The <a> mkdocs wraps around an image that links to itself.
_DIAGRAM_LINK = re.compile(r'(<a [^>]*href="(?:\.\./)*diagrams/[^"]+\.svg"[^>]*>\s*)?'
                           + _DIAGRAM_IMG.pattern + r'(\s*</a>)?')


#: A font size set on a label itself (Mermaid writes it inline on
#: sequence-diagram text) or on the diagram's root, which the rest inherit.
_LABEL_SIZE = re.compile(r'<(?:text|tspan)\b[^>]*font-size(?::\s*|=")([\d.]+)px')
_ROOT_SIZE = re.compile(r'<style>#[\w-]+\{[^}]*?font-size:([\d.]+)px')


def legible_width(svg: str) -> tuple[float, float]:
    """(natural width, narrowest legible width) in CSS px of a Mermaid SVG.

    The narrowest legible width scales the smallest label font size to
    ``MIN_LABEL_PX``.  Sizes in the SVG's class rules are not read (Mermaid
    declares 10 px for class-diagram parts this site's diagrams never draw):
    only the labels' own and the root's.  tests/test_docs_site.py measures
    what Chromium really draws, so a size missed here fails there.
    """
    view_box = re.search(r'viewBox="[-\d.]+ [-\d.]+ ([\d.]+) [\d.]+"', svg)
    if view_box is None:
        raise ValueError("a diagram SVG without a viewBox")
    width = float(view_box.group(1))
    sizes = [float(s) for s in _LABEL_SIZE.findall(svg) + _ROOT_SIZE.findall(svg)[:1]]
    smallest = min(sizes, default=MIN_LABEL_PX)
    return width, min(width, width * MIN_LABEL_PX / smallest)


def on_page_content(html: str, page: Any, config: MkDocsConfig, files: Files,
                    **kwargs: Any) -> str:
    """Called by mkdocs with each page's HTML: show diagrams no smaller than legible."""
    directory = _diagram_dir(config)

    def wrap(match: re.Match[str]) -> str:
        svg = directory / Path(match.group("src")).name
        if not svg.is_file():
            return match.group(0)      # a broken link: mkdocs --strict reports it
        natural, legible = legible_width(svg.read_text(encoding="utf-8"))
        style = f"min-width: {math.ceil(legible)}px; max-width: {math.ceil(natural)}px"
        image = f'<img {match.group("attrs")} style="{style}">'
        return (f'<span class="diagram-scroll">{match.group(1) or ""}{image}'
                f'{match.group(4) or ""}</span>')

    return _DIAGRAM_LINK.sub(wrap, html)
