"""Chapter 10, select vs poll vs epoll: solutions.  Checked by test_chapter10.py."""

from __future__ import annotations

import select
import selectors
import socket


def select_refuses_1024() -> str:
    """Exercise 1, answered by code.  What does select.select() say when asked to watch
    descriptor number 1024?  Return the exception's message.  (select() takes any
    object with a fileno() method: no need to open 1,025 files.)
    """

    class Fake:
        def fileno(self) -> int:
            return 1024

    try:
        select.select([Fake()], [], [], 0)
    except ValueError as exc:
        return str(exc)
    return "no error"


def events_after_peer_closes(selector_class: type[selectors.BaseSelector]) -> int:
    """Exercise 2, answered by code.  Register one end of a socketpair for reading
    with ``selector_class``, close the other end, and return the events one
    ``select(timeout=1)`` reports for it (0 if none).
    """
    mine, peer = socket.socketpair()
    with mine, selector_class() as selector:
        selector.register(mine, selectors.EVENT_READ)
        peer.close()
        ready = selector.select(timeout=1)
        return ready[0][1] if ready else 0


def reports_until_read(selector_class: type[selectors.BaseSelector], waits: int) -> int:
    """Exercise 3, answered by code.  Make a socket readable (one byte waiting), then
    call ``select(timeout=0)`` ``waits`` times without reading it.  How many of those
    calls report it?  (Level-triggered or edge-triggered?)
    """
    mine, peer = socket.socketpair()
    with mine, peer, selector_class() as selector:
        selector.register(mine, selectors.EVENT_READ)
        peer.send(b"!")
        selector.select(timeout=1)  # let the byte arrive
        return sum(1 for _ in range(waits) if selector.select(timeout=0))
