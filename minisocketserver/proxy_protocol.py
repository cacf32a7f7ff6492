"""ProxyProtocolMixIn: the client's own address, from the load balancer in front.

Design map, part 4 of 6 (an admission stage, after admission.py and tls.py).
Behind HAProxy, nginx's ``stream`` proxy or an AWS NLB, every connection
comes from the proxy: ``client_address`` is the proxy's, and so is every
log line and every ``verify_request`` decision.  The PROXY protocol
(HAProxy's ``doc/proxy-protocol.txt``, versions 1 and 2) has the proxy
prepend one header to each connection naming the client it relays::

    PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\\r\\n      (v1: one text line)
    \\r\\n\\r\\n\\0\\r\\nQUIT\\n 0x21 0x11 0x000c <12 address bytes>   (v2: binary)

This module has two halves.  The parser (``parse_header``, ``encode_v1``,
``encode_v2``) is pure functions over bytes, no sockets; it is what the
property tests drive.  ``ProxyProtocolMixIn`` is an admission stage
(admission.py): each new connection waits in the loop, costing no worker,
until its header is complete; then the pipeline goes on with the address
the header names::

    loop thread:  accept -> the peer is in proxy_allow_from? -> admit_request:
                  watch it, deadline proxy_header_timeout
                  ... readable -> first_bytes_arrived: peek, parse_header;
                      incomplete: take the bytes seen (all header), keep waiting
                      complete: take exactly the header's bytes
                  -> verify_request(request, ORIGINAL address), once
                  -> process_request(request, ORIGINAL address) -> the model

Where each address is: ``client_address`` (the handler's, the logs',
``verify_request``'s) is the original client's; ``request.getpeername()``
stays the proxy's; ``server.proxy_header(request)`` is the parsed header,
TLVs included.  A ``LOCAL`` header (a health check of the proxy itself) or
an ``UNKNOWN`` one keeps the connection's real peer address, as the spec
says; so does a v2 header for a family with no (host, port) (``UNIX``,
``UNSPEC``): its addresses are in ``proxy_header(request)``.

Refusals are quiet: a peer outside ``proxy_allow_from`` (checked at
accept, before any wait), a missing or malformed header, a v1 line with no
CRLF in its first 107 characters, a client that stalls mid-header (closed at
``proxy_header_timeout``) or closes mid-header is logged at debug, counted
in ``server.proxy_stats`` by reason, and closed: it never reaches the
handler, ``verify_request`` nor ``handle_error``.

Parsing choices, where the spec leaves room (each one tested):

* Partial headers are waited for (the spec's recommendation: "be
  tolerant"), under the deadline; an invalid prefix is refused as soon as
  it is seen ("abort the connection as soon as possible").
* v1: the first CR or LF must begin the CRLF that ends the line (a lone
  CR or LF anywhere is an error); after ``UNKNOWN`` the rest of the line is
  ignored, whatever its bytes; IPv6 addresses in any form ``ipaddress``
  reads (as ``inet_pton`` would), but no scope (``%eth0``); hosts come back
  in canonical form.
* No guessing: ``proxy_protocol = "any"`` accepts either version, but a
  connection without a header is refused (the spec forbids servers that
  guess whether a header is there).
* v2 TLVs: every TLV but ``PP2_TYPE_NOOP`` is kept, in order, in
  ``ProxyHeader.tlvs`` (types the spec defines and unknown ones alike:
  this module interprets none of them, the handler may); a TLV running
  past the header is an error; a ``PP2_TYPE_CRC32C`` TLV is checked (a
  mismatch refuses the connection) and kept.
* v2 address block: its size is the family's (12, 36 or 216 address
  bytes, none for UNSPEC) and the 16-bit length must cover it; the rest
  is TLVs.  With an ``UNSPEC``
  family or transport, addresses are ``None``.  ``LOCAL`` headers are
  parsed the same way, and report no addresses.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .admission import KEEP_WAITING, AdmissionMixIn, AdmissionRefused
from .server import HandOff, logger

if TYPE_CHECKING:
    from .sockets import TCPServer

    _StreamServerBase = TCPServer
else:
    _StreamServerBase = object

__all__ = [
    "ProxyProtocolMixIn",
    "ProxyStats",
    "PP2_TYPE_ALPN",
    "PP2_TYPE_AUTHORITY",
    "PP2_TYPE_CRC32C",
    "PP2_TYPE_NOOP",
    "PP2_TYPE_UNIQUE_ID",
    "ProxyHeader",
    "ProxyProtocolError",
    "crc32c",
    "encode_v1",
    "encode_v2",
    "parse_header",
]


class ProxyProtocolError(ValueError):
    """The bytes at the start of a connection are not a valid PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    """One parsed PROXY protocol header.

    Fields:
        version      1 or 2.
        command      ``"PROXY"`` (relayed for a client) or ``"LOCAL"`` (v2:
                     the proxy's own connection, e.g. a health check).
        family       v1: ``"TCP4"``, ``"TCP6"``, ``"UNKNOWN"``; v2: ``"TCP4"``,
                     ``"UDP4"``, ``"TCP6"``, ``"UDP6"``, ``"UNIX"`` (stream),
                     ``"UNIX_DGRAM"``, ``"UNSPEC"``.
        source       the client: ``(host, port)`` with ``host`` in
                     ``ipaddress``'s compressed form, a Unix path (``str``;
                     ``bytes`` for an abstract address), or ``None``
                     (``UNKNOWN``, ``UNSPEC``, ``LOCAL``).
        destination  the address the client connected to, in the same form.
        tlvs         v2: ``(type, value)`` pairs in wire order, NOOPs left out.
        length       bytes the header took on the wire.
    """

    version: int
    command: str
    family: str
    source: Any | None
    destination: Any | None
    tlvs: tuple[tuple[int, bytes], ...]
    length: int

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type ``kind``, or ``None``."""
        return next((value for t, value in self.tlvs if t == kind), None)


#: TLV types of the spec (section 2.2); the module checks CRC32C, drops NOOP.
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05

#: The v2 signature: it contains a NUL and a lone "QUIT", so that no text
#: protocol (HTTP, SMTP, TLS...) parses it.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
#: The longest v1 line, CRLF included ("PROXY UNKNOWN" + two full IPv6
#: addresses and ports): a line with no CRLF in its first 107 characters is invalid.
V1_MAX_LENGTH = 107
_V2_FIXED = 16  # signature, version/command, family/transport, length

# v2 byte 14: high nibble the family, low nibble the transport.
_FAMILIES = {0x0: "UNSPEC", 0x1: "INET", 0x2: "INET6", 0x3: "UNIX"}
_TRANSPORTS = {0x0: "UNSPEC", 0x1: "STREAM", 0x2: "DGRAM"}
# Address bytes each family takes (both addresses, both ports).
_ADDRESS_SIZE = {0x0: 0, 0x1: 12, 0x2: 36, 0x3: 216}
_UNIX_PATH = 108
_NAMES = {
    (0x1, 0x1): "TCP4", (0x1, 0x2): "UDP4",
    (0x2, 0x1): "TCP6", (0x2, 0x2): "UDP6",
    (0x3, 0x1): "UNIX", (0x3, 0x2): "UNIX_DGRAM",
}
_CODES = {name: code for code, name in _NAMES.items()}
_COMMANDS = {0x0: "LOCAL", 0x1: "PROXY"}

_MODES = ("v1", "v2", "any")


def parse_header(data: bytes | bytearray | memoryview, mode: str = "any") -> ProxyHeader | None:
    """Parse the PROXY header at the start of ``data``.

    Returns the ``ProxyHeader`` when ``data`` starts with a complete, valid
    header (bytes after it are left alone: ``length`` says where it ends);
    ``None`` when ``data`` is a valid start of a header that has not fully
    arrived; raises ``ProxyProtocolError`` as soon as ``data`` cannot be
    the start of a valid header.  ``mode`` is ``"v1"``, ``"v2"`` or
    ``"any"`` (either; never none: the spec forbids guessing).
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")
    data = bytes(data)
    if data[:1] == V2_SIGNATURE[:1] and mode != "v1":
        return _parse_v2(data)
    if data[:1] == _V1_PREFIX[:1] and mode != "v2":
        return _parse_v1(data)
    if not data:
        return None
    expected = {"v1": "a v1 line ('PROXY ...')", "v2": "the v2 signature",
                "any": "a PROXY protocol header"}[mode]
    raise ProxyProtocolError(f"expected {expected}, got {data[:16]!r}")


