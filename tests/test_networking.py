"""Chapter 3's labs and failure scenarios without a VM: the two new topologies, the argument
checks of the experiment factories, their log marks on sample lines, the route parser, and
whole trials against a fake lab whose hosts answer like the real ones (from sample text) and
whose probe logs are synthetic."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from hautils import analysis, topology
from hautils.errors import CommandError
from hautils.experiment import Experiment
from hautils.scenarios import networking
from hautils.services import keepalived as ka
from hautils.services.bonding import Bond
from hautils.services.keepalived import Keepalived
from hautils.ssh import JournalLine, Result

LABS = Path(__file__).resolve().parents[1] / "labs"
T0 = 1_000_000.0


# -- the labs ----------------------------------------------------------------------------------------

def test_bonding_lab_two_switches_and_a_peer_on_both():
    t = topology.load(LABS / "bonding.yaml", check_memory=False)
    assert not t.figure and set(t.hosts) == {"bonded", "peer"}
    assert {n: str(net.subnet) for n, net in t.networks.items()} == {"sw1": "192.168.1.0/24",
                                                                     "sw2": "192.168.1.0/24"}
    for name, addr in (("bonded", "192.168.1.10/24"), ("peer", "192.168.1.20/24")):
        links = t.hosts[name].links
        # one NIC on each switch; the address on the first (it moves to the bond or bridge)
        assert [(l.iface, l.network) for l in links] == [("eth0", "sw1"), ("eth1", "sw2")]
        assert str(links[0].address) == addr and links[1].address is None
        assert not any(l.bond for l in links)  # the lab engine builds no bonds: bonding.py does
    assert "192.168.1.10\tbonded" in t.hosts_file()


def test_gateway_lab_client_pair_server_and_sync_link():
    t = topology.load(LABS / "gateway.yaml", check_memory=False)
    assert list(t.hosts) == ["client", "gw1", "gw2", "server"]
    assert {v.name: (v.network, str(v.address)) for v in t.virtual_ips} == {
        "gw-inside": ("inside", "192.168.1.1"), "gw-outside": ("outside", "192.168.2.1")}
    for gw, last in (("gw1", 2), ("gw2", 3)):
        h = t.hosts[gw]
        assert h.role == "router" and h.forwarding and h.packages == "routing"
        assert [(l.iface, l.network, str(l.address.ip)) for l in h.links] == [
            ("eth0", "inside", f"192.168.1.{last}"), ("eth1", "outside", f"192.168.2.{last}"),
            ("eth2", "sync", f"10.0.0.{last - 1}")]
    # the client's way out and the server's way back are the virtual addresses
    assert [(r.to, str(r.via)) for r in t.hosts["client"].routes] == [("192.168.2.0/24", "192.168.1.1")]
    assert [(r.to, str(r.via)) for r in t.hosts["server"].routes] == [("192.168.1.0/24", "192.168.2.1")]
    assert [h.name for h in t.hosts.values() if any(l.network == "sync" for l in h.links)] == ["gw1", "gw2"]


def test_ospf_flow_is_the_papers_ping_on_the_routing_lab():
    t = topology.load("routing", check_memory=False)
    f = networking.OSPF_FLOW
    h1 = {str(l.address.ip): l.network for l in t.hosts["host1"].links}
    h2 = {str(l.address.ip): l.network for l in t.hosts["host2"].links}
    assert h1[f["client_ip"]] == "br10" and h2[f["target"]] == "br15"
    r1, i1 = f["ingress"]
    r2, i2 = f["egress"]
    assert next(l.network for l in t.hosts[r1].links if l.iface == i1) == "br10"
    assert next(l.network for l in t.hosts[r2].links if l.iface == i2) == "br15"


# -- a fake lab --------------------------------------------------------------------------------------

class FakeHost:
    """A lab host: ``answer(command)`` gives (status, stdout, stderr); ``journal`` sample lines."""

    def __init__(self, lab, name, answer=None, lines=()):
        self.lab, self.name, self.answer, self.lines = lab, name, answer, list(lines)
        self.runs: list[str] = []

    def run(self, command, check=True, timeout=60.0):
        if self.name in self.lab.off:
            raise ConnectionError(f"{self.name} is powered off")
        self.runs.append(command)
        status, out, err = self.answer(command) if self.answer else (0, "", "")
        if check and status:
            raise CommandError(self.name, command, status, out, err)
        return Result(self.name, command, status, out, err, 0.0)

    def wait_for(self, command, timeout=60.0, interval=0.5):
        return self.run(command)

    def journal(self, since=None, identifier=None):
        return [JournalLine(T0 + t, "", ident, msg) for t, ident, msg in self.lines
                if (since is None or T0 + t >= since) and identifier in (None, ident)]


class FakeLab:
    def __init__(self, name):
        self.topology = topology.load(LABS / f"{name}.yaml", check_memory=False)
        self.hosts = {h: FakeHost(self, h) for h in self.topology.hosts}
        self.events: list[tuple[str, str]] = []
        self.off: set[str] = set()
        self.pulled: set[str] = set()
        self.offsets: dict[str, float] = {}  # host -> seconds its clock is ahead
        self.asked: list[set[str]] = []

    def clock_offsets(self, hosts=None):
        self.asked.append(set(hosts))
        return {h: self.offsets.get(h, 0.0) for h in hosts if h not in self.off}

    def __getitem__(self, name):
        return self.hosts[name]

    def cable_pull(self, host, iface="eth0"):
        self.events.append(("cable_pull", f"{host}:{iface}"))
        self.pulled.add(f"{host}:{iface}")
        return T0 + 5.0

    def cable_plug(self, host, iface="eth0"):
        self.events.append(("cable_plug", f"{host}:{iface}"))
        self.pulled.discard(f"{host}:{iface}")
        return T0 + 9.0

    def power_off(self, host):
        self.events.append(("power_off", host))
        self.off.add(host)
        return T0 + 5.0

    def power_on(self, host, wait=True):
        self.events.append(("power_on", host))
        self.off.discard(host)
        return T0 + 30.0


def icmp_log(gaps=(), end=10.0, hz=100, start=0.0) -> pd.DataFrame:
    """An ICMP probe log from T0 + start: a reply 1 ms after each send, none inside a gap (a, b)."""
    rows, t, seq = [], start, 0
    while t < end:
        lost = any(a <= t < b for a, b in gaps)
        rows.append({"seq": seq, "sent": T0 + t, "recv": None if lost else T0 + t + 0.001, "ok": not lost,
                     "err": "timeout" if lost else None, "late": 0})
        seq, t = seq + 1, t + 1 / hz
    df = pd.DataFrame(rows)
    df["recv"] = pd.to_numeric(df["recv"])
    return df


class FakeProbe:
    def __init__(self, host, target, name, log):
        self.host, self.target, self.name, self._log = host, target, name, log
        self._running = False
        self.waited = []

    def start(self):
        self._running = True
        return T0

    def running(self):
        return self._running

    def stop(self):
        self._running = False

    def wait_recovered(self, after, timeout, max_latency):
        self.waited.append(after)
        return after

    def wait_answering(self, span=1.0, timeout=120.0):
        self.answering = getattr(self, "answering", 0) + 1
        return T0

    def log(self):
        return self._log


@pytest.fixture
def icmp(monkeypatch):
    """probes.icmp -> a FakeProbe whose log has the gaps set in ``made.gaps``."""
    made = []

    def fake(host, target, hz=100, name=None, **kw):
        log = icmp_log(made_gaps[0], hz=hz) if not fake.logs else fake.logs.pop(0)
        p = FakeProbe(host, target, name, log)
        p.kw = kw
        made.append(p)
        return p

    made_gaps = [()]
    monkeypatch.setattr("hautils.probes.icmp", fake)
    fake.made, fake.gaps = made, made_gaps
    fake.logs = []  # logs for the next probes, in order, before falling back to gaps
    return fake


# -- link level ---------------------------------------------------------------------------------------

PROC = """\
Bonding Mode: fault-tolerance (active-backup)
Primary Slave: eth0 (primary_reselect always)
Currently Active Slave: {active}
MII Status: up
MII Polling Interval (ms): 0
ARP Polling Interval (ms): 100
ARP IP target/s (n.n.n.n form): 192.168.1.20

