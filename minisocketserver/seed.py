"""The seed document's echo handler, shared by ``echo`` and ``tour``.

Not part of the library: it is the example the command line serves.  It
lives in its own module so that ``cli.py`` (which runs the ``tour``) and
``tour.py`` (which tours this handler) each import it from here, rather
than one another.
"""

from __future__ import annotations

from .handlers import BaseRequestHandler

#: What the seed's server appends to every reply.
SUFFIX = "好".encode()


class SeedEchoHandler(BaseRequestHandler):
    """Answer every chunk received with the chunk plus "好", until EOF.

    Works per ``recv()`` chunk, not per line, because the seed's client sends
    what was typed without a newline and waits for the reply.
    """

    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data + SUFFIX)
