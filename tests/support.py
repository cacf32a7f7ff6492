"""Helpers the tests share: run a server on a thread, talk to it, count leaks.

Synchronisation rule: tests wait on events (a socket read, a thread join, a
process exit), never on sleeps.  Every wait here has a bound, so a bug shows
up as a failure with a message instead of a hang.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Bound on any single wait in the tests (seconds).  Generous: a loaded CI
#: core can be slow, and a correct program never gets near it.
WAIT = 10.0


@contextlib.contextmanager
def serving(server: Any, poll_interval: float = 0.5) -> Iterator[Any]:
    """Run ``server.serve_forever`` on a thread for the block's duration.

    On exit: ``shutdown()``, join the loop thread, ``server_close()``.
    """
    loop = threading.Thread(
        target=server.serve_forever, args=(poll_interval,), name="serve_forever", daemon=True
    )
    loop.start()
    try:
        yield server
    finally:
        server.shutdown()
        loop.join(WAIT)
        assert not loop.is_alive(), "serve_forever() did not return after shutdown()"
        server.server_close()


def connect(address: Any, family: int = socket.AF_INET) -> socket.socket:
    """A blocking client socket connected to ``address``, with the test wait bound."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(address)
    return sock


def recv_until_eof(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes its side."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes; fails if the peer closes first."""
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise AssertionError(f"peer closed after {len(buf)} of {size} bytes")
        buf += chunk
    return bytes(buf)


def open_fds() -> set[int]:
    """Descriptor numbers open in this process now."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


def child_pids() -> set[int]:
    """PIDs of this process's children that still exist (zombies included)."""
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        # A thread that just ended can vanish between listdir() and open().
        with contextlib.suppress(FileNotFoundError), open(f"/proc/self/task/{task}/children") as f:
            pids.update(int(p) for p in f.read().split())
    return pids


@dataclass
class Resources:
    """What a test may not leave behind: descriptors, threads, children."""

    fds: set[int]
    threads: set[threading.Thread]
    children: set[int]

    @classmethod
    def snapshot(cls) -> Resources:
        return cls(open_fds(), set(threading.enumerate()), child_pids())

    def assert_back_to_baseline(self) -> None:
        # A worker thread forgets itself just before it ends, so it may still
        # be finishing here: join (an event, not a sleep) with a bound; a
        # thread stuck for real still fails below.
        for thread in set(threading.enumerate()) - self.threads:
            thread.join(WAIT)
        leaked_threads = [t.name for t in set(threading.enumerate()) - self.threads]
        assert not leaked_threads, f"threads left running: {leaked_threads}"
        leaked_children = child_pids() - self.children
        assert not leaked_children, f"child processes left: {leaked_children}"
        leaked_fds = {fd: _describe(fd) for fd in open_fds() - self.fds}
        assert not leaked_fds, f"descriptors left open: {leaked_fds}"


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def loop_has_turned(server: Any) -> None:
    """Wait until the server's loop has run one full iteration after this call.

    Whatever was ready when we posted (say, a connection in the backlog of
    a watched listener) has been dispatched by then: the reactor runs
    descriptor callbacks before posted callbacks in the same iteration.
    """
    turned = threading.Event()
    reactor = server._reactor
    assert reactor is not None, "the server is not serving"
    reactor.call_soon_threadsafe(turned.set)
    assert turned.wait(WAIT), "the loop did not turn"


def has_ipv6_loopback() -> bool:
    """Whether this machine can bind ::1 (containers often have no IPv6 at all)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
