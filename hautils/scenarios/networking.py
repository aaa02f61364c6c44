"""Chapter 3's failure scenarios, one per level of network redundancy (the paper's section 3.1).

Each function returns an :class:`~hautils.experiment.Experiment`; ``.run(trials)`` repeats it::

    pull = networking.bond_cable_pull(lab, "bonded", bond, "192.168.1.20").run(trials)
    vrrp = networking.vrrp_power_failure(lab, ("gw1", "gw2"), "client", "192.168.2.10", vrrp=ka).run(trials)
    nat = networking.conntrackd_session(lab, ("gw1", "gw2"), "client", "192.168.2.10", vrrp=ka).run(trials)
    seq = networking.ospf_sequence(lab, frr, first=networking.flow_path(lab)["out"])
    stop_a = seq["ospf-stop-pathA"].run(trials)

Every probe is ICMP echo at 100 Hz (``hz=1`` gives the paper's ``ping``), except the NAT
session's: one TCP connection that echoes a line 20 times a second (:func:`hautils.probes.session`).  A UML guest's
``ping -i 0.01`` really sends every 11-29 ms and slows while replies are missing, so nothing
here multiplies lost probes by the interval: the downtime runs from the last reply before the
gap to the first reply after it, from the replies' timestamps (:mod:`hautils.analysis`).  An
ICMP probe that times out (1 s) is a failure already, so ``stall_s`` is off.

What "recovered" means differs per level, and is written here once:

* link (bonding): the peer answers again; then the cable goes back in and the bond is back on
  its primary slave with every link up;
* gateway (VRRP): the client reaches the server again (through the same TCP connection, or a
  new one after a break, for the NAT session); then the old master boots, and the pair
  settles with the master the configuration expects (the old one with preempt, the survivor
  with nopreempt);
* routing (OSPF): the routers at both ends of the flow route without (or again with) the
  router that failed.

Phases compare the fault (the machine's clock), journal lines (a router's or the bonded
host's clock) and the probe's answers (the client's clock); guests' clocks were seen up to
14 ms apart, so each experiment measures the offsets (:meth:`hautils.lab.Lab.clock_offsets`)
and puts everything on the machine's clock first.  Kernel lines (bonding) carry the kernel's
own time, to its 10 ms tick in UML.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .. import analysis, probes
from ..experiment import Experiment, Trial
from ..services.bonding import PRIMARY_MODES, Bond, bridge, mode_number
from ..services.keepalived import CONNTRACKD_CONF, VRRP_MARKS, holders, wait_master

__all__ = ["bond_cable_pull", "bond_marks", "bond_throughput", "bond_setup", "bond_mode_pulls", "BRIDGED_PEER_MODES", "vrrp_power_failure", "conntrackd_session", "CONNTRACKD_MARKS",
           "ospf_event", "ospf_sequence",
           "ospf_marks", "adjacency_drops", "flow_path", "flow_paths", "wait_ecmp", "flow_sources", "crossing_source", "pin_flows",
           "ospf_paper_test", "route_nexthops", "OSPF_FLOW", "OSPF_SEQUENCE", "ADJ_DOWN", "ADJ_FULL",
           "VRRP_MARKS"]

# -- link level: a pulled cable under a bond ------------------------------------------------------


REPLUG_EVENT = "cable plugged back"
REPLUG_MARK = rf"^hautils: \S+ {REPLUG_EVENT}$"


def bond_marks(bond: str = "bond0", iface: str = "eth0") -> dict[str, str]:
    """The bonding driver's kernel messages (drivers/net/bonding/bond_main.c, Linux 6.1) that end
    the phases of a failover: the link monitor gives up on the pulled slave, then another slave
    becomes the active one.  E.g. ``bond0: (slave eth0): link status definitely down, disabling
    slave`` (active-backup's monitors) or ``bond0: (slave eth0): interface is now down`` (the ARP
    monitor of the load-balancing modes, bond_loadbalance_arp_mon) and ``bond0: (slave eth1):
    making interface the new active one`` (modes with an active slave only)."""
    b, i = re.escape(bond), re.escape(iface)
    return {"link monitor gives up": rf"{b}: \(slave {i}\): (link status definitely down|interface is now down)",
            "new active slave": rf"{b}: \(slave \S+\): making interface the new active one"}


def _names(lab) -> list[str]:
    return list(lab.topology.hosts)


def _host(lab, name: str, what: str) -> str:
    """The topology's spelling of host ``name`` (case-insensitive, as ``Lab.resolve``)."""
    match = [h for h in _names(lab) if h.lower() == str(name).lower()]
    if not match:
        raise ValueError(f"{what}={name!r}: no such host in lab {lab.topology.name!r}; "
                         f"hosts: {', '.join(_names(lab))}")
    return match[0]


