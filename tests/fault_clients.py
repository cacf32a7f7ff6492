"""The fault suite's clients, in a process of their own.

Why a separate process: a forking server's children inherit every
descriptor the test process holds, client sockets included.  A client in
the test process that sets SO_LINGER 0 and closes would then only drop one
reference to its socket, the kernel would send no RST, and a handler
waiting on that client would wait forever.  Clients that live in another
process are never inherited, so a reset is a reset and a close is a FIN for
every concurrency model alike.

    host = ClientHost()              # starts ``python fault_clients.py``
    ids = host.connect(address, 200)
    host.send(ids, b"request\\n")
    host.reset(ids)                  # SO_LINGER (on, 0) + close -> RST
    replies = host.read(ids)         # until EOF/RST, all sockets at once

The parent writes one JSON command per line on the child's stdin and reads
one JSON answer per line; bytes travel as latin-1 strings.  Every read has a
deadline, so a server that never answers shows up as ``end == "timeout"``,
not as a hang.
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Bound on any single wait (seconds), as support.WAIT.
WAIT = 10.0


@dataclass
class Received:
    """What one client read: its bytes and how the read ended.

    ``end`` is ``"eof"`` (the server closed), ``"reset"`` (ECONNRESET),
    ``"size"`` (the bytes asked for arrived; still open), ``"timeout"``.
    ``idle`` is the time from this client's last send (or its connect) to
    the end of the read: how long the server let it sit before closing.
    """

    data: bytes
    end: str
    idle: float


class ClientHost:
    """The test's side: start the client process and send it commands."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="latin-1",
        )

    def _call(self, op: str, **args: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise AssertionError(f"client host died during {op!r}")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"client host, {op!r}: {answer['error']}")
        return answer["result"]

    def connect(self, address: Any, n: int = 1, *, rcvbuf: int | None = None) -> list[int]:
        """Open ``n`` connections to ``address``; returns their ids."""
        return list(self._call("connect", address=list(address), n=n, rcvbuf=rcvbuf))

    def send(self, ids: list[int], data: bytes) -> None:
        """``sendall(data)`` on each client, one after the other."""
        self._call("send", ids=ids, data=data.decode("latin-1"))

    def trickle(self, ids: list[int], data: bytes, interval: float) -> None:
        """Send ``data`` one byte per ``interval`` on each client, in the background.

        Returns at once; ``stop_trickle`` ends it early, and ``read`` or
        ``reset`` of a trickling client stops its trickle first.
        """
        self._call("trickle", ids=ids, data=data.decode("latin-1"), interval=interval)

    def stop_trickle(self) -> None:
        self._call("stop_trickle")

    def shut_wr(self, ids: list[int]) -> None:
        """Half-close: ``shutdown(SHUT_WR)`` (the server reads EOF)."""
        self._call("shut_wr", ids=ids)

    def reset(self, ids: list[int]) -> None:
        """Abort: SO_LINGER (on, 0 s), then close, so the kernel sends RST."""
        self._call("reset", ids=ids)

    def close(self, ids: list[int]) -> None:
        self._call("close", ids=ids)

    def read(
        self, ids: list[int], size: int | None = None, timeout: float = WAIT
    ) -> list[Received]:
        """Read on all ``ids`` at once: ``size`` bytes each, or until EOF if ``None``.

        ``timeout=0`` takes what has already arrived, without waiting.
        """
        answers = self._call("read", ids=ids, size=size, timeout=timeout)
        return [Received(a["data"].encode("latin-1"), a["end"], a["idle"]) for a in answers]

    def close_all(self) -> None:
        self._call("close_all")

    def stop(self) -> None:
        """End the client process (closing every client) and reap it."""
        try:
            self._call("exit")
        finally:
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
            self._proc.wait(WAIT)


# -- the client process ---------------------------------------------------


class _Clients:
    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}
        self.last_send: dict[int, float] = {}
        self.next_id = 0
        self.trickles: list[tuple[threading.Thread, threading.Event]] = []

    def connect(self, address: list[Any], n: int, rcvbuf: int | None) -> list[int]:
        family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
        ids = []
        for _ in range(n):
            sock = socket.socket(family, socket.SOCK_STREAM)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(WAIT)
            sock.connect(tuple(address))
            self.next_id += 1
            self.socks[self.next_id] = sock
            self.last_send[self.next_id] = time.monotonic()
            ids.append(self.next_id)
        return ids

    def send(self, ids: list[int], data: str) -> None:
        for i in ids:
            self.socks[i].sendall(data.encode("latin-1"))
            self.last_send[i] = time.monotonic()

    def trickle(self, ids: list[int], data: str, interval: float) -> None:
        stop = threading.Event()

        def run() -> None:
            for byte in data.encode("latin-1"):
                for i in ids:
                    sock = self.socks.get(i)  # None: reset or closed meanwhile
                    if sock is None:
                        continue
                    try:
                        sock.send(bytes([byte]))
                    except OSError:
                        continue  # closed by the server: the read reports it
                    self.last_send[i] = time.monotonic()
                if stop.wait(interval):
                    return

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.trickles.append((thread, stop))

    def stop_trickle(self) -> None:
        for thread, stop in self.trickles:
            stop.set()
            thread.join(WAIT)
        self.trickles.clear()

    def shut_wr(self, ids: list[int]) -> None:
        for i in ids:
            self.socks[i].shutdown(socket.SHUT_WR)

    def reset(self, ids: list[int]) -> None:
        for i in ids:
            sock = self.socks.pop(i)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    def close(self, ids: list[int]) -> None:
        for i in ids:
            self.socks.pop(i).close()

    def close_all(self) -> None:
        self.stop_trickle()
        self.close(list(self.socks))

    def read(self, ids: list[int], size: int | None, timeout: float) -> list[dict[str, Any]]:
        """Read every client in ``ids`` concurrently, with one deadline for all."""
        deadline = time.monotonic() + timeout
        data = {i: bytearray() for i in ids}
        end: dict[int, str] = {}
        idle: dict[int, float] = {}
        with selectors.DefaultSelector() as selector:
            for i in ids:
                if size is not None and len(data[i]) >= size:
                    end[i] = "size"
                    continue
                selector.register(self.socks[i], selectors.EVENT_READ, i)
            while len(end) < len(ids):
                # One pass even when the time is up: timeout=0 reads what
                # has arrived without waiting for more.
                left = deadline - time.monotonic()
                for key, _ in selector.select(max(left, 0)):
                    i = key.data
                    sock = self.socks[i]
                    want = 65536 if size is None else size - len(data[i])
                    try:
                        chunk = sock.recv(want)
                    except ConnectionResetError:
                        chunk, end[i] = b"", "reset"
                    else:
                        data[i] += chunk
                        if not chunk:
                            end[i] = "eof"
                        elif size is not None and len(data[i]) >= size:
                            end[i] = "size"
                    if i in end:
                        idle[i] = time.monotonic() - self.last_send[i]
                        selector.unregister(sock)
                if left <= 0:
                    break
        return [
            {"data": data[i].decode("latin-1"), "end": end.get(i, "timeout"),
             "idle": idle.get(i, -1.0)}
            for i in ids
        ]


def main() -> None:
    clients = _Clients()
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "exit":
            clients.close_all()
            print(json.dumps({"result": None}), flush=True)
            return
        try:
            result = getattr(clients, op)(**command)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            answer = {"result": result}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
