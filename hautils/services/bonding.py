"""Linux bonding (the paper's section 3.2.1): two NICs that look like one, built over SSH.

The paper configures the ``bonding`` driver through ``/sys/class/net/bonding_masters`` and
``/sys/class/net/bondX/bonding/``; iproute2 sets the same driver options over netlink in one
command (``ip link add bond0 type bond mode ... miimon ...``), which is what :meth:`Bond.apply`
runs.  The options keep the driver's own names, so that the paper's sysfs files, the kernel's
documentation (Documentation/networking/bonding.rst) and ``/proc/net/bonding/bond0`` all read
the same::

    from hautils.services.bonding import Bond
    bond = Bond(slaves=("eth0", "eth1"), mode="active-backup", arp_interval=100,
                arp_ip_target=("192.168.1.20",), arp_validate="all", primary="eth0",
                address="192.168.1.10/24")
    bond.apply(lab["bonded"])
    bond.state(lab["bonded"]).active        # 'eth0'

Link monitoring is the lesson of the chapter's bonding section.  ``miimon`` asks each NIC
whether it has carrier; a NIC of a User-Mode Linux VM always has carrier (the lab pulls a
cable by detaching the host-side tap from its bridge, and the guest's driver never hears of
it), so with ``miimon`` a pulled cable is never noticed and the bond keeps sending into the
void.  ``arp_interval`` with ``arp_ip_target`` asks the network instead: the bond sends ARP
requests to the targets and declares a slave down when nothing comes back through it, which
notices a dead link whatever the carrier says.  Real NICs and switches fail this way too (a
switch port that is up but forwards nothing), which is why the check matters beyond UML.
Exactly one monitor must be chosen; :class:`Bond` refuses neither and both.

What the lab showed (Linux 6.1 UML guests, the lab's bridges; measured, not assumed):

* 802.3ad (mode 4) does not form, whatever the bridges do.  A UML NIC (driver uml-vector)
  reports neither speed nor duplex (``ethtool -s eth0 duplex full`` fails: Operation not
  supported), and the bonding driver turns LACP off on a port that is not full duplex
  (drivers/net/bonding/bond_3ad.c): no LACPDU left either guest (tcpdump, ether proto 0x8809:
  0 packets), every port sat in an aggregator of its own with partner MAC 00:00:00:00:00:00,
  Actor Key 0.  The bridges would have been a second obstacle: LACPDUs go to
  01:80:c2:00:00:02, which a Linux bridge does not forward unless the ingress port's
  ``group_fwd_mask`` has bit 2 (the bridge-wide mask may not, BR_GROUPFWD_RESTRICTED); the
  per-port mask 0x4 was accepted on the lab's taps (``ip link set dev TAP type bridge_slave
  group_fwd_mask 4``) and changed nothing, for the first reason.  The lab engine's change, if
  a NIC with duplex ever comes: set that per-port mask on each tap in
  ``UMLBackend.create_network`` (``ip.brport("set", index=idx, group_fwd_mask=4)``).
* balance-alb cannot enslave a UML NIC: the driver cannot change the MAC address of an open
  device, which ALB needs (EOPNOTSUPP; see :meth:`Bond.apply`).
* balance-tlb has no ARP monitor (the kernel refuses it) and miimon never sees a pulled cable
  here, so it behaves as active-backup with miimon: the outage lasts until the cable is back.
* The ARP monitor works in active-backup, balance-rr, balance-xor and broadcast.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import CommandError

__all__ = ["Bond", "BondState", "SlaveState", "MODES", "Mode", "mode_number", "mode_name",
           "modes_table", "parse_proc_bonding", "bridge", "shape", "unshape"]

PROC = "/proc/net/bonding/{bond}"
SYSFS = "/sys/class/net/{bond}/bonding/{option}"
IFNAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")  # IFNAMSIZ - 1 characters


class Mode(NamedTuple):
    """One bonding mode: the driver's number and name, what it does, and what the switches must do."""

    number: int
    name: str
    does: str
    switch: str  # what the switch side needs ("no" when any two switches will do)
    paper: str  # what the paper says about the switches (section 3.2.1)
    active_slave: bool  # one slave carries the traffic at a time (a "Currently Active Slave")


