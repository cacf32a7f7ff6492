#!/usr/bin/env python3
"""The seed's select() echo server on the library: every line comes back + "好".

select_echo_raw.py writes the loop by hand: the table of connections, the output
queue of each, write readiness, EOF, resets, backpressure, select()'s descriptor
limit.  Here all of that is ``MultiplexingTCPServer``'s job, and what is left is the
protocol, in ``SeedEcho.line_received``: one thread still serves every client.

Protocol, the same as select_echo_raw.py's.  A message is one line of UTF-8 ending in
"\\n" (a trailing "\\r" is dropped, so telnet works); the reply is the same text + "好"
+ "\\n".  Invalid UTF-8 becomes U+FFFD.  A last line without "\\n" before the client
closes its side is still answered.  A line longer than 64 KiB closes the connection.

Run::

    python docs/examples/select_echo_lib.py              # 127.0.0.1:8001, as in the seed
    python docs/examples/select_echo_lib.py --port 0     # any free port
    printf 'hello\\n你好\\n' | python docs/examples/echo_client.py

Output.  The first stdout line is ``listening on HOST:PORT`` (with the real port when
``--port 0``), flushed at once.  Logs go to stderr (``--verbose``: one line per client
connecting and leaving).

Stopping.  Ctrl-C (SIGINT), or ``--max-seconds S``: every connection is closed and the
process exits with status 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import minisocketserver as socketserver

HOST = "127.0.0.1"
DEFAULT_PORT = 8001  # the seed's port
SUFFIX = "好"


def log(msg: str) -> None:
    print(f"[select_echo_lib] {msg}", file=sys.stderr, flush=True)


class SeedEcho(socketserver.LineRequestHandler):
    """Answer each line with its text + "好"."""

    max_line = 64 * 1024  # as select_echo_raw.py's MAX_LINE
    verbose = False

    def setup(self) -> None:
        if self.verbose:
            log(f"{self.client_address[0]}:{self.client_address[1]}: connected")

    def line_received(self, line: bytes) -> None:
        text = line.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", errors="replace")
        self.send((text + SUFFIX + "\n").encode("utf-8"))

    def finish(self) -> None:
        if self.verbose:
            log(f"{self.client_address[0]}:{self.client_address[1]}: gone")


class EchoServer(socketserver.MultiplexingTCPServer):
    # Restarting right after serving must not fail on TIME_WAIT (the seed's bug 9).
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # One line instead of a traceback: e.g. a client refused because its
        # descriptor is beyond select()'s limit.
        log(f"{client_address}: {sys.exc_info()[1]!r}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Echo server on MultiplexingTCPServer: replies to each line with the"
        " line + '好'. Prints 'listening on HOST:PORT' first; Ctrl-C stops it with status 0."
    )
    ap.add_argument("--host", default=HOST, help=f"address to listen on (default {HOST})")
    ap.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"0 = any free port (default {DEFAULT_PORT})"
    )
    ap.add_argument(
        "--max-seconds", type=float, default=None, help="stop by itself after this long"
    )
    ap.add_argument("--verbose", "-v", action="store_true", help="log clients coming and going")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C must raise KeyboardInterrupt even if we were started with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    SeedEcho.verbose = args.verbose
    try:
        server = EchoServer((args.host, args.port), SeedEcho)
    except OSError as exc:
        log(f"cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    with server:  # server_close() on the way out ends every connection
        host, port = server.server_address[:2]
        print(f"listening on {host}:{port}", flush=True)
        if args.max_seconds is not None:
            timer = threading.Timer(args.max_seconds, server.shutdown)
            timer.daemon = True
            timer.start()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            log("interrupted (Ctrl-C), stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
