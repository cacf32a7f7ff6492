"""Checks for chapter 3's exercises (docs/03-baseserver.md, "Exercises")."""

from __future__ import annotations

import socket
from types import ModuleType

from exercise_support import WAIT, read_to_eof, serving

import minisocketserver as socketserver


class Ok(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"ok")


def test_chapter3_limited_server_refuses_after_max_requests(answers: ModuleType) -> None:
    with serving(answers.LimitedServer(("127.0.0.1", 0), Ok)) as server:
        replies = []
        for _ in range(server.max_requests + 2):
            with socket.create_connection(server.server_address, timeout=WAIT) as client:
                replies.append(read_to_eof(client))
    assert replies == [b"ok"] * server.max_requests + [b"", b""]


def test_chapter3_hooks_of_one_request_in_call_order(answers: ModuleType) -> None:
    assert answers.hooks_of_one_request() == [
        "get_request",
        "verify_request",
        "process_request",
        "finish_request",
        "shutdown_request",
        "close_request",
    ]


def test_chapter3_patient_server_times_out_without_a_client(answers: ModuleType) -> None:
    with answers.PatientServer(("127.0.0.1", 0), Ok) as server:
        server.timeout = 0.05
        server.handle_request()  # nobody connects
        assert server.timed_out