#: The seven modes of section 3.2.1, in the driver's order (bonding.rst, "Bonding Driver Options").
MODES: tuple[Mode, ...] = (
    Mode(0, "balance-rr", "sends each packet on the next slave in turn: one flow's packets arrive out of order",
         "yes: the ports grouped as a static trunk (EtherChannel) on one switch or a stacked pair",
         "switches connected to each other; may use a lot of bandwidth between them", False),
    Mode(1, "active-backup", "one slave carries everything; another takes over, with the bond's MAC address, "
         "only when it fails", "no", "switches connected to each other", True),
    Mode(2, "balance-xor", "a hash of each packet's addresses (xmit_hash_policy, MACs by default) picks the "
         "slave: one peer, one slave", "yes: a static trunk, as for balance-rr",
         "switches connected; traffic to the default gateway always uses one card", False),
    Mode(3, "broadcast", "sends every packet on every slave: the peer receives it once per path",
         "the kernel's documentation asks for a static trunk; the paper uses two separate switches",
         "better not to connect the switches; a lot of traffic", False),
    Mode(4, "802.3ad", "LACP (IEEE 802.3ad) groups slaves of equal speed and duplex into an aggregator; "
         "a hash (xmit_hash_policy) picks the slave per flow", "yes: LACP on the switch ports, all on one "
         "switch (or a multi-chassis pair)", "all ports on one switch, which must support LACP", False),
    Mode(5, "balance-tlb", "outgoing traffic shared by load; incoming on the current slave, whose MAC address "
         "a new slave takes over if it fails", "no", "switches connected", True),
    Mode(6, "balance-alb", "balance-tlb plus receive balancing for IPv4: ARP replies give different peers "
         "different slaves' MAC addresses", "no", "switches connected", True),
)
_BY_NAME = {m.name: m for m in MODES}
ARP_VALIDATE = ("none", "active", "backup", "all", "filter", "filter_active", "filter_backup")
LACP_RATES = ("slow", "fast")
XMIT_HASH_POLICIES = ("layer2", "layer2+3", "layer3+4", "encap2+3", "encap3+4", "vlan+srcmac")
#: The kernel refuses ARP monitoring in these modes (bond_options.c: arp_interval's unsuppmodes):
#: they watch the links themselves (LACPDUs) or rewrite the ARP traffic the monitor relies on.
NO_ARP_MONITOR = {4, 5, 6}
PRIMARY_MODES = {1, 5, 6}  # bond_uses_primary(): the modes with a current active slave
HASH_MODES = {2, 4, 5}  # bond_mode_uses_xmit_hash() (balance-tlb only with tlb_dynamic_lb=0)


def _mode(mode: str | int) -> Mode:
    if isinstance(mode, bool):
        raise ValueError(f"mode={mode!r}: give a bonding mode by name or number 0-6")
    if isinstance(mode, int) or (isinstance(mode, str) and mode.strip().isdigit()):
        n = int(mode)
        if 0 <= n < len(MODES):
            return MODES[n]
    elif isinstance(mode, str) and mode.strip() in _BY_NAME:
        return _BY_NAME[mode.strip()]
    raise ValueError(f"mode={mode!r}: a bonding mode is one of "
                     + ", ".join(f"{m.number} {m.name}" for m in MODES))


def mode_number(mode: str | int) -> int:
    """The driver's number of ``mode`` (``"active-backup"`` -> 1, ``"4"`` -> 4)."""
    return _mode(mode).number


def mode_name(mode: str | int) -> str:
    """The driver's name of ``mode`` (1 -> ``"active-backup"``), as /proc/net/bonding shows it."""
    return _mode(mode).name


