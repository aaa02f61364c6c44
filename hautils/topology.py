"""Topologies as data: a YAML file describes hosts, networks and links; this module checks it.

A learner edits these files, so every error names the file, the item and the
field, and says what would be valid.  The model is backend-neutral: the UML
backend turns it into bridges, taps and VMs; an inventory backend would map
it onto the user's own machines.

A file with ``figure: true`` is a drawing, not a lab: it describes a figure of
the thesis that has no lab of its own (e.g. multipath iSCSI, or the layers of
network redundancy).  Such a file may leave a network's ``subnet`` out (a
switch or a path drawn without addressing) and may mark NICs as slaves of a
bond (``bond: bond0``), which the lab engine does not build; it is never
checked against the machine's memory, and ``Lab`` refuses to boot it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import TopologyError

IFNAME_MAX = 15  # IFNAMSIZ - 1: the kernel refuses longer interface names
NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
MEM_RE = re.compile(r"^(\d+)\s*([MG])i?B?$", re.I)
SIZE_RE = re.compile(r"^(\d+)\s*([MG])i?B?$", re.I)
DEFAULT_MGMT = "172.31.255.0/24"
MGMT_IFACE = "mgmt0"
DISK_CONTENTS = {"container"}  # see Disk.content
PACKAGE_GROUPS = {"base", "storage", "routing", "cluster", "sip", "database"}
HOST_KEYS = {"name", "role", "memory", "disks", "links", "routes", "forwarding", "packages", "description"}
TOP_KEYS = {"name", "description", "paper", "management", "networks", "hosts", "virtual_ips", "figure"}


@dataclass(frozen=True)
class Network:
    """A layer-2 segment (a bridge in the UML backend)."""

    name: str
    subnet: ipaddress.IPv4Network | None  # None only in a figure (a segment drawn without addressing)
    description: str = ""


@dataclass(frozen=True)
class Link:
    """One NIC of a host: its name in the guest, the network it plugs into, its address."""

    iface: str
    network: str
    address: ipaddress.IPv4Interface | None
    mac: str = ""  # assigned by the topology loader, stable per (lab, host, iface)
    bond: str = ""  # the bond this NIC is a slave of (figures only: the lab engine builds no bonds)


@dataclass(frozen=True)
class Disk:
    name: str
    size_mb: int
    # what the disk holds when the lab starts: "" nothing (sparse zeros), "container": an ext4
    # filesystem with the course's container root (hautils.lab.container; chapter 4's guest)
    content: str = ""


@dataclass(frozen=True)
class Route:
    to: str  # "default" or a CIDR
    via: ipaddress.IPv4Address


@dataclass
class Host:
    name: str
    role: str
    memory_mb: int
    links: list[Link]
    disks: list[Disk] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    forwarding: bool = False
    packages: str = "base"
    description: str = ""
    mgmt: Link | None = None  # the management NIC, added by the loader

    @property
    def address(self) -> ipaddress.IPv4Address | None:
        """The host's first lab address (what the paper's /etc/hosts lists)."""
        for link in self.links:
            if link.address is not None:
                return link.address.ip
        return None


@dataclass(frozen=True)
class VirtualIP:
    """A service address that moves between hosts (e.g. heartbeat's VIP)."""

    name: str
    network: str
    address: ipaddress.IPv4Address


@dataclass
class Topology:
    name: str
    networks: dict[str, Network]
    hosts: dict[str, Host]
    management: ipaddress.IPv4Network
    virtual_ips: list[VirtualIP] = field(default_factory=list)
    description: str = ""
    paper: str = ""
    source: str = "<memory>"
    figure: bool = False  # a drawing of a thesis figure: never booted as a lab

    @property
    def mgmt_gateway(self) -> ipaddress.IPv4Interface:
        """The lab namespace's own address on the management network (its first address)."""
        return ipaddress.IPv4Interface(f"{next(self.management.hosts())}/{self.management.prefixlen}")

    def hosts_file(self) -> str:
        """/etc/hosts lines for every host and virtual IP, as the paper's labs use names."""
        lines = ["127.0.0.1\tlocalhost"]
        for h in self.hosts.values():
            if h.address:
                lines.append(f"{h.address}\t{h.name}")
        for v in self.virtual_ips:
            lines.append(f"{v.address}\t{v.name}")
        return "\n".join(lines) + "\n"

    def memory_mb(self) -> int:
        return sum(h.memory_mb for h in self.hosts.values())


def _available_memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1 << 30


class _Ctx:
    """Builds error messages that point at file, item and field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, field_: str, msg: str) -> TopologyError:
        return TopologyError(f"{self.source}: {where}: field '{field_}': {msg}")


def _mac(topology: str, host: str, iface: str) -> str:
    """A stable, locally administered MAC per NIC (a shared image must not share MACs)."""
    import hashlib

    d = hashlib.sha256(f"{topology}/{host}/{iface}".encode()).digest()
    return "52:54:%02x:%02x:%02x:%02x" % (d[0], d[1], d[2], d[3])


def _parse_size(ctx: _Ctx, where: str, fld: str, value: Any, regex: re.Pattern, units: dict[str, int]) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = regex.match(str(value).strip())
    if not m:
        raise ctx.fail(where, fld, f"{value!r} is not a size; write e.g. 256M or 1G")
    return int(m.group(1)) * units[m.group(2).upper()]


def parse(data: dict[str, Any], source: str = "<memory>", check_memory: bool = True) -> Topology:
    """Validate a topology mapping (as loaded from YAML) and build the model."""
    ctx = _Ctx(source)
    if not isinstance(data, dict):
        raise TopologyError(f"{source}: the file must hold a mapping with 'name', 'networks' and 'hosts'")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ctx.fail("top level", sorted(unknown)[0], f"unknown field; allowed: {', '.join(sorted(TOP_KEYS))}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 12:
        raise ctx.fail("top level", "name", f"{name!r}: use up to 12 lowercase letters, digits and '-'")
    figure = data.get("figure", False)
    if not isinstance(figure, bool):
        raise ctx.fail("top level", "figure", f"{figure!r}: write true (a drawing, never booted) or false")

    mgmt_raw = (data.get("management") or {}).get("subnet", DEFAULT_MGMT)
    try:
        management = ipaddress.IPv4Network(mgmt_raw)
    except ValueError as e:
        raise ctx.fail("management", "subnet", f"{mgmt_raw!r} is not an IPv4 network ({e})")

    networks: dict[str, Network] = {}
    for i, n in enumerate(data.get("networks") or []):
        where = f"networks[{i}]"
        if not isinstance(n, dict) or "name" not in n:
            raise ctx.fail(where, "name", "each network needs a name and a subnet")
        nname = str(n["name"])
        where = f"network '{nname}'"
        if len(nname) > IFNAME_MAX or not re.match(r"^[a-zA-Z0-9_.-]+$", nname):
            raise ctx.fail(where, "name", f"{nname!r} becomes a bridge name: at most {IFNAME_MAX} characters of letters, digits, '-', '_', '.'")
        if nname in networks or nname == "mgmt":
            raise ctx.fail(where, "name", "duplicate network name (or the reserved name 'mgmt')")
        if n.get("subnet") is None and figure:
            subnet = None  # a figure may draw a segment (a switch, a path) without addressing
        elif n.get("subnet") is None:
            raise ctx.fail(where, "subnet", "missing: a lab's network needs one, such as 192.168.103.0/24 "
                                            "(only a figure, figure: true, may leave it out)")
        else:
            try:
                subnet = ipaddress.IPv4Network(str(n.get("subnet")))
            except ValueError as e:
                raise ctx.fail(where, "subnet", f"{n.get('subnet')!r} is not an IPv4 network such as 192.168.103.0/24 ({e})")
            if subnet.overlaps(management):
                raise ctx.fail(where, "subnet", f"{subnet} overlaps the management network {management}; change one of them")
        networks[nname] = Network(nname, subnet, str(n.get("description", "")))
    if not networks:
        raise ctx.fail("top level", "networks", "at least one network is needed")

    hosts: dict[str, Host] = {}
    seen_addr: dict[ipaddress.IPv4Address, str] = {}
    raw_hosts = data.get("hosts") or []
    if not raw_hosts:
        raise ctx.fail("top level", "hosts", "at least one host is needed")
    for i, h in enumerate(raw_hosts):
        if not isinstance(h, dict) or "name" not in h:
            raise ctx.fail(f"hosts[{i}]", "name", "each host needs a name")
        hname = str(h["name"])
        where = f"host '{hname}'"
        unknown = set(h) - HOST_KEYS
        if unknown:
            raise ctx.fail(where, sorted(unknown)[0], f"unknown field; allowed: {', '.join(sorted(HOST_KEYS))}")
        if not NAME_RE.match(hname) or len(hname) > 63:
            raise ctx.fail(where, "name", "use lowercase letters, digits and '-', starting with a letter")
        if hname in hosts:
            raise ctx.fail(where, "name", "duplicate host name")
        memory = _parse_size(ctx, where, "memory", h.get("memory", 256), MEM_RE, {"M": 1, "G": 1024})
        if not 96 <= memory <= 4096:
            raise ctx.fail(where, "memory", f"{memory} MiB: a lab VM needs between 96 and 4096 MiB")
        packages = str(h.get("packages", "base"))
        if packages not in PACKAGE_GROUPS:
            raise ctx.fail(where, "packages", f"{packages!r}: choose one of {', '.join(sorted(PACKAGE_GROUPS))}")

        links: list[Link] = []
        for j, l in enumerate(h.get("links") or []):
            lwhere = f"{where} links[{j}]"
            if not isinstance(l, dict):
                raise ctx.fail(lwhere, "iface", "each link is a mapping with iface, network and address")
            iface = str(l.get("iface", ""))
            if not iface or len(iface) > IFNAME_MAX or not re.match(r"^[a-zA-Z][a-zA-Z0-9_.-]*$", iface):
                raise ctx.fail(lwhere, "iface", f"{iface!r}: an interface name of 1..{IFNAME_MAX} characters (e.g. eth0)")
            if iface == MGMT_IFACE or any(x.iface == iface for x in links):
                raise ctx.fail(lwhere, "iface", f"{iface!r} is used twice on this host (or is the reserved {MGMT_IFACE})")
            net = str(l.get("network", ""))
            if net not in networks:
                raise ctx.fail(lwhere, "network", f"unknown network {net!r}; defined: {', '.join(networks)}")
            addr = None
            if l.get("address") is not None:
                raw = str(l["address"])
                if networks[net].subnet is None:
                    raise ctx.fail(lwhere, "address", f"network '{net}' has no subnet, so its NICs have no address")
                try:
                    addr = ipaddress.IPv4Interface(raw if "/" in raw else f"{raw}/{networks[net].subnet.prefixlen}")
                except ValueError as e:
                    raise ctx.fail(lwhere, "address", f"{raw!r} is not an IPv4 address ({e})")
                subnet = networks[net].subnet
                if addr.ip not in subnet or addr.network != subnet:
                    raise ctx.fail(lwhere, "address", f"{raw} is outside network '{net}' ({subnet})")
                if addr.ip in (subnet.network_address, subnet.broadcast_address):
                    raise ctx.fail(lwhere, "address", f"{raw} is the network or broadcast address of {subnet}")
                if addr.ip in seen_addr:
                    raise ctx.fail(lwhere, "address", f"{addr.ip} is already used by {seen_addr[addr.ip]}")
                seen_addr[addr.ip] = f"{hname} {iface}"
            bond = l.get("bond")
            if bond is not None:
                bond = str(bond)
                if not figure:
                    raise ctx.fail(lwhere, "bond", "the lab engine builds no bonds yet; only a figure "
                                                   "(figure: true at the top level) may draw them")
                if len(bond) > IFNAME_MAX or not re.match(r"^[a-zA-Z][a-zA-Z0-9_.-]*$", bond) or bond == iface:
                    raise ctx.fail(lwhere, "bond", f"{bond!r}: the bond's interface name (e.g. bond0), not the NIC's own")
            links.append(Link(iface, net, addr, _mac(name, hname, iface), bond or ""))
        if not links:
            raise ctx.fail(where, "links", "a host needs at least one link")

        disks: list[Disk] = []
        for j, d in enumerate(h.get("disks") or []):
            dwhere = f"{where} disks[{j}]"
            if not isinstance(d, dict) or not d.get("name"):
                raise ctx.fail(dwhere, "name", "each disk needs a name and a size (e.g. {name: drbd, size: 512M})")
            size = _parse_size(ctx, dwhere, "size", d.get("size", ""), SIZE_RE, {"M": 1, "G": 1024})
            if size < 1:
                raise ctx.fail(dwhere, "size", "a disk needs at least 1M")
            content = str(d.get("content") or "")
            if content and content not in DISK_CONTENTS:
                raise ctx.fail(dwhere, "content", f"{content!r}: a disk holds one of {sorted(DISK_CONTENTS)} (or nothing)")
            disks.append(Disk(str(d["name"]), size, content))
        if len(disks) > 15:
            raise ctx.fail(where, "disks", "at most 15 extra disks (ubdb..ubdp)")

        routes: list[Route] = []
        for j, r in enumerate(h.get("routes") or []):
            rwhere = f"{where} routes[{j}]"
            to = str(r.get("to", ""))
            if to != "default":
                try:
                    to = str(ipaddress.IPv4Network(to))
                except ValueError:
                    raise ctx.fail(rwhere, "to", f"{to!r}: 'default' or a network such as 10.10.0.0/16")
            try:
                via = ipaddress.IPv4Address(str(r.get("via", "")))
            except ValueError:
                raise ctx.fail(rwhere, "via", f"{r.get('via')!r} is not an IPv4 address")
            if not any(l.address and via in l.address.network for l in links):
                raise ctx.fail(rwhere, "via", f"gateway {via} is on none of this host's networks")
            routes.append(Route(to, via))

        hosts[hname] = Host(
            name=hname, role=str(h.get("role", "")), memory_mb=memory, links=links, disks=disks,
            routes=routes, forwarding=bool(h.get("forwarding", False)), packages=packages,
            description=str(h.get("description", "")),
        )

    mgmt_hosts = list(management.hosts())[1:]  # the first is the namespace's own address
    if len(mgmt_hosts) < len(hosts):
        raise ctx.fail("management", "subnet", f"{management} has room for {len(mgmt_hosts)} hosts, the lab has {len(hosts)}")
    for idx, host in enumerate(hosts.values()):
        host.mgmt = Link(MGMT_IFACE, "mgmt", ipaddress.IPv4Interface(f"{mgmt_hosts[idx]}/{management.prefixlen}"),
                         _mac(name, host.name, MGMT_IFACE))

    vips: list[VirtualIP] = []
    for i, v in enumerate(data.get("virtual_ips") or []):
        vname = str(v.get("name", f"virtual_ips[{i}]"))
        where = f"virtual IP '{vname}'"
        net = str(v.get("network", ""))
        if net not in networks:
            raise ctx.fail(where, "network", f"unknown network {net!r}; defined: {', '.join(networks)}")
        if networks[net].subnet is None:
            raise ctx.fail(where, "network", f"network '{net}' has no subnet; a virtual IP needs one")
        try:
            addr = ipaddress.IPv4Address(str(v.get("address", "")))
        except ValueError:
            raise ctx.fail(where, "address", f"{v.get('address')!r} is not an IPv4 address")
        if addr not in networks[net].subnet:
            raise ctx.fail(where, "address", f"{addr} is outside network '{net}' ({networks[net].subnet})")
        if addr in seen_addr:
            raise ctx.fail(where, "address", f"{addr} is already used by {seen_addr[addr]}")
        seen_addr[addr] = vname
        vips.append(VirtualIP(vname, net, addr))

    topo = Topology(name=name, networks=networks, hosts=hosts, management=management, virtual_ips=vips,
                    description=str(data.get("description", "")), paper=str(data.get("paper", "")), source=source,
                    figure=figure)
    if check_memory and not figure:
        need, have = topo.memory_mb(), _available_memory_mb()
        if need > have * 0.9:
            big = max(hosts.values(), key=lambda x: x.memory_mb)
            raise ctx.fail(f"host '{big.name}'", "memory",
                           f"the lab needs {need} MiB in all but this machine has {have} MiB available; "
                           "lower the hosts' memory or free memory")
    return topo


#: Where the course's topologies live.
LABS_DIR = Path(os.environ.get("HAUTILS_LABS", Path(__file__).resolve().parent.parent / "labs"))


def load(name_or_path: str | os.PathLike, check_memory: bool = True) -> Topology:
    """Load a topology by name (``storage`` → labs/storage.yaml) or by path."""
    p = Path(name_or_path)
    if not p.suffix:
        candidates = [LABS_DIR / f"{p}.yaml", Path("labs") / f"{p}.yaml"]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            known = ", ".join(sorted(x.stem for x in LABS_DIR.glob("*.yaml")))
            raise TopologyError(f"no topology named {str(name_or_path)!r}; known: {known}")
        p = found
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise TopologyError(f"{p}: no such topology file")
    except yaml.YAMLError as e:
        raise TopologyError(f"{p}: not valid YAML: {e}")
    return parse(data, source=str(p), check_memory=check_memory)
