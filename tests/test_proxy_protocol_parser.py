"""The PROXY protocol parser, by property and by example (issue 13, item 2).

``parse_header`` is a pure function, so hypothesis can drive it hard
without a socket: every header the encoders make parses back to the same
fields, whatever follows it; every prefix of one is "incomplete", never an
error; and arbitrary bytes, or valid headers with a byte changed, never
raise anything but ``ProxyProtocolError`` nor claim a header longer than
what was given or than the header declares.  The examples after them pin
each rule of HAProxy's doc/proxy-protocol.txt, one test per rule.

Cost of one parse (2-core CI machine; pure Python)::

    python -m timeit -s "from minisocketserver.proxy_protocol import parse_header, encode_v1" \\
        -s "h = encode_v1(('192.0.2.7', 56324), ('198.51.100.1', 443))" "parse_header(h)"
    python -m timeit -s "from minisocketserver.proxy_protocol import parse_header, encode_v2" \\
        -s "h = encode_v2(('192.0.2.7', 56324), ('198.51.100.1', 443), crc=True)" "parse_header(h)"
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisocketserver.proxy_protocol import (
    PP2_TYPE_ALPN,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    crc32c,
    encode_v1,
    encode_v2,
    parse_header,
)

# Pure functions: many examples cost little (the CI profile's 20 are for sockets).
MANY = settings(max_examples=200)

ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


def _inet(hosts: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, int]]:
    return st.tuples(hosts, ports)


v1_headers = st.one_of(
    st.tuples(st.just("TCP4"), _inet(ipv4), _inet(ipv4)),
    st.tuples(st.just("TCP6"), _inet(ipv6), _inet(ipv6)),
    st.tuples(st.just("UNKNOWN"), st.none(), st.none()),
)

unix_paths = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=108)
tlv_lists = st.lists(
    st.tuples(st.integers(0, 255).filter(lambda t: t != PP2_TYPE_CRC32C),
              st.binary(max_size=40)),
    max_size=4,
)


@st.composite
def v2_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    """An encoded v2 header and the ``ProxyHeader`` it must parse to."""
    family = draw(st.sampled_from(["TCP4", "UDP4", "TCP6", "UDP6", "UNIX", "UNIX_DGRAM",
                                   "UNSPEC"]))
    command = draw(st.sampled_from(["PROXY", "LOCAL"]))
    if family in ("TCP4", "UDP4"):
        source, destination = draw(_inet(ipv4)), draw(_inet(ipv4))
    elif family in ("TCP6", "UDP6"):
        source, destination = draw(_inet(ipv6)), draw(_inet(ipv6))
    elif family.startswith("UNIX"):
        source, destination = draw(unix_paths), draw(unix_paths)
    else:
        source = destination = None
    tlvs = draw(tlv_lists)
    crc = draw(st.booleans())
    encoded = encode_v2(source, destination, command=command, family=family, tlvs=tlvs, crc=crc)
    kept = [(kind, value) for kind, value in tlvs if kind != PP2_TYPE_NOOP]
    if crc:
        kept.append((PP2_TYPE_CRC32C, encoded[-4:]))
    addressed = command == "PROXY" and family != "UNSPEC"
    expected = ProxyHeader(
        2, command, family,
        _canonical(source) if addressed else None,
        _canonical(destination) if addressed else None,
        tuple(kept), len(encoded),
    )
    return encoded, expected


def _canonical(address: object) -> object:
    if isinstance(address, tuple):
        # The kernel's text (inet_ntop), on every Python: ipaddress's text
        # for an IPv4-mapped address changed in 3.13.
        packed = ipaddress.ip_address(address[0]).packed
        family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
        return (socket.inet_ntop(family, packed), address[1])
    return address


# -- properties ------------------------------------------------------------------


@MANY
@given(v1_headers, st.binary(max_size=64))
def test_every_v1_header_round_trips_and_leaves_what_follows(
    fields: tuple[str, object, object], payload: bytes
) -> None:
    family, source, destination = fields
    encoded = encode_v1(source, destination)  # type: ignore[arg-type]
    for mode in ("v1", "any"):
        header = parse_header(encoded + payload, mode)
        assert header is not None
        assert (header.version, header.command, header.family) == (1, "PROXY", family)
        assert header.source == _canonical(source)
        assert header.destination == _canonical(destination)
        assert header.length == len(encoded)


@MANY
@given(v2_headers(), st.binary(max_size=64))
def test_every_v2_header_round_trips_and_leaves_what_follows(
    made: tuple[bytes, ProxyHeader], payload: bytes
) -> None:
    encoded, expected = made
    assert parse_header(encoded + payload, "v2") == expected
    assert parse_header(encoded + payload, "any") == expected


@MANY
@given(st.one_of(v1_headers.map(lambda f: encode_v1(f[1], f[2])),  # type: ignore[arg-type]
                 v2_headers().map(lambda made: made[0])))
def test_every_prefix_of_a_valid_header_is_incomplete_never_an_error(encoded: bytes) -> None:
    for size in range(len(encoded)):
        assert parse_header(encoded[:size]) is None, encoded[:size]


def _mutations() -> st.SearchStrategy[bytes]:
    """Valid headers with one byte replaced, bytes cut, or bytes inserted."""
    valid = st.one_of(v1_headers.map(lambda f: encode_v1(f[1], f[2])),  # type: ignore[arg-type]
                      v2_headers().map(lambda made: made[0]))

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data)))
            how = draw(st.sampled_from(["replace", "delete", "insert"]))
            if how == "insert" or at == len(data):
                data[at:at] = draw(st.binary(min_size=1, max_size=3))
            elif how == "replace":
                data[at] = draw(st.integers(0, 255))
            else:
                del data[at]
        return bytes(data) + draw(st.binary(max_size=8))

    return mutate()


@MANY
@given(st.one_of(st.binary(max_size=300), _mutations(),
                 st.binary(max_size=40).map(lambda b: b"PROXY " + b),
                 st.binary(max_size=60).map(lambda b: V2_SIGNATURE + b"\x21" + b)),
       st.sampled_from(["v1", "v2", "any"]))
def test_arbitrary_bytes_never_crash_nor_read_past_the_header(data: bytes, mode: str) -> None:
    try:
        header = parse_header(data, mode)
    except ProxyProtocolError:
        return
    if header is None:
        return
    assert header.length <= len(data)
    if header.version == 2:
        (declared,) = struct.unpack_from("!H", data, 14)
        assert header.length == 16 + declared
    else:
        assert header.length <= 107 and data[header.length - 2 : header.length] == b"\r\n"
    # What follows the header never changes the verdict: it was not read.
    assert parse_header(data[: header.length], mode) == header
    assert parse_header(data[: header.length] + b"\xff" * 200, mode) == header


# -- version 1, rule by rule ----------------------------------------------------------


def _error(data: bytes, mode: str = "any") -> str:
    with pytest.raises(ProxyProtocolError) as caught:
        parse_header(data, mode)
    return str(caught.value)


def test_v1_the_spec_example() -> None:
    header = parse_header(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n")
    assert header == ProxyHeader(1, "PROXY", "TCP4", ("192.168.0.1", 56324),
                                 ("192.168.0.11", 443), (), 47)


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 010.0.0.1 10.0.0.2 1 2\r\n",
    b"PROXY TCP4 10.0.0.1 10.00.0.2 1 2\r\n",
    b"PROXY TCP4 10.0.0.1 10.0.0.2 01 2\r\n",
    b"PROXY TCP4 10.0.0.1 10.0.0.2 1 00\r\n",
])
def test_v1_leading_zeros_are_refused(line: bytes) -> None:
    assert "leading zeros" in _error(line)


def test_v1_a_leading_zero_port_is_refused_before_the_crlf() -> None:
    assert "port" in _error(b"PROXY TCP4 10.0.0.1 10.0.0.2 01")


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\n",
    b"PROXY UNKNOWN\n",
    b"PROXY TCP4 10.0.0.1\n10.0.0.2 1 2\r\n",
])
def test_v1_a_bare_lf_is_refused(line: bytes) -> None:
    assert "bare LF" in _error(line)


def test_v1_a_bare_cr_is_refused() -> None:
    assert "bare CR" in _error(b"PROXY UNKNOWN a\rb\r\n")


def test_v1_a_cr_at_the_end_of_what_came_is_incomplete() -> None:
    assert parse_header(b"PROXY UNKNOWN\r") is None


def test_v1_the_longest_line_is_107_bytes() -> None:
    longest = (b"PROXY UNKNOWN " + b":".join([b"ffff"] * 8) + b" "
               + b":".join([b"ffff"] * 8) + b" 65535 65535\r\n")
    assert len(longest) == 107
    header = parse_header(longest)
    assert header is not None and header.length == 107


def test_v1_a_108_byte_line_is_refused_as_soon_as_107_bytes_came() -> None:
    line = b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n"
    assert len(line) == 108
    assert "107" in _error(line)
    assert "107" in _error(line[:107])  # no need to wait for the 108th byte
    assert parse_header(line[:106]) is None


def test_v1_unknown_ignores_the_rest_of_the_line() -> None:
    header = parse_header(b"PROXY UNKNOWN whatever is here 1 2 3\r\nDATA")
    assert header == ProxyHeader(1, "PROXY", "UNKNOWN", None, None, (), 38)
    assert parse_header(b"PROXY UNKNOWN\r\n") == ProxyHeader(
        1, "PROXY", "UNKNOWN", None, None, (), 15)
    # Anything: not even US-ASCII is asked of it.
    assert parse_header(b"PROXY UNKNOWN \xff\xfe\r\n") == ProxyHeader(
        1, "PROXY", "UNKNOWN", None, None, (), 18)
    assert parse_header(b"PROXY UNKNOWN \xff") is None


@pytest.mark.parametrize("line, message", [
    (b"PROXY TCP4 10.0.0.1  10.0.0.2 1 2\r\n", "one space"),  # two spaces
    (b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2 \r\n", "one space"),  # trailing space
    (b"PROXY  TCP4 10.0.0.1 10.0.0.2 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
    (b"PROXY TCP4 10.0.0.1 10.0.0.2 1\r\n", "one space"),
    (b"PROXY TCP5 10.0.0.1 10.0.0.2 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
    (b"PROXY UNKNOWNX\r\n", "TCP4, TCP6 or UNKNOWN"),
    (b"PROXY TCP4 ::1 ::1 1 2\r\n", "IPv4"),
    (b"PROXY TCP6 10.0.0.1 10.0.0.2 1 2\r\n", "IPv6"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "IPv6"),
    (b"PROXY TCP4 10.0.0.256 10.0.0.2 1 2\r\n", "IPv4"),
    (b"PROXY TCP4 10.0.0.1 10.0.0.2 65536 2\r\n", "port"),
    (b"PROXY TCP4 10.0.0.1 10.0.0.2 +1 2\r\n", "port"),
    (b"PROXY\r\n", "TCP4, TCP6 or UNKNOWN"),
    (b"proxy TCP4 10.0.0.1 10.0.0.2 1 2\r\n", "PROXY"),
    (b"PROXY TCP4 10.0.0.1 10.0.0.\xb2 1 2\r\n", "ASCII"),
])
def test_v1_malformed_lines_are_refused(line: bytes, message: str) -> None:
    assert message in _error(line)


@pytest.mark.parametrize("start", [
    b"PROXX", b"PROXY TCP5", b"PROXY TCP4 10.0.0.1x", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3",
    b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00",  # HTTP and a TLS ClientHello: no header
])
def test_an_invalid_start_is_refused_before_the_line_ends(start: bytes) -> None:
    _error(start)


def test_v1_ipv6_addresses_come_back_canonical() -> None:
    header = parse_header(b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::FFFF:192.0.2.1 1 2\r\n")
    assert header is not None
    assert header.source == ("2001:db8::1", 1)
    # As getpeername() gives it on a dual-stack socket, on every Python
    # (ipaddress wrote ::ffff:c000:201 before 3.13).
    assert header.destination == ("::ffff:192.0.2.1", 2)


# -- version 2, rule by rule ----------------------------------------------------------


def _v2(ver_cmd: int, fam: int, block: bytes, length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + struct.pack("!H", size) + block


IPV4_BLOCK = bytes([192, 0, 2, 7, 198, 51, 100, 1]) + struct.pack("!HH", 56324, 443)


def test_v2_tcp4() -> None:
    header = parse_header(_v2(0x21, 0x11, IPV4_BLOCK) + b"payload")
    assert header == ProxyHeader(2, "PROXY", "TCP4", ("192.0.2.7", 56324),
                                 ("198.51.100.1", 443), (), 28)


@pytest.mark.parametrize("ver_cmd", [0x11, 0x31, 0x01, 0xF1])
def test_v2_only_version_2_is_accepted(ver_cmd: int) -> None:
    assert "version" in _error(_v2(ver_cmd, 0x11, IPV4_BLOCK))
    assert "version" in _error(_v2(ver_cmd, 0x11, IPV4_BLOCK)[:13])  # as soon as it is seen


@pytest.mark.parametrize("ver_cmd", [0x22, 0x2F])
def test_v2_unknown_commands_are_refused(ver_cmd: int) -> None:
    assert "command" in _error(_v2(ver_cmd, 0x11, IPV4_BLOCK))


@pytest.mark.parametrize("fam, message", [(0x41, "family"), (0x13, "transport"),
                                          (0x1F, "transport")])
def test_v2_unknown_families_and_transports_are_refused(fam: int, message: str) -> None:
    assert message in _error(_v2(0x21, fam, IPV4_BLOCK))


@pytest.mark.parametrize("fam, needed", [(0x11, 12), (0x21, 36), (0x31, 216)])
def test_v2_an_address_block_shorter_than_the_family_needs_is_refused(
    fam: int, needed: int
) -> None:
    assert f"needs {needed} address bytes" in _error(_v2(0x21, fam, bytes(needed - 1)))


def test_v2_the_length_is_honoured_never_read_past() -> None:
    # 12 address bytes declared, and a would-be TLV after them: not ours.
    data = _v2(0x21, 0x11, IPV4_BLOCK) + bytes([PP2_TYPE_ALPN, 0, 2]) + b"h2"
    header = parse_header(data)
    assert header is not None and header.length == 28 and header.tlvs == ()
    # A length declaring more than came: incomplete, whatever the bytes so far.
    assert parse_header(_v2(0x21, 0x11, IPV4_BLOCK, length=20)) is None


def test_v2_tlvs_are_kept_in_order_and_noop_is_skipped() -> None:
    data = encode_v2(("192.0.2.7", 1), ("198.51.100.1", 2),
                     tlvs=[(PP2_TYPE_ALPN, b"h2"), (PP2_TYPE_NOOP, b"\x00" * 5), (0xE0, b"mine")])
    header = parse_header(data)
    assert header is not None
    assert header.tlvs == ((PP2_TYPE_ALPN, b"h2"), (0xE0, b"mine"))
    assert header.tlv(0xE0) == b"mine" and header.tlv(0xE1) is None


@pytest.mark.parametrize("tail", [b"\x01", b"\x01\x00", b"\x01\x00\x03h2", b"\x01\xff\xffxx"])
def test_v2_a_tlv_running_past_the_header_is_refused(tail: bytes) -> None:
    assert "TLV" in _error(_v2(0x21, 0x11, IPV4_BLOCK + tail))


def test_v2_crc32c_is_checked() -> None:
    good = encode_v2(("192.0.2.7", 1), ("198.51.100.1", 2), tlvs=[(PP2_TYPE_ALPN, b"h2")],
                     crc=True)
    header = parse_header(good)
    assert header is not None and header.tlv(PP2_TYPE_CRC32C) == good[-4:]
    for at in (13, 20, len(good) - 6, len(good) - 1):  # the family, an address, a TLV, the CRC
        bad = bytearray(good)
        bad[at] ^= 0x01
        with pytest.raises(ProxyProtocolError):
            parse_header(bytes(bad))
    assert "CRC32C" in _error(good[:-1] + bytes([good[-1] ^ 1]))


def test_v2_a_crc32c_tlv_of_the_wrong_size_is_refused() -> None:
    assert "CRC32C" in _error(_v2(0x21, 0x11, IPV4_BLOCK + b"\x03\x00\x02ab"))


def test_crc32c_is_the_castagnoli_crc() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C
    assert crc32c(b"") == 0


def test_v2_local_and_unspec_report_no_addresses() -> None:
    local = parse_header(_v2(0x20, 0x11, IPV4_BLOCK))
    assert local is not None and local.command == "LOCAL" and local.source is None
    health_check = parse_header(_v2(0x20, 0x00, b""))
    assert health_check == ProxyHeader(2, "LOCAL", "UNSPEC", None, None, (), 16)
    unspec = parse_header(_v2(0x21, 0x10, IPV4_BLOCK))
    assert unspec is not None and unspec.family == "UNSPEC" and unspec.source is None


def test_v2_unix_addresses() -> None:
    header = parse_header(encode_v2("/run/client.sock", "/run/app.sock"))
    assert header is not None
    assert (header.family, header.source, header.destination) == (
        "UNIX", "/run/client.sock", "/run/app.sock")
    abstract = parse_header(encode_v2(b"\x00hidden", b"/run/app.sock"))
    assert abstract is not None and abstract.source == b"\x00hidden"


def test_v2_tcp6_and_udp() -> None:
    header = parse_header(encode_v2(("2001:db8::7", 1), ("2001:db8::1", 2), family="UDP6"))
    assert header is not None and header.family == "UDP6" and header.source == ("2001:db8::7", 1)


# -- modes -----------------------------------------------------------------------------


def test_modes_accept_only_their_version() -> None:
    v1 = encode_v1(("192.0.2.7", 1), ("198.51.100.1", 2))
    v2 = encode_v2(("192.0.2.7", 1), ("198.51.100.1", 2))
    assert "v1" in _error(v2, "v1")
    assert "v2 signature" in _error(v1, "v2")
    assert parse_header(v1, "v1") is not None and parse_header(v2, "v2") is not None
    with pytest.raises(ProxyProtocolError):
        parse_header(b"\r", "v1")
    with pytest.raises(ProxyProtocolError):
        parse_header(b"P", "v2")
    with pytest.raises(ValueError, match="mode"):
        parse_header(v1, "v3")


def test_nothing_yet_is_incomplete() -> None:
    for mode in ("v1", "v2", "any"):
        assert parse_header(b"", mode) is None


def test_encoders_refuse_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError):
        encode_v1(("192.0.2.7", 1), ("::1", 2))
    with pytest.raises(ValueError):
        encode_v1(("192.0.2.7", 70000), ("192.0.2.8", 2))
    with pytest.raises(ValueError):
        encode_v2(("192.0.2.7", 1), ("192.0.2.8", 2), family="TCP6")
    with pytest.raises(ValueError):
        encode_v2("x" * 109, "y")
    with pytest.raises(ValueError):
        encode_v2(command="NOPE")
