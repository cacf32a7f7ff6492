#!/usr/bin/env python3
"""One select() loop, three listening ports, each connection answered "hello" and closed.

The seed's "server-demo2" written afresh: the smallest program that shows what select()
is for.  Three sockets wait for connections at once, in one thread, without any of
them blocking the others.  What the seed got wrong is marked ``SEED:`` below.

Run::

    python docs/examples/three_ports_raw.py              # ports 8001, 8002, 8003
    python docs/examples/three_ports_raw.py --port 9000  # ports 9000, 9001, 9002
    python docs/examples/three_ports_raw.py --port 0     # three free ports
    nc 127.0.0.1 8002                                     # prints: hello

Output.  The first three stdout lines are ``listening on HOST:PORT``, one per port, in
order, flushed at once.  Logs go to stderr.

Stopping.  Ctrl-C (SIGINT) or ``--max-seconds S``: every socket is closed, exit status 0.

What the seed got wrong, each checked by running its loop (re-indented, on free ports):

1. One bad client kills it.  ``conn.sendall(...)`` is not in a try block: a client that
   connects and resets at once (SO_LINGER 0) makes it raise ConnectionResetError, and
   the server exits on the second such client in our run.
2. No SO_REUSEADDR: the server closes first, so its side of each connection waits in
   TIME_WAIT, and a restart right after serving one client fails with
   "OSError: [Errno 98] Address already in use".  Setting it fixes restarts after a
   run of this server only: on Linux a connection in TIME_WAIT keeps the option of the
   listener that accepted it, and a new listener binds over it only if both set it
   (``python -m pytest tests/test_docs_sentences.py -k reuseaddr``).
3. Blocking listening sockets.  accept(2) warns that a connection reported by select()
   may be gone by the time accept() runs ("removed by an asynchronous network error or
   another thread"), and that a blocking accept() then waits for the *next* client,
   with the other two ports unserved meanwhile.  We did not reproduce this on Linux,
   which handed over even reset connections (that is how bug 1 happens), but the fix
   costs one line: a non-blocking listener, and BlockingIOError means "nothing to do".

A limit we keep, on purpose: if a client *sends* something before we close, Linux
answers our close() with a reset instead of a normal FIN (RFC 1122, 4.2.2.13), and the
client may get ECONNRESET instead of "hello".  Clients of this protocol only listen;
reading until the client closes would need per-connection state, which is what
select_echo_raw.py shows.
"""

from __future__ import annotations

import argparse
import errno
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence

HOST = "127.0.0.1"
DEFAULT_PORT = 8001  # the seed's ports: 8001, 8002, 8003
PORT_COUNT = 3
GREETING = b"hello"

#: As in select_echo_raw.py: out of descriptors or memory, so back off instead of
#: spinning on a listening socket that stays readable.
ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF = 0.1


def log(msg: str) -> None:
    print(f"[three_ports_raw] {msg}", file=sys.stderr, flush=True)


def open_listeners(host: str, first_port: int) -> list[socket.socket]:
    """Listening sockets on first_port, +1, +2 (or three free ports if first_port is 0).

    Resource handling: on failure, every socket opened so far is closed before the
    exception propagates; on success the caller owns them all.
    """
    socks: list[socket.socket] = []
    try:
        for i in range(PORT_COUNT):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # SEED bug 2
            s.bind((host, first_port + i if first_port else 0))
            s.listen()
            s.setblocking(False)  # SEED bug 3
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def answer(listener: socket.socket) -> None:
    """Accept one connection on ``listener``, say hello, close it.

    Error handling: every failure concerns one client only, so it is logged and the
    loop goes on (SEED bug 1).
    """
    try:
        conn, addr = listener.accept()
    except (BlockingIOError, InterruptedError):
        return  # the client left between select() and accept()
    port = listener.getsockname()[1]
    with conn:
        try:
            # A new connection's send buffer is empty, so 5 bytes always fit at once and
            # a blocking sendall() cannot stall here; with a timeout we make sure of it.
            conn.settimeout(1.0)
            conn.sendall(GREETING)
        except OSError as exc:
            log(f"port {port}: {addr[0]}:{addr[1]} gone before hello: {exc}")
            return
    log(f"port {port}: said hello to {addr[0]}:{addr[1]}")


def serve(listeners: list[socket.socket], max_seconds: float | None) -> None:
    """Answer connections on all listeners until max_seconds pass (forever if None).

    Ctrl-C raises KeyboardInterrupt inside select(); the caller catches it.  So the loop
    polls no flag and select() needs no timeout unless there is a deadline.
    """
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    paused_until = 0.0
    while True:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            log("--max-seconds reached, stopping")
            return
        waits = [] if deadline is None else [deadline - now]
        if now < paused_until:
            waits.append(paused_until - now)
            watch: list[socket.socket] = []
        else:
            watch = listeners
        timeout = max(0.0, min(waits)) if waits else None
        readable, _, _ = select.select(watch, [], [], timeout)
        for listener in readable:
            try:
                answer(listener)
            except OSError as exc:
                if exc.errno not in ACCEPT_RESOURCE_ERRNOS:
                    raise
                log(f"accept failed ({exc}); pausing for {ACCEPT_BACKOFF}s")
                paused_until = time.monotonic() + ACCEPT_BACKOFF


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Three listening ports in one select() loop; each connection gets"
        " 'hello' and is closed. Prints one 'listening on HOST:PORT' line per port first;"
        " Ctrl-C stops it with status 0."
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
    # Make Ctrl-C raise KeyboardInterrupt even if SIGINT was ignored when we started
    # (background jobs of a non-interactive shell inherit it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        listeners = open_listeners(args.host, args.port)
    except OSError as exc:
        log(f"cannot listen on {args.host} from port {args.port}: {exc}")
        return 1
    try:
        for s in listeners:
            host, port = s.getsockname()[:2]
            print(f"listening on {host}:{port}", flush=True)
        serve(listeners, args.max_seconds)
    except KeyboardInterrupt:
        log("interrupted (Ctrl-C), stopping")
    finally:
        for s in listeners:
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
