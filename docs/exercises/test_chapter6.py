"""Checks for chapter 6's exercises (docs/06-threading.md, "Exercises")."""

from __future__ import annotations

import socket
import threading
from types import ModuleType

from exercise_support import WAIT, read_line, read_to_eof, serving

import minisocketserver as socketserver


def test_chapter6_bounded_server_refuses_past_max_active(answers: ModuleType) -> None:
    release = threading.Event()

    class Held(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"in\n")
            release.wait(WAIT)

    with serving(answers.BoundedThreadingServer(("127.0.0.1", 0), Held)) as server:
        limit = server.max_active
        held = [socket.create_connection(server.server_address, timeout=WAIT) for _ in range(limit)]
        try:
            for client in held:
                assert read_line(client, bytearray()) == b"in"  # its handler is running
            with socket.create_connection(server.server_address, timeout=WAIT) as extra:
                assert read_to_eof(extra) == b"", "a client past max_active was served"
        finally:
            release.set()
            for client in held:
                assert read_to_eof(client) == b""  # the request finished
                client.close()
        # The finished requests gave their places back.
        with socket.create_connection(server.server_address, timeout=WAIT) as again:
            assert read_line(again, bytearray()) == b"in"


def test_chapter6_live_counter_counts_the_handlers_alive(answers: ModuleType) -> None:
    counter = answers.LiveCounter
    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), counter)) as server:
        clients: list[socket.socket] = []
        buffers: list[bytearray] = []
        try:
            for n in range(1, 4):  # one more client each time, and it asks at once
                clients.append(socket.create_connection(server.server_address, timeout=WAIT))
                buffers.append(bytearray())
                clients[-1].sendall(b"how many?\n")
                assert read_line(clients[-1], buffers[-1]) == b"%d" % n
            clients[0].sendall(b"and now?\n")
            assert read_line(clients[0], buffers[0]) == b"3"
        finally:
            for client in clients:
                client.close()
    # server_close() joined the handler threads: every finish() has run.
    assert counter.live == 0


def test_chapter6_finish_request_runs_off_the_loops_thread(answers: ModuleType) -> None:
    loop_thread, worker = answers.where_finish_request_runs()
    assert loop_thread != worker
    assert worker != threading.main_thread().name
