"""Probes that run inside the lab and measure a service from a client host's point of view.

A probe is one long-running ``python3`` process on the client host (``agent.py`` next to this
file, standard library only, copied to ``/usr/local/lib/hautils/agent.py``).  It makes attempts at
a fixed rate (1 Hz to a few hundred Hz) and logs one JSON line per attempt to
``/var/lib/hautils/probes/<name>.jsonl`` on that host; its stderr goes to ``<name>.err`` and its
PID to ``<name>.pid`` beside it (one running probe per name and host).  The notebook starts and
stops it over SSH and fetches the log as a table::

    p = probes.icmp(lab["client"], "10.0.0.1", hz=100)
    with p:
        lab.power_off("server0")
        time.sleep(20)
    df = p.log()            # seq, sent, recv, ok, err, late, rtt_ms, ...

Log lines (the analysis module relies on exactly this):

- header (first line, has key ``probe``): ``probe, name, target, hz, timeout, duration, count,
  host, pid, started`` (the agent's start), ``t0`` (epoch of the first scheduled attempt; slot k
  is due at t0 + k/hz), ``nice``, ``cpu_s`` (CPU spent starting up) plus kind-specific fields
  (write: ``run, direct, sync, record_size``; icmp: ``socket``; dns: ``qname, qtype``;
  session: ``local``, the connection's own address:port, ``user_timeout``, ``reconnect``);
- attempts: ``{"seq": int, "sent": epoch, "recv": epoch|null, "ok": bool, "err": str|null}``,
  ``"late": n`` when n schedule slots were skipped before this attempt, plus kind-specific
  fields (``rtt_ms``, ``ttl``, ``status``, ``bytes``, ``rcode``, ``ancount``, ``answer``,
  ``stage``, ``out``, ``conn``); lines are written as attempts finish, so not in seq order;
- footer (last line, key ``stopped``): ``stopped, attempts, logged, unfinished, late_slots,
  reason, cpu_s`` (user+sys CPU of the agent), ``elapsed`` (stopped - t0) and counters
  (session: ``breaks``, a list of ``{conn, at, err, stage}``, and ``connections``).

Analysis (outages, lost writes) lives in :mod:`hautils.analysis`; this module only runs probes and
returns what they saw.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "AGENT_PATH", "LOG_DIR", "EchoServer", "Probe", "ProbeError", "WriteProbe", "command", "dns",
    "http", "icmp", "install_agent", "overhead", "parse_log", "session", "session_breaks", "tcp", "write",
]

AGENT_PATH = "/usr/local/lib/hautils/agent.py"
LOG_DIR = "/var/lib/hautils/probes"
DEFAULT_DURATION = 3600.0
_AGENT_FILE = Path(__file__).with_name("agent.py")
_BASE_COLUMNS = ["seq", "sent", "recv", "ok", "err", "late"]


class ProbeError(RuntimeError):
    """A probe could not be started, stopped or read."""


def agent_source() -> bytes:
    return _AGENT_FILE.read_bytes()


def install_agent(host, path: str = AGENT_PATH) -> bool:
    """Copy the agent to ``host`` unless an identical one (same SHA-256) is there; True if copied."""
    src = agent_source()
    digest = hashlib.sha256(src).hexdigest()
    q = shlex.quote
    res = host.run(f"mkdir -p {q(str(Path(path).parent))} && {{ sha256sum {q(path)} 2>/dev/null || true; }}",
                   timeout=120)
    if res.stdout.split()[:1] == [digest]:
        return False
    host.put(path, src, 0o755)
    return True


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "probe"


def parse_log(data: bytes | str) -> tuple[dict | None, list[dict], dict | None]:
    """Split a probe log into (header, attempt records sorted by seq, footer).

    Lines that do not parse (the torn last line after a power cut) are skipped."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    header = footer = None
    recs = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if "probe" in obj:
            header = obj
        elif "stopped" in obj:
            footer = obj
        elif "seq" in obj:
            recs.append(obj)
    recs.sort(key=lambda r: r["seq"])
    return header, recs, footer


