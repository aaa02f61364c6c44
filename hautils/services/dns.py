"""The SIP lab's DNS server (the thesis's section 5.5.2.1): bind9, authoritative for ``lab.uoc``.

The phones find their registrars through DNS alone (RFC 3263): they ask for the SRV records
``_sip._udp.lab.uoc`` and try the targets in the order the records give (lower priority first,
then by weight).  So the zone is the whole of the "list of servers" of section 5.3, and it is
rendered from the topology (``labs/sip.yaml``): one A record per host address on the lab's
network, one SRV record per registrar (the hosts with ``role: sip-registrar``), no address
typed twice.

What differs from the thesis, and why:

* TTLs of seconds, not a week (the thesis's ``$TTL 604800``): see :attr:`Dns.ttl`.
* the SOA names the server (``dns-server.lab.uoc.``) as its primary, where the thesis wrote
  the zone's own name; the serial is the render time in epoch seconds (it only has to grow).
* ``named.conf.options`` makes the server authoritative-only (``recursion no``) and has it
  listen on the lab address and the loopback only: the lab has no way out, and a phone that
  asked for an outside name should be refused at once rather than wait for a timeout.
* SRV records as the thesis has them: priority 0, weight 10 for both registrars (the phones
  pick either, at random by weight).  ``srv=`` changes that (the chapter can pin the phones to
  one registrar with priorities 0 and 10).

Each file is checked by BIND's own tools on the server, as keepalived's are with
``keepalived -t``: ``named-checkconf`` (the whole of named.conf with its includes) and
``named-checkzone``; both name the file and line of an error, which :meth:`Dns.install` puts
in its ``CommandError``.

::

    from hautils.services.dns import Dns
    dns = Dns("sip")
    print(dns.zone_file())
    dns.install(lab["dns-server"]); dns.start(lab["dns-server"])
    dns.answers(lab["dns-server"])    # what dig gets back for the SRV name
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field

from ..topology import Topology, load
from . import render, tool_check

__all__ = ["Dns", "Srv", "NAMED_CONF", "OPTIONS", "LOCAL", "SIP_PORT", "locate"]

NAMED_CONF = "/etc/bind/named.conf"  # Debian's; it includes the two below
OPTIONS = "/etc/bind/named.conf.options"
LOCAL = "/etc/bind/named.conf.local"
SIP_PORT = 5060
NAME_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")  # one DNS label (RFC 1035 host name rules)
#: where BIND's tools say an error is: "/etc/bind/db.lab.uoc:12: ..." (both tools write it so)
LOCATION_RE = re.compile(r"(?P<file>/[^\s:]+):(?P<line>\d+):")


def _topology(topology: Topology | str) -> Topology:
    return load(topology, check_memory=False) if isinstance(topology, str) else topology


def locate(output: str) -> tuple[str, int] | None:
    """The first ``file:line`` a BIND tool's output names, or None."""
    m = LOCATION_RE.search(output)
    return (m["file"], int(m["line"])) if m else None


@dataclass(frozen=True)
class Srv:
    """One SRV record of the zone: ``_service._proto`` (``owner``) -> ``target`` (a host of the
    topology) with RFC 2782's priority (lower first) and weight (share among equal priorities)."""

    target: str
    priority: int = 0
    weight: int = 10
    port: int = SIP_PORT
    owner: str = "_sip._udp"


