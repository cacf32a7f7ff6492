"""The command line: ``python -m minisocketserver COMMAND``.

``tour [MODEL]`` runs an echo service with the call-flow tracer on and
prints every hook call live, each with why it exists and where the
walkthrough explains it (see ``minisocketserver.tour``).

``echo`` runs the seed document's echo server: every chunk a client sends
comes back with "好" appended, on 127.0.0.1:8001 unless told otherwise.  Try
it with ``nc 127.0.0.1 8001`` or ``docs/examples/echo_client.py``.

``run -m MODULE [ARGS...]`` and ``run SCRIPT [ARGS...]`` run a program as
``python -m MODULE`` or ``python SCRIPT`` would, with this package standing
in for ``socketserver`` (see ``minisocketserver.alias``): ``run -m
http.server 8000`` serves files on our classes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

from . import alias, sockets, threading_mixin

# Re-exported ("as"), for callers of the old place: the seed's handler lives in
# seed.py, which both this module and tour.py import, so neither has to
# import the other for it.
from .seed import SUFFIX as SUFFIX
from .seed import SeedEchoHandler as SeedEchoHandler

PROG = "python -m minisocketserver"
RUN_USAGE = f"usage: {PROG} run -m MODULE [ARGS...] | SCRIPT [ARGS...]"


def _server_class(model: str) -> type[sockets.TCPServer]:
    """The server class for ``--model``; Ctrl-C must not wait for clients."""
    if model == "sync":
        return sockets.TCPServer
    if model == "threading":

        class DemoThreadingServer(threading_mixin.ThreadingTCPServer):
            # A demo stops on Ctrl-C even while clients are connected.
            daemon_threads = True
            block_on_close = False

        return DemoThreadingServer
    from . import forking_mixin  # POSIX only

    class DemoForkingServer(forking_mixin.ForkingTCPServer):
        # Children get the same SIGINT from the terminal and exit themselves.
        block_on_close = False

    return DemoForkingServer


def run_echo(host: str, port: int, model: str) -> int:
    """Serve the seed echo until Ctrl-C; return the exit status."""
    server_class = _server_class(model)
    server_class.allow_reuse_address = True
    with server_class((host, port), SeedEchoHandler) as server:
        bound_host, bound_port = server.server_address[:2]
        print(f"echo ({model}) listening on {bound_host}:{bound_port}; Ctrl-C stops it",
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("\nstopped", flush=True)
    return 0


def run_target(argv: Sequence[str]) -> int:
    """``run``: parse ``-m MODULE [ARGS...]`` or ``SCRIPT [ARGS...]`` and run it.

    Parsed by hand, not by argparse: everything after the module or script
    belongs to the target, ``-h`` and ``--port`` included, and argparse's
    REMAINDER cannot start with an option such as ``-m``.  Errors of ours
    are one line on stderr; a missing target exits as python does (1 for a
    module, 2 for a script); the target's own exit status and exceptions
    pass through untouched (see ``alias.run_module``).
    """
    if not argv:
        return _usage_error("name a module (-m MODULE) or a script to run")
    first, rest = argv[0], list(argv[1:])
    if first in ("-h", "--help"):
        print(RUN_USAGE)
        print("\nRun MODULE or SCRIPT as python would, with minisocketserver installed as")
        print("socketserver first: http.server, xmlrpc.server, wsgiref, logging.config")
        print("and code built on socketserver then serve on minisocketserver's classes.")
        return 0
    module = None
    if first == "-m":
        if not rest:
            return _usage_error("-m needs a module name")
        module, rest = rest[0], rest[1:]
    elif first.startswith("-m"):  # python accepts -mhttp.server too
        module = first[2:]
    elif first.startswith("-"):
        return _usage_error(f"unknown option {first!r} (only -m MODULE is understood)")
    try:
        alias.install()
    except alias.AliasError as error:
        # Something ran before us (a .pth file, sitecustomize): running the
        # target now would mix stdlib's classes with ours without a word.
        print(f"{PROG} run: {error}", file=sys.stderr)
        return 1
    if module is not None:
        problem = _unrunnable_module(module)
        if problem:
            print(f"{PROG} run: {problem}", file=sys.stderr)
            return 1
        alias.run_module(module, rest)
        return 0
    if not os.path.exists(first):
        print(f"{PROG} run: can't open file {os.path.abspath(first)!r}: "
              "No such file or directory", file=sys.stderr)
        return 2
    alias.run_path(first, rest)
    return 0


def _usage_error(message: str) -> int:
    print(f"{PROG} run: {message}; {RUN_USAGE.removeprefix('usage: ')}", file=sys.stderr)
    return 2


def _unrunnable_module(name: str) -> str | None:
    """Why ``python -m name`` would fail before running any of its code, or None.

    Checked before running, so that an ImportError raised *by* the target
    still reaches the user as the target's traceback, not as our message.
    Finding ``a.b`` imports package ``a``, as ``python -m a.b`` does.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
        if spec is None:
            return f"No module named {name!r}"
        if (spec.submodule_search_locations is not None
                and importlib.util.find_spec(f"{name}.__main__") is None):
            return f"No module named {name}.__main__; {name!r} is a package and cannot be " \
                "directly executed"
    except (ImportError, ValueError) as error:  # a parent is missing; "" or ".x"
        return str(error)
    return None


def build_parser() -> argparse.ArgumentParser:
    from . import tour as tour_mod  # only the tour needs it; run must stay light

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run and study the minisocketserver examples.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    echo = commands.add_parser("echo", help="the seed's echo server (reply = message + 好)")
    echo.add_argument("--host", default="127.0.0.1")
    echo.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    echo.add_argument("--model", choices=["sync", "threading", "forking"], default="threading")
    tour = commands.add_parser(
        "tour", help="run an echo service and print its call flow live, step by step")
    tour.add_argument("model", nargs="?", default="threading", choices=tour_mod.MODELS,
                      help="concurrency model / server to tour (default: threading)")
    tour.add_argument("--server", metavar="module:Class",
                      help="tour your own server class instead of the model's")
    tour.add_argument("--handler", metavar="module:Class",
                      help="tour your own request handler class")
    tour.add_argument("--stdlib", action="store_true",
                      help="tour the standard library's socketserver instead (sync, "
                           "threading, forking, udp, unix)")
    # Listed for --help only: main() hands "run" to run_target() before
    # argparse sees it (see run_target for why).
    commands.add_parser(
        "run", usage=RUN_USAGE.removeprefix("usage: "),
        help="run a module (-m MODULE) or a script with minisocketserver as socketserver")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:
        return run_target(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "echo":
        return run_echo(args.host, args.port, args.model)
    if args.command == "tour":
        from . import tour as tour_mod

        if args.stdlib and tour_mod.loaded_stdlib() is None:
            return _tour_stdlib_in_recorder(argv)
        return tour_mod.run_tour(args.model, args.server, args.handler, stdlib=args.stdlib)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


def _tour_stdlib_in_recorder(argv: list[str]) -> int:
    """Run ``tour --stdlib`` in the recorder, the one program that loads stdlib's module.

    This package never imports the standard library's ``socketserver``: it
    is a clean-room reimplementation, and a check holds it to that.  The
    tour of stdlib's flow needs that module only as the object the tracer
    wraps, so ``minisocketserver_stdlib.py``, installed beside the package,
    imports it and runs this same command line in a child process.
    """
    sys.stdout.flush()
    return subprocess.call([sys.executable, "-m", "minisocketserver_stdlib", *argv])