Slave Interface: eth0
MII Status: {eth0}
Link Failure Count: {failures}
Permanent HW addr: 52:54:0a:0b:0c:01

Slave Interface: eth1
MII Status: up
Link Failure Count: 0
Permanent HW addr: 52:54:0a:0b:0c:02
"""


def bond() -> Bond:
    return Bond(mode="active-backup", arp_interval=100, arp_ip_target=("192.168.1.20",), arp_validate="all",
                primary="eth0", address="192.168.1.10/24")


def bonding_lab(notices=True) -> FakeLab:
    lab = FakeLab("bonding")
    failures = {"n": 0}

    def answer(cmd):
        if cmd.startswith("cat /proc/net/bonding/bond0"):
            pulled = "bonded:eth0" in lab.pulled
            if pulled and notices:
                failures["n"] = 1
            failed_over = pulled and notices
            return 0, PROC.format(active="eth1" if failed_over else "eth0", eth0="down" if failed_over else "up",
                                  failures=failures["n"]), ""
        return 0, "", ""

    lab.hosts["bonded"].answer = answer
    lab.hosts["bonded"].lines = [
        (5.20, "kernel", "bond0: (slave eth0): link status definitely down, disabling slave"),
        (5.21, "kernel", "bond0: (slave eth1): making interface the new active one"),
    ] if notices else []
    return lab


def test_bond_cable_pull_a_whole_trial(icmp):
    lab = bonding_lab()
    icmp.gaps[0] = [(5.0, 5.3)]
    run = networking.bond_cable_pull(lab, "bonded", bond(), "192.168.1.20", before_s=0, after_s=0).run(1)
    row = run.trials.iloc[0]
    assert row["error"] is None and row["downtime_s"] == pytest.approx(0.31, abs=0.011)
    assert (row["mode"], row["pulled"], row["active before"], row["active after"]) == (
        "active-backup", "eth0", "eth0", "eth1")
    assert bool(row["monitor noticed"]) and row["monitor"] == "arp_interval 100 ms, arp_validate all"
    assert row["link monitor gives up (s)"] == pytest.approx(0.2) and row["new active slave (s)"] == pytest.approx(0.01)
    assert lab.events == [("cable_pull", "bonded:eth0"), ("cable_plug", "bonded:eth0")]
    p = icmp.made[0]
    assert (p.host.name, p.target) == ("bonded", "192.168.1.20") and p.waited == [T0 + 5.0]
    assert run.name == "active-backup cable pull (arp_interval 100 ms)"


def test_bond_cable_pull_that_the_monitor_never_notices(icmp):
    """miimon on UML: the bond stays on the pulled NIC; the outage lasts until the cable is back."""
    lab = bonding_lab(notices=False)
    icmp.gaps[0] = [(5.0, 9.0)]
    naps = []
    b = Bond(mode="active-backup", miimon=100, primary="eth0", address="192.168.1.10/24")
    run = networking.bond_cable_pull(lab, "bonded", b, "192.168.1.20", replug_after_s=4, before_s=0, after_s=0,
                                     sleep=naps.append, now=lambda: T0 + 8.999).run(1)
    row = run.trials.iloc[0]
    assert naps == [4] and row["downtime_s"] == pytest.approx(4.01, abs=0.011)
    assert row["active after"] == "eth0" and not bool(row["monitor noticed"])
    assert lab.events == [("cable_pull", "bonded:eth0"), ("cable_plug", "bonded:eth0")]  # plugged once
    assert run.trials.columns.str.contains("link monitor gives up").any()  # the phase, not found: NaN
    assert pd.isna(row["link monitor gives up (s)"])
    # the replug ends the outage: a phase of its own, from the fault (T0+5) to the plug (T0+9)
    assert row["cable plugged back (s)"] == pytest.approx(3.999)  # stamped before the plug call
    assert row["peer answers again (s)"] == pytest.approx(0.01, abs=0.011)


def xor_lab(lost_every_other=False) -> FakeLab:
    """balance-xor or balance-rr: no active slave; the ARP monitor takes eth0 down at the pull."""
    lab = FakeLab("bonding")
    text = PROC.replace("fault-tolerance (active-backup)", "load balancing (xor)").replace(
        "Primary Slave: eth0 (primary_reselect always)\n", "").replace("Currently Active Slave: {active}\n", "")

    def answer(cmd):
        pulled = "bonded:eth0" in lab.pulled
        return 0, text.format(eth0="down" if pulled else "up", failures=int(pulled)), ""

    lab.hosts["bonded"].answer = answer
    lab.hosts["bonded"].lines = [(5.2, "kernel", "bond0: (slave eth0): interface is now down")]
    return lab


def test_bond_cable_pull_in_a_mode_that_may_lose_nothing(icmp):
    """balance-xor's hash put the peer on eth1 (seen in the lab): pulling eth0 costs no probe;
    the trial waits for the monitor instead of for an outage that never comes."""
    lab = xor_lab()
    b = Bond(mode="balance-xor", arp_interval=100, arp_ip_target=("192.168.1.20",), address="192.168.1.10/24")
    run = networking.bond_cable_pull(lab, "bonded", b, "192.168.1.20", before_s=0, after_s=0).run(1)
    row = run.trials.iloc[0]
    assert row["error"] is None and row["downtime_s"] == 0 and row["lost after pull"] == 0
    assert bool(row["monitor noticed"]) and icmp.made[0].waited == []  # no wait for a recovery
    assert lab.events == [("cable_pull", "bonded:eth0"), ("cable_plug", "bonded:eth0")]


def test_bond_cable_pull_counts_every_lost_probe_of_a_round_robin(icmp):
    """balance-rr loses every other packet until the monitor acts: many short outages, so the
    row counts all failed probes after the pull and how long the losses went on."""
    lab = xor_lab()
    b = Bond(mode="balance-rr", arp_interval=100, arp_ip_target=("192.168.1.20",), address="192.168.1.10/24")
    icmp.gaps[0] = [(5.0 + k * 0.02, 5.0 + k * 0.02 + 0.01) for k in range(10)]  # 10 lost, 0.18 s
    run = networking.bond_cable_pull(lab, "bonded", b, "192.168.1.20", before_s=0, after_s=0).run(1)
    row = run.trials.iloc[0]
    assert row["lost after pull"] == 10 and row["loss window_s"] == pytest.approx(0.18, abs=0.011)
    # answers between the losses (flaps, < 0.1 s apart) do not end the outage: one outage, the stretch
    assert row["lost_probes"] == 10 and row["downtime_s"] == pytest.approx(0.2, abs=0.011)
    assert row["link monitor gives up (s)"] == pytest.approx(0.2)
    b0 = networking.bond_cable_pull(lab, "bonded", b, "192.168.1.20", flap_s=0, before_s=0, after_s=0).run(1)
    assert b0.trials.iloc[0]["lost_probes"] == 1  # each loss an outage of its own


def test_bond_cable_pull_waits_for_the_partners_bond_too(icmp):
    lab = bonding_lab()
    lab.hosts["peer"].answer = lambda cmd: (0, PROC.format(active="eth0", eth0="up", failures=0), "")
    icmp.gaps[0] = [(5.0, 5.3)]
    partner = Bond(mode="active-backup", miimon=100)
    networking.bond_cable_pull(lab, "bonded", bond(), "192.168.1.20", settle=[("Peer", partner)], before_s=0,
                               after_s=0).run(1)
    assert lab.hosts["peer"].runs == ["cat /proc/net/bonding/bond0"]
    with pytest.raises(TypeError, match=r"\(host, Bond\) pairs"):
        networking.bond_cable_pull(lab, "bonded", bond(), "192.168.1.20", settle=[("peer", "bond0")])


def test_bond_cable_pull_refuses_to_pull_the_idle_link(icmp):
    lab = bonding_lab()
    exp = networking.bond_cable_pull(lab, "bonded", bond(), "192.168.1.20", iface="eth1", before_s=0, after_s=0)
    with pytest.raises(Exception, match="the active slave is eth0, not eth1"):
        exp.run(1)
    assert lab.events == []


@pytest.mark.parametrize("kw, needle", [
    (dict(host="nobody"), "host='nobody': no such host in lab 'bonding'"),
    (dict(iface="eth2"), "iface='eth2' is not a slave of bond0"),
    (dict(peer_ip="peer"), "peer_ip='peer': an IPv4 address"),
    (dict(probe_host="peer"), "probe_host='peer' needs target="),
    (dict(hz=0), "hz=0"),
    (dict(replug_after_s=-1), "replug_after_s=-1"),
    (dict(outage=False, replug_after_s=3), "outage=False expects none"),
])
def test_bond_cable_pull_argument_checks(kw, needle):
    args = dict(host="bonded", bond=bond(), peer_ip="192.168.1.20")
    args.update(kw)
    with pytest.raises(ValueError, match=re.escape(needle)):
        networking.bond_cable_pull(bonding_lab(), **args)
    with pytest.raises(TypeError, match="a hautils.services.bonding.Bond"):
        networking.bond_cable_pull(bonding_lab(), "bonded", "bond0", "192.168.1.20")


def test_bond_cable_pull_needs_a_nic_the_topology_has():
    b = Bond(slaves=("eth0", "eth3"), miimon=100)
    with pytest.raises(ValueError, match="host bonded has no such NIC in the topology"):
        networking.bond_cable_pull(bonding_lab(), "Bonded", b, "192.168.1.20", iface="eth3")


def test_bond_marks_match_the_drivers_lines():
    m = networking.bond_marks("bond0", "eth0")
    down = "kernel: bond0: (slave eth0): link status definitely down, disabling slave"
    new = "kernel: bond0: (slave eth1): making interface the new active one"
    assert re.search(m["link monitor gives up"], down) and not re.search(m["link monitor gives up"], new)
    assert re.search(m["new active slave"], new)
    assert re.search(m["link monitor gives up"], "kernel: bond0: (slave eth0): interface is now down")
    assert not re.search(m["link monitor gives up"], down.replace("eth0", "eth1"))  # the pulled one only
    assert not re.search(networking.bond_marks("bond1", "eth0")["link monitor gives up"], down)


# -- gateway level ----------------------------------------------------------------------------------

ADDRS = {"gw1": ("192.168.1.2", "192.168.2.2"), "gw2": ("192.168.1.3", "192.168.2.3")}


def gateway_lab(master="gw1") -> FakeLab:
    lab = FakeLab("gateway")
    state = {"master": master}

    def answer_for(name):
        def answer(cmd):
            if cmd == "ip -o -4 addr show":
                mine = list(ADDRS[name])
                live = [g for g in ("gw1", "gw2") if g not in lab.off]
                holder = state["master"] if state["master"] in live else (live[0] if live else None)
                if holder == name:
                    mine += ["192.168.1.1", "192.168.2.1"]
                return 0, "\n".join(f"2: eth0    inet {a}/24 scope global eth0" for a in mine), ""
            return 0, "", ""
        return answer

    for g in ("gw1", "gw2"):
        lab.hosts[g].answer = answer_for(g)
    lab.hosts["gw2"].lines = [(5.3, "Keepalived_vrrp", "(VI_inside) Receive advertisement timeout"),
                              (5.3, "Keepalived_vrrp", "(VI_inside) Entering MASTER STATE"),
                              (5.31, "Keepalived_vrrp", "(VI_outside) Entering MASTER STATE")]
    lab.state = state
    return lab


@pytest.fixture
def quick_wait(monkeypatch):
    now = [0.0]

    def sleep(s):
        now[0] += s

    monkeypatch.setattr(networking, "wait_master",
                        functools.partial(ka.wait_master, sleep=sleep, clock=lambda: now[0]))


def test_vrrp_power_failure_a_whole_trial(icmp, quick_wait):
    lab = gateway_lab()
    # the failover's probe, then the one that watches the return (power on at T0+30; the
    # preemption costs 0.2 s at T0+40)
    icmp.logs[:] = [icmp_log([(5.0, 5.5)]), icmp_log([(40.0, 40.2)], start=29.0, end=45.0)]
    vrrp = Keepalived(lab.topology, advert_int=0.1, conntrackd=True)
    booted = []
    run = networking.vrrp_power_failure(lab, ("gw1", "gw2"), "client", "192.168.2.10", vrrp=vrrp,
                                        after_boot=lambda h: booted.append(h.name), before_s=0, after_s=0).run(1)
    assert booted == ["gw1"]
    row = run.trials.iloc[0]
    assert row["error"] is None and row["downtime_s"] == pytest.approx(0.51, abs=0.011)
    assert (row["from"], row["to"], row["advert_int"]) == ("gw1", "gw2", 0.1)
    assert row["bound (s)"] == pytest.approx(0.361)
    assert row["master down timer (detection) (s)"] == pytest.approx(0.3)
    assert row["becomes MASTER (s)"] == pytest.approx(0.0)
    assert row["master after return"] == "gw1"  # preempt: the old master takes the addresses back
    assert row["return downtime_s"] == pytest.approx(0.21, abs=0.011) and row["return lost"] == 20
    assert [p.name for p in icmp.made] == ["VRRP-power-failure-advert-int-0.1-s-0",
                                           "VRRP-power-failure-advert-int-0.1-s-0-return"]
    assert lab.events == [("power_off", "gw1"), ("power_on", "gw1")]
    # conntrackd before keepalived on the router that came back
    assert "systemctl start conntrackd && systemctl start keepalived" in lab.hosts["gw1"].runs


def test_conntrackd_session_counts_late_echoes_as_the_outage(session, icmp, quick_wait):
    """Seen in the lab: a surviving session loses no line; TCP holds them while the path is down
    and the echoes come back late, all at once.  Slower than stall_s (0.25 s) is no answer."""
    lab = gateway_lab()
    session.logs[:] = [session_log((0, 0), held=(5.0, 5.6))]
    icmp.logs[:] = [icmp_log(start=29.0, end=45.0)]
    vrrp = Keepalived(lab.topology, advert_int=0.1, conntrackd=True)
    exp = networking.conntrackd_session(lab, ("gw1", "gw2"), "client", "192.168.2.10", vrrp=vrrp,
                                        before_s=0, after_s=0)
    assert exp.stall_s == 0.25
    row = exp.run(1).trials.iloc[0]
    assert row["survived"] and row["downtime_s"] == pytest.approx(0.65, abs=0.06)
    assert not row["in backup's cache"] and "in backup's cache" in row  # the fake survivor's conntrackd printed nothing
    assert row["master down timer (detection) (s)"] == pytest.approx(0.3)
    p = icmp.made[0]
    assert (p.host.name, p.target) == ("client", "192.168.2.10")


def test_vrrp_power_failure_with_nopreempt_keeps_the_survivor(icmp, quick_wait):
    lab = gateway_lab()
    icmp.logs[:] = [icmp_log([(5.0, 8.5)]), icmp_log(start=29.0, end=45.0)]

    def power_on(host, wait=True):  # the old master comes back as backup
        lab.events.append(("power_on", host))
        lab.off.discard(host)
        lab.state["master"] = "gw2"
        return T0 + 30

    lab.power_on = power_on
    vrrp = Keepalived(lab.topology, preempt=False)
    run = networking.vrrp_power_failure(lab, ["gw1", "gw2"], "client", "192.168.2.10", vrrp=vrrp,
                                        before_s=0, after_s=0).run(1)
    row = run.trials.iloc[0]
    assert row["master after return"] == "gw2" and row["downtime_s"] == pytest.approx(3.51, abs=0.011)
    assert row["return downtime_s"] == 0 and row["return lost"] == 0  # nopreempt: the return costs nothing
    assert "systemctl start keepalived" in lab.hosts["gw1"].runs


@pytest.mark.parametrize("args, kw, needle", [
    ((["gw1"], "client", "192.168.2.10"), {}, "the two routers of the VRRP pair"),
    ((["gw1", "gw1"], "client", "192.168.2.10"), {}, "the two routers of the VRRP pair"),
    ((["gw1", "gw9"], "client", "192.168.2.10"), {}, "routers='gw9'"),
    ((["gw1", "gw2"], "gw1", "192.168.2.10"), {}, "client='gw1' is one of the routers"),
    ((["gw1", "gw2"], "client", "server"), {}, "target_ip='server'"),
    ((["gw1", "gw2"], "client", "192.168.2.1"), {}, "is a virtual address of the pair"),
    ((["gw1", "gw2"], "client", "192.168.2.10"), {"hz": -5}, "hz=-5"),
    ((["gw1", "gw2"], "client", "192.168.2.10"), {"services": ["keepalived; reboot"]}, "not a systemd unit"),
    ((["gw1", "gw2"], "client", "192.168.2.10"), {"vips": ["192.168.1"]}, "vips="),
])
def test_vrrp_power_failure_argument_checks(args, kw, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        networking.vrrp_power_failure(gateway_lab(), *args, **kw)


def test_vrrp_power_failure_checks_vrrp_is_for_these_routers():
    lab = gateway_lab()
    vrrp = Keepalived(lab.topology)
    vrrp.routers = ("gw1", "client")  # as if configured for another pair
    with pytest.raises(ValueError, match="vrrp is configured for"):
        networking.vrrp_power_failure(lab, ["gw1", "gw2"], "client", "192.168.2.10", vrrp=vrrp)


def test_vrrp_marks_are_keepalived_s():
    assert networking.VRRP_MARKS is ka.VRRP_MARKS


# -- routing level -----------------------------------------------------------------------------------

def ospf_lab() -> tuple[FakeLab, dict]:
    lab = FakeLab.__new__(FakeLab)
    lab.topology = topology.load("routing", check_memory=False)
    lab.hosts = {h: FakeHost(lab, h) for h in lab.topology.hosts}
    lab.events, lab.off, lab.pulled = [], set(), set()
    up = {"patha": True, "pathb": True}

    def route(prefix, hops):
        if len(hops) == 1:
            return json.dumps([{"dst": prefix, "gateway": hops[0], "dev": "eth2", "protocol": "ospf",
                                "metric": 20, "flags": []}])
        return json.dumps([{"dst": prefix, "protocol": "ospf", "metric": 20, "flags": [],
                            "nexthops": [{"gateway": g, "dev": f"eth{i + 2}", "weight": 1, "flags": []}
                                         for i, g in enumerate(hops)]}])

    def live(*pairs):
        return [gw for router, gw in pairs if up[router] and router not in lab.off]

    def batched(answer):
        """flow_paths asks for many sources in one command: '<cmd> 2>/dev/null; echo '#'; ...'."""
        def run(cmd):
            if " 2>/dev/null; echo '#'" not in cmd:
                return answer(cmd)
            pieces = [c.strip("; ") for c in cmd.split(" 2>/dev/null; echo '#'") if c.strip("; ")]
            return 0, "".join(answer(c)[1] + "\n#\n" for c in pieces), ""
        return run

    def router1(cmd):
        if cmd == "ip -j route show 10.10.15.0/24":
            return 0, route("10.10.15.0/24", live(("patha", "10.10.11.1"), ("pathb", "10.10.13.1"))), ""
        if cmd.startswith("ip -j route get 10.10.15.2 from 10.10.10.2 iif eth1"):
            return 0, json.dumps([{"dst": "10.10.15.2", "gateway": live(("patha", "10.10.11.1"),
                                                                         ("pathb", "10.10.13.1"))[0]}]), ""
        return 0, "", ""

    def router2(cmd):
        if cmd == "ip -j route show 10.10.10.0/24":
            return 0, route("10.10.10.0/24", live(("patha", "10.10.12.1"), ("pathb", "10.10.14.1"))), ""
        if cmd.startswith("ip -j route get 10.10.10.2 from 10.10.15.2 iif eth3"):
            return 0, json.dumps([{"dst": "10.10.10.2", "gateway": live(("pathb", "10.10.14.1"),
                                                                         ("patha", "10.10.12.1"))[0]}]), ""
        return 0, "", ""

    def path(name):
        def answer(cmd):
            if cmd.startswith("ip -j route show 10.10.15.0/24; echo '#'; ip -j route show 10.10.10.0/24"):
                if up[name]:
                    back = up.get("loop", "10.10.11.2")  # router1 (right), or router2 (a loop)
                    return 0, route("10.10.15.0/24", ["10.10.12.2"]) + "\n#\n" + route("10.10.10.0/24", [back]), ""
                return 0, "[]\n#\n[]\n", ""
            return 0, "", ""
        return answer

    lab.hosts["router1"].answer, lab.hosts["router2"].answer = batched(router1), batched(router2)
    lab.hosts["patha"].answer, lab.hosts["pathb"].answer = path("patha"), path("pathb")
    adj = "ospfd", "[HBN2F-ZVDDQ] AdjChg: Nbr 192.168.103.92(default) on eth2:10.10.11.2: Full -> Deleted (InactivityTimer)"
    lab.hosts["router1"].lines = [(5.02, *adj)]
    lab.hosts["router2"].lines = [(5.4, "ospfd", "AdjChg: Nbr 192.168.103.92(default) on eth1:10.10.12.2: "
                                                 "Loading -> Full (LoadingDone)")]
    return lab, up