def _ipv4(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise ValueError(f"{what}={value!r}: an IPv4 address") from None


def _positive(value: Any, what: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what}={value!r}: a positive number")


def _report(lab, hosts: Sequence[str], commands: Sequence[str]) -> str:
    out = []
    for name in hosts:
        for cmd in commands:
            try:
                r = lab[name].run(cmd, check=False, timeout=30)
                text = (r.stdout + r.stderr).rstrip()
            except Exception as e:  # noqa: BLE001 - a powered-off host says so
                text = f"({type(e).__name__}: {e})"
            out.append(f"### {name}: {cmd}\n{text}")
    return "\n".join(out)


def bond_cable_pull(lab, host: str, bond: Bond, peer_ip: str, iface: str | None = None, *, hz: float = 100,
                    probe_host: str | None = None, target: str | None = None,
                    replug_after_s: float | None = None, outage: bool | None = None,
                    settle: Sequence[tuple[str, Bond]] = (), before_s: float = 2, after_s: float = 2,
                    timeout_s: float = 60, settle_timeout_s: float = 60, flap_s: float | None = None,
                    label: str | None = None, sleep: Callable[[float], None] = time.sleep,
                    now: Callable[[], float] = time.time) -> Experiment:
    """Pull the cable of ``iface`` (default: the bond's primary, else its first slave) on the
    bonded ``host`` while ICMP echoes go to the peer (``peer_ip``) at ``hz``; then plug it back
    and wait until the bond is on its primary again with every link up.

    ``probe_host``/``target``: probe from elsewhere (e.g. from the peer to the bond's address).
    ``replug_after_s``: plug the cable back that many seconds after the pull, before waiting for
    the peer: for a link monitor that never notices the pull (``miimon`` on UML NICs, which
    always report carrier), whose outage then lasts until the cable is back.  ``outage``: the
    pull interrupts the traffic until the monitor acts (default: in the modes with an active
    slave), so the trial waits for the probe's recovery; ``False`` (default in balance-rr,
    balance-xor, broadcast, 802.3ad): it may lose a share of the packets, or none (broadcast; an
    xor hash that put the peer on the other slave: seen in the lab), so the trial waits until
    the monitor has taken the pulled slave down instead of for an outage that may never come.
    ``settle``: more ``(host, Bond)`` pairs to wait for before the next trial, such as the LACP
    partner's bond on the peer.  ``flap_s``: answers that come back less than this long before
    the next loss do not end the outage (default 0.1 s without an active slave, where
    balance-rr loses every other packet until the monitor acts: the outage is that whole
    stretch; 0 with one, where the first answer ends it).

    Row: ``mode``, ``monitor``, ``active before``, ``active after``, ``monitor noticed`` (the
    pulled slave's link failure count rose), ``downtime_s``, ``lost_probes`` (of the longest
    outage), ``stalls_s``, ``lost after pull`` and ``loss window_s`` (every failed probe after
    the pull, and from the pull to the last of them: balance-rr loses every other packet, so no
    single outage tells its loss) and the phases from the kernel log (:func:`bond_marks`)."""
    if not isinstance(bond, Bond):
        raise TypeError(f"bond={bond!r}: a hautils.services.bonding.Bond (the one applied on {host})")
    host = _host(lab, host, "host")
    iface = iface or bond.primary or bond.slaves[0]
    if iface not in bond.slaves:
        raise ValueError(f"iface={iface!r} is not a slave of {bond.name} ({', '.join(bond.slaves)})")
    nics = [l.iface for l in lab.topology.hosts[host].links]
    if iface not in nics:
        raise ValueError(f"iface={iface!r}: host {host} has no such NIC in the topology ({', '.join(nics)}): "
                         "there is no cable to pull")
    peer_ip = _ipv4(peer_ip, "peer_ip")
    probe_host = _host(lab, probe_host, "probe_host") if probe_host is not None else host
    if probe_host != host and target is None:
        raise ValueError(f"probe_host={probe_host!r} needs target= (the bond's address, as seen from there)")
    target = _ipv4(target, "target") if target is not None else peer_ip
    _positive(hz, "hz")
    _positive(replug_after_s, "replug_after_s", allow_none=True)
    if outage is False and replug_after_s is not None:
        raise ValueError("replug_after_s is for a pull that causes an outage; outage=False expects none")
    if outage is None:
        outage = bond.number in PRIMARY_MODES
    if flap_s is None:
        flap_s = 0.0 if bond.number in PRIMARY_MODES else 0.1
    elif isinstance(flap_s, bool) or not isinstance(flap_s, (int, float)) or flap_s < 0:
        raise ValueError(f"flap_s={flap_s!r}: seconds, 0 or more")
    settle = [(_host(lab, h, "settle"), b) for h, b in settle]
    if not all(isinstance(b, Bond) for _, b in settle):
        raise TypeError("settle: (host, Bond) pairs")
    marks = bond_marks(bond.name, iface)
    if replug_after_s is not None:  # the monitor may never give up: the replug ends the outage
        marks = {**marks, "cable plugged back": REPLUG_MARK}
    monitor = (f"miimon {bond.miimon} ms" if bond.miimon is not None
               else f"arp_interval {bond.arp_interval} ms, arp_validate {bond.arp_validate or 'none'}")
    name = label or f"{bond.mode} cable pull ({monitor.split(',')[0]})"
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-")

    def prepare(t: Trial) -> None:
        h = lab[host]
        st = bond.state(h)
        if outage and bond.number in PRIMARY_MODES and st.active != iface:
            raise RuntimeError(f"{bond.name} on {host}: the active slave is {st.active}, not {iface}: pulling "
                               f"{iface} would interrupt nothing (pass iface={st.active!r}, or let the bond "
                               "settle on its primary first)")
        t.set(before=st, replugged=False)
        t.row.update({"mode": bond.mode, "monitor": monitor, "pulled": iface, "active before": st.active})

    def recovered(t: Trial) -> None:
        if replug_after_s is not None:
            sleep(replug_after_s)
            # the time before the call: the plug's own stamp is taken after the netlink call returns,
            # and the first echo through the replugged cable was seen to arrive before it
            before = now()
            lab.cable_plug(host, iface)
            t.event(before, f"hautils: {iface} {REPLUG_EVENT}")
            t.replugged = True
        if outage:
            t.probe.wait_recovered(t.fault_time, timeout=timeout_s, max_latency=0.5)
        elif not t.replugged:
            wait_slave_down(t)

    def wait_slave_down(t: Trial) -> None:
        """No outage to wait for: until the link monitor has taken the pulled slave down."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = bond.state(lab[host])
            if iface in st.slaves and st.slaves[iface].mii_status != "up":
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{bond.name} on {host}: {iface} still up {timeout_s:g} s after its cable was "
                                   f"pulled: the link monitor ({monitor}) did not notice")
            sleep(0.2)

    def lost(t: Trial) -> dict[str, Any]:
        log = t.log
        failed = log[(log["sent"] >= t.fault_time) & ~log["ok"]]
        window = float(failed["sent"].max() - t.fault_time) if len(failed) else 0.0
        return {"lost after pull": int(len(failed)), "loss window_s": round(window, 3)}

    def during(t: Trial) -> None:
        st = bond.state(lab[host])
        before = t.before.slaves.get(iface)
        after = st.slaves.get(iface)
        t.row["active after"] = st.active
        t.row["monitor noticed"] = bool(before and after and after.link_failure_count > before.link_failure_count)

    def restore(t: Trial) -> None:
        if not t.replugged:
            lab.cable_plug(host, iface)
        bond.wait_settled(lab[host], timeout=settle_timeout_s)
        for other, b in settle:
            b.wait_settled(lab[other], timeout=settle_timeout_s)

    def diagnose(t: Trial, exc: BaseException) -> str:
        since = (t.fault_time or time.time()) - 5
        return _report(lab, [host], [f"cat /proc/net/bonding/{bond.name}",
                                     f"journalctl -k -o short-precise --no-pager --since=@{since:.3f} | tail -n 40",
                                     "ip -s -o link show"])

    return Experiment(
        name, prepare=prepare,
        probe=lambda t: probes.icmp(lab[probe_host], target, hz=hz, name=f"{slug}-{t.index}"),
        fault=lambda t: lab.cable_pull(host, iface), recovered=recovered, verify=lost,
        during=during, restore=restore, marks=marks, journals=lambda t: [lab[host]],
        clock_offsets=lambda t: lab.clock_offsets({host, probe_host}),
        final_phase="peer answers again", diagnose=diagnose, before_s=before_s, after_s=after_s,
        timeout_s=timeout_s, stall_s=None, settle=flap_s)


#: How each mode's peer is wired in labs/bonding.yaml: the modes that need no switch support see
#: two switches joined at layer 2 (the peer bridges its NICs); the others need the switch side
#: to group the ports, which the peer does with a bond of the same mode (a static trunk).
BRIDGED_PEER_MODES = {1, 5, 6}


def bond_setup(lab, mode: str | int, *, host: str = "bonded", peer: str = "peer", interval_ms: int = 100,
               monitor: str | None = None, timeout_s: float = 60, **options: Any) -> Bond:
    """Build ``mode`` on the bonding lab: the peer's side first (a bridge for the modes that need
    no switch support, :data:`BRIDGED_PEER_MODES`; a bond of the same mode for the others), then
    ``host``'s bond with the address of its first NIC, and wait until both have settled.

    ``monitor``: ``"arp"`` (every ``interval_ms``, to the peer's address; the default where the
    kernel has an ARP monitor) or ``"miimon"`` (the default in balance-tlb, balance-alb and
    802.3ad, which refuse the ARP monitor).  ``options``: more :class:`Bond` fields for the
    host's bond (``primary``, ``arp_validate``...).  Returns the host's :class:`Bond`."""
    return _bond_pair(lab, mode, host=host, peer=peer, interval_ms=interval_ms, monitor=monitor,
                      timeout_s=timeout_s, **options)[0]


def _bond_pair(lab, mode: str | int, *, host: str, peer: str, interval_ms: int, monitor: str | None,
               timeout_s: float, **options: Any) -> tuple[Bond, Bond | None]:
    """:func:`bond_setup`, returning the peer's bond too (None when the peer bridges)."""
    host, peer = _host(lab, host, "host"), _host(lab, peer, "peer")
    number = mode_number(mode)
    addr = {h: next((str(l.address) for l in lab.topology.hosts[h].links if l.address is not None), None)
            for h in (host, peer)}
    if None in addr.values():
        raise ValueError(f"{lab.topology.source}: {host} and {peer} need an address on a NIC (it moves to the "
                         "bond or bridge)")
    ip = {h: a.split("/")[0] for h, a in addr.items()}
    if monitor is None:
        monitor = "miimon" if number in {4, 5, 6} else "arp"
    if monitor not in ("arp", "miimon"):
        raise ValueError(f"monitor={monitor!r}: 'arp' or 'miimon'")

    def watch(target: str) -> dict[str, Any]:
        if monitor == "miimon":
            return {"miimon": interval_ms}
        return {"arp_interval": interval_ms, "arp_ip_target": (target,)}

    p = lab[peer]
    peer_bond = None
    if number in BRIDGED_PEER_MODES:
        p.run("if [ -e /sys/class/net/bond0 ]; then ip link del dev bond0; fi", timeout=30)
        bridge(p, address=addr[peer])
    else:
        p.run("if [ -e /sys/class/net/br0 ]; then ip link del dev br0; fi", timeout=30)
        peer_bond = Bond(mode=mode, address=addr[peer], **watch(ip[host]))
        peer_bond.apply(p, timeout=timeout_s)
    bond = Bond(mode=mode, address=addr[host], **watch(ip[peer]), **options)
    bond.apply(lab[host], timeout=timeout_s)
    bond.wait_settled(lab[host], timeout=timeout_s)
    if peer_bond is not None:
        peer_bond.wait_settled(p, timeout=timeout_s)
    return bond, peer_bond


