"""``python -m minisocketserver echo --fd N`` and ``echo --systemd`` (issue 12, item 3).

The command runs as a real process, started the two ways it is meant to be:
under ``systemd-socket-activate`` (the systemd package's tool: it binds,
listens, and starts the server on the first client) and by a small Python
launcher that hands it a socket this test bound, at descriptor 3.  The test
binds the ``NOTIFY_SOCKET`` itself, playing the manager that waits for
``READY=1`` and ``STOPPING=1``, and stops each server with SIGTERM, by pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import WAIT, Resources, connect, recv_exactly
from test_activation import HAS_IPV6, LineReader, _need_activate, _stopped_at_exit, _unused_port

from minisocketserver.seed import SUFFIX

COMMAND = [sys.executable, "-m", "minisocketserver", "echo"]
PROG = "python -m minisocketserver echo"

# Moves the descriptor it is given to 3 and becomes the echo command, as a
# supervisor does between fork() and exec(): exec keeps the descriptor.
LAUNCHER = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)  # the copy at 3 is inheritable
    os.close(fd)
os.execv(sys.executable, [sys.executable, "-m", "minisocketserver", "echo", *sys.argv[2:]])
"""


def _clean_environ(**extra: str) -> dict[str, str]:
    """Our environment minus the protocols' variables (whatever runs the suite), plus ``extra``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    environ.update(extra)
    return environ


def _manager(tmp_path: Path) -> socket.socket:
    """The test's end of NOTIFY_SOCKET: where READY=1 and STOPPING=1 arrive."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(WAIT)
    return sock


def _echo_stream(family: int, address: Any) -> bytes:
    with connect(address, family) as client:
        client.sendall(b"ni hao ")
        return recv_exactly(client, len(b"ni hao " + SUFFIX))


def _echo_datagram(family: int, address: Any, tmp_path: Path) -> bytes:
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        if family == socket.AF_UNIX:
            client.bind(str(tmp_path / "client"))  # an address for the reply
        client.sendto(b"ni hao ", address)
        return client.recv(65536)