class FakeFrr:
    def __init__(self, lab, up):
        self.lab, self.up, self.calls = lab, up, []

    def stop(self, host):
        self.calls.append(("stop", host.name))
        self.up[host.name] = False
        return T0 + 5.0

    def start(self, host, timeout=120):
        self.calls.append(("start", host.name))
        self.up[host.name] = True
        return 1.0


def test_ospf_stop_on_the_path_a_whole_trial(icmp):
    lab, up = ospf_lab()
    frr = FakeFrr(lab, up)
    icmp.gaps[0] = [(5.0, 5.05)]
    naps = []
    run = networking.ospf_event(lab, "patha", "stop", frr=frr, before_s=0, after_s=0, sleep=naps.append).run(1)
    row = run.trials.iloc[0]
    assert row["error"] is None and row["downtime_s"] == pytest.approx(0.06, abs=0.011)
    assert (row["action"], row["router"], row["path out"], row["path back"]) == ("stop", "patha", "patha", "pathb")
    assert bool(row["on path"]) and row["path out after"] == "pathb"
    assert row["neighbour declared lost (s)"] == pytest.approx(0.02)
    assert frr.calls == [("stop", "patha"), ("start", "patha")]  # the trial, then the restore
    assert up["patha"]
    p = icmp.made[0]
    assert (p.host.name, p.target) == ("host1", "10.10.15.2")


