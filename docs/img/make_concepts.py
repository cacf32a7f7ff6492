#!/usr/bin/env python3
"""Draw the walkthrough's two concept pictures, the ones a recording cannot show.

    python docs/img/make_concepts.py          # rewrites the two SVGs next to this file
    python docs/img/make_concepts.py --check  # exit 1 if a committed SVG differs

* backlog-handshake.svg: the TCP handshake done by the kernel, the SYN queue and the
  accept queue that ``listen(backlog)`` sizes, and what a full queue does (chapter 2a).
* fork-descriptors.svg: a process's descriptor table before and after ``fork()``, and
  why the parent closes its copy of the connection (chapter 7).

Plain SVG written by hand-placed coordinates, no dependencies, so the pictures are
deterministic and a test (tests/test_toy_server.py) checks they match this script.
They are drawn for the content column (700 px wide) with no text under 12 px, and
use only Latin text, so they need no CJK font.
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
WIDTH = 700
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"
INK, MUTED, PARENT, CHILD, KERNEL, WARN = (
    "#1f2328",
    "#57606a",
    "#0969da",
    "#1a7f37",
    "#6e7781",
    "#bc4c00",
)


class Svg:
    def __init__(self, height: int, title: str) -> None:
        self.height = height
        self.parts = [f"<title>{escape(title)}</title>"]

    def text(
        self,
        x: float,
        y: float,
        s: str,
        size: int = 13,
        *,
        color: str = INK,
        anchor: str = "start",
        weight: str = "normal",
    ) -> None:
        self.parts.append(
            f'<text x="{x:g}" y="{y:g}" font-size="{size}" fill="{color}" '
            f'text-anchor="{anchor}" font-weight="{weight}">{escape(s)}</text>'
        )

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        *,
        stroke: str = INK,
        fill: str = "#ffffff",
        dash: bool = False,
    ) -> None:
        extra = ' stroke-dasharray="5 4"' if dash else ""
        self.parts.append(
            f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" rx="4" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"{extra}/>'
        )

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        *,
        color: str = INK,
        arrow: bool = True,
        dash: bool = False,
    ) -> None:
        extra = ' stroke-dasharray="5 4"' if dash else ""
        head = ' marker-end="url(#arrow)"' if arrow else ""
        self.parts.append(
            f'<line x1="{x1:g}" y1="{y1:g}" x2="{x2:g}" y2="{y2:g}" stroke="{color}" '
            f'stroke-width="1.6"{extra}{head}/>'
        )

    def render(self) -> str:
        defs = (
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
            'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            'fill="context-stroke"/></marker></defs>'
        )
        body = "\n".join(self.parts)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{self.height}" '
            f'viewBox="0 0 {WIDTH} {self.height}" style="{FONT}">\n'
            f'<rect width="{WIDTH}" height="{self.height}" fill="#ffffff"/>\n'
            f"{defs}\n{body}\n</svg>\n"
        )


def backlog_handshake() -> str:
    s = Svg(500, "The listen backlog: the handshake, the SYN queue and the accept queue")
    client_x, kernel_x = 70, 290
    s.text(client_x, 26, "client", 15, anchor="middle", weight="bold")
    s.text(kernel_x, 26, "server's kernel", 15, anchor="middle", weight="bold")
    s.text(560, 26, "queues of the listener", 15, anchor="middle", weight="bold")
    s.line(client_x, 36, client_x, 300, color=MUTED, arrow=False, dash=True)
    s.line(kernel_x, 36, kernel_x, 300, color=MUTED, arrow=False, dash=True)
    # The handshake, done by the two kernels alone.
    s.text(client_x - 8, 62, "connect()", 13, anchor="end", color=PARENT)
    s.line(client_x, 70, kernel_x, 92)
    s.text(180, 72, "SYN", 13, anchor="middle")
    s.line(kernel_x, 122, client_x, 144)
    s.text(180, 124, "SYN-ACK", 13, anchor="middle")
    s.line(client_x, 176, kernel_x, 198)
    s.text(180, 178, "ACK", 13, anchor="middle")
    s.text(client_x - 8, 216, "connect()", 13, anchor="end", color=PARENT)
    s.text(client_x - 8, 232, "returns", 13, anchor="end", color=PARENT)
    s.text(client_x + 6, 262, "before any accept()", 13, color=PARENT)
    # The two queues.
    s.rect(430, 64, 260, 56, stroke=KERNEL, fill="#f6f8fa")
    s.text(440, 84, "SYN queue: handshakes half done", 13)
    s.text(440, 104, "(SYN received, SYN-ACK sent)", 12, color=MUTED)
    s.line(kernel_x + 6, 92, 426, 92, color=KERNEL)
    s.rect(430, 160, 260, 86, stroke=PARENT, fill="#ddf4ff")
    s.text(440, 180, "accept queue: handshakes done", 13)
    for i in range(6):
        s.rect(442 + i * 40, 192, 34, 24, stroke=PARENT)
        s.text(459 + i * 40, 209, f"{i + 1}", 12, anchor="middle")
    s.text(440, 236, "listen(5): 5 + 1 = 6 places on Linux", 12, color=MUTED)
    s.line(kernel_x + 6, 198, 426, 198, color=PARENT)
    s.line(560, 120, 560, 156, color=KERNEL)
    s.text(566, 142, "ACK moves it", 12, color=MUTED)
    # The application's side.
    s.rect(430, 276, 260, 44, stroke=CHILD, fill="#dafbe1")
    s.text(440, 296, "server process: accept()", 13, weight="bold")
    s.text(440, 312, "takes the oldest, never handshakes", 12, color=MUTED)
    s.line(560, 246, 560, 272, color=CHILD)
    # When it is full.
    s.rect(10, 340, 680, 150, stroke=WARN, fill="#fff8c5")
    s.text(22, 362, "When the accept queue is full (Linux)", 14, color=WARN, weight="bold")
    lines = [
        "The kernel drops a new SYN (and the ACK of a handshake under way) without a word.",
        "The client's kernel sends its SYN again after 1 s, 2 s, 4 s ... and connect() waits,",
        "until the server accepts enough to make room or connect() gives up (ETIMEDOUT).",
        "No reset is sent unless net.ipv4.tcp_abort_on_overflow = 1. A backlog larger than",
        "net.core.somaxconn is lowered to it silently. Checked by:",
        "python -m pytest tests/test_docs_sentences.py -k backlog",
    ]
    for i, line in enumerate(lines):
        s.text(22, 384 + i * 18, line, 13, color=INK if i < 5 else MUTED)
    return s.render()


def _table(s: Svg, x: float, y: float, owner: str, color: str, rows: list[tuple[str, str]]) -> None:
    """A descriptor table: a title and one row per descriptor (number, what it is)."""
    s.text(x, y - 8, owner, 13, color=color, weight="bold")
    s.rect(x, y, 150, 24 * len(rows), stroke=color)
    for i, (fd, what) in enumerate(rows):
        ry = y + 24 * i
        if i:
            s.line(x, ry, x + 150, ry, color=color, arrow=False)
        s.text(x + 10, ry + 17, fd, 13, weight="bold")
        closed = what.startswith("closed")
        s.text(x + 32, ry + 17, what, 13, color=MUTED if closed else INK)


def _sockets(s: Svg, y: float, listener_refs: int, conn_refs: int) -> None:
    for i, (name, refs) in enumerate(
        (("listening socket :8001", listener_refs), ("connection to client", conn_refs))
    ):
        ry = y + 36 * i
        s.rect(225, ry - 4, 250, 30, stroke=KERNEL, fill="#f6f8fa")
        s.text(236, ry + 15, name, 13)
        s.text(465, ry + 15, f"refs {refs}", 13, anchor="end", weight="bold")


def fork_descriptors() -> str:
    s = Svg(630, "A descriptor table before and after fork(), and the closes that follow")
    s.text(
        350,
        22,
        "Descriptors are per process; the sockets they name are the kernel's",
        14,
        anchor="middle",
        weight="bold",
    )
    s.text(350, 48, "kernel: open sockets", 13, anchor="middle", color=KERNEL, weight="bold")
    panels = [
        (
            "1. After accept(): the parent holds the listener (3) and the connection (4)",
            [("3", "listener"), ("4", "connection")],
            None,
            (1, 1),
        ),
        (
            "2. After fork(): the child holds a copy of every descriptor",
            [("3", "listener"), ("4", "connection")],
            [("3", "listener"), ("4", "connection")],
            (2, 2),
        ),
        (
            "3. The parent closes 4, the child closes 3: one owner each",
            [("3", "listener"), ("4", "closed")],
            [("3", "closed"), ("4", "connection")],
            (1, 1),
        ),
    ]
    top = 66
    for title, parent, child, (lrefs, crefs) in panels:
        s.text(10, top + 14, title, 13, weight="bold")
        ty = top + 44
        _table(s, 20, ty, "parent", PARENT, parent)
        _sockets(s, ty + 2, lrefs, crefs)
        for i, (_, what) in enumerate(parent):
            if not what.startswith("closed"):
                s.line(170, ty + 12 + 24 * i, 221, ty + 13 + 36 * i, color=PARENT)
        if child is None:
            s.text(605, ty + 30, "no child yet", 13, anchor="middle", color=MUTED)
        else:
            _table(s, 530, ty, "child", CHILD, child)
            for i, (_, what) in enumerate(child):
                if not what.startswith("closed"):
                    s.line(530, ty + 12 + 24 * i, 479, ty + 13 + 36 * i, color=CHILD)
        top += 148
    s.rect(10, top - 2, 680, 118, stroke=WARN, fill="#fff8c5")
    notes = [
        "The client reads EOF when the last reference to the connection goes: after step 3,",
        "the child's close(4) sends the FIN. Had the parent kept its 4, refs would still be 1:",
        "no FIN, and the client would wait although the child has exited. A close() drops one",
        "reference; a shutdown(SHUT_WR) ends the connection for every holder at once.",
        "And a parent that never closes its copies runs out of descriptors, one per request.",
    ]
    for i, line in enumerate(notes):
        s.text(22, top + 20 + i * 20, line, 13)
    return s.render()


PICTURES = {"backlog-handshake.svg": backlog_handshake, "fork-descriptors.svg": fork_descriptors}


def main(argv: list[str]) -> int:
    stale = []
    for name, draw in PICTURES.items():
        path = HERE / name
        svg = draw()
        if "--check" in argv:
            if not path.exists() or path.read_text("utf-8") != svg:
                stale.append(name)
        else:
            path.write_text(svg, "utf-8")
    if stale:
        print(f"stale, rerun python {Path(__file__).name}: {stale}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