# -- version 1 -----------------------------------------------------------------


def _parse_v1(data: bytes) -> ProxyHeader | None:
    head = data[:V1_MAX_LENGTH]
    # The first CR or LF ends the line, and must be the start of a CRLF: the
    # spec does not tolerate a lone CR or LF as the end of the line.
    ends = [i for i in (head.find(b"\r"), head.find(b"\n")) if i >= 0]
    end = min(ends) if ends else -1
    if end >= 0 and head[end] == ord("\n"):
        raise ProxyProtocolError("v1 line ends with a bare LF (CRLF is required)")
    complete = end >= 0 and end + 1 < len(data)
    if complete and data[end + 1] != ord("\n"):
        raise ProxyProtocolError("v1 line has a bare CR (CRLF is required)")
    # A CR as the 107th byte: its LF would be the 108th.
    if end == V1_MAX_LENGTH - 1 or (not complete and len(data) >= V1_MAX_LENGTH):
        raise ProxyProtocolError(
            f"v1 line has no CRLF in its first {V1_MAX_LENGTH} bytes (too long)"
        )
    line = head[:end] if end >= 0 else head
    if line.startswith(b"PROXY UNKNOWN") and line[13:14] in (b"", b" "):
        # "The receiver must ignore anything presented before the CRLF."
        if not complete:
            return None
        return ProxyHeader(1, "PROXY", "UNKNOWN", None, None, (), end + 2)
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("v1 line is not US-ASCII") from None
    fields = text.split(" ")
    if not complete:
        _check_v1_prefix(fields)
        return None
    if fields[0] != "PROXY":
        raise ProxyProtocolError(f"v1 line does not start with 'PROXY ': {text[:16]!r}")
    length = end + 2
    if len(fields) < 2 or fields[1] not in ("TCP4", "TCP6"):
        protocol = fields[1] if len(fields) > 1 else ""
        raise ProxyProtocolError(f"v1 protocol must be TCP4, TCP6 or UNKNOWN, not {protocol!r}")
    if len(fields) != 6:
        raise ProxyProtocolError(
            "v1 line must be 'PROXY TCPn SRC DST SPORT DPORT' with exactly one space "
            f"between fields, got {len(fields)} fields"
        )
    family = fields[1]
    source_host = _v1_address(fields[2], family)
    destination_host = _v1_address(fields[3], family)
    source = (source_host, _v1_port(fields[4]))
    destination = (destination_host, _v1_port(fields[5]))
    return ProxyHeader(1, "PROXY", family, source, destination, (), length)