def bond_mode_pulls(lab, modes: Sequence[str | int] = ("balance-rr", "active-backup", "balance-xor", "broadcast",
                                                       "balance-tlb"), trials: int = 1, *,
                    host: str = "bonded", peer: str = "peer", replug_after_s: float = 3,
                    progress: bool = False, **kw: Any) -> dict[str, Any]:
    """Pull the first slave's cable once per trial in each of ``modes`` (built by
    :func:`bond_setup`: the ARP monitor where the kernel has one, miimon where it has not) while
    ``host`` pings the peer at 100 Hz.  With miimon the pull goes unnoticed on UML NICs, so the
    cable is plugged back after ``replug_after_s``.  ``kw``: more :func:`bond_cable_pull`
    options.  Returns ``{mode: ExperimentRun}`` in the order given."""
    peer_ip = next(str(l.address.ip) for l in lab.topology.hosts[_host(lab, peer, "peer")].links
                   if l.address is not None)
    runs: dict[str, Any] = {}
    for mode in modes:
        bond, peer_bond = _bond_pair(lab, mode, host=host, peer=peer, interval_ms=100, monitor=None, timeout_s=60)
        extra: dict[str, Any] = {}
        if bond.miimon is not None:
            extra["replug_after_s"] = replug_after_s
        if bond.number == 3:  # broadcast: every packet goes both ways, the pull may cost nothing
            extra["outage"] = False
        settle = [(peer, peer_bond)] if peer_bond is not None else []
        runs[bond.mode] = bond_cable_pull(lab, host, bond, peer_ip, settle=settle, **{**extra, **kw}).run(
            trials, progress=progress)
    return runs


def bond_throughput(lab, host: str, bond: Bond, peer: str, peer_ip: str, *, seconds: float = 3,
                    streams: int = 2, timeout_s: float = 60) -> dict[str, Any]:
    """TCP throughput from the bonded ``host`` to ``peer`` (``iperf3 -c peer_ip -t seconds -P
    streams``, the peer's one-shot server ``iperf3 -s -1``), and how the bytes left: each
    slave's share of the transmitted bytes, from its ``tx_bytes`` counter around the run.

    The share is the evidence of what a mode does with two links up: active-backup sends
    everything through one, balance-rr alternates packets over both.  Whether that buys speed
    depends on what limits the transfer; the result says what this lab measured, nothing more.

    Returns ``mode``, ``Mbit/s`` (received), ``retransmits``, ``<slave> share`` per slave and
    ``seconds``; raises naming the host and iperf3's complaint if the run fails."""
    h, p = lab[_host(lab, host, "host")], lab[_host(lab, peer, "peer")]
    peer_ip = _ipv4(peer_ip, "peer_ip")
    _positive(seconds, "seconds")
    if isinstance(streams, bool) or not isinstance(streams, int) or not 1 <= streams <= 16:
        raise ValueError(f"streams={streams!r}: 1 to 16 parallel TCP streams")
    counters = " ".join(f"/sys/class/net/{s}/statistics/tx_bytes" for s in bond.slaves)
    p.run("iperf3 -s -1 -D >/dev/null 2>&1; sleep 0.3", timeout=30)
    before = [int(x) for x in h.run(f"cat {counters}", timeout=30).stdout.split()]
    res = h.run(f"iperf3 -c {peer_ip} -t {seconds:g} -P {streams} -J", check=False, timeout=timeout_s)
    after = [int(x) for x in h.run(f"cat {counters}", timeout=30).stdout.split()]
    try:
        end = json.loads(res.stdout)["end"]
        bps = float(end["sum_received"]["bits_per_second"])
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(f"iperf3 from {host} to {peer_ip} ({peer}) failed (exit {res.exit_status}): "
                           f"{(res.stderr or res.stdout).strip()[-400:]}") from None
    sent = [a - b for a, b in zip(after, before)]
    total = sum(sent) or 1
    row: dict[str, Any] = {"mode": bond.mode, "Mbit/s": round(bps / 1e6, 1),
                           "retransmits": end.get("sum_sent", {}).get("retransmits"), "seconds": seconds}
    row.update({f"{s} share": round(n / total, 3) for s, n in zip(bond.slaves, sent)})
    return row


