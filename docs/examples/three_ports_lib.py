#!/usr/bin/env python3
"""Three listening ports, one loop, each connection answered "hello" and closed.

three_ports_raw.py writes the select() loop by hand.  On the library the core logic
is five lines: a handler, and a ``ServerGroup`` that serves three ``TCPServer``\\ s
from one ``serve_forever()`` loop, in one thread::

    class Hello(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"hello")

    with socketserver.ServerGroup(servers) as group:
        group.serve_forever()

The rest is the command line, the same as three_ports_raw.py's.

Run::

    python docs/examples/three_ports_lib.py              # ports 8001, 8002, 8003
    python docs/examples/three_ports_lib.py --port 9000  # ports 9000, 9001, 9002
    python docs/examples/three_ports_lib.py --port 0     # three free ports
    nc 127.0.0.1 8002                                     # prints: hello

Output.  The first three stdout lines are ``listening on HOST:PORT``, one per port, in
order, flushed at once.  Logs go to stderr.

Stopping.  Ctrl-C (SIGINT) or ``--max-seconds S``: every socket is closed, exit status 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

import minisocketserver as socketserver

HOST = "127.0.0.1"
DEFAULT_PORT = 8001  # the seed's ports: 8001, 8002, 8003
PORT_COUNT = 3


def log(msg: str) -> None:
    print(f"[three_ports_lib] {msg}", file=sys.stderr, flush=True)


class Hello(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"hello")


class HelloServer(socketserver.TCPServer):
    # Restarting right after serving must not fail on TIME_WAIT (the seed's bug 2).
    allow_reuse_address = True


def open_servers(host: str, first_port: int) -> list[HelloServer]:
    """Servers on first_port, +1, +2 (three free ports if 0); all or none."""
    servers: list[HelloServer] = []
    try:
        for i in range(PORT_COUNT):
            servers.append(HelloServer((host, first_port + i if first_port else 0), Hello))
    except BaseException:
        for server in servers:
            server.server_close()
        raise
    return servers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Three listening ports served by one ServerGroup loop; each connection"
        " gets 'hello' and is closed. Prints one 'listening on HOST:PORT' line per port"
        " first; Ctrl-C stops it with status 0."
    )
    ap.add_argument("--host", default=HOST, help=f"address to listen on (default {HOST})")
    ap.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"first of three consecutive ports; 0 = three free ports (default {DEFAULT_PORT})",
    )
    ap.add_argument(
        "--max-seconds", type=float, default=None, help="stop by itself after this long"
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        servers = open_servers(args.host, args.port)
    except OSError as exc:
        log(f"cannot listen on {args.host} from port {args.port}: {exc}")
        return 1
    with socketserver.ServerGroup(servers) as group:
        for server in servers:
            host, port = server.server_address[:2]
            print(f"listening on {host}:{port}", flush=True)
        if args.max_seconds is not None:
            timer = threading.Timer(args.max_seconds, group.shutdown)
            timer.daemon = True
            timer.start()
        try:
            group.serve_forever()
        except KeyboardInterrupt:
            log("interrupted (Ctrl-C), stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
