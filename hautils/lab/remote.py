"""Faults on the user's own machines, each one undoing itself.

On the lab's UML VMs a fault is done from outside (a SIGKILL, a tap detached from its bridge).
On a learner's VMs the course has only SSH, so a fault is done from inside, and a fault done
from inside can lock the user out: a NIC taken down may be the one SSH uses, a firewall rule may
drop the notebook's own connection.  So every fault here first arms its own undo on the host, a
systemd transient timer, and only then breaks something: if the notebook dies, the network
still comes back.  And nothing runs on a host whose inventory entry lacks
``allow_destructive: true`` (:meth:`~hautils.lab.inventory.InventoryHost.refuse_fault`).

The functions build the commands (tested without a machine) and run them with ``host.run``.
"""

from __future__ import annotations

import re
import shlex

from .inventory import InventoryError, InventoryHost

__all__ = ["cable_pull", "cable_plug", "cable_pull_command", "partition", "heal", "partition_command",
           "power_off_command"]

_IFACE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
CHAIN = "HAUTILS-CUT"


def _unit(kind: str, name: str) -> str:
    return f"hautils-{kind}-{re.sub(r'[^A-Za-z0-9]', '-', name)}"


def cable_pull_command(iface: str, restore_after_s: float) -> str:
    """Arm ``ip link set IFACE up`` in ``restore_after_s`` seconds (a transient timer), then take
    the link down; prints the epoch time of the pull.

    A systemd timer fires within ``AccuracySec`` of its time, one minute by default (timers are
    coalesced to save wakeups): a replug due after 5 s came 30 s late in the lab, so the timer
    asks for 100 ms.  The timer runs from when it was armed, not from the pull: on a slow guest (CI once: a UML VM
    under load, a 3 s timer) it can fire before the link goes down, and the link then stays down
    for good.  So after the pull the timer must still be waiting; if it is not, the link is put
    back at once and the command fails (exit 3), naming the cause.

    "Still waiting" is the timer's sub-state ``waiting``, not ``systemctl is-active``: a timer is
    also *active* while the service it started runs (sub-state ``running``), and that service may
    already have put the link up before the pull took it down again; the sub-state tells the two
    apart."""
    if not _IFACE.match(iface):
        raise ValueError(f"{iface!r} is not an interface name")
    if not 1 <= restore_after_s <= 3600:
        raise ValueError(f"restore_after_s={restore_after_s}: between 1 s and an hour (the link must come back)")
    unit = _unit("replug", iface)
    return (f"systemctl stop {unit}.timer 2>/dev/null; "
            f"systemd-run --quiet --collect --unit={unit} --timer-property=AccuracySec=100ms --on-active={int(restore_after_s)}s "
            f"/sbin/ip link set {iface} up && "
            f"echo $EPOCHREALTIME && ip link set {iface} down && "
            f"{{ {_still_waiting(unit)} || {{ ip link set {iface} up; "
            f"echo 'the replug timer fired before the pull: {iface} put back; give restore_after_s more time' >&2; "
            f"exit 3; }}; }}")


def cable_pull(host, inv: InventoryHost, iface: str, restore_after_s: float = 60) -> float:
    """Take ``iface`` down on a user's machine; it comes back by itself after
    ``restore_after_s`` (or at :func:`cable_plug`).  Returns the epoch time of the pull."""
    inv.refuse_fault(f"a cable pull of {iface}")
    out = host.run(cable_pull_command(iface, restore_after_s), timeout=60).stdout
    return float(out.split()[0].replace(",", "."))


def _still_waiting(unit: str) -> str:
    """Shell test: the undo timer ``unit`` has not fired yet (see :func:`cable_pull_command`)."""
    return f'[ "$(systemctl show --property=SubState --value {unit}.timer)" = waiting ]'


def cable_plug(host, iface: str) -> float:
    unit = _unit("replug", iface)
    out = host.run(f"echo $EPOCHREALTIME; ip link set {shlex.quote(iface)} up; "
                   f"systemctl stop {unit}.timer 2>/dev/null; true", timeout=60).stdout
    return float(out.split()[0].replace(",", "."))