def _terminated(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGTERM to our child; its exit status and what it wrote on stderr."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=WAIT)
    return proc.returncode, err.decode()


# -- --systemd under the real activator ---------------------------------------


@pytest.mark.parametrize("model", ["sync", "threading", "forking"])
def test_systemd_serves_every_passed_listener_and_reports_ready_and_stopping(
    model: str, tmp_path: Path, no_leaks: Resources
) -> None:
    activate = _need_activate()
    families: list[int] = [socket.AF_INET, *([socket.AF_INET6] if HAS_IPV6 else [])]
    port = _unused_port(families)
    unix_path = str(tmp_path / "echo.sock")
    listeners: list[tuple[int, Any, str, str]] = [
        (socket.AF_INET, ("127.0.0.1", port), f"127.0.0.1:{port}", "a")
    ]
    if HAS_IPV6:
        listeners.append((socket.AF_INET6, ("::1", port), f"[::1]:{port}", "b"))
    listeners.append((socket.AF_UNIX, unix_path, unix_path, "c"))
    args = [activate]
    for _, _, spec, _ in listeners:
        args += ["-l", spec]
    args += ["--fdname=" + ":".join(name for *_, name in listeners)]
    # The activator gives its child only LISTEN_* and what -E names.
    args += ["-E", f"NOTIFY_SOCKET={tmp_path / 'notify'}"]
    with _manager(tmp_path) as manager:
        proc = subprocess.Popen(
            [*args, *COMMAND, "--systemd", "--model", model], env=_clean_environ(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        with _stopped_at_exit(proc):
            deadline = time.monotonic() + WAIT
            stderr, stdout = LineReader(proc.stderr), LineReader(proc.stdout)
            for _ in listeners:
                assert stderr.line(deadline).startswith("Listening on "), stderr.seen
            # The first client starts the server; it waits in the backlog meanwhile.
            replies = [_echo_stream(family, address) for family, address, _, _ in listeners]
            lines = [stdout.line(deadline) for _ in listeners]
            ready = manager.recv(4096)
            status, err = _terminated(proc)
        stopping = manager.recv(4096)
    assert replies == ["ni hao 好".encode()] * len(listeners)
    assert lines == [
        f"serving echo on {spec} (inherited fd {3 + index}, name {name})"
        for index, (_, _, spec, name) in enumerate(listeners)
    ]
    assert (ready, stopping) == (b"READY=1", b"STOPPING=1")
    assert status == 0, err
    assert "Traceback" not in err


# -- --fd N, from a launcher -------------------------------------------------

KINDS = {
    "tcp": (socket.AF_INET, socket.SOCK_STREAM),
    "udp": (socket.AF_INET, socket.SOCK_DGRAM),
    "unix": (socket.AF_UNIX, socket.SOCK_STREAM),
    "unix-datagram": (socket.AF_UNIX, socket.SOCK_DGRAM),
}


def _bound(kind: str, tmp_path: Path, listen: bool = True) -> socket.socket:
    family, type_ = KINDS[kind]
    sock = socket.socket(family, type_)
    sock.bind(str(tmp_path / "echo.sock") if family == socket.AF_UNIX else ("127.0.0.1", 0))
    if type_ == socket.SOCK_STREAM and listen:
        sock.listen()
    return sock


def _launch(sock: socket.socket, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """The echo command with ``sock`` at descriptor 3 (and ``args`` after ``echo``)."""
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(sock.fileno()), *args],
        pass_fds=[sock.fileno()], env=_clean_environ(**env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize(
    ("kind", "model"),
    [("tcp", "threading"), ("tcp", "sync"), ("tcp", "forking"), ("udp", "threading"),
     ("udp", "forking"), ("unix", "threading"), ("unix-datagram", "sync")],
)
def test_fd_serves_the_inherited_socket_with_the_class_its_kind_needs(
    kind: str, model: str, tmp_path: Path, no_leaks: Resources
) -> None:
    family, type_ = KINDS[kind]
    with _bound(kind, tmp_path) as sock, _manager(tmp_path) as manager:
        address = sock.getsockname()
        proc = _launch(sock, "--fd", "3", "--model", model,
                       NOTIFY_SOCKET=str(tmp_path / "notify"))
        with _stopped_at_exit(proc):
            line = LineReader(proc.stdout).line(time.monotonic() + WAIT)
            ready = manager.recv(4096)
            if type_ == socket.SOCK_STREAM:
                reply = _echo_stream(family, address)
            else:
                reply = _echo_datagram(family, address, tmp_path)
            status, err = _terminated(proc)
        stopping = manager.recv(4096)
    shown = address if family == socket.AF_UNIX else "{}:{}".format(*address)
    if type_ == socket.SOCK_DGRAM:
        shown = ("datagram " if family == socket.AF_UNIX else "udp ") + shown
    assert line == f"serving echo on {shown} (inherited fd 3)"
    assert reply == "ni hao 好".encode()
    assert (ready, stopping) == (b"READY=1", b"STOPPING=1")
    assert status == 0, err
    assert "Traceback" not in err


# -- errors: one line on stderr, exit status 2, nothing served ---------------


def _fails(args: list[str], pass_fds: tuple[int, ...] = (), **env: str) -> str:
    """Run the echo command, which must fail at once; its one line of stderr."""
    proc = subprocess.run(
        [*COMMAND, *args], pass_fds=pass_fds, env=_clean_environ(**env),
        stdin=subprocess.PIPE, capture_output=True, timeout=WAIT,
    )
    err = proc.stderr.decode()
    assert (proc.returncode, proc.stdout, err.count("\n")) == (2, b"", 1), err
    return err.strip()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fd", "3", "--port", "8001"], "--fd serves inherited sockets; it takes no --port"),
        (["--systemd", "--host", "::1", "--port", "0"],
         "--systemd serves inherited sockets; it takes no --host or --port"),
    ],
)
def test_inherited_sockets_take_no_host_or_port(args: list[str], message: str) -> None:
    assert _fails(args) == f"{PROG}: error: {message}"


def test_fd_and_systemd_exclude_each_other() -> None:
    proc = subprocess.run([*COMMAND, "--fd", "3", "--systemd"], env=_clean_environ(),
                          capture_output=True, timeout=WAIT)
    assert proc.returncode == 2
    assert "argument --systemd: not allowed with argument --fd" in proc.stderr.decode()


def test_systemd_without_the_variables_says_so() -> None:
    message = _fails(["--systemd"])
    assert message == f"{PROG}: --systemd: no sockets passed (LISTEN_FDS unset)"


def test_systemd_with_another_process_s_variables_says_whose() -> None:
    # LISTEN_PID names this test's process, never the child's.
    message = _fails(["--systemd"], LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
    assert message.startswith(f"{PROG}: --systemd: no sockets passed (LISTEN_PID={os.getpid()}, ")


def test_fd_not_open(no_leaks: Resources) -> None:
    # A number above every descriptor the child can inherit from us.
    fd = max(no_leaks.fds) + 100
    assert _fails(["--fd", str(fd)]) == f"{PROG}: --fd {fd}: descriptor {fd} is not open"


def test_fd_not_a_socket() -> None:
    # stdin is the pipe subprocess.run() made.
    assert _fails(["--fd", "0"]) == f"{PROG}: --fd 0: descriptor 0 is not a socket"


def test_fd_a_stream_socket_that_does_not_listen(tmp_path: Path, no_leaks: Resources) -> None:
    with _bound("tcp", tmp_path, listen=False) as sock:
        fd = sock.fileno()
        message = _fails(["--fd", str(fd)], pass_fds=(fd,))
    assert message == f"{PROG}: --fd {fd}: the socket is not listening (call listen() first)"


def test_systemd_a_socket_of_the_wrong_kind_names_it(tmp_path: Path, no_leaks: Resources) -> None:
    """One bad socket among the passed ones: nothing is served, and the message says which."""
    with _bound("tcp", tmp_path) as good, _bound("unix", tmp_path, listen=False) as bad:
        fds = (good.fileno(), bad.fileno())
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).parent / "activation_launcher.py"),
             ",".join(map(str, fds)), *COMMAND, "--systemd"],
            pass_fds=fds, env=_clean_environ(LISTEN_FDNAMES="web:admin"),
            capture_output=True, timeout=WAIT,
        )
    assert (proc.returncode, proc.stdout) == (2, b""), proc.stderr
    assert proc.stderr.decode() == (
        f"{PROG}: --systemd: fd 4 (name admin): "
        "the socket is not listening (call listen() first)\n"
    )
