"""The figures of issue 13, item 1, measured on the running machine.

    python tests/prefork_figures.py

Prints: how long a SIGSTOPped worker takes to be killed and replaced
(worker_timeout 1 s, 5 trials); the requests and failures of one client
asking sequentially while the master gets 5 SIGHUPs (each rolling restart
waited for), then one SIGUSR2.  Uses test_prefork's harness (a master
process, its events and log lines).
"""

from __future__ import annotations

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_prefork import Load, master


def stopped_worker_replaced() -> list[float]:
    times = []
    with master("--workers", "2", "--timeout", "1") as m:
        m.started(2)
        for _ in range(5):
            victim = sorted(m.live)[0]
            stopped_at = time.monotonic()
            os.kill(victim, signal.SIGSTOP)
            m.exited(victim)
            m.started(1)
            times.append(time.monotonic() - stopped_at)
        m.signal(signal.SIGTERM)
        m.wait()
    return times


def restarts_under_load() -> tuple[int, list[str]]:
    with master("--workers", "2") as m:
        m.started(2)
        load = Load(m.port, limit=100_000)
        load.wait_for(50)
        for _ in range(5):
            m.signal(signal.SIGHUP)
            m.logged("rolling restart done")
            load.wait_for(len(load.served) + 50)
        m.signal(signal.SIGUSR2)
        new = m.event("listening")
        m.wait()
        load.wait_for(len(load.served) + 50)
        load.stop()
        os.kill(new["master"], signal.SIGTERM)
        m.event("stopped")
        m.event("stopped")
    return len(load.served), load.failures


def main() -> None:
    times = stopped_worker_replaced()
    print("SIGSTOPped worker killed and replaced after (worker_timeout 1 s): "
          + ", ".join(f"{t:.2f} s" for t in times))
    served, failures = restarts_under_load()
    print(f"5 SIGHUPs then 1 SIGUSR2 under a sequential client: {served} requests served, "
          f"{len(failures)} failed {failures[:3]}")


if __name__ == "__main__":
    main()
