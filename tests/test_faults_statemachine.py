"""A hypothesis state machine that interleaves client faults and server restarts.

Issue 5, item 1.  One server of each concurrent model serves at once; the
machine connects clients to any of them, sends requests in arbitrary
chunks, half-closes, resets, reads, shuts servers down and restarts them,
in any order.  After every step:

* every client has received exactly a prefix of the replies its complete
  requests call for (read without waiting: nothing for an incomplete
  request, nothing twice, nothing out of order);
* threads, child processes and descriptors stay within what the
  connections made so far can explain (nothing runs away).

A ``read`` step on a running server waits (bounded) for every reply owed;
at the end every surviving client half-closes and must read exactly all
its replies, then EOF: each complete request answered exactly once.  Then
everything is closed and must be back to the baseline.

The synchronous model is left out: it serves one connection at a time by
design, so any interleaving with two clients open at once blocks on the
first, which the slowloris scenario already shows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fault_clients import ClientHost
from fault_models import CONCURRENT, ErrorPipe, Model
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)
from support import WAIT, Resources, child_pids, open_fds

_host: ClientHost | None = None


@pytest.fixture(scope="module", autouse=True)
def host() -> Iterator[ClientHost]:
    global _host
    _host = ClientHost()
    yield _host
    _host.stop()
    _host = None


@dataclass
class Client:
    id: int
    server: str
    pending: bytes = b""  # sent, not yet a complete request
    owed: bytes = b""  # replies its complete requests call for, in order
    received: bytes = b""
    half_closed: bool = False
    finished: bool = False  # read to EOF

    def complete(self, request: bytes) -> None:
        self.owed += b"<" + request.rstrip(b"\n") + b">\n"


@dataclass
class Served:
    model: Model
    server: Any
    loop: threading.Thread | None = None
    clients: list[Client] = field(default_factory=list)

    def start(self) -> None:
        self.loop = threading.Thread(target=self.server.serve_forever, name=self.model.name)
        self.loop.start()

    def stop(self) -> None:
        assert self.loop is not None
        self.server.shutdown()
        self.loop.join(WAIT)
        assert not self.loop.is_alive()
        self.loop = None


#: Request bytes: short pieces over a small alphabet, so that lines end
#: often and no line is ever a ``big``/``raise`` command.
chunks = st.binary(min_size=1, max_size=6).map(
    lambda b: bytes(b"ab\n"[x % 3] for x in b)
)


class FaultMachine(RuleBasedStateMachine):
    clients = Bundle("clients")

    def __init__(self) -> None:
        super().__init__()
        assert _host is not None
        self.host = _host
        self.baseline = Resources.snapshot()
        self.errors = ErrorPipe()  # silences handle_error for resets
        self.served = {m.name: Served(m, m.build(errors=self.errors)) for m in CONCURRENT}
        for served in self.served.values():
            served.start()
        self.made = 0

    # -- rules --------------------------------------------------------------

    @rule(target=clients, name=st.sampled_from([m.name for m in CONCURRENT]))
    def connect(self, name: str) -> Client:
        served = self.served[name]
        [cid] = self.host.connect(served.server.server_address)
        client = Client(cid, name)
        served.clients.append(client)
        self.made += 1
        return client

    @rule(client=clients, chunk=chunks)
    def send_chunk(self, client: Client, chunk: bytes) -> None:
        if client.half_closed or client.finished:
            return
        self.host.send([client.id], chunk)
        *lines, client.pending = (client.pending + chunk).split(b"\n")
        for line in lines:
            client.complete(line)

    @rule(client=clients)
    def half_close(self, client: Client) -> None:
        if client.half_closed or client.finished:
            return
        self.host.shut_wr([client.id])
        client.half_closed = True
        if client.pending:
            client.complete(client.pending)
            client.pending = b""

    @rule(client=consumes(clients))
    def reset(self, client: Client) -> None:
        self.host.reset([client.id])
        self.served[client.server].clients.remove(client)

    @rule(client=clients)
    def read(self, client: Client) -> None:
        if self.served[client.server].loop is None or client.finished:
            return  # a stopped server may not have accepted it yet
        self.finish_reading(client)

    @precondition(lambda self: any(s.loop is not None for s in self.served.values()))
    @rule(data=st.data())
    def shutdown(self, data: st.DataObject) -> None:
        running = [name for name, s in self.served.items() if s.loop is not None]
        self.served[data.draw(st.sampled_from(running))].stop()

    @precondition(lambda self: any(s.loop is None for s in self.served.values()))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        stopped = [name for name, s in self.served.items() if s.loop is None]
        self.served[data.draw(st.sampled_from(stopped))].start()

    # -- invariants ---------------------------------------------------------

    @invariant()
    def replies_are_a_prefix_of_what_is_owed(self) -> None:
        live = [c for s in self.served.values() for c in s.clients if not c.finished]
        if not live:
            return
        for client, got in zip(live, self.host.read([c.id for c in live], 1 << 20, 0),
                               strict=True):
            client.received += got.data
            assert client.owed.startswith(client.received), (client, got)
            # An EOF or reset only once everything owed was sent and the
            # client half-closed (or its server cut it: never here).
            if got.end in ("eof", "reset"):
                assert client.half_closed and client.received == client.owed, (client, got)
                client.finished = True

    @invariant()
    def nothing_runs_away(self) -> None:
        # Per server: a listener, a wake-up socketpair, and a selector's own
        # descriptor if it has one (epoll); two for the error pipe.
        fixed = 2 + 4 * len(self.served)
        assert len(threading.enumerate()) <= (
            len(self.baseline.threads) + len(self.served) + self.made
        )
        assert len(child_pids() - self.baseline.children) <= self.made
        assert len(open_fds() - self.baseline.fds) <= fixed + self.made

    # -- helpers and teardown -------------------------------------------------

    def finish_reading(self, client: Client) -> None:
        """Wait for every reply owed (and EOF if half-closed); check it exactly."""
        if client.half_closed:
            [got] = self.host.read([client.id])
            client.received += got.data
            assert (client.received, got.end) == (client.owed, "eof"), (client, got)
            client.finished = True
        else:
            missing = len(client.owed) - len(client.received)
            [got] = self.host.read([client.id], size=missing)
            client.received += got.data
            assert client.received == client.owed, (client, got)

    def teardown(self) -> None:
        try:
            for served in self.served.values():
                if served.loop is None:
                    served.start()
                for client in served.clients:
                    if not client.finished:
                        self.half_close(client)
                        self.finish_reading(client)
        finally:
            self.host.close_all()
            for served in self.served.values():
                if served.loop is not None:
                    served.stop()
                served.server.server_close()
            self.errors.close()
        self.baseline.assert_back_to_baseline()


FaultMachine.TestCase.settings = settings(
    settings.default, max_examples=min(settings.default.max_examples, 20),
    stateful_step_count=15,
)
TestFaultMachine = pytest.mark.timeout(120)(FaultMachine.TestCase)