def partition_command(peers: list[str], restore_after_s: float, keep: tuple[str, ...] = ()) -> str:
    """Firewall rules dropping traffic to and from ``peers`` (addresses), armed to be removed
    after ``restore_after_s``; ``keep``: addresses never dropped (the notebook's own).

    x_tables (``iptables-legacy`` where the system has it, else ``iptables``), not nftables: the
    lab's UML kernel has no nftables for IPv4 (a first version here failed there with "Operation
    not supported"), and legacy rules work beside a machine's own nftables firewall.  As with a
    cable pull, a heal timer that fired before the rules were in place would leave the partition
    for good: it is checked after, and the rules removed at once (exit 3)."""
    if not peers:
        raise ValueError("a partition needs at least one peer address to cut off")
    if not 1 <= restore_after_s <= 3600:
        raise ValueError(f"restore_after_s={restore_after_s}: between 1 s and an hour")
    for a in [*peers, *keep]:
        if not re.fullmatch(r"[0-9.]+(/\d+)?", a):
            raise ValueError(f"{a!r} is not an IPv4 address")
    overlap = set(peers) & set(keep)
    if overlap:
        raise ValueError(f"{', '.join(sorted(overlap))} both cut off and kept")
    unit = _unit("heal", CHAIN)
    rules = [f"$IPT -N {CHAIN} 2>/dev/null || $IPT -F {CHAIN}"]
    rules += [f"$IPT -A {CHAIN} -{d} {a} -j RETURN" for a in keep for d in "sd"]
    rules += [f"$IPT -A {CHAIN} -{d} {a} -j DROP" for a in peers for d in "sd"]
    rules += [f"$IPT -C {c} -j {CHAIN} 2>/dev/null || $IPT -I {c} -j {CHAIN}" for c in ("INPUT", "OUTPUT")]
    return (f"IPT=$(command -v iptables-legacy || command -v iptables); systemctl stop {unit}.timer 2>/dev/null; "
            f"systemd-run --quiet --collect --unit={unit} --timer-property=AccuracySec=100ms "
            f"--on-active={int(restore_after_s)}s /bin/sh -c {shlex.quote(_undo_partition('$(command -v iptables-legacy || command -v iptables)'))} && "
            "echo $EPOCHREALTIME && " + " && ".join(f"{{ {r}; }}" for r in rules)
            + f" && {{ {_still_waiting(unit)} || {{ {_undo_partition('$IPT')}; "
            "echo 'the heal timer fired before the partition was in place: rules removed; give restore_after_s "
            "more time' >&2; exit 3; }; }")


def _undo_partition(ipt: str) -> str:
    return (f"IPT={ipt}; $IPT -D INPUT -j {CHAIN} 2>/dev/null; $IPT -D OUTPUT -j {CHAIN} 2>/dev/null; "
            f"$IPT -F {CHAIN} 2>/dev/null; $IPT -X {CHAIN} 2>/dev/null; true")


def partition(host, inv: InventoryHost, peers: list[str], restore_after_s: float = 120,
              keep: tuple[str, ...] = ()) -> float:
    inv.refuse_fault("a partition")
    out = host.run(partition_command(peers, restore_after_s, keep), timeout=60).stdout
    return float(out.split()[0].replace(",", "."))


def heal(host) -> float:
    unit = _unit("heal", CHAIN)
    out = host.run(f"echo $EPOCHREALTIME; {_undo_partition('$(command -v iptables-legacy || command -v iptables)')}; "
                   f"systemctl stop {unit}.timer 2>/dev/null; true", timeout=60).stdout
    return float(out.split()[0].replace(",", "."))


def power_off_command(inv: InventoryHost, action: str = "off") -> tuple[str, list[str]]:
    """Where and what to run for ``action`` (``off`` or ``on``) with the host's power method:
    ``("hypervisor:NAME", argv)`` for virsh (run on that machine), ``("local", argv)`` for the
    fence agents (run where the notebook runs), ``("self", argv)`` for sysrq (the host powers
    itself off at once, ``echo o > /proc/sysrq-trigger``: no sync, no shutdown, as a power failure;
    nothing can start it again from here, so ``on`` is an error saying to start it by hand)."""
    inv.refuse_fault("a power failure")
    p = inv.power
    if not p:
        raise InventoryError(f"{inv.name}: no power method in the inventory: add power: {{method: virsh|ipmi|"
                             "redfish|sysrq, ...}} to its host vars")
    if action not in ("off", "on"):
        raise ValueError(f"action must be 'off' or 'on', got {action!r}")
    m = p["method"]
    if m == "virsh":
        return f"hypervisor:{p['hypervisor']}", ["virsh", "destroy" if action == "off" else "start", p["domain"]]
    if m in ("ipmi", "redfish"):
        agent = "fence_ipmilan" if m == "ipmi" else "fence_redfish"
        argv = [agent, f"--ip={p['address']}", f"--username={p['username']}", f"--password={p['password']}",
                f"--action={action}"]
        return "local", argv + (["--lanplus"] if m == "ipmi" else ["--ssl-insecure"])
    if action == "on":
        raise InventoryError(f"{inv.name}: power: method sysrq powered the machine off from inside, and nothing "
                             "can start it from here: start it by hand (its hypervisor, console or power button), "
                             f"then lab.wait_booted({inv.name!r}); or give it a virsh, ipmi or redfish power method")
    return "self", ["sh", "-c", "echo 1 > /proc/sys/kernel/sysrq; echo o > /proc/sysrq-trigger"]