def _check_v1_prefix(fields: list[str]) -> None:
    """Raise if an incomplete v1 line can no longer become a valid one."""
    if not _V1_PREFIX.decode().startswith(fields[0]) or (
        len(fields) > 1 and fields[0] != "PROXY"
    ):
        raise ProxyProtocolError(f"v1 line does not start with 'PROXY ': {' '.join(fields)!r}")
    if len(fields) < 2:
        return
    protocol = fields[1]
    complete_fields = fields[1:-1]
    if not any(name.startswith(protocol) for name in ("TCP4", "TCP6", "UNKNOWN")) or (
        complete_fields and protocol not in ("TCP4", "TCP6")
    ):
        raise ProxyProtocolError(f"v1 protocol must be TCP4, TCP6 or UNKNOWN, not {protocol!r}")
    if len(fields) > 6:
        raise ProxyProtocolError("v1 line has more than 6 fields")
    for index, field in enumerate(fields[2:], start=2):
        last = index == len(fields) - 1
        if index < 4:
            if last:
                _check_address_prefix(field, protocol)
            else:
                _v1_address(field, protocol)
        elif last:
            _check_port_prefix(field)
        else:
            _v1_port(field)


_V4_CHARS = frozenset("0123456789.")
_V6_CHARS = frozenset("0123456789abcdefABCDEF:.")
# The longest textual forms: 255.255.255.255, and an IPv6 address with an
# IPv4 tail (ffff:...:ffff:255.255.255.255).
_V4_MAX, _V6_MAX = 15, 45


def _check_address_prefix(text: str, family: str) -> None:
    chars, limit = (_V4_CHARS, _V4_MAX) if family == "TCP4" else (_V6_CHARS, _V6_MAX)
    if len(text) > limit or not set(text) <= chars:
        raise ProxyProtocolError(f"v1 {family} address cannot start with {text!r}")


def _v1_address(text: str, family: str) -> str:
    """A complete v1 address field, checked for its family; in canonical form."""
    if family == "TCP4":
        parts = text.split(".")
        if len(parts) != 4 or not all(_decimal(part, 255) for part in parts):
            raise ProxyProtocolError(
                f"invalid v1 IPv4 address {text!r} (4 decimal numbers 0-255, no leading zeros)"
            )
        return text
    if not text or len(text) > _V6_MAX or not set(text) <= _V6_CHARS:
        raise ProxyProtocolError(f"invalid v1 IPv6 address {text!r}")
    try:
        return _host_text(ipaddress.IPv6Address(text))
    except ValueError:
        raise ProxyProtocolError(f"invalid v1 IPv6 address {text!r}") from None


def _decimal(text: str, limit: int) -> bool:
    """Whether ``text`` is a decimal number <= ``limit`` without leading zeros."""
    return (
        text.isascii() and text.isdigit() and len(text) <= len(str(limit))
        and (text == "0" or text[0] != "0") and int(text) <= limit
    )


def _v1_port(text: str) -> int:
    if not _decimal(text, 65535):
        raise ProxyProtocolError(f"invalid v1 port {text!r} (0-65535, no leading zeros)")
    return int(text)


def _check_port_prefix(text: str) -> None:
    if text and not (
        text.isascii() and text.isdigit() and len(text) <= 5 and (text == "0" or text[0] != "0")
        and int(text) <= 65535
    ):
        raise ProxyProtocolError(f"v1 port cannot start with {text!r}")


# -- version 2 -----------------------------------------------------------------


