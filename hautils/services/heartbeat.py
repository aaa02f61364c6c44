"""heartbeat 3 (the paper's cluster manager, still in Debian): two nodes, a keep-alive every
``keepalive`` seconds, takeover after ``deadtime`` seconds of silence, resources from
``haresources`` started left to right by shell scripts (chapter 2).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..ssh import on_each
from . import render


#: Appended to /etc/ha.d/shellfuncs: ``ha_clustermsg`` writes its message to heartbeat's FIFO in
#: one write.  The stock function pipes ``echo ">>>"; cat -; echo "<<<"`` through ``cat``, so
#: the lines can reach the FIFO in pieces, a process start apart; heartbeat's FIFO reader waits
#: for a message with a 1 s alarm, and when the alarm falls between ">>>" and the first field it
#: gives up ("msg2string: Message with zero fields") and the message is lost.  The lost message
#: is mach_down's "takeover complete": the survivor serves the disk but reports "transition"
#: for ever, and no later failover or rejoin works.  Process starts are slow in UML, so this
#: heartbeat bug shows up here in about one takeover in three (chapter 2 explains it).
ATOMIC_CLUSTERMSG = """
# --- hautils: ha_clustermsg in one write (see hautils.services.heartbeat.ATOMIC_CLUSTERMSG)
ha_clustermsg() {
	_hautils_msg=$(cat -)
	printf '>>>\\n%s\\n<<<\\n' "$_hautils_msg" >> $HA_FIFO
}
"""
ATOMIC_MARKER = "# --- hautils: ha_clustermsg in one write"


def _secs(v: float) -> str:
    """heartbeat takes whole seconds or milliseconds with an 'ms' suffix."""
    return f"{v:g}" if float(v).is_integer() else f"{round(v * 1000)}ms"


@dataclass
class Heartbeat:
    """A heartbeat pair: ``hosts`` (Host objects) and their unicast addresses on ``iface``."""

    hosts: list
    addresses: list[str]
    resources: list[str]  # haresources words, e.g. ["drbddisk::r0", "IPaddr::192.168.103.36/24/eth0", "tgt"]
    keepalive: float = 1
    warntime: float = 2
    deadtime: float = 3
    initdead: float = 10
    iface: str = "eth0"
    udpport: int = 694
    auto_failback: bool = False
    secret: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)

    def __post_init__(self) -> None:
        if not self.keepalive < self.warntime <= self.deadtime:
            raise ValueError(f"heartbeat needs keepalive < warntime <= deadtime, got "
                             f"{self.keepalive}/{self.warntime}/{self.deadtime}")

    def ha_cf(self) -> str:
        nodes = [{"name": h.name, "address": a} for h, a in zip(self.hosts, self.addresses)]
        return render("ha.cf.j2", nodes=nodes, keepalive=_secs(self.keepalive), warntime=_secs(self.warntime),
                      deadtime=_secs(self.deadtime), initdead=_secs(max(self.initdead, 2 * self.deadtime)),
                      udpport=self.udpport, iface=self.iface, auto_failback=self.auto_failback)

    def authkeys(self, reveal: bool = False) -> str:
        """The shared key (sha1 HMAC): generated per lab, never the paper's placeholder."""
        key = self.secret if reveal else "<" + "generated, %d hex digits" % len(self.secret) + ">"
        return f"auth 1\n1 sha1 {key}\n"

    def haresources(self) -> str:
        return render("haresources.j2", node=self.hosts[0].name, resources=self.resources)

    def install(self) -> None:
        """Write the three files on both nodes (authkeys mode 600, or heartbeat refuses to start).

        heartbeat 3 has no offline config checker; it validates ha.cf when it starts and logs
        "Configuration validated" (or the offending line), which :meth:`start` waits past."""
        for h in self.hosts:
            h.put("/etc/ha.d/ha.cf", self.ha_cf())
            h.put("/etc/ha.d/authkeys", self.authkeys(reveal=True), mode=0o600)
            h.put("/etc/ha.d/haresources", self.haresources())
            self.fix_clustermsg(h)

    @staticmethod
    def fix_clustermsg(host) -> None:
        """Make ``ha_clustermsg`` write its message in one piece (see :data:`ATOMIC_CLUSTERMSG`)."""
        funcs = host.get("/etc/ha.d/shellfuncs").decode()
        if ATOMIC_MARKER not in funcs:
            host.put("/etc/ha.d/shellfuncs", funcs.rstrip("\n") + "\n" + ATOMIC_CLUSTERMSG)
        host.run("sh -n /etc/ha.d/shellfuncs && . /etc/ha.d/shellfuncs && type ha_clustermsg >/dev/null")

    def start(self, timeout: float = 120) -> float:
        """Start heartbeat on both nodes; wait until the preferred node holds the resources."""
        t = time.time()
        # both at once: a node that starts alone waits for its peer (initdead), and each start
        # costs seconds in a UML guest
        on_each(lambda h: h.run("systemctl start heartbeat", timeout=120), self.hosts)
        # rscstatus: "all"/"local" = this node holds its own group ("foreign" = the peer's too)
        self.hosts[0].wait_for("cl_status rscstatus 2>/dev/null | grep -qxE 'all|local'", timeout=timeout)
        return time.time() - t

    def stop(self, host) -> float:
        """Graceful: stop heartbeat on ``host`` (it releases its resources); returns the epoch
        time the stop began, read in the guest."""
        out = host.run("echo $EPOCHREALTIME; systemctl stop heartbeat", timeout=180).stdout
        return float(out.split()[0].replace(",", "."))

    def join(self, host, timeout: float = 120) -> None:
        """Start heartbeat on a returning node and wait until its peer sees it active again
        (with ``auto_failback off`` it stays standby: no second outage)."""
        peer = self.hosts[1] if host is self.hosts[0] else self.hosts[0]
        host.run("systemctl start heartbeat", timeout=120)
        peer.wait_for(f"test \"$(cl_status nodestatus {host.name} 2>/dev/null)\" = active", timeout=timeout)

    def wait_settled(self, host, timeout: float = 120) -> None:
        """Wait until ``host`` holds every resource and no transition is running.

        Starting heartbeat on the returning node while the survivor is still taking over
        ("T_STARTING received during takeover") left both nodes stuck in "transition"."""
        host.wait_for("test \"$(cl_status rscstatus 2>/dev/null)\" = all", timeout=timeout, interval=0.3)

    def wait_pair_settled(self, timeout: float = 120) -> str:
        """Wait until one node holds every resource ("all") and the other none ("none"); return
        the active node's name.  A node that joined may still be negotiating resources with its
        peer for a while after its peer sees it "active": a failure then is a different test."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            seen = {h.name: h.run("cl_status rscstatus 2>/dev/null", check=False, timeout=30).stdout.strip()
                    for h in self.hosts}
            if sorted(seen.values()) == ["all", "none"]:
                return next(n for n, v in seen.items() if v == "all")
            if time.monotonic() > deadline:
                raise TimeoutError(f"heartbeat did not settle within {timeout:.0f} s: rscstatus {seen} "
                                   "(want one node 'all', the other 'none')")
            time.sleep(0.3)

    def active(self, wait: float = 60.0) -> str:
        """Which node holds the resources (``cl_status rscstatus``: all/local/foreign, not none).

        Right after a node joins or a takeover the answer is "transition" for a while: ask again
        until one node holds them, for up to ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            seen = {}
            for h in self.hosts:
                try:
                    r = h.run("cl_status rscstatus 2>/dev/null", check=False, timeout=30)
                except Exception as e:  # a powered-off node
                    seen[h.name] = type(e).__name__
                    continue
                seen[h.name] = r.stdout.strip()
                if r.ok and seen[h.name] in ("all", "local", "foreign"):
                    return h.name
            if time.monotonic() > deadline:
                raise TimeoutError(f"no heartbeat node holds the resources after {wait:.0f} s: {seen}")
            time.sleep(0.5)