@dataclass
class Dns:
    """bind9 on the topology's ``role: dns`` host, authoritative for ``zone``.

    ``ttl`` (s) is every record's TTL and the negative TTL.  The thesis used a week; the
    chapter measures failovers, and an answer a resolver caches for that long would hide any
    change to the records for that long (a phone with its own cache, or a stub resolver in
    front of it, could keep trying a removed server).  5 s is shorter than the thesis's 15 s
    registration refresh, so no cached answer outlives one refresh.  ``srv``: the records;
    None gives the thesis's, priority 0 and weight 10 for every ``role: sip-registrar`` host.
    ``serial``: None is the time of rendering in epoch seconds, which grows with every
    install (a primary without secondaries ignores it, but a secondary added later would not).
    """

    topology: Topology | str = "sip"
    zone: str = "lab.uoc"
    server: str | None = None  # None: the host with role "dns"
    network: str = "lan"
    ttl: int = 5
    srv: list[Srv] | None = None
    serial: int | None = None
    refresh: int = 3600
    retry: int = 600
    expire: int = 1209600
    hostmaster: str = "hostmaster"
    zone_path: str = field(default="")

    def __post_init__(self) -> None:
        self.topology = _topology(self.topology)
        src = self.topology.source
        labels = self.zone.rstrip(".").split(".")
        if not all(NAME_RE.match(x) for x in labels):
            raise ValueError(f"zone={self.zone!r}: dot-separated labels of letters, digits and '-'")
        self.zone = self.zone.rstrip(".")
        if self.network not in self.topology.networks:
            raise ValueError(f"{src}: no network {self.network!r}; networks: {', '.join(self.topology.networks)}")
        if self.server is None:
            dns = [h.name for h in self.topology.hosts.values() if h.role == "dns"]
            if len(dns) != 1:
                raise ValueError(f"{src}: want exactly one host with role 'dns', found {dns}: pass server=NAME")
            self.server = dns[0]
        if self.server not in self.topology.hosts:
            raise ValueError(f"{src}: no host named {self.server!r}; hosts: {', '.join(self.topology.hosts)}")
        for h in self.topology.hosts:
            if not NAME_RE.match(h):
                raise ValueError(f"{src}: host name {h!r} is not a DNS label (letters, digits, '-'): rename it")
        self.address(self.server)  # the server needs an address on the network
        if self.srv is None:
            regs = [h.name for h in self.topology.hosts.values() if h.role == "sip-registrar"]
            if not regs:
                raise ValueError(f"{src}: no host with role 'sip-registrar' for the SRV records: pass srv=[Srv(...)]")
            self.srv = [Srv(r) for r in regs]
        for r in self.srv:
            if r.target not in self.topology.hosts:
                raise ValueError(f"srv: target {r.target!r} is not a host of {src} (hosts: "
                                 f"{', '.join(self.topology.hosts)})")
            self.address(r.target)
            for name, v in (("priority", r.priority), ("weight", r.weight), ("port", r.port)):
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
                    raise ValueError(f"srv record for {r.target}: {name}={v!r}, a whole number 0 to 65535 (RFC 2782)")
        for name in ("ttl", "refresh", "retry", "expire"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**31:
                raise ValueError(f"{name}={v!r}: whole seconds, 0 to 2^31-1 (RFC 2181)")
        if self.expire < self.refresh + self.retry:
            raise ValueError(f"expire={self.expire} is less than refresh+retry ({self.refresh + self.retry}): "
                             "named-checkzone warns about it; make expire longer")
        self._serial_auto = self.serial is None
        if self.serial is None:
            self.serial = int(time.time())
        if not 1 <= self.serial < 2**32:
            raise ValueError(f"serial={self.serial!r}: 1 to 2^32-1 (RFC 1982)")
        if not self.zone_path:
            self.zone_path = f"/etc/bind/db.{self.zone}"  # the thesis's name

    # -- the topology's view ---------------------------------------------------------------------

    def address(self, host: str) -> str:
        """``host``'s address on the lab network, as the zone publishes it."""
        for link in self.topology.hosts[host].links:
            if link.network == self.network and link.address is not None:
                return str(link.address.ip)
        raise ValueError(f"{self.topology.source}: host '{host}' field 'links': no address on network "
                         f"'{self.network}', which the zone needs for its A record")

    def hosts(self) -> list[tuple[str, str]]:
        """(name, address) of every host with an address on the network: the A records."""
        out = []
        for h in self.topology.hosts.values():
            for link in h.links:
                if link.network == self.network and link.address is not None:
                    out.append((h.name, str(link.address.ip)))
                    break
        return out

    def srv_order(self) -> list[Srv]:
        """The SRV records in the order a client tries them first: priority, then the heavier
        weight (RFC 2782 picks at random by weight; the most likely first)."""
        return sorted(self.srv, key=lambda r: (r.priority, -r.weight))

    @property
    def srv_name(self) -> str:
        return f"_sip._udp.{self.zone}"

    # -- the files -------------------------------------------------------------------------------

    def _values(self) -> dict:
        net = self.topology.networks[self.network]
        return {"hostname": self.server, "zone": self.zone, "address": self.address(self.server),
                "subnet": str(net.subnet), "zone_path": self.zone_path, "lab": self.topology.name}

    def named_conf(self) -> str:
        """``named.conf.options``: authoritative only, on the lab address (see the module doc)."""
        return render("named.conf.options.j2", path=OPTIONS, **self._values())

    def named_conf_local(self) -> str:
        """``named.conf.local``: the zone, primary, from :meth:`zone_file`."""
        return render("named.conf.local.j2", path=LOCAL, **self._values())

    def zone_file(self) -> str:
        """The zone file: SOA, NS, the hosts' A records, the SRV records."""
        return render("db.zone.j2", path=self.zone_path, ttl=self.ttl, mname=f"{self.server}.{self.zone}",
                      rname=f"{self.hostmaster}.{self.zone}", serial=self.serial, serial_auto=self._serial_auto, refresh=self.refresh,
                      retry=self.retry, expire=self.expire, negative_ttl=self.ttl, ns=self.server,
                      network=self.network, hosts=self.hosts(), srv=self.srv_order(), **self._values())

    def files(self) -> dict[str, str]:
        """Every file :meth:`install` writes, by path."""
        return {OPTIONS: self.named_conf(), LOCAL: self.named_conf_local(), self.zone_path: self.zone_file()}

    def resolv_conf(self) -> str:
        """``/etc/resolv.conf`` for the lab's hosts, as the thesis sets them up (section 5.5.2:
        ask dns-server, search lab.uoc); one try of 1 s, so a lookup fails fast."""
        return (f"# written by hautils (chapter 5): the lab's DNS server\nnameserver {self.address(self.server)}\n"
                f"search {self.zone}\noptions timeout:1 attempts:1\n")

    # -- life cycle (in the lab) -----------------------------------------------------------------

    def _check(self, host, command: str, path: str) -> str:
        return tool_check(host, command, path, command.split()[0], "dns", where=LOCATION_RE)

    def check(self, host) -> str:
        """BIND's own checks on ``host``: ``named-checkconf`` (named.conf and its includes) and
        ``named-checkzone`` (the zone loaded as named would, with its integrity checks: an NS or
        SRV target without an address fails).  Raises ``CommandError`` naming file and line."""
        a = self._check(host, f"named-checkconf {NAMED_CONF}", NAMED_CONF)
        b = self._check(host, f"named-checkzone {shlex.quote(self.zone)} {shlex.quote(self.zone_path)}",
                        self.zone_path)
        return "\n".join(x for x in (a, b) if x)

    def install(self, host) -> str:
        """Write the three files on the DNS server and check them (:meth:`check`); returns the
        tools' output.  named keeps serving the old zone until :meth:`start`."""
        if host.name != self.server:
            raise ValueError(f"Dns.install: {host.name} is not the zone's server ({self.server})")
        for path, text in self.files().items():
            host.put(path, text, mode=0o644)
        return self.check(host)

    def start(self, host, timeout: float = 120) -> float:
        """Enable named and (re)start it; returns the epoch time of the start (guest clock)."""
        out = host.run("systemctl enable named >/dev/null 2>&1; echo $EPOCHREALTIME; systemctl restart named",
                       timeout=timeout).stdout
        return float(out.split()[0].replace(",", "."))

    def answers(self, host, server: str = "127.0.0.1") -> list[tuple[int, int, int, str]]:
        """The SRV records ``dig`` gets from ``server``, asked on ``host``: (priority, weight,
        port, target) as the zone should give them (compare with :meth:`srv_order`)."""
        res = host.run(f"dig +short +time=1 +tries=2 @{server} SRV {self.srv_name}", timeout=30)
        out = []
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 4 and all(p.isdigit() for p in parts[:3]):
                out.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3].rstrip(".")))
        return sorted(out, key=lambda r: (r[0], -r[1], r[3]))

    def point_resolver(self, *hosts) -> None:
        """Write :meth:`resolv_conf` on ``hosts`` (the phones, the registrars)."""
        for h in hosts:
            h.put("/etc/resolv.conf", self.resolv_conf(), mode=0o644)
