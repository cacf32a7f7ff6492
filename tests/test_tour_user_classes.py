"""``tour --server/--handler``: the user's own classes, as a user runs them.

Each test writes a module of the user's to ``tmp_path`` and runs the real
command line in a fresh interpreter, with ``tmp_path`` on ``PYTHONPATH``
and the working tree as the current directory (so this tree's package is
the one imported).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

USER_MODULE = '''
import minisocketserver as socketserver


class Refusing(socketserver.ThreadingTCPServer):
    """Asks the library, then refuses all the same (the outermost answer counts)."""

    def verify_request(self, request, client_address):
        return super().verify_request(request, client_address) and False


class RefusingUDP(socketserver.UDPServer):
    def verify_request(self, request, client_address):
        return False


class Auditing:
    """A mixin of the user's: no subclass of the library's."""

    def audit(self, client_address):
        return True


class AuditingServer(Auditing, socketserver.ThreadingTCPServer):
    def verify_request(self, request, client_address):
        return self.audit(client_address)

    def never_called_on_the_server(self):
        pass


class Parsing(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(self.parse_line(line))
        self.close()

    def parse_line(self, line):
        return line.upper()

    def close(self):
        """Named like a multiplexed handler's hook, yet no hook here."""

    def never_called(self):
        pass

    @property
    def peer(self):
        return self.client_address

    @staticmethod
    def static_helper():
        pass


class Datagram(socketserver.DatagramRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.read())


not_a_class = 42
'''


def run(tmp_path: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    (tmp_path / "usermod.py").write_text(USER_MODULE, encoding="utf-8")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom\\nat import')\n",
                                        encoding="utf-8")
    env = {**os.environ, "PYTHONUTF8": "1", "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "minisocketserver", "tour", *args], cwd=ROOT,
        capture_output=True, text=True, timeout=timeout, env=env,
    )


# -- the user's own methods (issue 10, item 9a) --------------------------------------


@pytest.mark.timeout(30)
def test_the_users_own_methods_show_up_on_their_lifeline(tmp_path: Path) -> None:
    done = run(tmp_path, "--server", "usermod:AuditingServer", "--handler", "usermod:Parsing")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    # On the handler's lifeline, one level below the handle() that called it.
    handle = next(i for i, line in enumerate(lines) if "Parsing (1): Parsing.handle()" in line)
    parse = next(i for i, line in enumerate(lines)
                 if "Parsing (1): Parsing.parse_line(line)" in line)
    assert lines[parse].startswith("worker thread 1 ")
    assert lines[parse].index("Parsing (1)") == lines[handle].index("Parsing (1)") + 2
    assert "| Parsing.parse_line (your code)" in lines[parse + 1]
    # A method of the user's named like a hook is the user's, not the hook.
    close = next(i for i, line in enumerate(lines) if "Parsing.close()" in line)
    assert "| Parsing.close (your code)" in lines[close + 1]
    # The server's methods, its user mixin's among them, on the loop's lifeline.
    audit = next(line for line in lines if "Auditing.audit(client_address)" in line)
    assert audit.startswith("loop thread ")
    assert "AuditingServer: AuditingServer.verify_request(" in done.stdout
    # Called methods only; no property, static method or dunder.
    for absent in ("never_called", "peer", "static_helper", "__init__()"):
        assert absent not in done.stdout, absent
    assert "replies [b'HELLO', b'WORLD']" in done.stdout


# -- a refused request (issue 10, item 9b) ---------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server", ["usermod:Refusing", "usermod:RefusingUDP"])
def test_a_refused_request_is_shown_and_the_tour_ends(tmp_path: Path, server: str) -> None:
    # Bounded well below the 10 s a client would wait for an answer that
    # never comes: a refused client is not waited for.
    done = run(tmp_path, "--server", server, timeout=8)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    for number in (1, 2):
        assert f"the server refused client {number}: verify_request() returned False" in out
    assert "replies [b'', b'']" in out
    assert "finish_request ran on: nothing." in out
    assert "Refused by verify_request(): client 1, client 2." in out


# -- classes that cannot be toured (issue 10, item 9c) -------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("args", "message"), [
    (["--server", "usermod"], "expected module:Class"),
    (["--server", ":Refusing"], "expected module:Class"),
    (["--handler", "usermod:"], "expected module:Class"),
    (["--server", "no_such_module:Server"], "cannot import 'no_such_module'"),
    (["--server", "broken:Server"], "cannot import 'broken': RuntimeError: boom at import"),
    (["--server", "usermod:Missing"], "module 'usermod' has no attribute 'Missing'"),
    (["--server", "usermod:not_a_class"], "usermod:not_a_class is not a class but a int"),
    (["--server", "usermod:Parsing"], "Parsing is not a minisocketserver server class"),
    (["--handler", "usermod:Refusing"], "Refusing is not a minisocketserver request handler"),
    (["--server", "usermod:RefusingUDP", "--handler", "usermod:Parsing"],
     "RefusingUDP serves datagrams, but Parsing is a StreamRequestHandler"),
    (["--handler", "usermod:Datagram"],
     "ThreadingTCPServer serves connections, but Datagram is a DatagramRequestHandler"),
    (["multiplexing", "--handler", "usermod:Parsing"],
     "MultiplexingTCPServer calls its handlers back on the loop thread, but Parsing blocks"),
    (["--handler", "minisocketserver:LineRequestHandler"],
     "LineRequestHandler is a MultiplexedRequestHandler: it needs a multiplexing server"),
])
def test_classes_that_cannot_be_toured_get_one_line(
        tmp_path: Path, args: list[str], message: str) -> None:
    done = run(tmp_path, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert done.stderr.startswith("minisocketserver tour: error: ")
    assert message in done.stderr


@pytest.mark.timeout(30)
def test_a_server_alone_gets_a_handler_that_fits(tmp_path: Path) -> None:
    # --server without --handler: a datagram server gets the datagram echo,
    # not the model's stream handler (which would fail on every datagram).
    done = run(tmp_path, "--server", "minisocketserver:UDPServer")
    assert done.returncode == 0, done.stderr
    assert "UDPServer serving DatagramEchoHandler" in done.stdout
    assert "replies [b'hello\\xe5\\xa5\\xbd', b'world\\xe5\\xa5\\xbd']" in done.stdout