def test_ospf_start_stops_first_and_measures_the_return(icmp):
    lab, up = ospf_lab()
    frr = FakeFrr(lab, up)
    icmp.gaps[0] = []
    run = networking.ospf_event(lab, "pathb", "start", frr=frr, before_s=0, after_s=0,
                                sleep=lambda s: None, now=lambda: T0 + 5.0).run(2)
    assert list(run.trials["downtime_s"]) == [0.0, 0.0]
    row = run.trials.iloc[0]
    assert (row["path out"], row["path back"], bool(row["on path"])) == ("patha", "patha", False)
    assert row["path back after"] == "pathb"  # the flow back moved to the returned router
    assert frr.calls == [("stop", "pathb"), ("start", "pathb")] * 2


def test_ospf_power_boots_and_restarts_frr(icmp):
    lab, up = ospf_lab()
    frr = FakeFrr(lab, up)
    icmp.gaps[0] = [(5.0, 6.2)]
    booted = []
    run = networking.ospf_event(lab, "patha", "power", frr=frr, before_s=0, after_s=0, sleep=lambda s: None,
                                after_boot=lambda h: booted.append(h.name)).run(1)
    assert run.trials.iloc[0]["downtime_s"] == pytest.approx(1.21, abs=0.011) and booted == ["patha"]
    assert lab.events == [("power_off", "patha"), ("power_on", "patha")] and frr.calls == [("start", "patha")]