def _parse_v2(data: bytes) -> ProxyHeader | None:
    seen = data[: len(V2_SIGNATURE)]
    if seen != V2_SIGNATURE[: len(seen)]:
        raise ProxyProtocolError(f"not the v2 signature: {seen!r}")
    if len(data) > 12:
        version, command = data[12] >> 4, data[12] & 0xF
        if version != 2:
            raise ProxyProtocolError(f"v2 header with version {version} (only 2 exists)")
        if command not in _COMMANDS:
            raise ProxyProtocolError(f"v2 header with unknown command {command:#x}")
    if len(data) > 13:
        family, transport = data[13] >> 4, data[13] & 0xF
        if family not in _FAMILIES:
            raise ProxyProtocolError(f"v2 header with unknown address family {family:#x}")
        if transport not in _TRANSPORTS:
            raise ProxyProtocolError(f"v2 header with unknown transport {transport:#x}")
    if len(data) < _V2_FIXED:
        return None
    (block_length,) = struct.unpack_from("!H", data, 14)
    length = _V2_FIXED + block_length
    if len(data) < length:
        return None
    # Never a byte past the declared length: it belongs to the next protocol.
    block = data[_V2_FIXED:length]
    address_size = _ADDRESS_SIZE[family]
    if block_length < address_size:
        raise ProxyProtocolError(
            f"v2 {_FAMILIES[family]} header needs {address_size} address bytes, "
            f"its length allows {block_length}"
        )
    tlvs = _parse_tlvs(data[:length], address_size)
    name = _NAMES.get((family, transport), "UNSPEC")
    source = destination = None
    if _COMMANDS[command] == "PROXY" and name != "UNSPEC":
        source, destination = _v2_addresses(block, family)
    return ProxyHeader(2, _COMMANDS[command], name, source, destination, tlvs, length)


