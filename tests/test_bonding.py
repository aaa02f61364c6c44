"""Chapter 3's bonding module without a VM: the paper's seven modes, the option checks, the
commands a bond is built with, and the parser of /proc/net/bonding on sample text in the
format of drivers/net/bonding/bond_procfs.c (Linux 6.1)."""

from __future__ import annotations

import subprocess

import pytest

from hautils.errors import CommandError
from hautils.services import bonding
from hautils.services.bonding import MODES, Bond, bridge, mode_name, mode_number, modes_table, parse_proc_bonding
from hautils.ssh import Result

ACTIVE_BACKUP_ARP = """\
Ethernet Channel Bonding Driver: v6.1.0

Bonding Mode: fault-tolerance (active-backup)
Primary Slave: eth0 (primary_reselect always)
Currently Active Slave: eth1
MII Status: up
MII Polling Interval (ms): 0
Up Delay (ms): 0
Down Delay (ms): 0
Peer Notification Delay (ms): 0
ARP Polling Interval (ms): 100
ARP Missed Max: 2
ARP IP target/s (n.n.n.n form): 192.168.1.20, 192.168.1.21
NS IPv6 target/s (xx::xx form):

Slave Interface: eth0
MII Status: down
Speed: Unknown
Duplex: Unknown
Link Failure Count: 3
Permanent HW addr: 52:54:0a:0b:0c:01
Slave queue ID: 0

Slave Interface: eth1
MII Status: up
Speed: Unknown
Duplex: Unknown
Link Failure Count: 0
Permanent HW addr: 52:54:0a:0b:0c:02
Slave queue ID: 0
"""

MIIMON = """\
Ethernet Channel Bonding Driver: v6.1.0

Bonding Mode: fault-tolerance (active-backup)
Primary Slave: None
Currently Active Slave: eth0
MII Status: up
MII Polling Interval (ms): 100
Up Delay (ms): 0
Down Delay (ms): 0
Peer Notification Delay (ms): 0

Slave Interface: eth0
MII Status: up
Speed: Unknown
Duplex: Unknown
Link Failure Count: 0
Permanent HW addr: 52:54:0a:0b:0c:01
Slave queue ID: 0

Slave Interface: eth1
MII Status: up
Speed: Unknown
Duplex: Unknown
Link Failure Count: 0
Permanent HW addr: 52:54:0a:0b:0c:02
Slave queue ID: 0
"""

LACP = """\
Ethernet Channel Bonding Driver: v6.1.0

Bonding Mode: IEEE 802.3ad Dynamic link aggregation
Transmit Hash Policy: layer3+4 (1)
MII Status: up
MII Polling Interval (ms): 100
Up Delay (ms): 0
Down Delay (ms): 0
Peer Notification Delay (ms): 0

802.3ad info
LACP active: on
LACP rate: fast
Min links: 0
Aggregator selection policy (ad_select): stable
System priority: 65535
System MAC address: 52:54:0a:0b:0c:01
Active Aggregator Info:
\tAggregator ID: 2
\tNumber of ports: 2
\tActor Key: 0
\tPartner Key: 0
\tPartner Mac Address: 52:54:0d:0e:0f:01

Slave Interface: eth0
MII Status: up
Speed: Unknown
Duplex: Unknown
Link Failure Count: 0
Permanent HW addr: 52:54:0a:0b:0c:01
Slave queue ID: 0
Aggregator ID: 2
Actor Churn State: none
Partner Churn State: none
Actor Churned Count: 0
Partner Churned Count: 0
details actor lacp pdu:
    system priority: 65535
    system mac address: 52:54:0a:0b:0c:01
    port key: 0
    port priority: 255
    port number: 1
    port state: 63

Slave Interface: eth1
MII Status: going back
Speed: Unknown
Duplex: Unknown
Link Failure Count: 1
Permanent HW addr: 52:54:0a:0b:0c:02
Slave queue ID: 0
Aggregator ID: N/A
"""

ROUND_ROBIN = """\
Ethernet Channel Bonding Driver: v6.1.0

Bonding Mode: load balancing (round-robin)
MII Status: up
MII Polling Interval (ms): 100
Up Delay (ms): 0
Down Delay (ms): 0
Peer Notification Delay (ms): 0
"""


# -- the modes -------------------------------------------------------------------------------------

