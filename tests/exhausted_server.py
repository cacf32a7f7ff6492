"""A server process for the out-of-descriptors tests, run as a script.

    python tests/exhausted_server.py IMPL NOFILE

IMPL is ``minisocketserver`` or ``socketserver`` (stdlib, for the figures in
docs/reliability.md).  The process lowers its own RLIMIT_NOFILE soft limit to
NOFILE, serves a ThreadingTCPServer whose handlers hold each connection open
until the client sends a line (then echo it), prints its port on stdout, and
logs to stderr, where the test reads the "cannot accept" warning.
"""

from __future__ import annotations

import importlib
import logging
import resource
import sys


def main() -> None:
    impl, nofile = sys.argv[1], int(sys.argv[2])
    socketserver = importlib.import_module(impl)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")

    class HoldThenEcho(socketserver.StreamRequestHandler):  # type: ignore[name-defined,misc]
        def handle(self) -> None:
            self.wfile.write(self.rfile.readline())

    class Server(socketserver.ThreadingTCPServer):  # type: ignore[name-defined,misc]
        daemon_threads = True
        block_on_close = False
        request_queue_size = 256  # the flood waits in the backlog, not refused

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a handler cut by a client reset is not what this test watches

    with Server(("127.0.0.1", 0), HoldThenEcho) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
