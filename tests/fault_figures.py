"""Print the fault suite's figures table (docs/reliability.md) from one run.

    python tests/fault_figures.py

Runs each scenario of tests/fault_scenarios.py against every stream model
(the same functions the tests run, with the same assertions), counts what
each one left behind, then measures the CPU a server burns while it is out
of descriptors (tests/exhausted_server.py, ours and stdlib), and prints a
markdown table.  Takes about a minute; loopback only.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import fault_scenarios as scenarios
from fault_clients import ClientHost
from fault_models import MODELS, Model
from support import WAIT, Resources, child_pids, connect, open_fds, recv_exactly

HERE = Path(__file__).resolve().parent

STREAM_SCENARIOS: list[tuple[str, Callable[[Model, ClientHost], scenarios.Tally]]] = [
    ("resets (RST) before/during/after a request", scenarios.resets),
    ("half-close after the request", scenarios.half_close),
    ("slowloris: silent and 1-byte clients, timeout 0.5 s (sync 0.6 s)", scenarios.slowloris),
    ("never reads an 8 MB reply, timeout 0.5 s", scenarios.never_reads),
    ("200 pipelined requests for 64 KiB, read at the end", scenarios.backpressure),
    ("handler raises an Exception", scenarios.handler_raises),
    ("shutdown() + drain() with requests in flight", scenarios.drain_in_flight),
]


def leaks(baseline: Resources) -> tuple[int, int, int]:
    """Descriptors, threads and children left since ``baseline`` (threads joined first)."""
    for thread in set(threading.enumerate()) - baseline.threads:
        thread.join(WAIT)
    return (
        len(open_fds() - baseline.fds),
        len(set(threading.enumerate()) - baseline.threads),
        len(child_pids() - baseline.children),
    )


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_wanted(pid: int) -> float:
    """Seconds the main thread of ``pid`` ran or waited to run (/proc/PID/schedstat).

    On a loaded machine a spinning loop gets only its share of a core, so
    CPU time alone understates it; time on the CPU plus time queued for it
    is what the loop asked for.
    """
    with open(f"/proc/{pid}/schedstat") as f:
        run_ns, wait_ns, _ = f.read().split()
    return (int(run_ns) + int(wait_ns)) / 1e9


def out_of_descriptors(impl: str, nofile: int = 64) -> tuple[int, int, float, float]:
    """Flood a server whose descriptor limit is ``nofile`` with twice that many clients.

    Returns (clients, answered after descriptors free up, CPU seconds the
    server used and CPU seconds its loop wanted during one second out of
    descriptors).
    """
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "exhausted_server.py"), impl, str(nofile)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        for _ in range(2 * nofile):
            held.append(connect(("127.0.0.1", port)))
        # Out of descriptors: its table is full (bounded wait on /proc).
        deadline = time.monotonic() + WAIT
        while len(os.listdir(f"/proc/{proc.pid}/fd")) < nofile - 1:
            assert time.monotonic() < deadline, "the server never ran out of descriptors"
            time.sleep(0.01)
        before, wanted_before = cpu_seconds(proc.pid), cpu_wanted(proc.pid)
        time.sleep(1.0)  # the measured interval
        used = cpu_seconds(proc.pid) - before
        wanted = cpu_wanted(proc.pid) - wanted_before
        for sock in held:
            sock.sendall(b"bye\n")
        answered = sum(sock.recv(16) == b"bye\n" for sock in held)
        with connect(("127.0.0.1", port)) as late:
            late.sendall(b"late\n")
            answered += recv_exactly(late, 5) == b"late\n"
        return len(held) + 1, answered, used, wanted
    finally:
        for sock in held:
            sock.close()
        proc.kill()
        proc.wait(WAIT)
        proc.stdout.close()  # type: ignore[union-attr]


def main() -> None:
    rows = []
    host = ClientHost()
    try:
        for title, scenario in STREAM_SCENARIOS:
            for model in MODELS:
                baseline = Resources.snapshot()
                tally = scenario(model, host)
                host.close_all()
                rows.append((title, model.name, tally, leaks(baseline)))
                print(f"{title} / {model.name}: done", file=sys.stderr)
    finally:
        host.stop()
    for model_name in scenarios.UDP_MODELS:
        baseline = Resources.snapshot()
        tally = scenarios.udp_flood(model_name)
        rows.append((f"UDP flood ({tally.reports[0]})", model_name, tally, leaks(baseline)))

    print(f"Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| scenario | model | clients | faults injected | requests answered | "
          "requests lost | fds / threads / children leaked |")
    print("|---|---|---:|---:|---:|---:|---|")
    for title, model_name, tally, (fds, threads, children) in rows:
        print(f"| {title} | {model_name} | {tally.clients} | {tally.faults} | "
              f"{tally.answered} of {tally.expected} | {tally.lost} | "
              f"{fds} / {threads} / {children} |")
    print()
    print("| slow clients, per model | closed after their last byte (min - max) |")
    print("|---|---|")
    for _, model_name, tally, _ in rows:
        if tally.closed_after:
            print(f"| {model_name} | {min(tally.closed_after):.3f} - "
                  f"{max(tally.closed_after):.3f} s |")
    print()
    for *_, tally, _ in rows:
        if tally.peak_pending:
            print(f"Multiplexing, pipelined requests: at most {tally.peak_pending:,} bytes "
                  "queued on the connection (write_high_water: 65,536).\n")
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"Out of descriptors (load average {load} on {os.cpu_count()} cores):\n")
    print("| RLIMIT_NOFILE 64, 128 clients | clients | answered once descriptors free up "
          "| CPU used in 1 s out of descriptors | CPU wanted (run + run-queue wait) |")
    print("|---|---:|---:|---:|---:|")
    for impl in ("minisocketserver", "socketserver"):
        clients, answered, used, wanted = out_of_descriptors(impl)
        print(f"| {impl} ThreadingTCPServer | {clients} | {answered} | {used:.2f} s "
              f"| {wanted:.2f} s |")


if __name__ == "__main__":
    main()
