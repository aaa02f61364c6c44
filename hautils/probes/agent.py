#!/usr/bin/env python3
"""hautils probe agent: one long-running process per probe, standard library only.

The notebook copies this file to a lab host (``/usr/local/lib/hautils/agent.py``) and starts it
there; it measures the service from that host's point of view and writes one JSON line per
attempt.  Process creation is expensive in User-Mode Linux guests (~31 ms per fork+exec), so every
kind except ``cmd`` runs its attempts inside this one process: no fork per attempt.

Kinds::

    agent.py icmp  --target IP [--socket auto|raw|dgram] [--size 56]
    agent.py tcp   --target IP --port P
    agent.py http  --url http://IP:PORT/path
    agent.py dns   --server IP [--port 53] --qname NAME [--qtype A|AAAA|SRV|...]
    agent.py write --path FILE_OR_BLOCKDEV [--record-size 4096] [--direct auto|yes|no]
    agent.py session --target IP --port P [--user-timeout S] [--reconnect]   (one TCP connection)
    agent.py cmd   [--timeout 5] -- COMMAND ARGS...      (forks per attempt: slow rates only)
    agent.py serve-echo --port P [--bind ADDR]            (TCP echo server for session probes)
    agent.py verify --path P [--record-size 4096] [--run RUN] [--from-seq A] [--to-seq B]

Common options: ``--hz H`` (default 100; cmd: 1), ``--timeout T`` (seconds an attempt may take
before it counts as failed with err "timeout"; default 1 s for the network kinds whatever the rate,
like ``ping -W 1``, 5 s for cmd; a reply after that is counted in the footer's ``late_replies``),
``--duration S`` (the agent stops by itself; default 3600 s: it is always bounded), ``--count N``
(stop after N attempts), ``--name``, ``--log PATH`` (default /var/lib/hautils/probes/NAME.jsonl),
``--log-sync S`` (see below), ``--nice N`` (run at this priority when permitted, e.g. -10, so
CPU-hungry neighbours do not make it skip slots; the header says which nice value it got).

Scheduling: attempt slots lie on an absolute grid ``t0 + k/hz`` (no drift).  When the loop falls
behind by a whole slot or more (a stalled write, a descheduled guest), it does not burst to catch
up: it skips to the current slot and writes the number of skipped slots as ``late`` on that
attempt.  Network attempts are asynchronous (one select loop sends on schedule and receives), so a
slow or missing reply never delays the next send.  ``write`` and ``cmd`` attempts are synchronous:
a write blocked for seconds by a failing-over iSCSI disk simply blocks, and its ``recv`` is the
moment the syscall returned.

Log (JSON lines, line-buffered): a header line with key ``probe``, then one line per finished
attempt ``{"seq", "sent", "recv", "ok", "err", ...}`` (not necessarily in seq order: replies
finish out of order), then, on SIGTERM/SIGINT, on ``--duration``/``--count`` or on a fatal error,
a footer line with key ``stopped``.  Times are epoch seconds from ``time.time()``; for ICMP and
DNS ``recv`` is the kernel's receive timestamp of the reply (SO_TIMESTAMPNS) when available.
Each line reaches the kernel when it is written; a background thread ``fdatasync``s the log every
``--log-sync`` seconds (default 0.05) when it has grown, so a power cut of this host loses at most
the lines of the last ~50 ms (``--log-sync 0``: sync after every line, in the loop;
``--log-sync -1``: never).

Write records: ``record_size`` bytes at offset ``seq * record_size``, written with
O_DIRECT|O_SYNC (O_SYNC alone where O_DIRECT is refused, e.g. some file systems; the header's
``direct``/``sync`` say which): ``b"HAPROBE1"``, seq (u64), send time (f64, the log's ``sent``),
run id (8 random bytes; hex in the header's ``run``), record size (u32), filler, and in the last
4 bytes the CRC-32 of everything before it (all little endian).  ``verify`` prints one JSON
object: ``present`` (ranges ``[[a, b], ...]`` of intact records of the run at their own offset),
``corrupt`` (seqs whose bytes are neither zeros nor an intact record: torn, damaged, misplaced,
or cut short by truncation), ``foreign`` (ranges of intact records of another run), ``max_seq``
(highest present seq or null), ``size``, ``from_seq``/``to_seq`` (the range examined).
"""

import argparse
import collections
import errno
import json
import mmap
import os
import select
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time
import zlib

STARTED = time.time()

VERSION = 1
DEFAULT_LOG_DIR = "/var/lib/hautils/probes"
DEFAULT_TIMEOUT = 1.0
DEFAULT_DURATION = 3600.0
MAX_HZ = 1000.0

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value on x86/arm/generic
_TS_FMT = "ll"  # struct timespec {long tv_sec; long tv_nsec;}
_TS_LEN = struct.calcsize(_TS_FMT)

# write-probe record layout (little endian); the CRC-32 of everything before it ends the record.
MAGIC = b"HAPROBE1"
REC_HDR = struct.Struct("<8sQd8sI")  # magic, seq, timestamp, run id, record size
REC_MIN = REC_HDR.size + 4


class ProbeError(Exception):
    pass


def errname(code):
    """'ECONNREFUSED' for an errno or an OSError."""
    if isinstance(code, BaseException):
        if isinstance(code, OSError) and code.errno:
            code = code.errno
        else:
            return type(code).__name__
    return errno.errorcode.get(code, "errno%s" % code)


def inet_checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def kernel_stamp(ancdata):
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TS_LEN:
            sec, nsec = struct.unpack(_TS_FMT, data[:_TS_LEN])
            return sec + nsec * 1e-9
    return None


