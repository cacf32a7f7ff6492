"""The recorder of stdlib's ``socketserver``: the one program here that loads it.

minisocketserver is a clean-room reimplementation of the standard library's
``socketserver``: its package never imports that module, and
``check-clean-room`` holds it to that.  Its instruments still show stdlib's
own call flow beside ours -- ``python -m minisocketserver tour --stdlib`` and
the ``diagrams/stdlib-*`` recordings -- by wrapping stdlib's classes at run
time exactly as they wrap ours: nothing of stdlib is copied, it is only the
object being recorded.  This small program, installed beside the package
and outside it, loads the module and then runs the package's own command;
the package finds it in ``sys.modules`` (``tour.loaded_stdlib()``) and never
loads it itself.  The package runs it as a child process::

    python -m minisocketserver_stdlib tour --stdlib [MODEL]   (what tour --stdlib runs)
    python -m minisocketserver_stdlib record STEM             (one stdlib-* diagram's text)
"""

from __future__ import annotations

import socketserver  # noqa: F401  (the subject the tracer records; see above)
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``record STEM``, or any command line of ``python -m minisocketserver``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["record"] and len(args) == 2:
        from minisocketserver import diagrams

        sys.stdout.write(diagrams.record(args[1]))
        return 0
    from minisocketserver import cli

    return cli.main(args)


if __name__ == "__main__":
    raise SystemExit(main())
