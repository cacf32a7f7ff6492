#!/usr/bin/env python3
"""The seed's select() echo server, with its bugs fixed: every message comes back + "好".

This is stage 2 of the walkthrough (after the blocking server): one thread, one loop,
many clients, by asking select() which sockets are ready before touching any of them.
It is the seed blog post's "多路复用+socket实现伪并发处理示例" written afresh.  The seed's
code is not repeated here; every place where it went wrong is marked ``SEED:`` with
what it did, what that does at run time, and the fix.

Protocol.  A message is one line of UTF-8 ending in "\\n" (a trailing "\\r" is dropped,
so telnet works).  The reply is the same text + "好" + "\\n".  A last line without "\\n"
before the client closes its side is still answered.

Run::

    python docs/examples/select_echo_raw.py              # 127.0.0.1:8001, as in the seed
    python docs/examples/select_echo_raw.py --port 0     # any free port
    printf 'hello\\n你好\\n' | python docs/examples/echo_client.py

Output.  The first stdout line is ``listening on HOST:PORT`` (with the real port when
``--port 0``), flushed at once, so a script can read it.  Logs go to stderr
(``--verbose`` logs every pass of the loop, as the seed's prints did).

Stopping.  Ctrl-C (SIGINT), or ``--max-seconds S``: the server closes every socket and
exits with status 0.  Replies not yet sent are dropped; draining them on shutdown is
the subject of the shutdown chapter.

What the seed got wrong, each checked by running the seed's loop (re-indented, on an
ephemeral port) against a client on 127.0.0.1:

1. It treats ``recv() == b""`` (the peer closed) as a message.  After a client closes,
   the seed answers the empty "message" with "好"; the peer's kernel answers with a
   reset and the seed's next ``sendall`` raises BrokenPipeError: the whole server dies
   when any client disconnects.  A client that only half-closes (shutdown(SHUT_WR))
   instead gets an endless stream of "好" (about 30,000 a second here) while the server
   spins at 100% CPU.
2. It decodes each ``recv()`` chunk on its own, outside the try block.  A multi-byte
   character split across two chunks (easy to provoke: send b"\\xe4", then b"\\xbd\\xa0"
   = "你") raises UnicodeDecodeError and kills the server.
3. It assumes one ``recv()`` is one message.  TCP is a byte stream: 200 one-byte sends
   came back as 29 or 30 replies (two runs), and a 1500-byte line as two replies, cut
   at byte 1024, each with its own "好".
4. It appends the socket to ``outputs`` once per received chunk and removes it once per
   reply.  While the client does not read, the socket is not writable, nothing is
   removed, and ``outputs`` fills with duplicates of one socket; at 1025 entries
   ``select()`` raises "ValueError: too many file descriptors in select()" and the
   server dies (reproduced with one client that sent for a while without reading).
5. It passes ``inputs`` as select()'s third, "exceptional" list and drops any socket
   found there.  On Linux that list reports TCP urgent (out-of-band) data, not errors:
   a client that sends one byte with MSG_OOB is silently removed and never answered.
6. It never closes sockets it stops watching, and never deletes their queues: each
   client that resets its connection leaks a descriptor (20 such clients, 20 leaked
   descriptors).
7. It calls blocking ``sendall`` inside the loop.  select() reporting "writable" only
   promises *some* buffer space; a reply larger than that blocks the one thread that
   serves everyone.  With the seed's small replies Linux's loopback buffers absorbed
   even 632 duplicate sendalls (about 650 KB) in one pass without blocking, so this is
   a latent bug here, not an observed stall, but nothing in the seed bounds it.
8. It watches descriptors with select() without checking their numbers.  With
   stdin, stdout, stderr and the listening socket open, the 1,021st concurrent client
   kills the server, of one of two errors.  At the common soft limit of 1024
   descriptors (RLIMIT_NOFILE, ``ulimit -n``), accept() fails first with "OSError:
   [Errno 24] Too many open files", which nothing catches.  Only where the limit is
   higher does that client get descriptor 1024, and then select() raises "ValueError:
   filedescriptor out of range in select()".  Both reproduced with 1030 clients
   (``python -m pytest tests/test_docs_sentences.py -k seed``).  See
   docs/select-poll-epoll.md for the limit, measured.
9. It binds without SO_REUSEADDR, so restarting it right after it served a client can
   fail with "Address already in use" while old connections sit in TIME_WAIT.  The fix
   below helps the *next* start only: on Linux a connection in TIME_WAIT keeps the
   SO_REUSEADDR setting of the listener that accepted it, and a new listener binds over
   it only if both set the option (``python -m pytest tests/test_docs_sentences.py -k
   reuseaddr``).  A restart after the seed itself still fails until TIME_WAIT ends.
"""

from __future__ import annotations

import argparse
import errno
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

HOST = "127.0.0.1"
DEFAULT_PORT = 8001  # the seed's port

