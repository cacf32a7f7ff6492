"""Bounded resources: out of descriptors, max_threads, and drain().

Issue 5, items 2 and 3.  Each test drives a real server over loopback and
synchronises on socket reads, joins and events posted to the loop.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import WAIT, Resources, connect, loop_has_turned, recv_exactly, serving

import minisocketserver as socketserver
from minisocketserver.reactor import Reactor

HERE = Path(__file__).resolve().parent


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_until(stream: object, needle: str) -> str:
    """Read lines from a subprocess pipe until one contains ``needle``."""
    for line in stream:  # type: ignore[attr-defined]
        if needle in line:
            return str(line)
    raise AssertionError(f"stream ended before {needle!r}")


@pytest.mark.timeout(60)
def test_out_of_descriptors_backs_off_instead_of_spinning_then_recovers() -> None:
    nofile = 64
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "exhausted_server.py"), "minisocketserver", str(nofile)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        port = int(proc.stdout.readline())
        # Twice the limit: the server accepts until it has no descriptor
        # left, and the rest complete their handshake into the backlog.
        for _ in range(2 * nofile):
            held.append(connect(("127.0.0.1", port)))
        warning = read_until(proc.stderr, "cannot accept")
        assert "Too many open files" in warning
        # The episode: the listener stays readable for the whole second.  A
        # loop that retried accept() at once would burn about a full core.
        before = cpu_seconds(proc.pid)
        time.sleep(1.0)  # the measured interval itself, not a synchronisation
        used = cpu_seconds(proc.pid) - before
        assert used < 0.25, f"server used {used:.2f} s of CPU in 1 s while out of descriptors"
        # Free the descriptors: each held handler answers and ends.
        for sock in held:
            sock.sendall(b"bye\n")
        for sock in held:
            assert sock.recv(16) in (b"bye\n", b"")
            sock.close()
        held.clear()
        # A new client is served again (after at most one back-off period).
        with connect(("127.0.0.1", port)) as client:
            client.sendall(b"again\n")
            assert recv_exactly(client, 6) == b"again\n"
        assert "accepting connections again" in read_until(proc.stderr, "accepting")
    finally:
        for sock in held:
            sock.close()
        proc.kill()
        proc.wait(WAIT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class Gate(socketserver.StreamRequestHandler):
    """Says "started", then holds the connection until the client sends a line."""

    def handle(self) -> None:
        self.wfile.write(b"started\n")
        self.rfile.readline()


@pytest.mark.timeout(30)
def test_max_threads_stops_accepting_at_the_limit(no_leaks: Resources) -> None:
    class Bounded(socketserver.ThreadingTCPServer):
        max_threads = 2

    with serving(Bounded(("127.0.0.1", 0), Gate)) as server:
        first, second = connect(server.server_address), connect(server.server_address)
        assert recv_exactly(first, 8) == recv_exactly(second, 8) == b"started\n"
        third = connect(server.server_address)
        # connect() can return before the server's kernel has queued the
        # connection; once the listener polls readable it is in the backlog,
        # where a loop that still watched the listener would accept it.
        readable, _, _ = select.select([server.socket], [], [], WAIT)
        loop_has_turned(server)
        assert readable and len(server._threads) == 2, "a third worker started past max_threads"
        assert not server._reactor.is_watching(server)
        first.sendall(b"done\n")  # one worker ends ...
        assert recv_exactly(third, 8) == b"started\n"  # ... so the third is accepted
        for sock in (first, second, third):
            sock.sendall(b"done\n")
            sock.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server_class", [socketserver.ThreadingTCPServer,
                                          socketserver.ForkingTCPServer])
def test_drain_cuts_what_outlives_the_deadline(
    server_class: type[socketserver.TCPServer], no_leaks: Resources
) -> None:
    server = server_class(("127.0.0.1", 0), Gate)
    with serving(server):
        quick, stuck = connect(server.server_address), connect(server.server_address)
        assert recv_exactly(quick, 8) == recv_exactly(stuck, 8) == b"started\n"
        quick.sendall(b"done\n")  # this one finishes within the deadline
        assert quick.recv(16) == b""
        # The loop is still running: drain() shuts it down first.
        assert server.drain(timeout=0.2) == 1
        # The stuck client is cut: it sees EOF (or a reset) instead of hanging.
        stuck.shutdown(socket.SHUT_WR)
        assert stuck.recv(16) == b""
        quick.close()
        stuck.close()


@pytest.mark.timeout(30)
def test_drain_returns_zero_when_everything_finishes_in_time(no_leaks: Resources) -> None:
    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Gate)) as server:
        client = connect(server.server_address)
        assert recv_exactly(client, 8) == b"started\n"
        client.sendall(b"done\n")
        assert client.recv(16) == b""
        assert server.drain(timeout=WAIT) == 0
        client.close()


@pytest.mark.timeout(30)
def test_a_restarted_loop_starts_paused_while_workers_fill_the_limit(
    no_leaks: Resources,
) -> None:
    attached = threading.Event()

    class Bounded(socketserver.ThreadingTCPServer):
        max_threads = 1

        def _attach(self, reactor: Reactor) -> None:
            super()._attach(reactor)
            attached.set()  # the new loop is running: loop_has_turned may post

    server = Bounded(("127.0.0.1", 0), Gate)
    with connect_after_start(server) as first:
        assert recv_exactly(first, 8) == b"started\n"
        server.shutdown()  # the loop stops; the worker holding `first` does not
        attached.clear()
        with serving(server), connect(server.server_address) as waiting:
            assert attached.wait(WAIT)
            readable, _, _ = select.select([server.socket], [], [], WAIT)
            loop_has_turned(server)
            assert readable and len(server._threads) == 1, "the new loop accepted past the limit"
            first.sendall(b"done\n")
            assert recv_exactly(waiting, 8) == b"started\n"
            waiting.sendall(b"done\n")


@contextlib.contextmanager
def connect_after_start(server: socketserver.TCPServer) -> Iterator[socket.socket]:
    """Start serve_forever on a thread and connect one client; join the thread after."""
    loop = threading.Thread(target=server.serve_forever)
    loop.start()
    try:
        with connect(server.server_address) as client:
            yield client
    finally:
        loop.join(WAIT)