# -- gateway level: the VRRP master loses power ---------------------------------------------------


def vrrp_power_failure(lab, routers: Sequence[str], client: str, target_ip: str, *, vrrp=None,
                       vips: Sequence[str] | None = None, preempt: bool | None = None,
                       services: Sequence[str] | None = None, after_boot: Callable[[Any], Any] | None = None,
                       hz: float = 100, before_s: float = 2, after_s: float = 2, timeout_s: float = 60,
                       settle_timeout_s: float = 300, watch_return: bool = True,
                       label: str | None = None, sleep: Callable[[float], None] = time.sleep) -> Experiment:
    """Cut the power of the VRRP master (the router holding the virtual addresses) while
    ``client`` pings ``target_ip`` (a host behind the gateway) at ``hz``; then boot it again and
    wait until the pair has settled: the old master holds the addresses again with preempt, the
    survivor keeps them with nopreempt.

    ``vrrp``: the :class:`~hautils.services.keepalived.Keepalived` in use (its addresses, its
    preempt setting, its failover bound); without it give ``vips`` (default: every virtual IP of
    the topology) and ``preempt``.  ``services``: the units to (re)start on the returning router
    once it boots, in order (default: keepalived, after conntrackd when the notify scripts drive
    conntrackd); they are enabled, so this only makes sure.  ``after_boot(host)``: anything else
    the returning router needs that a reboot loses (the NAT rules load at boot by themselves,
    :class:`~hautils.services.keepalived.Nat`).  ``watch_return``: keep a second probe running
    from the power-on until the pair has settled (and ``after_s`` more), to measure what the
    return costs: with preempt the old master takes the addresses back, a second interruption.

    Row: ``from``, ``to``, ``advert_int`` and ``bound (s)`` (RFC 5798's master down interval)
    with ``vrrp``, ``master after return``, ``return downtime_s`` and ``return lost`` (the
    longest outage after the power-on, 0 if none: the cost of preemption), ``downtime_s``,
    ``lost_probes``, ``stalls_s`` and the phases from the survivor's keepalived log (:data:`~hautils.services.keepalived.VRRP_MARKS`)."""
    routers = [_host(lab, r, "routers") for r in routers]
    if len(routers) != 2 or routers[0] == routers[1]:
        raise ValueError(f"routers={routers!r}: the two routers of the VRRP pair")
    client = _host(lab, client, "client")
    if client in routers:
        raise ValueError(f"client={client!r} is one of the routers: it must reach the target through them")
    target_ip = _ipv4(target_ip, "target_ip")
    _positive(hz, "hz")
    if vrrp is not None:
        if set(vrrp.routers) != set(routers):
            raise ValueError(f"vrrp is configured for {list(vrrp.routers)}, not {routers}")
        vips = list(vrrp.vips) if vips is None else vips
        preempt = vrrp.preempt if preempt is None else preempt
        conntrackd = bool(vrrp.conntrackd)
    else:
        conntrackd = False
    if vips is None:
        vips = [str(v.address) for v in lab.topology.virtual_ips]
    vips = [_ipv4(v, "vips") for v in vips]
    if not vips:
        raise ValueError("vips: no virtual address to follow (the topology has no virtual_ips)")
    if target_ip in vips:
        raise ValueError(f"target_ip={target_ip} is a virtual address of the pair: ping a host behind the "
                         "gateway, so that the probe measures forwarding, not the address itself")
    preempt = True if preempt is None else bool(preempt)
    services = list(services) if services is not None else (["conntrackd", "keepalived"] if conntrackd
                                                            else ["keepalived"])
    for s in services:
        if not re.fullmatch(r"[A-Za-z0-9@._-]+", s):
            raise ValueError(f"services: {s!r} is not a systemd unit name")
    stable_s = vrrp.settle_s() if vrrp is not None else 3.0
    name = label or ("VRRP power failure" + (f" (advert_int {vrrp.advert_int:g} s)" if vrrp is not None else ""))
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-")

    def pair():
        return [lab[r] for r in routers]

    def prepare(t: Trial) -> None:
        master = wait_master(pair(), vips, timeout=settle_timeout_s)
        backup = routers[1] if master == routers[0] else routers[0]
        lab[backup].run("systemctl is-active --quiet keepalived", timeout=30)  # else nobody takes over
        t.set(master=lab[master], backup=lab[backup])
        t.row.update({"from": master, "to": backup})
        if vrrp is not None:
            t.row.update({"advert_int": vrrp.advert_int, "bound (s)": round(vrrp.failover_bound(), 3)})

    def restore(t: Trial) -> None:
        watch = probes.icmp(lab[client], target_ip, hz=hz, name=f"{slug}-{t.index}-return") if watch_return else None
        if watch is not None:
            watch.start()
        try:
            on = lab.power_on(t.master.name)
            old = lab[t.master.name]
            if after_boot is not None:
                after_boot(old)
            old.run(" && ".join(f"systemctl start {s}" for s in services), timeout=120)
            old.wait_for("systemctl is-active --quiet keepalived", timeout=120)
            expected = t.master.name if preempt else t.backup.name
            t.row["master after return"] = wait_master(pair(), vips, expected=expected,
                                                       timeout=settle_timeout_s, stable_s=stable_s)
            if watch is not None:
                sleep(after_s)
        finally:
            if watch is not None and watch.running():
                watch.stop()
        if watch is not None:
            log = watch.log()
            t.logs["return"] = log
            d = analysis.downtime(log, on, pick="longest", allow_open=True)
            t.row.update({"return downtime_s": d.downtime_s, "return lost": d.lost_probes})

    def diagnose(t: Trial, exc: BaseException) -> str:
        since = (t.fault_time or time.time()) - 5
        held = holders(pair(), vips)
        return f"virtual addresses held: {held}\n" + _report(
            lab, routers, ["systemctl is-active keepalived conntrackd",
                           f"journalctl -o short-precise --no-pager --since=@{since:.3f} -t Keepalived_vrrp "
                           "-t Keepalived -t hautils-conntrackd | tail -n 40"])

    return Experiment(
        name, prepare=prepare,
        probe=lambda t: probes.icmp(lab[client], target_ip, hz=hz, name=f"{slug}-{t.index}"),
        fault=lambda t: lab.power_off(t.master.name), restore=restore, marks=VRRP_MARKS,
        journals=lambda t: [t.backup], clock_offsets=lambda t: lab.clock_offsets([client, t.backup.name]), final_phase="client reaches the server", diagnose=diagnose,
        before_s=before_s, after_s=after_s, timeout_s=timeout_s, stall_s=None)


