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

import re
import time

import pandas as pd

from .. import probes
from ..experiment import Experiment, Trial
from ..services.pacemaker import GUEST_PHASE_MARKS
from ..ssh import parse_journal_json

CLIENT = "iscsi-server"
NODES = ("node0", "node1", "node2")

#: What the node cut off alone says in its journal, read as it happens over the management
#: network (the partition cuts the cluster network only): its own view of losing quorum,
#: pacemaker's reaction under ``no-quorum-policy=stop``, and the stop of the guest.
LONE_MARKS = {
    "lone: membership shrinks": r"\[TOTEM \] A new membership .* was formed",
    "lone: quorum lost": r"This node is within the non-primary component|[Qq]uorum lost",
    "lone: stop ordered": r"Initiating stop operation p_(guest|fs)_stop|Requesting local execution of stop operation for p_(guest|fs) ",
    "lone: guest stopped": r"Result of stop operation for p_guest on .*: ok",
}


def fence_events(bmc, since: float) -> list:
    """What the BMC did and answered since ``since`` (epoch s), in time order: power changes
    and state reads (``reset="status"``).  A fence agent reads the state first: a node that
    is already off (a power failure) is fenced by that read, with no switch-off."""
    return sorted((e for e in [*bmc.log, *bmc.queries] if e.time >= since), key=lambda e: e.time)


def mgmt_names(lab) -> dict[str, str]:
    """Management address -> host name: the BMC knows its clients by address."""
    return {str(h.mgmt.address.ip): h.name for h in lab.topology.hosts.values() if h.mgmt is not None}


class _GuestSteps:
    """What both scenarios do alike: wait for a settled cluster and pick the guest's node, probe
    the guest's address and web page from the client, wait for both, read the fence from the BMC."""

    def __init__(self, lab, gc, hz: float, timeout_s: float, prefix: str):
        self.lab, self.gc, self.hz, self.timeout_s, self.prefix = lab, gc, hz, timeout_s, prefix
        self.client = lab[CLIENT]
        self.names = mgmt_names(lab)

    def prepare(self, t: Trial) -> None:
        gc = self.gc
        gc.wait_online(timeout=600)
        gc.wait_started(600)
        gc.wait_idle()  # a node that just rejoined probes every resource: not during the fault
        victim = gc.active()
        t.set(victim=victim, survivors=[h for h in gc.hosts if h.name != victim])
        t.row["from"] = victim

    def probe(self, t: Trial) -> dict:
        ip = self.gc.guest_ip
        return {"ping": probes.icmp(self.client, ip, hz=self.hz, name=f"{self.prefix}-ping-{t.index}"),
                "web": probes.http(self.client, f"http://{ip}/", hz=self.hz, name=f"{self.prefix}-web-{t.index}")}

    def recovered(self, t: Trial) -> None:
        for p in t.probes.values():  # the address and the service, in that order
            p.wait_recovered(t.fault_time, timeout=self.timeout_s, max_latency=0.5)

    def fence(self, t: Trial) -> list:
        """The BMC's requests about the victim since the fault; ``fenced by``, ``BMC saw`` in the row."""
        asked = [e for e in fence_events(self.gc.bmc, t.fault_time) if e.host == t.victim]
        t.row["to"] = self.gc.active()
        t.row["fenced by"] = self.names.get(asked[0].client, asked[0].client) if asked else None
        t.row["BMC saw"] = ", ".join(f"{e.reset}:{e.done}" for e in asked)
        return asked

    def diagnose(self, t: Trial, e: BaseException) -> str:
        return self.gc.diagnostics()


def guest_power_failure(lab, gc, *, hz: float = 10, before_s: float = 2, after_s: float = 2,
                        timeout_s: float = 180, name: str = "guest power failure") -> Experiment:
    """Power off the node that runs the guest while the client pings it and fetches its page.

    Row: ``from``, ``to``, ``downtime_s`` (ping), ``web downtime_s``, ``fenced by`` (the node
    whose fence agent asked the BMC), ``BMC saw`` (its requests about the victim: ``status:Off``
    is the agent's read that confirms the power is off), ``fence read after_s`` and the phases
    from the survivors' journals; the last phase, ``container start``, ends at the first ping
    answered; ``web after ping_s`` is the guest's own boot, up to its web service."""
    steps = _GuestSteps(lab, gc, hz, timeout_s, "guest")

    def during(t: Trial) -> None:
        asked = steps.fence(t)
        t.row["fence read after_s"] = round(asked[0].time - t.fault_time, 2) if asked else None

    def after_ping(t: Trial) -> dict:
        web, ping = t.row.get("web downtime_s"), t.downtime.downtime_s if t.downtime else None
        return {"web after ping_s": round(web - ping, 2) if web is not None and ping is not None else None}

    return Experiment(
        name, prepare=steps.prepare, probe=steps.probe, fault=lambda t: lab.power_off(t.victim),
        recovered=steps.recovered, during=during, restore=lambda t: lab.power_on(t.victim), marks=GUEST_PHASE_MARKS,
        journals=lambda t: t.survivors, final_phase="container start", verify=after_ping, diagnose=steps.diagnose,
        before_s=before_s, after_s=after_s, timeout_s=timeout_s, stall_s=0.5)