def test_ospf_wait_for_routes_times_out_naming_the_next_hops(icmp):
    lab, up = ospf_lab()

    class StuckFrr(FakeFrr):
        def stop(self, host):  # the daemons stop, but the routes stay (a stuck zebra)
            self.calls.append(("stop", host.name))
            return T0 + 5.0

    clock = iter(range(0, 10_000, 50))
    exp = networking.ospf_event(lab, "patha", "stop", frr=StuckFrr(lab, up), before_s=0, after_s=0,
                                converge_timeout_s=120, sleep=lambda s: None, clock=lambda: next(clock))
    with pytest.raises(Exception, match=r"routes around patha not seen within 120 s; next hops now: "
                                        r"\{'router1': \['patha', 'pathb'\]"):
        exp.run(1)


@pytest.mark.parametrize("router, action, kw, needle", [
    ("patha", "reboot", {}, "action='reboot': one of stop, start, power"),
    ("router1", "stop", {}, "router='router1' is an end of the flow"),
    ("host2", "stop", {}, "router='host2' has role 'end-host'"),
    ("pathc", "stop", {}, "router='pathc': no such host in lab 'routing'"),
    ("patha", "stop", {"hz": 0}, "hz=0"),
    ("patha", "stop", {"flow": {"target": "10.99.0.1"}}, "target=10.99.0.1: on none of the lab's networks"),
    ("patha", "stop", {"flow": {"ingress": ("router1", "eth9")}}, "ingress: router1 has no NIC 'eth9'"),
])
def test_ospf_event_argument_checks(router, action, kw, needle):
    lab, up = ospf_lab()
    with pytest.raises(ValueError, match=re.escape(needle)):
        networking.ospf_event(lab, router, action, frr=FakeFrr(lab, up), **kw)


def test_ospf_event_defaults_to_frr_for_the_labs_topology():
    lab, _ = ospf_lab()
    exp = networking.ospf_event(lab, "pathA", "stop")  # the paper's spelling of the host
    assert isinstance(exp, Experiment) and exp.name == "OSPF stop patha" and exp.stall_s is None


def test_ospf_sequence_is_the_papers_four_events():
    lab, up = ospf_lab()
    seq = networking.ospf_sequence(lab, FakeFrr(lab, up), first="pathb", second="patha", hz=1)
    assert list(seq) == ["ospf-stop-pathA", "ospf-start-pathA", "ospf-stop-pathB", "ospf-start-pathB"]
    assert [e.name for e in seq.values()] == ["ospf-stop-pathA (pathb)", "ospf-start-pathA (pathb)",
                                              "ospf-stop-pathB (patha)", "ospf-start-pathB (patha)"]
    assert seq["ospf-start-pathB"].marks == {"adjacency to it Full": networking.ADJ_FULL}
    with pytest.raises(ValueError, match="the two path routers"):
        networking.ospf_sequence(lab, first="patha", second="PathA")


def test_flow_path_reads_both_ends():
    lab, up = ospf_lab()
    assert networking.flow_path(lab) == {"out": "patha", "back": "pathb"}
    up["patha"] = False
    assert networking.flow_path(lab) == {"out": "pathb", "back": "pathb"}
    assert lab.hosts["router1"].runs[-1] == "ip -j route get 10.10.15.2 from 10.10.10.2 iif eth1 2>/dev/null; echo '#'"


def test_route_nexthops():
    owners = {"10.10.11.1": "patha", "10.10.13.1": "pathb"}
    ecmp = ('[{"dst":"10.10.15.0/24","protocol":"ospf","metric":20,"flags":[],"nexthops":['
            '{"gateway":"10.10.11.1","dev":"eth2","weight":1,"flags":[]},'
            '{"gateway":"10.10.13.1","dev":"eth3","weight":1,"flags":[]}]}]')
    assert networking.route_nexthops(ecmp, owners) == ["patha", "pathb"]
    one = '[{"dst":"10.10.15.0/24","gateway":"10.10.13.1","dev":"eth3","protocol":"ospf","metric":20,"flags":[]}]'
    assert networking.route_nexthops(one, owners) == ["pathb"]
    assert networking.route_nexthops(one) == ["10.10.13.1"]
    connected = '[{"dst":"10.10.10.0/24","dev":"eth1","protocol":"kernel","scope":"link","flags":[]}]'
    assert networking.route_nexthops(connected, owners) == [] and networking.route_nexthops("[]") == []
    with pytest.raises(ValueError, match="not `ip -j route` output"):
        networking.route_nexthops("10.10.15.0/24 via 10.10.11.1 dev eth2")


