#!/usr/bin/env python3
"""A toy socketserver in about 80 lines: the one a reader could have written after chapter 2.

The stage between the seed's raw select() loop (docs/examples/select_echo_raw.py) and
the library (minisocketserver): the same ideas, each in its smallest working form, so
that every later chapter can be read as "this piece, grown up".  Each class and hook
says, in a ``# chapter N`` comment, which chapter grows it into the real thing.  The
walk from a blocking accept() to this file, one small diff at a time, is
docs/02a-toy-socketserver.md; tests/test_toy_server.py runs it.

It is the reader's own code: it imports neither minisocketserver nor stdlib's
socketserver, and was written from the concepts of the chapters, not from either.

What it leaves out on purpose (and where the library puts it back): UDP and Unix
sockets, handle_request() with a timeout, service_actions(), forking, a bounded pool,
error handling that survives a failing shutdown_request(), and a loop that watches
more than one listener.

Protocol (the seed's echo).  A message is one line of UTF-8 ending in "\\n" (a "\\r"
before it is dropped); the reply is the same text + "好" + "\\n".  A last line without
"\\n" before the client closes its side is still answered.

Run::

    python docs/examples/toy_socketserver.py --port 0      # prints "listening on HOST:PORT"
    printf 'hello\\n' | python docs/examples/echo_client.py --port PORT

Stopping: Ctrl-C (SIGINT), or ``--max-seconds S``; either way the server closes its
sockets, waits for the requests still running, and exits with status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import sys
import threading
import traceback
from typing import Any


class BaseServer:  # chapter 3 grows this into minisocketserver.server.BaseServer
    """The loop and the pipeline; it knows nothing about sockets (TCPServer below does)."""

    def __init__(self, server_address: Any, RequestHandlerClass: type[BaseRequestHandler]) -> None:
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        # chapter 9: the wake-up channel.  shutdown() writes one byte; the loop, asleep
        # in select() with no timeout, wakes at once instead of polling a flag.
        self._wake_r, self._wake_w = socket.socketpair()
        # Set by shutdown() on its thread, read by the loop: one bool, one writer.
        self._stopping = False
        self._stopped = threading.Event()

    def serve_forever(self) -> None:  # chapter 2's loop; chapter 10 swaps select() for poll()
        """Called by your code: wait for the listener or the wake-up byte, until shutdown()."""
        self._stopped.clear()
        try:
            while not self._stopping:
                # select() accepts any object with fileno(): the server itself.
                ready, _, _ = select.select([self, self._wake_r], [], [])
                if self._wake_r in ready:
                    self._wake_r.recv(64)  # drain it, or select() would return at once forever
                elif self in ready:
                    self.handle_request()
        finally:
            self._stopping = False
            self._stopped.set()

    def shutdown(self) -> None:  # chapter 9
        """Called from another thread: stop serve_forever() and wait until it has returned."""
        self._stopping = True
        self._wake_w.send(b"x")
        self._stopped.wait()

    def handle_request(self) -> None:  # chapter 3: the template method
        """Called by serve_forever() when the listener is ready: one request, hook by hook."""
        request, client_address = self.get_request()
        if self.verify_request(request, client_address):
            self.process_request(request, client_address)
        else:
            self.shutdown_request(request)

    def verify_request(self, request: Any, client_address: Any) -> bool:  # chapter 3: policy
        """Called by handle_request(): False refuses the request (it is closed, not served)."""
        return True

    def process_request(self, request: Any, client_address: Any) -> None:  # chapters 6-8
        """Called by handle_request(): *where* the request runs.  Here: on the loop's thread."""
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)  # one bad request must not stop the loop
        finally:
            self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:  # chapter 5
        """Called by process_request(), on its thread: build the handler, which does the work."""
        self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:  # chapter 3
        """Called by process_request() when the handler raised: report it, keep serving."""
        print(f"error serving {client_address}:\n{traceback.format_exc()}", file=sys.stderr)

    def shutdown_request(self, request: Any) -> None:  # chapter 4 says what "end" means per type
        """Called by process_request() after the handler, on every path: end the request."""

    def server_close(self) -> None:
        """Called by your code (or __exit__) once serving is over: release the sockets."""
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> BaseServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server_close()


