"""Every Python block in docs/*.md runs, so the walkthrough cannot rot.

Rules for writing a block (also stated in docs/index.md):

* A page's ```` ```python ```` blocks run in order, in one namespace per page,
  so a later block may use what an earlier one defined.  Each page runs in its
  own test, with the ``no_leaks`` fixture: a block that leaves a server
  thread, a child process or a socket open fails its page.
* Blocks make their point with ``assert`` (what the reader should expect
  is checked, not just printed), use port 0 and shut their servers down.
* A block that is deliberately a sketch, not a program (a fragment of a
  larger file, or code that would block forever), is fenced with a title
  that ends in "(not run)", e.g. ```` ```python title="the shape of it (not run)" ````;
  the test still compiles it, so it cannot hold a syntax error.

Generated pages (select-poll-epoll.md and the other measured pages) hold no
Python blocks today; if they grow some, these rules apply to them too.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import Resources

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: A fenced block: opening fence (3+ backticks), info string, body, same fence.
FENCE = re.compile(
    r"^(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)
#: A Python fence that does not start its line would be skipped by FENCE.
INDENTED = re.compile(r"^[ \t]+`{3,}\s*py(thon)?\b", re.M)
NOT_RUN = re.compile(r'title="[^"]*\(not run\)"')


@dataclass
class Block:
    page: str
    line: int
    code: str
    run: bool


def python_blocks(page: Path) -> list[Block]:
    """The Python blocks of one page, in order, with their line numbers."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        info = match.group("info").strip()
        language = info.split(maxsplit=1)[0] if info else ""
        if language not in ("python", "py"):
            continue
        line = text.count("\n", 0, match.start("body")) + 1
        blocks.append(Block(page.name, line, match.group("body"), not NOT_RUN.search(info)))
    return blocks


PAGES = sorted(p for p in DOCS.glob("*.md") if python_blocks(p))


def test_the_walkthrough_has_runnable_blocks() -> None:
    """Guard against blocks the parser would silently skip."""
    runnable = [b for p in PAGES for b in python_blocks(p) if b.run]
    assert len(runnable) >= 10, [p.name for p in PAGES]
    indented = [p.name for p in DOCS.glob("*.md") if INDENTED.search(p.read_text("utf-8"))]
    assert not indented, f"indented Python fences are not run; start them at column 0: {indented}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_blocks_run(page: Path, no_leaks: Resources, tmp_path: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    out = io.StringIO()
    cwd = os.getcwd()
    # Blocks that make Unix-domain sockets or files do so in a fresh directory.
    os.chdir(tmp_path)
    try:
        for block in python_blocks(page):
            # Compile with the page's own line numbers, so a traceback points
            # into the Markdown source.
            code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
            if not block.run:
                continue
            with contextlib.redirect_stdout(out):
                exec(code, namespace)
    finally:
        os.chdir(cwd)


def test_chapter_10_quotes_only_measured_figures() -> None:
    """Every figure chapter 10 quotes appears on the generated, measured page.

    docs/select-poll-epoll.md is rewritten by benchmarks/select_poll_epoll.py;
    when a new run changes a figure, this fails until the chapter quotes the
    new one, so the walkthrough never cites a number nobody measured.
    """
    chapter = (DOCS / "10-select-poll-epoll.md").read_text("utf-8")
    measured = (DOCS / "select-poll-epoll.md").read_text("utf-8")
    decimals = set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", chapter))
    with_units = set(re.findall(r"(?<![\d.])(\d[\d,]*) (?:µs|ns)\b", chapter))
    as_much_as = set(re.findall(r"as much as (\d+)", chapter))
    table_rows = "\n".join(line for line in chapter.splitlines() if line.startswith("| "))
    in_tables = set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", table_rows))
    figures = decimals | with_units | as_much_as | in_tables
    assert len(figures) >= 10, sorted(figures)
    missing = sorted(f for f in figures if f not in measured)
    assert not missing, f"chapter 10 quotes figures not in select-poll-epoll.md: {missing}"


def test_chapter_8_quotes_only_measured_figures() -> None:
    """The scale figures chapter 8 quotes appear on docs/multiplexing-scale.md."""
    chapter = (DOCS / "08-multiplexing.md").read_text("utf-8")
    measured = (DOCS / "multiplexing-scale.md").read_text("utf-8")
    figures = set(re.findall(r"(?<![\w.,])(\d[\d,]*) (?:bytes|concurrent connections)\b", chapter))
    assert "988" in figures, sorted(figures)
    missing = sorted(f for f in figures if f not in measured)
    assert not missing, f"chapter 8 quotes figures not in multiplexing-scale.md: {missing}"
