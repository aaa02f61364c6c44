"""The gateway level (the paper's sections 3.1.2 and 3.2.2): two routers, one gateway address.

Three pieces, each rendered from the topology (``labs/gateway.yaml``) so that no address is
typed twice:

* :class:`Keepalived` -- VRRP.  Each virtual address of the topology gets a ``vrrp_instance``
  on the routers' NIC in its network; the router with the higher priority holds it, the other
  takes it over when the advertisements stop.  With several addresses the instances form a
  ``vrrp_sync_group`` and move together (a NAT gateway that holds the inside address must hold
  the outside one too).  keepalived 2.2 (Debian bookworm) speaks VRRPv3, whose advertisement
  interval counts in hundredths of a second: that is what makes a sub-second failover possible
  (``advert_int=0.1``); VRRPv2 counts in whole seconds.
* :class:`Conntrackd` -- the paper's "sessions in sync": conntrackd copies the master's
  connection tracking table to the backup over a dedicated link (FTFW mode), and keepalived's
  notify scripts tell it when the roles change (the steps of conntrackd's own
  ``doc/sync/primary-backup.sh``: commit the copied table on becoming master; on becoming
  backup, let the stale entries expire and ask the master for its table).
* :class:`Nat` -- the stateful NAT firewall whose state is at stake: connections leave with
  the outside virtual address as their source, and a packet of a connection the router does
  not track is dropped.  Without conntrackd a long-lived TCP connection therefore breaks on
  failover; with it, it should survive (the chapter measures both).  The rules are x_tables
  (``iptables-legacy``): the lab's UML kernel (Debian's user-mode-linux 6.1 config) has
  nf_tables without its IPv4 and inet families, so nftables cannot filter IPv4 there.

Each file is checked by its tool in the lab: ``keepalived -t -f FILE`` (keepalived's own
config test), ``iptables-legacy-restore --test``.  conntrackd has no config-test option
(conntrackd(8) of 1.4.7 lists none): :meth:`Conntrackd.check` asks for statistics instead
(``conntrackd -C FILE -s``), which parses the whole file before it tries to reach the daemon,
so a syntax error is reported as such ("parsing config file in line (N), symbol 'X'") and a
good file ends in "can't connect" when no daemon runs yet.  What only the running daemon finds
out (an interface that does not exist, a port in use) shows up when it starts.

::

    from hautils.services.keepalived import Keepalived, Conntrackd, Nat
    vrrp = Keepalived("gateway", advert_int=0.1, conntrackd=True)
    print(vrrp.config("gw1"))
    for name in vrrp.routers:
        Nat("gateway").install(lab[name]); Conntrackd("gateway").install(lab[name])
        vrrp.install(lab[name])
    for name in vrrp.routers:
        Conntrackd("gateway").start(lab[name]); vrrp.start(lab[name])
"""

from __future__ import annotations

import ipaddress
import math
import re
import shlex
import time
from dataclasses import dataclass

from ..errors import CommandError
from ..ssh import on_each
from ..topology import Host as TopoHost
from ..topology import Topology, load
from . import render, tool_check

__all__ = ["Keepalived", "Conntrackd", "Nat", "CONF", "DEFAULTS", "CONNTRACKD_CONF", "NOTIFY_SCRIPT",
           "RULES", "NAT_UNIT", "VRRP_MARKS", "STATE_RE", "holders", "master_of", "wait_master"]

CONF = "/etc/keepalived/keepalived.conf"
DEFAULTS = "/etc/default/keepalived"
CONNTRACKD_CONF = "/etc/conntrackd/conntrackd.conf"
NOTIFY_SCRIPT = "/etc/conntrackd/primary-backup.sh"  # where conntrackd's documentation puts it
ORDER_DROPIN = "/etc/systemd/system/keepalived.service.d/hautils-conntrackd.conf"
NOTIFY_TAG = "hautils-conntrackd"
RULES = "/etc/hautils/gateway.rules"
#: NAT is decided once per tracked connection: VRRP advertisements tracked under older rules
#: (as "unknown" protocol 112 entries, 600 s each) kept their old translation after a reload.
FORGET_VRRP = "{ conntrack -D -p 112 >/dev/null 2>&1 || true; }"
NAT_UNIT = "hautils-gateway-rules.service"

