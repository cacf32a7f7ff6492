#!/usr/bin/env python3
"""10,000 concurrent connections on one MultiplexingTCPServer thread (issue 3, item 4).

What it does, in order:

1. raises this process's soft RLIMIT_NOFILE to its hard limit (a child inherits it);
2. starts the server in a subprocess (``--serve``): a ``MultiplexingTCPServer``
   echoing every chunk, one thread, on 127.0.0.1 with a free port, and reads its
   idle peak memory (VmHWM in /proc/PID/status) as the baseline;
3. opens ``--connections`` client connections from this process, non-blocking,
   in waves of ``--wave`` (so the server's listen backlog never overflows and no
   SYN waits a retransmission second), and checks the server accepted them all;
4. ``--rounds`` times, sends a ``--size``-byte message on every connection and
   waits until every connection has its echo back (epoll, one thread): round
   trips/s = connections x rounds / elapsed;
5. reads the server's VmHWM again: (peak - baseline) / connections is the
   memory per connection, in user space (kernel socket buffers are not in RSS);
   checks the server ran the whole time with one thread; closes everything.

Run (the figures in docs/multiplexing-scale.md come from this command)::

    python benchmarks/many_connections.py                 # 10,000 connections, epoll
    python benchmarks/many_connections.py --selector poll

Needs a hard descriptor limit above the connection count (about 10,100 per
process here: the client and the server each hold one socket per connection).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"
SELECTORS = {
    "epoll": "EpollSelector",
    "poll": "PollSelector",
    "select": "SelectSelector",
}


def raise_nofile() -> int:
    """Raise the soft descriptor limit to the hard one; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- the server (a subprocess) ----------------------------------------------------


def serve(selector_name: str) -> int:
    """Echo every chunk on every connection until SIGINT; print the port first."""
    # Import minisocketserver from this working tree (the repository root), also
    # when run by hand from a checkout without installing it.
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
    import minisocketserver as socketserver

    class Echo(socketserver.MultiplexedRequestHandler):
        def data_received(self, data: bytes) -> None:
            self.send(data)

    class Server(socketserver.MultiplexingTCPServer):
        selector_class = getattr(selectors, SELECTORS[selector_name])
        # The kernel caps the backlog at net.core.somaxconn (4096 here).
        request_queue_size = 4096

    signal.signal(signal.SIGINT, signal.default_int_handler)
    with Server((HOST, 0), Echo) as server:
        print(server.server_address[1], flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # SIGINT is how run() stops us
            server.serve_forever()
    return 0


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":", 1) for line in f if ":" in line)


def kib(status: dict[str, str], field: str) -> int:
    return int(status[field].split()[0])


# -- the client (this process) ----------------------------------------------------


def open_connections(port: int, count: int, wave: int, deadline: float) -> list[socket.socket]:
    """``count`` connected non-blocking sockets, opened ``wave`` at a time."""
    socks: list[socket.socket] = []
    with selectors.DefaultSelector() as sel:
        while len(socks) < count:
            pending = []
            for _ in range(min(wave, count - len(socks))):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex((HOST, port))
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, f"connect: {errno.errorcode[err]}")
                sel.register(sock, selectors.EVENT_WRITE)
                pending.append(sock)
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(pending)} connects still pending")
                for key, _ in sel.select(left):
                    sock = key.fileobj  # type: ignore[assignment]
                    sel.unregister(sock)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, f"connect: {errno.errorcode[err]}")
                    pending.remove(sock)
                    socks.append(sock)
    return socks


def echo_round(
    sel: selectors.BaseSelector, socks: list[socket.socket], message: bytes, deadline: float
) -> None:
    """Send ``message`` on every socket, then wait until each has it back."""
    for sock in socks:
        # 64 bytes always fit an empty send buffer: send() takes them whole.
        if sock.send(message) != len(message):
            raise RuntimeError("short send on an idle connection")
    missing = {sock.fileno(): len(message) for sock in socks}
    for sock in socks:
        sel.modify(sock, selectors.EVENT_READ)
    while missing:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{len(missing)} connections without their echo")
        for key, _ in sel.select(left):
            sock = key.fileobj  # type: ignore[assignment]
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("the server closed a connection")
            missing[key.fd] -= len(data)
            if missing[key.fd] == 0:
                del missing[key.fd]


def run(args: argparse.Namespace) -> int:
    hard = raise_nofile()
    if hard < args.connections + 100:
        print(
            f"the hard descriptor limit ({hard}) is too low for {args.connections} connections",
            file=sys.stderr,
        )
        return 1
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--selector", args.selector],
        stdout=subprocess.PIPE,
        text=True,
    )
    socks: list[socket.socket] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        base = proc_status(server.pid)
        deadline = time.monotonic() + args.max_seconds
        started = time.monotonic()
        socks = open_connections(port, args.connections, args.wave, deadline)
        connect_seconds = time.monotonic() - started
        message = b"m" * (args.size - 1) + b"\n"
        with selectors.DefaultSelector() as sel:
            for sock in socks:
                sel.register(sock, selectors.EVENT_READ)
            # A first round warms up: every handler exists only once its
            # connection has been accepted, and accept is lazy under load.
            echo_round(sel, socks, message, deadline)
            started = time.monotonic()
            for _ in range(args.rounds):
                echo_round(sel, socks, message, deadline)
            elapsed = time.monotonic() - started
        peak = proc_status(server.pid)
        threads = int(peak["Threads"])
        per_conn = (kib(peak, "VmHWM") - kib(base, "VmHWM")) * 1024 / args.connections
        print(
            f"python {sys.version.split()[0]}, selector {args.selector}, "
            f"{args.connections} connections, {args.size}-byte messages"
        )
        print(f"connections opened in {connect_seconds:.2f} s")
        print(f"server threads: {threads}")
        print(
            f"server VmHWM: idle {kib(base, 'VmHWM') / 1024:.1f} MiB, "
            f"with the connections {kib(peak, 'VmHWM') / 1024:.1f} MiB"
        )
        print(f"peak memory per connection: {per_conn:.0f} bytes")
        print(
            f"round trips: {args.connections * args.rounds} in {elapsed:.2f} s = "
            f"{args.connections * args.rounds / elapsed:,.0f}/s "
            f"({args.rounds} rounds of one message on every connection)"
        )
        return 0 if threads == 1 else 1
    finally:
        for sock in socks:
            sock.close()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5, help="timed echo rounds (default 5)")
    ap.add_argument("--size", type=int, default=64, help="message bytes (default 64)")
    ap.add_argument("--wave", type=int, default=1000, help="connects in flight at once")
    ap.add_argument("--selector", choices=sorted(SELECTORS), default="epoll")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="give up after this")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve(args.selector)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
