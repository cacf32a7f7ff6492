"""Exec a program the way a service manager does: sockets at 3, 4, ..., LISTEN_* set.

    python activation_launcher.py FD[,FD...] PROGRAM [ARGS...]

The descriptors (passed to this process with ``pass_fds``) are moved to
``SD_LISTEN_FDS_START`` (3) onwards, ``LISTEN_FDS`` and ``LISTEN_PID`` are
set (``LISTEN_FDNAMES`` comes from the caller's environment, if any), and
PROGRAM replaces this process: ``exec`` keeps the pid, which is how the
manager knows ``LISTEN_PID`` before the program runs.  Used by
tests/test_activation.py as the test's own small supervisor, the part of
systemd that runs between fork() and exec().
"""

from __future__ import annotations

import fcntl
import os
import sys


def main() -> None:
    fds = [int(fd) for fd in sys.argv[1].split(",") if fd]
    targets = range(3, 3 + len(fds))
    # Out of the way first (above every target), so that moving one socket
    # into place cannot overwrite another still waiting to move.
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3 + len(fds)) for fd in fds]
    for fd in fds:
        os.close(fd)
    for target, fd in zip(targets, parked, strict=True):
        os.dup2(fd, target)  # inheritable, unlike the parked copy
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
