"""Probes, run for real on this machine: the agent runs as a local process (LocalHost stands in for
an SSH host) against loopback services the tests start, stop and break while the probe runs."""

from __future__ import annotations

import http.server
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hautils import probes

AGENT_SRC = Path(probes.__file__).with_name("agent.py")


# -- a Host double: same duck type as hautils.ssh.Host, but local ----------------------------------


@dataclass
class Result:
    exit_status: int
    stdout: str
    stderr: str
    duration: float


class LocalHost:
    """run/put/get on this machine (optionally inside a network namespace)."""

    def __init__(self, name: str = "local", netns: str | None = None):
        self.name = name
        self.netns = netns
        self.commands: list[str] = []

    def run(self, cmd: str, check: bool = True, timeout: float | None = None) -> Result:
        self.commands.append(cmd)
        argv = ["bash", "-c", cmd]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        t = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        res = Result(p.returncode, p.stdout, p.stderr, time.monotonic() - t)
        if check and p.returncode != 0:
            raise RuntimeError(f"{self.name}: `{cmd}` exited {p.returncode}: {p.stderr}")
        return res

    def put(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        p.chmod(mode)

    def get(self, path: str) -> bytes:
        return Path(path).read_bytes()


_ns_counter = itertools.count()


@pytest.fixture
def netns():
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2 for a private network namespace")
    name = f"hp2-{os.getpid()}-{next(_ns_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def kw(tmp_path):
    """Where the agent and logs go for a test, and which interpreter runs it."""
    return {"log_dir": str(tmp_path / "probes"), "agent_path": str(tmp_path / "lib" / "agent.py"),
            "python": sys.executable}


@pytest.fixture
def started():
    """Collects probes; whatever still runs at the end of a test is stopped (by its PID)."""
    ps: list[probes.Probe] = []
    yield ps
    for p in ps:
        if p.pid is not None and p.running():
            p.stop(timeout=10, kill=True)


def run_for(p, started, seconds: float, actions=()):
    """Start p, run (delay, label, fn) actions at offsets from the first attempt, stop after
    `seconds`; return the marks: time.time() before and after each action."""
    started.append(p)
    t0 = p.start()
    marks = {"t0": t0}
    for at, label, fn in actions:
        delay = t0 + at - time.time()
        if delay > 0:
            time.sleep(delay)
        marks[label + "_before"] = time.time()
        fn()
        marks[label + "_after"] = time.time()
    delay = t0 + seconds - time.time()
    if delay > 0:
        time.sleep(delay)
    p.stop(timeout=15)
    return marks


def run_phases(p, started, steps, per_phase: int, limit: float = 20.0):
    """Start p; before each (label, fn) step, and before stopping, wait until `per_phase`
    attempts sent since the previous step have finished.  Phases so last as long as the probe
    needs on a busy machine, not a fixed time.  Returns the marks (see run_for)."""
    started.append(p)
    t0 = p.start()
    marks = {"t0": t0}
    since = t0
    for label, fn in [*steps, (None, None)]:
        deadline = time.monotonic() + limit
        while sum(r["sent"] > since for r in p.records()) < per_phase:
            assert time.monotonic() < deadline, f"fewer than {per_phase} attempts in {limit} s"
            time.sleep(0.02)
        if fn is None:
            break
        marks[label + "_before"] = time.time()
        fn()
        marks[label + "_after"] = since = time.time()
    p.stop(timeout=15)
    return marks


def check_bookkeeping(p, df):
    h, f = df.attrs["header"], df.attrs["footer"]
    assert h is not None and h["probe"] == p.kind and h["pid"] == p.pid and h["name"] == p.name
    assert f is not None, "no footer line"
    assert f["logged"] == len(df)
    assert f["attempts"] == f["logged"] + f["unfinished"]
    assert list(df["seq"]) == sorted(set(df["seq"]))
    assert list(df.columns[:6]) == ["seq", "sent", "recv", "ok", "err", "late"]
    assert (df["sent"] >= h["t0"]).all() and (df["sent"] <= f["stopped"]).all()
    okr = df[df["ok"]]
    assert okr["recv"].notna().all() and (okr["recv"] >= okr["sent"]).all()
    assert okr["err"].isna().all()
    assert df.loc[~df["ok"], "err"].notna().all()
    # the absolute schedule: attempt seq went out in slot seq + (slots skipped so far), never
    # before that slot's time and, unless stalled between choosing and sending, within it
    full = df[df["seq"].to_numpy() == np.arange(len(df))]  # up to the first unfinished attempt
    slot = full["seq"] + full["late"].cumsum()
    lag = full["sent"] - (h["t0"] + slot / h["hz"])
    assert (lag > -1e-4).all(), lag.min()
    assert (lag < 1 / h["hz"]).mean() >= 0.9, lag.describe()


def check_phases(df, marks, phases, explain, timeout, min_count=5):
    """Each attempt's outcome must be explained by a service state that held at some moment
    between its send and its reply (or its timeout), and every phase must explain at least
    `min_count` attempts.

    `phases`: [(None, initial_state), (label, state), ...]: the switch to `state` happened between
    marks[label + "_before"] and marks[label + "_after"].  `explain(row)` names the state an
    outcome shows.  This holds however late the machine runs the probe or the test's servers."""
    windows = []
    for i, (label, state) in enumerate(phases):
        start = float("-inf") if label is None else marks[label + "_before"]
        end = float("inf") if i + 1 == len(phases) else marks[phases[i + 1][0] + "_after"]
        windows.append((state, start, end))
    counts = [0] * len(windows)
    bad = []
    for row in df.itertuples():
        state = explain(row)
        s = row.sent
        e = row.recv if not pd.isna(row.recv) else row.sent + timeout
        hit = [i for i, (st, a, b) in enumerate(windows) if st == state and a <= e + 0.005 and s - 0.005 <= b]
        if hit:
            counts[hit[0]] += 1
        else:
            bad.append((row.seq, state, row.err, round(s - marks["t0"], 4), round(e - marks["t0"], 4)))
    phase_marks = {k: round(v - marks["t0"], 4) for k, v in marks.items()}
    assert not bad, f"outcomes no service state explains: {bad[:10]} (marks {phase_marks})"
    assert min(counts) >= min_count, (list(zip(phases, counts)), phase_marks)
    return counts


# -- loopback services ------------------------------------------------------------------------------


class TcpServer:
    """Accepts and closes connections on 127.0.0.1; stop() closes the listener, start() reopens the
    same port."""

    def __init__(self):
        self.port = 0
        self.sock = None
        self.thread = None
        self.accepted = 0

    def start(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(1024)
        s.settimeout(0.02)
        self.port = s.getsockname()[1]
        self.sock = s
        self.thread = threading.Thread(target=self._loop, args=(s,), daemon=True)
        self.thread.start()

    def _loop(self, s):
        while self.sock is s:
            try:
                c, _ = s.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            c.close()

    def stop(self):
        s, self.sock = self.sock, None
        self.thread.join()
        s.close()


class HttpServer:
    def __init__(self):
        self.port = 0
        self.status = 200
        self.srv = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"hello probe\n" if self.path == "/health" else b"no\n"
                code = server.status if self.path == "/health" else 404
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.handler = Handler

    def start(self):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        srv.daemon_threads = True
        self.port = srv.server_address[1]
        self.srv = srv
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class DnsServer:
    """Answers A queries with 10.1.2.3 and SRV queries with a compressed target name.
    mode: ok | silent (drops queries) | servfail | badid (answers with the wrong id)."""

    def __init__(self):
        self.mode = "ok"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.02)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while self.running:
            try:
                q, src = self.sock.recvfrom(512)
            except (socket.timeout, OSError):
                continue
            self.queries += 1
            mode = self.mode
            if mode == "silent":
                continue
            qid = struct.unpack("!H", q[:2])[0]
            end = q.index(b"\0", 12) + 1
            question = q[12:end + 4]
            qtype = struct.unpack("!H", q[end:end + 2])[0]
            if mode == "servfail":
                self.sock.sendto(struct.pack("!HHHHHH", qid, 0x8182, 1, 0, 0, 0) + question, src)
                continue
            if qtype == 33:  # SRV: target sip1 + pointer to "example.test" in the question
                labels = q[12:end]
                off = 12 + labels.index(b"\x07example")
                rdata = struct.pack("!HHH", 10, 5, 5060) + b"\x04sip1" + struct.pack("!H", 0xC000 | off)
            else:
                rdata = socket.inet_aton("10.1.2.3")
            answer = struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata
            rid = qid ^ 0x8000 if mode == "badid" else qid  # far from any id in flight
            self.sock.sendto(struct.pack("!HHHHHH", rid, 0x8180, 1, 1, 0, 0) + question + answer, src)

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


# -- network probes -----------------------------------------------------------------------------


def _sysctl(ns: str, setting: str):
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", setting], check=True)


@pytest.mark.parametrize("sock", ["raw", "dgram"])
def test_icmp_outage_shows_as_timeouts(netns, kw, started, sock):
    if sock == "dgram":  # unprivileged ping sockets, allowed for our group in this namespace only
        _sysctl(netns, f"net.ipv4.ping_group_range={os.getgid()} {os.getgid()}")
    host = LocalHost("client", netns=netns)
    p = probes.icmp(host, "127.0.0.1", hz=100, timeout=0.2, socket=sock, **kw)
    marks = run_phases(p, started, [
        ("down", lambda: _sysctl(netns, "net.ipv4.icmp_echo_ignore_all=1")),
        ("up", lambda: _sysctl(netns, "net.ipv4.icmp_echo_ignore_all=0")),
    ], per_phase=30)
    df = p.log()
    check_bookkeeping(p, df)
    assert p.header["socket"] == sock and p.header["target"] == "127.0.0.1"
    assert p.footer["reason"] == "SIGTERM"

    def explain(r):
        return "up" if r.ok else "down" if r.err == "timeout" else "?"

    check_phases(df, marks, [(None, "up"), ("down", "down"), ("up", "up")], explain, 0.2, min_count=30)
    assert df.loc[~df["ok"], "recv"].isna().all()
    ok = df[df["ok"]]
    assert (ok["rtt_ms"] > 0).all() and (ok["rtt_ms"] < 200).all()
    assert ((ok["recv"] - ok["sent"]) * 1000 - ok["rtt_ms"]).abs().max() < 0.01
    if sock == "raw":
        assert set(ok["ttl"]) == {64}


def test_icmp_send_error_is_logged(netns, kw, started):
    subprocess.run(["ip", "netns", "exec", netns, "ip", "route", "add", "unreachable", "10.77.0.0/16"],
                   check=True)
    host = LocalHost("client", netns=netns)
    p = probes.icmp(host, "10.77.0.1", hz=50, timeout=0.2, **kw)
    run_for(p, started, 0.5)
    df = p.log()
    check_bookkeeping(p, df)
    assert len(df) >= 10
    assert set(df["err"]) == {"EHOSTUNREACH"} and not df["ok"].any()


def test_tcp_outage_is_connection_refused(kw, started):
    srv = TcpServer()
    srv.start()
    try:
        p = probes.tcp(LocalHost(), "127.0.0.1", srv.port, hz=100, **kw)
        marks = run_phases(p, started, [("down", srv.stop), ("up", srv.start)], per_phase=30)
    finally:
        if srv.sock is not None:
            srv.stop()
    df = p.log()
    check_bookkeeping(p, df)

    def explain(r):
        return "up" if r.ok else "down" if r.err == "ECONNREFUSED" else "?"

    check_phases(df, marks, [(None, "up"), ("down", "down"), ("up", "up")], explain, 1.0, min_count=30)
    assert set(df.loc[~df["ok"], "stage"]) == {"connect"}
    assert p.header["target"] == "127.0.0.1" and p.header["port"] == srv.port
    # connections the kernel completed in the backlog count as up, even if the server closed
    # its listener before accepting them: that is what a connect probe sees
    assert srv.accepted >= 30


def test_http_status_and_outage(kw, started):
    srv = HttpServer()
    srv.start()

    def status(code):
        return lambda: setattr(srv, "status", code)

    try:
        p = probes.http(LocalHost(), f"http://127.0.0.1:{srv.port}/health", hz=50, **kw)
        marks = run_phases(p, started, [("e503", status(503)), ("e200", status(200)),
                                        ("down", srv.stop), ("up", srv.start)], per_phase=15)
    finally:
        srv.stop()
    df = p.log()
    check_bookkeeping(p, df)

    def explain(r):
        if r.ok:
            return "200" if r.status == 200 and r.bytes == len(b"hello probe\n") else "?"
        if r.err == "http 503":
            return "503" if r.status == 503 else "?"
        return "down" if r.err in ("ECONNREFUSED", "ECONNRESET") else "?"

    counts = check_phases(df, marks, [(None, "200"), ("e503", "503"), ("e200", "200"), ("down", "down"),
                                      ("up", "200")], explain, 1.0, min_count=15)
    assert sum(counts) == len(df)
    assert "ECONNREFUSED" in set(df["err"])


def test_dns_timeouts_servfail_and_wrong_ids(kw, started):
    srv = DnsServer()

    def mode(m):
        return lambda: setattr(srv, "mode", m)

    try:
        p = probes.dns(LocalHost(), "127.0.0.1", "www.example.test", "A", hz=50, timeout=0.3,
                       port=srv.port, **kw)
        marks = run_phases(p, started, [("silent", mode("silent")), ("servfail", mode("servfail")),
                                        ("badid", mode("badid")), ("ok", mode("ok"))], per_phase=15)
    finally:
        srv.close()
    df = p.log()
    check_bookkeeping(p, df)
    ok = df[df["ok"]]
    assert set(ok["answer"]) == {"10.1.2.3"} and set(ok["rcode"]) == {0} and set(ok["ancount"]) == {1}

    def explain(r):
        if r.ok:
            return "ok"
        if r.err == "rcode 2":
            return "servfail" if r.rcode == 2 else "?"
        return "no answer" if r.err == "timeout" else "?"

    # an answer carrying another id is not ours: those queries time out like unanswered ones
    check_phases(df, marks, [(None, "ok"), ("silent", "no answer"), ("servfail", "servfail"),
                             ("badid", "no answer"), ("ok", "ok")], explain, 0.3, min_count=15)
    assert p.footer["stray_replies"] >= 15


def test_dns_srv_answer_with_compressed_name(kw, started):
    srv = DnsServer()
    try:
        p = probes.dns(LocalHost(), "127.0.0.1", "_sip._udp.example.test", "SRV", hz=50, port=srv.port, **kw)
        run_for(p, started, 0.4)
    finally:
        srv.close()
    df = p.log()
    check_bookkeeping(p, df)
    assert len(df) >= 10 and df["ok"].all()
    assert set(df["answer"]) == {"10 5 5060 sip1.example.test."}
    assert p.header["qtype"] == "SRV"


# -- write probe -----------------------------------------------------------------------------------


def test_write_verify_round_trip_corruption_and_truncation(tmp_path, kw, started):
    data = tmp_path / "disk" / "probe.dat"
    data.parent.mkdir()
    rs = 4096
    p = probes.write(LocalHost(), str(data), hz=50, record_size=rs, **kw)
    assert isinstance(p, probes.WriteProbe)
    run_for(p, started, 1.0)
    df = p.log()
    check_bookkeeping(p, df)
    n = len(df)
    assert n >= 25 and df["ok"].all() and list(df["seq"]) == list(range(n))
    h = p.header
    assert h["record_size"] == rs and h["sync"] == ("O_DIRECT|O_SYNC" if h["direct"] else "O_SYNC")
    assert len(h["run"]) == 16 and p.run_id == h["run"]
    assert data.stat().st_size == n * rs

    # the on-disk format: magic, seq, the send time of the log, run id, size ... crc32
    raw = data.read_bytes()
    rec3 = raw[3 * rs:4 * rs]
    magic, seq, ts, run, size = struct.unpack_from("<8sQd8sI", rec3)
    assert (magic, seq, run.hex(), size) == (b"HAPROBE1", 3, h["run"], rs)
    assert ts == df.loc[df["seq"] == 3, "sent"].item()
    assert struct.unpack_from("<I", rec3, rs - 4)[0] == zlib.crc32(rec3[:rs - 4])

    other = LocalHost("survivor")
    v = p.verify(host=other)
    assert any("verify" in c for c in other.commands)  # it ran on the host we named
    assert v["present"] == list(range(n)) and v["present_ranges"] == [[0, n - 1]]
    assert v["corrupt"] == [] and v["foreign"] == [] and v["max_seq"] == n - 1

    # one damaged byte in record 5's payload, garbage over record 7's start, record 9 zeroed (a
    # lost write), and the file cut in the middle of record n-2
    with open(data, "r+b") as f:
        f.seek(5 * rs + 100)
        b = f.read(1)
        f.seek(5 * rs + 100)
        f.write(bytes([b[0] ^ 0xFF]))
        f.seek(7 * rs)
        f.write(b"garbage!")
        f.seek(9 * rs)
        f.write(bytes(rs))
        f.truncate((n - 2) * rs + rs // 2)
    v = p.verify()
    assert v["corrupt"] == [5, 7, n - 2]
    assert v["present"] == [s for s in range(n - 2) if s not in (5, 7, 9)]
    assert v["present_ranges"] == [[0, 4], [6, 6], [8, 8], [10, n - 3]] and v["max_seq"] == n - 3

    # the same records seen as another run's: intact but foreign, none present
    out = subprocess.run([sys.executable, str(AGENT_SRC), "verify", "--path", str(data),
                          "--record-size", str(rs), "--run", "00" * 8],
                         capture_output=True, text=True, check=True)
    w = json.loads(out.stdout)
    assert w["present"] == [] and w["corrupt"] == [5, 7, n - 2]
    assert w["foreign"] == [[0, 4], [6, 6], [8, 8], [10, n - 3]]


def test_write_errors_are_logged_and_the_probe_keeps_going(kw, started):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    p = probes.write(LocalHost(), "/dev/full", hz=100, direct="no", count=15, **kw)
    started.append(p)
    p.start()
    assert p.wait(timeout=10, interval=0.1)
    df = p.log()
    check_bookkeeping(p, df)
    assert list(df["seq"]) == list(range(15)) and p.footer["reason"] == "count"
    assert set(df["err"]) == {"ENOSPC"} and not df["ok"].any() and df["recv"].notna().all()
    assert p.header["direct"] is False and p.header["sync"] == "O_SYNC"


# -- schedule, signals, commands ------------------------------------------------------------------


def test_rate_100hz_and_overhead(kw, started):
    p = probes.icmp(LocalHost(), "127.0.0.1", hz=100, **kw)
    run_for(p, started, 2.0)
    df = p.log()
    check_bookkeeping(p, df)
    assert 160 <= p.footer["attempts"] <= 240, p.footer
    assert p.header["nice"] == (-10 if os.geteuid() == 0 else os.getpriority(os.PRIO_PROCESS, 0))
    assert df["ok"].all()
    o = probes.overhead(df, p.footer)
    print("overhead at 100 Hz:", json.dumps(o))
    assert 8.0 <= o["interval_median_ms"] <= 12.0
    assert 80 <= o["rate_hz"] <= 120 and o["target_hz"] == 100
    assert o["attempts"] == len(df) and o["late_slots"] == df["late"].sum() == p.footer["late_slots"]
    assert 0 <= o["cpu_per_s"] < 0.5 and o["cpu_s"] == p.footer["cpu_s"]
    assert 0 <= o["interval_min_ms"] <= o["interval_median_ms"] <= o["interval_p95_ms"] \
        <= o["interval_max_ms"]


def test_no_burst_after_a_stall(kw, started):
    p = probes.icmp(LocalHost(), "127.0.0.1", hz=100, **kw)

    def stall():
        os.kill(p.pid, signal.SIGSTOP)
        time.sleep(0.4)
        os.kill(p.pid, signal.SIGCONT)

    run_for(p, started, 1.3, [(0.4, "stall", stall)])
    df = p.log()
    check_bookkeeping(p, df)
    gaps = df["sent"].diff()
    i = int(gaps.idxmax())
    assert gaps[i] >= 0.35
    resumed = df.loc[i]
    # the skipped slots are written on the first attempt scheduled after the stall: this one, or
    # the next when the stop hit between choosing this slot and sending
    skipped = df.loc[i:i + 1, "late"]
    assert skipped.max() >= 30, df.loc[i - 1:i + 2]
    assert df.loc[i - 1, "seq"] + 1 == resumed["seq"]  # seqs stay consecutive
    burst = df[(df["sent"] >= resumed["sent"]) & (df["sent"] < resumed["sent"] + 0.1)]
    assert len(burst) <= 15, len(burst)  # ~10 at 100 Hz; a catch-up burst would be ~40
    assert p.footer["late_slots"] == df["late"].sum() >= skipped.max()


def test_duration_and_sigint_end_with_a_footer(kw, started):
    p = probes.icmp(LocalHost(), "127.0.0.1", hz=50, duration=0.5, name="short", **kw)
    started.append(p)
    p.start()
    assert p.wait(timeout=10, interval=0.1)
    df = p.log()
    check_bookkeeping(p, df)
    assert p.footer["reason"] == "duration" and p.footer["unfinished"] == 0
    # 0.5 s at 50 Hz is 25 slots: each attempted, or skipped and counted (on a busy machine)
    assert 20 <= len(df) + p.footer["late_slots"] <= 25 and len(df) >= 10 and df["ok"].all()
    assert p.log_path.endswith("/short.jsonl")

    q = probes.icmp(LocalHost(), "127.0.0.1", hz=50, **kw)
    started.append(q)
    q.start()
    assert q.running()
    time.sleep(0.3)
    q.host.run(f"kill -INT {q.pid}")
    assert q.wait(timeout=10, interval=0.05)
    df = q.log()
    check_bookkeeping(q, df)
    assert q.footer["reason"] == "SIGINT" and not q.running()
    lines = Path(q.log_path).read_text().splitlines()
    assert "probe" in json.loads(lines[0]) and "stopped" in json.loads(lines[-1])


def test_command_probe_exit_status_and_timeout(tmp_path, kw, started):
    flag = tmp_path / "flag"
    flag.touch()
    p = probes.command(LocalHost(), f"test -e {flag} && echo up", hz=20, **kw)
    marks = run_phases(p, started, [("down", flag.unlink), ("up", flag.touch)], per_phase=6)
    df = p.log()
    check_bookkeeping(p, df)

    def explain(r):
        return "up" if r.ok and r.out == "up" else "down" if r.err == "exit 1" and r.status == 1 else "?"

    check_phases(df, marks, [(None, "up"), ("down", "down"), ("up", "up")], explain, 5.0, min_count=6)

    slow = probes.command(LocalHost(), ["sleep", "5"], hz=10, timeout=0.2, name="slow", **kw)
    run_for(slow, started, 0.7)
    df = slow.log()
    check_bookkeeping(slow, df)
    assert len(df) >= 2 and set(df["err"]) == {"timeout"}
    assert (df["sent"].diff().dropna() < 0.5).all()  # each sleep was killed at its timeout


# -- the notebook-side plumbing --------------------------------------------------------------------


def test_agent_is_copied_only_when_changed(tmp_path):
    host = LocalHost()
    path = str(tmp_path / "lib" / "agent.py")
    assert probes.install_agent(host, path) is True
    assert probes.install_agent(host, path) is False
    assert Path(path).read_bytes() == AGENT_SRC.read_bytes() and os.access(path, os.X_OK)
    Path(path).write_text("# an older agent\n")
    assert probes.install_agent(host, path) is True
    assert Path(path).read_bytes() == AGENT_SRC.read_bytes()


def test_a_probe_that_cannot_start_says_why(kw):
    p = probes.dns(LocalHost(), "127.0.0.1", "x.test", "BOGUS", **kw)
    with pytest.raises(probes.ProbeError, match="unknown query type"):
        p.start()
    assert not p.running()


def test_context_manager_stops_the_probe_and_names_are_not_shared(kw):
    p = probes.icmp(LocalHost(), "127.0.0.1", hz=20, **kw)
    with p:
        assert p.running()
        twin = probes.icmp(LocalHost(), "127.0.0.1", hz=20, **kw)  # same default name
        with pytest.raises(probes.ProbeError, match="already runs"):
            twin.start()
        time.sleep(0.2)
        assert p.running() and twin.pid is None
    assert not p.running() and p.footer["reason"] == "SIGTERM"
    assert len(p.records()) == p.footer["logged"] >= 2


def test_parse_log_skips_a_torn_line_and_sorts():
    text = "\n".join([
        json.dumps({"probe": "icmp", "hz": 10, "t0": 100.0, "cpu_s": 0.05}),
        json.dumps({"seq": 1, "sent": 100.1, "recv": None, "ok": False, "err": "timeout"}),
        json.dumps({"seq": 0, "sent": 100.0, "recv": 100.002, "ok": True, "err": None, "rtt_ms": 2.0}),
        json.dumps({"seq": 2, "sent": 100.5, "recv": 100.501, "ok": True, "err": None, "late": 3}),
        '{"seq": 3, "sent": 100.6, "re',  # power cut mid-line
    ])
    header, recs, footer = probes.parse_log(text.encode())
    assert header["probe"] == "icmp" and footer is None
    assert [r["seq"] for r in recs] == [0, 1, 2]
    df = probes._frame(recs, header, footer)
    assert list(df.columns) == ["seq", "sent", "recv", "ok", "err", "late", "rtt_ms"]
    assert list(df["late"]) == [0, 0, 3] and list(df["ok"]) == [True, False, True]
    assert pd.isna(df.loc[1, "recv"]) and df["recv"].dtype == "float64"


def test_overhead_from_known_numbers():
    sent = [10.0, 10.01, 10.02, 10.03, 10.07]  # seq 4 comes after 3 skipped slots
    df = probes._frame([{"seq": i, "sent": s, "recv": s + 0.001, "ok": True, "err": None,
                         **({"late": 3} if i == 4 else {})} for i, s in enumerate(sent)],
                       {"probe": "icmp", "hz": 100.0, "t0": 10.0, "cpu_s": 0.1}, None)
    o = probes.overhead(df, {"stopped": 10.08, "attempts": 5, "cpu_s": 0.3, "elapsed": 0.08})
    assert o["attempts"] == 5 and o["late_slots"] == 3
    assert o["interval_median_ms"] == pytest.approx(10.0) and o["interval_max_ms"] == pytest.approx(40.0)
    assert o["rate_hz"] == pytest.approx(4 / 0.07)
    assert o["lag_median_ms"] == pytest.approx(0.0, abs=1e-6)
    assert o["loop_cpu_s"] == pytest.approx(0.2) and o["cpu_per_s"] == pytest.approx(2.5)
    assert o["cpu_ms_per_attempt"] == pytest.approx(40.0)


def test_wait_recovered_needs_an_outage_then_a_quick_success():
    import json as _json

    from hautils.probes import Probe, ProbeError

    class FakeHost:
        """The guest's clock (first line), then the probe log's tail."""
        name = "client"

        def __init__(self, lines, now):
            self.lines, self.now = lines, now

        def run(self, cmd, check=True, timeout=None):
            class R:
                pass
            r = R()
            r.stdout = "\n".join([f"{self.now:.6f}"] + [_json.dumps(x) for x in self.lines])
            return r

    def quick(seq0, t0, n):
        return [{"seq": seq0 + i, "sent": t0 + i / 10, "recv": t0 + i / 10 + 0.01, "ok": True} for i in range(n)]

    steady = quick(0, 0.0, 30)
    p = Probe(FakeHost(steady, now=3.0), "write", [], hz=10, name="t")
    with pytest.raises(ProbeError):  # quick writes after the fault, but no outage yet: keep waiting
        p.wait_recovered(1.0, timeout=0.05, interval=0.01)
    blocked = quick(0, 0.0, 20) + [{"seq": 20, "sent": 2.0, "recv": 6.0, "ok": True}] + quick(21, 6.0, 10)
    p.host = FakeHost(blocked, now=7.0)
    assert p.wait_recovered(1.0, timeout=1) == pytest.approx(6.01)
    # a stall, quick answers, then a write blocked right now (no line yet): not recovered
    stall = quick(0, 0.0, 20) + [{"seq": 20, "sent": 2.0, "recv": 3.3, "ok": True}] + quick(21, 3.3, 25)
    p.host = FakeHost(stall, now=20.0)
    with pytest.raises(ProbeError):
        p.wait_recovered(1.0, timeout=0.05, interval=0.01)
    # ... until the blocked write comes back and quick answers follow for `settle` seconds
    back = stall + [{"seq": 46, "sent": 5.8, "recv": 21.0, "ok": True}] + quick(47, 21.0, 3)
    p.host = FakeHost(back, now=21.3)
    with pytest.raises(ProbeError):  # 0.2 s of quick answers: less than settle
        p.wait_recovered(1.0, timeout=0.05, interval=0.01)
    p.host = FakeHost(back + quick(50, 21.3, 5), now=21.8)
    assert p.wait_recovered(1.0, timeout=1) == pytest.approx(21.01)


def test_icmp_source_address_is_used(netns, kw, started):
    """``source=`` binds the probe to one of the host's addresses: the replies come back to it
    (and the header says which), an address the host lacks fails at once, naming it."""
    subprocess.run(["ip", "netns", "exec", netns, "ip", "addr", "add", "127.0.0.9/8", "dev", "lo"], check=False)
    host = LocalHost("client", netns=netns)
    p = probes.icmp(host, "127.0.0.1", hz=50, timeout=0.2, source="127.0.0.9", **kw)
    run_for(p, started, 0.5)
    df = p.log()
    assert p.header["source"] == "127.0.0.9"
    assert len(df) >= 10 and df["ok"].all()
    bad = probes.icmp(host, "127.0.0.1", hz=50, timeout=0.2, source="192.0.2.77", **kw)
    with pytest.raises(Exception, match="192.0.2.77|Cannot assign|EADDRNOTAVAIL"):
        run_for(bad, started, 0.5)


def test_wait_answering_returns_once_a_span_of_attempts_was_answered_and_raises_while_they_fail(netns, kw, started):
    host = LocalHost("client", netns=netns)
    p = probes.icmp(host, "127.0.0.1", hz=100, timeout=0.2, **kw)
    started.append(p)
    p.start()
    t = time.monotonic()
    p.wait_answering(span=0.5, timeout=10, interval=0.1)
    assert time.monotonic() - t < 5
    _sysctl(netns, "net.ipv4.icmp_echo_ignore_all=1")  # no more answers
    time.sleep(0.5)
    with pytest.raises(probes.ProbeError, match="unanswered"):
        p.wait_answering(span=0.5, timeout=1.0, interval=0.1)
    _sysctl(netns, "net.ipv4.icmp_echo_ignore_all=0")
    p.wait_answering(span=0.5, timeout=10, interval=0.1)
    p.stop()


# -- session probe and echo server ---------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def echo(kw):
    """An EchoServer on this machine (agent serve-echo), stopped at the end of the test."""
    srv = probes.EchoServer(LocalHost(), _free_port(), bind="127.0.0.1", **kw)
    srv.start()
    yield srv
    srv.stop()


def test_session_probe_uses_one_connection_for_every_attempt(kw, started, echo):
    p = probes.session(LocalHost(), "127.0.0.1", echo.port, hz=50, **kw)
    run_for(p, started, 1.0)
    df = p.log()
    check_bookkeeping(p, df)
    assert len(df) >= 40 and df["ok"].all() and set(df["conn"]) == {0}
    assert (df["rtt_ms"] < 100).all()
    assert p.header["local"].startswith("127.0.0.1:") and p.header["user_timeout"] == 10.0
    assert p.footer["breaks"] == [] and p.footer["connections"] == 1
    opened = [line for line in echo.log() if " open " in line]
    assert len(opened) == 1 and opened[0].endswith(p.header["local"])  # one connection, the probe's
    assert probes.session_breaks(df, after=p.t0)["survived"]


def test_session_break_is_recorded_and_not_hidden_by_a_reconnect(kw, started, echo):
    """The server goes away mid-run: the break is logged with its error, later attempts fail
    with 'closed' (no silent new connection), and a server that comes back changes nothing."""
    p = probes.session(LocalHost(), "127.0.0.1", echo.port, hz=50, **kw)
    marks = run_for(p, started, 2.0, [(0.5, "kill", echo.stop), (1.0, "back", echo.start)])
    df = p.log()
    check_bookkeeping(p, df)
    before = df[df["sent"] < marks["kill_before"]]
    after = df[df["sent"] > marks["kill_after"] + 0.1]
    assert len(before) >= 20 and before["ok"].all()
    assert len(after) >= 40 and not after["ok"].any() and set(after["err"]) == {"closed"}
    (brk,) = p.footer["breaks"]
    assert brk["conn"] == 0 and brk["err"] in ("eof", "ECONNRESET") and brk["stage"] == "recv"
    assert marks["kill_before"] <= brk["at"] <= marks["back_before"]
    v = probes.session_breaks(df, after=marks["kill_before"])
    assert not v["survived"] and v["broke"] and v["break_err"] == brk["err"] and v["connections"] == 1
    assert 0 <= v["break_s"] < 0.5


def test_session_reconnect_opens_a_new_connection_and_says_so(kw, started, echo):
    p = probes.session(LocalHost(), "127.0.0.1", echo.port, hz=50, reconnect=True, **kw)
    marks = run_for(p, started, 2.0, [(0.5, "kill", echo.stop), (1.0, "back", echo.start)])
    df = p.log()
    check_bookkeeping(p, df)
    late = df[df["sent"] > marks["back_after"] + 0.2]
    assert len(late) >= 20 and late["ok"].all() and set(late["conn"]) == {1}
    gap = df[(df["sent"] > marks["kill_after"] + 0.1) & (df["sent"] < marks["back_before"])]
    assert not gap["ok"].any() and set(gap["err"]) <= {"closed", "connecting", "ECONNREFUSED"}
    assert p.footer["connections"] == 2
    v = probes.session_breaks(df, after=marks["kill_after"])
    assert not v["survived"] and v["first_ok_conn"] == 1 and v["connections"] == 2


def test_session_breaks_from_a_log_that_survived_a_pause():
    """A failover with the state synced: answers stop, then the same connection answers again."""
    rows = [{"seq": i, "sent": 10 + i * 0.1, "recv": None if 5 <= i < 9 else 10 + i * 0.1 + 0.3 * (i == 9),
             "ok": not 5 <= i < 9, "err": "timeout" if 5 <= i < 9 else None, "late": 0, "conn": 0}
            for i in range(15)]
    df = pd.DataFrame(rows)
    df.attrs["footer"] = {"stopped": 12, "breaks": [], "connections": 1}
    v = probes.session_breaks(df, after=10.45)
    assert v == {"survived": True, "broke": False, "break_err": None, "break_s": None, "connections": 1,
                 "first_ok_conn": 0}
    assert not probes.session_breaks(df.iloc[:9], after=10.45)["survived"]  # stopped before an answer


def test_session_probe_without_a_server_does_not_start(kw):
    p = probes.session(LocalHost(), "127.0.0.1", _free_port(), hz=10, **kw)
    with pytest.raises(probes.ProbeError, match="ECONNREFUSED|Connection refused"):
        p.start(wait=5)
