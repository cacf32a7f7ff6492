"""Write (or check) the tour sample that docs/index.md shows.

Why: docs/index.md shows "the start of a real run" of
``python -m minisocketserver tour``.  Typed in by hand, it went stale the
first time the tour's wording changed (issue 11, item 4).  Now the text
between the markers ``<!-- tour-sample:start -->`` and
``<!-- tour-sample:end -->`` is the tour's own output, cut by a rule:

    the default tour (threading), up to its third step: the preamble, the
    construction and the start of ``serve_forever()``.

Those steps happen on the main thread and on the loop thread before any
client exists, so they print the same bytes on every run: no port (the
preamble says "a port the kernel picks"), no address, no pid, no
temporary path, and no interleaving of threads.  That is why the check
compares bytes and normalises nothing: a change that let a port or an
ordering into the sample would fail the check rather than be hidden by it.
(The steps after a client connects are not in the sample: there the loop's
idle ``service_actions()``/``select()`` turns fall before or after the
worker's calls depending on scheduling.)

    python tools/tour_sample.py --write   # regenerate the block in docs/index.md
    python tools/tour_sample.py --check   # exit 1, with a diff, if it is stale

tests/test_tour_sample.py runs the check.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INDEX = ROOT / "docs" / "index.md"
START = "<!-- tour-sample:start -->"
END = "<!-- tour-sample:end -->"
#: The sample ends before the tour's step with this ordinal (1-based).
FIRST_STEP_LEFT_OUT = 3


def tour_output() -> str:
    """The whole output of a fresh ``python -m minisocketserver tour``."""
    done = subprocess.run(
        [sys.executable, "-m", "minisocketserver", "tour"],
        cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the tour failed (exit {done.returncode}):\n{done.stderr}")
    return done.stdout


def cut(output: str) -> str:
    """The sample: ``output``'s lines before its step ``FIRST_STEP_LEFT_OUT``."""
    lines: list[str] = []
    steps = 0
    for line in output.splitlines():
        if line.startswith("== "):
            steps += 1
            if steps == FIRST_STEP_LEFT_OUT:
                break
        lines.append(line.rstrip())
    if steps < FIRST_STEP_LEFT_OUT:
        raise RuntimeError(f"the tour printed {steps} steps; the sample needs "
                           f"{FIRST_STEP_LEFT_OUT}: has the tour changed its '== ' headers?")
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def block(sample: str) -> str:
    """The Markdown between the markers: the sample as a ``text`` code block."""
    return f"{START}\n```text\n{sample}```\n{END}"


def committed(page: str) -> str:
    """The block currently between the markers of ``page`` (markers included)."""
    start = page.find(START)
    end = page.find(END)
    if start < 0 or end < start:
        raise RuntimeError(f"{INDEX.name} has no {START} ... {END} block")
    return page[start:end + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/tour_sample.py",
                                     description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 if docs/index.md's sample is stale")
    mode.add_argument("--write", action="store_true", help="rewrite the sample in docs/index.md")
    parser.add_argument("--page", type=Path, default=INDEX, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    page = args.page.read_text(encoding="utf-8")
    old = committed(page)
    new = block(cut(tour_output()))
    if old == new:
        print(f"the tour sample in {args.page.name} matches a fresh run")
        return 0
    if args.write:
        args.page.write_text(page.replace(old, new), encoding="utf-8")
        print(f"wrote the tour sample in {args.page}")
        return 0
    print("\n".join(difflib.unified_diff(old.splitlines(), new.splitlines(),
                                         "committed sample", "fresh run", lineterm="")))
    print(f"stale tour sample in {args.page.name} "
          "(regenerate with python tools/tour_sample.py --write)")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
