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
CRLF in its first 107 bytes, a client that stalls mid-header (closed at
``proxy_header_timeout``) or closes mid-header is logged at debug, counted
in ``server.proxy_stats`` by reason, and closed: it never reaches the
handler, ``verify_request`` nor ``handle_error``.

Parsing choices, where the spec leaves room (each one tested):

* Partial headers are waited for (the spec's recommendation: "be
  tolerant"), under the deadline; an invalid prefix is refused as soon as
  it is seen ("abort the connection as soon as possible").
* No guessing: ``proxy_protocol = "any"`` accepts either version, but a
  connection without a header is refused (the spec forbids servers that
  guess whether a header is there).
* v2 TLVs: every TLV but ``PP2_TYPE_NOOP`` is kept, in order, in
  ``ProxyHeader.tlvs`` (types the spec defines and unknown ones alike:
  this module interprets none of them, the handler may); a TLV running
  past the header is an error; a ``PP2_TYPE_CRC32C`` TLV is checked (a
  mismatch refuses the connection) and kept.
* v2 address block: its size is the family's (12, 36, 216 or 0 bytes) and
  the 16-bit length must cover it; the rest is TLVs.  With an ``UNSPEC``
  family or transport, addresses are ``None``.  ``LOCAL`` headers are
  parsed the same way, and report no addresses.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
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
#: addresses and ports): a line with no CRLF in its first 107 bytes is invalid.
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
    if not complete and len(data) >= V1_MAX_LENGTH:
        raise ProxyProtocolError(
            f"v1 line has no CRLF in its first {V1_MAX_LENGTH} bytes (too long)"
        )
    line = head[:end] if end >= 0 else head
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
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        # "The receiver must ignore anything presented before the CRLF."
        return ProxyHeader(1, "PROXY", "UNKNOWN", None, None, (), length)
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
    if protocol == "UNKNOWN" and len(fields) > 2:
        return  # anything may follow, up to the CRLF
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
        return ipaddress.IPv6Address(text).compressed
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


def _v2_addresses(block: bytes, family: int) -> tuple[Any, Any]:
    if family == 0x3:
        return _unix_path(block[:_UNIX_PATH]), _unix_path(block[_UNIX_PATH : 2 * _UNIX_PATH])
    size = 4 if family == 0x1 else 16
    make = ipaddress.IPv4Address if family == 0x1 else ipaddress.IPv6Address
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * size)
    return (
        (make(block[:size]).compressed, source_port),
        (make(block[size : 2 * size]).compressed, destination_port),
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
    polynomial): about 0.1 us a byte, so a few microseconds for a usual
    header (``python -m timeit`` figures in tests/test_proxy_protocol_parser.py),
    paid only by headers that carry the TLV.
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
    one family; hosts are written in canonical form (``ipaddress``'s).
    """
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    family = _host_family(source[0])
    if _host_family(destination[0]) != family:
        raise ValueError("source and destination must both be IPv4 or both IPv6")
    hosts = [ipaddress.ip_address(host).compressed for host in (source[0], destination[0])]
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