@pytest.mark.parametrize("line, down, full", [
    ("AdjChg: Nbr 192.168.103.92(default) on eth2:10.10.11.2: Full -> Deleted (InactivityTimer)", True, False),
    ("[HBN2F-ZVDDQ] AdjChg: Nbr 192.168.103.98(default) on eth3:10.10.13.2: Full -> Init (1-WayReceived)",
     True, False),
    ("AdjChg: Nbr 192.168.103.92(default) on eth2:10.10.11.2: Loading -> Full (LoadingDone)", False, True),
    ("AdjChg: Nbr 192.168.103.92(default) on eth2:10.10.11.2: Init -> Deleted (KillNbr)", False, False),
    ("ospfd: OSPF: Receive hello from 192.168.103.92", False, False),
])
def test_ospf_marks_match_ospfds_adjacency_lines(line, down, full):
    assert bool(re.search(networking.ospf_marks("stop")["neighbour declared lost"], line)) == down
    assert bool(re.search(networking.ospf_marks("power")["neighbour declared lost"], line)) == down
    assert bool(re.search(networking.ospf_marks("start")["adjacency to it Full"], line)) == full


def test_ospf_phases_from_sample_lines():
    fault = 100.0
    events = [(fault + 1.02, "ospfd: AdjChg: Nbr 192.168.103.92(default) on eth2:10.10.11.2: Full -> Deleted "
                             "(InactivityTimer)")]
    ph = analysis.phases(events, networking.ospf_marks("power"), start=fault, end=fault + 1.3, final="rest")
    assert [(p.name, round(p.duration, 2)) for p in ph] == [("neighbour declared lost", 1.02), ("rest", 0.28)]


def test_ospf_paper_test_chains_each_stop_into_its_start(icmp):
    """Trial by trial: stop pathA, start pathA, stop pathB, start pathB; a stop leaves FRR stopped
    (no restart in between), and each start probes from the source its stop found crossing it."""
    lab, up = ospf_lab()
    frr = FakeFrr(lab, up)
    icmp.gaps[0] = []
    runs = networking.ospf_paper_test(lab, 1, frr, sources=["10.10.10.2"], before_s=0, after_s=0,
                                      sleep=lambda s: None, now=lambda: T0 + 5.0)
    assert list(runs) == [k for k, _, _ in networking.OSPF_SEQUENCE]
    assert frr.calls == [("stop", "patha"), ("stop", "patha"), ("start", "patha"),
                         ("stop", "pathb"), ("stop", "pathb"), ("start", "pathb")]
    assert all(r.trials.error.isna().all() for r in runs.values())
    assert runs["ospf-stop-pathA"].trials.source[0] == "10.10.10.2"  # crosses patha out; back is pathb
    assert all(p.kw.get("source") == "10.10.10.2" for p in icmp.made)


def test_adjacency_drops_counts_only_the_named_neighbours():
    lab = FakeLab("routing")
    down = "AdjChg: Nbr 192.168.103.98, NbrIP 10.10.13.1 (default) on eth3:10.10.13.2: Full -> Deleted (InactivityTimer)"
    other = down.replace("192.168.103.98", "192.168.103.92")
    lab.hosts["router1"].lines = [(1.0, "ospfd", down), (2.0, "ospfd", other), (3.0, "zebra", down),
                                  (0.5, "ospfd", down)]
    drops = networking.adjacency_drops(lab, ["router1", "router2"], T0 + 0.9, neighbours=["192.168.103.98"])
    assert drops == [f"router1: {down}"]
    assert len(networking.adjacency_drops(lab, ["router1"], T0)) == 3  # any neighbour, ospfd only


def test_ospf_start_is_not_recovered_while_the_router_routes_back(icmp):
    """A restarted router that routes the client's network back to router2 (stale LSAs) would
    loop the flow: the start waits for its real routes, and says so when they do not come."""
    lab, up = ospf_lab()
    frr = FakeFrr(lab, up)
    up["loop"] = "10.10.12.2"  # patha: 10.10.10.0/24 via router2
    exp = networking.ospf_event(lab, "patha", "start", frr=frr, before_s=0, after_s=0, sleep=lambda s: None,
                                now=lambda: T0 + 5.0, converge_timeout_s=0.2, timeout_s=1)
    with pytest.raises(Exception, match="routes through patha not seen"):
        exp.run(1)
    up.pop("loop")
    assert exp.run(1).trials.error.isna().all()


def test_crossing_source_prefers_both_ways_and_pin_flows_refuses_one_way():
    """The fake routers send 10.10.10.2's flow out through patha and back through pathb."""
    lab, _ = ospf_lab()
    assert networking.crossing_source(lab, "patha", ["10.10.10.2"]) == "10.10.10.2"  # one way is better than none
    assert networking.crossing_source(lab, "patha", ["10.10.10.2"], both_ways_only=True) is None
    with pytest.raises(RuntimeError, match="crosses patha, pathb both ways"):
        networking.pin_flows(lab, sources=["10.10.10.2"], sleep=lambda s: None)
    # one command per end router for every source, not two per source
    assert networking.flow_paths(lab, ["10.10.10.2", "10.10.10.2"]) == {"10.10.10.2": {"out": "patha", "back": "pathb"}}
    assert lab.hosts["router1"].runs[-1].count("ip -j route get") == 2


def test_kernel_journal_lines_are_timed_when_the_kernel_logged_them():
    """journald stamps a kernel line when it reads /dev/kmsg (~10 ms late in a busy UML guest):
    the line's time is moved back by the monotonic delay; other lines keep journald's time."""
    from hautils.ssh import parse_journal_json

    kernel = json.dumps({"__REALTIME_TIMESTAMP": "1796290864885979", "__MONOTONIC_TIMESTAMP": "98700094",
                         "_SOURCE_MONOTONIC_TIMESTAMP": "98690000", "SYSLOG_IDENTIFIER": "kernel",
                         "MESSAGE": "bond0: (slave eth0): link status definitely down, disabling slave"})
    daemon = json.dumps({"__REALTIME_TIMESTAMP": "1796290864900000", "__MONOTONIC_TIMESTAMP": "98714115",
                         "SYSLOG_IDENTIFIER": "Keepalived_vrrp", "_SYSTEMD_UNIT": "keepalived.service",
                         "MESSAGE": "(VI_inside) Entering MASTER STATE"})
    lines = parse_journal_json("\n".join([kernel, "not json", daemon]))
    assert [l.identifier for l in lines] == ["kernel", "Keepalived_vrrp"]
    assert lines[0].time == pytest.approx(1796290864.885979 - 0.010094, abs=1e-6)
    assert lines[1].time == pytest.approx(1796290864.9, abs=1e-6)
    assert lines[1].unit == "keepalived.service"


