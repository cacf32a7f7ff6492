"""The thundering herd, and what SO_REUSEPORT trades for curing it (chapter 12).

Linux only (epoll, /proc), loopback only, bounded: a few forked processes, a few dozen
connections, a few seconds at most.  Raw sockets and ``select.epoll``, no library code,
so what you see is the kernel's behaviour and nothing of ours.

Three set-ups, each with ``--workers`` forked processes that wait in ``epoll_wait``:

* ``shared``: one listening socket, made before ``fork()`` and so shared by every
  process, each registering it in an epoll instance of its own (the pre-fork model of
  gunicorn, nginx without ``reuseport``, and ours by default);
* ``exclusive``: the same, registered with ``EPOLLEXCLUSIVE`` (Linux 4.5);
* ``reuseport``: one listening socket *per process*, all bound to the same port with
  ``SO_REUSEPORT`` (Linux 3.9); the kernel picks the socket by a hash of the connection.

For each, the parent makes ``--connections`` connections one at a time and reports how
many processes the kernel woke per connection (read as voluntary context switches from
``/proc/PID/status``: a process asleep in ``epoll_wait`` switches once each time it is
woken and goes back to sleep) and how many of those wake-ups found nothing to accept.

Then the trade: connections that completed their handshake but were not yet accepted,
queued on one of two SO_REUSEPORT listeners, when that listener closes (a worker
leaving).  The kernel resets them; the same close of one process's descriptor of a
*shared* listener loses nothing.

Run: ``python docs/examples/herd.py`` (``--json`` prints the figures for a program,
which is how tests/test_herd_example.py checks what chapter 12 says about them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import sys
import time
from dataclasses import asdict, dataclass

HOST = "127.0.0.1"
#: How long a process may take to go back to sleep once woken.  The parent waits this
#: long after each connection so that every process is asleep in epoll_wait when the
#: next one arrives: a process still running needs no wake-up, and the herd would look
#: smaller than it is.  There is no event that says "nobody else will wake": the pause
#: is the measurement's, and bounded (connections x settle).
SETTLE = 0.02
#: Upper bound of any single wait (a reply, a child's report).
WAIT = 5.0


@dataclass
class Run:
    """What one set-up did: per-process accepts, wake-ups and empty wake-ups."""

    setup: str
    connections: int
    accepted: list[int]
    woken: list[int]
    empty: list[int]

    @property
    def woken_per_connection(self) -> float:
        return sum(self.woken) / self.connections

    @property
    def empty_per_connection(self) -> float:
        return sum(self.empty) / self.connections


def voluntary_switches(pid: int) -> int:
    """The kernel's count of the times ``pid`` went to sleep (and so was woken)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no voluntary_ctxt_switches")


def worker(index: int, listener: socket.socket, exclusive: bool, report: int, stop: int) -> None:
    """A forked process: wait in epoll for the listener, accept, answer with its index.

    Writes one byte per epoll_wait that returned with nothing to accept ("e") and per
    accept ("a"); the parent counts them.  Leaves when ``stop`` (a pipe) is readable.
    """
    events = select.EPOLLIN | (select.EPOLLEXCLUSIVE if exclusive else 0)
    with select.epoll() as poller:
        poller.register(listener.fileno(), events)
        poller.register(stop, select.EPOLLIN)
        os.write(report, b"r")  # ready: from here on it sleeps in poll() below
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if stop in ready:
                return
            try:
                connection, _ = listener.accept()
            except BlockingIOError:
                os.write(report, b"e")  # woken for a connection another process took
                continue
            with connection:
                connection.sendall(str(index).encode())
            os.write(report, b"a")


