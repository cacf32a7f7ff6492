"""The fault scenarios, each runnable against any model, each returning its figures.

The tests (tests/test_faults_*.py) run these and assert on what they
return; tests/fault_figures.py runs the same functions and prints the
table in docs/reliability.md.  Every scenario ends with a normal client
(``probe``) that must be answered, and checks its own must-hold properties
with ``assert`` as it goes, so a figure is only ever printed from a run in
which they held.

Clients live in the ``ClientHost`` process (see fault_clients.py for why).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fault_clients import ClientHost, Received
from fault_models import ErrorPipe, Model, error_pipe
from support import WAIT, serving


@dataclass
class Tally:
    """What one scenario did, for the figures table."""

    clients: int = 0
    faults: int = 0
    #: Requests that had to be answered, and those that were.
    expected: int = 0
    answered: int = 0
    #: ``handle_error`` reports (and multiplexed ``finish`` calls), by name.
    reports: list[str] = field(default_factory=list)
    #: Slow clients: seconds from each one's last byte to its close (as seen
    #: by the client, so an upper bound).
    closed_after: list[float] = field(default_factory=list)
    #: Multiplexing: the most output ever queued on one connection (bytes).
    peak_pending: int = 0

    @property
    def lost(self) -> int:
        return self.expected - self.answered

    def check(self, replies: list[Received], requests: list[bytes]) -> None:
        """Count replies that are exactly the service's answer, ended by the server's EOF."""
        self.expected += len(requests)
        for got, request in zip(replies, requests, strict=True):
            if got.data == b"<" + request.rstrip(b"\n") + b">\n" and got.end == "eof":
                self.answered += 1


@contextlib.contextmanager
def running(model: Model, **config: Any) -> Iterator[tuple[Any, ErrorPipe]]:
    """A server of ``model`` serving on a thread, and its error pipe."""
    with error_pipe() as errors, serving(model.build(errors=errors, **config)) as server:
        yield server, errors


def probe(host: ClientHost, server: Any, tally: Tally) -> None:
    """A normal client after the faults: it must be answered."""
    [client] = host.connect(server.server_address)
    host.send([client], b"probe\n")
    host.shut_wr([client])
    tally.clients += 1
    tally.check(host.read([client]), [b"probe\n"])
    assert tally.lost == 0, f"lost {tally.lost} of {tally.expected} requests"


#: The reset waves: (clients, what each sends before its RST).
RESET_WAVES = ((100, b""), (50, b"partial request"), (50, b"whole request\n"))


def resets(model: Model, host: ClientHost, good: int = 10) -> Tally:
    """Clients that reset (RST) before, during and after their request, in waves.

    Each wave's clients all connect, then all reset at once (100, 50 and 50
    by ``RESET_WAVES``).  ``good`` well-behaved clients are mixed into each
    wave; they and the final probe must be answered.
    """
    tally = Tally()
    with running(model) as (server, errors):
        for n, payload in RESET_WAVES:
            rude = host.connect(server.server_address, n)
            fine = host.connect(server.server_address, good)
            if payload:
                host.send(rude, payload)
            requests = [b"good %d\n" % i for i in fine]
            for client, request in zip(fine, requests, strict=True):
                host.send([client], request)
            host.shut_wr(fine)
            host.reset(rude)
            tally.clients += n + good
            tally.faults += n
            tally.check(host.read(fine), requests)
        probe(host, server, tally)
        tally.reports = errors.collected()
    return tally


def half_close(model: Model, host: ClientHost, n: int = 50) -> Tally:
    """Clients that send a request, then shut their write side; the reply must arrive.

    Half of the requests end in ``\\n``, half are completed by the EOF alone.
    """
    tally = Tally()
    with running(model) as (server, errors):
        clients = host.connect(server.server_address, n)
        requests = [b"half-closed %d" % i + (b"\n" if i % 2 else b"") for i in clients]
        for client, request in zip(clients, requests, strict=True):
            host.send([client], request)
        host.shut_wr(clients)
        tally.clients += n
        tally.faults += n
        tally.check(host.read(clients), requests)
        probe(host, server, tally)
        tally.reports = errors.collected()
    return tally


#: Per-connection timeout for the slow-client scenarios (seconds).
SLOW_TIMEOUT = 0.5
#: A server closes an idle client within this long after its timeout.
#: Generous: a loaded CI core may be slow to schedule the handler.
LATE = 3.0


def slowloris(model: Model, host: ClientHost, silent: int = 5, trickling: int = 5) -> Tally:
    """Clients that send nothing, or a byte at a time; the timeout frees the server.

    Concurrent models: a normal client is answered while the slow clients
    are still connected (they do not block it); once the trickle stops,
    every slow client is closed ``SLOW_TIMEOUT`` after its last byte, give
    or take ``LATE``.  The synchronous model serves one connection at a
    time, so it is run with one client of each kind: a silent client holds
    it for ``SLOW_TIMEOUT``; a trickling client holds it as long as it
    trickles (the timeout bounds each read, not the request), and the
    normal client is answered only after the trickle stops and the timeout
    expires.
    """
    timeout = SLOW_TIMEOUT if model.concurrent else 1.2 * SLOW_TIMEOUT
    if not model.concurrent:
        silent = trickling = 1
    tally = Tally()
    with running(model, timeout=timeout) as (server, errors):
        quiet = host.connect(server.server_address, silent)
        slow = host.connect(server.server_address, trickling)
        # A byte every tenth of the timeout: never idle long enough to be cut.
        host.trickle(slow, b"s" * 400, interval=timeout / 10)
        [normal] = host.connect(server.server_address)
        host.send([normal], b"normal\n")
        host.shut_wr([normal])
        tally.clients += silent + trickling + 1
        tally.faults += silent + trickling
        if model.concurrent:
            tally.check(host.read([normal]), [b"normal\n"])
            # Answered while every trickling client was still connected.
            still_open = host.read(slow, size=1, timeout=0)
            assert all(r.end == "timeout" for r in still_open), still_open
        else:
            # Held by the trickling client: the wait is the proof, not a sleep.
            [waited] = host.read([normal], timeout=1.5 * timeout)
            assert waited.end == "timeout" and not waited.data, waited
        host.stop_trickle()
        if not model.concurrent:
            tally.check(host.read([normal]), [b"normal\n"])
        for got in host.read(quiet + slow, timeout=WAIT):
            assert got.end in ("eof", "reset"), got
            assert 0.95 * timeout <= got.idle <= timeout + LATE, got.idle
            tally.closed_after.append(got.idle)
        probe(host, server, tally)
        tally.reports = errors.collected()
    return tally


#: Size of the reply a client asks for and never reads (bytes).
BIG_REPLY = 8_000_000


def never_reads(model: Model, host: ClientHost) -> Tally:
    """A client asks for a large reply and never reads it.

    With a timeout, the handler's blocked send times out (TimeoutError ->
    ``handle_error``, connection closed); the multiplexing model closes
    the connection once it made no progress for its idle timeout.  Either
    way the client, reading at last, gets part of the reply, then EOF.
    """
    tally = Tally()
    with running(model, timeout=SLOW_TIMEOUT) as (server, errors):
        [client] = host.connect(server.server_address, rcvbuf=4096)
        host.send([client], b"big %d\n" % BIG_REPLY)
        tally.clients += 1
        tally.faults += 1
        gave_up = "finish" if model.multiplexed else "TimeoutError"
        assert errors.wait_for(1, WAIT, gave_up) == [gave_up], errors.seen
        [got] = host.read([client])
        assert got.end == "eof" and len(got.data) < BIG_REPLY, (got.end, len(got.data))
        probe(host, server, tally)
        tally.reports = errors.collected()
    return tally


#: Pipelined requests for ``backpressure``, and the reply each asks for.
PIPELINED, REPLY_SIZE = 200, 65536


def backpressure(model: Model, host: ClientHost) -> Tally:
    """A client pipelines requests for large replies and reads only at the end.

    Every reply must arrive in full.  The multiplexing model records the
    most output it ever queued for the connection (``peak_pending``).
    """
    tally = Tally(clients=1, faults=1, expected=PIPELINED)
    with running(model) as (server, errors):
        [client] = host.connect(server.server_address, rcvbuf=4096)
        host.send([client], b"big %d\n" % REPLY_SIZE * PIPELINED)
        host.shut_wr([client])
        [got] = host.read([client])
        assert got.end == "eof" and got.data == b"x" * (PIPELINED * REPLY_SIZE), len(got.data)
        tally.answered = PIPELINED
        tally.peak_pending = server.peak_pending
        probe(host, server, tally)
        tally.reports = errors.collected()
    return tally


def handler_raises(model: Model, host: ClientHost, n: int = 20) -> Tally:
    """Handlers that raise an ordinary exception: ``handle_error``, connection closed."""
    tally = Tally()
    with running(model) as (server, errors):
        clients = host.connect(server.server_address, n)
        host.send(clients, b"raise error\n")
        host.shut_wr(clients)
        tally.clients += n
        tally.faults += n
        for got in host.read(clients):
            assert got.data == b"" and got.end in ("eof", "reset"), got
        reported = errors.wait_for(n, WAIT, "RuntimeError")
        assert reported.count("RuntimeError") == n, reported
        probe(host, server, tally)
        tally.reports = errors.collected()
    return tally



#: Replies a client reads before its request in flight (proof its handler runs).
FIRST, FIRST_REPLY = b"first\n", b"<first>\n"


def in_flight(host: ClientHost, server: Any, n: int) -> list[int]:
    """``n`` clients whose handlers are running, each halfway through a request."""
    clients = host.connect(server.server_address, n)
    host.send(clients, FIRST)
    for got in host.read(clients, size=len(FIRST_REPLY)):
        assert got.data == FIRST_REPLY, got
    host.send(clients, b"sec")
    return clients


def stop_loop(server: Any, loop: threading.Thread) -> None:
    """``shutdown()`` must return promptly even with requests in flight."""
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    stopper.join(WAIT)
    assert not stopper.is_alive(), "shutdown() hung with requests in flight"
    loop.join(WAIT)
    assert not loop.is_alive()


def drain_in_flight(model: Model, host: ClientHost, n: int = 5) -> Tally:
    """``shutdown()`` with ``n`` requests in flight, then ``drain()`` while they finish.

    Every request in flight is answered, and ``drain`` reports none cut.
    (The synchronous model has at most one request in flight, on the
    loop's own thread: its ``shutdown()`` returns when it is done.)
    """
    if not model.concurrent:
        n = 1
    tally = Tally(clients=n, faults=n)
    with error_pipe() as errors:
        server = model.build(errors=errors)
        loop = threading.Thread(target=server.serve_forever)
        loop.start()
        try:
            clients = in_flight(host, server, n)
            cut: list[int] = []
            if model.concurrent:
                stop_loop(server, loop)
                drainer = threading.Thread(target=lambda: cut.append(server.drain(WAIT)))
            else:
                drainer = threading.Thread(target=server.shutdown)
            drainer.start()
            host.send(clients, b"ond\n")
            host.shut_wr(clients)
            tally.check(host.read(clients), [b"second\n"] * n)
            drainer.join(WAIT)
            loop.join(WAIT)
            assert not drainer.is_alive() and not loop.is_alive()
            assert cut in ([0], []), cut
        finally:
            server.server_close()
        probe_server = model.build(errors=errors)
        with serving(probe_server):
            probe(host, probe_server, tally)
        tally.reports = errors.collected()
    return tally


def udp_flood(model: str) -> Tally:
    """``FLOOD[model]`` datagrams at once; each is answered or dropped by the kernel."""
    import minisocketserver

    count = FLOOD[model]
    with serving(udp_server(minisocketserver, model)) as server:
        answered, dropped = flood(server, count)
    assert answered + dropped == count, (answered, dropped, count)
    # The kernel's drops are UDP's contract, not the server's loss.
    return Tally(clients=1, faults=count, expected=count - dropped, answered=answered,
                 reports=[f"{dropped} dropped by the kernel"])

# -- UDP ------------------------------------------------------------------

#: The datagram models, by the class name both stdlib and ours use.
UDP_MODELS = {"sync": "UDPServer", "threading": "ThreadingUDPServer",
              "forking": "ForkingUDPServer"}
#: Datagrams per flood; forking pays a fork() per datagram, so it gets fewer.
FLOOD = {"sync": 2000, "threading": 2000, "forking": 200}


def udp_handler(impl: Any) -> type:
    """Replies ``<datagram>``, as ``impl.DatagramRequestHandler`` (ours or stdlib's)."""

    class Bracket(impl.DatagramRequestHandler):  # type: ignore[misc,name-defined]
        def handle(self) -> None:
            self.wfile.write(b"<" + self.rfile.read() + b">")

    return Bracket


def udp_server(impl: Any, model: str, **attrs: Any) -> Any:
    cls = type("Server", (getattr(impl, UDP_MODELS[model]),), attrs)
    return cls(("127.0.0.1", 0), udp_handler(impl))


def kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped for ``sock`` (its receive buffer was full).

    The last column of /proc/net/udp, on the line of the socket's inode.
    """
    inode = str(os.fstat(sock.fileno()).st_ino)
    with open("/proc/net/udp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[9] == inode:
                return int(fields[-1])
    raise AssertionError("socket not in /proc/net/udp")


def flood(server: Any, count: int) -> tuple[int, int]:
    """Send ``count`` datagrams as fast as possible: ``(answered, dropped by the kernel)``.

    A reader thread collects replies until every datagram is accounted
    for: answered, or dropped by the kernel at the server's or the client's
    full receive buffer (UDP under overload).  The server itself must lose
    none of those it received.
    """
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        client.connect(server.server_address)
        client.settimeout(0.2)

        def dropped() -> int:
            return kernel_drops(server.socket) + kernel_drops(client)

        def read() -> None:
            nonlocal answered
            deadline = time.monotonic() + WAIT + count / 100
            while time.monotonic() < deadline:
                try:
                    client.recv(64)
                except TimeoutError:
                    if answered + dropped() >= count:
                        return
                else:
                    answered += 1

        reader = threading.Thread(target=read)
        reader.start()
        for i in range(count):
            client.send(b"%d" % i)
        reader.join()
        return answered, dropped()