#: The notify script's lines (templates/conntrackd-notify.sh.j2, tag hautils-conntrackd) that
#: end the new master's phases after keepalived's: the script starts, then the copied
#: connections are in the kernel's table (``conntrackd -c`` returned).  Not "primary: done":
#: the flush, resync and bulk send after the commit took long enough that the client's
#: connection answered before it (seen in the lab).
CONNTRACKD_MARKS = {
    "notify script starts": r"hautils-conntrackd: primary: committing",
    "connections committed": r"hautils-conntrackd: primary: external cache committed",
}


def conntrackd_session(lab, routers: Sequence[str], client: str, server_ip: str, *, vrrp=None,
                       port: int = 7007, hz: float = 20, user_timeout_s: float = 5.0, stall_s: float = 0.25,
                       before_s: float = 2, after_s: float = 2, timeout_s: float = 60,
                       settle_timeout_s: float = 300, label: str | None = None, **kw: Any) -> Experiment:
    """Cut the power of the VRRP master of a NAT gateway pair while ``client`` holds one TCP
    connection to an echo server at ``server_ip`` (:func:`hautils.probes.session`, ``hz`` lines
    a second): does the connection survive the failover?

    It can only if the new master knows the connection (conntrackd's copy, committed by the
    notify script): otherwise its firewall (:class:`~hautils.services.keepalived.Nat`) drops
    the connection's packets as INVALID, silently, and the client's TCP gives up after
    ``user_timeout_s`` of unacknowledged data (TCP_USER_TIMEOUT; Linux's default is ~15 min of
    retransmissions).  The probe then opens a new connection, so ``downtime_s`` is what a
    client that reconnects sees either way.  An echo slower than ``stall_s`` counts as none:
    TCP holds the lines back while the path is down and retransmits them once it is back, so
    a surviving session answers every line, late (seen in the lab: no line lost, the outage
    only in the echoes' delay).  The echo server (:class:`~hautils.probes.EchoServer`)
    is started on the host owning ``server_ip`` before each trial.  ``kw``: more
    :func:`vrrp_power_failure` options (``services``, ``after_boot``, ``watch_return``...).

    Row: as :func:`vrrp_power_failure`, plus ``conntrackd`` (whether ``vrrp`` drives it),
    ``in backup's cache`` (with conntrackd: the survivor's external cache held a TCP connection
    to ``port`` just before the fault),
    ``survived`` (the connection opened before the fault answered after it and never broke),
    ``break_err`` and ``break_s`` (how and when after the fault it broke: ``ETIMEDOUT`` after
    ``user_timeout_s`` of silence, ``ECONNRESET`` on a reset), ``connections`` and the phases of
    :data:`VRRP_MARKS` and, with conntrackd, :data:`CONNTRACKD_MARKS`."""
    owners = _address_owners(lab.topology)
    server_ip = _ipv4(server_ip, "server_ip")
    if server_ip not in owners:
        raise ValueError(f"server_ip={server_ip}: no host of lab {lab.topology.name!r} has that address")
    server = owners[server_ip]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port={port!r}: 1 to 65535")
    _positive(user_timeout_s, "user_timeout_s")
    if timeout_s <= user_timeout_s:
        raise ValueError(f"timeout_s={timeout_s!r} must exceed user_timeout_s={user_timeout_s!r}: a session that "
                         "breaks is only seen to break after it")
    conntrackd = bool(vrrp is not None and vrrp.conntrackd)
    name = label or ("NAT session across a power failure" + (" (conntrackd)" if conntrackd else " (no conntrackd)"))
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-")
    base = vrrp_power_failure(lab, routers, client, server_ip, vrrp=vrrp, hz=hz, before_s=before_s,
                              after_s=after_s, timeout_s=timeout_s, settle_timeout_s=settle_timeout_s,
                              label=name, **kw)

    def prepare(t: Trial) -> None:
        base.prepare(t)
        probes.EchoServer(lab[server], port).start()  # (again: one left running is replaced)
        t.row["conntrackd"] = conntrackd

    def fault(t: Trial) -> float:
        if conntrackd:  # did the copy reach the survivor?  (one process there, just before the fault)
            res = t.backup.run(f"conntrackd -C {CONNTRACKD_CONF} -e 2>/dev/null | grep -c 'tcp .* dport={port} '",
                               check=False, timeout=30)
            t.row["in backup's cache"] = res.stdout.strip() not in ("", "0")
        return base.fault(t)

    def verify(t: Trial) -> dict[str, Any]:
        out = probes.session_breaks(t.log, after=t.fault_time)
        return {k: out[k] for k in ("survived", "break_err", "break_s", "connections")}

    return replace(
        base, prepare=prepare, verify=verify, stall_s=stall_s, fault=fault,
        probe=lambda t: probes.session(lab[client], server_ip, port, hz=hz, user_timeout=user_timeout_s,
                                       reconnect=True, name=f"{slug}-{t.index}"),
        marks={**VRRP_MARKS, **(CONNTRACKD_MARKS if conntrackd else {})},
        final_phase="the client's connection answers")


# -- routing level: the paper's OSPF failure test -------------------------------------------------

#: The paper's flow (section 3.3.3): host1 pings host2; the routers at its ends and the NICs the
#: flow enters them by (for ``ip route get ... iif``), from labs/routing.yaml.
OSPF_FLOW = {"client": "host1", "client_ip": "10.10.10.2", "target": "10.10.15.2",
             "ingress": ("router1", "eth1"), "egress": ("router2", "eth3")}
#: ospfd's adjacency log lines (FRR ospfd/ospf_nsm.c, with ``log-adjacency-changes``):
#: ``AdjChg: Nbr 192.168.103.98, NbrIP 10.10.13.1 (default) on eth3:10.10.13.2: Full -> Deleted
#: (InactivityTimer)`` (FRR 8.4.4 in the lab).
ADJ_DOWN = r"AdjChg: Nbr \S+ .*?: Full -> (Deleted|Init|Down|ExStart)"
ADJ_FULL = r"AdjChg: Nbr \S+ .*?: \S+ -> Full"
#: what hautils-ospf-ready logs when it lifts the max-metric (hautils.services.frr, stub_until_routed)
STUB_LIFTED = re.compile(r"after ([0-9.]+) s: max-metric lifted")
#: The paper's failure test, in its order: (results id, action, which path router).
OSPF_SEQUENCE = (("ospf-stop-pathA", "stop", "first"), ("ospf-start-pathA", "start", "first"),
                 ("ospf-stop-pathB", "stop", "second"), ("ospf-start-pathB", "start", "second"))
ACTIONS = ("stop", "start", "power")


def ospf_marks(action: str) -> dict[str, str]:
    """Where an OSPF event's time goes, from the end routers' ospfd logs: a neighbour lost
    (graceful stop: its hellos stop listing us or the router says goodbye; power: the dead
    interval, or BFD) or an adjacency that reaches Full again (start)."""
    if action not in ACTIONS:
        raise ValueError(f"action={action!r}: one of {', '.join(ACTIONS)}")
    return {"adjacency to it Full": ADJ_FULL} if action == "start" else {"neighbour declared lost": ADJ_DOWN}


