"""DRBD: a block device mirrored over the network between two hosts (chapter 2).

The paper's resource ``r0`` first (``global_common.conf`` + ``r0.res``, port 7789, protocol C),
then what a safe failover needs: single primary, and a short ``ping-int`` so that the survivor
notices a dead peer within about a second instead of the default ten.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from ..errors import CommandError, LabError
from ..ssh import on_each
from . import render

PROTOCOLS = {
    "A": "asynchronous: a write is complete once on the local disk and in the TCP send buffer",
    "B": "memory-synchronous: complete once on the local disk and in the peer's memory",
    "C": "synchronous: complete once on both disks (RPO = 0)",
}


@dataclass
class DrbdState:
    """One line of /proc/drbd for a minor: connection, roles, disk states, sync progress."""

    cs: str
    role: str
    peer_role: str
    disk: str
    peer_disk: str
    protocol: str
    synced_percent: float | None = None
    raw: str = ""

    @property
    def healthy(self) -> bool:
        return self.cs == "Connected" and self.disk == "UpToDate" and self.peer_disk == "UpToDate"


def parse_proc_drbd(text: str, minor: int = 0) -> DrbdState | None:
    """Parse /proc/drbd (DRBD 8.4 format); None when the minor is not configured."""
    m = re.search(rf"^\s*{minor}: cs:(\S+) ro:(\S+)/(\S+) ds:(\S+)/(\S+) (\S)", text, re.M)
    if not m:
        return None
    nxt = re.search(r"^\s*\d+: cs:", text[m.end():], re.M)  # this minor's lines only
    sync = re.search(r"sync'ed:\s*([\d.]+)%", text[m.end():m.end() + nxt.start()] if nxt else text[m.end():])
    return DrbdState(cs=m[1], role=m[2], peer_role=m[3], disk=m[4], peer_disk=m[5], protocol=m[6],
                     synced_percent=float(sync[1]) if sync else None, raw=text)


@dataclass
class Drbd:
    """One DRBD resource between two hosts (``hautils.ssh.Host`` objects with their addresses)."""

    hosts: list  # [Host, Host]
    addresses: list[str]  # replication address of each host, same order
    disk: str = "/dev/ubdb"
    name: str = "r0"
    device: str = "/dev/drbd0"
    port: int = 7789
    protocol: str = "C"
    dual_primary: bool = False  # the paper's second configuration: unsafe with ext4, shown only
    net: dict[str, str] = field(default_factory=dict)  # extra net options, e.g. {"ping-int": "1"}
    disk_options: dict[str, str] = field(default_factory=dict)  # extra disk options (resync rate)
    # the protocol in this resource's own net section (global_common.conf left as it is): for
    # resources side by side with different protocols
    own_protocol: bool = False

    def __post_init__(self) -> None:
        if len(self.hosts) != 2 or len(self.addresses) != 2:
            raise ValueError("a DRBD resource here has exactly two hosts and two addresses")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")

    # -- configuration ------------------------------------------------------------------------

    def global_common(self) -> str:
        return render("drbd-global_common.conf.j2", protocol=self.protocol, dual_primary=self.dual_primary)

    def resource(self) -> str:
        nodes = [{"name": h.name, "address": a} for h, a in zip(self.hosts, self.addresses)]
        net = {"protocol": self.protocol, **self.net} if self.own_protocol else self.net
        return render("drbd-resource.res.j2", name=self.name, device=self.device, disk=self.disk,
                      dual_primary=self.dual_primary, net=net, disk_options=self.disk_options,
                      nodes=nodes, port=self.port)

    @property
    def minor(self) -> int:
        m = re.search(r"(\d+)$", self.device)
        if not m:
            raise ValueError(f"DRBD {self.name}: device {self.device!r} does not end in its minor number")
        return int(m[1])

    @property
    def res_path(self) -> str:
        return f"/etc/drbd.d/{self.name}.res"

    def write_config(self) -> str:
        """Write both files on both hosts and check them with drbdadm; returns ``drbdadm dump``.

        ``drbdadm dump`` parses the files as the tools will (and names the file and line of an
        error); ``sh-nop`` also checks the resource against this host's name."""
        def write(h) -> None:
            if not self.own_protocol:
                h.put("/etc/drbd.d/global_common.conf", self.global_common())
            h.put(self.res_path, self.resource())
            # sync: a power failure right after must not lose the configuration with the page cache
            h.run(f"drbdadm sh-nop && drbdadm dump {self.name} >/dev/null && sync")

        on_each(write, self.hosts)
        return self.hosts[0].run(f"drbdadm dump {self.name}").stdout

    # -- life cycle ---------------------------------------------------------------------------

    def create(self, timeout: float = 600.0, initial_sync: bool = True) -> float:
        """create-md + up on both, make the first host primary (overwriting the peer) and wait
        for the initial sync; returns the sync's duration in seconds.

        ``initial_sync=False`` skips the copy (``new-current-uuid --clear-bitmap``: both sides
        are declared UpToDate): only for disks known to be identical, such as two fresh, all-zero
        lab disks; a real pair of disks with different content would diverge silently."""
        self.write_config()
        on_each(lambda h: h.run(f"modprobe drbd && (drbdadm down {self.name} 2>/dev/null; true) && "
                                 f"drbdadm -- --force create-md {self.name} </dev/null && drbdadm up {self.name}",
                                 timeout=120), self.hosts)
        t0 = time.time()
        if not initial_sync:
            self.hosts[0].wait_for(f"grep -Eq '^ *{self.minor}: cs:Connected' /proc/drbd", timeout=60, interval=0.2)
            self.hosts[0].run(f"drbdadm -- --clear-bitmap new-current-uuid {self.name}")
        self.hosts[0].run(f"drbdadm -- --overwrite-data-of-peer primary {self.name}")
        self.wait_healthy(timeout)
        return time.time() - t0

    def state(self, host) -> DrbdState | None:
        return parse_proc_drbd(host.run("cat /proc/drbd").stdout, self.minor)

    def proc(self, host) -> str:
        return host.run("cat /proc/drbd").stdout

    def wait_healthy(self, timeout: float = 600.0, host=None) -> DrbdState:
        """Wait until both sides are Connected and UpToDate (a sync has finished)."""
        return wait_healthy([self], host or self.hosts[0], timeout)[0]

    def primary(self, host, force: bool = False) -> None:
        host.run(f"drbdadm {'-- --force ' if force else ''}primary {self.name}", timeout=60)

    def secondary(self, host) -> None:
        host.run(f"drbdadm secondary {self.name}", timeout=60)

    def set_protocol(self, protocol: str) -> None:
        """Change the replication protocol on both hosts (rewrite, check, ``drbdadm adjust``)."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.protocol = protocol
        self.write_config()
        for h in self.hosts:
            h.run(f"drbdadm adjust {self.name}", timeout=60)
        self.wait_healthy(120)

    def rejoin(self, host, discard: bool = True, timeout: float = 600.0) -> DrbdState:
        """Bring a returning node (after a power failure) back as secondary and resync it from the
        survivor.  ``discard``: throw away what only this node wrote (a crashed primary's writes
        the peer never got are exactly the lost writes; the survivor's data wins)."""
        return rejoin([self], host, discard, timeout)[0]

    def down(self) -> None:
        for h in self.hosts:
            try:
                h.run(f"drbdadm down {self.name}", timeout=60)
            except CommandError:
                pass


# connection states on the way to a handshake (DRBD 8.4): wait for them to end
_CONNECTING = {"Unconnected", "WFConnection", "WFReportParams", "Disconnecting", "NetworkFailure",
               "BrokenPipe", "Timeout", "ProtocolError", "TearDown"}


def rejoin(resources: list[Drbd], host, discard: bool = True, timeout: float = 600.0) -> list[DrbdState]:
    """:meth:`Drbd.rejoin` for several resources of one host at once: one command brings them
    all up and connects them, and they resync side by side (in a UML guest every command costs).

    ``discard``: a resource whose handshake found diverged data (split brain: it ends
    StandAlone) connects again, throwing away this node's side.  Only those: disconnecting a
    resource that has connected already races DRBD's own teardown (a connect right after it
    failed with "Local address(port) already in use" when a small resource had finished its
    resync before the disconnect came)."""
    names = " ".join(r.name for r in resources)
    host.run(f"modprobe drbd; drbdadm up {names} 2>/dev/null; drbdadm secondary {names}", timeout=120)
    deadline = time.monotonic() + min(timeout, 120.0)
    retried: set[str] = set()
    while discard:
        text = host.run("cat /proc/drbd").stdout
        states = {r.name: parse_proc_drbd(text, r.minor) for r in resources}
        alone = [n for n, st in states.items() if st is not None and st.cs == "StandAlone" and n not in retried]
        again = [n for n, st in states.items() if st is not None and st.cs == "StandAlone" and n in retried]
        if again:  # refused even with this node's data discarded: the peer split too
            raise LabError(f"DRBD {' '.join(again)} on {host.name} stays StandAlone after a connect with "
                           "--discard-my-data: the peer refuses it too (split brain on both sides?); run "
                           f"`drbdadm connect {' '.join(again)}` on the peer:\n{text}")
        if alone:
            host.run(f"drbdadm -- --discard-my-data connect {' '.join(alone)}", timeout=60)
            retried.update(alone)
            continue
        if not any(st is None or st.cs in _CONNECTING for st in states.values()):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"DRBD {names} on {host.name}: no handshake with the peer after "
                               f"{min(timeout, 120.0):.0f} s (is the peer up and connecting?):\n{text}")
        time.sleep(0.2)
    return wait_healthy(resources, host, timeout)


def wait_healthy(resources: list[Drbd], host, timeout: float = 600.0) -> list[DrbdState]:
    """Wait until every resource is Connected and UpToDate on both sides, as ``host`` sees it
    (one read of /proc/drbd per poll for all of them)."""
    deadline = time.monotonic() + timeout
    while True:
        text = host.run("cat /proc/drbd").stdout
        states = [parse_proc_drbd(text, r.minor) for r in resources]
        if all(st and st.healthy for st in states):
            return states
        if time.monotonic() > deadline:
            bad = [r.name for r, st in zip(resources, states) if not (st and st.healthy)]
            raise TimeoutError(f"DRBD {', '.join(bad)} on {host.name} not in sync after {timeout:.0f} s "
                               f"(not configured, or not Connected and UpToDate on both sides):\n{text}")
        time.sleep(0.5)
