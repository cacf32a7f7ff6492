"""Chapter 7, forking: solutions.  Checked by docs/exercises/test_chapter7.py."""

from __future__ import annotations

import os
import socket

import minisocketserver as socketserver


def client_sees_eof(parent_closes: bool) -> bool:
    """Exercise 1, answered by code (POSIX).  Accept a connection, fork(); the child
    sends b"bye" and exits, closing its copy with close() only (no shutdown()).  The
    parent closes its copy of the connection at once if ``parent_closes``, else keeps
    it.  Does the client read EOF (after b"bye") within 0.3 s?  Reap the child, close
    everything.  (See the descriptor table in chapter 7's exercises.)
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        conn, _ = listener.accept()
        pid = os.fork()
        if pid == 0:  # the child: never return into the caller's code
            try:
                conn.sendall(b"bye")
            finally:
                os._exit(0)
        try:
            if parent_closes:
                conn.close()
            os.waitpid(pid, 0)  # the child has closed its copy by now
            client.settimeout(0.3)
            received = b""
            try:
                while data := client.recv(64):
                    received += data
                return received == b"bye"
            except TimeoutError:
                return False  # no FIN: a copy of the connection is still open
        finally:
            conn.close()
            client.close()


def exit_codes(n: int) -> list[int]:
    """Exercise 2 (POSIX).  Fork ``n`` children; child i exits at once with status i.
    Reap every one (no zombie left) and return their exit codes, sorted.
    """
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(i)
        pids.append(pid)
    codes = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    return sorted(codes)


class PidHandler(socketserver.BaseRequestHandler):
    """Exercise 3.  Served by a ForkingTCPServer: send the client the id of the
    process that runs this handler, in ASCII, and nothing else.
    """

    def handle(self) -> None:
        self.request.sendall(str(os.getpid()).encode())