def modes_table():
    """The paper's seven modes as a table: number, name, what the mode does, what the switches
    must support (the kernel's documentation) and what the paper says about them."""
    import pandas as pd

    return pd.DataFrame([{"mode": m.number, "name": m.name, "what it does": m.does,
                          "switch support needed": m.switch, "the paper (section 3.2.1)": m.paper}
                         for m in MODES]).set_index("mode")


def _ms(name: str, value: Any, low: int = 1, high: int = 2**31 - 1) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}={value!r}: milliseconds, a whole number from {low} to {high}")


@dataclass
class Bond:
    """A bond to build on a lab host: its slaves, mode and link monitor, and the address it takes.

    ``address`` (e.g. ``"192.168.1.10/24"``) moves to the bond: the slaves' own addresses are
    flushed, since a slave carries no address of its own.  ``miimon`` or ``arp_interval`` (ms,
    one of the two): see the module docstring for why the choice decides whether a pulled cable
    is noticed at all in this lab."""

    name: str = "bond0"
    slaves: tuple[str, ...] = ("eth0", "eth1")
    mode: str | int = "active-backup"
    miimon: int | None = None
    arp_interval: int | None = None
    arp_ip_target: tuple[str, ...] = ()
    arp_validate: str | None = None
    primary: str | None = None
    lacp_rate: str | None = None
    xmit_hash_policy: str | None = None
    address: str | None = None
    extra: dict[str, str | int] = field(default_factory=dict)  # other driver options, verbatim

    def __post_init__(self) -> None:
        self.slaves = tuple(self.slaves)
        self.arp_ip_target = tuple(str(a) for a in self.arp_ip_target)
        m = _mode(self.mode)
        self.mode = m.name
        if not IFNAME_RE.match(self.name):
            raise ValueError(f"name={self.name!r}: an interface name of up to 15 characters, e.g. bond0")
        if len(self.slaves) < 1 or len(set(self.slaves)) != len(self.slaves):
            raise ValueError(f"slaves={self.slaves!r}: one or more distinct interfaces, e.g. ('eth0', 'eth1')")
        for s in self.slaves:
            if not IFNAME_RE.match(str(s)) or s == self.name:
                raise ValueError(f"slaves: {s!r} is not a NIC name (e.g. eth0) other than the bond's own")
        _ms("miimon", self.miimon)
        _ms("arp_interval", self.arp_interval)
        if (self.miimon is None) == (self.arp_interval is None):
            raise ValueError("choose one link monitor: miimon= (each NIC's carrier; a UML NIC always has "
                             "carrier, so a pulled cable goes unnoticed) or arp_interval= with arp_ip_target= "
                             "(ARP requests through each slave); "
                             + ("not both" if self.miimon is not None else "none was given"))
        if self.arp_interval is not None:
            if m.number in NO_ARP_MONITOR:
                raise ValueError(f"arp_interval: the kernel has no ARP monitor in mode {m.number} {m.name} "
                                 "(only balance-rr, active-backup, balance-xor and broadcast); use miimon=")
            if not 1 <= len(self.arp_ip_target) <= 16:
                raise ValueError("arp_interval needs arp_ip_target=: 1 to 16 IPv4 addresses the bond can ARP "
                                 "for through each slave (e.g. the peer's address)")
        elif self.arp_ip_target or self.arp_validate is not None:
            raise ValueError("arp_ip_target and arp_validate belong to the ARP monitor: give arp_interval= too")
        for a in self.arp_ip_target:
            try:
                ipaddress.IPv4Address(a)
            except ValueError:
                raise ValueError(f"arp_ip_target: {a!r} is not an IPv4 address") from None
        if self.arp_validate is not None and self.arp_validate not in ARP_VALIDATE:
            raise ValueError(f"arp_validate={self.arp_validate!r}: one of {', '.join(ARP_VALIDATE)}")
        if self.primary is not None:
            if m.number not in PRIMARY_MODES:
                raise ValueError(f"primary: only active-backup, balance-tlb and balance-alb have a primary "
                                 f"slave, not {m.name}")
            if self.primary not in self.slaves:
                raise ValueError(f"primary={self.primary!r} is not one of the slaves {', '.join(self.slaves)}")
        if self.lacp_rate is not None:
            if m.number != 4:
                raise ValueError(f"lacp_rate is an 802.3ad (mode 4) option, not one of {m.name}")
            if self.lacp_rate not in LACP_RATES:
                raise ValueError(f"lacp_rate={self.lacp_rate!r}: slow (a LACPDU every 30 s) or fast (every 1 s)")
        if self.xmit_hash_policy is not None:
            if m.number not in HASH_MODES:
                raise ValueError(f"xmit_hash_policy: only balance-xor, 802.3ad and balance-tlb hash, not {m.name}")
            if self.xmit_hash_policy not in XMIT_HASH_POLICIES:
                raise ValueError(f"xmit_hash_policy={self.xmit_hash_policy!r}: one of {', '.join(XMIT_HASH_POLICIES)}")
        if self.address is not None:
            try:
                iface = ipaddress.IPv4Interface(self.address)
            except ValueError:
                raise ValueError(f"address={self.address!r}: an IPv4 address with its prefix, e.g. "
                                 "192.168.1.10/24") from None
            if "/" not in str(self.address):
                raise ValueError(f"address={self.address!r}: give the prefix too (e.g. {iface.ip}/24)")
        for k, v in self.extra.items():
            if not re.fullmatch(r"[a-z_0-9]+", str(k)) or not re.fullmatch(r"[A-Za-z0-9_.:+,-]+", str(v)):
                raise ValueError(f"extra: {k}={v!r} is not an iproute2 bond option and value")

    @property
    def number(self) -> int:
        return mode_number(self.mode)

    # -- the commands ------------------------------------------------------------------------

    def options(self) -> list[str]:
        """The ``ip link add NAME type bond ...`` options, in iproute2's spelling."""
        opts = ["mode", str(self.mode)]
        if self.miimon is not None:
            opts += ["miimon", str(self.miimon)]
        if self.arp_interval is not None:
            opts += ["arp_interval", str(self.arp_interval), "arp_ip_target", ",".join(self.arp_ip_target)]
        if self.arp_validate is not None:
            opts += ["arp_validate", self.arp_validate]
        if self.primary is not None:
            opts += ["primary", self.primary]
        if self.lacp_rate is not None:
            opts += ["lacp_rate", self.lacp_rate]
        if self.xmit_hash_policy is not None:
            opts += ["xmit_hash_policy", self.xmit_hash_policy]
        for k, v in self.extra.items():
            opts += [str(k), str(v)]
        return opts

    def script(self) -> str:
        """The shell script :meth:`apply` runs: idempotent (an existing bond of that name is
        removed first), one ``ip -batch`` for the links (process creation costs ~30 ms in a UML
        guest).  The slaves go down before they are enslaved and lose their addresses: a slave's
        traffic belongs to the bond.  The bond gets its address before it goes up: the ARP
        monitor starts with the bond and, finding no route to its target, logged "no route to
        arp_ip_target ... and arp_validate is set" (seen in the lab).  ``primary`` names a slave, which iproute2 resolves when the
        bond is created, so the slaves exist by then (they are the host's NICs)."""
        q = shlex.quote
        batch = [f"link set dev {s} down" for s in self.slaves]
        batch += [f"addr flush dev {s}" for s in self.slaves]
        batch.append(f"link add {self.name} type bond " + " ".join(self.options()))
        if self.address:  # before the bond goes up: the ARP monitor starts then and needs a route
            batch.append(f"addr add {self.address} dev {self.name}")
        batch += [f"link set dev {s} master {self.name}" for s in self.slaves]
        batch += [f"link set dev {s} up" for s in self.slaves]
        batch.append(f"link set dev {self.name} up")
        lines = [
            "set -e",
            # max_bonds=0: loading the module must not create a bond0 of its own with default options
            "[ -e /sys/class/net/bonding_masters ] || modprobe bonding max_bonds=0",
            f"if [ -e /sys/class/net/{self.name} ]; then ip link del dev {q(self.name)}; fi",
            "ip -batch - <<'EOF'",
            *batch,
            "EOF",
        ]
        return "\n".join(lines) + "\n"

    def apply(self, host, timeout: float = 60) -> "BondState":
        """Build the bond on ``host`` (an ``hautils.ssh.Host``) and return its state as the
        driver reports it.  Raises ``CommandError`` naming the host and ip's complaint."""
        res = host.run(self.script(), check=False, timeout=timeout)
        if not res.ok:
            where = getattr(host, "name", "?")
            why = (res.stderr or res.stdout).strip()
            if self.number == 6 and "not supported" in why:
                why += ("\n(balance-alb changes the MAC address of a slave that is up; the kernel refuses "
                        "when the NIC's driver cannot, as UML's cannot: dmesg says \"ALB mode requires that "
                        "the base driver support setting the hw address also when the network device's "
                        "interface is open\". Use balance-tlb, or active-backup, on this lab)")
            raise CommandError(where, f"ip link add {self.name} type bond " + " ".join(self.options()),
                               res.exit_status, res.stdout, f"{self.name} not built on {where}: {why}")
        return self.state(host)

    def remove(self, host) -> None:
        """Delete the bond; its slaves are released (without addresses: the lab's boot script
        set those, a reboot sets them again)."""
        host.run(f"if [ -e /sys/class/net/{self.name} ]; then ip link del dev {shlex.quote(self.name)}; fi")

    # -- reading it back ---------------------------------------------------------------------

    def state(self, host) -> "BondState":
        """``/proc/net/bonding/<name>`` on ``host``, parsed (:func:`parse_proc_bonding`)."""
        path = PROC.format(bond=self.name)
        res = host.run(f"cat {path}", check=False, timeout=30)
        if not res.ok:
            raise CommandError(getattr(host, "name", "?"), f"cat {path}", res.exit_status, res.stdout,
                               f"{res.stderr.strip()}\nno bond {self.name} on this host: apply() builds it")
        return parse_proc_bonding(res.stdout)

    def active(self, host) -> str | None:
        """The slave that carries the traffic now (modes with an active slave), or None."""
        return self.state(host).active

    def sysfs(self, host, option: str) -> str:
        """One driver option as the paper reads it: ``cat /sys/class/net/bond0/bonding/<option>``."""
        if not re.fullmatch(r"[a-z_0-9]+", option):
            raise ValueError(f"option={option!r}: a file name of /sys/class/net/{self.name}/bonding/")
        return host.run(f"cat {SYSFS.format(bond=self.name, option=option)}", timeout=30).stdout.strip()

    def wait_settled(self, host, *, timeout: float = 60, interval: float = 0.2,
                     sleep=time.sleep, clock=time.monotonic) -> "BondState":
        """Wait until every slave's link is up and, in a mode with a primary, the primary is the
        active slave again (``primary_reselect always``, the default, switches back once the
        primary's link is up): the bond has its redundancy back.  Returns the state then."""
        deadline = clock() + timeout
        while True:
            st = self.state(host)
            ok = all(s.mii_status == "up" for s in st.slaves.values()) and set(st.slaves) == set(self.slaves)
            if ok and self.primary is not None and self.number in PRIMARY_MODES:
                ok = st.active == self.primary
            if ok:
                return st
            if clock() > deadline:
                raise TimeoutError(f"on {getattr(host, 'name', '?')}: {self.name} not settled within {timeout:g} s "
                                   f"(active {st.active}, links "
                                   + ", ".join(f"{n} {s.mii_status}" for n, s in st.slaves.items()) + ")")
            sleep(interval)


