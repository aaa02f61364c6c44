"""FRR's OSPF on the routing lab: the paper's Quagga set-up of section 3.3.2, on Quagga's successor.

The paper runs Quagga's ``zebra`` (it installs the routes in the kernel) and ``ospfd`` (it
talks OSPF to the neighbours) on ``router1``, ``pathA``, ``pathB`` and ``router2``, with one
config file per daemon.  FRR keeps the same daemons and the same Cisco-like commands, but reads
them from one *integrated* file, ``/etc/frr/frr.conf``; ``/etc/frr/daemons`` says which daemons
run.  Everything here is generated from the topology (``labs/routing.yaml``): interfaces,
addresses, networks and the router-id, so the files cannot drift away from the lab.

What the paper set, on every OSPF interface and router (section 3.3.2.2)::

    ip ospf authentication null
    ip ospf hello-interval 1
    ip ospf dead-interval minimal hello-multiplier 5
    router ospf / ospf router-id <eth0 address> / redistribute connected
                / network <each 10.10.x.0/24 of the router> area 0.0.0.0

``dead-interval minimal`` makes the dead interval 1 s and sends ``hello-multiplier`` hellos a
second (5: one every 200 ms).  FRR's ospfd documentation (doc/user/ospfd.rst, "Interfaces")
says that the hello-interval is then advertised as 0 and that ``ip ospf hello-interval`` "has
no effect"; the paper's line is kept because the paper has it, and it matters again as soon as
a plain dead interval is chosen (``dead_interval=4``).

Which networks are in OSPF, following the paper: the 10.10.x.0/24 links only.  ``eth0``
(br0, 192.168.103.0/24, the paper's Internet side) gets no ``network`` statement: the paper
declares none for it, and its neighbours learn it only through ``redistribute connected``, as
an external route (the paper's ``show ip ospf route`` lists ``N E2 192.168.103.0/24``).

Not carried over, on purpose: zebra's ``ip address`` lines (the lab sets every address at boot
from the same topology, ``hautils-boot``; zebra would only re-add them), the empty
``interface lo`` and ``line vty`` blocks, and vtysh.conf's ``username root nopassword`` (FRR's
Debian package keeps its own vtysh.conf with the integrated config).  The paper's pathB
``ospfd.conf`` shows router-id 192.168.103.92 and pathA's networks: a copy of pathA's file
(its own ``show ip ospf neighbor`` lists pathB as 192.168.103.98); here each router gets its
own eth0 address.

Options the chapter varies (defaults = the paper): ``dead_interval`` (seconds instead of
"minimal"), ``max_metric_on_startup`` (RFC 3137 stub router for N s after ospfd starts, so a
returning path router is not used before it has all routes), ``stub_until_routed`` (the same,
held until the router's kernel has its routes: a small service, hautils-ospf-ready, lifts it;
see :meth:`Frr.expected_routes`) and ``bfd`` (FRR's ``bfdd``: a
neighbour is declared dead after ``bfd_detect_multiplier`` missed packets).  Syntax from FRR's
own user documentation: doc/user/ospfd.rst (``ip ospf dead-interval minimal hello-multiplier
(2-20)``, ``max-metric router-lsa [on-startup|on-shutdown] (5-86400)``, ``network A.B.C.D/M
area (0-4294967295)``), doc/user/bfd.rst (``bfd`` / ``profile WORD`` / ``receive-interval``,
``transmit-interval (10-4294967)`` ms, ``detect-multiplier (1-255)``; ``ip ospf bfd profile
BFDPROF``), doc/user/zebra.rst and ipv6.rst (``description``, ``link-detect``, ``ipv6 nd
suppress-ra``) and tools/etc/frr/daemons (the daemons file's format).

::

    from hautils import topology
    from hautils.services.frr import Frr
    frr = Frr(topology.load("routing"), bfd=True)
    print(frr.config("router1"))
    for name in frr.routers:
        frr.install(lab[name]); frr.start(lab[name])
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from ..errors import CommandError
from ..ssh import on_each
from ..topology import Host as TopoHost
from ..topology import MGMT_IFACE, Topology, load
from . import render

DAEMONS = "/etc/frr/daemons"
READY_UNIT = "hautils-ospf-ready.service"
READY_SCRIPT = "/usr/local/sbin/hautils-ospf-ready"
CONF = "/etc/frr/frr.conf"
CHECK = f"vtysh -C -f {CONF}"  # FRR's own dry run: parses the file as vtysh would load it
#: what vtysh prints for a line it rejects ("line 12: % Unknown command: ..."), in case an
#: FRR release reports it without a non-zero exit status
VTYSH_ERROR = re.compile(r"% (Unknown command|Ambiguous command|Command incomplete|Invalid)", re.I)

#: FRR's optional daemons, as its daemons file lists them; watchfrr, zebra and staticd always
#: run, and mgmtd too from FRR 9 on (Quagga's ``zebra=yes`` line has no FRR equivalent)
OPTIONAL_DAEMONS = ("bgpd", "ospfd", "ospf6d", "ripd", "ripngd", "isisd", "pimd", "pim6d", "ldpd", "nhrpd",
                    "eigrpd", "babeld", "sharpd", "pbrd", "bfdd", "fabricd", "vrrpd", "pathd")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")  # a BFD profile name: one vtysh word


def _name(router) -> str:
    return router if isinstance(router, str) else router.name


@dataclass
class Frr:
    """OSPF (and optionally BFD) for every ``role: router`` host of ``topology``.

    ``topology`` is a ``hautils.topology.Topology`` (or a lab name such as ``"routing"``);
    the routers are its hosts with ``role: router``."""

    topology: Topology | str = "routing"
    hello_interval: int = 1  # s, the paper's (ineffective under "minimal", see the module doc)
    # None: the paper's "dead-interval minimal hello-multiplier N" (1 s, N hellos a second);
    # a number: a plain dead interval in seconds, hellos every hello_interval
    dead_interval: int | None = None
    hello_multiplier: int = 5  # the paper's: a hello every 200 ms
    # RFC 3137: ospfd announces its transit links at maximum cost for N s after it starts, so
    # that a router that comes back is not used before it has learnt every route.  Off in the
    # paper, which lost 5 pings when a path router came back (section 3.3.3); whether this
    # helps is for the chapter to measure
    max_metric_on_startup: int | None = None
    # the same stub-router advertisement, but held until this router's kernel routes every OSPF
    # network through the next hops the topology gives (:meth:`expected_routes`), then lifted by
    # a small service (hautils-ospf-ready) that starts with FRR: no fixed delay to guess
    stub_until_routed: bool = False
    stub_timeout_s: int = 300  # give up (stay a stub router, the unit fails) after this
    # OSPF's MinLSInterval (RFC 2328: a router re-originates an LSA at most once per 5 s) and
    # MinLSArrival (a neighbour accepts a new instance at most once per 1 s), FRR's
    # "timers throttle lsa all" and "timers lsa min-arrival", in ms; None: FRR's defaults
    # (5000 and 1000), as in the paper.  A restarted router's own LSAs wait on them: see the chapter
    lsa_min_interval_ms: int | None = None
    lsa_min_arrival_ms: int | None = None
    bfd: bool = False  # not in the paper: BFD sessions to every OSPF neighbour (bfdd)
    bfd_profile: str = "fast"
    # FRR's own defaults (bfd.rst), written out so that readers see them: a neighbour is
    # declared dead after detect_multiplier x the peer's transmit interval (900 ms)
    bfd_receive_ms: int = 300
    bfd_transmit_ms: int = 300
    bfd_detect_multiplier: int = 3
    area: str = "0"  # the backbone, which the paper writes 0.0.0.0; FRR takes either form
    # the interface that stays out of OSPF and gives the router-id (the paper's eth0)
    router_id_iface: str = "eth0"

    def __post_init__(self) -> None:
        if isinstance(self.topology, str):
            self.topology = load(self.topology, check_memory=False)
        self._check_range("hello_interval", self.hello_interval, 1, 65535)
        if self.dead_interval is None:
            self._check_range("hello_multiplier", self.hello_multiplier, 2, 20,
                              "(FRR's range; Quagga's was 1-10)")
        else:
            self._check_range("dead_interval", self.dead_interval, 1, 65535)
            if self.dead_interval <= self.hello_interval:
                raise ValueError(f"dead_interval={self.dead_interval} must be longer than hello_interval="
                                 f"{self.hello_interval}: a neighbour would be declared dead between two "
                                 "hellos (OSPF's usual choice is 4 x hello_interval)")
        if self.max_metric_on_startup is not None:
            self._check_range("max_metric_on_startup", self.max_metric_on_startup, 5, 86400)
        if self.stub_until_routed and self.max_metric_on_startup is not None:
            raise ValueError("stub_until_routed and max_metric_on_startup both set: choose one (the first lifts "
                             "the max-metric when the routes are there, the second after a fixed time)")
        self._check_range("stub_timeout_s", self.stub_timeout_s, 10, 86400)
        if self.lsa_min_interval_ms is not None:
            self._check_range("lsa_min_interval_ms", self.lsa_min_interval_ms, 0, 5000)
        if self.lsa_min_arrival_ms is not None:
            self._check_range("lsa_min_arrival_ms", self.lsa_min_arrival_ms, 0, 600000)
        if self.bfd:
            if not NAME_RE.match(self.bfd_profile):
                raise ValueError(f"bfd_profile={self.bfd_profile!r}: one word of letters, digits, '_', '.', '-'")
            self._check_range("bfd_receive_ms", self.bfd_receive_ms, 10, 4294967)
            self._check_range("bfd_transmit_ms", self.bfd_transmit_ms, 10, 4294967)
            self._check_range("bfd_detect_multiplier", self.bfd_detect_multiplier, 1, 255)
        if not (re.fullmatch(r"\d+", self.area) or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", self.area)):
            raise ValueError(f"area={self.area!r}: write an area number (0) or a dotted id (0.0.0.0)")
        if not self.routers:
            raise ValueError(f"{self.topology.source}: no host has 'role: router'; FRR has nothing to run on")
        for name in self.routers:  # fail now, naming the host, rather than half-way through a lab
            self._router_id(self._router(name))
            if not self._ospf_links(self._router(name)):
                raise ValueError(f"{self.topology.source}: host '{name}' field 'links': no addressed link besides "
                                 f"{self.router_id_iface}, so OSPF would run on no interface")

    @staticmethod
    def _check_range(field: str, value, low: int, high: int, note: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{field}={value!r}: FRR takes a whole number from {low} to {high}"
                             + (f" {note}" if note else ""))

    # -- the topology's view -------------------------------------------------------------------

    @property
    def routers(self) -> list[str]:
        """The hosts FRR runs on, in the topology's order."""
        return [h.name for h in self.topology.hosts.values() if h.role == "router"]

    def _router(self, router) -> TopoHost:
        name = _name(router)
        host = self.topology.hosts.get(name)
        if host is None:
            raise ValueError(f"{self.topology.source}: no host named {name!r}; FRR runs on the routers "
                             f"{', '.join(self.routers)}")
        if host.role != "router":
            raise ValueError(f"{self.topology.source}: host '{name}' has role {host.role!r}, not 'router': "
                             f"it routes nothing and gets no FRR config (the paper's PCs use a static route); "
                             f"FRR runs on {', '.join(self.routers)}")
        return host

    def _router_id(self, host: TopoHost) -> str:
        for link in host.links:
            if link.iface == self.router_id_iface and link.address is not None:
                return str(link.address.ip)
        raise ValueError(f"{self.topology.source}: host '{host.name}' field 'links': no address on "
                         f"{self.router_id_iface}, which gives the OSPF router-id (the paper uses eth0's); "
                         f"add one, or pass router_id_iface=")

    def _ospf_links(self, host: TopoHost) -> list:
        return [link for link in host.links if link.address is not None and link.iface != self.router_id_iface]

    def _peers(self, host: TopoHost, network: str) -> list[str]:
        return [h.name for h in self.topology.hosts.values()
                if h is not host and any(link.network == network for link in h.links)]

    def networks(self, router) -> list[str]:
        """The networks ``router`` declares in OSPF (one ``network`` line each), e.g. 10.10.10.0/24."""
        seen: list[str] = []
        for link in self._ospf_links(self._router(router)):
            net = str(link.address.network)
            if net not in seen:
                seen.append(net)
        return seen

    def neighbours(self, router) -> dict[str, str]:
        """The OSPF neighbours ``router`` must reach Full with: {router-id: host name}, i.e. the
        other routers on its OSPF links (the paper's ``show ip ospf neighbor`` lists them)."""
        host = self._router(router)
        out: dict[str, str] = {}
        for link in self._ospf_links(host):
            for peer in self._peers(host, link.network):
                if self.topology.hosts[peer].role == "router":
                    out[self._router_id(self._router(peer))] = peer
        return out

    def all_networks(self) -> list[str]:
        """Every network some router declares in OSPF: each router must end up with a route to each."""
        nets: list[str] = []
        for r in self.routers:
            nets += [n for n in self.networks(r) if n not in nets]
        return nets

    def expected_routes(self, router, detours: bool = False) -> dict[str, list[str]]:
        """The next hops ``router``'s kernel should have for every OSPF network it is not on:
        ``{network: [addresses]}``, the neighbours one router closer to it (several: ECMP).
        Every lab link has FRR's same default cost, so "closer" is counted in routers.

        ``detours``: also the neighbours no farther from the network than ``router`` itself.
        While another router is a stub router too (all of them start at once, after a deploy or
        a power failure of the lab), routes avoid its transit links and may take such a neighbour;
        they still lead away from ``router``, never back towards where a packet came from.
        Without it, two starting routers each waited for the other's lift (a deploy timed out)."""
        host = self._router(router)
        routers = self.routers
        nets = {r: set(self.networks(r)) for r in routers}
        adj = {r: {p for link in self._ospf_links(self._router(r)) for p in self._peers(self._router(r), link.network)
                   if p in nets} for r in routers}

        def hops(src: str) -> dict[str, int]:
            seen, edge, n = {src: 0}, [src], 0
            while edge:
                n += 1
                edge = [p for r in edge for p in sorted(adj[r]) if p not in seen]
                for p in edge:
                    seen.setdefault(p, n)
            return seen

        dist = {r: hops(r) for r in routers}

        def to_net(r: str, net: str) -> float:
            return min((d for x, d in dist[r].items() if net in nets[x]), default=float("inf"))

        want: dict[str, list[str]] = {}
        for net in self.all_networks():
            if net in nets[host.name]:
                continue
            d = to_net(host.name, net)
            via = sorted({str(pl.address.ip) for link in self._ospf_links(host)
                          for p in self._peers(host, link.network)
                          if p in nets and (to_net(p, net) == d - 1 or detours and to_net(p, net) <= d)
                          for pl in self._router(p).links if pl.network == link.network and pl.address is not None})
            if not via:
                raise ValueError(f"{self.topology.source}: {host.name} has no OSPF path to {net}")
            want[net] = via
        return want

    def ready_script(self, router) -> str:
        """``/usr/local/sbin/hautils-ospf-ready`` of ``router`` (``stub_until_routed``)."""
        host = self._router(router)
        return render("ospf-ready.py.j2", hostname=host.name, timeout_s=self.stub_timeout_s,
                      want_json=json.dumps(json.dumps(self.expected_routes(host.name, detours=True),
                                                      sort_keys=True)))

    def stub_state(self, host) -> str:
        """``hautils-ospf-ready``'s state on ``host``: ``running`` (still a stub router, waiting for
        its routes), ``exited`` (max-metric lifted), ``failed``, or ``dead`` (not started)."""
        res = host.run(f"systemctl show --property=SubState --value {READY_UNIT}", check=False, timeout=30)
        return res.stdout.strip() or "dead"

    def converged(self, host) -> list[str]:
        """What ``host`` (a router, in the lab) still lacks: neighbours not Full, networks without
        a kernel route.  Empty when it has converged."""
        name = _name(host)
        want = self.neighbours(name)
        res = host.run("vtysh -c 'show ip ospf neighbor json'; echo '#'; ip -j route show", check=False, timeout=30)
        nbr_text, _, route_text = res.stdout.partition("\n#\n")
        try:
            nbrs = json.loads(nbr_text or "{}").get("neighbors", {})
            routes = json.loads(route_text or "[]")
        except ValueError:
            return [f"{name}: ospfd not answering ({(res.stdout + res.stderr).strip()[:120]!r})"]
        missing = [f"{name}: neighbour {peer} ({rid}) not Full" for rid, peer in want.items()
                   if not any(str(n.get("nbrState", "")).startswith("Full") for n in nbrs.get(rid, []))]
        have = {r.get("dst") for r in routes}
        missing += [f"{name}: no route to {net}" for net in self.all_networks() if net not in have]
        if self.stub_until_routed and not missing:
            state = self.stub_state(host)
            if state != "exited":
                missing.append(f"{name}: still a stub router ({READY_UNIT} {state})")
        if self.bfd and not missing:
            up = self.bfd_up(host)
            if up < len(want):
                missing.append(f"{name}: {up} of {len(want)} BFD sessions up")
        return missing

    @staticmethod
    def bfd_up(host) -> int:
        """How many of ``host``'s BFD sessions are up (``show bfd peers json``)."""
        res = host.run("vtysh -c 'show bfd peers json'", check=False, timeout=30)
        try:
            peers = json.loads(res.stdout or "[]")
        except ValueError:
            return 0
        return sum(1 for p in peers if isinstance(p, dict) and p.get("status") == "up")

    def wait_converged(self, hosts, timeout: float = 120, interval: float = 0.5) -> float:
        """Wait until every router in ``hosts`` has all its adjacencies Full, a kernel route to
        every OSPF network and (with ``bfd``) a BFD session up per neighbour; returns the seconds.  The error names what is still missing."""
        start = time.monotonic()
        while True:
            missing = [m for h in hosts for m in self.converged(h)]
            if not missing:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"OSPF not converged after {timeout:g} s: " + "; ".join(missing))
            time.sleep(interval)

    # -- the files -------------------------------------------------------------------------------

    def daemons(self, router) -> str:
        """``/etc/frr/daemons``: ospfd on, bfdd only with ``bfd``, every other optional daemon off."""
        host = self._router(router)
        on = {"ospfd"} | ({"bfdd"} if self.bfd else set())
        return render("frr-daemons.j2", hostname=host.name,
                      daemons=[{"name": d, "on": d in on} for d in OPTIONAL_DAEMONS], bfd=self.bfd)

    def config(self, router) -> str:
        """``/etc/frr/frr.conf`` of ``router``: the paper's zebra.conf, ospfd.conf and vtysh.conf in one."""
        host = self._router(router)
        ospf = {link.iface for link in self._ospf_links(host)}
        interfaces = []
        for link in host.links:
            in_ospf = link.iface in ospf
            peers = self._peers(host, link.network) if in_ospf else []
            interfaces.append({
                "iface": link.iface,
                "ospf": in_ospf,
                "description": ("link to " + ", ".join(peers)) if peers else "",
                "address": link.address.with_prefixlen if link.address else "",
                "network": link.network,
            })
        return render("frr.conf.j2", hostname=host.name, router_id=self._router_id(host),
                      router_id_iface=self.router_id_iface, interfaces=interfaces, networks=self.networks(host),
                      area=self.area, hello_interval=self.hello_interval, dead_interval=self.dead_interval,
                      hello_multiplier=self.hello_multiplier, max_metric_on_startup=self.max_metric_on_startup,
                      stub_until_routed=self.stub_until_routed,
                      lsa_min_interval_ms=self.lsa_min_interval_ms, lsa_min_arrival_ms=self.lsa_min_arrival_ms,
                      bfd=self.bfd, bfd_profile=self.bfd_profile, bfd_receive_ms=self.bfd_receive_ms,
                      bfd_transmit_ms=self.bfd_transmit_ms, bfd_detect_multiplier=self.bfd_detect_multiplier,
                      mgmt_iface=MGMT_IFACE)

    # -- life cycle (in the lab) -----------------------------------------------------------------

    def install(self, host) -> None:
        """Write both files on ``host`` (an ``hautils.ssh.Host`` named like a router of the
        topology) and check frr.conf with ``vtysh -C -f`` (FRR's dry run).  Raises
        ``CommandError`` naming the host, the file and vtysh's complaint; FRR keeps running its
        old configuration until :meth:`start`.

        Owner frr:frr and mode 640, as the package installs them: the daemons run as ``frr``."""
        daemons, conf = self.daemons(host.name), self.config(host.name)  # refuses a non-router first
        host.put(DAEMONS, daemons, mode=0o640)
        host.put(CONF, conf, mode=0o640)
        if self.stub_until_routed:  # started with FRR from now on (WantedBy=frr.service), stopped with it
            host.put(READY_SCRIPT, self.ready_script(host.name), mode=0o755)
            host.put(f"/etc/systemd/system/{READY_UNIT}", render("hautils-ospf-ready.service.j2"))
            gate = f"systemctl daemon-reload && systemctl enable --quiet {READY_UNIT}"
        else:  # a previous deploy's gate must not lift anything of this configuration
            gate = (f"systemctl disable --quiet --now {READY_UNIT} 2>/dev/null; "
                    f"rm -f /etc/systemd/system/{READY_UNIT} {READY_SCRIPT}; systemctl daemon-reload")
        # sync: a power failure soon after (the chapter causes them) must not lose the files
        host.run(f"chown frr:frr {DAEMONS} {CONF} && {gate} && sync", timeout=60)
        res = host.run(CHECK, check=False, timeout=60)
        out = (res.stdout + res.stderr).strip()
        if not res.ok or VTYSH_ERROR.search(out):
            raise CommandError(host.name, CHECK, res.exit_status, res.stdout,
                               f"{CONF} rejected by vtysh -C on {host.name}: {out or 'no message'}\n"
                               f"(the file is hautils.services.frr's rendering: fix the option or the "
                               f"template frr.conf.j2, then install again)")

    def start(self, host, timeout: float = 120) -> float:
        """(Re)start FRR on ``host`` so it reads the new files; returns the seconds it took."""
        t = time.time()
        host.run("systemctl restart frr", timeout=timeout)
        return time.time() - t

    def deploy(self, hosts, timeout: float = 120) -> float:
        """Install (and check) this configuration on every router of ``hosts``, restart FRR on all
        of them at once and wait until OSPF has converged (:meth:`wait_converged`); returns the
        seconds from the first write to convergence.  One router after the other took 20-40 s
        in the lab (a restart of FRR costs seconds of a UML guest's CPU)."""
        hosts = list(hosts)
        t = time.monotonic()
        on_each(self.install, hosts)
        on_each(lambda h: self.start(h, timeout=timeout), hosts)
        self.wait_converged(hosts, timeout=timeout)
        return time.monotonic() - t

    def stop(self, host) -> float:
        """Graceful: stop FRR on ``host`` (the paper's failure test, section 3.3.3: the daemons
        withdraw their routes on the way out).  Returns the epoch time the stop began, read in
        the guest."""
        out = host.run("echo $EPOCHREALTIME; systemctl stop frr", timeout=120).stdout
        return float(out.split()[0].replace(",", "."))