def quorum_partition(lab, gc, *, hz: float = 10, before_s: float = 2, after_s: float = 2,
                     timeout_s: float = 180, name: str = "quorum partition") -> Experiment:
    """Cut the node that runs the guest off from the two others (and from the disk server) on
    the cluster network, while the client pings the guest and fetches its page.

    Both sides act on their own: the lone node has 1 vote of 3, loses quorum and, with
    ``no-quorum-policy=stop``, orders the stop of what it runs; the two others have 2 of 3, keep quorum,
    fence the lone node through the BMC (a node that cannot be heard may still write to the
    disk) and start the guest.  The lone node's journal is read live over the management
    network (:meth:`hautils.ssh.Host.follow_journal`) up to the moment its power goes.  Its
    stop order races the fence: the fence came first in 4 of 15 trials on 5 December, and
    then the lone node logged no stop at all.

    Row: ``from`` (the lone node), ``to``, ``downtime_s`` (ping), ``web downtime_s``,
    ``majority runs guest``, ``majority quorate`` and ``lone fenced`` (1/0), ``fenced by``,
    ``BMC saw``, ``fence after_s`` (the switch-off), the lone node's own steps
    (:data:`LONE_MARKS`, s after the cut) and the survivors' phases.  ``restore`` heals the
    network and powers the fenced node on; it rejoins by itself, and ``rejoined after heal_s``
    is the time until every node is online again."""
    steps = _GuestSteps(lab, gc, hz, timeout_s, "quorum")

    def prepare(t: Trial) -> None:
        steps.prepare(t)
        t.watch = next(h for h in gc.hosts if h.name == t.victim).follow_journal()

    def fault(t: Trial) -> float:
        return lab.partition([*(h.name for h in t.survivors), CLIENT], [t.victim])

    def during(t: Trial) -> None:
        asked = steps.fence(t)
        t.row["majority runs guest"] = int(t.row["to"] in {h.name for h in t.survivors})
        q = t.survivors[0].run("corosync-quorumtool -s", check=False, timeout=60).stdout
        t.row["majority quorate"] = int(bool(re.search(r"^Quorate:\s+Yes", q, re.M)))
        off = [e for e in asked if e.done == "off"]
        t.row["lone fenced"] = int(bool(off) and not lab.is_on(t.victim))
        t.row["fence after_s"] = round(off[0].time - t.fault_time, 2) if off else float("nan")

    def lone_steps(t: Trial) -> dict:
        t.lone_lines = [ln for ln in parse_journal_json(t.watch.stop()) if ln.time >= t.fault_time - 0.5]
        row = {}
        for step, pattern in LONE_MARKS.items():
            hit = next((ln for ln in t.lone_lines if ln.time >= t.fault_time and re.search(pattern, ln.message)), None)
            row[f"{step} after_s"] = round(hit.time - t.fault_time, 2) if hit else None
        return row

    def restore(t: Trial) -> None:  # and measure the rejoin: heal, power on, all nodes online
        healed = lab.heal()
        if not lab.is_on(t.victim):
            lab.power_on(t.victim)
        gc.wait_online(timeout=600)
        t.row["rejoined after heal_s"] = round(time.time() - healed, 2)

    def diagnose(t: Trial, e: BaseException) -> str:
        if getattr(t, "watch", None) is not None:
            t.watch.stop()
        return steps.diagnose(t, e)

    return Experiment(
        name, prepare=prepare, probe=steps.probe, fault=fault, recovered=steps.recovered, during=during,
        verify=lone_steps, restore=restore, marks=GUEST_PHASE_MARKS, journals=lambda t: t.survivors,
        final_phase="container start", diagnose=diagnose, before_s=before_s, after_s=after_s,
        timeout_s=timeout_s, stall_s=0.5)


def _phase(t: pd.DataFrame, column: str) -> pd.Series:
    """A phase column as numbers; a phase the journal did not show (the lean agent logs no
    mount) counts 0."""
    return pd.to_numeric(t[column], errors="coerce").fillna(0) if column in t else pd.Series(0.0, index=t.index)


def summary(name: str, run) -> dict:
    """One row of the chapter's comparison table for a power-failure run: medians of the ping
    and web outages and of the phases, grouped as the tuning acts on them."""
    t = run.trials
    return {"": name, "ping back after (s, median)": t.downtime_s.median(), "max": t.downtime_s.max(),
            "web back after (s, median)": t["web downtime_s"].median(),
            "detection (s)": t["corosync detection (s)"].median(),
            "decision + fence (s)": (_phase(t, "pacemaker decision (s)") + _phase(t, "fencing (s)")).median(),
            "disk + container (s)": (_phase(t, "mount (s)") + _phase(t, "container start (s)")).median(),
            "guest boot to web (s)": t["web after ping_s"].median()}
