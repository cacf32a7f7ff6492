"""Checks for chapter 7's exercises (docs/07-forking.md, "Exercises").  POSIX only."""

from __future__ import annotations

import os
import socket
from types import ModuleType

import pytest
from exercise_support import WAIT, read_to_eof, serving

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX's")


def test_chapter7_the_client_sees_eof_only_once_the_parent_closes_its_copy(
    answers: ModuleType,
) -> None:
    assert answers.client_sees_eof(parent_closes=True) is True
    assert answers.client_sees_eof(parent_closes=False) is False


def test_chapter7_exit_codes_of_reaped_children(answers: ModuleType) -> None:
    assert answers.exit_codes(5) == [0, 1, 2, 3, 4]
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # every child was reaped: none is left


def test_chapter7_the_handler_runs_in_another_process(answers: ModuleType) -> None:
    import minisocketserver as socketserver

    server = socketserver.ForkingTCPServer(("127.0.0.1", 0), answers.PidHandler)
    with serving(server), socket.create_connection(server.server_address, timeout=WAIT) as client:
        pid = int(read_to_eof(client))
    assert pid != os.getpid()