def _frame(recs: list[dict], header: dict | None, footer: dict | None) -> pd.DataFrame:
    df = pd.DataFrame.from_records(recs)
    for col in _BASE_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series(dtype="float64")
    extras = [c for c in df.columns if c not in _BASE_COLUMNS]
    df = df[_BASE_COLUMNS + extras]
    df["seq"] = df["seq"].astype("int64")
    df["sent"] = df["sent"].astype("float64")
    df["recv"] = pd.to_numeric(df["recv"], errors="coerce").astype("float64")
    df["ok"] = df["ok"].astype(bool)
    df["late"] = df["late"].fillna(0).astype("int64")
    df = df.reset_index(drop=True)
    df.attrs["header"] = header
    df.attrs["footer"] = footer
    return df


class Probe:
    """One probe agent on one host.  Build it with :func:`icmp`, :func:`tcp`, :func:`http`,
    :func:`dns`, :func:`write` or :func:`command`.

    Common keywords: ``duration`` (s; the agent always stops by itself, default 3600),
    ``count`` (stop after n attempts), ``timeout`` (s), ``nice`` (default -10: the probe measures
    the service, not the CPU contention on its host; None leaves it), ``log_sync`` (s between
    fdatasyncs of the log), ``log_dir``, ``agent_path``, ``python``."""

    def __init__(self, host, kind: str, options: Sequence[str], *, hz: float, name: str | None = None,
                 target: str = "", timeout: float | None = None, duration: float = DEFAULT_DURATION,
                 count: int | None = None, log_dir: str = LOG_DIR, agent_path: str = AGENT_PATH,
                 python: str = "python3", log_sync: float | None = None, nice: int | None = -10,
                 command: Sequence[str] | None = None):
        if not hz > 0:
            raise ValueError("hz must be > 0")
        if not 0 < duration < float("inf"):
            raise ValueError("duration must be positive and finite: a probe always stops by itself")
        self.host = host
        self.kind = kind
        self.options = [str(o) for o in options]
        self.hz = float(hz)
        self.target = target
        self.name = _slug(name or f"{kind}-{target}")
        self.timeout = timeout
        self.duration = float(duration)
        self.count = count
        self.log_dir = str(log_dir)
        self.agent_path = str(agent_path)
        self.python = python
        self.log_sync = log_sync
        self.nice = nice
        self.command = list(command or [])
        if (kind == "cmd") != bool(self.command):
            raise ValueError("a command is given for kind 'cmd', and only for it")
        self.log_path = f"{self.log_dir}/{self.name}.jsonl"
        self.err_path = f"{self.log_dir}/{self.name}.err"
        self.pid_path = f"{self.log_dir}/{self.name}.pid"
        self.pid: int | None = None
        self.t0: float | None = None
        self.header: dict | None = None
        self.footer: dict | None = None

    def __repr__(self) -> str:
        where = getattr(self.host, "name", "?")
        return f"<{type(self).__name__} {self.name} {self.kind} {self.target} {self.hz:g} Hz on {where}>"

    def argv(self) -> list[str]:
        """The agent's command line on the host."""
        a = [self.python, self.agent_path, self.kind, *self.options, "--name", self.name,
             "--log", self.log_path, "--hz", repr(self.hz), "--duration", repr(self.duration)]
        if self.timeout is not None:
            a += ["--timeout", repr(float(self.timeout))]
        if self.count is not None:
            a += ["--count", str(int(self.count))]
        if self.log_sync is not None:
            a += ["--log-sync", repr(float(self.log_sync))]
        if self.nice is not None:
            a += ["--nice", str(int(self.nice))]
        if self.kind == "cmd":
            a += ["--", *self.command]
        return a

    # -- life cycle -------------------------------------------------------------------------

    def start(self, wait: float = 60.0) -> float:
        """Start the agent detached on the host; return the epoch time of its first scheduled attempt.

        Copies the agent first when the host lacks it or has another version.  Waits (up to
        ``wait`` seconds) for the log's header line, so the probe is running when this returns."""
        if self.pid is not None and self.running():
            raise ProbeError(f"{self.name} is already running on {self.host.name} (pid {self.pid})")
        install_agent(self.host, self.agent_path)
        q = shlex.quote
        log, err = q(self.log_path), q(self.err_path)
        loops = max(1, int(wait / 0.05))
        pidf = q(self.pid_path)
        script = (
            f"if [ -f {pidf} ] && grep -qF -- {log} /proc/$(cat {pidf})/cmdline 2>/dev/null; then\n"
            f"  echo busy=$(cat {pidf}); exit 0\n"
            "fi\n"
            f"mkdir -p {q(self.log_dir)} && rm -f {log} {err} || exit 1\n"
            f"setsid nohup {shlex.join(self.argv())} </dev/null >{err} 2>&1 &\n"
            "pid=$!\n"
            f"echo $pid >{pidf}\n"
            "i=0\n"
            f"while [ ! -s {log} ] && kill -0 $pid 2>/dev/null && [ $i -lt {loops} ]; do\n"
            "  sleep 0.05; i=$((i+1))\n"
            "done\n"
            "echo pid=$pid\n"
            f"head -n 1 {log} 2>/dev/null\n"
            "true\n")
        self.header = self.footer = None
        self.pid = self.t0 = None
        res = self.host.run(script, timeout=wait * 3 + 60)
        header = None
        for line in res.stdout.splitlines():
            if line.startswith("busy="):
                raise ProbeError(f"a probe named {self.name} already runs on {self.host.name} "
                                 f"(pid {line[5:]}, log {self.log_path}): give this one another name=")
            if line.startswith("pid="):
                self.pid = int(line[4:])
            elif line.startswith("{"):
                try:
                    header = json.loads(line)
                except ValueError:
                    pass
        if header is None:  # torn read of a line being written, or the agent failed: look again
            try:
                header = parse_log(self.host.get(self.log_path))[0]
            except Exception:
                header = None
        if header is None:
            try:
                why = self.host.get(self.err_path).decode("utf-8", "replace").strip()
            except Exception as e:
                why = f"(no {self.err_path}: {e})"
            raise ProbeError(f"probe {self.name} did not start on {self.host.name}: {why or 'no header'}")
        self.header = header
        self.pid = int(header["pid"])
        self.t0 = float(header["t0"])
        return self.t0

    def _alive_sh(self) -> str:
        return (f"pid={int(self.pid)}; log={shlex.quote(self.log_path)}\n"
                'alive() { grep -qF -- "$log" /proc/$pid/cmdline 2>/dev/null; }\n')

    def running(self) -> bool:
        """True while the agent process runs (checked by PID and its command line)."""
        if self.pid is None:
            return False
        r = self.host.run(self._alive_sh() + "alive", check=False, timeout=60)
        return r.exit_status == 0

    def stop(self, timeout: float = 30.0, kill: bool = False) -> None:
        """SIGTERM the agent and wait for its footer line (``self.footer``).

        A write blocked in the kernel (a stalled iSCSI disk) delays the exit until the write
        returns; after ``timeout`` seconds this raises, or with ``kill=True`` sends SIGKILL (then
        there is no footer)."""
        if self.pid is None:
            raise ProbeError(f"{self.name} was not started")
        loops = max(1, int(timeout / 0.05))
        script = (self._alive_sh() +
                  "alive && kill -TERM $pid\n"
                  "i=0\n"
                  f"while alive && [ $i -lt {loops} ]; do sleep 0.05; i=$((i+1)); done\n")
        if kill:
            script += "alive && kill -KILL $pid && sleep 0.2\n"
        script += ('if alive; then echo state=alive; else echo state=gone; fi\n'
                   'tail -n 1 "$log" 2>/dev/null\ntrue\n')
        res = self.host.run(script, timeout=timeout * 3 + 60)
        lines = res.stdout.splitlines()
        if "state=alive" in lines:
            raise ProbeError(f"{self.name} (pid {self.pid}) still runs {timeout:g} s after SIGTERM "
                             "(blocked in a write?); stop(kill=True) kills it")
        self.footer = None
        for line in lines:
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if "stopped" in obj:
                    self.footer = obj

    def wait(self, timeout: float | None = None, interval: float = 0.5) -> bool:
        """Wait until the agent stops by itself (``duration``/``count``); True if it has."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.running():
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(interval)
        return True

    def _tail(self, n: int) -> tuple[float | None, list[dict], str]:
        """The guest's clock now and the last ``n`` attempt records of the live log (header and
        footer left out), with the raw output for error messages."""
        out = self.host.run(f"date +%s.%N; tail -n {int(n)} {shlex.quote(self.log_path)}",
                            check=False, timeout=30).stdout
        lines = out.splitlines()
        try:
            now = float(lines[0].replace(",", "."))
        except (IndexError, ValueError):
            now = None
        recs = []
        for line in lines[1:]:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if "seq" in r and "sent" in r:
                recs.append(r)
        return now, recs, out

    def wait_answering(self, span: float = 1.0, timeout: float = 120.0, interval: float = 0.5) -> float:
        """Wait until every attempt of the last ``span`` seconds (by the guest's clock) was
        answered, and there were at least half as many as ``hz`` asks for; returns the guest's
        time then.  For faults whose end the network announces before the client sees it (a
        route that points at a router which cannot forward yet): call after that, so that a
        trial does not end inside an outage that has not shown yet."""
        need = max(1, int(span * self.hz / 2))
        late = self.timeout or 0.0  # an attempt's answer (or its timeout) is in the log this much later
        deadline = time.monotonic() + timeout
        while True:
            now, recs, _ = self._tail(max(50, int(4 * span * self.hz)))
            window = [] if now is None else [r for r in recs if now - late - span <= r["sent"] <= now - late]
            if len(window) >= need and all(r.get("ok") for r in window):
                return now
            if time.monotonic() > deadline:
                bad = sum(not r.get("ok") for r in window)
                raise ProbeError(f"probe {self.name} on {self.host.name}: {bad} of the last {len(window)} attempts "
                                 f"unanswered still, {timeout:g} s on (wanted {span:g} s of answers)")
            time.sleep(interval)

    def wait_recovered(self, after: float, timeout: float = 180.0, max_latency: float = 0.5,
                       interval: float = 0.5, settle: float = 0.5) -> float:
        """Wait until the probe has seen an outage after ``after`` (epoch s: the fault) and
        answers quickly again; returns the ack time of the first quick success after the last
        outage.  For faults with no fixed recovery time: poll the live log instead of sleeping
        a guessed number of seconds.

        An outage here is a failed attempt or one slower than ``max_latency`` (a write that
        blocked during a failover).  Recovered means: every attempt since the last outage was
        quick, they span at least ``settle`` seconds, and the newest was answered just now by
        the guest's clock.  A write that is blocked right now leaves no line in the log, so a
        log whose last line is old means the probe is inside an outage the log cannot show yet.

        A brief stall before the real interruption (a busy server during a graceful handover)
        is an outage followed by quick answers too: call this once the interruption has begun
        (a graceful stop has returned, the old server has let go), not straight after the
        fault.  Do not poll the survivor instead: in a UML guest that slows its takeover."""
        stale = max(1.0, 3.0 / self.hz) + max_latency
        deadline = time.monotonic() + timeout
        while True:
            now, recs, out = self._tail(400)
            seen_outage = False
            first_quick = last_recv = None
            for r in recs:
                recv = r.get("recv")
                if recv is None or recv <= after:
                    if not r.get("ok") and r["sent"] >= after:
                        seen_outage, first_quick = True, None
                    continue
                last_recv = recv
                if bool(r.get("ok")) and recv - r["sent"] <= max_latency:
                    if seen_outage and first_quick is None:
                        first_quick = float(recv)
                else:
                    seen_outage, first_quick = True, None
            if (first_quick is not None and now is not None and last_recv is not None
                    and now - last_recv <= stale and last_recv - first_quick >= settle):
                return first_quick
            if time.monotonic() > deadline:
                raise ProbeError(f"{self.name} on {self.host.name}: no outage and recovery seen within "
                                 f"{timeout:.0f} s after the fault (last line of {self.log_path}: "
                                 f"{out.strip()[-300:]!r})")
            time.sleep(interval)

    def __enter__(self) -> "Probe":
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.pid is not None and self.running():
                self.stop()
        except Exception:
            if exc_type is None:  # do not hide the error that ended the block (a dead client...)
                raise

    # -- results ------------------------------------------------------------------------------

    def _fetch(self) -> tuple[dict | None, list[dict], dict | None]:
        header, recs, footer = parse_log(self.host.get(self.log_path))
        if header is not None:
            self.header = header
        if footer is not None:
            self.footer = footer
        return header, recs, footer

    def records(self) -> list[dict]:
        """The attempts as dicts, sorted by seq (fetches the log; works while running)."""
        return self._fetch()[1]

    def log(self) -> pd.DataFrame:
        """The attempts as a table sorted by seq: seq, sent, recv (NaN if none), ok, err, late
        (slots skipped before it), then the kind's own columns.  ``df.attrs`` holds the header and
        footer; so do ``self.header``/``self.footer``."""
        header, recs, footer = self._fetch()
        return _frame(recs, header, footer)


class WriteProbe(Probe):
    """Write probe: numbered, checksummed records at offset seq*record_size, acked by the syscall."""

    def __init__(self, host, path: str, *, record_size: int = 4096, **kw):
        self.path = path
        self.record_size = int(record_size)
        super().__init__(host, "write", kw.pop("options", []), target=path, **kw)

    @property
    def run_id(self) -> str | None:
        """Random id of the current run (in every record), from the header."""
        return self.header.get("run") if self.header else None

    def verify(self, host=None, *, path: str | None = None, from_seq: int | None = None,
               to_seq: int | None = None, timeout: float = 600.0) -> dict:
        """Read the records back on ``host`` (default: the probe's host; after a failover the
        survivor that sees the same disk) and return the agent's verdict::

            {"present": [seq, ...], "present_ranges": [[a, b], ...], "corrupt": [seq, ...],
             "foreign": [[a, b], ...], "max_seq": int | None, "size": bytes, "direct": bool, ...}

        Only records of this run count as present (the run id is in the header); intact records of
        another run are "foreign"; torn, damaged or misplaced ones are "corrupt"; zeros are absent.
        Which acknowledged writes are missing is :func:`hautils.analysis.lost_writes`' job."""
        h = host or self.host
        install_agent(h, self.agent_path)
        argv = [self.python, self.agent_path, "verify", "--path", path or self.path,
                "--record-size", str(self.record_size)]
        if self.run_id:
            argv += ["--run", self.run_id]
        if from_seq is not None:
            argv += ["--from-seq", str(int(from_seq))]
        if to_seq is None and self.footer is not None:
            to_seq = int(self.footer["attempts"]) - 1
        if to_seq is not None:
            argv += ["--to-seq", str(int(to_seq))]
        res = h.run(shlex.join(argv), timeout=timeout)
        out = json.loads(res.stdout.strip().splitlines()[-1])
        out["present_ranges"] = out["present"]
        out["present"] = [s for a, b in out["present_ranges"] for s in range(a, b + 1)]
        return out


# -- constructors ---------------------------------------------------------------------------------


def icmp(host, target: str, hz: float = 100, name: str | None = None, timeout: float = 1.0, *,
         socket: str = "auto", size: int = 56, source: str | None = None, **kw) -> Probe:
    """ICMP echo to ``target`` (IPv4 or IPv6): ``ok`` on the matching reply; ``rtt_ms``, ``ttl``.
    ``source``: send from this address of the host (pins the flow to one of several
    equal-cost paths, which routers choose by hashing source and destination)."""
    opts = ["--target", target, "--socket", socket, "--size", str(size)] + (["--source", source] if source else [])
    return Probe(host, "icmp", opts, hz=hz, name=name or f"icmp-{target}", target=target,
                 timeout=timeout, **kw)


def tcp(host, target: str, port: int, hz: float = 100, name: str | None = None,
        timeout: float = 1.0, **kw) -> Probe:
    """TCP connect to ``target:port`` per attempt (closed normally): ``ok`` once connected."""
    return Probe(host, "tcp", ["--target", target, "--port", str(int(port))], hz=hz,
                 name=name or f"tcp-{target}-{port}", target=f"{target}:{port}", timeout=timeout, **kw)


def http(host, url: str, hz: float = 100, name: str | None = None, timeout: float = 1.0,
         **kw) -> Probe:
    """HTTP/1.0 GET of ``url`` (http:// only) per attempt: ``ok`` on 2xx/3xx; ``status``, ``bytes``."""
    slug = url.split("://", 1)[-1]
    return Probe(host, "http", ["--url", url], hz=hz, name=name or f"http-{slug}", target=url,
                 timeout=timeout, **kw)


def dns(host, server: str, qname: str, qtype: str = "A", hz: float = 100, name: str | None = None,
        timeout: float = 1.0, *, port: int = 53, **kw) -> Probe:
    """UDP DNS query per attempt: ``ok`` on a reply with our id and RCODE 0; ``rcode``,
    ``ancount``, ``answer`` (comma-separated A/AAAA addresses or "prio weight port target")."""
    opts = ["--server", server, "--port", str(int(port)), "--qname", qname, "--qtype", qtype]
    return Probe(host, "dns", opts, hz=hz, name=name or f"dns-{server}-{qname}-{qtype}",
                 target=f"{server}:{port} {qname} {qtype}", timeout=timeout, **kw)


def write(host, path: str, hz: float = 100, record_size: int = 4096, name: str | None = None, *,
          direct: str = "auto", sync: str = "sync", **kw) -> WriteProbe:
    """Synchronous writes of numbered, checksummed records to ``path`` (file or block device),
    O_DIRECT|O_SYNC where supported (else O_SYNC; the header says which); ``recv`` is the ack.
    ``sync="dsync"``: O_DSYNC instead of O_SYNC (no inode timestamp is forced out with each
    write); ``sync="fdatasync"``: a plain write into the page cache, then ``fdatasync()``, as a
    database does (no O_DIRECT): the kernel sends the data, then a separate cache flush."""
    if sync not in ("sync", "dsync", "fdatasync"):
        raise ValueError(f"sync must be 'sync', 'dsync' or 'fdatasync', got {sync!r}")
    if sync == "fdatasync" and direct == "yes":
        raise ValueError("sync='fdatasync' writes through the page cache: it cannot be combined with direct='yes'")
    return WriteProbe(host, path, record_size=record_size, hz=hz,
                      name=name or f"write-{Path(path).name}",
                      options=["--path", path, "--record-size", str(int(record_size)), "--direct", direct,
                               "--sync", sync],
                      **kw)


def session(host, target: str, port: int, hz: float = 20, name: str | None = None, timeout: float = 1.0, *,
            user_timeout: float | None = 10.0, reconnect: bool = False, size: int = 16, **kw) -> Probe:
    """One long-lived TCP connection to ``target:port`` (an :class:`EchoServer`): each attempt
    sends a line on it and is ``ok`` when the echo comes back; ``conn`` says on which connection
    (0: the one opened at start).  Where a failover loses the connection's state (a NAT router
    without conntrackd), the connection breaks instead of pausing: the attempts in flight fail
    with the error (``ECONNRESET``; ``ETIMEDOUT`` when ``user_timeout`` seconds of unacknowledged
    data ran out: a router that drops the packets silently sends no reset), later ones with
    ``closed``, or, with ``reconnect``, a new connection is opened (``conn`` 1, 2, ...) and the
    outage lasts until it answers.  :func:`session_breaks` reads the breaks back."""
    opts = ["--target", target, "--port", str(int(port)), "--size", str(int(size))]
    if user_timeout is not None:
        opts += ["--user-timeout", repr(float(user_timeout))]
    if reconnect:
        opts.append("--reconnect")
    return Probe(host, "session", opts, hz=hz, name=name or f"session-{target}-{port}",
                 target=f"{target}:{port}", timeout=timeout, **kw)


def session_breaks(log_df: pd.DataFrame, after: float | None = None) -> dict[str, Any]:
    """Did the session survive?  From a ``session`` probe's log (``Probe.log()``): ``survived``
    (the first connection answered after ``after``, e.g. the fault, and never broke), ``broke``,
    ``break_err`` and ``break_s`` (the first break's error and its time after ``after``, from the
    footer, else from the first attempt marked ``broke``), ``connections`` (how many were
    opened) and ``first_ok_conn`` (the connection of the first answer after ``after``).  A probe
    stopped before it saw either an answer or a break leaves ``survived`` False."""
    footer = log_df.attrs.get("footer") or {}
    after = float(after) if after is not None else float("-inf")
    breaks = [b for b in footer.get("breaks") or [] if b.get("stage") != "connect"]
    if breaks:
        first = min(breaks, key=lambda b: b["at"])
        b_err, b_at = first["err"], float(first["at"])
    elif "broke" in log_df.columns and log_df["broke"].fillna(False).astype(bool).any():
        row = log_df[log_df["broke"].fillna(False).astype(bool)].iloc[0]
        b_err, b_at = row["err"], float(row["sent"])
    else:
        b_err, b_at = None, None
    conn = log_df["conn"] if "conn" in log_df.columns else pd.Series(0, index=log_df.index)
    ok_after = log_df[log_df["ok"] & (log_df["recv"] > after)]
    first_conn = int(conn[ok_after.index[0]]) if len(ok_after) else None
    survived = b_at is None and len(ok_after) > 0 and bool((conn[ok_after.index] == 0).all())
    return {"survived": survived, "broke": b_at is not None, "break_err": b_err,
            "break_s": None if b_at is None or after == float("-inf") else round(b_at - after, 3),
            "connections": int(footer.get("connections") or (conn.max() + 1 if len(conn) else 0)),
            "first_ok_conn": first_conn}


class EchoServer:
    """The agent's TCP echo server (``agent.py serve-echo``) on ``host``: the far end of a
    :func:`session` probe (the lab's guests have python3, no socat).  Started detached; its log
    (one line per connection opened and closed, with the error that closed it: a reset from a
    router that lost the connection's state shows here) is :meth:`log`.  ::

        with probes.EchoServer(lab["server"], 7007):
            ...
    """

    def __init__(self, host, port: int = 7007, *, bind: str = "0.0.0.0", log_dir: str = LOG_DIR,
                 agent_path: str = AGENT_PATH, python: str = "python3"):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port={port!r}: 1 to 65535")
        self.host, self.port, self.bind = host, port, bind
        self.agent_path, self.python = agent_path, python
        self.log_path = f"{log_dir}/echo-{port}.err"
        self.pid_path = f"{log_dir}/echo-{port}.pid"
        self.pid: int | None = None

    def argv(self) -> list[str]:
        return [self.python, self.agent_path, "serve-echo", "--port", str(self.port), "--bind", self.bind]

    def start(self, wait: float = 30.0) -> int:
        """Start it (one already running on this port, by its PID file, is stopped first);
        returns its PID once it listens."""
        install_agent(self.host, self.agent_path)
        q = shlex.quote
        loops = max(1, int(wait / 0.05))
        out = f"{self.log_path}.out"
        script = (
            f"mkdir -p {q(str(Path(self.log_path).parent))}\n"
            f"if [ -f {q(self.pid_path)} ] && grep -q serve-echo /proc/$(cat {q(self.pid_path)})/cmdline 2>/dev/null; "
            f"then kill $(cat {q(self.pid_path)}); sleep 0.2; fi\n"
            f"setsid nohup {shlex.join(self.argv())} </dev/null >{q(out)} 2>{q(self.log_path)} &\n"
            f"pid=$!; echo $pid >{q(self.pid_path)}; i=0\n"
            f"while ! grep -q listening {q(out)} 2>/dev/null && kill -0 $pid 2>/dev/null && [ $i -lt {loops} ]; do\n"
            "  sleep 0.05; i=$((i+1))\ndone\n"
            f"if grep -q listening {q(out)}; then echo pid=$pid; else echo failed; cat {q(self.log_path)}; fi\n")
        res = self.host.run(script, timeout=wait * 3 + 60)
        for line in res.stdout.splitlines():
            if line.startswith("pid="):
                self.pid = int(line[4:])
                return self.pid
        raise ProbeError(f"echo server on {self.host.name} port {self.port} did not start: "
                         f"{res.stdout.strip()[-500:] or 'no output'}")

    def stop(self) -> None:
        if self.pid is not None:
            self.host.run(f"kill {int(self.pid)} 2>/dev/null; true", timeout=60)
            self.pid = None

    def log(self) -> list[str]:
        """The server's lines: ``<epoch> open <client>`` and ``<epoch> close <client> <why>``."""
        return self.host.get(self.log_path).decode("utf-8", "replace").splitlines()

    def __enter__(self) -> "EchoServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def command(host, cmd: str | Sequence[str], hz: float = 1, name: str | None = None,
            timeout: float = 5.0, **kw) -> Probe:
    """Run ``cmd`` per attempt (a string goes through /bin/sh -c): ``ok`` on exit status 0.
    This forks per attempt (~31 ms in a UML guest): for slow rates only."""
    argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
    first = Path(cmd.split()[0] if isinstance(cmd, str) and cmd.split() else argv[0]).name
    return Probe(host, "cmd", [], hz=hz, name=name or f"cmd-{first}", target=" ".join(argv),
                 timeout=timeout, command=argv, **kw)