def _address_owners(topology) -> dict[str, str]:
    return {str(l.address.ip): h.name for h in topology.hosts.values() for l in h.links if l.address is not None}


def route_nexthops(text: str, owners: Mapping[str, str] | None = None) -> list[str]:
    """The next hops of the routes in ``ip -j route show PREFIX`` (or ``ip -j route get``)
    output, as host names where ``owners`` (address -> host) knows them, else addresses.  A
    multipath (ECMP) route lists every ``nexthops`` entry; a directly connected route has none."""
    owners = owners or {}
    try:
        routes = json.loads(text or "[]")
    except ValueError:
        raise ValueError(f"not `ip -j route` output: {text[:200]!r}") from None
    hops: list[str] = []
    for r in routes if isinstance(routes, list) else [routes]:
        for gw in [r.get("gateway")] + [nh.get("gateway") for nh in r.get("nexthops") or []]:
            if gw:
                name = owners.get(gw, gw)
                if name not in hops:
                    hops.append(name)
    return hops


def _flow(lab, flow: Mapping[str, Any]) -> dict[str, Any]:
    f = {**OSPF_FLOW, **flow}
    topo = lab.topology
    f["client"] = _host(lab, f["client"], "client")
    for k in ("client_ip", "target"):
        f[k] = _ipv4(f[k], k)
    nets = {}
    for k in ("client_ip", "target"):
        found = [str(n.subnet) for n in topo.networks.values()
                 if n.subnet is not None and ipaddress.IPv4Address(f[k]) in n.subnet]
        if not found:
            raise ValueError(f"{k}={f[k]}: on none of the lab's networks")
        nets[k] = found[0]
    f["client_net"], f["target_net"] = nets["client_ip"], nets["target"]
    for end in ("ingress", "egress"):
        router, iif = f[end]
        router = _host(lab, router, end)
        if iif not in [l.iface for l in topo.hosts[router].links]:
            raise ValueError(f"{end}: {router} has no NIC {iif!r}")
        f[end] = (router, iif)
    return f


def adjacency_drops(lab, hosts: Sequence[str], since: float, neighbours: Sequence[str] | None = None) -> list[str]:
    """ospfd's "Full -> ..." lines on ``hosts`` since ``since`` (epoch s), for adjacencies to
    ``neighbours`` (router-ids; default: any).  Drops of a neighbour that was not broken on
    purpose are false alarms: each one reroutes traffic for nothing (too tight BFD or hello
    timers on a busy machine)."""
    out = []
    for name in hosts:
        for line in lab[name].journal(since=since, identifier="ospfd"):
            if re.search(ADJ_DOWN, line.message) and (
                    neighbours is None or any(f"Nbr {n}," in line.message or f"Nbr {n} " in line.message
                                              for n in neighbours)):
                out.append(f"{name}: {line.message}")
    return out


def flow_path(lab, **flow: Any) -> dict[str, str | None]:
    """Which path router carries the probe's flow now, each way: ``{"out": "patha", "back":
    "pathb"}``.  Asked of the kernels at the two ends (``ip route get DST from SRC iif NIC``,
    which picks among ECMP next hops as a forwarded packet would), so the chapter can show the
    path before each trial, and name the router that carries the flow as the paper's pathA."""
    f = _flow(lab, flow)
    return flow_paths(lab, [f["client_ip"]], **f)[f["client_ip"]]


def _routes(lab, f, owners) -> dict[str, list[str]]:
    (r1, _), (r2, _) = f["ingress"], f["egress"]
    return {r1: route_nexthops(lab[r1].run(f"ip -j route show {f['target_net']}", timeout=30).stdout, owners),
            r2: route_nexthops(lab[r2].run(f"ip -j route show {f['client_net']}", timeout=30).stdout, owners)}