class TCPServer(BaseServer):  # chapter 4 adds UDP, Unix sockets, IPv6 and the socket options
    """A listening TCP socket: get_request() is accept(), shutdown_request() is SHUT_WR + close."""

    def __init__(self, server_address: Any, RequestHandlerClass: type[BaseRequestHandler]) -> None:
        super().__init__(server_address, RequestHandlerClass)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Lets a restart bind while old connections sit in TIME_WAIT (chapter 4).
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(server_address)
            self.server_address = self.socket.getsockname()  # port 0 becomes the real port
            self.socket.listen(5)  # the backlog: handshakes the kernel completes for us
        except BaseException:
            self.server_close()
            raise

    def fileno(self) -> int:
        """Called by select(): the server is watched as its listening socket."""
        return self.socket.fileno()

    def get_request(self) -> tuple[socket.socket, Any]:
        """Called by handle_request(): take one finished handshake off the accept queue."""
        return self.socket.accept()

    def shutdown_request(self, request: socket.socket) -> None:
        """Called by process_request(): EOF to the client now, then release our descriptor."""
        # SHUT_WR ends the connection for the peer even if another process still holds a
        # copy of the descriptor (chapter 7: after fork(), two do).  OSError: the client
        # has gone already (ENOTCONN), there is nothing left to tell it.
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
        request.close()

    def server_close(self) -> None:
        """Close the listener too; the wake-up pair goes in BaseServer.server_close()."""
        self.socket.close()
        super().server_close()


class BaseRequestHandler:  # chapter 5 adds StreamRequestHandler's rfile/wfile and timeout
    """One object per request: construction *is* the work (setup, handle, finish)."""

    def __init__(self, request: Any, client_address: Any, server: BaseServer) -> None:
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()  # runs even when handle() raised: it releases what setup() took

    def setup(self) -> None:
        """Called first by __init__: acquire what handle() needs."""

    def handle(self) -> None:
        """Called by __init__ after setup(): serve the request.  Override this."""

    def finish(self) -> None:
        """Called last by __init__, on every path: release what setup() acquired."""


class ThreadingMixIn:  # chapter 6 adds daemon_threads, error paths and a thread pool
    """A thread per request: only *where* process_request() runs changes, nothing else."""

    # Owned by the loop's thread (process_request) until serve_forever() has returned;
    # then by server_close().  No lock: never two owners at once.
    _threads: list[threading.Thread]

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by handle_request(): run the rest of the pipeline on a new thread."""
        run_here = super().process_request  # BaseServer's, next in the MRO
        thread = threading.Thread(target=run_here, args=(request, client_address))
        thread.start()
        self._threads = [t for t in getattr(self, "_threads", []) if t.is_alive()] + [thread]

    def server_close(self) -> None:
        """Wait for the requests still running, then close the sockets."""
        for thread in getattr(self, "_threads", []):
            thread.join()
        super().server_close()


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    """The mixin first, so that its process_request() wins the method resolution order."""


# --- the seed's echo, served by the toy -----------------------------------------------


class SeedEcho(BaseRequestHandler):
    """Each line comes back + "好" until the client closes its side."""

    def setup(self) -> None:
        self.rfile = self.request.makefile("rb")  # a file reads whole lines across recv()s

    def handle(self) -> None:
        for line in self.rfile:
            text = line.decode("utf-8", "replace").rstrip("\n").rstrip("\r")
            self.request.sendall((text + "好\n").encode("utf-8"))

    def finish(self) -> None:
        self.rfile.close()  # our file object only; the server closes the connection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after S seconds")
    args = parser.parse_args(argv)
    with ThreadingTCPServer((args.host, args.port), SeedEcho) as server:
        host, port = server.server_address[:2]
        print(f"listening on {host}:{port}", flush=True)
        if args.max_seconds is not None:
            # shutdown() must come from another thread than the loop's: it waits for it.
            timer = threading.Timer(args.max_seconds, server.shutdown)
            timer.daemon = True
            timer.start()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
