"""Measure the thundering herd on a shared listener: accept() calls that found nothing.

    python tests/prefork_herd.py [--workers 4] [--connections 500]

Runs a pre-forked (synchronous) TCPServer twice, with EPOLLEXCLUSIVE (the
default) and without it (``prefork._EXCLUSIVE = False``: the workers wait
with poll(), as every other loop of the package does), and makes the same
number of sequential connections to each, one request at a time, so every
other worker is idle when each one arrives.  Each worker reports every
accept() through a pipe: "A" when it returned a connection, "E" when it
returned EAGAIN (woken for a connection another worker took).  And since
a woken worker whose poll() finds the queue empty again goes back to sleep
without returning (the herd is then invisible to the program), the count
that shows the herd whatever the scheduling: the voluntary context
switches of the workers' loop threads (/proc/PID/status), that is how
many times a worker's loop went to sleep and was woken.  Prints, per run,
both per connection.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minisocketserver as mss
from minisocketserver import prefork


class Handler(mss.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        self.wfile.write(b"ok\n")


def serve(workers: int, exclusive: bool) -> None:
    """The master (run as its own process): serve until SIGTERM, then print the counts."""
    prefork._EXCLUSIVE = exclusive
    counts_r, counts_w = os.pipe()

    class App(prefork.PreforkMixIn, mss.TCPServer):
        worker_timeout = None

        def worker_started(self, pid: int) -> None:
            print(pid, flush=True)

        def get_request(self) -> tuple[Any, Any]:
            try:
                request = super().get_request()
            except BlockingIOError:
                os.write(counts_w, b"E")
                raise
            os.write(counts_w, b"A")
            return request

    App.workers = workers
    with App(("127.0.0.1", 0), Handler) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()
    os.close(counts_w)
    with os.fdopen(counts_r, "rb") as reader:
        counts = reader.read()
    print(counts.count(b"A"), counts.count(b"E"), flush=True)


def _wakeups(pid: int) -> int:
    """How many times the main thread of ``pid`` has slept and been woken."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise RuntimeError(f"no voluntary_ctxt_switches in /proc/{pid}/status")


def measure(workers: int, connections: int, exclusive: bool) -> tuple[int, int, int]:
    """Start a master, make ``connections`` sequential requests, stop it.

    Returns (connections accepted, accept() calls that got EAGAIN, wake-ups
    of the workers' loops during the requests).
    """
    command = [sys.executable, __file__, "--serve", "--workers", str(workers)]
    if not exclusive:
        command.append("--no-exclusive")
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as master:
        assert master.stdout is not None
        port = int(master.stdout.readline())
        pids = [int(master.stdout.readline()) for _ in range(workers)]
        try:
            # One request per worker first: every loop is up and idle.
            for _ in range(2 * workers):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(b"x\n")
                    assert sock.recv(10) == b"ok\n"
            before = sum(_wakeups(pid) for pid in pids)
            for _ in range(connections):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(b"x\n")
                    assert sock.recv(10) == b"ok\n"
            wakeups = sum(_wakeups(pid) for pid in pids) - before
        finally:
            master.send_signal(signal.SIGTERM)
        accepted, eagain = (int(n) for n in master.stdout.readline().split())
        with contextlib.suppress(subprocess.TimeoutExpired):
            master.wait(10)
    return accepted - 2 * workers, eagain, wakeups


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--no-exclusive", action="store_true")
    options = parser.parse_args()
    if options.serve:
        serve(options.workers, not options.no_exclusive)
        return
    for exclusive in (True, False):
        accepted, eagain, wakeups = measure(options.workers, options.connections, exclusive)
        label = "EPOLLEXCLUSIVE" if exclusive else "poll(), no flag"
        print(f"{label:16} {options.workers} workers, {accepted} connections: "
              f"accept() got EAGAIN {eagain / accepted:.2f}, "
              f"worker loops woken {wakeups / accepted:.2f} times per connection")


if __name__ == "__main__":
    main()
