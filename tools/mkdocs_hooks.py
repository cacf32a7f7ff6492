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
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

#: The generated diagrams, relative to mkdocs.yml.
DIAGRAMS = "diagrams"


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
