"""Topology validation: every bad input gives an error naming file, item and field."""

from __future__ import annotations

import copy
import ipaddress

import pytest
import yaml

from hautils import topology
from hautils.errors import TopologyError

GOOD = {
    "name": "t",
    "networks": [{"name": "lan", "subnet": "192.168.103.0/24"}, {"name": "br10", "subnet": "10.10.10.0/24"}],
    "hosts": [
        {"name": "a", "memory": "256M", "disks": [{"name": "d", "size": "1G"}],
         "links": [{"iface": "eth0", "network": "lan", "address": "192.168.103.10/24"},
                   {"iface": "eth1", "network": "br10", "address": "10.10.10.1"}],
         "routes": [{"to": "10.10.0.0/16", "via": "10.10.10.2"}]},
        {"name": "b", "links": [{"iface": "eth0", "network": "lan", "address": "192.168.103.11/24"}]},
    ],
    "virtual_ips": [{"name": "vip", "network": "lan", "address": "192.168.103.36"}],
}


def mutate(fn):
    data = copy.deepcopy(GOOD)
    fn(data)
    return data


def err(data, check_memory=False) -> str:
    with pytest.raises(TopologyError) as e:
        topology.parse(data, source="labs/t.yaml", check_memory=check_memory)
    return str(e.value)


def test_good_topology_parses():
    t = topology.parse(GOOD, source="labs/t.yaml")
    a = t.hosts["a"]
    assert a.memory_mb == 256 and a.disks[0].size_mb == 1024
    assert a.links[1].address == ipaddress.IPv4Interface("10.10.10.1/24")  # prefix from the network
    assert t.hosts["b"].memory_mb == 256  # default
    assert str(a.mgmt.address) == "172.31.255.2/24" and str(t.hosts["b"].mgmt.address) == "172.31.255.3/24"
    assert str(t.mgmt_gateway) == "172.31.255.1/24"
    assert a.mgmt.iface == "mgmt0"
    assert "192.168.103.36\tvip" in t.hosts_file() and "192.168.103.10\ta" in t.hosts_file()


def test_macs_unique_stable_and_locally_administered():
    t1 = topology.parse(GOOD)
    t2 = topology.parse(GOOD)
    macs = [l.mac for h in t1.hosts.values() for l in [*h.links, h.mgmt]]
    assert len(set(macs)) == len(macs)
    assert macs == [l.mac for h in t2.hosts.values() for l in [*h.links, h.mgmt]]
    assert all(m.startswith("52:54:") for m in macs)


@pytest.mark.parametrize("fn, needles", [
    (lambda d: d["hosts"][0]["links"][0].update(network="nope"),
     ["labs/t.yaml", "host 'a' links[0]", "'network'", "unknown network 'nope'", "lan, br10"]),
    (lambda d: d["hosts"][1]["links"][0].update(address="192.168.103.10/24"),
     ["host 'b' links[0]", "'address'", "192.168.103.10 is already used by a eth0"]),
    (lambda d: d["hosts"][0]["links"][0].update(address="192.168.104.10/24"),
     ["host 'a' links[0]", "'address'", "outside network 'lan'"]),
    (lambda d: d["hosts"][0]["links"][0].update(address="192.168.103.10/16"),
     ["host 'a' links[0]", "outside network 'lan'"]),
    (lambda d: d["hosts"][0]["links"][0].update(address="192.168.103.255"),
     ["broadcast"]),
    (lambda d: d["hosts"][0]["links"][0].update(iface="averyveryverylongname"),
     ["host 'a' links[0]", "'iface'", "1..15 characters"]),
    (lambda d: d["networks"][0].update(name="averyveryverylongbridge"),
     ["network 'averyveryverylongbridge'", "'name'", "at most 15"]),
    (lambda d: d["hosts"][0]["links"].append({"iface": "eth0", "network": "lan"}),
     ["host 'a' links[2]", "used twice"]),
    (lambda d: d["hosts"].append(copy.deepcopy(d["hosts"][1])),
     ["host 'b'", "'name'", "duplicate host name"]),
    (lambda d: d["hosts"][0].update(memory="lots"),
     ["host 'a'", "'memory'", "not a size"]),
    (lambda d: d["hosts"][0].update(memory="16M"),
     ["host 'a'", "'memory'", "between 96 and 4096"]),
    (lambda d: d["hosts"][0].update(colour="red"),
     ["host 'a'", "'colour'", "unknown field"]),
    (lambda d: d["hosts"][0]["routes"][0].update(via="10.99.0.1"),
     ["host 'a' routes[0]", "'via'", "on none of this host's networks"]),
    (lambda d: d["hosts"][0]["disks"][0].update(size="big"),
     ["host 'a' disks[0]", "'size'"]),
    (lambda d: d["hosts"][0]["disks"][0].update(content="windows"),
     ["host 'a' disks[0]", "'content'", "'windows'", "container"]),
    (lambda d: d["networks"][1].update(subnet="10.10.10.0/33"),
     ["network 'br10'", "'subnet'"]),
    (lambda d: d["networks"][1].update(subnet="172.31.255.0/25"),
     ["network 'br10'", "overlaps the management network"]),
    (lambda d: d["virtual_ips"][0].update(address="192.168.103.11"),
     ["virtual IP 'vip'", "'address'", "already used by b eth0"]),
    (lambda d: d["virtual_ips"][0].update(network="br10"),
     ["virtual IP 'vip'", "outside network 'br10'"]),
    (lambda d: d.update(name="Bad Name"), ["top level", "'name'"]),
    (lambda d: d["hosts"][0].update(packages="everything"), ["host 'a'", "'packages'"]),
    (lambda d: d["hosts"][1].update(links=[]), ["host 'b'", "'links'"]),
])
def test_bad_input_names_file_item_field(fn, needles):
    msg = err(mutate(fn))
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def test_memory_that_does_not_fit_the_machine(monkeypatch):
    monkeypatch.setattr(topology, "_available_memory_mb", lambda: 1000)
    data = mutate(lambda d: d["hosts"][0].update(memory="4G"))
    msg = err(data, check_memory=True)
    assert "host 'a'" in msg and "'memory'" in msg and "1000 MiB available" in msg


