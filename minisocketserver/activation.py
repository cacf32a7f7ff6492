"""Inherited listeners: systemd's socket-activation and readiness protocols.

Beyond stdlib.  A service manager (systemd, ``systemd-socket-activate``, a
supervisor of our own) can bind the listening sockets itself and start the
server with them already open.  The server then needs no privilege to bind
a low port, clients that connect before it is up wait in the kernel's
backlog instead of being refused, and a restart refuses nobody: the
manager keeps its copy of each socket while the server process is gone.

The activation protocol (sd_listen_fds(3)), step by step:

1. The manager binds and listens, then starts the server with the sockets
   at descriptors 3, 4, ... (``SD_LISTEN_FDS_START`` = 3, consecutive).
2. It sets ``LISTEN_FDS`` to their count, ``LISTEN_PID`` to the server's
   process id, and optionally ``LISTEN_FDNAMES`` to a colon-separated name
   per descriptor (``FileDescriptorName=`` in a socket unit,
   ``--fdname`` for systemd-socket-activate).
3. The server believes the variables only if ``LISTEN_PID`` is its own pid:
   environment variables are inherited by every descendant, descriptors
   too unless close-on-exec, and only the process they were meant for may
   take them.  It marks the descriptors close-on-exec and removes the
   variables, so that neither leaks into the programs it starts.
4. It serves: ``TCPServer.from_socket(sock, Handler)`` (sockets.py) adopts
   each socket without binding or listening again.

And the readiness protocol (sd_notify(3)): when ``NOTIFY_SOCKET`` names a
Unix datagram socket, the server tells the manager ``READY=1`` once it
serves and ``STOPPING=1`` when it begins to stop, one datagram each.

Usage, one server per inherited socket, all on one loop::

    servers = [ThreadingTCPServer.from_socket(s, Handler) for s in listen_fds()]
    with ServerGroup(servers) as group:
        notify("READY=1")
        group.serve_forever()
"""

from __future__ import annotations

import os
import socket
import stat

#: The first inherited descriptor: 0, 1 and 2 are stdin, stdout, stderr.
SD_LISTEN_FDS_START = 3

# The variables of the activation protocol, all removed together.
_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """The listening sockets passed by the service manager, in the order passed.

    The same as ``listen_fds_with_names()`` without the names.
    """
    return [sock for _, sock in listen_fds_with_names(unset_environment)]


def listen_fds_with_names(unset_environment: bool = True) -> list[tuple[str, socket.socket]]:
    """``(name, socket)`` for each descriptor passed by the service manager.

    Returns ``[]`` when ``LISTEN_PID`` or ``LISTEN_FDS`` is missing, or when
    ``LISTEN_PID`` is another process's (the variables were inherited from
    an ancestor that did not take them).  The sockets take their family and
    type from the descriptors (``socket.socket(fileno=fd)`` asks the
    kernel), each descriptor is made close-on-exec, and each socket owns
    its descriptor from then on (closing it closes the descriptor).

    Names come from ``LISTEN_FDNAMES``, in order; they may repeat (several
    sockets for one purpose).  Without the variable every descriptor is
    named ``"unknown"``, as systemd names it.  Where the list is shorter
    than the count, the rest are ``"unknown"`` too (and extra names are
    ignored): libsystemd refuses such a list (EINVAL), but
    systemd-socket-activate passes one when given fewer ``--fdname``
    values than listeners (seen with systemd 252), and a server that
    refused to start over a missing label would be the worse choice.

    ``unset_environment`` (default True) removes ``LISTEN_PID``,
    ``LISTEN_FDS`` and ``LISTEN_FDNAMES`` from ``os.environ`` (and so from
    the environment every child inherits) in every case, found or not,
    ours or not, as sd_listen_fds() does when asked: nothing below us can
    ever be their rightful recipient.  A second call then returns ``[]``.

    Raises ``ValueError`` when the variables are malformed, or
    when a passed descriptor is not an open socket (a FIFO or a file: this
    function is for listeners; a misconfigured unit should fail loudly, not
    be half served).  The check runs before any socket is made, so nothing
    is half adopted.
    """
    try:
        return _inherited_sockets()
    finally:
        if unset_environment:
            for name in _LISTEN_VARIABLES:
                os.environ.pop(name, None)


def _inherited_sockets() -> list[tuple[str, socket.socket]]:
    """Called by ``listen_fds_with_names()``: read the variables, wrap the descriptors."""
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    if pid is None or count is None:
        return []
    if not pid.isdigit() or not count.isdigit():
        raise ValueError(f"malformed LISTEN_PID={pid!r} or LISTEN_FDS={count!r}")
    if int(pid) != os.getpid():
        return []
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))
    for fd in fds:
        try:
            is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
        except OSError as exc:  # EBADF: the manager passed fewer than it said
            raise ValueError(f"LISTEN_FDS={count}, but descriptor {fd} is not open") from exc
        if not is_socket:
            raise ValueError(f"LISTEN_FDS: descriptor {fd} is not a socket")
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    found = []
    for index, fd in enumerate(fds):
        # Inherited descriptors are inheritable (that is how they got
        # here); without this, every program the server runs would hold
        # the listener open, and a restart of the server would not free it.
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) and names[index] else "unknown"
        found.append((name, socket.socket(fileno=fd)))
    return found


def notify(state: str, unset_environment: bool = False) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``, ``"STOPPING=1"``) to the service manager.

    Does nothing and returns False when ``NOTIFY_SOCKET`` is unset or empty
    (not started by a manager that listens); returns True once the datagram
    is sent.  A path starting with ``@`` is in Linux's abstract namespace.
    Several assignments go in one call, one per line
    (``"READY=1\\nSTATUS=serving"``).  The variable is kept by default, so
    that ``STOPPING=1`` can follow ``READY=1``; ``unset_environment=True``
    removes it after this message, so children cannot send as us.

    Raises ``OSError`` when the manager's socket cannot be reached (it is
    gone, or the address is of a kind this function does not speak, such as
    systemd's ``vsock:`` addresses): a manager waiting for ``READY=1`` would
    otherwise wait until its own timeout without a word.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if unset_environment:
        os.environ.pop("NOTIFY_SOCKET", None)
    if not address:
        return False
    if address.startswith("@"):
        # The abstract namespace: a name with no file behind it, written
        # with a leading NUL byte, shown by systemd with a leading '@'.
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode(), address)
    return True
