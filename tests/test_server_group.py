"""ServerGroup: one loop serving servers of every model; shutdown semantics.

Issue 3, items 2 and 5.  Clients of the forking member shut their write side
down instead of relying on close() (see the forking caveat in the brief:
forked children hold copies of every socket open in the test process).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from support import WAIT, Resources, connect, recv_exactly, recv_until_eof, serving

import minisocketserver as socketserver

HOST = "127.0.0.1"


class Hello(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"hello from " + type(self.server).__name__.encode())


class Echo(socketserver.MultiplexedRequestHandler):
    def data_received(self, data: bytes) -> None:
        self.send(data)


def every_model() -> list[socketserver.BaseServer]:
    return [
        socketserver.TCPServer((HOST, 0), Hello),
        socketserver.ThreadingTCPServer((HOST, 0), Hello),
        socketserver.ForkingTCPServer((HOST, 0), Hello),
        socketserver.MultiplexingTCPServer((HOST, 0), Echo),
    ]


def ask_hello(server: socketserver.BaseServer) -> bytes:
    with connect(server.server_address) as client:
        client.shutdown(socket.SHUT_WR)
        return recv_until_eof(client)


def assert_not_served(server: socketserver.BaseServer) -> None:
    assert server._serving_thread is None and server._reactor is None


@pytest.mark.timeout(30)
def test_one_loop_serves_every_model_and_shutdown_stops_them_all(no_leaks: Resources) -> None:
    group = socketserver.ServerGroup(every_model())
    sync, threading_, forking, multiplexing = group.servers
    with serving(group):
        for member in (sync, threading_, forking):
            assert ask_hello(member) == b"hello from " + type(member).__name__.encode()
        with connect(multiplexing.server_address) as client:
            client.sendall(b"echo")
            assert recv_exactly(client, 4) == b"echo"
            # A connection still open when the group shuts down: server_close
            # (by serving()) ends it.
    for member in group.servers:
        assert_not_served(member)
        with socket.socket() as probe:
            probe.settimeout(WAIT)
            assert probe.connect_ex(member.server_address) != 0  # closed: refused


@pytest.mark.timeout(30)
def test_a_members_shutdown_takes_only_it_out_of_the_loop(no_leaks: Resources) -> None:
    group = socketserver.ServerGroup(
        [socketserver.TCPServer((HOST, 0), Hello) for _ in range(3)]
    )
    first, second, third = group.servers
    loop = threading.Thread(target=group.serve_forever, name="serve_forever")
    loop.start()
    try:
        first.shutdown()  # returns once the loop has let it go
        assert_not_served(first)
        assert ask_hello(second) == b"hello from TCPServer"
        # The first listener is still open but no longer watched: a client
        # connects (the kernel's backlog) and is never answered.
        with connect(first.server_address) as waiting:
            waiting.settimeout(0.2)
            with pytest.raises(TimeoutError):
                waiting.recv(1)
        second.shutdown()
        assert ask_hello(third) == b"hello from TCPServer"
        third.shutdown()
        # No member left: serve_forever() has returned by itself.
        loop.join(WAIT)
        assert not loop.is_alive()
    finally:
        group.shutdown()
        loop.join(WAIT)
        group.server_close()


@pytest.mark.timeout(30)
def test_shutdown_before_serve_forever_is_remembered(no_leaks: Resources) -> None:
    members = [
        socketserver.TCPServer((HOST, 0), Hello),
        socketserver.MultiplexingTCPServer((HOST, 0), Echo),
    ]
    with socketserver.ServerGroup(members) as group:
        stopper = threading.Thread(target=group.shutdown)
        stopper.start()
        group.serve_forever()  # returns: the shutdown was already asked for
        stopper.join(WAIT)
        assert not stopper.is_alive()


@pytest.mark.timeout(30)
def test_shutdown_from_the_loops_thread_raises(no_leaks: Resources) -> None:
    raised: list[BaseException] = []

    class StopsTheGroup(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                group.shutdown()
            except RuntimeError as exc:
                raised.append(exc)
            self.request.sendall(b"ok")

    group = socketserver.ServerGroup([socketserver.TCPServer((HOST, 0), StopsTheGroup)])
    with serving(group):
        assert ask_hello(group.servers[0]) == b"ok"
    assert len(raised) == 1


@pytest.mark.timeout(30)
def test_a_member_cannot_be_served_by_two_loops(no_leaks: Resources) -> None:
    server = socketserver.TCPServer((HOST, 0), Hello)
    with serving(server):
        # A request answered: the server's own loop is running now.
        assert ask_hello(server) == b"hello from TCPServer"
        with pytest.raises(RuntimeError, match="already being served"):
            socketserver.ServerGroup([server]).serve_forever()


@pytest.mark.timeout(30)
def test_deadlines_and_periodic_work_of_members_drive_the_shared_loop(
    no_leaks: Resources,
) -> None:
    ticks = threading.Event()

    class Ticking(socketserver.TCPServer):
        def service_actions(self) -> None:
            ticks.set()

    class Impatient(Echo):
        timeout = 0.2

    group = socketserver.ServerGroup(
        [
            socketserver.MultiplexingTCPServer((HOST, 0), Impatient),
            Ticking((HOST, 0), Hello),
        ]
    )
    with serving(group, poll_interval=0.05):
        with connect(group.servers[0].server_address) as idle:
            # The idle timeout fires in the group's loop: a reactor timer.
            assert recv_until_eof(idle) == b""
        ticks.clear()
        # With nothing to serve, the loop still wakes for service_actions.
        assert ticks.wait(WAIT)


@pytest.mark.timeout(30)
def test_server_close_closes_every_member_even_if_one_fails(no_leaks: Resources) -> None:
    class Fails(socketserver.TCPServer):
        def server_close(self) -> None:
            super().server_close()
            raise OSError("close failed")

    servers: list[Any] = [Fails((HOST, 0), Hello), socketserver.TCPServer((HOST, 0), Hello)]
    group = socketserver.ServerGroup(servers)
    with pytest.raises(OSError, match="close failed"):
        group.server_close()
    assert servers[1].socket.fileno() == -1
