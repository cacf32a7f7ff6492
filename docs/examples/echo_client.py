#!/usr/bin/env python3
"""The seed's interactive echo client, usable from a script as well.

It connects to select_echo_raw.py (or any server speaking its line protocol), sends
each line it reads, and prints each reply.  At a terminal it prompts like the seed
(">>>>>"); with stdin from a pipe or file it prints only the replies, one per line, so::

    printf 'hello\\n你好\\n' | python docs/examples/echo_client.py --port 8001

prints ``hello好`` and ``你好好``.

Stopping.  End of input (Ctrl-D, or the end of the pipe) closes the connection and
exits 0; so does Ctrl-C.  If the server closes first, or a reply takes longer than
``--timeout`` seconds, it says so on stderr and exits 1.

What the seed's client got wrong (checked against the seed's server):

1. An empty line sends nothing (``sendall(b"")``), then waits in ``recv()`` for a
   reply to a message the server never received: the client hangs for good.  Every
   line we send ends in "\\n", so an empty line is a message too ("好" comes back).
2. ``str(obj.recv(1024), encoding='utf-8')`` takes whatever bytes are there as the
   reply: a reply longer than 1024 bytes is printed in pieces and mixed up with the
   next one, and a multi-byte character cut at a chunk boundary raises
   UnicodeDecodeError.  We read up to the "\\n" that ends a reply, then decode it whole.
3. The end of input and Ctrl-C end it with a traceback (EOFError, KeyboardInterrupt),
   and ``obj.close()`` after its endless loop is never reached.  A server that closes
   makes ``recv()`` return b"", which it prints as an empty reply and carries on.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator, Sequence

HOST = "127.0.0.1"
DEFAULT_PORT = 8001
PROMPT = ">>>>>"  # the seed's prompt


class ServerClosed(Exception):
    """The server closed the connection before a whole reply arrived."""


class LineReader:
    """Reads "\\n"-terminated lines from a socket, however TCP chunks them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def readline(self) -> bytes:
        while (end := self.buf.find(b"\n")) < 0:
            data = self.sock.recv(4096)
            if not data:
                raise ServerClosed
            self.buf += data
        line = bytes(self.buf[:end])
        del self.buf[: end + 1]
        return line


def input_lines(interactive: bool) -> Iterator[str]:
    if interactive:
        while True:
            try:
                yield input(PROMPT)
            except EOFError:
                return
    else:
        for line in sys.stdin:
            yield line.rstrip("\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Send each line of stdin to the echo server and print each reply."
    )
    ap.add_argument("--host", default=HOST, help=f"server address (default {HOST})")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    ap.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for each reply (default 10)"
    )
    args = ap.parse_args(argv)
    # Ctrl-C must raise KeyboardInterrupt even if SIGINT was inherited as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    except OSError as exc:
        print(f"echo_client: cannot connect to {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    with sock:
        reader = LineReader(sock)
        try:
            for line in input_lines(sys.stdin.isatty()):
                sock.sendall(line.encode("utf-8") + b"\n")
                reply = reader.readline()
                print(reply.decode("utf-8", errors="replace"), flush=True)
        except KeyboardInterrupt:
            return 0
        except ServerClosed:
            print("echo_client: the server closed the connection", file=sys.stderr)
            return 1
        except TimeoutError:
            print(f"echo_client: no reply within {args.timeout:g}s", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"echo_client: {exc}", file=sys.stderr)
            return 1
        # Tell the server we are done (it answers what it has and closes its side).
        # It may have closed already; then there is nobody left to tell.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