# -- /proc/net/bonding/bondX ---------------------------------------------------------------------


@dataclass
class SlaveState:
    """One ``Slave Interface:`` block of /proc/net/bonding/bondX."""

    name: str
    mii_status: str  # up, down, going down, going back
    link_failure_count: int = 0
    permanent_hwaddr: str = ""
    aggregator_id: int | None = None  # 802.3ad only
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class BondState:
    """What the bonding driver says about a bond (``/proc/net/bonding/bondX``)."""

    mode: str  # the driver's name, e.g. "active-backup"
    active: str | None  # "Currently Active Slave" (None where the mode has none, or it says None)
    primary: str | None
    mii_status: str
    miimon_ms: int
    arp_interval_ms: int
    arp_targets: list[str]
    slaves: dict[str, SlaveState]
    lacp_rate: str | None = None
    aggregator_id: int | None = None  # the active aggregator's (802.3ad)
    partner_mac: str | None = None  # the LACP partner's system MAC (00:00:00:00:00:00: no partner)
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def up(self) -> list[str]:
        """The slaves whose link the monitor considers up."""
        return [n for n, s in self.slaves.items() if s.mii_status == "up"]


_MODE_TEXT = {
    "load balancing (round-robin)": "balance-rr",
    "fault-tolerance (active-backup)": "active-backup",
    "load balancing (xor)": "balance-xor",
    "fault-tolerance (broadcast)": "broadcast",
    "IEEE 802.3ad Dynamic link aggregation": "802.3ad",
    "transmit load balancing": "balance-tlb",
    "adaptive load balancing": "balance-alb",
}