#: The suffix the seed appends to every message.
SUFFIX = "好"

#: Bytes asked for per recv().  Any size is correct now that messages are framed by
#: "\n" (SEED: it relied on recv(1024) returning exactly one message).
RECV_SIZE = 4096

#: Longest line we buffer while waiting for its "\n".  A client that sends more without
#: a newline is disconnected, so one client cannot make the server hold unbounded memory.
MAX_LINE = 64 * 1024

#: Pending reply bytes for one client above which we stop reading from it.  A client
#: that sends but does not read then meets TCP flow control (its sends block) instead
#: of growing our memory or our write list (SEED bug 4).
HIGH_WATER = 256 * 1024

#: select() cannot watch a descriptor numbered FD_SETSIZE (1024 with glibc) or more;
#: CPython raises ValueError for it.  Connections that land there are refused (SEED bug 8).
FD_SETSIZE = 1024

#: Accept failures that mean "out of descriptors or memory right now".  The listening
#: socket stays readable, so retrying at once would spin; we stop accepting for
#: ACCEPT_BACKOFF seconds instead and keep serving the clients we have.
ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF = 0.1


def log(msg: str) -> None:
    print(f"[select_echo_raw] {msg}", file=sys.stderr, flush=True)


@dataclass(eq=False)
class Connection:
    """One client.  The server owns it; ``EchoServer._close`` is the only place that
    closes ``sock``, and it also forgets the connection, so nothing stale stays watched.
    """

    sock: socket.socket
    peer: str
    #: Bytes received but not yet ending in "\n".  Framing on raw bytes is safe: in UTF-8
    #: the byte 0x0A only ever means "\n", never part of a multi-byte character.
    inbuf: bytearray = field(default_factory=bytearray)
    #: The per-connection output queue: reply bytes not yet accepted by the kernel.
    #: Non-empty <=> we ask select() about writability (and only then).
    outbuf: bytearray = field(default_factory=bytearray)
    #: The client closed its sending side: flush outbuf, then close.
    eof: bool = False

    def wants_read(self) -> bool:
        return not self.eof and len(self.outbuf) < HIGH_WATER


