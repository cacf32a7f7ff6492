"""The two sides of the pre-forked tests behind HAProxy (issue 13, item 4).

``WhoAmI`` is the handler the served program runs (``python -m
minisocketserver serve prefork_load:WhoAmI ...``, with this directory on
``PYTHONPATH``): it answers a line with the client address it was given and
the pid of the worker that served it, so a client can check both its own
port and who answered.

``Load`` is the client side: a bounded number of requests, each on a new
connection, from a few threads, counted by outcome.  The counts are the
figures of the restart-under-load test, so every way a request can go wrong
has its own counter instead of being retried.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
from typing import Any

import minisocketserver as ours

#: Bound on one request of the load (seconds): a loopback request through
#: HAProxy takes about a millisecond; a request stuck for this long counts
#: as failed instead of holding the test.
REQUEST_TIMEOUT = 5.0


class WhoAmI(ours.StreamRequestHandler):
    """Answers one line with ``HOST PORT PID``: the client address it was given, and its pid.

    A LOCAL connection (HAProxy's health check with ``send-proxy-v2``)
    sends nothing after its header, so it gets no read and no reply.  A v1
    health check looks like any client, and HAProxy resets it right after
    the header: that reset is the probe ending, not an error.
    """

    def handle(self) -> None:
        header = self.server.proxy_header(self.request)  # type: ignore[attr-defined]
        if header is not None and header.command == "LOCAL":
            return
        try:
            line = self.rfile.readline()
        except ConnectionResetError:
            return
        if line:
            host, port = self.client_address[:2]
            self.wfile.write(f"{host} {port} {os.getpid()}\n".encode())


class Load:
    """Requests through ``address`` from ``threads`` threads until ``stop()`` or the bounds.

    Bounds: ``max_requests`` in all, ``max_seconds`` of running.  Every
    counter and list below is written under ``lock`` (the client threads
    write, the test reads); ``changed`` is notified on each request.
    """

    def __init__(
        self, address: tuple[str, int], threads: int = 2, max_requests: int = 20_000,
        max_seconds: float = 30.0,
    ) -> None:
        self.address = address
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.started = 0
        self.ok = 0
        self.refused = 0  # connect() to HAProxy refused
        self.failed: list[str] = []  # any other way a request did not get its right answer
        self.served_by: collections.Counter[int] = collections.Counter()  # pid -> replies
        self.seconds = 0.0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{i}") for i in range(threads)
        ]
        self._began = 0.0

    def start(self) -> None:
        self._began = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop starting requests; wait (bounded) for those in flight."""
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT + 5)
            assert not thread.is_alive(), f"{thread.name} is stuck"
        self.seconds = time.monotonic() - self._began

    def wait_for_replies_from(self, pids: set[int], count: int, timeout: float) -> bool:
        """Until ``count`` replies came from ``pids`` (or the load ended, or ``timeout``)."""
        with self.changed:
            return self.changed.wait_for(
                lambda: sum(self.served_by[p] for p in pids) >= count or self._ended(), timeout
            ) and sum(self.served_by[p] for p in pids) >= count

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Until ``count`` requests have been answered or failed (or the load ended)."""
        with self.changed:
            return self.changed.wait_for(
                lambda: self._done() >= count or self._ended(), timeout
            ) and self._done() >= count

    def figures(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.started, "ok": self.ok, "failed": len(self.failed),
                "refused": self.refused, "seconds": round(self.seconds, 2),
                "served_by": dict(self.served_by),
            }

    def _done(self) -> int:
        return self.ok + self.refused + len(self.failed)

    def _ended(self) -> bool:
        """No request will start, and none is in flight."""
        return self._over() and self._done() == self.started

    def _over(self) -> bool:
        return (
            self._stop.is_set() or self.started >= self.max_requests
            or time.monotonic() - self._began > self.max_seconds
        )

    def _run(self) -> None:
        while True:
            with self.lock:
                if self._over():
                    self.changed.notify_all()
                    return
                self.started += 1
            outcome = self._one()
            with self.changed:
                if isinstance(outcome, int):
                    self.ok += 1
                    self.served_by[outcome] += 1
                elif outcome == "refused":
                    self.refused += 1
                else:
                    self.failed.append(outcome)
                self.changed.notify_all()

    def _one(self) -> int | str:
        """One request: the serving pid, "refused", or what went wrong."""
        try:
            client = socket.create_connection(self.address, timeout=REQUEST_TIMEOUT)
        except ConnectionRefusedError:
            return "refused"
        except OSError as exc:
            return f"connect: {exc!r}"
        with client:
            port = client.getsockname()[1]
            try:
                client.sendall(b"who am i?\n")
                chunks = []
                while chunk := client.recv(4096):
                    chunks.append(chunk)
            except OSError as exc:
                return f"exchange: {exc!r}"
        reply = b"".join(chunks).decode(errors="replace").split()
        if len(reply) != 3 or reply[:2] != ["127.0.0.1", str(port)]:
            return f"port {port}: reply {reply!r}"
        return int(reply[2])