def run(setup: str, workers: int, connections: int) -> Run:
    """Fork ``workers`` processes on the ``setup``'s listener(s), connect, count."""
    if setup == "reuseport":
        listeners = [reuseport_listener(0)]
        port = listeners[0].getsockname()[1]
        listeners += [reuseport_listener(port) for _ in range(workers - 1)]
    else:
        shared = socket.create_server((HOST, 0), backlog=64)
        listeners = [shared] * workers
        port = shared.getsockname()[1]
    for listener in listeners:
        listener.setblocking(False)
    stop_read, stop_write = os.pipe()
    reports: list[int] = []
    pids: list[int] = []
    try:
        for index in range(workers):
            report_read, report_write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: serve, then leave without running the parent's code
                status = 1
                try:
                    # Its copy of the stop pipe's write end would keep the pipe open,
                    # and no child would ever see the EOF that tells it to leave.
                    os.close(stop_write)
                    os.close(report_read)
                    worker(index, listeners[index], setup == "exclusive", report_write, stop_read)
                    status = 0
                finally:
                    os._exit(status)
            os.close(report_write)
            reports.append(report_read)
            pids.append(pid)
        counts = [{"a": 0, "e": 0} for _ in range(workers)]
        for index, fd in enumerate(reports):
            read_report(fd, counts[index], until=b"r")
        time.sleep(SETTLE)  # every child now sleeps in epoll_wait
        before = [voluntary_switches(pid) for pid in pids]
        for _ in range(connections):
            with socket.create_connection((HOST, port), timeout=WAIT) as client:
                client.recv(16)  # the accepting child's index: it has taken the connection
            time.sleep(SETTLE)
        after = [voluntary_switches(pid) for pid in pids]
        for index, fd in enumerate(reports):
            drain_reports(fd, counts[index])
        return Run(
            setup,
            connections,
            accepted=[c["a"] for c in counts],
            woken=[b - a for a, b in zip(before, after, strict=True)],
            empty=[c["e"] for c in counts],
        )
    finally:
        os.close(stop_write)  # every child sees EOF on the stop pipe and leaves
        for pid in pids:
            os.waitpid(pid, 0)
        for fd in (stop_read, *reports):
            os.close(fd)
        for listener in set(listeners):
            listener.close()


def reuseport_listener(port: int) -> socket.socket:
    """A listener on ``port`` (0: any) that others with SO_REUSEPORT may bind too."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((HOST, port))
    listener.listen(64)
    return listener


def read_report(fd: int, counts: dict[str, int], until: bytes) -> None:
    """Read one child's report bytes until ``until`` arrives (bounded by WAIT)."""
    deadline = time.monotonic() + WAIT
    while True:
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            raise TimeoutError("a worker did not report in time")
        data = os.read(fd, 1)
        if data == until:
            return
        counts[data.decode()] += 1


def drain_reports(fd: int, counts: dict[str, int]) -> None:
    """Count what a child has reported so far, without waiting."""
    while select.select([fd], [], [], 0)[0]:
        for byte in os.read(fd, 4096).decode():
            counts[byte] += 1


@dataclass
class Reset:
    """Connections queued on a listener that closed: how many were reset, how many served."""

    setup: str
    queued: int
    reset: int
    served: int


def close_with_queue(setup: str, queued: int) -> Reset:
    """Queue ``queued`` connections on two listeners, close one, see what the clients get.

    ``reuseport``: two sockets on one port; the kernel hashes each connection to one of
    them, and closing a socket resets what waits in its own queue.  ``shared``: two
    descriptors of one socket (what two forked workers hold); closing one descriptor
    closes no socket, and the other accepts every connection.
    """
    if setup == "reuseport":
        staying = reuseport_listener(0)
        leaving = reuseport_listener(staying.getsockname()[1])
    else:
        staying = socket.create_server((HOST, 0), backlog=64)
        leaving = staying.dup()
    clients = [
        socket.create_connection(staying.getsockname(), timeout=WAIT) for _ in range(queued)
    ]
    try:
        leaving.close()  # a worker leaves with connections still in its queue
        staying.settimeout(0.2)  # only for the reuseport case's empty queue at the end
        served = 0
        with contextlib.suppress(TimeoutError):
            while served < queued:
                connection, _ = staying.accept()
                with connection:
                    connection.sendall(b"ok")
                served += 1
        reset = 0
        for client in clients:
            try:
                client.recv(2)
            except ConnectionResetError:
                reset += 1
        return Reset(setup, queued, reset, served)
    finally:
        for client in clients:
            client.close()
        staying.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    runs = [run(s, args.workers, args.connections) for s in ("shared", "exclusive", "reuseport")]
    resets = [close_with_queue(s, 20) for s in ("shared", "reuseport")]
    if args.json:
        print(json.dumps({
            "runs": [
                asdict(r) | {"woken_per_connection": r.woken_per_connection}
                for r in runs
            ],
            "resets": [asdict(r) for r in resets],
        }))
        return 0
    print(f"{args.workers} processes in epoll_wait, {args.connections} connections, one at a time")
    print(f"{'listener':<10} {'woken/conn':>10} {'empty/conn':>10}  accepted per process")
    for r in runs:
        print(
            f"{r.setup:<10} {r.woken_per_connection:>10.2f} {r.empty_per_connection:>10.2f}"
            f"  {r.accepted}"
        )
    print("one of two listeners closes with 20 connections queued between them")
    for x in resets:
        print(f"{x.setup:<10} reset {x.reset:>2}, served {x.served:>2}")
    return 0


if __name__ == "__main__":
    if not sys.platform.startswith("linux"):
        sys.exit("herd.py needs Linux: epoll, EPOLLEXCLUSIVE, /proc")
    sys.exit(main())