#: keepalived's log lines (keepalived/vrrp/vrrp.c, vrrp_scheduler.c, 2.2.7) that end the phases
#: of a takeover on the backup: it stops waiting for the master (logged with --log-detail only),
#: then becomes master (and sets the addresses, sends gratuitous ARPs).
VRRP_MARKS = {
    "master down timer (detection)": r"\) Receive advertisement timeout",
    "becomes MASTER": r"\) Entering MASTER STATE",
}
#: One VRRP state change as keepalived 2.x logs it: ``(VI_inside) Entering MASTER STATE``.
STATE_RE = re.compile(r"\((?P<instance>[^)\s]+)\) Entering (?P<state>MASTER|BACKUP|FAULT) STATE")


def _name(host) -> str:
    return host if isinstance(host, str) else host.name


def _topology(topology: Topology | str) -> Topology:
    return load(topology, check_memory=False) if isinstance(topology, str) else topology


def _routers(topo: Topology, routers) -> tuple[str, str]:
    names = tuple(routers) if routers is not None else tuple(
        h.name for h in topo.hosts.values() if h.role == "router")
    if len(names) != 2 or len(set(names)) != 2:
        raise ValueError(f"{topo.source}: a VRRP pair needs exactly two routers, got {list(names)} "
                         "(pass routers=(first, second), the first is the master at start)")
    for n in names:
        if n not in topo.hosts:
            raise ValueError(f"{topo.source}: no host named {n!r}; hosts: {', '.join(topo.hosts)}")
    return names  # type: ignore[return-value]


def _link(topo: Topology, host: TopoHost, network: str):
    for link in host.links:
        if link.network == network and link.address is not None:
            return link
    raise ValueError(f"{topo.source}: host '{host.name}' field 'links': no addressed NIC on network "
                     f"'{network}', which the pair needs")


def _run_check(host, command: str, path: str, tool: str) -> str:
    return tool_check(host, command, path, tool, "keepalived")