def test_vrrp_phases_are_read_on_one_clock(icmp, quick_wait):
    """The client's clock behind the routers' (14 ms in the lab, 0.25 s here to make it plain):
    the survivor's lines belong before the client's first answer once both are on the machine's
    clock; the downtime, the client's alone, does not change."""
    lab = gateway_lab()
    lab.offsets = {"client": -0.25}
    lab.hosts["gw2"].lines = [(5.6, "Keepalived_vrrp", "(VI_inside) Receive advertisement timeout"),
                              (5.61, "Keepalived_vrrp", "(VI_inside) Entering MASTER STATE")]
    icmp.logs[:] = [icmp_log([(5.0, 5.5)]), icmp_log(start=29.0, end=45.0)]
    vrrp = Keepalived(lab.topology, advert_int=0.1)
    row = networking.vrrp_power_failure(lab, ("gw1", "gw2"), "client", "192.168.2.10", vrrp=vrrp,
                                        before_s=0, after_s=0).run(1).trials.iloc[0]
    assert lab.asked[0] == {"client", "gw2"}  # the failed router is off: not asked
    assert row["downtime_s"] == pytest.approx(0.51, abs=0.011)
    assert row["master down timer (detection) (s)"] == pytest.approx(0.6)
    assert row["becomes MASTER (s)"] == pytest.approx(0.01)
    assert row["client reaches the server (s)"] == pytest.approx(0.141, abs=0.011)


# -- a NAT session across the failover ----------------------------------------------------------------

def session_log(gap, *, reconnect_at=None, end=12.0, hz=20, held=None) -> pd.DataFrame:
    """A session probe's log from T0: echoes 1 ms after each send on connection 0, timeouts
    inside ``gap``; with ``reconnect_at`` the connection broke at the gap's end (ETIMEDOUT) and
    a new one (conn 1) answers from then on."""
    rows, t, seq = [], 0.0, 0
    a, b = gap
    while t < end:
        if held is not None and held[0] <= t < held[1]:  # TCP held the line back: echoed late, all at once
            rows.append({"seq": seq, "sent": T0 + t, "recv": T0 + held[1], "ok": True, "err": None, "conn": 0})
        elif a <= t < b:
            rows.append({"seq": seq, "sent": T0 + t, "recv": None, "ok": False, "err": "timeout", "conn": 0})
        elif reconnect_at is not None and t >= b:
            ok = t >= reconnect_at
            rows.append({"seq": seq, "sent": T0 + t, "recv": T0 + t + 0.001 if ok else None, "ok": ok,
                         "err": None if ok else "connecting", "conn": 1 if ok else 0})
        else:
            rows.append({"seq": seq, "sent": T0 + t, "recv": T0 + t + 0.001, "ok": True, "err": None, "conn": 0})
        seq, t = seq + 1, t + 1 / hz
    df = pd.DataFrame(rows)
    df["recv"] = pd.to_numeric(df["recv"])
    df["late"] = 0
    breaks = [{"conn": 0, "at": T0 + b, "err": "ETIMEDOUT", "stage": "recv"}] if reconnect_at is not None else []
    df.attrs["footer"] = {"stopped": T0 + end, "breaks": breaks, "connections": 2 if reconnect_at else 1}
    return df


@pytest.fixture
def session(monkeypatch):
    made, servers = [], []

    def fake(host, target, port, hz=20, name=None, **kw):
        p = FakeProbe(host, target, name, fake.logs.pop(0))
        p.kw = {"port": port, "hz": hz, **kw}
        made.append(p)
        return p

    class FakeEcho:
        def __init__(self, host, port=7007):
            servers.append((host.name, port))

        def start(self):
            return 1

    fake.logs, fake.made, fake.servers = [], made, servers
    monkeypatch.setattr("hautils.probes.session", fake)
    monkeypatch.setattr("hautils.probes.EchoServer", FakeEcho)
    return fake


def test_conntrackd_session_without_conntrackd_breaks_and_says_how(session, icmp, quick_wait):
    lab = gateway_lab()
    session.logs[:] = [session_log((5.0, 10.0), reconnect_at=10.2)]
    icmp.logs[:] = [icmp_log(start=29.0, end=45.0)]  # the return watch
    vrrp = Keepalived(lab.topology, advert_int=0.1)
    run = networking.conntrackd_session(lab, ("gw1", "gw2"), "client", "192.168.2.10", vrrp=vrrp,
                                        before_s=0, after_s=0).run(1)
    row = run.trials.iloc[0]
    assert row["error"] is None and not row["conntrackd"] and not row["survived"]
    assert (row["break_err"], row["break_s"], row["connections"]) == ("ETIMEDOUT", 5.0, 2)
    assert row["downtime_s"] == pytest.approx(5.2, abs=0.06)  # until the new connection answers
    p = session.made[0]
    assert (p.host.name, p.target) == ("client", "192.168.2.10")
    assert p.kw == {"port": 7007, "hz": 20, "user_timeout": 5.0, "reconnect": True}
    assert session.servers == [("server", 7007)]  # the echo server runs on the owner of the address
    assert "notify script starts (s)" not in run.trials.columns
    assert "in backup's cache" not in run.trials.columns  # no conntrackd: nothing to ask


def test_conntrackd_session_that_survives_with_its_phases(session, icmp, quick_wait):
    lab = gateway_lab()
    answer = lab.hosts["gw2"].answer
    lab.hosts["gw2"].answer = lambda cmd: (0, "1\n", "") if cmd.startswith("conntrackd -C") else answer(cmd)
    lab.hosts["gw2"].lines += [(5.35, "hautils-conntrackd", "primary: committing the external cache"),
                               (5.5, "hautils-conntrackd", "primary: external cache committed"),
                               (5.52, "hautils-conntrackd", "primary: done")]
    session.logs[:] = [session_log((5.0, 5.6))]
    icmp.logs[:] = [icmp_log(start=29.0, end=45.0)]
    vrrp = Keepalived(lab.topology, advert_int=0.1, conntrackd=True)
    run = networking.conntrackd_session(lab, ("gw1", "gw2"), "client", "192.168.2.10", vrrp=vrrp,
                                        before_s=0, after_s=0).run(1)
    row = run.trials.iloc[0]
    assert row["conntrackd"] and row["survived"] and row["break_err"] is None and row["connections"] == 1
    assert row["in backup's cache"]  # asked of the survivor before the power went
    assert row["downtime_s"] == pytest.approx(0.6, abs=0.06)
    assert row["master down timer (detection) (s)"] == pytest.approx(0.3)
    assert row["notify script starts (s)"] == pytest.approx(0.05)
    assert row["connections committed (s)"] == pytest.approx(0.15)
    assert "systemctl start conntrackd && systemctl start keepalived" in lab.hosts["gw1"].runs


@pytest.mark.parametrize("kw, needle", [
    (dict(server_ip="192.168.2.99"), "no host of lab 'gateway' has that address"),
    (dict(port=0), "port=0"),
    (dict(user_timeout_s=0), "user_timeout_s=0"),
    (dict(user_timeout_s=30, timeout_s=20), "must exceed user_timeout_s"),
])
def test_conntrackd_session_argument_checks(kw, needle):
    args = dict(routers=("gw1", "gw2"), client="client", server_ip="192.168.2.10")
    args.update(kw)
    with pytest.raises(ValueError, match=re.escape(needle)):
        networking.conntrackd_session(gateway_lab(), **args)