def _int(v: str | None) -> int:
    try:
        return int(str(v).split()[0])
    except (ValueError, IndexError):
        return 0


def parse_proc_bonding(text: str) -> BondState:
    """Parse the text of ``/proc/net/bonding/bondX`` (drivers/net/bonding/bond_procfs.c).

    The file is a header block (``Bonding Mode:``, ``Currently Active Slave:``, ``MII Status:``,
    ``ARP IP target/s ...``, the ``802.3ad info`` part) and one block per slave, each opened by
    ``Slave Interface: <name>``.  Unknown lines are kept in ``fields`` (first value wins), so a
    newer kernel's additions do not break the parser.  Raises ValueError on text that is not
    such a file."""
    head: dict[str, str] = {}
    agg: dict[str, str] = {}
    slaves: dict[str, SlaveState] = {}
    cur: dict[str, str] | None = None
    section = "head"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or ":" not in line:
            if line == "802.3ad info":
                section = "802.3ad"
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Slave Interface":
            cur = {"Slave Interface": value}
            slaves[value] = SlaveState(value, "")
            slaves[value].fields = cur
            section = "slave"
            continue
        if section == "slave" and cur is not None:
            cur.setdefault(key, value)
        elif section == "802.3ad" and raw.startswith("\t"):
            agg.setdefault(key, value)  # "Active Aggregator Info:" lines are tab-indented
        else:
            head.setdefault(key, value)
    if "Bonding Mode" not in head:
        raise ValueError("not /proc/net/bonding text: no 'Bonding Mode:' line")
    for s in slaves.values():
        f = s.fields
        s.mii_status = f.get("MII Status", "")
        s.link_failure_count = _int(f.get("Link Failure Count"))
        s.permanent_hwaddr = f.get("Permanent HW addr", "")
        if f.get("Aggregator ID", "N/A") not in ("N/A", ""):
            s.aggregator_id = _int(f["Aggregator ID"])
    mode_text = head["Bonding Mode"].split(" (fail_over_mac")[0]
    active = head.get("Currently Active Slave")
    primary = head.get("Primary Slave", "").split(" (")[0] or None
    targets = [t.strip() for t in head.get("ARP IP target/s (n.n.n.n form)", "").split(",") if t.strip()]
    return BondState(
        mode=_MODE_TEXT.get(mode_text, mode_text),
        active=None if active in (None, "None") else active,
        primary=None if primary in (None, "None") else primary,
        mii_status=head.get("MII Status", ""),
        miimon_ms=_int(head.get("MII Polling Interval (ms)")),
        arp_interval_ms=_int(head.get("ARP Polling Interval (ms)")),
        arp_targets=targets,
        slaves=slaves,
        lacp_rate=head.get("LACP rate"),
        aggregator_id=_int(agg["Aggregator ID"]) if "Aggregator ID" in agg else None,
        partner_mac=agg.get("Partner Mac Address"),
        fields=head,
    )