def enable_kernel_stamps(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return True
    except OSError:
        return False


def clock_pair():
    """(monotonic, time.time()) read at the same instant: the schedule runs on the monotonic clock,
    the log on the wall clock, and a preemption between two plain reads would shift every logged
    slot time by its length.  Keep the tightest of a few bracketed readings."""
    best = None
    for _ in range(5):
        w1 = time.time()
        m = time.monotonic()
        w2 = time.time()
        if best is None or w2 - w1 < best[0]:
            best = (w2 - w1, m, (w1 + w2) / 2)
    return best[1], best[2]


def ms(seconds):
    return round(seconds * 1000.0, 3)


# --------------------------------------------------------------------------------------------
# log


class Log:
    def __init__(self, path, sync_interval):
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self.path = path
        self.f = open(path, "w", buffering=1, encoding="utf-8")
        self.fd = self.f.fileno()
        # make the new file's directory entry durable too: a power cut must not lose the log
        dfd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.lines = 0
        self.sync_interval = sync_interval
        self._synced = 0
        self._done = threading.Event()
        self._thread = None
        if sync_interval > 0:
            self._thread = threading.Thread(target=self._syncer, name="log-sync", daemon=True)
            self._thread.start()

    def write(self, obj):
        self.f.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.lines += 1
        if self.sync_interval == 0:
            os.fdatasync(self.fd)

    def _syncer(self):
        while not self._done.wait(self.sync_interval):
            n = self.lines
            if n != self._synced:
                try:
                    os.fdatasync(self.fd)
                except OSError:
                    pass
                self._synced = n

    def close(self):
        self._done.set()
        if self._thread is not None:
            self._thread.join(5)
        self.f.flush()
        if self.sync_interval >= 0:
            try:
                os.fdatasync(self.fd)
            except OSError:
                pass
        self.f.close()


# --------------------------------------------------------------------------------------------
# probers: one per kind


class Pending:
    __slots__ = ("seq", "late", "sent", "deadline", "sock", "state", "out", "buf")

    def __init__(self, seq, late, sent, deadline):
        self.seq = seq
        self.late = late
        self.sent = sent
        self.deadline = deadline
        self.sock = None
        self.state = None
        self.out = b""
        self.buf = b""


class Prober:
    kind = "?"

    def __init__(self, args, agent):
        self.args = args
        self.agent = agent
        self.timeout = args.timeout
        self.pending = collections.OrderedDict()  # seq -> Pending, in deadline order
        # attempts that timed out, remembered (the newest only) so that a reply to one counts
        # as late, not as a duplicate (:meth:`claim`)
        self.timed_out = set()
        self.timed_out_order = collections.deque()
        self.late_replies = 0
        self.dup_replies = 0

    def info(self):
        """Kind-specific header fields."""
        return {}

    def stats(self):
        """Kind-specific footer fields."""
        return {}

    def attempt(self, seq, late):
        raise NotImplementedError

    def add_pending(self, p):
        self.pending[p.seq] = p

    def next_deadline(self):
        for p in self.pending.values():
            return p.deadline
        return None

    def expire(self, mono):
        while self.pending:
            p = next(iter(self.pending.values()))
            if p.deadline > mono:
                break
            self.pending.popitem(last=False)
            self.on_timeout(p)

    def on_timeout(self, p):
        self.agent.emit(p.seq, p.late, p.sent, None, False, "timeout")

    def claim(self, seq):
        """The pending attempt a reply with ``seq`` answers (no longer pending), or None: then
        the reply is counted as late (its attempt timed out) or as a duplicate."""
        p = self.pending.pop(seq, None)
        if p is None:
            if seq in self.timed_out:
                self.late_replies += 1
            else:
                self.dup_replies += 1
        return p

    def remember_timed_out(self, key, keep=100000):
        """Remember a timed-out attempt's ``key`` (its seq, or what replies carry of it), the
        newest ``keep`` only."""
        self.timed_out.add(key)
        self.timed_out_order.append(key)
        if len(self.timed_out_order) > keep:
            self.timed_out.discard(self.timed_out_order.popleft())

    def close(self):
        pass


class IcmpProber(Prober):
    kind = "icmp"

    def __init__(self, args, agent):
        super().__init__(args, agent)
        fam, _, _, _, sa = socket.getaddrinfo(args.target, None, 0, socket.SOCK_DGRAM)[0]
        self.v6 = fam == socket.AF_INET6
        proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        self.addr = sa[:1] + (0,) + tuple(sa[2:])
        self.raw = False
        sock = None
        if args.socket in ("auto", "raw"):
            try:
                sock = socket.socket(fam, socket.SOCK_RAW, proto)
                self.raw = True
            except PermissionError:
                if args.socket == "raw":
                    raise
        if sock is None:
            # unprivileged "ping socket": needs net.ipv4.ping_group_range to cover our group
            sock = socket.socket(fam, socket.SOCK_DGRAM, proto)
        if getattr(args, "source", None):
            # a chosen source address: with equal-cost routes the routers hash (source,
            # destination) onto one path, so the source pins the flow to a path
            sock.bind((args.source, 0))
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:
            pass
        self.kstamp = enable_kernel_stamps(sock)
        self.sock = sock
        self.ident = os.getpid() & 0xFFFF  # the kernel replaces it on datagram sockets
        self.nonce = os.urandom(8)
        self.filler = bytes(i & 0xFF for i in range(max(16, args.size) - 16))
        self.req_type, self.rep_type = (128, 129) if self.v6 else (8, 0)
        self.err_types = {1: "unreachable", 3: "ttl_exceeded"} if self.v6 else \
            {3: "unreachable", 11: "ttl_exceeded"}
        self.by16 = {}
        agent.sel.register(sock, selectors.EVENT_READ, self.on_read)

    def info(self):
        return {"target": self.args.target, "source": getattr(self.args, "source", None),
                "socket": "raw" if self.raw else "dgram",
                "ident": self.ident if self.raw else None, "size": len(self.filler) + 16,
                "recv_stamp": "kernel" if self.kstamp else "user"}

    def stats(self):
        return {"late_replies": self.late_replies, "dup_replies": self.dup_replies}

    def attempt(self, seq, late):
        s16 = seq & 0xFFFF
        pkt = struct.pack("!BBHHH", self.req_type, 0, 0, self.ident, s16) + self.nonce + \
            struct.pack("!Q", seq) + self.filler
        if not self.v6:  # the kernel computes ICMPv6 checksums itself
            pkt = pkt[:2] + struct.pack("!H", inet_checksum(pkt)) + pkt[4:]
        sent = time.time()
        try:
            self.sock.sendto(pkt, self.addr)
        except OSError as e:
            self.agent.emit(seq, late, sent, None, False, errname(e))
            return
        self.by16[s16] = seq
        self.add_pending(Pending(seq, late, sent, time.monotonic() + self.timeout))

    def on_read(self, _events):
        while True:
            try:
                data, anc, _flags, src = self.sock.recvmsg(4096, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            t = kernel_stamp(anc) or time.time()
            self.handle(data, src, t)

    def handle(self, data, src, t):
        ttl = None
        if self.raw and not self.v6:
            if len(data) < 20:
                return
            ihl = (data[0] & 0x0F) * 4
            ttl = data[8]
            icmp = data[ihl:]
        else:
            icmp = data
        if len(icmp) < 8:
            return
        typ, code = icmp[0], icmp[1]
        if typ == self.rep_type:
            if self.raw and struct.unpack("!H", icmp[4:6])[0] != self.ident:
                return
            if len(icmp) < 24 or icmp[8:16] != self.nonce:
                return
            seq = struct.unpack("!Q", icmp[16:24])[0]
            p = self.claim(seq)
            if p is None:
                return
            if self.by16.get(seq & 0xFFFF) == seq:
                del self.by16[seq & 0xFFFF]
            extra = {"rtt_ms": ms(t - p.sent)}
            if ttl is not None:
                extra["ttl"] = ttl
            self.agent.emit(seq, p.late, p.sent, t, True, None, extra)
        elif self.raw and typ in self.err_types:
            inner = icmp[8:]
            if self.v6:
                orig = inner[40:]
            else:
                if not inner:
                    return
                orig = inner[(inner[0] & 0x0F) * 4:]
            if len(orig) < 8 or orig[0] != self.req_type:
                return
            ident, s16 = struct.unpack("!HH", orig[4:8])
            if ident != self.ident:
                return
            seq = self.by16.pop(s16, None)
            p = self.pending.pop(seq, None) if seq is not None else None
            if p is None:
                return
            self.agent.emit(seq, p.late, p.sent, t, False, self.err_types[typ],
                            {"code": code, "from": src[0]})

    def on_timeout(self, p):
        s16 = p.seq & 0xFFFF
        if self.by16.get(s16) == p.seq:
            del self.by16[s16]
        self.remember_timed_out(p.seq)
        super().on_timeout(p)


class StreamProber(Prober):
    """TCP connect per attempt (kind tcp), optionally followed by an HTTP/1.0 GET (kind http)."""

    kind = "tcp"
    request = None

    def __init__(self, args, agent):
        super().__init__(args, agent)
        if args.kind == "http":
            from urllib.parse import urlsplit
            u = urlsplit(args.url)
            if u.scheme != "http" or not u.hostname:
                raise ProbeError("only http://HOST[:PORT]/path URLs are supported: %r" % args.url)
            host, port = u.hostname, u.port or 80
            path = u.path or "/"
            if u.query:
                path += "?" + u.query
            hosthdr = u.netloc.rsplit("@", 1)[-1]
            self.request = ("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: hautils-probe/%s\r\n"
                            "Connection: close\r\n\r\n" % (path, hosthdr, VERSION)).encode()
            self.kind = "http"
        else:
            host, port = args.target, args.port
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        self.family, self.addr = ai[0], ai[4]

    def info(self):
        if self.request is not None:
            return {"target": self.args.url, "addr": list(self.addr[:2])}
        return {"target": self.args.target, "port": self.args.port}

    def attempt(self, seq, late):
        sent = time.time()
        try:
            s = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as e:
            self.agent.emit(seq, late, sent, None, False, errname(e), {"stage": "socket"})
            return
        s.setblocking(False)
        sent = time.time()
        e = s.connect_ex(self.addr)
        p = Pending(seq, late, sent, time.monotonic() + self.timeout)
        p.sock = s
        p.state = "connect"
        if e == 0:
            self.connected(p)
        elif e in (errno.EINPROGRESS, errno.EAGAIN):
            self.agent.sel.register(s, selectors.EVENT_WRITE, lambda ev, p=p: self.on_event(p, ev))
            self.add_pending(p)
        else:
            s.close()
            self.agent.emit(seq, late, sent, time.time(), False, errname(e), {"stage": "connect"})

    def finish(self, p, ok, err, extra=None):
        t = time.time()
        self.pending.pop(p.seq, None)
        try:
            self.agent.sel.unregister(p.sock)
        except (KeyError, ValueError):
            pass
        p.sock.close()
        x = {"rtt_ms": ms(t - p.sent)}
        if extra:
            x.update(extra)
        if not ok:
            x["stage"] = p.state
        self.agent.emit(p.seq, p.late, p.sent, t, ok, err, x)

    def on_timeout(self, p):
        try:
            self.agent.sel.unregister(p.sock)
        except (KeyError, ValueError):
            pass
        p.sock.close()
        self.agent.emit(p.seq, p.late, p.sent, None, False, "timeout", {"stage": p.state})

    def connected(self, p):
        if self.request is None:
            self.finish(p, True, None)
            return
        p.state = "send"
        p.out = self.request
        if p.seq not in self.pending:
            self.agent.sel.register(p.sock, selectors.EVENT_WRITE,
                                    lambda ev, p=p: self.on_event(p, ev))
            self.add_pending(p)
        self.on_event(p, selectors.EVENT_WRITE)

    def on_event(self, p, _ev):
        try:
            if p.state == "connect":
                e = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if e:
                    self.finish(p, False, errname(e))
                    return
                self.connected(p)
            elif p.state == "send":
                n = p.sock.send(p.out)
                p.out = p.out[n:]
                if not p.out:
                    p.state = "response"
                    self.agent.sel.modify(p.sock, selectors.EVENT_READ,
                                          lambda ev, p=p: self.on_event(p, ev))
            elif p.state == "response":
                while True:
                    chunk = p.sock.recv(65536)
                    if not chunk:
                        self.response_done(p, eof=True)
                        return
                    if len(p.buf) < (1 << 20):
                        p.buf += chunk
                    if self.response_done(p, eof=False):
                        return
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if p.seq in self.pending:
                self.finish(p, False, errname(e))

    def response_done(self, p, eof):
        head, sep, body = p.buf.partition(b"\r\n\r\n")
        if not sep:
            if eof:
                self.finish(p, False, "bad_response" if p.buf else "eof", {"bytes": len(p.buf)})
                return True
            return False
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            self.finish(p, False, "bad_response", {"bytes": len(p.buf)})
            return True
        length = None
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                try:
                    length = int(v.strip())
                except ValueError:
                    pass
        if not eof and (length is None or len(body) < length):
            return False
        ok = 200 <= status < 400
        self.finish(p, ok, None if ok else "http %d" % status, {"status": status, "bytes": len(body)})
        return True


QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
          "SRV": 33, "ANY": 255}


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            b = label.encode("idna") if not label.isascii() else label.encode()
            if len(b) > 63:
                raise ProbeError("DNS label too long: %r" % label)
            out += bytes([len(b)]) + b
    return out + b"\0"


def decode_name(msg, off):
    labels = []
    end = None
    for _ in range(128):
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    else:
        raise ValueError("name loop")
    return ".".join(labels) + ".", (end if end is not None else off)


def parse_answers(msg, qdcount, ancount):
    off = 12
    for _ in range(qdcount):
        _, off = decode_name(msg, off)
        off += 4
    out = []
    for _ in range(ancount):
        _, off = decode_name(msg, off)
        rtype, _rclass, _ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if len(rdata) != rdlen:
            raise ValueError("truncated answer")
        if rtype == 1 and rdlen == 4:
            out.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28 and rdlen == 16:
            out.append(socket.inet_ntop(socket.AF_INET6, rdata))
        elif rtype == 33:
            prio, weight, port = struct.unpack("!HHH", rdata[:6])
            out.append("%d %d %d %s" % (prio, weight, port, decode_name(msg, off + 6)[0]))
        elif rtype in (2, 5, 12):
            out.append(decode_name(msg, off)[0])
        elif rtype == 15:
            out.append("%d %s" % (struct.unpack("!H", rdata[:2])[0], decode_name(msg, off + 2)[0]))
        off += rdlen
    return out


class DnsProber(Prober):
    kind = "dns"

    def __init__(self, args, agent):
        super().__init__(args, agent)
        qtype = args.qtype.upper()
        if qtype not in QTYPES:
            raise ProbeError("unknown query type %r (known: %s)" % (args.qtype, " ".join(QTYPES)))
        self.qtype = QTYPES[qtype]
        self.question = encode_name(args.qname) + struct.pack("!HH", self.qtype, 1)
        ai = socket.getaddrinfo(args.server, args.port, 0, socket.SOCK_DGRAM)[0]
        self.server_addr = ai[4]
        self.sock = socket.socket(ai[0], socket.SOCK_DGRAM)
        self.connected = False
        self.connect()
        self.sock.setblocking(False)
        self.kstamp = enable_kernel_stamps(self.sock)
        self.id_base = struct.unpack("!H", os.urandom(2))[0]
        self.by_id = {}
        self.stray = 0
        agent.sel.register(self.sock, selectors.EVENT_READ, self.on_read)

    def info(self):
        return {"target": "%s:%d" % (self.args.server, self.args.port), "server": self.args.server,
                "qname": self.args.qname, "qtype": self.args.qtype.upper(),
                "recv_stamp": "kernel" if self.kstamp else "user"}

    def stats(self):
        return {"late_replies": self.late_replies, "stray_replies": self.stray}

    def connect(self):
        """Connect the socket to the server: only its replies come in.  Without a route yet
        (a router reconverging) connect() fails; the attempt fails and the next one tries again."""
        try:
            self.sock.connect(self.server_addr)
            self.connected = True
        except OSError as e:
            return errname(e)
        return None

    def attempt(self, seq, late):
        qid = (self.id_base + seq) & 0xFFFF
        msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + self.question
        sent = time.time()
        if not self.connected:
            err = self.connect()
            if err:
                self.agent.emit(seq, late, sent, None, False, err)
                return
        for retry in (0, 1):
            try:
                self.sock.send(msg)
                break
            except OSError as e:
                # a pending ICMP error of an earlier query is reported once; send again
                if retry or e.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                            errno.ENETUNREACH):
                    self.agent.emit(seq, late, sent, None, False, errname(e))
                    return
        self.by_id[qid] = seq
        self.add_pending(Pending(seq, late, sent, time.monotonic() + self.timeout))

    def on_read(self, _events):
        for _ in range(10000):
            try:
                msg, anc, _flags, _src = self.sock.recvmsg(65535, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP port unreachable etc.: the queries time out
            t = kernel_stamp(anc) or time.time()
            if len(msg) < 12:
                self.stray += 1
                continue
            qid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
            seq = self.by_id.get(qid)
            if not flags & 0x8000 or seq is None:
                if seq is None and ((qid - self.id_base) & 0xFFFF) in self.timed_out:
                    self.late_replies += 1
                else:
                    self.stray += 1
                continue
            del self.by_id[qid]
            p = self.pending.pop(seq)
            rcode = flags & 0x0F
            extra = {"rtt_ms": ms(t - p.sent), "rcode": rcode, "ancount": an}
            if flags & 0x0200:
                extra["tc"] = True
            err = None
            try:
                extra["answer"] = ",".join(parse_answers(msg, qd, an))
            except (ValueError, IndexError, struct.error, UnicodeError):
                err = "malformed"
            if rcode:
                err = "rcode %d" % rcode
            self.agent.emit(seq, p.late, p.sent, t, err is None, err, extra)

    def on_timeout(self, p):
        qid = (self.id_base + p.seq) & 0xFFFF
        self.by_id.pop(qid, None)
        self.remember_timed_out(p.seq & 0xFFFF, keep=30000)
        super().on_timeout(p)


class WriteProber(Prober):
    """Sequence-numbered, checksummed records written synchronously at offset seq*record_size."""

    kind = "write"

    def __init__(self, args, agent):
        super().__init__(args, agent)
        rs = args.record_size
        if rs < REC_MIN or rs % 512:
            raise ProbeError("--record-size must be a multiple of 512 (got %d)" % rs)
        self.rs = rs
        self.path = args.path
        try:
            st = os.stat(self.path)
            mode = st.st_mode
        except FileNotFoundError:
            mode = stat.S_IFREG
        self.is_file = stat.S_ISREG(mode)
        sync_mode = getattr(args, "sync", "sync")
        self.fdatasync = sync_mode == "fdatasync"
        self.sync_flag = {"sync": os.O_SYNC, "dsync": os.O_DSYNC, "fdatasync": 0}[sync_mode]
        self.sync_name = {"sync": "O_SYNC", "dsync": "O_DSYNC", "fdatasync": "write+fdatasync"}[sync_mode]
        self.flags = os.O_WRONLY | self.sync_flag | (os.O_CREAT if self.is_file else 0)
        if self.fdatasync:
            args.direct = "no"  # the page cache, then fdatasync(): the database way
        self.direct = False
        self.note = None
        self.fd = None
        if args.direct in ("auto", "yes"):
            try:
                self.fd = os.open(self.path, self.flags | os.O_DIRECT, 0o644)
                self.direct = True
            except OSError as e:
                if args.direct == "yes" or e.errno != errno.EINVAL:
                    raise
                self.note = "O_DIRECT not supported here (%s): %s only" % (errname(e), self.sync_name)
        if self.fd is None:
            self.fd = os.open(self.path, self.flags, 0o644)
        self.max_records = None
        if stat.S_ISBLK(mode):
            self.max_records = os.lseek(self.fd, 0, os.SEEK_END) // rs
        self.run_id = os.urandom(8)
        self.buf = mmap.mmap(-1, rs)  # page aligned, as O_DIRECT wants
        fill = (self.run_id + b"\xa5" * 8) * (rs // 16 + 1)
        self.buf[:] = fill[:rs]
        self.mv = memoryview(self.buf)
        self.exhausted = False

    def info(self):
        return {"target": self.path, "path": self.path, "record_size": self.rs, "run": self.run_id.hex(),
                "direct": self.direct, "sync": ("O_DIRECT|" if self.direct else "") + self.sync_name,
                "note": self.note, "max_records": self.max_records}

    def stats(self):
        return {"direct": self.direct, "run": self.run_id.hex()}

    def attempt(self, seq, late):
        if self.max_records is not None and seq >= self.max_records:
            self.exhausted = True
            return
        sent = time.time()
        REC_HDR.pack_into(self.buf, 0, MAGIC, seq, sent, self.run_id, self.rs)
        struct.pack_into("<I", self.buf, self.rs - 4, zlib.crc32(self.mv[:self.rs - 4]))
        extra = None
        try:
            n = self._pwrite(seq)
        except OSError as e:
            if e.errno == errno.EINVAL and self.direct and self.args.direct == "auto":
                # some file systems accept O_DIRECT at open() and refuse it at write()
                os.close(self.fd)
                self.fd = os.open(self.path, self.flags, 0o644)
                self.direct = False
                self.note = "O_DIRECT refused by write(): %s only from seq %d" % (self.sync_name, seq)
                extra = {"note": self.note}
                try:
                    n = self._pwrite(seq)
                except OSError as e2:
                    self.agent.emit(seq, late, sent, time.time(), False, errname(e2), extra)
                    return
            else:
                self.agent.emit(seq, late, sent, time.time(), False, errname(e))
                return
        recv = time.time()
        if n == self.rs:
            self.agent.emit(seq, late, sent, recv, True, None, extra)
        else:
            self.agent.emit(seq, late, sent, recv, False, "short write %d" % n, extra)

    def _pwrite(self, seq):
        n = os.pwrite(self.fd, self.buf, seq * self.rs)
        if self.fdatasync:
            os.fdatasync(self.fd)  # the acknowledgement: the data (and the device's cache) flushed
        return n

    def close(self):
        self.mv.release()
        self.buf.close()
        os.close(self.fd)


class CmdProber(Prober):
    """Runs a command per attempt (fork+exec each time: meant for slow rates, ~1 Hz in UML)."""

    kind = "cmd"

    def __init__(self, args, agent):
        super().__init__(args, agent)
        if not args.command:
            raise ProbeError("cmd needs a command after --")
        import subprocess
        self.subprocess = subprocess
        self.has_pidfd = hasattr(os, "pidfd_open")

    def info(self):
        return {"target": " ".join(self.args.command), "command": self.args.command}

    def attempt(self, seq, late):
        sp = self.subprocess
        sent = time.time()
        try:
            proc = sp.Popen(self.args.command, stdin=sp.DEVNULL, stdout=sp.PIPE,
                            stderr=sp.STDOUT, start_new_session=True)
        except OSError as e:
            self.agent.emit(seq, late, sent, time.time(), False, errname(e))
            return
        deadline = time.monotonic() + self.timeout
        out = bytearray()
        os.set_blocking(proc.stdout.fileno(), False)
        state = {"exited": False}

        def on_out(_ev):
            try:
                chunk = os.read(proc.stdout.fileno(), 65536)
            except BlockingIOError:
                return
            if not chunk:
                self.agent.sel.unregister(proc.stdout)
            elif len(out) < 4096:
                out.extend(chunk)

        def on_exit(_ev):
            state["exited"] = True

        sel = self.agent.sel
        sel.register(proc.stdout, selectors.EVENT_READ, on_out)
        pidfd = None
        if self.has_pidfd:
            try:
                pidfd = os.pidfd_open(proc.pid)
                sel.register(pidfd, selectors.EVENT_READ, on_exit)
            except OSError:
                pidfd = None
        err = None
        while True:
            if state["exited"] or (pidfd is None and proc.poll() is not None):
                break
            if self.agent.stop_signal is not None:
                err = "stopped"
                break
            left = deadline - time.monotonic()
            if left <= 0:
                err = "timeout"
                break
            self.agent.poll(min(left, 0.01) if pidfd is None else left)
        if err:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
        status = proc.wait()
        recv = time.time()
        try:  # whatever the command printed last (do not wait for grandchildren holding the pipe)
            while len(out) < 4096:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out.extend(chunk)
        except OSError:
            pass
        try:
            sel.unregister(proc.stdout)
        except (KeyError, ValueError):
            pass
        proc.stdout.close()
        if pidfd is not None:
            sel.unregister(pidfd)
            os.close(pidfd)
        if err == "stopped":
            self.agent.unfinished += 1
            return
        text = out.decode("utf-8", "replace").strip()[:200]
        if err:
            self.agent.emit(seq, late, sent, None, False, err, {"out": text})
        else:
            self.agent.emit(seq, late, sent, recv, status == 0,
                            None if status == 0 else "exit %d" % status,
                            {"status": status, "rtt_ms": ms(recv - sent), "out": text})


class SessionProber(Prober):
    """One TCP connection for the whole run (kind session): each attempt sends a line
    ``"<seq> <filler>\\n"`` on it and is ``ok`` when that line comes back (an echo server,
    ``serve-echo``), so a failover that loses the connection's state shows as a break, not as a
    pause.  Every record carries ``conn``: 0 is the connection opened at start, 1, 2... the ones
    opened again with ``--reconnect`` after a break.  A break (reset, ``--user-timeout`` ran out,
    the server closed) fails the attempts in flight with its error and is listed in the footer's
    ``breaks``; without ``--reconnect`` every later attempt fails with err ``closed``, with it the
    next attempt opens a new connection (its attempts fail with err ``connecting`` until then).
    Attempts are pipelined on the one stream: while the path is down the lines queue in the
    socket and TCP retransmits them, so the first echo after an outage also shows TCP's own
    retransmission back-off, which is part of what an application sees."""

    kind = "session"

    def __init__(self, args, agent):
        super().__init__(args, agent)
        ai = socket.getaddrinfo(args.target, args.port, 0, socket.SOCK_STREAM)[0]
        self.family, self.addr = ai[0], ai[4]
        self.conn = -1
        self.sock = None
        self.connecting = False
        self.out = b""
        self.buf = b""
        self.breaks = []
        self.local = None
        self.filler = b"x" * max(0, args.size)
        # the first connection is made before attempt 0, blocking: a probe that cannot reach its
        # server at all is a failed start (ProbeError), not an outage
        s = socket.create_connection(self.addr[:2], timeout=max(self.timeout, 5.0))
        self._adopt(s)

    def _options(self, s):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.args.user_timeout is not None:
            # TCP_USER_TIMEOUT (ms): give up on a connection whose data stays unacknowledged this
            # long; without it Linux retransmits for ~15 min before the break shows
            s.setsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 18),
                         int(self.args.user_timeout * 1000))

    def _adopt(self, s):
        """``s`` is connected: it is the session now."""
        self._options(s)
        s.setblocking(False)
        self.sock = s
        self.connecting = False
        self.conn += 1
        self.out = self.buf = b""
        self.local = "%s:%d" % s.getsockname()[:2]
        self.agent.sel.register(s, selectors.EVENT_READ, self.on_event)

    def info(self):
        return {"target": self.args.target, "port": self.args.port, "local": self.local,
                "user_timeout": self.args.user_timeout, "reconnect": bool(self.args.reconnect),
                "size": len(self.filler)}

    def stats(self):
        return {"breaks": self.breaks, "connections": self.conn + 1, "late_replies": self.late_replies,
                "dup_replies": self.dup_replies}

    def _reconnect(self):
        s = socket.socket(self.family, socket.SOCK_STREAM)
        self._options(s)
        s.setblocking(False)
        e = s.connect_ex(self.addr)
        if e == 0:
            self._adopt(s)
            return
        if e not in (errno.EINPROGRESS, errno.EAGAIN):
            s.close()
            self.breaks.append({"conn": self.conn + 1, "at": time.time(), "err": errname(e), "stage": "connect"})
            return
        self.sock, self.connecting = s, True
        self.agent.sel.register(s, selectors.EVENT_WRITE, self.on_event)

    def attempt(self, seq, late):
        if self.sock is None and self.args.reconnect:
            self._reconnect()
        sent = time.time()
        if self.sock is None or self.connecting:
            self.agent.emit(seq, late, sent, None, False, "connecting" if self.connecting else "closed",
                            {"conn": self.conn})
            return
        self.out += b"%d %s\n" % (seq, self.filler)
        p = Pending(seq, late, sent, time.monotonic() + self.timeout)
        p.state = self.conn
        self.add_pending(p)
        self._flush()

    def _flush(self):
        try:
            while self.out:
                n = self.sock.send(self.out)
                self.out = self.out[n:]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._break(errname(e), "send")
            return
        if self.sock is not None and not self.connecting:
            self.agent.sel.modify(self.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0),
                                  self.on_event)

    def _break(self, err, stage):
        """The connection is gone: fail what is in flight with ``err`` and close it."""
        t = time.time()
        self.breaks.append({"conn": self.conn, "at": t, "err": err, "stage": stage,
                            "in_flight": len(self.pending)})
        for p in list(self.pending.values()):
            self.agent.emit(p.seq, p.late, p.sent, None, False, err, {"conn": p.state, "broke": True})
        self.pending.clear()
        try:
            self.agent.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
        self.sock, self.connecting = None, False
        self.out = self.buf = b""

    def on_event(self, ev):
        if self.sock is None:
            return
        if self.connecting:
            e = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            s = self.sock
            self.agent.sel.unregister(s)
            if e:
                s.close()
                self.sock, self.connecting = None, False
                self.breaks.append({"conn": self.conn + 1, "at": time.time(), "err": errname(e),
                                    "stage": "connect"})
            else:
                self.sock = None
                self._adopt(s)
            return
        if ev & selectors.EVENT_WRITE:
            self._flush()
            if self.sock is None:
                return
        if not ev & selectors.EVENT_READ:
            return
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    self._break("eof", "recv")
                    return
                t = time.time()
                self.buf += chunk
                *lines, self.buf = self.buf.split(b"\n")
                for line in lines:
                    self._echo(line, t)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._break(errname(e), "recv")

    def _echo(self, line, t):
        try:
            seq = int(line.split(b" ", 1)[0])
        except ValueError:
            return
        p = self.claim(seq)
        if p is None:
            return
        self.agent.emit(seq, p.late, p.sent, t, True, None, {"rtt_ms": ms(t - p.sent), "conn": p.state})

    def on_timeout(self, p):
        self.remember_timed_out(p.seq)
        self.agent.emit(p.seq, p.late, p.sent, None, False, "timeout", {"conn": p.state})

    def close(self):
        if self.sock is not None:
            self.sock.close()