# -- overhead -------------------------------------------------------------------------------------


def overhead(log_df: pd.DataFrame, footer: dict | None = None) -> dict[str, Any]:
    """How well the agent kept its schedule and what it cost.

    From the send times: inter-send interval (median, p95, max, ms), achieved rate, slots skipped;
    with the header (``log_df.attrs``) also the lag of each send behind its slot (median, p95, ms);
    from header and footer: CPU seconds the agent's loop used per second of run (``cpu_per_s``,
    0.01 = 1 % of a core; start-up CPU, in the header's ``cpu_s``, is reported apart) and per
    attempt."""
    footer = footer if footer is not None else log_df.attrs.get("footer")
    header = log_df.attrs.get("header")
    df = log_df.sort_values("seq")
    sent = df["sent"].to_numpy(dtype=float)
    out: dict[str, Any] = {"attempts": int(len(df))}
    if len(sent) >= 2:
        iv = np.diff(sent) * 1000.0
        out.update(interval_median_ms=float(np.median(iv)), interval_p95_ms=float(np.percentile(iv, 95)),
                   interval_max_ms=float(iv.max()), interval_min_ms=float(iv.min()),
                   rate_hz=float((len(sent) - 1) / (sent[-1] - sent[0])) if sent[-1] > sent[0] else None)
    late = df["late"].to_numpy() if "late" in df else np.zeros(len(df), dtype=int)
    out["late_slots"] = int(late.sum())
    if header and len(sent):
        hz = float(header["hz"])
        slot = df["seq"].to_numpy() + np.cumsum(late)
        lag = (sent - (float(header["t0"]) + slot / hz)) * 1000.0
        out.update(target_hz=hz, lag_median_ms=float(np.median(lag)),
                   lag_p95_ms=float(np.percentile(lag, 95)))
    if footer:
        total = float(footer["cpu_s"])
        startup = float(header.get("cpu_s") or 0.0) if header else 0.0
        cpu = max(0.0, total - startup)  # the loop's CPU, without interpreter start-up
        elapsed = footer.get("elapsed")
        if elapsed is None and header:
            elapsed = float(footer["stopped"]) - float(header["t0"])
        out.update(cpu_s=total, startup_cpu_s=startup, loop_cpu_s=cpu)
        if elapsed:
            out["elapsed_s"] = float(elapsed)
            out["cpu_per_s"] = cpu / float(elapsed)
        attempts = footer.get("attempts") or len(df)
        if attempts:
            out["cpu_ms_per_attempt"] = 1000.0 * cpu / attempts
    return out
