"""A fault-suite server in a process of its own, for the signal tests.

    python tests/fault_server.py IMPL MODEL [--signals]

IMPL is ``ours`` or ``stdlib`` (the oracle); MODEL a name from
fault_models.MODELS (stdlib: sync, threading, forking).  The server runs
``serve_forever()`` on the main thread, inside ``with server:``, as a
program would; it prints its port, ``closing`` when ``server_close()``
starts, and once the ``with`` block is left by any means, whether the
listening socket was closed.

``--signals``: a SIGUSR1 handler counts signals, and commands on stdin
drive them: ``fire N`` sends N rounds of SIGUSR1 to every thread of the
process and every child of the server, then answers ``fired``; ``stop``
calls ``shutdown()``; ``interrupt-here`` sends SIGINT to the thread that
reads the commands (not the main thread).  Rounds are 1 ms apart: signals of one kind that
arrive while one is pending merge into it.  On a clean exit it prints ``signals K`` (how many
the main thread's handler ran).  Every system call a signal interrupts must
be retried (PEP 475): the server must keep answering.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import socketserver as stdlib
import sys
import threading
import time
from typing import Any

from fault_models import BY_NAME, stream_handler

STDLIB = {"sync": stdlib.TCPServer, "threading": stdlib.ThreadingTCPServer,
          "forking": stdlib.ForkingTCPServer}


def build(impl: str, model: str) -> Any:
    if impl == "stdlib":
        return STDLIB[model](("127.0.0.1", 0), stream_handler(stdlib))
    return BY_NAME[model].build()


def drive_signals(server: Any) -> None:
    """Read ``fire N`` / ``stop`` commands from stdin (runs on its own thread)."""
    me = threading.get_ident()
    for line in sys.stdin:
        command, *args = line.split()
        if command == "stop":
            server.shutdown()
            return
        if command == "interrupt-here":
            # SIGINT caught by this thread, not the main one, as the kernel
            # may do with a Ctrl-C: the main thread must still hear of it.
            signal.pthread_kill(me, signal.SIGINT)
            continue
        for _ in range(int(args[0])):
            for thread in threading.enumerate():
                if thread.ident != me and thread.ident is not None:
                    with contextlib.suppress(ProcessLookupError):  # it just ended
                        signal.pthread_kill(thread.ident, signal.SIGUSR1)
            for pid in list(getattr(server, "active_children", None) or ()):
                with contextlib.suppress(ProcessLookupError):  # it just exited
                    os.kill(pid, signal.SIGUSR1)
            # Pending signals of one kind merge into one: give the targets a
            # moment to take each round, so that each round interrupts.
            time.sleep(0.001)
        print("fired", flush=True)


def main() -> None:
    # A test that finds this process stuck sends SIGABRT: every thread's
    # stack goes to stderr before the process dies.
    faulthandler.enable(all_threads=True)
    impl, model = sys.argv[1], sys.argv[2]
    counted: list[int] = []
    server = build(impl, model)
    close = server.server_close

    def announced_close() -> None:
        print("closing", flush=True)  # the test's cue: the with block is ending
        close()

    server.server_close = announced_close
    if "--signals" in sys.argv:
        signal.signal(signal.SIGUSR1, lambda signum, frame: counted.append(signum))
        threading.Thread(target=drive_signals, args=(server,), daemon=True).start()
    try:
        with server:
            print(server.server_address[1], flush=True)
            server.serve_forever()
    finally:
        print("listener closed:", server.socket.fileno() == -1, flush=True)
    print("signals", len(counted), flush=True)


if __name__ == "__main__":
    main()