def serve_echo(args):
    """A threaded TCP echo server (``serve-echo``), the far end of a ``session`` probe: the lab's
    guests have python3 but no socat.  Runs until killed; prints ``listening HOST:PORT`` once
    bound and, on stderr, one line per connection opened and closed (with the error that closed
    it: a reset from a router that lost the connection's state shows here)."""
    import socketserver

    def say(text):
        sys.stderr.write("%.6f %s\n" % (time.time(), text))
        sys.stderr.flush()

    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            peer = "%s:%d" % self.client_address[:2]
            say("open %s" % peer)
            why = "eof"
            try:
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while True:
                    data = self.request.recv(65536)
                    if not data:
                        break
                    self.request.sendall(data)
            except OSError as e:
                why = errname(e)
            say("close %s %s" % (peer, why))

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    srv = Server((args.bind, args.port), Echo)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stdout.write("listening %s:%d\n" % srv.server_address[:2])
    sys.stdout.flush()
    try:
        srv.serve_forever()
    finally:
        srv.server_close()
    return 0


PROBERS = {"icmp": IcmpProber, "tcp": StreamProber, "http": StreamProber, "dns": DnsProber,
           "write": WriteProber, "cmd": CmdProber, "session": SessionProber}


# --------------------------------------------------------------------------------------------
# the loop