# -- the peer's side -----------------------------------------------------------------------------


def bridge(host, ports: tuple[str, ...] = ("eth0", "eth1"), *, name: str = "br0",
           address: str | None = None, timeout: float = 60) -> None:
    """Join ``ports`` in a Linux bridge on ``host``, with ``address`` on the bridge: the lab's
    two switches connected at layer 2, as the paper asks for the modes that need no switch
    support (section 3.1.1).  The lab engine cannot join two of its bridges, so the peer of
    ``labs/bonding.yaml`` does it, with a NIC on each switch.  STP off and no forwarding delay,
    as on the lab's own bridges: nothing here can loop (a bonded host never forwards between
    its slaves)."""
    if not IFNAME_RE.match(name) or not ports or any(not IFNAME_RE.match(p) for p in ports):
        raise ValueError(f"bridge {name!r} over {ports!r}: interface names of up to 15 characters")
    if address is not None:
        ipaddress.IPv4Interface(address)
    batch = [f"link set dev {p} down" for p in ports] + [f"addr flush dev {p}" for p in ports]
    batch.append(f"link add {name} type bridge stp_state 0 forward_delay 0")
    batch += [f"link set dev {p} master {name}" for p in ports] + [f"link set dev {p} up" for p in ports]
    batch.append(f"link set dev {name} up")
    if address:
        batch.append(f"addr add {address} dev {name}")
    host.run("set -e\n"
             f"if [ -e /sys/class/net/{name} ]; then ip link del dev {name}; fi\n"
             "ip -batch - <<'EOF'\n" + "\n".join(batch) + "\nEOF\n", timeout=timeout)


