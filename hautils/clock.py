"""How far each lab guest's clock is from the machine's: ICMP timestamp requests (RFC 792).

UML guests read time from the host, but each sets its wall clock once at boot, and not
exactly: in the gateway lab a client booted with the lab was 13.97 ms behind the machine (the
same 9 minutes later: an offset, not a drift) while routers booted later were 0.4-0.6 ms behind.
A failover's phases compare times from three clocks (the fault: the machine; the journal
lines: the survivor; the probe's answers: the client), so 14 ms was enough to put a router's
"Entering MASTER STATE" after the client's first answer through it.  Measure the offsets,
then subtract them (:func:`hautils.analysis.align` for probe logs).

The guest's kernel answers ICMP timestamp requests itself (no process to start, which costs
~30 ms in UML): it stamps the request's arrival and its reply in whole milliseconds since
midnight UTC.  Of ``samples`` requests the one with the shortest round trip gives the offset
(NTP's estimate, ``((T2 - T1) + (T3 - T4)) / 2``), to about half a millisecond.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Iterable

__all__ = ["icmp_offset", "offsets", "parse_timestamp_reply", "timestamp_request"]

DAY_MS = 86_400_000


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _ms_of_day(t: float) -> int:
    return int(t * 1000) % DAY_MS


def timestamp_request(ident: int, seq: int, t: float) -> bytes:
    """An ICMP timestamp request (type 13) sent at epoch ``t``."""
    body = struct.pack("!BBHHHIII", 13, 0, 0, ident & 0xFFFF, seq & 0xFFFF, _ms_of_day(t), 0, 0)
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


def parse_timestamp_reply(packet: bytes, ident: int) -> tuple[int, int, int] | None:
    """``(seq, receive_ms, transmit_ms)`` of a timestamp reply (type 14) with our ``ident``, from
    a raw socket's packet (IPv4 header first); None for anything else."""
    if len(packet) < 20:
        return None
    icmp = packet[(packet[0] & 0x0F) * 4:]
    if len(icmp) < 20 or icmp[0] != 14:
        return None
    _t, _c, _sum, rid, seq, _orig, recv, xmit = struct.unpack("!BBHHHIII", icmp[:20])
    if rid != ident & 0xFFFF:
        return None
    return seq, recv, xmit


def _unwrap(ms: int, near: float) -> float:
    """Milliseconds since midnight UTC -> epoch seconds, on the day of ``near`` (epoch s)."""
    day = int(near * 1000) // DAY_MS * DAY_MS
    t = day + ms
    if t - near * 1000 > DAY_MS / 2:
        t -= DAY_MS
    elif near * 1000 - t > DAY_MS / 2:
        t += DAY_MS
    return t / 1000.0


def icmp_offset(address: str, samples: int = 20, timeout: float = 1.0, interval: float = 0.005) -> float:
    """Seconds the clock at ``address`` is ahead of this machine's (negative: behind), from the
    quickest of ``samples`` ICMP timestamp exchanges.  Needs a raw socket (root); call it inside
    the lab's namespace (:func:`offsets` does).  Raises TimeoutError when nothing answers."""
    ident = os.getpid() ^ int(time.time() * 1000)
    best: tuple[float, float] | None = None
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        for seq in range(samples):
            t1 = time.time()
            s.sendto(timestamp_request(ident, seq, t1), (address, 0))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([s], [], [], left)[0]:
                    break
                got = parse_timestamp_reply(s.recv(256), ident)
                t4 = time.time()
                if got is None or got[0] != seq:
                    continue
                # the guest truncates to whole ms: +0.5 ms is the unbiased middle of its tick
                t2 = _unwrap(got[1], t1) + 0.0005
                t3 = _unwrap(got[2], t1) + 0.0005
                rtt = (t4 - t1) - (t3 - t2)
                off = ((t2 - t1) + (t3 - t4)) / 2
                if best is None or rtt < best[0]:
                    best = (rtt, off)
                break
            time.sleep(interval)
    if best is None:
        raise TimeoutError(f"no ICMP timestamp reply from {address} ({samples} requests)")
    return best[1]


def offsets(lab, hosts: Iterable[str], samples: int = 20) -> dict[str, float]:
    """``{host: seconds ahead of the machine}`` for running hosts of ``lab``, measured over the
    management network from inside the lab's namespace.  A host that does not answer (powered
    off) is left out."""
    from .lab import netns, state

    ns = f"{state.NETNS_PREFIX}{lab.name}"
    out: dict[str, float] = {}
    for h in hosts:
        name = lab.resolve(h)
        addr = str(lab.topology.hosts[name].mgmt.address.ip)
        try:
            out[name] = netns.run_in(ns, lambda a=addr: icmp_offset(a, samples), timeout=samples * 1.2 + 10)
        except TimeoutError:
            continue
    return out