class Agent:
    def __init__(self, args):
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.stop_signal = None
        self.unfinished = 0
        self.logged = 0
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._wake_r = r
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self.sel.register(r, selectors.EVENT_READ, self._drain_wakeup)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.log = None

    def _on_signal(self, signum, _frame):
        if self.stop_signal is None:
            self.stop_signal = signal.Signals(signum).name

    def _drain_wakeup(self, _ev):
        try:
            while os.read(self._wake_r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def poll(self, timeout):
        """Wait up to ``timeout`` seconds for events and handle them.

        epoll waits in whole milliseconds, rounded up (twice, by selectors and by select.epoll:
        up to 2 ms): alone it sent 0.6 ms late (median) at 100 Hz.  So it waits until 2.5 ms
        before the deadline, and select(2), which takes microseconds, sleeps the rest on the
        signal pipe only (replies meanwhile wait at most that long; ICMP and DNS replies carry
        the kernel's arrival time anyway)."""
        if timeout > 0.003:
            ready = self.sel.select(timeout - 0.0025)
        else:
            if timeout > 0:
                select.select([self._wake_r], [], [], timeout)
            ready = self.sel.select(0)
        for key, ev in ready:
            key.data(ev)

    def emit(self, seq, late, sent, recv, ok, err, extra=None):
        rec = {"seq": seq, "sent": sent, "recv": recv, "ok": ok, "err": err}
        if late:
            rec["late"] = late
        if extra:
            rec.update(extra)
        self.log.write(rec)
        self.logged += 1

    def run(self):
        a = self.args
        if a.nice is not None:
            try:  # a raised priority keeps the schedule on a busy host (needs CAP_SYS_NICE)
                os.setpriority(os.PRIO_PROCESS, 0, a.nice)
            except OSError:
                pass
        prober = PROBERS[a.kind](a, self)
        self.log = Log(a.log, a.log_sync)
        hz = a.hz
        period = 1.0 / hz
        startup_cpu = round(time.process_time(), 6)  # interpreter start and setup, before attempt 0
        mono0, wall0 = clock_pair()
        header = {"probe": a.kind, "name": a.name, "target": None, "hz": hz, "timeout": a.timeout,
                  "duration": a.duration, "count": a.count, "host": socket.gethostname(),
                  "pid": os.getpid(), "started": STARTED, "t0": wall0, "agent": VERSION,
                  "python": sys.version.split()[0], "log_sync": a.log_sync,
                  "nice": os.getpriority(os.PRIO_PROCESS, 0), "cpu_s": startup_cpu}
        header.update(prober.info())
        self.log.write(header)
        end = mono0 + a.duration
        k = seq = skipped = 0
        reason = "duration"
        error = None
        try:
            while True:
                if self.stop_signal is not None:
                    reason = self.stop_signal
                    break
                if a.count is not None and seq >= a.count:
                    reason = "count"
                    break
                if getattr(prober, "exhausted", False):
                    reason = "device_full"
                    break
                now = time.monotonic()
                if now >= end:
                    break
                due = mono0 + k * period
                if now >= due:
                    kn = int((now - mono0) * hz)
                    late = kn - k if kn > k else 0
                    k += late + 1
                    skipped += late
                    prober.attempt(seq, late)
                    if not getattr(prober, "exhausted", False):
                        seq += 1
                    continue
                wake = min(due, end)
                dl = prober.next_deadline()
                if dl is not None and dl < wake:
                    wake = dl
                self.poll(wake - now)
                prober.expire(time.monotonic())
            # let attempts in flight finish (or time out) unless told to stop now
            while prober.pending and self.stop_signal is None:
                dl = prober.next_deadline()
                self.poll(dl - time.monotonic())
                prober.expire(time.monotonic())
            if self.stop_signal is not None and reason in ("duration", "count", "device_full"):
                reason = self.stop_signal
        except Exception as e:  # keep the log readable: footer with the error, exit 1
            reason = "error"
            error = "%s: %s" % (type(e).__name__, e)
        self.unfinished += len(prober.pending)
        try:
            prober.close()
        except Exception:
            pass
        cpu = time.process_time()  # user+sys of all our threads, in ns (os.times() counts ticks)
        stopped = time.time()
        footer = {"stopped": stopped, "attempts": seq, "logged": self.logged,
                  "unfinished": self.unfinished, "late_slots": skipped, "reason": reason,
                  "cpu_s": round(cpu, 6), "elapsed": round(stopped - wall0, 6)}
        if a.kind == "cmd":
            t = os.times()
            footer["cpu_children_s"] = round(t.children_user + t.children_system, 4)
        footer.update(prober.stats())
        if error:
            footer["error"] = error
        self.log.write(footer)
        self.log.close()
        return 1 if error else 0


# --------------------------------------------------------------------------------------------
# verify


def ranges(seqs):
    """[0, 1, 2, 5, 7, 8] -> [[0, 2], [5, 5], [7, 8]] (input sorted)."""
    out = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def classify(rec, seq, rs, run, zero):
    """'present', 'corrupt', 'foreign' (intact record of another run) or None (never written)."""
    if len(rec) < rs:  # a record cut short by truncation
        return None if rec == zero[:len(rec)] else "corrupt"
    if rec[:8] != MAGIC:
        return None if rec == zero else "corrupt"
    _magic, rseq, _ts, rrun, rsize = REC_HDR.unpack_from(rec)
    crc = struct.unpack_from("<I", rec, rs - 4)[0]
    if rsize != rs or zlib.crc32(rec[:rs - 4]) != crc or rseq != seq:
        return "corrupt"  # torn, damaged, or written at the wrong place
    if run is not None and rrun != run:
        return "foreign"
    return "present"


def verify(args):
    rs = args.record_size
    if rs < REC_MIN:
        raise ProbeError("--record-size too small")
    run = bytes.fromhex(args.run) if args.run else None
    direct = True
    try:
        fd = os.open(args.path, os.O_RDONLY | os.O_DIRECT)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        fd = os.open(args.path, os.O_RDONLY)
        direct = False
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        last = (size + rs - 1) // rs - 1  # a partial record at the end counts as one
        first = max(0, args.from_seq or 0)
        if args.to_seq is not None:
            last = min(last, args.to_seq)
        chunk = max(1, (1 << 20) // rs)
        buf = mmap.mmap(-1, chunk * rs)
        mv = memoryview(buf)
        zero = bytes(rs)
        present, corrupt, foreign = [], [], []
        i = first
        while i <= last:
            n_rec = min(chunk, last - i + 1)
            want = n_rec * rs
            try:
                got = os.preadv(fd, [mv[:want]], i * rs)
            except OSError as e:
                if direct and e.errno == errno.EINVAL:
                    os.close(fd)
                    fd = os.open(args.path, os.O_RDONLY)
                    direct = False
                    continue
                raise
            if got <= 0:
                break
            for j in range((got + rs - 1) // rs):
                with mv[j * rs:min((j + 1) * rs, got)] as rec:
                    verdict = classify(rec, i + j, rs, run, zero)
                if verdict is not None:
                    {"present": present, "corrupt": corrupt, "foreign": foreign}[verdict].append(i + j)
            if got < want:
                break
            i += n_rec
        mv.release()
        buf.close()
    finally:
        os.close(fd)
    out = {"path": args.path, "record_size": rs, "size": size, "run": args.run, "direct": direct,
           "from_seq": first, "to_seq": last, "present": ranges(present),
           "present_count": len(present), "corrupt": corrupt, "foreign": ranges(foreign),
           "max_seq": present[-1] if present else None}
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    return 0


# --------------------------------------------------------------------------------------------
# command line


def positive(x):
    v = float(x)
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError("must be a positive finite number")
    return v


def parse_args(argv):
    command = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name")
    common.add_argument("--log")
    common.add_argument("--hz", type=positive)
    common.add_argument("--timeout", type=positive)
    common.add_argument("--duration", type=positive, default=DEFAULT_DURATION)
    common.add_argument("--count", type=int)
    common.add_argument("--log-sync", type=float, default=0.05)
    common.add_argument("--nice", type=int, help="set this nice value (e.g. -10) if allowed")
    p = argparse.ArgumentParser(prog="agent.py", description="hautils probe agent")
    sub = p.add_subparsers(dest="kind", required=True)
    s = sub.add_parser("icmp", parents=[common])
    s.add_argument("--target", required=True)
    s.add_argument("--socket", choices=("auto", "raw", "dgram"), default="auto")
    s.add_argument("--size", type=int, default=56, help="ICMP payload bytes (>= 16)")
    s.add_argument("--source", help="source address (one of the host's)")
    s = sub.add_parser("tcp", parents=[common])
    s.add_argument("--target", required=True)
    s.add_argument("--port", type=int, required=True)
    s = sub.add_parser("http", parents=[common])
    s.add_argument("--url", required=True)
    s = sub.add_parser("dns", parents=[common])
    s.add_argument("--server", required=True)
    s.add_argument("--port", type=int, default=53)
    s.add_argument("--qname", "--query", required=True)
    s.add_argument("--qtype", "--type", default="A")
    s = sub.add_parser("write", parents=[common])
    s.add_argument("--path", required=True)
    s.add_argument("--record-size", type=int, default=4096)
    s.add_argument("--direct", choices=("auto", "yes", "no"), default="auto")
    s.add_argument("--sync", choices=("sync", "dsync", "fdatasync"), default="sync",
                   help="O_SYNC (data and metadata, timestamps included), O_DSYNC (data, and only the "
                        "metadata needed to read it back), or fdatasync: a plain write into the page cache "
                        "followed by fdatasync(), as databases do (no O_DIRECT)")
    s = sub.add_parser("session", parents=[common])
    s.add_argument("--target", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--size", type=int, default=16, help="filler bytes in each line, after the sequence number")
    s.add_argument("--user-timeout", type=positive,
                   help="seconds unacknowledged data may wait before the connection is given up (TCP_USER_TIMEOUT)")
    s.add_argument("--reconnect", action="store_true",
                   help="after a break, open a new connection (its records have conn 1, 2, ...)")
    sub.add_parser("cmd", parents=[common])
    s = sub.add_parser("serve-echo")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bind", default="0.0.0.0")
    s = sub.add_parser("verify")
    s.add_argument("--path", required=True)
    s.add_argument("--record-size", type=int, default=4096)
    s.add_argument("--run", help="run id from the write probe's header (hex); others are 'foreign'")
    s.add_argument("--from-seq", type=int)
    s.add_argument("--to-seq", type=int)
    a = p.parse_args(argv)
    if a.kind in ("verify", "serve-echo"):
        return a
    a.command = command
    if command and a.kind != "cmd":
        p.error("only cmd takes a command after --")
    if a.hz is None:
        a.hz = 1.0 if a.kind == "cmd" else 100.0
    if a.hz > MAX_HZ:
        p.error("--hz at most %g" % MAX_HZ)
    if a.timeout is None:
        a.timeout = 5.0 if a.kind == "cmd" else DEFAULT_TIMEOUT
    if a.count is not None and a.count < 1:
        p.error("--count must be >= 1")
    if not a.name:
        a.name = a.kind
    if not a.log:
        a.log = os.path.join(DEFAULT_LOG_DIR, a.name + ".jsonl")
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.kind == "verify":
            return verify(args)
        if args.kind == "serve-echo":
            return serve_echo(args)
        return Agent(args).run()
    except (ProbeError, OSError) as e:
        sys.stderr.write("agent.py %s: %s\n" % (args.kind, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