def _host_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address in the form the kernel gives it (``getpeername()``, ``inet_ntop``).

    Not ``ipaddress``'s: its text for an IPv4-mapped IPv6 address changed in
    Python 3.13 (``::ffff:c000:201`` became ``::ffff:192.0.2.1``, the
    kernel's), and the client address a handler sees must not depend on the
    interpreter.
    """
    if address.version == 4:
        return str(address)
    return socket.inet_ntop(socket.AF_INET6, address.packed)


def _v2_addresses(block: bytes, family: int) -> tuple[Any, Any]:
    if family == 0x3:
        return _unix_path(block[:_UNIX_PATH]), _unix_path(block[_UNIX_PATH : 2 * _UNIX_PATH])
    size = 4 if family == 0x1 else 16
    make = ipaddress.IPv4Address if family == 0x1 else ipaddress.IPv6Address
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * size)
    return (
        (_host_text(make(block[:size])), source_port),
        (_host_text(make(block[size : 2 * size])), destination_port),
    )


def _unix_path(raw: bytes) -> str | bytes:
    """A 108-byte, NUL-padded sun_path: a ``str`` path, or ``bytes`` if abstract (leading NUL)."""
    if raw[:1] == b"\x00" and raw.strip(b"\x00"):
        return raw.rstrip(b"\x00")
    return os.fsdecode(raw.split(b"\x00", 1)[0])


def _parse_tlvs(header: bytes, address_size: int) -> tuple[tuple[int, bytes], ...]:
    """The TLVs after the address block; checks a CRC32C TLV against ``header``."""
    tlvs: list[tuple[int, bytes]] = []
    offset = _V2_FIXED + address_size
    crc_at: int | None = None
    while offset < len(header):
        if len(header) - offset < 3:
            raise ProxyProtocolError("v2 TLV header runs past the end of the header")
        kind, size = header[offset], struct.unpack_from("!H", header, offset + 1)[0]
        start, offset = offset + 3, offset + 3 + size
        if offset > len(header):
            raise ProxyProtocolError(
                f"v2 TLV of type {kind:#04x} declares {size} bytes, "
                f"{len(header) - start} are left in the header"
            )
        value = header[start:offset]
        if kind == PP2_TYPE_NOOP:
            continue
        if kind == PP2_TYPE_CRC32C:
            if size != 4 or crc_at is not None:
                raise ProxyProtocolError("v2 header needs exactly one 4-byte CRC32C TLV")
            crc_at = start
        tlvs.append((kind, value))
    if crc_at is not None:
        (sent,) = struct.unpack_from("!I", header, crc_at)
        zeroed = header[:crc_at] + b"\x00\x00\x00\x00" + header[crc_at + 4 :]
        if crc32c(zeroed) != sent:
            raise ProxyProtocolError("v2 header fails its CRC32C check")
    return tuple(tlvs)


# -- CRC32c (Castagnoli, RFC 4960 appendix B) ----------------------------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """The CRC32c of ``data``, the checksum a v2 ``PP2_TYPE_CRC32C`` TLV carries.

    Pure Python, one table lookup per byte (zlib's crc32 uses another
    polynomial), paid only by headers that carry the TLV: 285 us per
    1000 bytes, so about 10 us for a usual header, measured with
    ``python -m timeit -s "from minisocketserver.proxy_protocol import crc32c"
    -s "d = bytes(1000)" "crc32c(d)"`` at commit 7eefe7a, on a 2-core
    machine under a load average of 8.
    """
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- encoders: for clients, proxies written in Python, and the tests -----------


def _host_family(host: str) -> str:
    return "TCP4" if ipaddress.ip_address(host).version == 4 else "TCP6"


def encode_v1(source: tuple[str, int] | None, destination: tuple[str, int] | None) -> bytes:
    """The v1 line for a TCP connection from ``source`` to ``destination``.

    ``None`` for either gives ``PROXY UNKNOWN\\r\\n``.  Both hosts must be of
    one family; hosts are written in canonical form (the kernel's: ``inet_ntop``).
    """
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    family = _host_family(source[0])
    if _host_family(destination[0]) != family:
        raise ValueError("source and destination must both be IPv4 or both IPv6")
    hosts = [_host_text(ipaddress.ip_address(host)) for host in (source[0], destination[0])]
    for port in (source[1], destination[1]):
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
    return (f"PROXY {family} {hosts[0]} {hosts[1]} {source[1]} {destination[1]}\r\n"
            .encode("ascii"))


def encode_v2(
    source: Any | None = None,
    destination: Any | None = None,
    *,
    command: str = "PROXY",
    family: str | None = None,
    tlvs: tuple[tuple[int, bytes], ...] | list[tuple[int, bytes]] = (),
    crc: bool = False,
) -> bytes:
    """The v2 header for a connection from ``source`` to ``destination``.

    ``family`` is one of ``ProxyHeader.family``'s v2 names; by default it
    follows ``source``: ``(host, port)`` gives ``TCP4``/``TCP6``, a path
    (``str``/``bytes``) ``UNIX``, ``None`` ``UNSPEC``.  ``command`` is
    ``"PROXY"`` or ``"LOCAL"``.  ``tlvs`` are appended as given; ``crc``
    appends a ``PP2_TYPE_CRC32C`` TLV holding the header's checksum.
    """
    if command not in ("PROXY", "LOCAL"):
        raise ValueError(f"command must be 'PROXY' or 'LOCAL', not {command!r}")
    if family is None:
        if source is None:
            family = "UNSPEC"
        elif isinstance(source, (str, bytes)):
            family = "UNIX"
        else:
            family = _host_family(source[0])
    family_code, transport_code = _CODES.get(family, (0, 0))
    if family != "UNSPEC" and family not in _CODES:
        raise ValueError(f"unknown v2 family {family!r}")
    if family_code == 0x3:
        block = _unix_field(source) + _unix_field(destination)
    elif family_code:
        size = 4 if family_code == 0x1 else 16
        if source is None or destination is None:
            raise ValueError(f"{family} needs a source and a destination")
        hosts = [ipaddress.ip_address(address[0]).packed for address in (source, destination)]
        if any(len(host) != size for host in hosts):
            raise ValueError(f"{family} addresses must be IPv{4 if size == 4 else 6}")
        block = hosts[0] + hosts[1] + struct.pack("!HH", source[1], destination[1])
    else:
        block = b""
    for kind, value in tlvs:
        block += struct.pack("!BH", kind, len(value)) + bytes(value)
    crc_at = None
    if crc:
        crc_at = _V2_FIXED + len(block) + 3
        block += struct.pack("!BH", PP2_TYPE_CRC32C, 4) + b"\x00\x00\x00\x00"
    if len(block) > 0xFFFF:
        raise ValueError("a v2 header holds at most 65535 bytes after its first 16")
    version_command = 0x20 | (0x1 if command == "PROXY" else 0x0)
    header = (V2_SIGNATURE + bytes([version_command, family_code << 4 | transport_code])
              + struct.pack("!H", len(block)) + block)
    if crc_at is not None:
        header = header[:crc_at] + struct.pack("!I", crc32c(header)) + header[crc_at + 4 :]
    return header


def _unix_field(path: Any) -> bytes:
    raw = b"" if path is None else os.fsencode(path)
    if len(raw) > _UNIX_PATH:
        raise ValueError(f"a Unix path holds at most {_UNIX_PATH} bytes")
    return raw.ljust(_UNIX_PATH, b"\x00")


# -- the admission stage ---------------------------------------------------------

#: What the stage peeks at first: the spec's smallest segment every host
#: must take (a 576-byte datagram less its headers), which holds any v1
#: line and usual v2 headers; once a longer v2 header has told its length,
#: the rest of it at once.
_PEEK_SIZE = 536
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_INET_FAMILIES = frozenset({"TCP4", "TCP6", "UDP4", "UDP6"})

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyStats:
    """How a server's connections fared with their PROXY headers; read from any thread.

    Read-only properties (counts since the server was built):
        accepted   connections whose header was complete and valid.
        refused    ``{reason: count}``: ``"not_allowed"`` (the peer is not
                   in ``proxy_allow_from``), ``"malformed"`` (not a valid
                   header, a v1 line past 107 characters included), ``"timeout"``
                   (no complete header by ``proxy_header_timeout``),
                   ``"closed"`` (the peer closed or reset first).

    Counted on the loop's thread (in a forking server, the parent's), and
    read from any thread: the lock makes each read whole.
    """

    REASONS = ("not_allowed", "malformed", "timeout", "closed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted = 0
        self._refused = dict.fromkeys(self.REASONS, 0)

    def record_accepted(self) -> None:
        with self._lock:
            self._accepted += 1

    def record_refused(self, reason: str) -> None:
        with self._lock:
            self._refused[reason] = self._refused.get(reason, 0) + 1

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    @property
    def refused(self) -> dict[str, int]:
        with self._lock:
            return dict(self._refused)

    def __repr__(self) -> str:
        return f"ProxyStats(accepted={self.accepted}, refused={self.refused})"


class _Proxied:
    """One connection's way through the stage: the header so far, then the header.

    Its fields are written on the loop's thread only (the stage, and
    ``process_request``), before the connection goes to a worker.
    """

    __slots__ = ("buffer", "header", "verified")

    def __init__(self) -> None:
        self.buffer = b""  # header bytes taken from the socket while incomplete
        self.header: ProxyHeader | None = None
        self.verified = False


class ProxyProtocolMixIn(AdmissionMixIn, _StreamServerBase):
    """Read each connection's PROXY header in the loop; go on with the client it names.

    Put it first in the bases, before ``TLSMixIn`` and the concurrency
    mixin (after ``PreforkMixIn``)::

        class App(ProxyProtocolMixIn, ThreadPoolTCPServer): ...
        class App(ProxyProtocolMixIn, TLSMixIn, ThreadingMixIn, TCPServer): ...

    Every stream model works: the header is read in the loop, never in a
    worker, so a client that sends nothing, or ``PROX`` and nothing more,
    holds a descriptor and a timer until ``proxy_header_timeout``, no
    thread, pool slot or child.  With TLS the header (sent in clear) comes
    first, then the connection waits, held the same way, for its
    ClientHello under ``handshake_timeout`` counted from the accept.

    Class variables:
        proxy_protocol         ``"v1"``, ``"v2"`` or ``"any"`` (either; a
                               connection without a header is always refused).
        proxy_allow_from       the peers that may send a header: CIDR strings
                               or ``ipaddress`` networks; IPv4-mapped IPv6
                               peers are matched as IPv4.  Checked at accept,
                               before any wait.  Unix-socket peers are let
                               through: the socket file's permissions guard them.
        proxy_header_timeout   seconds from accept to a complete header.

    Instance variables:
        proxy_stats   a ``ProxyStats``: headers accepted, refusals by reason.

    Methods for handlers: ``proxy_header(request)``.  Pipeline, as seen by
    subclasses: ``verify_request`` runs once, after the header, with the
    original client address; ``process_request``, ``finish_request`` and
    the handler get that address too.
    """

    #: Which versions of the protocol a connection may start with.
    proxy_protocol: str = "any"
    #: Peers allowed to speak the PROXY protocol (default: this machine).
    proxy_allow_from: Sequence[str | _Network] = ("127.0.0.0/8", "::1/128")
    #: Seconds from accept to a complete header (the spec: "at least 3
    #: seconds to cover a TCP retransmit").
    proxy_header_timeout: float | None = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build the server; ``ValueError`` for an unknown ``proxy_protocol`` or network."""
        if self.proxy_protocol not in _MODES:
            raise ValueError(f"proxy_protocol must be one of {_MODES}, "
                             f"not {self.proxy_protocol!r}")
        self.proxy_stats = ProxyStats()
        # Connection descriptor -> its _Proxied, from accept to close_request.
        # Keyed by descriptor, not socket, because TLS replaces the socket
        # object on its way (an SSLSocket on the same descriptor).  A new
        # entry replaces any older one at accept, so a descriptor number
        # reused never inherits a header.  The lock: the loop adds entries
        # while workers read them (proxy_header) and drop them (close_request).
        self._proxied: dict[int, _Proxied] = {}
        self._proxied_lock = threading.Lock()
        self._allowed: tuple[Any, tuple[_Network, ...]] | None = None
        self._allowed_networks()  # a bad network fails here, not at the first accept
        super().__init__(*args, **kwargs)

    # -- for handlers -----------------------------------------------------------

    def proxy_header(self, request: Any) -> ProxyHeader | None:
        """The header ``request`` came with (from any thread), or ``None``.

        ``None`` for a request that did not come through the stage (a
        ``process_request`` called by other code).  ``request`` may be the
        handler's ``self.request`` (an ``SSLSocket`` with TLS): the
        descriptor is what identifies it.
        """
        try:
            fd = request.fileno()
        except (OSError, ValueError):
            return None
        with self._proxied_lock:
            record = self._proxied.get(fd)
        return None if record is None else record.header

    # -- the pipeline ------------------------------------------------------------

    def _take_request(self, request: Any, client_address: Any, *, admitted: bool = False) -> None:
        """Take a request on; ``verify_request`` must wait for the header, which names the client.

        Fresh from accept (``_handle_request_noblock``): the allow-list,
        then ``admit_request`` holds the connection in the loop; where no
        loop can hold it (``handle_request()``; a descriptor beyond what
        ``select()`` can watch) the header is read right here, on the
        loop's thread, bounded by ``proxy_header_timeout``.  Once the
        header is in (the admission stage calls back with
        ``admitted=True``): the pipeline from ``verify_request`` on, with
        the client's address, once; ``admit_request`` lets it through.  A
        later stage coming back (the multiplexing TLS handshake, done)
        resumes at ``process_request``, as it would without this stage.
        So every hook from ``verify_request`` on is called as often as
        without a PROXY header, and sees the client's address.
        """
        record = self._proxy_record(request) if admitted else None
        if record is not None and not record.verified:
            record.verified = True
            super()._take_request(request, client_address)
            return
        if admitted:
            super()._take_request(request, client_address, admitted=True)
            return
        # Fresh from accept.  Owned as BaseServer._take_request owns a request
        # (see HandOff): admit_request claims it when the stage holds it.
        handoff = self._handoff = HandOff(request)
        original = None
        try:
            original = self._proxy_arrive(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            if handoff.take_back():
                self.shutdown_request(request)
        except BaseException:
            if handoff.take_back():
                self.shutdown_request(request)
            raise
        finally:
            self._handoff = None
        if original is not None:
            self._take_request(request, original, admitted=True)

    def _proxy_arrive(self, request: Any, client_address: Any) -> Any:
        """A connection fresh from accept: the client's address if it may go on now.

        ``None`` when it was refused, or is held in the loop until its
        header is in (``first_bytes_arrived`` resumes it).
        """
        if not self._proxy_peer_allowed(client_address):
            logger.debug("%s: %s may not send PROXY headers (proxy_allow_from)",
                         type(self).__name__, client_address)
            self._proxy_refuse(request, client_address, "not_allowed")
            return None
        arriving = _Proxied()
        with self._proxied_lock:
            self._proxied[request.fileno()] = arriving
        if not self.admit_request(request, client_address):
            return None
        return self._proxy_read_blocking(request, client_address, arriving)

    def admit_request(self, request: Any, client_address: Any) -> bool:
        """Called by the loop after ``verify_request``: hold a connection whose header has not come.

        Once the header is in, the stage has held the connection already
        (with any later stage's wait, TLS's, in the same hold): go on.
        """
        record = self._proxy_record(request)
        if record is not None and record.header is not None:
            return True
        return super().admit_request(request, client_address)

    def admission_time_limit(self) -> float | None:
        """Called by ``admit_request``: the header's time, ``proxy_header_timeout``."""
        return self.proxy_header_timeout

    def first_bytes_arrived(self, request: Any, client_address: Any) -> Any:
        """Called by the admission stage when a held connection is readable: read the header.

        Incomplete: the bytes seen are all the header's, so they are taken
        (the socket is then readable again only for new bytes, or the end)
        and the connection stays held.  Complete: exactly the header's
        bytes are taken, and the stages after this one (TLS) get the
        client's address, with their own time limit from the accept.
        """
        record = self._proxy_record(request)
        if record is None:
            return super().first_bytes_arrived(request, client_address)
        header = record.header
        if header is None:
            header = self._proxy_advance(request, client_address, record, _DONTWAIT)
            if header is None:
                return KEEP_WAITING
            self.extend_admission(request, super().admission_time_limit())
        return super().first_bytes_arrived(request, _original_address(header, client_address))

    def admission_refused(self, request: Any, client_address: Any, reason: str) -> None:
        """Called by the admission stage: count and close a connection that failed its header.

        Once the header is in, a refusal is a later stage's (TLS never got
        its ClientHello), and goes to it, with the client's address.
        """
        record = self._proxy_record(request)
        if record is not None and record.header is not None:
            original = _original_address(record.header, client_address)
            super().admission_refused(request, original, reason)
            return
        if reason in ("timeout", "closed"):
            partial = len(record.buffer) if record is not None else 0
            logger.debug("%s: %s: no complete PROXY header (%s after %d bytes)",
                         type(self).__name__, client_address, reason, partial)
        self._proxy_refuse(request, client_address, reason)

    def close_request(self, request: Any) -> None:
        """Forget the connection's header, then close it (on whichever thread closes it).

        Here rather than in ``shutdown_request``: a forking parent only
        closes its copy of each connection.
        """
        try:
            fd = request.fileno()
        except (OSError, ValueError):
            fd = -1
        if fd != -1:
            with self._proxied_lock:
                self._proxied.pop(fd, None)
        super().close_request(request)

    # -- the header, byte by byte ------------------------------------------------

    def _proxy_record(self, request: Any) -> _Proxied | None:
        try:
            fd = request.fileno()
        except (OSError, ValueError):
            return None
        with self._proxied_lock:
            return self._proxied.get(fd)

    def _proxy_advance(
        self, request: socket.socket, client_address: Any, record: _Proxied, flags: int
    ) -> ProxyHeader | None:
        """Peek at what has come, take the header's bytes of it; the header once complete.

        Raises ``AdmissionRefused`` for a malformed header or a connection
        that ended first.  Only ``parse_header``'s verdict decides what is
        taken: a byte past the header is never read.
        """
        try:
            chunk = request.recv(_peek_size(record.buffer), socket.MSG_PEEK | flags)
        except (BlockingIOError, TimeoutError):
            return None  # nothing new yet (spurious readiness, or the blocking wait ran out)
        except OSError:
            chunk = b""  # reset
        if not chunk:
            raise AdmissionRefused("closed")
        try:
            header = parse_header(record.buffer + chunk, self.proxy_protocol)
        except ProxyProtocolError as exc:
            logger.debug("%s: %s: malformed PROXY header: %s",
                         type(self).__name__, client_address, exc)
            raise AdmissionRefused("malformed") from None
        wanted = len(chunk) if header is None else header.length - len(record.buffer)
        try:
            taken = request.recv(wanted, _DONTWAIT)
        except OSError:
            taken = b""
        if len(taken) != wanted:  # peeked bytes are there to take, unless reset in between
            raise AdmissionRefused("closed")
        if header is None:
            record.buffer += taken
            return None
        record.header, record.buffer = header, b""
        self.proxy_stats.record_accepted()
        return header

    def _proxy_read_blocking(
        self, request: socket.socket, client_address: Any, record: _Proxied
    ) -> Any:
        """Read the header on this thread (no loop to hold the connection in), bounded.

        Returns the client's address, or ``None`` after refusing the request.
        """
        limit = self.proxy_header_timeout
        deadline = None if limit is None else time.monotonic() + limit
        previous = request.gettimeout()
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise AdmissionRefused("timeout")
                request.settimeout(remaining)
                header = self._proxy_advance(request, client_address, record, 0)
                if header is not None:
                    return _original_address(header, client_address)
        except AdmissionRefused as refusal:
            self.admission_refused(request, client_address, refusal.reason)
            return None
        finally:
            if request.fileno() != -1:
                request.settimeout(previous)

    def _proxy_refuse(self, request: Any, client_address: Any, reason: str) -> None:
        self.proxy_stats.record_refused(reason)
        self.shutdown_request(request)

    def _allowed_networks(self) -> tuple[_Network, ...]:
        """``proxy_allow_from`` as networks, parsed again only when it is replaced."""
        allowed = self.proxy_allow_from
        cached = self._allowed
        if cached is None or cached[0] is not allowed:
            if isinstance(allowed, str):
                allowed = (allowed,)  # one CIDR string, not a sequence of characters
            networks = tuple(ipaddress.ip_network(net) for net in allowed)
            cached = self._allowed = (self.proxy_allow_from, networks)
        return cached[1]

    def _proxy_peer_allowed(self, client_address: Any) -> bool:
        """Whether the peer that connected may send a header (loop thread, at accept)."""
        if not isinstance(client_address, tuple):
            return True  # a Unix-socket peer: the socket file's permissions decide
        try:
            address = ipaddress.ip_address(client_address[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._allowed_networks())


def _peek_size(taken: bytes) -> int:
    """How much to peek at next: the rest of a v2 header whose length is known, or 536."""
    if len(taken) >= _V2_FIXED and taken.startswith(V2_SIGNATURE):
        block_length = int.from_bytes(taken[14:16], "big")
        return max(_PEEK_SIZE, _V2_FIXED + block_length - len(taken))
    return _PEEK_SIZE


def _original_address(header: ProxyHeader, real: Any) -> Any:
    """The address the pipeline goes on with: the client's, or the real peer's.

    The real peer for ``LOCAL`` (the proxy speaking for itself), ``UNKNOWN``
    and ``UNSPEC`` (the spec: use the connection's own addresses), and for
    Unix sources, which have no ``(host, port)`` for a TCP server's handlers
    and logs (they are in ``proxy_header(request)``).
    """
    if header.command == "PROXY" and header.family in _INET_FAMILIES:
        return header.source
    return real