def fast_disk_script(vip: str, prefix: int = 24, iface: str = "eth0", resource: str = "r0",
                     device: str = "/dev/drbd0", tid: int = 1, sync_writes: bool = True,
                     more_luns: Sequence[tuple[str, str, bool]] = ()) -> str:
    """The tuned variant's single resource script (``/etc/ha.d/resource.d/hadisk``).

    ``sync_writes=False`` keeps tgt's default write-back cache (see chapter 2: it loses
    acknowledged writes at a power failure).  ``more_luns``: ``(resource, device, sync_writes)``
    for LUN 2, 3, ...: more DRBD resources behind the same target, taken over together (chapter 2
    puts a write-back LUN beside the write-through one, so that one fault tests both)."""
    luns = [{"lun": 1, "resource": resource, "device": device, "sync_writes": sync_writes}]
    luns += [{"lun": n, "resource": r, "device": d, "sync_writes": s}
             for n, (r, d, s) in enumerate(more_luns, start=2)]
    if len({l["resource"] for l in luns}) != len(luns) or len({l["device"] for l in luns}) != len(luns):
        raise ValueError(f"hadisk: every LUN needs its own DRBD resource and device, got {luns}")
    return render("hadisk.j2", vip=vip, prefix=prefix, iface=iface, tid=tid, luns=luns)


def install_script(host, name: str, text: str) -> None:
    """Install a heartbeat resource script and check its shell syntax (``bash -n``)."""
    path = f"/etc/ha.d/resource.d/{name}"
    host.put(path, text, mode=0o755)
    host.run(f"bash -n {path}")
