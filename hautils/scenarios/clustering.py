"""Chapter 4's failure scenarios: the thesis's three-node cluster and its container.

::

    power = clustering.guest_power_failure(lab, gc).run(trials)
    power.trials      # downtime_s (ping), "web downtime_s", from -> to, phases
    power.phase_bars()

The client's view is the storage server's (``iscsi-server``, which is not a cluster node, as in
the thesis): it pings the container's address and fetches its web page, 10 times a second
each.  The node that runs the container loses its power; the survivors detect it, fence it
through the BMC, mount the shared disk and start the container; the fenced node stays off
(``stonith-action=off``) until the trial's restore powers it on, and it rejoins by itself.
"""

from __future__ import annotations

import time

from .. import probes
from ..experiment import Experiment, Trial
from ..services.pacemaker import GUEST_PHASE_MARKS

CLIENT = "iscsi-server"
NODES = ("node0", "node1", "node2")


def fence_events(bmc, since: float) -> list:
    """What the BMC did and answered since ``since`` (epoch s), in time order: power changes
    and state reads (``reset="status"``).  A fence agent reads the state first: a node that
    is already off (a power failure) is fenced by that read, with no switch-off."""
    return sorted((e for e in [*bmc.log, *bmc.queries] if e.time >= since), key=lambda e: e.time)


def guest_power_failure(lab, gc, *, hz: float = 10, before_s: float = 2, after_s: float = 2,
                        timeout_s: float = 180, name: str = "guest power failure") -> Experiment:
    """Power off the node that runs the guest while the client pings it and fetches its page.

    Row: ``from``, ``to``, ``downtime_s`` (ping), ``web downtime_s``, ``fenced by`` (the node
    whose fence agent asked the BMC), ``BMC saw`` (its requests about the victim: ``status:Off``
    is the agent's read that confirms the power is off), ``fence read after_s`` and the phases
    from the survivors' journals; the last phase, ``container start``, ends at the first ping answered; ``web after ping_s``
    is the guest's own boot, up to its web service."""
    client = lab[CLIENT]
    url = f"http://{gc.guest_ip}/"

    def prepare(t: Trial) -> None:
        gc.wait_online(timeout=600)
        gc.wait_started(600)
        gc.wait_idle()  # a node that just rejoined probes every resource: not during the fault
        victim = gc.active()
        t.set(victim=victim, survivors=[h for h in gc.hosts if h.name != victim])
        t.row["from"] = victim

    def probe(t: Trial) -> dict:
        return {"ping": probes.icmp(client, gc.guest_ip, hz=hz, name=f"guest-ping-{t.index}"),
                "web": probes.http(client, url, hz=hz, name=f"guest-web-{t.index}")}

    def recovered(t: Trial) -> None:
        for p in t.probes.values():  # the address and the service, in that order
            p.wait_recovered(t.fault_time, timeout=timeout_s, max_latency=0.5)

    by_mgmt = {str(h.mgmt.address.ip): h.name for h in lab.topology.hosts.values() if h.mgmt is not None}

    def during(t: Trial) -> None:
        t.row["to"] = gc.active()
        asked = [e for e in fence_events(gc.bmc, t.fault_time) if e.host == t.victim]
        t.row["fenced by"] = by_mgmt.get(asked[0].client, asked[0].client) if asked else None
        t.row["BMC saw"] = ", ".join(f"{e.reset}:{e.done}" for e in asked)
        t.row["fence read after_s"] = round(asked[0].time - t.fault_time, 2) if asked else None

    def after_ping(t: Trial) -> dict:
        web, ping = t.row.get("web downtime_s"), t.downtime.downtime_s if t.downtime else None
        return {"web after ping_s": round(web - ping, 2) if web is not None and ping is not None else None}

    def restore(t: Trial) -> None:
        lab.power_on(t.victim)

    def diagnose(t: Trial, e: BaseException) -> str:
        return gc.diagnostics()

    return Experiment(
        name, prepare=prepare, probe=probe, fault=lambda t: lab.power_off(t.victim), recovered=recovered,
        during=during, restore=restore, marks=GUEST_PHASE_MARKS, journals=lambda t: t.survivors,
        final_phase="container start", verify=after_ping, diagnose=diagnose, before_s=before_s, after_s=after_s, timeout_s=timeout_s,
        stall_s=0.5)