@dataclass
class Keepalived:
    """keepalived's VRRP for the pair of routers of ``topology`` (the first is master at start).

    ``advert_int`` (s): 1 is keepalived's default; VRRPv3 allows 0.01 to 40.95 in steps of
    0.01.  ``preempt``: the higher priority takes the address back when it returns (a second,
    short interruption); ``False`` writes ``nopreempt`` (then both start as BACKUP, as keepalived
    requires).  ``unicast``: advertisements to the other router's address instead of multicast.
    ``conntrackd``: notify scripts that switch conntrackd's role (see :class:`Conntrackd`).
    ``log_detail``: keepalived ``--log-detail``, which logs when the backup gives up on the
    master (the detection mark of :data:`VRRP_MARKS`)."""

    topology: Topology | str = "gateway"
    routers: tuple[str, str] | None = None
    virtual_router_id: int = 51  # the first instance's; the next instances count up
    priorities: tuple[int, int] = (150, 100)
    advert_int: float = 1.0
    vrrp_version: int = 3
    preempt: bool = True
    preempt_delay: float | None = None
    unicast: bool = False
    conntrackd: bool = False
    log_detail: bool = True
    garp_master_delay: int | None = None
    sync_group: str = "gateway"

    def __post_init__(self) -> None:
        self.topology = _topology(self.topology)
        self.routers = _routers(self.topology, self.routers)
        if self.vrrp_version not in (2, 3):
            raise ValueError(f"vrrp_version={self.vrrp_version!r}: 2 or 3")
        a = self.advert_int
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
            raise ValueError(f"advert_int={a!r}: seconds, a number")
        if self.vrrp_version == 3:
            if not 0.01 <= a <= 40.95 or abs(round(a * 100) - a * 100) > 1e-6:
                raise ValueError(f"advert_int={a!r}: VRRPv3 counts in hundredths of a second, 0.01 to 40.95")
        elif a != int(a) or not 1 <= a <= 255:
            raise ValueError(f"advert_int={a!r}: VRRPv2 counts in whole seconds, 1 to 255 "
                             "(a sub-second interval needs vrrp_version=3)")
        p = tuple(self.priorities)
        if len(p) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= 254 for x in p):
            raise ValueError(f"priorities={self.priorities!r}: two whole numbers from 1 to 254 "
                             "(255 is reserved for the owner of the address)")
        if p[0] <= p[1]:
            raise ValueError(f"priorities={self.priorities!r}: the first router ({self.routers[0]}) is the "
                             "master at start, so its priority must be the higher")
        self.priorities = p
        if self.preempt_delay is not None:
            if not self.preempt:
                raise ValueError("preempt_delay needs preempt=True (nopreempt never takes the address back)")
            if not 0 <= self.preempt_delay <= 1000:
                raise ValueError(f"preempt_delay={self.preempt_delay!r}: seconds, 0 to 1000")
        if self.garp_master_delay is not None and not 0 <= self.garp_master_delay <= 255:
            raise ValueError(f"garp_master_delay={self.garp_master_delay!r}: seconds, 0 to 255")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.sync_group):
            raise ValueError(f"sync_group={self.sync_group!r}: one word of letters, digits, '_', '-'")
        if not self.topology.virtual_ips:
            raise ValueError(f"{self.topology.source}: no virtual_ips: VRRP has no address to share")
        n = len(self.topology.virtual_ips)
        if isinstance(self.virtual_router_id, bool) or not 1 <= self.virtual_router_id <= 256 - n:
            raise ValueError(f"virtual_router_id={self.virtual_router_id!r}: 1 to {256 - n} "
                             f"({n} instance(s) count up from it, 255 at most)")
        for r in self.routers:  # fail now, naming the host and network
            self.instances(r)

    # -- the topology's view -------------------------------------------------------------------

    @property
    def vips(self) -> list[str]:
        """The virtual addresses, in the topology's order."""
        return [str(v.address) for v in self.topology.virtual_ips]

    def _index(self, router) -> int:
        name = _name(router)
        if name not in self.routers:
            raise ValueError(f"{self.topology.source}: host {name!r} is not one of the VRRP pair "
                             f"{', '.join(self.routers)}")
        return self.routers.index(name)

    def instances(self, router) -> list[dict]:
        """One dict per VRRP instance of ``router``: name, iface, vip (with prefix), vrid, network,
        and its own and the other router's address on that network (for unicast)."""
        i = self._index(router)
        me = self.topology.hosts[self.routers[i]]
        other = self.topology.hosts[self.routers[1 - i]]
        out = []
        for k, v in enumerate(self.topology.virtual_ips):
            mine, theirs = _link(self.topology, me, v.network), _link(self.topology, other, v.network)
            prefix = self.topology.networks[v.network].subnet.prefixlen
            out.append({"name": f"VI_{v.network}", "network": v.network, "iface": mine.iface,
                        "vip": f"{v.address}/{prefix}", "vrid": self.virtual_router_id + k,
                        "unicast_src": str(mine.address.ip) if self.unicast else "",
                        "unicast_peer": str(theirs.address.ip) if self.unicast else ""})
        return out

    # -- the files -------------------------------------------------------------------------------

    def config(self, router) -> str:
        """``/etc/keepalived/keepalived.conf`` of ``router``."""
        i = self._index(router)
        inst = self.instances(router)
        notify = []
        if self.conntrackd:
            notify = [f'notify_master "{NOTIFY_SCRIPT} primary"', f'notify_backup "{NOTIFY_SCRIPT} backup"',
                      f'notify_fault "{NOTIFY_SCRIPT} fault"']
        # keepalived ignores nopreempt and preempt_delay on an instance that starts as MASTER
        # (keepalived -t: "will not work with initial state MASTER"): those start as BACKUP
        # and the election at start-up still gives the address to the higher priority
        initial = "MASTER" if self.preempt and self.preempt_delay is None and i == 0 else "BACKUP"
        advert = f"{self.advert_int:g}"
        return render("keepalived.conf.j2", path=CONF, hostname=self.routers[i], priority=self.priorities[i],
                      priorities=[str(p) for p in self.priorities], preempt=self.preempt,
                      preempt_delay=None if self.preempt_delay is None else f"{self.preempt_delay:g}",
                      initial=initial, vrrp_version=self.vrrp_version, advert_int=advert,
                      garp_master_delay=self.garp_master_delay,
                      sync_group=self.sync_group if len(inst) > 1 else "", instances=inst, notify=notify)

    def defaults(self, router) -> str:
        """``/etc/default/keepalived``: the daemon's extra arguments (``--log-detail``)."""
        return render("keepalived-default.j2", hostname=self.routers[self._index(router)],
                      log_detail=self.log_detail)

    def failover_bound(self) -> float:
        """RFC 5798's Master_Down_Interval of the backup: 3 x advert_int + skew, where skew is
        (256 - priority) / 256 x advert_int.  The longest a backup waits for a silent master,
        the bound the chapter checks a VRRP failover against (plus the lab's own delays)."""
        return 3 * self.advert_int + (256 - self.priorities[1]) / 256 * self.advert_int

    def settle_s(self) -> float:
        """How long one master must hold the addresses before the pair counts as settled: a
        backup that hears no advertisement claims the addresses within :meth:`failover_bound`
        of its start, so one bound plus half a second of polling shows that none will (it was
        two bounds: 7.2 s of waiting per settle with ``advert_int 1``, for nothing)."""
        return max(1.0, self.failover_bound() + 0.5)

    # -- life cycle (in the lab) -----------------------------------------------------------------

    def install(self, host) -> str:
        """Write keepalived.conf and /etc/default/keepalived on ``host`` and check them with
        ``keepalived -t`` (:meth:`check`; a warning fails too); returns keepalived's output.
        keepalived keeps running its old configuration until :meth:`start`.  With
        ``conntrackd=True`` install :class:`Conntrackd` first, so that the notify script the
        configuration names exists when keepalived checks it."""
        conf, defaults = self.config(host.name), self.defaults(host.name)  # refuses a stranger first
        host.run("mkdir -p /etc/keepalived", timeout=30)
        host.put(CONF, conf, mode=0o644)
        host.put(DEFAULTS, defaults, mode=0o644)
        return self.check(host)

    def check(self, host, path: str = CONF) -> str:
        """keepalived's own configuration test on ``host``: ``keepalived -t -f PATH`` exits
        non-zero (5 in keepalived 2.2) on an unknown keyword, a value out of range, or a missing
        interface, printing what and where.  Raises ``CommandError`` with that text."""
        return _run_check(host, f"keepalived -t -f {shlex.quote(path)}", path, "keepalived -t")

    def start(self, host, timeout: float = 120) -> float:
        """Enable keepalived (a router that boots again rejoins by itself) and (re)start it so
        that it reads the new files; returns the epoch time of the start, read in the guest."""
        out = host.run("systemctl enable keepalived >/dev/null 2>&1; echo $EPOCHREALTIME; "
                       "systemctl restart keepalived", timeout=timeout).stdout
        return float(out.split()[0].replace(",", "."))

    def stop(self, host, timeout: float = 120) -> float:
        """Graceful stop on ``host``: keepalived sends a priority-0 advertisement on the way out,
        so the backup takes over at once.  Returns the epoch time the stop began (guest clock)."""
        out = host.run("echo $EPOCHREALTIME; systemctl stop keepalived", timeout=timeout).stdout
        return float(out.split()[0].replace(",", "."))

    def deploy(self, lab, conntrackd: "Conntrackd | None" = None, *, timeout: float = 120) -> str:
        """Put this configuration on both routers of ``lab`` and wait until the pair has settled:
        the files written and checked on each (with ``conntrackd``, its files first, since the
        notify script must exist when keepalived checks its configuration), conntrackd then
        keepalived restarted on both at once, then :func:`wait_master` (the first router with
        preempt, either without).  Returns the master's name.  Every experiment of the chapter
        starts from here, so a setting is changed in one call, not in a notebook loop."""
        if self.conntrackd and conntrackd is None:
            raise ValueError("this configuration drives conntrackd (conntrackd=True): pass the Conntrackd "
                             "whose files its notify script needs")
        hosts = [lab[r] for r in self.routers]
        if conntrackd is not None:
            on_each(conntrackd.install, hosts)
        on_each(self.install, hosts)
        command = "systemctl enable keepalived >/dev/null 2>&1; systemctl restart keepalived"
        if conntrackd is not None:
            command = (f"systemctl enable conntrackd >/dev/null 2>&1; rm -f {shlex.quote(conntrackd.lockfile)}; "
                       "systemctl restart conntrackd && " + command)
        lab.run_all(hosts, command, timeout=timeout)
        return wait_master(hosts, self.vips, expected=self.routers[0] if self.preempt else None,
                           timeout=timeout, stable_s=self.settle_s())

    def master(self, hosts) -> str | None:
        """The router that holds every virtual address now, or None (see :func:`master_of`)."""
        return master_of(hosts, self.vips)