def test_seven_modes_in_the_drivers_order():
    assert [m.number for m in MODES] == list(range(7))
    assert [m.name for m in MODES] == ["balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad",
                                       "balance-tlb", "balance-alb"]
    assert mode_number("802.3ad") == 4 and mode_number(6) == 6 and mode_number("1") == 1
    assert mode_name(0) == "balance-rr" and mode_name("balance-alb") == "balance-alb"
    for bad in (7, -1, "active", True, "mode1"):
        with pytest.raises(ValueError, match="a bonding mode is one of|by name or number"):
            mode_number(bad)


def test_modes_table_says_which_modes_need_the_switch():
    t = modes_table()
    assert list(t.index) == list(range(7))
    assert list(t.columns) == ["name", "what it does", "switch support needed", "the paper (section 3.2.1)"]
    needs = {m: t.loc[m, "switch support needed"] for m in t.index}
    assert {m for m, v in needs.items() if v == "no"} == {1, 5, 6}  # the kernel's documentation
    assert "LACP" in needs[4] and "trunk" in needs[0] and "trunk" in needs[2]
    assert all(t["what it does"].str.len() > 20)


# -- options -----------------------------------------------------------------------------------------

def arp_bond(**kw) -> Bond:
    base = dict(mode="active-backup", arp_interval=100, arp_ip_target=("192.168.1.20",), arp_validate="all",
                primary="eth0", address="192.168.1.10/24")
    return Bond(**{**base, **kw})


def test_a_good_bond_and_its_ip_options():
    b = arp_bond()
    assert b.mode == "active-backup" and b.number == 1
    assert b.options() == ["mode", "active-backup", "arp_interval", "100", "arp_ip_target", "192.168.1.20",
                           "arp_validate", "all", "primary", "eth0"]
    m = Bond(mode=4, miimon=100, lacp_rate="fast", xmit_hash_policy="layer3+4")
    assert m.mode == "802.3ad"
    assert m.options() == ["mode", "802.3ad", "miimon", "100", "lacp_rate", "fast", "xmit_hash_policy", "layer3+4"]
    two = arp_bond(arp_ip_target=["192.168.1.20", "192.168.1.21"])
    assert "192.168.1.20,192.168.1.21" in two.options()  # iproute2 takes a comma-separated list


@pytest.mark.parametrize("kw, needle", [
    (dict(arp_interval=None), "choose one link monitor.*none was given"),
    (dict(miimon=100), "choose one link monitor.*not both"),
    (dict(arp_ip_target=()), "arp_interval needs arp_ip_target"),
    (dict(arp_ip_target=("192.168.1",)), "'192.168.1' is not an IPv4 address"),
    (dict(arp_ip_target=tuple(f"10.0.0.{i}" for i in range(1, 18))), "1 to 16"),
    (dict(arp_validate="sometimes"), "arp_validate='sometimes'"),
    (dict(mode="802.3ad", primary=None), "no ARP monitor in mode 4 802.3ad"),
    (dict(mode="balance-alb"), "no ARP monitor in mode 6"),
    (dict(mode="balance-rr", primary="eth0"), "only active-backup, balance-tlb and balance-alb have a primary"),
    (dict(primary="eth2"), "primary='eth2' is not one of the slaves"),
    (dict(lacp_rate="fast"), "lacp_rate is an 802.3ad"),
    (dict(xmit_hash_policy="layer2"), "only balance-xor, 802.3ad and balance-tlb hash"),
    (dict(arp_interval=0), "arp_interval=0"),
    (dict(arp_interval=100.5), "arp_interval=100.5"),
    (dict(address="192.168.1.10"), "give the prefix too"),
    (dict(address="192.168.1.300/24"), "an IPv4 address with its prefix"),
    (dict(slaves=("eth0", "eth0")), "distinct"),
    (dict(slaves=("eth0", "bond0")), "not a NIC name"),
    (dict(name="a-very-long-bond-name"), "up to 15 characters"),
    (dict(mode="hot-standby"), "a bonding mode is one of"),
    (dict(extra={"num_grat_arp": "3; reboot"}), "not an iproute2 bond option"),
])
def test_bad_options_are_refused_naming_them(kw, needle):
    with pytest.raises(ValueError, match=needle):
        arp_bond(**kw)


def test_arp_options_without_the_arp_monitor_are_refused():
    with pytest.raises(ValueError, match="belong to the ARP monitor"):
        Bond(miimon=100, arp_validate="all")
    with pytest.raises(ValueError, match="belong to the ARP monitor"):
        Bond(miimon=100, arp_ip_target=("192.168.1.20",))
    with pytest.raises(ValueError, match="lacp_rate='medium'"):
        Bond(mode="802.3ad", miimon=100, lacp_rate="medium")
    with pytest.raises(ValueError, match="xmit_hash_policy='layer9'"):
        Bond(mode="balance-xor", miimon=100, xmit_hash_policy="layer9")