def shape(host, ifaces: tuple[str, ...] = ("eth0", "eth1"), *, rate_mbit: int = 100, timeout: float = 60) -> None:
    """Give each of ``ifaces`` on ``host`` a fixed speed: a token bucket (``tc qdisc replace dev
    IFACE root tbf rate N mbit``) on what it sends.  A lab cable has no speed of its own (two
    UML guests exchange frames as fast as their CPUs allow), so without it the question "do two
    links carry more than one?" would measure the CPU, not the links.  ``rate_mbit`` 100 is Fast
    Ethernet, the cards of the paper's time."""
    if isinstance(rate_mbit, bool) or not isinstance(rate_mbit, int) or not 1 <= rate_mbit <= 100_000:
        raise ValueError(f"rate_mbit={rate_mbit!r}: whole Mbit/s, 1 to 100000")
    if not ifaces or any(not IFNAME_RE.match(i) for i in ifaces):
        raise ValueError(f"ifaces={ifaces!r}: interface names of up to 15 characters")
    # burst: at least one rate-interval's worth at HZ 100 (rate / 100), and a few full frames
    burst_kb = max(16, rate_mbit * 1000 // 8 // 100 + 4)
    host.run("\n".join(f"tc qdisc replace dev {i} root tbf rate {rate_mbit}mbit burst {burst_kb}kb latency 50ms"
                       for i in ifaces), timeout=timeout)


def unshape(host, ifaces: tuple[str, ...] = ("eth0", "eth1"), *, timeout: float = 60) -> None:
    """Remove what :func:`shape` set (the interfaces send at the CPU's pace again)."""
    host.run("\n".join(f"tc qdisc del dev {i} root 2>/dev/null || true" for i in ifaces), timeout=timeout)