def test_bond_throughput_reads_iperf3_and_each_slaves_share_of_the_bytes():
    """balance-rr: the tx counters say both slaves sent (2:1 here); iperf3's JSON gives the rate."""
    lab = FakeLab("bonding")
    counters = iter(["100 1000", "2100 2000"])
    report = json.dumps({"end": {"sum_received": {"bits_per_second": 123.45e6},
                                 "sum_sent": {"retransmits": 7}}})

    def bonded(cmd):
        if cmd.startswith("cat /sys/class/net/eth0/statistics/tx_bytes /sys/class/net/eth1/"):
            return 0, next(counters), ""
        if cmd.startswith("iperf3 -c 192.168.1.20 -t 3 -P 2 -J"):
            return 0, report, ""
        return 1, "", f"unexpected: {cmd}"

    lab.hosts["bonded"].answer = bonded
    rr = Bond(mode="balance-rr", arp_interval=100, arp_ip_target=("192.168.1.20",))
    row = networking.bond_throughput(lab, "bonded", rr, "peer", "192.168.1.20")
    assert row == {"mode": "balance-rr", "Mbit/s": 123.5, "retransmits": 7, "seconds": 3,
                   "eth0 share": 0.667, "eth1 share": 0.333}
    assert lab.hosts["peer"].runs[0].startswith("iperf3 -s -1 -D")


def test_bond_throughput_names_the_host_when_iperf3_fails():
    lab = FakeLab("bonding")
    lab.hosts["bonded"].answer = lambda cmd: ((1, "", "iperf3: error - unable to connect to server")
                                              if cmd.startswith("iperf3") else (0, "1 1", ""))
    ab = Bond(mode="active-backup", arp_interval=100, arp_ip_target=("192.168.1.20",))
    with pytest.raises(RuntimeError, match="iperf3 from bonded to 192.168.1.20 .peer. failed .exit 1.: .*unable to connect"):
        networking.bond_throughput(lab, "bonded", ab, "peer", "192.168.1.20")
    with pytest.raises(ValueError, match="streams"):
        networking.bond_throughput(lab, "bonded", ab, "peer", "192.168.1.20", streams=0)


def test_bond_setup_bridges_the_peer_for_active_backup_and_bonds_it_for_balance_rr():
    lab = FakeLab("bonding")
    text = PROC.format(active="eth0", eth0="up", failures=0)
    rr_text = PROC.replace("fault-tolerance (active-backup)", "load balancing (round-robin)").replace(
        "Primary Slave: eth0 (primary_reselect always)\n", "").replace("Currently Active Slave: {active}\n", "")
    mode = {"text": text}
    for h in ("bonded", "peer"):
        lab.hosts[h].answer = lambda cmd: (0, mode["text"], "") if cmd.startswith("cat /proc/net/bonding") else (0, "", "")
    ab = networking.bond_setup(lab, "active-backup", primary="eth0")
    assert (ab.mode, ab.arp_interval, ab.arp_ip_target, ab.address, ab.primary) == (
        "active-backup", 100, ("192.168.1.20",), "192.168.1.10/24", "eth0")
    peer = lab.hosts["peer"].runs
    assert any("type bridge" in r and "addr add 192.168.1.20/24 dev br0" in r for r in peer)
    assert not any("type bond" in r for r in peer)
    mode["text"] = rr_text.format(eth0="up", failures=0)
    lab.hosts["peer"].runs.clear()
    rr = networking.bond_setup(lab, "balance-rr")
    assert rr.mode == "balance-rr" and rr.arp_ip_target == ("192.168.1.20",)
    peer = lab.hosts["peer"].runs
    assert any("ip link del dev br0" in r for r in peer)
    assert any("type bond mode balance-rr arp_interval 100 arp_ip_target 192.168.1.10" in r for r in peer)
    with pytest.raises(ValueError, match="monitor='both'"):
        networking.bond_setup(lab, "active-backup", monitor="both")


def test_bond_setup_uses_miimon_where_the_kernel_has_no_arp_monitor():
    lab = FakeLab("bonding")
    tlb_text = PROC.replace("fault-tolerance (active-backup)", "transmit load balancing")
    for h in ("bonded", "peer"):
        lab.hosts[h].answer = lambda cmd: ((0, tlb_text.format(active="eth0", eth0="up", failures=0), "")
                                           if cmd.startswith("cat /proc/net/bonding") else (0, "", ""))
    tlb = networking.bond_setup(lab, "balance-tlb")
    assert tlb.miimon == 100 and tlb.arp_interval is None


def test_shape_gives_each_cable_a_token_bucket():
    from hautils.services import bonding as b
    lab = FakeLab("bonding")
    b.shape(lab["bonded"], rate_mbit=100)
    assert lab["bonded"].runs[-1].splitlines() == [
        "tc qdisc replace dev eth0 root tbf rate 100mbit burst 129kb latency 50ms",
        "tc qdisc replace dev eth1 root tbf rate 100mbit burst 129kb latency 50ms"]
    b.unshape(lab["bonded"])
    assert "tc qdisc del dev eth1 root" in lab["bonded"].runs[-1]
    with pytest.raises(ValueError, match="rate_mbit"):
        b.shape(lab["bonded"], rate_mbit=0)


def test_bond_mode_pulls_builds_each_mode_and_waits_for_the_peers_bond(icmp, monkeypatch):
    """balance-rr bonds the peer too (a trunk), and its trial waits for that bond to settle;
    balance-tlb gets miimon and so a replug; broadcast expects no outage."""
    lab = xor_lab()
    lab.hosts["peer"].answer = lab.hosts["bonded"].answer
    seen = []
    real = networking.bond_cable_pull

    def spy(lab_, host, bond, peer_ip, **kw):
        seen.append((bond.mode, bond.miimon, bond.arp_interval, kw.get("replug_after_s"), kw.get("outage"),
                     [(h, b.mode) for h, b in kw.get("settle", [])]))
        return real(lab_, host, bond, peer_ip, **{**kw, "sleep": lambda s: None})

    monkeypatch.setattr(networking, "bond_cable_pull", spy)
    runs = networking.bond_mode_pulls(lab, ("balance-rr", "broadcast"), 1, before_s=0, after_s=0)
    assert list(runs) == ["balance-rr", "broadcast"]
    assert seen == [("balance-rr", None, 100, None, None, [("peer", "balance-rr")]),
                    ("broadcast", None, 100, None, False, [("peer", "broadcast")])]
    assert all(r.trials.error.isna().all() for r in runs.values())


def test_wait_ecmp_waits_for_both_next_hops_twice():
    """Right after convergence an end router may route through one path only: pin_flows waits."""
    lab, up = ospf_lab()
    up["pathb"] = False
    naps = []

    def sleep(s):
        naps.append(s)
        if len(naps) == 3:
            up["pathb"] = True

    assert networking.wait_ecmp(lab, sleep=sleep) == {"router1": ["patha", "pathb"], "router2": ["patha", "pathb"]}
    assert len(naps) == 4  # one more reading after the route had both next hops
    up["pathb"] = False
    with pytest.raises(TimeoutError, match="not all of patha, pathb on both ends"):
        networking.wait_ecmp(lab, timeout=0, sleep=lambda s: None)