def test_the_script_builds_the_bond_in_one_ip_batch():
    s = arp_bond().script()
    lines = s.splitlines()
    assert lines[0] == "set -e"
    assert "modprobe bonding max_bonds=0" in s  # no bond0 of the module's own, with default options
    assert "if [ -e /sys/class/net/bond0 ]; then ip link del dev bond0; fi" in s  # idempotent
    batch = lines[lines.index("ip -batch - <<'EOF'") + 1:lines.index("EOF")]
    assert batch == [
        "link set dev eth0 down", "link set dev eth1 down",
        "addr flush dev eth0", "addr flush dev eth1",  # the topology's address moves to the bond
        "link add bond0 type bond mode active-backup arp_interval 100 arp_ip_target 192.168.1.20 "
        "arp_validate all primary eth0",
        "addr add 192.168.1.10/24 dev bond0",  # before the bond (and its ARP monitor) goes up
        "link set dev eth0 master bond0", "link set dev eth1 master bond0",
        "link set dev eth0 up", "link set dev eth1 up",
        "link set dev bond0 up"]
    # enslaving comes after the bond exists with its mode: the mode cannot change with slaves
    assert batch.index("link set dev eth0 master bond0") > batch.index(
        next(l for l in batch if l.startswith("link add bond0")))
    assert "addr add" not in Bond(miimon=100).script()


def test_the_script_is_valid_shell():
    subprocess.run(["sh", "-n"], input=arp_bond().script(), text=True, check=True)


# -- /proc/net/bonding -------------------------------------------------------------------------------

def test_parse_active_backup_with_arp_monitor_after_a_failover():
    st = parse_proc_bonding(ACTIVE_BACKUP_ARP)
    assert st.mode == "active-backup" and st.active == "eth1" and st.primary == "eth0"
    assert st.miimon_ms == 0 and st.arp_interval_ms == 100
    assert st.arp_targets == ["192.168.1.20", "192.168.1.21"]
    assert list(st.slaves) == ["eth0", "eth1"]
    assert st.slaves["eth0"].mii_status == "down" and st.slaves["eth0"].link_failure_count == 3
    assert st.slaves["eth1"].permanent_hwaddr == "52:54:0a:0b:0c:02"
    assert st.up == ["eth1"]
    assert st.fields["ARP Missed Max"] == "2"  # kept even though the parser has no field for it


def test_parse_miimon_bond_without_primary():
    st = parse_proc_bonding(MIIMON)
    assert st.active == "eth0" and st.primary is None and st.miimon_ms == 100 and st.arp_interval_ms == 0
    assert st.arp_targets == [] and st.up == ["eth0", "eth1"]


def test_parse_802_3ad_partner_and_aggregators():
    st = parse_proc_bonding(LACP)
    assert st.mode == "802.3ad" and st.active is None and st.lacp_rate == "fast"
    assert st.aggregator_id == 2 and st.partner_mac == "52:54:0d:0e:0f:01"
    assert st.slaves["eth0"].aggregator_id == 2 and st.slaves["eth1"].aggregator_id is None
    assert st.slaves["eth1"].mii_status == "going back" and st.up == ["eth0"]
    # the actor's LACPDU details do not overwrite the slave's own fields
    assert st.slaves["eth0"].fields["system priority"] == "65535"


def test_parse_a_mode_without_active_slave_and_no_slaves():
    st = parse_proc_bonding(ROUND_ROBIN)
    assert st.mode == "balance-rr" and st.active is None and st.slaves == {}


def test_parse_refuses_other_text():
    with pytest.raises(ValueError, match="no 'Bonding Mode:' line"):
        parse_proc_bonding("cat: /proc/net/bonding/bond0: No such file or directory\n")


def test_none_active_reads_as_none():
    st = parse_proc_bonding(MIIMON.replace("Currently Active Slave: eth0", "Currently Active Slave: None"))
    assert st.active is None


# -- on a fake host ----------------------------------------------------------------------------------

