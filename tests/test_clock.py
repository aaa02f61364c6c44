"""ICMP timestamp packets for hautils.clock, without a network."""

from __future__ import annotations

import struct

import pytest

from hautils import clock


def test_request_has_a_valid_checksum_and_the_time_of_day():
    t = 1_796_291_784.519  # 2026-12-03 09:56:24.519 UTC
    pkt = clock.timestamp_request(0x1234, 7, t)
    assert len(pkt) == 20 and pkt[0] == 13
    assert clock._checksum(pkt) == 0  # a packet with its checksum sums to zero
    _ty, _co, _cs, ident, seq, orig, _r, _x = struct.unpack("!BBHHHIII", pkt)
    assert (ident, seq, orig) == (0x1234, 7, (9 * 3600 + 56 * 60 + 24) * 1000 + 519)


def test_reply_is_parsed_behind_its_ip_header_and_others_are_ignored():
    icmp = struct.pack("!BBHHHIII", 14, 0, 0, 0x1234, 7, 1, 35_784_505, 35_784_506)
    ip = bytes([0x45]) + bytes(19)
    assert clock.parse_timestamp_reply(ip + icmp, 0x1234) == (7, 35_784_505, 35_784_506)
    assert clock.parse_timestamp_reply(ip + icmp, 0x9999) is None  # another process's
    assert clock.parse_timestamp_reply(ip + b"\x00" + icmp[1:], 0x1234) is None  # an echo reply
    assert clock.parse_timestamp_reply(b"\x45", 0x1234) is None


@pytest.mark.parametrize("ms, near, expected", [
    (35_784_505, 1_796_291_784.4, 1_796_291_784.505),
    (86_399_990, 1_796_256_000.002, 1_796_255_999.99),  # just before midnight, read just after
    (5, 1_796_255_999.999, 1_796_256_000.005),  # just after midnight, read just before
])
def test_milliseconds_of_day_unwrap_to_the_nearest_day(ms, near, expected):
    assert clock._unwrap(ms, near) == pytest.approx(expected, abs=1e-6)