def test_load_by_name_and_unknown_name():
    t = topology.load("storage")
    assert t.source.endswith("labs/storage.yaml")
    with pytest.raises(TopologyError, match="no topology named 'nosuch'; known: .*storage"):
        topology.load("nosuch")


def test_yaml_error_names_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(TopologyError, match="broken.yaml: not valid YAML"):
        topology.load(p)


def test_course_labs_have_the_papers_addresses():
    s = topology.load("storage", check_memory=False)
    assert {h: str(s.hosts[h].address) for h in s.hosts} == {
        "iscsi-server0": "192.168.103.99", "iscsi-server1": "192.168.103.91", "iscsi-client": "192.168.103.93"}
    assert str(s.virtual_ips[0].address) == "192.168.103.36"

    r = topology.load("routing", check_memory=False)
    assert len(r.hosts) == 6 and len(r.networks) == 7
    # Figure 3.3 of the paper: interface -> bridge, address
    fig33 = {
        "host1": {"eth1": ("br10", "10.10.10.2")},
        "router1": {"eth1": ("br10", "10.10.10.1"), "eth2": ("br11", "10.10.11.2"), "eth3": ("br13", "10.10.13.2")},
        "patha": {"eth1": ("br11", "10.10.11.1"), "eth2": ("br12", "10.10.12.1")},
        "pathb": {"eth1": ("br13", "10.10.13.1"), "eth2": ("br14", "10.10.14.1")},
        "router2": {"eth1": ("br12", "10.10.12.2"), "eth2": ("br14", "10.10.14.2"), "eth3": ("br15", "10.10.15.1")},
        "host2": {"eth1": ("br15", "10.10.15.2")},
    }
    for host, ifs in fig33.items():
        got = {l.iface: (l.network, str(l.address.ip)) for l in r.hosts[host].links if l.iface != "eth0"}
        assert got == ifs, host
        assert r.hosts[host].links[0].network == "br0"

    c = topology.load("cluster", check_memory=False)
    assert {h: str(c.hosts[h].address) for h in c.hosts} == {
        "iscsi-server": "192.168.103.97", "node0": "192.168.103.85", "node1": "192.168.103.98",
        "node2": "192.168.103.92"}
    assert all(c.hosts[n].memory_mb >= 384 for n in ("node0", "node1", "node2"))

    sip = topology.load("sip", check_memory=False)
    assert str(sip.hosts["dns-server"].address) == "192.168.103.98"
    assert str(sip.hosts["sip-server0"].address) == "192.168.103.101"
    assert str(sip.hosts["sip-server1"].address) == "192.168.103.102"
    assert len([h for h in sip.hosts.values() if h.role == "sip-client"]) == 2


def test_every_yaml_in_labs_is_valid():
    for p in topology.LABS_DIR.glob("*.yaml"):
        assert not topology.load(p, check_memory=False).figure, f"{p}: a lab, not a drawing"
    yaml.safe_load((topology.LABS_DIR / "storage.yaml").read_text())
    figures = sorted((topology.LABS_DIR / "figures").glob("*.yaml"))
    assert [p.name for p in figures] == ["multipath.yaml", "network-redundancy.yaml"]
    for p in figures:
        assert topology.load(p).figure, f"{p}: a thesis figure must say figure: true"


# --------------------------------------------------------------- figures (figure: true)

FIGURE = {
    "name": "f",
    "figure": True,
    "networks": [{"name": "sw1", "subnet": "192.168.1.0/24"}, {"name": "sw2", "subnet": "192.168.1.0/24"},
                 {"name": "wan"}],
    "hosts": [
        {"name": "pc", "links": [{"iface": "eth0", "network": "sw1", "bond": "bond0"},
                                 {"iface": "eth1", "network": "sw2", "bond": "bond0"}]},
        {"name": "gw", "memory": "4G", "links": [{"iface": "eth0", "network": "sw1", "address": "192.168.1.2"},
                                                 {"iface": "eth1", "network": "wan"}]},
    ],
    "virtual_ips": [{"name": "gw-vip", "network": "sw1", "address": "192.168.1.1"}],
}


