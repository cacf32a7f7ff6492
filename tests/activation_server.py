"""A server that binds nothing: it serves the sockets its parent passed it.

Run by tests/test_activation.py under ``systemd-socket-activate`` and under
the test's own supervisor.  It takes its listeners with
``listen_fds_with_names()``, adopts each with ``from_socket()`` (a stream
socket: ``ThreadingTCPServer`` or ``ThreadingUnixStreamServer``), prints one
JSON line saying what it found and checked, then answers each connection's
line with ``"<name> <pid>\\n"`` until SIGTERM, when it finishes the requests
in flight and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import minisocketserver as socketserver


class WhoAmI(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        name = self.server.fd_name  # type: ignore[attr-defined]
        self.wfile.write(f"{name} {os.getpid()}\n".encode())


def open_sockets() -> set[str]:
    """The sockets this process holds, as 'socket:[inode]' (the kernel's identity)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listdir() descriptor itself, closed by now
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def main() -> None:
    # SIGTERM is taken with sigwait() below, by the main thread, once the
    # serving thread runs: block it first so that every thread inherits
    # the mask and none gets the default (fatal) action.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    before = open_sockets()
    pairs = socketserver.listen_fds_with_names()
    servers = []
    for name, sock in pairs:
        cls = (
            socketserver.ThreadingUnixStreamServer
            if sock.family == socket.AF_UNIX
            else socketserver.ThreadingTCPServer
        )
        server = cls.from_socket(sock, WhoAmI)
        server.fd_name = name  # type: ignore[attr-defined]
        servers.append(server)
    child = subprocess.run(["env"], capture_output=True, text=True, check=True, timeout=10)
    report = {
        "pid": os.getpid(),
        "names": [name for name, _ in pairs],
        "fds": [server.socket.fileno() for server in servers],
        "families": [server.socket.family.name for server in servers],
        "addresses": [server.server_address for server in servers],
        "inheritable": [os.get_inheritable(server.socket.fileno()) for server in servers],
        "new_sockets": sorted(open_sockets() - before),
        "listen_vars_here": sorted(k for k in os.environ if k.startswith("LISTEN_")),
        "listen_vars_in_child": sorted(
            line.split("=", 1)[0] for line in child.stdout.splitlines()
            if line.startswith("LISTEN_")
        ),
    }
    print(json.dumps(report), flush=True)
    group = socketserver.ServerGroup(servers)
    loop = threading.Thread(target=group.serve_forever, name="serve_forever")
    loop.start()
    socketserver.notify("READY=1")
    signal.sigwait({signal.SIGTERM})
    socketserver.notify("STOPPING=1")
    group.shutdown()
    loop.join()
    group.server_close()  # waits for the requests in flight (block_on_close)


if __name__ == "__main__":
    sys.exit(main())
