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
        topology.load(p, check_memory=False)
    yaml.safe_load((topology.LABS_DIR / "storage.yaml").read_text())