class EchoServer:
    """A select() loop serving any number of echo clients (fewer than ~1020).

    Resource handling: the server owns the listening socket and every accepted
    socket; ``close()`` closes them all and is safe to call more than once.

    Error handling: an error on one connection (reset, broken pipe, a line too long)
    closes that connection and is logged; the loop carries on.  Only errors on the
    listening socket that are not about resources propagate out of ``serve``.
    """

    def __init__(self, host: str, port: int, *, verbose: bool = False) -> None:
        self.verbose = verbose
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # SEED bug 9: without SO_REUSEADDR a restart fails while old connections
            # on this port are in TIME_WAIT.  On Linux it works only if the server that
            # made those connections set it too, as this one does: the restart after a
            # run of the seed still fails.  (Two live servers still cannot share it.)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen()
            # Non-blocking: accept(2) warns that a connection select() reported may be
            # gone before accept() runs; a blocking accept() would then wait for the
            # next client with every other client unserved.
            self.listener.setblocking(False)
        except BaseException:
            self.listener.close()
            raise
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.conns: dict[socket.socket, Connection] = {}
        self._accept_paused_until = 0.0

    # -- the loop ---------------------------------------------------------------------

    def serve(self, max_seconds: float | None = None) -> None:
        """Serve until ``max_seconds`` have passed (forever if None) or Ctrl-C.

        Ctrl-C arrives as KeyboardInterrupt, raised by Python's SIGINT handler inside
        select(), where an idle loop spends its time; the caller catches it.  Because
        of that there is no shutdown flag to poll, and select() may block with no
        timeout (SEED: it woke every second for nothing but its prints).
        """
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                log(f"--max-seconds reached, stopping with {len(self.conns)} connection(s) open")
                return
            accepting = now >= self._accept_paused_until
            readers: list[socket.socket] = [self.listener] if accepting else []
            readers += [c.sock for c in self.conns.values() if c.wants_read()]
            # Write interest only while output is pending: a connected socket is almost
            # always writable, so asking about it otherwise would make select() return
            # at once, every time, and the loop would spin.
            writers = [c.sock for c in self.conns.values() if c.outbuf]
            timeout = self._timeout(now, deadline, accepting)
            # SEED bug 5: no exceptional list.  On Linux it reports TCP urgent data,
            # not errors; errors show up as "readable" and then recv() tells us.
            readable, writable, _ = select.select(readers, writers, [], timeout)
            if self.verbose:
                log(
                    f"pass: watching {len(readers)} for reading, {len(writers)} for"
                    f" writing; {len(readable)} readable, {len(writable)} writable"
                )
            for sock in readable:
                if sock is self.listener:
                    self._accept()
                else:
                    self._on_readable(self.conns[sock])
            for sock in writable:
                # The connection may have been closed while handling its read above.
                conn = self.conns.get(sock)
                if conn is not None:
                    self._on_writable(conn)

    def _timeout(self, now: float, deadline: float | None, accepting: bool) -> float | None:
        waits = []
        if deadline is not None:
            waits.append(deadline - now)
        if not accepting:
            waits.append(self._accept_paused_until - now)
        return max(0.0, min(waits)) if waits else None

    # -- the stages of one connection ----------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, addr = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return  # the client left between select() and accept(): nothing to do
        except OSError as exc:
            if exc.errno not in ACCEPT_RESOURCE_ERRNOS:
                raise
            log(f"accept failed ({exc}); pausing new connections for {ACCEPT_BACKOFF}s")
            self._accept_paused_until = time.monotonic() + ACCEPT_BACKOFF
            return
        peer = f"{addr[0]}:{addr[1]}"
        if sock.fileno() >= FD_SETSIZE:
            # SEED bug 8: select() would raise ValueError for this descriptor on the
            # next pass and take every client down with it.  Refuse this one instead.
            log(f"{peer}: refused, descriptor {sock.fileno()} is beyond select()'s limit")
            sock.close()
            return
        # Non-blocking, so that send() and recv() can never stall the loop (SEED bug 7).
        sock.setblocking(False)
        self.conns[sock] = Connection(sock, peer)
        log(f"{peer}: connected ({len(self.conns)} open)")

    def _on_readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return  # spurious readiness: harmless, select() will ask again
        except OSError as exc:  # ECONNRESET and friends: the connection is gone
            self._close(conn, f"recv failed: {exc}")
            return
        if self.verbose:
            log(f"{conn.peer}: received {len(data)} bytes")
        if not data:
            # SEED bug 1: b"" is not a message, it is end-of-stream, and it repeats
            # on every recv() from now on.  Answer what is left, stop reading, and
            # close once the replies are out.
            conn.eof = True
            if conn.inbuf:
                self._queue_reply(conn, bytes(conn.inbuf))
                conn.inbuf.clear()
            if not conn.outbuf:
                self._close(conn, "closed by peer")
            return
        conn.inbuf += data
        # SEED bugs 2 and 3: a message is a complete line, however the bytes were
        # chunked by TCP; only complete lines are decoded, so a character split across
        # two recv()s is never decoded in halves.
        while (end := conn.inbuf.find(b"\n")) >= 0:
            line = bytes(conn.inbuf[:end])
            del conn.inbuf[: end + 1]
            self._queue_reply(conn, line)
        if len(conn.inbuf) > MAX_LINE:
            self._close(conn, f"line longer than {MAX_LINE} bytes")

    def _queue_reply(self, conn: Connection, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        # Invalid UTF-8 from a client becomes U+FFFD instead of an exception: one bad
        # client must not be able to stop the server (SEED bug 2 killed it).
        text = line.decode("utf-8", errors="replace")
        # SEED bug 4: the reply goes into this connection's own queue; the socket is
        # in the write list exactly while that queue is non-empty, never twice.
        conn.outbuf += (text + SUFFIX + "\n").encode("utf-8")

    def _on_writable(self, conn: Connection) -> None:
        try:
            # send(), not sendall(): on a non-blocking socket it takes what fits and
            # returns at once; the rest waits in outbuf for the next "writable".
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # EPIPE/ECONNRESET: the peer is gone.  (Python ignores SIGPIPE, so this is
            # an exception here rather than a signal that kills the process.)
            self._close(conn, f"send failed: {exc}")
            return
        del conn.outbuf[:sent]
        if conn.eof and not conn.outbuf:
            self._close(conn, "closed by peer, all replies sent")

    def _close(self, conn: Connection, why: str) -> None:
        # SEED bug 6: forget *and* close, in one place, so no list keeps a dead socket
        # and no descriptor leaks.
        del self.conns[conn.sock]
        conn.sock.close()
        log(f"{conn.peer}: {why} ({len(self.conns)} open)")

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn, "server stopping")
        self.listener.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="select() echo server: replies to each line with the line + '好'."
        " Prints 'listening on HOST:PORT' first; Ctrl-C stops it with status 0."
    )
    ap.add_argument("--host", default=HOST, help=f"address to listen on (default {HOST})")
    ap.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"0 = any free port (default {DEFAULT_PORT})"
    )
    ap.add_argument(
        "--max-seconds", type=float, default=None, help="stop by itself after this long"
    )
    ap.add_argument("--verbose", "-v", action="store_true", help="log every pass of the loop")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C must raise KeyboardInterrupt even if we were started with SIGINT ignored
    # (a non-interactive shell does that to background jobs, and children inherit it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server = EchoServer(args.host, args.port, verbose=args.verbose)
    except OSError as exc:
        log(f"cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    try:
        host, port = server.address
        print(f"listening on {host}:{port}", flush=True)
        server.serve(args.max_seconds)
    except KeyboardInterrupt:
        log("interrupted (Ctrl-C), stopping")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
