"""hautils.lab.preflight on canned reports: what a user's machine lacks, each with its fix."""

from __future__ import annotations

import pytest

from hautils import topology
from hautils.lab import preflight

STORAGE = topology.load("storage", check_memory=False)
ROUTING = topology.load("routing", check_memory=False)

OK_STORAGE_SERVER0 = """## os
debian 12
## packages
""" + "\n".join(f"{p} installed" for p in preflight.NEEDS["base"][0] + preflight.NEEDS["storage"][0]) + """
## module drbd
insmod /lib/modules/6.1.0/updates/drbd.ko
rc=0
## module iscsi_tcp
loaded
## module raid1
builtin raid1
rc=0
## module sch_netem
insmod /lib/modules/6.1.0/kernel/net/sched/sch_netem.ko
rc=0
## links
1: lo    inet 127.0.0.1/8 scope host lo
2: eth0    inet 192.168.103.99/24 brd 192.168.103.255 scope global eth0
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN
2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP
"""


def findings(report: str, host: str = "iscsi-server0", topo=STORAGE):
    seen = []

    def run(script):
        seen.append(script)
        return report

    out = preflight.check_host(None, topo.hosts[host], run=run)
    assert len(seen) == 1  # one command per host
    return {f.check: f for f in out}


def test_a_host_with_everything_passes():
    f = findings(OK_STORAGE_SERVER0)
    assert all(x.ok for x in f.values()), [x for x in f.values() if not x.ok]
    assert {"release", "package drbd-utils", "module drbd", "interface eth0", "address eth0"} <= set(f)
    preflight.require(list(f.values()))


def test_each_missing_thing_is_a_row_with_its_fix():
    report = (OK_STORAGE_SERVER0
              .replace("debian 12", "ubuntu 20.04")
              .replace("tgt installed", "tgt not-installed")
              .replace("heartbeat installed\n", "")
              .replace("insmod /lib/modules/6.1.0/updates/drbd.ko\nrc=0", "install /bin/false\nrc=0")
              .replace("builtin raid1\nrc=0", "modprobe: FATAL: Module raid1 not found in directory /lib/modules/6.1\nrc=1")
              .replace("192.168.103.99/24", "10.0.0.11/24"))
    f = findings(report)
    bad = {k: v for k, v in f.items() if not v.ok}
    assert set(bad) == {"release", "package tgt", "package heartbeat", "module drbd", "module raid1", "address eth0"}
    assert "Ubuntu 22.04" in bad["release"].fix and bad["release"].found == "ubuntu 20.04"
    assert bad["package tgt"].found == "not-installed" and "apt-get install tgt" in bad["package tgt"].fix
    assert bad["package heartbeat"].found == "not installed"
    assert "blocked by `install drbd /bin/false`" in bad["module drbd"].found and "/etc/modprobe.d" in bad["module drbd"].fix
    assert "not found" in bad["module raid1"].found and "linux-modules-extra" in bad["module raid1"].fix
    assert bad["address eth0"].found == "10.0.0.11/24" and "192.168.103.99/24" in bad["address eth0"].fix
    with pytest.raises(preflight.PreflightError, match=r"6 requirement\(s\) missing on 1 host\(s\):\n  iscsi-server0: release"):
        preflight.require(list(f.values()))


def test_a_missing_nic_is_named_with_its_network():
    report = "## os\ndebian 13\n## packages\n## links\n1: lo: <LOOPBACK> mtu 65536\n2: eth0: <UP> mtu 1500\n"
    f = findings(report, "router1", ROUTING)
    assert f["release"].ok  # newer is fine
    assert not f["interface eth2"].ok and "network br11" in f["interface eth2"].fix
    assert not f["address eth0"].ok and f["address eth0"].found == "none"
    assert not f["module bonding"].ok  # no section: the command did not get that far
    assert preflight.table(list(f.values()), only_missing=True).ok.eq(False).all()


def test_the_script_only_looks():
    script = preflight._script(["tgt", "drbd-utils"], ["drbd"])
    assert "modprobe -n -v drbd" in script and "dpkg-query -W" in script
    for verb in ("apt-get", "modprobe drbd", "rm ", "systemctl", "ip addr add"):
        assert verb not in script.replace("modprobe -n -v drbd", "")
