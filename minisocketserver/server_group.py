"""ServerGroup: one loop, one thread, several servers of any model.

Design map, part 4 of 6 (after the concurrency models).  The seed
document's second example serves three ports from one select()
loop.  A ``ServerGroup`` does that for whole servers: each member keeps its
own concurrency model (a synchronous member handles a request on the loop's
thread, a threading one starts a thread, a forking one forks, a multiplexing
one serves its connections in the loop), and one reactor watches all their
descriptors::

    group.serve_forever()
      serve_loop(members)                     server.py: the same loop as serve_forever()
        member._attach(reactor)               each member registers its descriptors
        Reactor.select(timeout)               any member's listener, connection, timer
        ready work                            the member's own pipeline runs
        member.service_actions()              every member, every iteration

Semantics, decided here:

* While the group serves, every member is "being served": its own
  ``shutdown()`` works from any other thread, wakes the group's loop and
  returns once that member has left it; the other members go on being
  served.  ``serve_forever()`` returns when no member is left.
* ``group.shutdown()`` is every member's ``shutdown()``: it returns once
  the loop has returned.  As for one server, a shutdown requested before
  the loop starts is remembered, and the loop returns at once.
* The loop wakes every ``poll_interval`` only if some member has periodic
  work (overrides ``service_actions``, e.g. a forking server reaping its
  children); otherwise it sleeps until there is work.
* A member may not be served by two loops at once: ``serve_forever()``
  raises ``RuntimeError`` if one is already being served.
"""

from __future__ import annotations

import selectors
from collections.abc import Iterable
from types import TracebackType

from .server import BaseServer, serve_loop


class ServerGroup:
    """Serve several servers from one ``serve_forever()`` loop.

    Methods for callers:
        serve_forever(poll_interval=0.5), shutdown(), server_close();
        usable as a context manager (``server_close()`` on exit).

    Class variables:
        selector_class   the selector the loop waits with (``None``: the
                         first member's ``selector_class``).

    Instance variables:
        servers   the members, in the order given.

    Resource handling: the group owns its members once given them:
    ``server_close()`` closes every one.
    """

    #: The ``selectors`` class of the group's loop; ``None`` takes the first
    #: member's, so a group of ``SelectSelector`` servers keeps select().
    selector_class: type[selectors.BaseSelector] | None = None

    def __init__(self, servers: Iterable[BaseServer]) -> None:
        """Remember the members; nothing is served until ``serve_forever()``."""
        self.servers = list(servers)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve every member until each has been shut down (blocks the caller)."""
        selector_class = self.selector_class
        if selector_class is None:
            first = self.servers[0] if self.servers else BaseServer
            selector_class = first.selector_class
        serve_loop(self.servers, poll_interval, selector_class)

    def shutdown(self) -> None:
        """Stop serving every member; return once ``serve_forever()`` has returned.

        Call it from another thread than the loop's (``RuntimeError``
        otherwise, as for one server).
        """
        for server in self.servers:
            server.shutdown()

    def server_close(self) -> None:
        """Close every member, even if closing one of them raises (the first error is re-raised)."""
        error: BaseException | None = None
        for server in self.servers:
            try:
                server.server_close()
            except BaseException as exc:  # the others must still be closed
                error = error or exc
        if error is not None:
            raise error

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server_close()
