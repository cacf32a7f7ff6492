"""Chapter 12, solutions (checked by docs/exercises/test_chapter12.py)."""

from __future__ import annotations

import ipaddress
import select
import socket
import struct


def v2_tcp4(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """Exercise 1.  The PROXY v2 header of a TCP-over-IPv4 connection from ``source``
    to ``destination``, built with ``struct`` from the spec: signature, version and
    command byte, family and transport byte, length, addresses, ports; no TLV.
    """
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    addresses = (ipaddress.IPv4Address(source[0]).packed
                 + ipaddress.IPv4Address(destination[0]).packed
                 + struct.pack("!HH", source[1], destination[1]))
    return signature + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def v1_source(line: bytes) -> tuple[str, int] | None:
    """Exercise 2.  The client's ``(address, port)`` from a complete PROXY v1 ``TCP4``
    line, or ``None`` for anything that is not one by the spec: no CRLF at the end,
    more than 107 bytes, another family, a port or address octet with a leading zero,
    a port out of range, a field missing or extra.
    """
    if len(line) > 107 or not line.endswith(b"\r\n"):
        return None
    fields = line[:-2].split(b" ")
    if len(fields) != 6 or fields[0] != b"PROXY" or fields[1] != b"TCP4":
        return None
    try:
        text = [f.decode("ascii") for f in fields[2:]]
    except UnicodeDecodeError:
        return None
    for address in text[:2]:
        octets = address.split(".")
        if len(octets) != 4 or not all(_decimal(o, 255) for o in octets):
            return None
    if not all(_decimal(port, 65535) for port in text[2:]):
        return None
    return text[0], int(text[2])


def _decimal(text: str, limit: int) -> bool:
    """A number written the spec's way: digits only, no leading zero, at most ``limit``."""
    return (text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))
            and int(text) <= limit)


def reuseport_spread(listeners: int, connections: int) -> list[int]:
    """Exercise 3 (Linux).  Bind ``listeners`` sockets to one loopback port with
    SO_REUSEPORT, make ``connections`` connections to it, then accept, without
    blocking, everything queued on each listener.  How many did each one get?
    Close everything.
    """
    sockets: list[socket.socket] = []
    clients: list[socket.socket] = []
    try:
        for _ in range(listeners):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            port = sockets[0].getsockname()[1] if len(sockets) > 1 else 0
            listener.bind(("127.0.0.1", port))
            listener.listen(connections)
            listener.setblocking(False)
        address = sockets[0].getsockname()
        # connect() returns once the handshake is done: the connection is queued.
        clients = [socket.create_connection(address, timeout=5) for _ in range(connections)]
        counts = []
        for listener in sockets:
            taken = 0
            while select.select([listener], [], [], 0)[0]:
                connection, _ = listener.accept()
                connection.close()
                taken += 1
            counts.append(taken)
        return counts
    finally:
        for sock in sockets + clients:
            sock.close()
