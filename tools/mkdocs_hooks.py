"""mkdocs hooks for the walkthrough site (named in mkdocs.yml under ``hooks:``).

The diagrams are generated into the repository's ``diagrams/`` directory (by
``python -m minisocketserver.diagrams`` and its SVG renderer), next to the
code they are recorded from, not inside ``docs/``.  Rather than keep a second
copy in ``docs/`` that could drift, this hook hands every ``diagrams/*.svg``
to mkdocs as if it lived at ``docs/diagrams/``: a chapter embeds
``![...](diagrams/construction.svg)``, mkdocs validates that link like any
other (so ``--strict`` fails on a diagram that does not exist), and the SVG
is copied into the built site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

#: The generated diagrams, relative to mkdocs.yml.
DIAGRAMS = "diagrams"


def _diagram_dir(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).resolve().parent / DIAGRAMS


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