def holders(hosts, vips) -> dict[str, list[str]]:
    """Which of ``vips`` each host holds now (one ``ip`` call per host): ``{name: [vip, ...]}``.
    A host that does not answer (powered off) holds nothing."""
    want = [str(ipaddress.IPv4Address(v)) for v in vips]
    out: dict[str, list[str]] = {}
    for h in hosts:
        try:
            text = h.run("ip -o -4 addr show", check=False, timeout=30).stdout
        except Exception:  # noqa: BLE001 - a powered-off router holds no address
            text = ""
        have = set(re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", text))
        out[h.name] = [v for v in want if v in have]
    return out


def master_of(hosts, vips) -> str | None:
    """The host that holds every one of ``vips`` while no other holds any, or None: the pair is
    between roles (both hold some during a split brain, neither during a takeover)."""
    have = holders(hosts, vips)
    full = [n for n, got in have.items() if len(got) == len(list(vips))]
    partial = [n for n, got in have.items() if got]
    return full[0] if len(full) == 1 and len(partial) == 1 else None


@dataclass
class Conntrackd:
    """conntrackd on the pair of routers: FTFW over the dedicated ``sync_network``.

    ``transport``: ``"udp"`` (unicast to the other router's sync address; the default here:
    the link has two ends and nothing to discover) or ``"multicast"`` (conntrackd's own example).
    ``protocols``: the connections worth copying (conntrackd's example: TCP, SCTP, DCCP)."""

    topology: Topology | str = "gateway"
    routers: tuple[str, str] | None = None
    sync_network: str = "sync"
    transport: str = "udp"
    port: int = 3780
    multicast_address: str = "225.0.0.50"
    multicast_group: int = 3780
    protocols: tuple[str, ...] = ("TCP", "SCTP", "DCCP")
    purge_timeout: int = 60
    commit_timeout: int | None = None
    lockfile: str = "/var/lock/conntrackd.lock"  # Debian's
    socket: str = "/var/run/conntrackd.sock"  # Debian's

    def __post_init__(self) -> None:
        self.topology = _topology(self.topology)
        self.routers = _routers(self.topology, self.routers)
        if self.sync_network not in self.topology.networks:
            raise ValueError(f"{self.topology.source}: no network {self.sync_network!r} for the sync link; "
                             f"networks: {', '.join(self.topology.networks)}")
        if self.transport not in ("udp", "multicast"):
            raise ValueError(f"transport={self.transport!r}: 'udp' or 'multicast'")
        if isinstance(self.port, bool) or not 1 <= self.port <= 65535:
            raise ValueError(f"port={self.port!r}: 1 to 65535")
        if not ipaddress.IPv4Address(self.multicast_address).is_multicast:
            raise ValueError(f"multicast_address={self.multicast_address!r} is not a multicast address")
        known = {"TCP", "UDP", "SCTP", "DCCP", "ICMP", "IPv6-ICMP"}
        bad = [p for p in self.protocols if p not in known]
        if not self.protocols or bad:
            raise ValueError(f"protocols={self.protocols!r}: some of {', '.join(sorted(known))}")
        for k in ("purge_timeout", "commit_timeout"):
            v = getattr(self, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{k}={v!r}: whole seconds, at least 1")
        for r in self.routers:
            self._sync(r)

    def _sync(self, router):
        name = _name(router)
        if name not in self.routers:
            raise ValueError(f"{self.topology.source}: host {name!r} is not one of the pair "
                             f"{', '.join(self.routers)}")
        other = self.routers[1 - self.routers.index(name)]
        return (_link(self.topology, self.topology.hosts[name], self.sync_network),
                _link(self.topology, self.topology.hosts[other], self.sync_network))

    def ignored(self, router) -> list[str]:
        """Addresses whose connections are not copied: the router's own (every NIC, loopback)
        and the virtual addresses (traffic to the router itself, VRRP, the sync link)."""
        host = self.topology.hosts[_name(router)]
        addrs = ["127.0.0.1"] + [str(l.address.ip) for l in host.links if l.address is not None]
        return addrs + [str(v.address) for v in self.topology.virtual_ips]

    def config(self, router) -> str:
        """``/etc/conntrackd/conntrackd.conf`` of ``router``."""
        mine, theirs = self._sync(router)
        return render("conntrackd.conf.j2", path=CONNTRACKD_CONF, hostname=_name(router),
                      transport=self.transport, sync_network=self.sync_network, sync_iface=mine.iface,
                      sync_address=str(mine.address.ip), peer_sync_address=str(theirs.address.ip),
                      port=self.port, multicast_address=self.multicast_address,
                      multicast_group=self.multicast_group, protocols=list(self.protocols),
                      ignore=self.ignored(router), purge_timeout=self.purge_timeout,
                      commit_timeout=self.commit_timeout, lockfile=self.lockfile, socket=self.socket)

    def notify_script(self, router) -> str:
        """The script keepalived runs on a state change (``primary``, ``backup``, ``fault``)."""
        self._sync(router)
        return render("conntrackd-notify.sh.j2", path=NOTIFY_SCRIPT, hostname=_name(router),
                      conf=CONNTRACKD_CONF, lockfile=self.lockfile, tag=NOTIFY_TAG)

    def install(self, host) -> str:
        """Write conntrackd.conf and the notify script (root's, mode 755: keepalived's script
        security refuses scripts others may write) on ``host``, order keepalived after
        conntrackd at boot (a systemd drop-in: the notify scripts need a running conntrackd)
        and check the file (:meth:`check`)."""
        conf, script = self.config(host.name), self.notify_script(host.name)
        dropin = render("keepalived-after-conntrackd.conf.j2", path=ORDER_DROPIN, hostname=host.name)
        host.run("mkdir -p /etc/conntrackd", timeout=30)
        host.put(CONNTRACKD_CONF, conf, mode=0o644)
        host.put(NOTIFY_SCRIPT, script, mode=0o755)
        host.put(ORDER_DROPIN, dropin, mode=0o644)
        host.run("systemctl daemon-reload", timeout=60)
        return self.check(host)

    def check(self, host, path: str = CONNTRACKD_CONF) -> str:
        """conntrackd has no config-test option, so ask it for statistics: ``conntrackd -C PATH
        -s`` parses the whole file first.  A parse error ("parsing config file in line ...") or
        an unreadable file is raised as ``CommandError``; "can't connect" (no daemon yet) means
        the file parsed, and so does an answer (a daemon runs)."""
        command = f"conntrackd -C {shlex.quote(path)} -s"
        res = host.run(command, check=False, timeout=60)
        out = (res.stdout + res.stderr).strip()
        if res.ok or ("can't connect" in out and not re.search(r"parsing config file|can't open config", out)):
            return out
        raise CommandError(host.name, command, res.exit_status, res.stdout,
                           f"{path} rejected by conntrackd on {host.name}: {out or 'no message'}")

    def start(self, host, timeout: float = 120) -> None:
        """Enable and (re)start conntrackd (before keepalived: the notify script expects it)."""
        host.run("systemctl enable conntrackd >/dev/null 2>&1; rm -f " + shlex.quote(self.lockfile)
                 + "; systemctl restart conntrackd", timeout=timeout)


@dataclass
class Nat:
    """The stateful NAT firewall of the pair (the same rules on both routers): new connections
    only from ``inside`` to ``outside`` (TCP only from a SYN), source NAT to the outside
    virtual address, and no pick-up of connections in mid-stream
    (``net.netfilter.nf_conntrack_tcp_loose=0``): so a router that does not know a connection
    drops its packets, which is what conntrackd is there to prevent."""

    topology: Topology | str = "gateway"
    routers: tuple[str, str] | None = None
    inside: str = "inside"
    outside: str = "outside"

    def __post_init__(self) -> None:
        self.topology = _topology(self.topology)
        self.routers = _routers(self.topology, self.routers)
        for net in (self.inside, self.outside):
            if net not in self.topology.networks:
                raise ValueError(f"{self.topology.source}: no network {net!r}; networks: "
                                 f"{', '.join(self.topology.networks)}")
        self.snat_address()
        for r in self.routers:
            self.rules(r)

    def snat_address(self) -> str:
        for v in self.topology.virtual_ips:
            if v.network == self.outside:
                return str(v.address)
        raise ValueError(f"{self.topology.source}: no virtual IP on network '{self.outside}' to NAT to: "
                         "a router's own address would change with the failover")

    def rules(self, router) -> str:
        """The iptables-legacy-restore file of ``router``."""
        name = _name(router)
        if name not in self.routers:
            raise ValueError(f"{self.topology.source}: host {name!r} is not one of the pair "
                             f"{', '.join(self.routers)}")
        host = self.topology.hosts[name]
        return render("gateway.rules.j2", path=RULES, hostname=name, inside=self.inside,
                      inside_subnet=str(self.topology.networks[self.inside].subnet),
                      inside_iface=_link(self.topology, host, self.inside).iface,
                      outside_iface=_link(self.topology, host, self.outside).iface,
                      snat_address=self.snat_address())

    def unit(self, router) -> str:
        """The systemd unit that loads the rules at every boot, before keepalived starts."""
        name = _name(router)
        self.rules(name)  # refuses a stranger
        return render("hautils-gateway-rules.service.j2", unit=NAT_UNIT, hostname=name, rules=RULES)

    def install(self, *hosts) -> None:
        """Write the rules and their boot unit on each of ``hosts`` (all at once: a systemd
        reload costs seconds in a UML guest), test the rules (``iptables-legacy-restore
        --test``), then load them through the unit, enabled: a router that boots again after a
        power failure has its firewall before keepalived starts.  The VRRP advertisements
        tracked so far are forgotten, so that the new rules apply to them."""
        if not hosts:
            raise ValueError("Nat.install(host, ...): name at least one router of the pair")
        on_each(self._install, hosts)

    def _install(self, host) -> None:
        rules, unit = self.rules(host.name), self.unit(host.name)
        host.run("mkdir -p /etc/hautils", timeout=30)
        host.put(RULES, rules, mode=0o644)
        host.put(f"/etc/systemd/system/{NAT_UNIT}", unit, mode=0o644)
        _run_check(host, f"iptables-legacy-restore --test {RULES}", RULES, "iptables-legacy-restore --test")
        # one reload: the enable that follows it has nothing more to load
        host.run(f"systemctl daemon-reload && systemctl enable --no-reload {NAT_UNIT} >/dev/null 2>&1 && "
                 f"systemctl restart {NAT_UNIT} && {FORGET_VRRP}", timeout=120)

    def remove(self, host) -> None:
        """Back to a plain router: the unit disabled, empty tables, forwarding allowed, mid-stream
        pick-up on again (the kernel's default)."""
        host.run(f"systemctl disable --now {NAT_UNIT} >/dev/null 2>&1; iptables-legacy -F && "
                 "iptables-legacy -P FORWARD ACCEPT && iptables-legacy -t nat -F && "
                 "sysctl -qw net.netfilter.nf_conntrack_tcp_loose=1", timeout=60)


def wait_master(hosts, vips, expected: str | None = None, *, timeout: float = 120, stable_s: float = 1.0,
                interval: float = 0.5, sleep=time.sleep, clock=time.monotonic) -> str:
    """Wait until one host holds every virtual address (``expected``, if given) and still does
    ``stable_s`` later: the pair has settled.  Returns the master's name."""
    vips = list(vips)
    deadline = clock() + timeout
    since, last = None, None
    while True:
        m = master_of(hosts, vips)
        ok = m is not None and (expected is None or m == expected)
        if not ok:
            since = last = None
        elif m != last:
            since, last = clock(), m
        elif clock() - since >= stable_s:
            return m
        if clock() > deadline:
            raise TimeoutError(f"VRRP pair not settled within {timeout:g} s (want {expected or 'one master'}; "
                               f"addresses held: {holders(hosts, vips)})")
        sleep(interval)
