"""hautils.lab.remote: faults on a user's machine arm their own undo first, and are refused
without allow_destructive."""

from __future__ import annotations

import pytest

from hautils.lab import remote
from hautils.lab.inventory import InventoryError, InventoryHost

SAFE = InventoryHost("iscsi-server0", "10.0.0.11")
OPEN = InventoryHost("iscsi-server0", "10.0.0.11", allow_destructive=True,
                     power={"method": "virsh", "hypervisor": "kvm1", "domain": "srv0"})


class Host:
    def __init__(self):
        self.cmds = []

    def run(self, cmd, **kw):
        self.cmds.append(cmd)
        return type("R", (), {"stdout": "1700000000,250000\n"})()


def test_a_cable_pull_arms_the_replug_before_it_pulls():
    cmd = remote.cable_pull_command("eth1", 30)
    arm, pull = cmd.index("systemd-run"), cmd.index("ip link set eth1 down")
    assert arm < pull and "--on-active=30s /sbin/ip link set eth1 up" in cmd
    assert "--timer-property=AccuracySec=100ms" in cmd  # systemd's default lets it fire a minute late
    assert "&&" in cmd[arm:pull]  # no pull when the timer could not be armed
    # a timer that fired before the pull (a slow guest) is caught: the link goes back up, exit 3
    after = cmd[pull:]
    # (the timer's sub-state: it is also "active" while its service runs, the link maybe already up)
    assert '[ "$(systemctl show --property=SubState --value hautils-replug-eth1.timer)" = waiting ] ||' in after
    assert "ip link set eth1 up" in after
    assert "exit 3" in after
    h = Host()
    assert remote.cable_pull(h, OPEN, "eth1", 30) == 1700000000.25
    with pytest.raises(ValueError, match="between 1 s and an hour"):
        remote.cable_pull_command("eth1", 0)
    with pytest.raises(ValueError, match="not an interface"):
        remote.cable_pull_command("eth1; reboot", 10)


def test_every_fault_is_refused_without_allow_destructive():
    h = Host()
    for fault in (lambda: remote.cable_pull(h, SAFE, "eth1"), lambda: remote.partition(h, SAFE, ["10.0.0.12"]),
                  lambda: remote.power_off_command(SAFE)):
        with pytest.raises(InventoryError, match=r"iscsi-server0: refusing .*allow_destructive: true"):
            fault()
    assert h.cmds == []  # nothing ran


def test_a_partition_keeps_the_notebooks_address_and_expires():
    cmd = remote.partition_command(["192.168.103.91", "192.168.103.93"], 120, keep=("192.168.103.1",))
    arm = cmd.index("systemd-run")
    assert arm < cmd.index("-j DROP") and "--on-active=120s /bin/sh -c" in cmd
    assert "--timer-property=AccuracySec=100ms" in cmd
    assert "-D INPUT -j HAUTILS-CUT" in cmd[arm:cmd.index("echo $EPOCHREALTIME")]  # the undo is what is armed
    assert cmd.index("-s 192.168.103.1 -j RETURN") < cmd.index("-s 192.168.103.91 -j DROP")
    assert "-d 192.168.103.93 -j DROP" in cmd and cmd.count("-I ") == 2  # INPUT and OUTPUT
    # a heal timer that fired before the rules were in (a slow guest) is caught: rules removed, exit 3
    after = cmd[cmd.index("-I OUTPUT -j HAUTILS-CUT"):]
    assert "SubState --value hautils-heal-HAUTILS-CUT.timer)\" = waiting ] ||" in after
    assert "-X HAUTILS-CUT" in after and "exit 3" in after
    with pytest.raises(ValueError, match="both cut off and kept"):
        remote.partition_command(["10.0.0.1"], 10, keep=("10.0.0.1",))
    with pytest.raises(ValueError, match="not an IPv4 address"):
        remote.partition_command(["10.0.0.1; reboot"], 10)


def test_power_methods_give_where_and_what():
    assert remote.power_off_command(OPEN) == ("hypervisor:kvm1", ["virsh", "destroy", "srv0"])
    assert remote.power_off_command(OPEN, "on") == ("hypervisor:kvm1", ["virsh", "start", "srv0"])
    ipmi = InventoryHost("n", "a", allow_destructive=True,
                         power={"method": "ipmi", "address": "10.9.0.5", "username": "admin", "password": "pw"})
    where, argv = remote.power_off_command(ipmi)
    assert where == "local" and argv[0] == "fence_ipmilan" and "--action=off" in argv and "--lanplus" in argv
    crash = InventoryHost("n", "a", allow_destructive=True, power={"method": "sysrq"})
    assert remote.power_off_command(crash)[0] == "self" and "sysrq-trigger" in remote.power_off_command(crash)[1][-1]
    with pytest.raises(InventoryError, match="n: no power method"):
        remote.power_off_command(InventoryHost("n", "a", allow_destructive=True))
