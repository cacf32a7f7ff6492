"""A pre-forked server for tests/test_prefork.py, run as its own process (the master).

Each connection sends one line; the worker answers with its pid and closes.
The line ``hold`` first gets ``held <pid>``, then the answer only after the
client sends a second line (an in-flight request a test controls).

Stdout: JSON lines, one per event, written by the master only:
``{"event": "listening", "port": P, "master": PID}`` once it serves,
``{"event": "started"|"exited", "pid": PID, ...}`` per worker, and
``{"event": "stopped", "cut": N}`` when ``serve_forever()`` returned.
Stderr: the package's log ("prefork: ..." lines), DEBUG included.

Usage: python tests/prefork_server.py [--model M] [--workers N] [--timeout S]
       [--max-requests N] [--graceful S] [--reuse-port] [--cert F --key F]
       [--shutdown-on-stdin] [--fail-init] [--exit-init]
       [--fail-as-upgrade]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minisocketserver as mss
from minisocketserver.prefork import PreforkMixIn

# The forking model answers from a child per request: its parent is the worker.
WORKER_IS_PARENT = False


def answer(line: bytes) -> bytes:
    return f"{os.getppid() if WORKER_IS_PARENT else os.getpid()}\n".encode()


class Handler(mss.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline().strip()
        if line == b"hold":
            self.wfile.write(f"held {os.getpid()}\n".encode())
            self.wfile.flush()
            if not self.rfile.readline():  # cut under us (drain ran out of time)
                self.wfile.write(b"cut\n")
                return
        self.wfile.write(answer(line))


class LineHandler(mss.LineRequestHandler):
    held = False

    def line_received(self, line: bytes) -> None:
        if line.strip() == b"hold" and not self.held:
            self.held = True
            self.send(f"held {os.getpid()}\n".encode())
            return
        self.send(answer(line))
        self.close()


MODELS: dict[str, Any] = {
    "tcp": mss.TCPServer,
    "threading": mss.ThreadingTCPServer,
    "threadpool": mss.ThreadPoolTCPServer,
    "forking": mss.ForkingTCPServer,
    "multiplexing": mss.MultiplexingTCPServer,
    "tls": mss.ThreadingTLSServer,
    "mtls": mss.MultiplexingTLSServer,
}


# One write per event, under a lock: the drain thread and the main thread
# both emit, and print() writes the line and its newline separately.
_emitting = threading.Lock()


def emit(**fields: Any) -> None:
    with _emitting:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="threading", choices=sorted(MODELS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=0)
    parser.add_argument("--graceful", type=float, default=5.0)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--shutdown-on-stdin", action="store_true")
    parser.add_argument("--fail-init", action="store_true")
    parser.add_argument("--exit-init", action="store_true")  # a worker that exits 0 at once
    # The program re-executed by SIGUSR2 exits at once (a broken new release).
    parser.add_argument("--fail-as-upgrade", action="store_true")
    options = parser.parse_args()
    if options.fail_as_upgrade and "MINISOCKETSERVER_PREFORK_UPGRADE" in os.environ:
        sys.exit(3)
    global WORKER_IS_PARENT
    WORKER_IS_PARENT = options.model == "forking"
    # DEBUG: "prefork: worker N serves" tells the tests when a worker listens.
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="%(process)d %(message)s")

    class App(PreforkMixIn, MODELS[options.model]):  # type: ignore[misc]
        allow_reuse_address = True
        workers = options.workers
        worker_timeout = options.timeout
        max_requests = options.max_requests
        graceful_timeout = options.graceful
        reuse_port = options.reuse_port

        def worker_init(self) -> None:
            if options.fail_init:
                raise RuntimeError("worker_init fails (--fail-init)")
            if options.exit_init:
                os._exit(0)

        def worker_started(self, pid: int) -> None:
            emit(event="started", pid=pid, master=os.getpid(), time=time.monotonic())

        def worker_exited(self, pid: int, status: int) -> None:
            emit(event="exited", pid=pid, status=status, time=time.monotonic())

    kwargs: dict[str, Any] = {}
    if options.model in ("tls", "mtls"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(options.cert, options.key)
        kwargs["context"] = context
    handler = LineHandler if options.model in ("multiplexing", "mtls") else Handler
    server = App(("127.0.0.1", 0), handler, **kwargs)
    emit(event="listening", port=server.server_address[1], master=os.getpid())
    if options.shutdown_on_stdin:
        # The one case with a thread in the master: shutdown() must be
        # called from another thread.  Started after the first forks.
        def stop_on_line() -> None:
            sys.stdin.readline()
            emit(event="cut", cut=server.drain(options.graceful))

        stopper = threading.Thread(target=stop_on_line, daemon=True)
        stopper.start()
    server.serve_forever()
    if options.shutdown_on_stdin:
        stopper.join()  # its "cut" event comes before "stopped"
    server.server_close()
    emit(event="stopped")


if __name__ == "__main__":
    main()