def test_a_figure_may_draw_unaddressed_segments_and_bonds(monkeypatch):
    monkeypatch.setattr(topology, "_available_memory_mb", lambda: 100)  # a drawing never needs the memory
    t = topology.parse(FIGURE, source="labs/figures/f.yaml")
    assert t.figure and t.networks["wan"].subnet is None
    assert [l.bond for l in t.hosts["pc"].links] == ["bond0", "bond0"]
    assert t.hosts["gw"].links[1].address is None and t.hosts["gw"].links[1].bond == ""
    assert not topology.parse(GOOD, check_memory=False).figure


@pytest.mark.parametrize("data, needles", [
    # what only a figure may do
    ({**GOOD, "networks": [*GOOD["networks"], {"name": "wan"}]}, ["network 'wan'", "'subnet'", "missing", "figure: true"]),
    (mutate(lambda d: d["hosts"][1]["links"][0].update(bond="bond0")),
     ["host 'b' links[0]", "'bond'", "builds no bonds", "figure: true"]),
    ({**GOOD, "figure": "yes"}, ["top level", "'figure'", "true"]),
    # what a figure may not do either
    ({**FIGURE, "hosts": [*FIGURE["hosts"], {"name": "x", "links": [
        {"iface": "eth0", "network": "wan", "address": "10.0.0.1/24"}]}]},
     ["host 'x' links[0]", "'address'", "network 'wan' has no subnet"]),
    ({**FIGURE, "virtual_ips": [{"name": "v", "network": "wan", "address": "10.0.0.1"}]},
     ["virtual IP 'v'", "'network'", "no subnet"]),
    ({**FIGURE, "hosts": [{"name": "pc", "links": [{"iface": "eth0", "network": "sw1", "bond": "eth0"}]}]},
     ["host 'pc' links[0]", "'bond'", "bond's interface name"]),
    ({**FIGURE, "hosts": [{"name": "pc", "links": [{"iface": "eth0", "network": "sw1", "bond": "bond 0"}]}]},
     ["'bond'"]),
])
def test_figure_only_features_are_checked(data, needles):
    msg = err(data)
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def test_the_lab_engine_refuses_to_boot_a_figure():
    from hautils.errors import LabError
    from hautils.lab import Lab

    with pytest.raises(LabError, match="multipath.yaml is a figure"):
        Lab("figures/multipath")  # found under labs/ like a lab, but only ever drawn
    with pytest.raises(LabError, match="is a figure"):
        Lab(topology.parse(FIGURE))


def test_course_figures_show_what_the_thesis_describes():
    mp = topology.load(topology.LABS_DIR / "figures" / "multipath.yaml")
    assert mp.paper == "section 2.4.4, Figure 2.3"
    client, target = mp.hosts["iscsi-client"], mp.hosts["iscsi-target"]
    # two paths that share nothing: each end has one NIC on each, every NIC addressed (a portal each)
    assert sorted(l.network for l in client.links) == sorted(l.network for l in target.links) == ["path-a", "path-b"]
    assert all(l.address for l in [*client.links, *target.links]) and len(mp.networks) == 2

    nr = topology.load(topology.LABS_DIR / "figures" / "network-redundancy.yaml")
    assert nr.paper == "section 3.1, Figure 3.1"
    for lan in "ab":
        # link level: the PC bonds two NICs, one to each of its LAN's two switches
        pc = nr.hosts[f"pc-{lan}"]
        assert {l.bond for l in pc.links} == {"bond0"} and sorted(l.network for l in pc.links) == [
            f"sw-{lan}1", f"sw-{lan}2"]
        assert nr.networks[f"sw-{lan}1"].subnet == nr.networks[f"sw-{lan}2"].subnet  # one LAN, two switches
        # gateway level: two gateways, one per switch, sharing a virtual address of that LAN
        gws = [nr.hosts[f"gw-{lan}{i}"] for i in (1, 2)]
        assert sorted(l.network for g in gws for l in g.links if l.network.startswith("sw-")) == [
            f"sw-{lan}1", f"sw-{lan}2"]
        (vip,) = [v for v in nr.virtual_ips if v.name == f"gw-{lan}"]
        assert vip.address in nr.networks[f"sw-{lan}1"].subnet
    # routing level: two router-disjoint paths from LAN A's gateways to LAN B's
    def neighbours(host):
        nets = {l.network for l in nr.hosts[host].links}
        return {h.name for h in nr.hosts.values() if h.name != host and nets & {l.network for l in h.links}}
    assert neighbours("path-a") == {"gw-a1", "gw-b1"} and neighbours("path-b") == {"gw-a2", "gw-b2"}