def ospf_event(lab, router: str, action: str, *, frr=None, hz: float = 100, flow: Mapping[str, Any] | None = None,
               before_s: float = 2, after_s: float = 2, timeout_s: float = 120, converge_timeout_s: float = 300,
               poll_s: float = 1.0, also_hz: float | None = None, restore: bool = True,
               sources: Sequence[str] | None = None, pins: dict[str, str] | None = None,
               carrier: str | None = None, after_boot: Callable[[Any], Any] | None = None, label: str | None = None,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
               now: Callable[[], float] = time.time) -> Experiment:
    """One event of the paper's failure test (section 3.3.3) on a path router while host1 pings
    host2 at ``hz``: ``stop`` FRR (graceful: the paper's ``/etc/init.d/quagga stop``), ``start``
    it again, or ``power`` (a power failure, which the paper did not test: no goodbye, the
    neighbours wait for the dead interval, or BFD).

    Before each trial the router is brought to the state the event starts from (running and in
    use for stop/power; stopped and routed around for start) and the flow's path is read from
    the end routers (:func:`flow_path`).  Recovered means the end routers route without the
    router (stop/power) or through it again while it has its own routes (start): the network's
    view, polled every ``poll_s``, since at 1 Hz a stop may cost no probe at all; the probes of
    ``after_s`` more show the client's side.  Restore: FRR runs on the router again (booted
    first after ``power``) and the routes go through it again.

    ``frr``: the :class:`~hautils.services.frr.Frr` in use (default: one for the lab's
    topology; only its start and stop are used).  ``flow``: overrides of :data:`OSPF_FLOW`.
    ``also_hz``: a second ICMP probe at that rate beside the main one (``1``: the paper's own
    ``ping``), so one trial gives both resolutions; its row columns are ``"<rate> Hz downtime_s"``
    and ``"<rate> Hz lost_probes"``.
    ``sources``: client addresses (:func:`flow_sources`); before each trial the probe takes one
    whose flow crosses ``carrier`` (default: the router itself), both ways if one does (the
    routers' ECMP hash decides, and the order of their next hops changes when a router comes
    back, so this is asked again each time; a start uses the address found before its router
    stopped, kept in ``pins``).  The paper's test keeps its ping on pathA throughout
    (``carrier="patha"`` for pathB's events too).
    ``restore=False``: a stop's trial leaves FRR stopped, for a start's trial that follows it
    (:func:`ospf_paper_test`).
    ``after_boot(host)``: what the router needs after a power failure besides FRR (a runtime
    sysctl such as ``rp_filter`` is lost with the reboot).
    Row: ``action``, ``router``, ``path out``, ``path back``, ``on path`` (the flow crossed the
    router before the event), ``path out after``, ``path back after``, ``stub router for (s)``
    (a start with ``frr.stub_until_routed``: when the router lifted its max-metric), ``downtime_s``,
    ``lost_probes``, ``stalls_s``, and the phases from the end routers' ospfd logs
    (:func:`ospf_marks`)."""
    marks = ospf_marks(action)
    f = _flow(lab, flow or {})
    router = _host(lab, router, "router")
    ends = (f["ingress"][0], f["egress"][0])
    if lab.topology.hosts[router].role != "router":
        raise ValueError(f"router={router!r} has role {lab.topology.hosts[router].role!r}: it routes nothing")
    if router in ends:
        raise ValueError(f"router={router!r} is an end of the flow: without it host1 has no path at all, "
                         "so there is no failover to measure; pick a path router")
    _positive(hz, "hz")
    _positive(poll_s, "poll_s")
    _positive(also_hz, "also_hz", allow_none=True)
    if frr is None:
        from ..services.frr import Frr

        frr = Frr(lab.topology)
    owners = _address_owners(lab.topology)
    pins = {} if pins is None else pins
    carrier = _host(lab, carrier, "carrier") if carrier is not None else router
    name = label or f"OSPF {action} {router}"
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-")

    def own_routes(h) -> bool:
        """The router forwards the flow both ways: its route to the target's network goes to the
        egress router and its route to the client's network to the ingress router.  A restarted
        router may first install a route back where the packet came from (a loop), from the
        stale LSAs of its previous life: that is not converged."""
        text = h.run(f"ip -j route show {f['target_net']}; echo '#'; ip -j route show {f['client_net']}",
                     check=False, timeout=30).stdout
        to_target, _, to_client = text.partition("#")
        try:
            return (route_nexthops(to_target.strip() or "[]", owners) == [ends[1]]
                    and route_nexthops(to_client.strip() or "[]", owners) == [ends[0]])
        except ValueError:
            return False

    def wait_routes(through: bool, timeout: float) -> dict[str, list[str]]:
        """Until both ends route through ``router`` (``through``), or around it, and have a route."""
        deadline = clock() + timeout
        while True:
            hops = _routes(lab, f, owners)
            ok = all(hops.values()) and all((router in h) == through for h in hops.values())
            if ok and through:
                ok = own_routes(lab[router])
            if ok:
                return hops
            if clock() > deadline:
                raise TimeoutError(f"OSPF: routes {'through' if through else 'around'} {router} not seen within "
                                   f"{timeout:g} s; next hops now: {hops}")
            sleep(poll_s)

    def pick_source() -> None:
        """While ``carrier`` is up: a client address whose flow crosses it, both ways if one does."""
        if sources:
            pins[carrier] = crossing_source(lab, carrier, sources, **f) or f["client_ip"]

    def prepare(t: Trial) -> None:
        if action == "start":
            if sources and carrier not in pins:
                if carrier != router or lab[router].run("systemctl is-active --quiet frr", check=False,
                                                        timeout=30).ok:
                    wait_routes(True, converge_timeout_s)
                    pick_source()
            frr.stop(lab[router])
            wait_routes(False, converge_timeout_s)
        else:
            wait_routes(True, converge_timeout_s)
            pick_source()
        t.src = pins.get(carrier, f["client_ip"])
        path = flow_path(lab, **{**f, "client_ip": t.src})
        t.set(on_path=router in path.values())
        t.row.update({"action": action, "router": router, "path out": path["out"], "path back": path["back"],
                      "on path": t.on_path})

    def fault(t: Trial) -> float:
        if action == "stop":
            return frr.stop(lab[router])
        if action == "power":
            return lab.power_off(router)
        when = now()  # a UML guest reads the host's clock: the start's time on both
        frr.start(lab[router])
        return when

    def recovered(t: Trial) -> None:
        # the network's view, not the probe's: at the paper's 1 Hz a stop may lose no ping at all
        wait_routes(action == "start", converge_timeout_s)
        # ... and then the client's: routes that point at a router which cannot forward yet
        # (a restarted one whose own routes are still missing or loop) are no recovery
        t.probe.wait_answering(span=1.0, timeout=timeout_s)

    def during(t: Trial) -> None:
        path = flow_path(lab, **{**f, "client_ip": t.src})
        t.row.update({"path out after": path["out"], "path back after": path["back"]})
        if action == "start" and getattr(frr, "stub_until_routed", False):
            # hautils-ospf-ready's own account: how long the started router stayed a stub router
            lines = lab[router].journal(since=t.fault_time - 1, identifier="hautils-ospf-ready")
            found = [float(m.group(1)) for line in lines if (m := STUB_LIFTED.search(line.message))]
            t.row["stub router for (s)"] = found[-1] if found else None

    def restore_(t: Trial) -> None:
        if action == "start" or (action == "stop" and not restore):
            return
        if action == "power":
            lab.power_on(router)
            if after_boot is not None:
                after_boot(lab[router])
        frr.start(lab[router])
        wait_routes(True, converge_timeout_s)

    def diagnose(t: Trial, exc: BaseException) -> str:
        since = (t.fault_time or time.time()) - 5
        return _report(lab, [*ends, router], [
            "ip route show", "vtysh -c 'show ip ospf neighbor' 2>&1 | head -n 20",
            f"journalctl -o short-precise --no-pager --since=@{since:.3f} -t ospfd -t zebra -t bfdd | tail -n 40"])

    def probe(t: Trial):
        src = t.src
        t.row["source"] = src
        main = probes.icmp(lab[f["client"]], f["target"], hz=hz, name=f"{slug}-{t.index}", source=src)
        if also_hz is None:
            return main
        return {main.name: main, f"{also_hz:g} Hz": probes.icmp(lab[f["client"]], f["target"], hz=also_hz,
                                                                  name=f"{slug}-{also_hz:g}hz-{t.index}", source=src)}

    return Experiment(
        name, prepare=prepare,
        probe=probe, fault=fault, recovered=recovered, during=during, restore=restore_, marks=marks,
        journals=lambda t: [lab[e] for e in ends], final_phase="routes converge, client answers",
        diagnose=diagnose, before_s=before_s, after_s=after_s, timeout_s=timeout_s, stall_s=None)


def flow_sources(lab, hosts: Sequence[int] = range(10, 30), **flow: Any) -> list[str]:
    """Extra addresses ``<client subnet>.<n>`` (n in ``hosts``) on the client's NIC, to send
    probes from: each (source, destination) pair is one flow, which the routers' ECMP hash puts
    on one path, so among a few sources some cross each path (:func:`pin_flows`)."""
    f = _flow(lab, flow)
    client = lab.topology.hosts[f["client"]]
    link = next((l for l in client.links if l.address is not None and f["client_ip"] == str(l.address.ip)), None)
    if link is None:
        raise ValueError(f"client_ip={f['client_ip']}: not an address of {f['client']} in the topology")
    net = link.address.network
    taken = _address_owners(lab.topology)
    candidates = [str(net.network_address + n) for n in hosts
                  if str(net.network_address + n) not in taken and net.network_address + n in net]
    if not candidates:
        raise ValueError(f"hosts={hosts!r}: no free address of {net} among them")
    lab[f["client"]].run("; ".join(f"ip addr replace {a}/{net.prefixlen} dev {link.iface}" for a in candidates),
                         timeout=60)
    return candidates