class FakeHost:
    """Answers ``cat /proc/net/bonding/...`` from a list of texts (one per call, the last repeats)."""

    def __init__(self, name="bonded", procs=(ACTIVE_BACKUP_ARP,), fail=None):
        self.name, self.procs, self.fail = name, list(procs), fail
        self.runs: list[str] = []

    def run(self, command, check=True, timeout=60.0):
        self.runs.append(command)
        status, out, err = 0, "", ""
        if command.startswith("cat /proc/net/bonding/"):
            if self.procs:
                out = self.procs.pop(0) if len(self.procs) > 1 else self.procs[0]
            else:
                status, err = 1, "No such file or directory"
        elif command.startswith("cat /sys/class/net/"):
            out = "active-backup 1\n"
        elif self.fail and self.fail in command:
            status, err = 2, "Error: argument \"bogus\" is wrong"
        if check and status:
            raise CommandError(self.name, command, status, out, err)
        return Result(self.name, command, status, out, err, 0.0)


def test_apply_runs_the_script_then_reads_the_state():
    h = FakeHost()
    st = arp_bond().apply(h)
    assert h.runs == [arp_bond().script(), "cat /proc/net/bonding/bond0"]
    assert st.active == "eth1"


def test_apply_reports_ips_complaint_naming_the_host():
    with pytest.raises(CommandError) as e:
        arp_bond().apply(FakeHost(fail="ip -batch"))
    msg = str(e.value)
    assert msg.startswith("on bonded: `ip link add bond0 type bond mode active-backup arp_interval 100")
    assert 'bond0 not built on bonded: Error: argument "bogus" is wrong' in msg


def test_state_of_a_missing_bond_says_how_to_build_it():
    with pytest.raises(CommandError, match="no bond bond0 on this host: apply"):
        arp_bond().state(FakeHost(procs=()))


def test_sysfs_reads_the_papers_files():
    h = FakeHost()
    assert arp_bond().sysfs(h, "mode") == "active-backup 1"
    assert h.runs == ["cat /sys/class/net/bond0/bonding/mode"]
    with pytest.raises(ValueError, match="a file name"):
        arp_bond().sysfs(h, "../../../etc/shadow")


def test_wait_settled_waits_for_every_link_and_the_primary():
    # after the pull: eth1 active, eth0 down; then eth0 up but eth1 still active; then back on eth0
    back_up = ACTIVE_BACKUP_ARP.replace("MII Status: down", "MII Status: up")
    settled = back_up.replace("Currently Active Slave: eth1", "Currently Active Slave: eth0")
    h = FakeHost(procs=[ACTIVE_BACKUP_ARP, back_up, settled])
    naps = []
    st = arp_bond().wait_settled(h, sleep=naps.append)
    assert st.active == "eth0" and len(naps) == 2
    # without a primary, links up is enough
    h2 = FakeHost(procs=[back_up])
    assert arp_bond(primary=None).wait_settled(h2, sleep=naps.append).active == "eth1"


def test_wait_settled_times_out_with_the_bonds_state():
    clock = iter(range(0, 1000, 10))
    with pytest.raises(TimeoutError, match=r"bond0 not settled within 30 s \(active eth1, links eth0 down, eth1 up\)"):
        arp_bond().wait_settled(FakeHost(), timeout=30, sleep=lambda s: None, clock=lambda: next(clock))


def test_bridge_joins_the_peers_nics():
    h = FakeHost(name="peer")
    bridge(h, address="192.168.1.20/24")
    script = h.runs[0]
    assert "link add br0 type bridge stp_state 0 forward_delay 0" in script
    for line in ("addr flush dev eth0", "link set dev eth1 master br0", "addr add 192.168.1.20/24 dev br0"):
        assert line in script
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    with pytest.raises(ValueError):
        bridge(h, ports=("eth0", "eth 1"))


def test_module_docstring_tells_the_miimon_lesson():
    doc = bonding.__doc__
    assert "always has" in doc and "carrier" in doc and "arp_ip_target" in doc


def test_balance_alb_refused_by_a_uml_nic_says_why():
    """Seen in the lab: enslaving a UML NIC in balance-alb fails with EOPNOTSUPP (the driver cannot
    change the MAC address of an open device); the error names that, not just ip's message."""

    class AlbHost(FakeHost):
        def run(self, command, check=True, timeout=60.0):
            if "ip -batch" in command:
                self.runs.append(command)
                return Result(self.name, command, 1, "", "RTNETLINK answers: Operation not supported\n"
                              "Command failed -:7", 0.0)
            return super().run(command, check, timeout)

    with pytest.raises(CommandError, match="ALB mode requires that the base driver support setting the hw "
                                           "address") as e:
        Bond(mode="balance-alb", miimon=100).apply(AlbHost())
    assert "Operation not supported" in str(e.value)
    with pytest.raises(CommandError) as e:  # other modes: ip's message only
        Bond(mode="balance-tlb", miimon=100).apply(AlbHost())
    assert "ALB mode" not in str(e.value)
