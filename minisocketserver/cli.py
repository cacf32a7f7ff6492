"""The command line: ``python -m minisocketserver COMMAND``.

``tour [MODEL]`` runs an echo service with the call-flow tracer on and
prints every hook call live, each with why it exists and where the
walkthrough explains it (see ``minisocketserver.tour``).

``echo`` runs the seed document's echo server: every chunk a client sends
comes back with "好" appended, on 127.0.0.1:8001 unless told otherwise.  Try
it with ``nc 127.0.0.1 8001`` or ``docs/examples/echo_client.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import handlers, sockets, threading_mixin
from . import tour as tour_mod

#: What the seed's server appends to every reply.
SUFFIX = "好".encode()


class SeedEchoHandler(handlers.BaseRequestHandler):
    """Answer every chunk received with the chunk plus "好", until EOF.

    Works per ``recv()`` chunk, not per line, because the seed's client sends
    what was typed without a newline and waits for the reply.
    """

    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data + SUFFIX)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minisocketserver",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "echo":
        return run_echo(args.host, args.port, args.model)
    if args.command == "tour":
        return tour_mod.run_tour(args.model, args.server, args.handler, stdlib=args.stdlib)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others