def crossing_source(lab, router: str, sources: Sequence[str], *, both_ways_only: bool = False,
                    **flow: Any) -> str | None:
    """The first of ``sources`` (client addresses) whose flow crosses ``router`` both ways now,
    else (unless ``both_ways_only``) the first that crosses it one way; None if none does.

    With two equal-cost paths, router1 and router2 each hash a packet's (source, destination)
    onto one next hop (``fib_multipath_hash_policy`` 0), so one flow takes one path out and one
    back, not necessarily the same one: this asks both end routers (:func:`flow_path`)."""
    f = _flow(lab, flow)
    one_way = None
    paths = flow_paths(lab, sources, **f)
    for src in sources:
        p = paths[src]
        if p["out"] == router and p["back"] == router:
            return src
        if one_way is None and router in (p["out"], p["back"]):
            one_way = src
    return None if both_ways_only else one_way


def flow_paths(lab, sources: Sequence[str], **flow: Any) -> dict[str, dict[str, str | None]]:
    """:func:`flow_path` for many client addresses at once: one command per end router, not two
    per address (an SSH command costs about 0.1 s of a UML guest: 20 sources took 2.3 s one by
    one).  Returns ``{source: {"out": router, "back": router}}``."""
    f = _flow(lab, flow)
    sources = [_ipv4(s, "sources") for s in sources]
    owners = _address_owners(lab.topology)
    (r1, i1), (r2, i2) = f["ingress"], f["egress"]

    def ask(router: str, template: str) -> list[str]:
        cmd = "; ".join(template.format(src=s) + " 2>/dev/null; echo '#'" for s in sources)
        parts = lab[router].run(cmd, timeout=30).stdout.split("#\n")
        return [(route_nexthops(p.strip() or "[]", owners) or [None])[0] for p in parts[:len(sources)]]

    out = ask(r1, f"ip -j route get {f['target']} from {{src}} iif {i1}")
    back = ask(r2, f"ip -j route get {{src}} from {f['target']} iif {i2}")
    return {s: {"out": o, "back": b} for s, o, b in zip(sources, out, back)}


def wait_ecmp(lab, routers: Sequence[str] = ("patha", "pathb"), *, timeout: float = 60, poll_s: float = 0.5,
              sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
              **flow: Any) -> dict[str, list[str]]:
    """Wait until both end routers route the flow's networks through every one of ``routers``
    and two readings ``poll_s`` apart agree.  Right after OSPF has converged (every network has a
    route) the equal-cost route can still be one next hop, or change its nexthop group: a
    lookup then answered patha for 18 of 20 sources out of router1, and pathb for 8 of them 3 s
    later.  Returns the next hops per end router."""
    f = _flow(lab, flow)
    routers = [_host(lab, r, "routers") for r in routers]
    owners = _address_owners(lab.topology)
    deadline, last = clock() + timeout, None
    while True:
        hops = _routes(lab, f, owners)
        ok = all(set(routers) <= set(h) for h in hops.values())
        if ok and hops == last:
            return hops
        last = hops if ok else None
        if clock() > deadline:
            raise TimeoutError(f"wait_ecmp: after {timeout:g} s the next hops are {hops}, not all of "
                               f"{', '.join(routers)} on both ends (is OSPF up on every path router?)")
        sleep(poll_s)


def pin_flows(lab, routers: Sequence[str] = ("patha", "pathb"), *, sources: Sequence[str] | None = None,
              timeout_s: float = 60, sleep: Callable[[float], None] = time.sleep, **flow: Any) -> dict[str, str]:
    """A source address on the client for each path router whose flow crosses it both ways, once
    both end routers have their equal-cost routes through every one of ``routers``
    (:func:`wait_ecmp`, :func:`flow_paths`; ``sources`` default: :func:`flow_sources`).
    Returns ``{router: address}``; raises naming the routers no source pins."""
    f = _flow(lab, flow)
    routers = [_host(lab, r, "routers") for r in routers]
    sources = list(sources) if sources is not None else flow_sources(lab, **flow)
    wait_ecmp(lab, routers, timeout=timeout_s, sleep=sleep, **f)
    paths = flow_paths(lab, sources, **f)
    found = {r: next((s for s in sources if paths[s]["out"] == r and paths[s]["back"] == r), None)
             for r in routers}
    missing = [r for r, src in found.items() if src is None]
    if missing:
        raise RuntimeError(f"pin_flows: no source among {sources[0]}..{sources[-1]} crosses "
                           f"{', '.join(missing)} both ways; are both paths up "
                           f"(ECMP routes on {f['ingress'][0]} and {f['egress'][0]})?")
    return found


def ospf_sequence(lab, frr=None, *, first: str = "patha", second: str = "pathb",
                  sources: Sequence[str] | None = None, chained: bool = False, **kw: Any) -> dict[str, Experiment]:
    """The paper's four events as experiments, keyed by their ``results/03-networking.json``
    ids: stop and start ``first`` (the paper's pathA, which carried the traffic), then stop and
    start ``second`` while ``first`` carries it.  :func:`flow_path` tells which router that is
    on a given boot (ECMP hashes each flow onto one path).  ``kw`` goes to :func:`ospf_event`
    (``hz=1`` for the paper's own ping).  ``sources``: client addresses (:func:`flow_sources`),
    so that each event's probe crosses its router (:func:`ospf_event`).  ``chained``: each stop
    leaves FRR stopped for the start after it (run them with :func:`ospf_paper_test`)."""
    routers = {"first": first, "second": second}
    if _host(lab, first, "first") == _host(lab, second, "second"):
        raise ValueError(f"first and second are both {first!r}: the sequence needs the two path routers")
    pins: dict[str, str] = {}  # shared: a start uses the source its stop found
    # the paper's ping stays on the first path: its pathB steps happen "while pathA carries traffic"
    return {key: ospf_event(lab, routers[which], action, frr=frr, label=f"{key} ({routers[which]})",
                            sources=sources, pins=pins, carrier=first, **({"restore": False} if chained else {}),
                            **kw)
            for key, action, which in OSPF_SEQUENCE}


def ospf_paper_test(lab, trials: int, frr=None, *, progress: bool = False, **kw: Any) -> dict[str, Any]:
    """The paper's failure test (section 3.3.3), ``trials`` times: stop FRR on the first path
    router, start it, stop the second, start it; each trial's four events in that order, so a
    stop leaves the router where its start begins (no extra restart between them).  ``kw`` goes
    to :func:`ospf_sequence` (``first``, ``flows``, ``hz``, ``also_hz`` ...).  Returns
    ``{results id: Run}``."""
    return Experiment.run_together(ospf_sequence(lab, frr, chained=True, **kw), trials, progress=progress)
