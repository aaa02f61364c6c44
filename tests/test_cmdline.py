"""The UML command line: disks, NICs with gro=1 and fixed MACs, and the guest's identity."""

from __future__ import annotations

from pathlib import Path

from hautils import topology
from hautils.lab.uml import UMLBackend, machine_id, tap_name

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests hautils-lab"


def backend(name="routing"):
    topo = topology.load(name, check_memory=False)
    return UMLBackend(topo, name, Path("/w"), Path("/img/base.img"), PUB)


def test_router_cmdline():
    b = backend()
    cmd = b.build_cmdline("router1")
    assert cmd[0] == "/usr/bin/linux"
    assert "mem=192M" in cmd and "umid=routing-router1" in cmd
    assert "ubd0=/w/router1.cow,/img/base.img" in cmd and "root=/dev/ubda" in cmd
    vecs = [c for c in cmd if c.startswith("vec")]
    assert len(vecs) == 5  # eth0..eth3 + mgmt0
    assert all(",gro=1," in v and ",mac=52:54:" in v and "transport=tap" in v for v in vecs)
    assert vecs[0].startswith("vec0:transport=tap,ifname=h1-eth0,")
    assert vecs[4].startswith("vec4:transport=tap,ifname=h1-m,")
    spec = b.topo.hosts["router1"]
    assert f"hautils.if=eth2,{spec.links[2].mac},10.10.11.2/24" in cmd
    assert f"hautils.if=mgmt0,{spec.mgmt.mac},172.31.255.3/24" in cmd
    assert "hautils.host=router1" in cmd and "hautils.fwd=1" in cmd
    assert f"systemd.machine_id={machine_id('routing', 'router1')}" in cmd
    assert "hautils.key=ssh-ed25519:AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests" in cmd
    assert "con0=null,fd:1" in cmd
    # the whole line must fit the guest kernel's command line (4096 on UML) with room to spare
    assert len(" ".join(cmd[1:])) < 2048


def test_end_host_routes_and_no_forwarding():
    cmd = backend().build_cmdline("host1")
    assert "hautils.route=10.10.0.0/16,10.10.10.1" in cmd
    assert not any(c.startswith("hautils.fwd") for c in cmd)


def test_extra_disks_are_ubd1_onwards():
    cmd = backend("storage").build_cmdline("iscsi-client")
    assert "ubd1=/w/iscsi-client-raid-a.img" in cmd and "ubd2=/w/iscsi-client-raid-b.img" in cmd
    assert not any(c.startswith("ubd3") for c in cmd)


def test_identities_differ_between_hosts():
    b = backend()
    ids = {machine_id("routing", h) for h in b.vms}
    assert len(ids) == 6 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    macs = [c.split("mac=")[1] for h in b.vms for c in b.build_cmdline(h) if c.startswith("vec")]
    assert len(macs) == len(set(macs))
    taps = [t for h in b.vms for t, _ in b.taps(h).values()]
    assert len(taps) == len(set(taps)) and all(len(t) <= 15 for t in taps)


def test_tap_name_falls_back_when_too_long():
    assert tap_name(3, 0, "eth0") == "h3-eth0"
    assert tap_name(12, 2, "averylongname1") == "h12i2"


def test_a_lab_records_its_topology_as_an_absolute_path(tmp_path, monkeypatch):
    """`hautils lab up labs/x.yaml` then Lab.attach from another directory must find the file."""
    from hautils.lab import _abs_source

    (tmp_path / "labs").mkdir()
    (tmp_path / "labs" / "x.yaml").write_text("name: x\n")
    monkeypatch.chdir(tmp_path)
    assert _abs_source("labs/x.yaml") == str(tmp_path / "labs" / "x.yaml")
    assert _abs_source("<memory>") == "<memory>"  # not a file: kept as it is
