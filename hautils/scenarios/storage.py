"""Chapter 2's failure scenarios: a RAID member, DRBD's protocols, the iSCSI failover.

Each function returns an :class:`~hautils.experiment.Experiment`; ``.run(trials)`` repeats it::

    graceful = storage.heartbeat_failover(lab, hb, drbd, target, "graceful").run(trials)
    power = storage.heartbeat_failover(lab, hb, drbd, target, "power").run(trials)

The client writes 100 numbered records a second with O_DIRECT|O_SYNC to a file on the
iSCSI-backed ext4 (``/mnt/probe.dat``); a write that takes longer than half a second counts as
unanswered; afterwards every acknowledged record is read back and checked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from .. import overhead, probes
from ..experiment import Experiment, Trial, lost_writes, read_back
from ..services.drbd import rejoin as drbd_rejoin
from ..services.drbd import wait_healthy as drbd_wait_healthy
from ..services.iscsi import parse_lun_flags

CLIENT = "iscsi-client"
SERVERS = ("iscsi-server0", "iscsi-server1")
PROBE_PATH = "/mnt/probe.dat"

#: Phases of the paper's heartbeat failover: phase name -> the journal line that ends it.  The
#: resources start left to right, ``drbddisk::r0 tgt IPaddr2``: the address comes last, so a
#: client can only reach a target that is ready (see chapter 2, *When the disk goes read-only*).
_TAKEOVER = {
    "heartbeat hands over": r"drbddisk r0\s+start",
    "drbddisk (promote)": r"/etc/init\.d/tgt\s+start",
    "service start (tgt)": r"resource\.d/IPaddr2 \S+ start",
    "IPaddr2 (address, ARP)": r"IPaddr2.*INFO:\s+Success",
}
HB_GRACEFUL_MARKS = {"old server stops IP, tgt, DRBD": r"All HA resources relinquished", **_TAKEOVER}
HB_POWER_MARKS = {"detection (deadtime)": r"is dead",
                  **{("heartbeat's own scripts" if k == "heartbeat hands over" else k): v for k, v in _TAKEOVER.items()}}
#: The paper's resources in the order this course starts them (the paper: IP address, then tgt).
HB_RESOURCES = ["drbddisk::r0", "tgt", "IPaddr2::192.168.103.36/24/eth0"]
TUNED_MARKS = {
    "detection (deadtime)": r"is dead",
    "heartbeat's own scripts": r"hadisk\s+start",
    "hadisk": r"hadisk: DRBD primary",
}


class _Steps:
    """Wall-clock seconds of the sub-steps of a trial's step, into ``t.timings`` (for budgets)."""

    def __init__(self, t: Trial, prefix: str):
        self.t, self.prefix, self.clock = t, prefix, time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.t.timings[f"{self.prefix}: {name}"] = round(now - self.clock, 2)
        self.clock = now


def state_report(lab, since: float | None = None) -> str:
    """What every layer says now: the client's kernel messages (iSCSI session, SCSI and ext4
    errors) and session state; on each server DRBD's state, tgt's targets and LUNs and
    heartbeat's log.  The evidence a failed failover is explained with."""
    out = []
    q = f"--since=@{since:.3f}" if since else "-b"
    cmds = {
        CLIENT: [f"journalctl -k -o short-precise --no-pager {q} | tail -n 80",
                 "iscsiadm -m session -P 1 2>&1 | grep -E 'Current Portal|Persistent Portal|State' ",
                 "grep ' /mnt ' /proc/mounts"],
        "server": ["cat /proc/drbd", "tgtadm --lld iscsi --op show --mode target 2>&1 | "
                   "grep -E 'Target|LUN:|Backing store (path|flags)|I_T nexus|IP Address'",
                   "ip -o -4 addr show dev eth0",
                   f"journalctl -o short-precise --no-pager {q} -t heartbeat -t ResourceManager -t IPaddr2 "
                   "-t kernel -t tgtd -t hadisk -t systemd | grep -Ev 'Session|session-|user@' | tail -n 60",
                   f"journalctl -u tgt -o short-precise --no-pager {q} | tail -n 30",
                   "command -v crm_mon >/dev/null && crm_mon -1rf 2>&1 | sed -n '/Node List/,$p'; true",
                   f"journalctl -o short-precise --no-pager {q} -t pacemaker-controld -t pacemaker-schedulerd "
                   "-t corosync 2>/dev/null | grep -E 'Initiating|Result of|Move|Promote|Demote|Stop |Start |"
                   "membership|lost|TOTEM|transition' | tail -n 60"],
    }
    for name in (CLIENT, *SERVERS):
        host = lab[name]
        for cmd in cmds[CLIENT if name == CLIENT else "server"]:
            try:
                r = host.run(cmd, check=False, timeout=30)
                text = (r.stdout + r.stderr).rstrip()
            except Exception as e:  # noqa: BLE001 - a powered-off server says so
                text = f"({type(e).__name__}: {e})"
            out.append(f"### {name}: {cmd}\n{text}")
    return "\n".join(out)


def preallocated_probe(client, label: str, path: str = "/mnt/records.dat", mib: int = 64, hz: float = 100):
    """A write-probe factory for a database-like writer: records overwrite a file written in full
    once, now, each with ``write()`` then ``fdatasync()``: no ext4 metadata changes, so the data
    itself is all that is at stake, and the kernel sends it as a WRITE followed by a separate
    cache flush (SYNCHRONIZE CACHE).  ``mib`` bounds the run: 256 records a MiB."""
    client.run(f"test -s {path} || dd if=/dev/zero of={path} bs=1M count={int(mib)} oflag=direct conv=fsync "
               "status=none", timeout=300)
    return lambda t: probes.write(client, path, hz=hz, name=f"{label}-{t.index}", duration=mib * 256 / hz,
                                  sync="fdatasync")


def _write_probe(client, label: str, hz: float = 100):
    return lambda t: probes.write(client, PROBE_PATH, hz=hz, name=f"{label}-{t.index}", duration=900)


def _every_probe_read_back(t: Trial) -> dict:
    """``verify`` for one or several write probes: each probe's records read back (side by side:
    each read-back is a Python process in a slow guest); the first probe's figures as ``acked``,
    ``lost_acked``, ``rpo_s``, the others' prefixed with their name."""
    names = list(t.probes)
    with ThreadPoolExecutor(len(names)) as pool:
        t.losses = dict(zip(names, pool.map(lambda name: read_back(t, name), names)))
    t.loss = t.losses[names[0]]
    row = {}
    for i, name in enumerate(names):
        loss = t.losses[name]
        out = {"acked": loss.acked, "lost_acked": loss.lost_acked, "rpo_s": loss.rpo_s}
        row.update(out if i == 0 else {f"{name} {k}": v for k, v in out.items()})
    return row


def heartbeat_failover(lab, hb, drbd, target, fault: str, *, label: str | None = None,
                       marks: Mapping[str, str] | None = None, before_s: float = 2, after_s: float = 2,
                       timeout_s: float = 240, hz: float = 100, count_processes: bool = False,
                       probe=None, inject=None, luns: Sequence[int] = (1,)) -> Experiment:
    """The paper's test (section 2.4.3): heartbeat stopped on the active server (``graceful``) or
    the active server's power cut (``power``) while the client writes; then the lab is made
    redundant again (the old server boots, DRBD resyncs, heartbeat rejoins as standby).
    ``drbd``: the resource heartbeat moves, or a list of them (several LUNs).

    Row: ``from``, ``to``, ``tgt bsoflags`` (the live LUN's cache mode), ``downtime_s``,
    ``stalls_s`` (shorter interruptions apart from the failover), ``acked``, ``lost_acked``,
    ``rpo_s`` and one column per phase; with ``count_processes`` also ``processes started
    (survivor)``, from the kernel's counter read before the fault and right after recovery (the
    survivor is not asked anything in between: polling it would slow its takeover).
    ``probe``: another probe factory (``lambda t: Probe``) instead of the client's write probe,
    or one that returns ``{name: Probe}``: then the first times the failover and every one is
    read back (``NAME acked``, ``NAME lost_acked``, ``NAME rpo_s`` for the others; ``t.losses``
    by name); ``inject``: another fault (``lambda t: time``) for the active server ``t.active``,
    e.g. :func:`stalled_power_failure`; ``luns``: the LUNs whose live cache mode is recorded
    (``tgt bsoflags``, or ``LUN n bsoflags`` for several)."""
    if fault not in ("graceful", "power"):
        raise ValueError(f"fault must be 'graceful' or 'power', got {fault!r}")
    client = lab[CLIENT]
    servers = [lab[s] for s in SERVERS]
    resources = list(drbd) if isinstance(drbd, (list, tuple)) else [drbd]
    if marks is None:
        marks = HB_GRACEFUL_MARKS if fault == "graceful" else HB_POWER_MARKS

    def prepare(t: Trial) -> None:
        active = lab[hb.active()]
        standby = servers[1] if active is servers[0] else servers[0]
        t.set(active=active, standby=standby)
        t.row["from"] = active.name
        show = target.show(active)
        for n in luns:
            t.row["tgt bsoflags" if len(luns) == 1 else f"LUN {n} bsoflags"] = \
                parse_lun_flags(show, n) or "(write-back)"
        if count_processes:
            t.forks_before = overhead.processes_started(standby)

    def during(t: Trial) -> None:
        t.row["to"] = t.standby.name  # (the last trial may not be restored: set it here)
        if count_processes:
            t.row["processes started (survivor)"] = overhead.processes_started(t.standby) - t.forks_before

    def injector(t: Trial) -> float:
        # hb.stop returns once the old server has let go: the interruption has begun by then
        return hb.stop(t.active) if fault == "graceful" else lab.power_off(t.active.name)

    def journals(t: Trial):
        return [t.standby, client] + ([t.active] if fault == "graceful" else [])

    def restore(t: Trial) -> None:
        step = _Steps(t, "restore")
        hb.wait_settled(t.standby)  # no rejoin while the survivor is still taking over
        step("survivor settled")
        if fault == "power":
            lab.power_on(t.active.name)
            step("boot")
            drbd_rejoin(resources, t.active)
            step("DRBD rejoin")
        hb.join(t.active)
        step("heartbeat join")
        drbd_wait_healthy(resources, t.active, 600)
        step("DRBD in sync")
        hb.wait_pair_settled()
        step("heartbeat settled")

    return Experiment(
        label or f"heartbeat {fault}", probe=probe or _write_probe(client, label or fault, hz),
        fault=injector if inject is None else inject,
        prepare=prepare, during=during, verify=_every_probe_read_back, restore=restore, marks=marks, journals=journals,
        diagnose=lambda t, e: state_report(lab, since=(t.fault_time or time.time()) - 5),
        before_s=before_s, after_s=after_s, timeout_s=timeout_s)


def raid_member_failure(client, mirror, member: str = "/dev/ubdc", *, before_s: float = 2,
                        after_s: float = 2, hz: float = 100) -> Experiment:
    """An md RAID1 member marked faulty while the client writes to the array; then the member is
    replaced and the mirror rebuilt.  No outage is expected.  Row: ``downtime_s``,
    ``slowest_write_ms``, ``degraded_map``, ``rebuild_s``, ``acked``, ``lost_acked``."""

    def during(t: Trial) -> None:
        t.row["degraded_map"] = mirror.mdstat()["map"]
        t.row["rebuild_s"] = mirror.replace(member)

    def slowest(t: Trial) -> dict:
        out = lost_writes()(t)
        return {"slowest_write_ms": float(1000 * (t.log.recv - t.log.sent).max()), **out}

    return Experiment("RAID1 member failure",
                      probe=lambda t: probes.write(client, mirror.md, hz=hz, name=f"raid-{t.index}"),
                      fault=lambda t: mirror.fail(member), recovered=None, during=during, verify=slowest,
                      before_s=before_s, after_s=after_s, pick="first")


def drbd_protocol_loss(lab, drbd, protocol: str, *, delay_ms: int = 100, before_s: float = 3,
                       hz: float = 100) -> Experiment:
    """The primary (iscsi-server0) writes straight to /dev/drbd0 over a link with ``delay_ms`` of
    one-way delay and loses power; the survivor is promoted and the acknowledged writes are read
    back there.  Then the old primary boots, resyncs from the survivor and is primary again.
    Row: ``protocol``, ``acked``, ``lost_acked``, ``rpo_s``."""
    return drbd_protocols_loss(lab, {protocol: drbd}, delay_ms=delay_ms, before_s=before_s, hz=hz,
                               set_protocol=True)


def protocol_replicas(drbd, disks=("/dev/ubdc", "/dev/ubdd", "/dev/ubde"), initial_sync: bool = False) -> dict:
    """One small DRBD resource per protocol (``proto-a``, ``proto-b``, ``proto-c``: minors 1-3,
    ports after ``drbd``'s) between ``drbd``'s two hosts, each with its protocol in its own
    resource file, created and in sync, primary on the first host: so that one power failure
    hits all three protocols at the same instant, and three writers measure them side by side.
    ``initial_sync=False``: the lab's disks are fresh and all zeros on both sides, nothing to
    copy (:meth:`Drbd.create`)."""
    from ..services.drbd import Drbd

    out = {}
    for i, (pr, disk) in enumerate(zip("ABC", disks), start=1):
        r = Drbd(drbd.hosts, drbd.addresses, disk=disk, name=f"proto-{pr.lower()}", device=f"/dev/drbd{i}",
                 port=drbd.port + i, protocol=pr, own_protocol=True, net=dict(drbd.net),
                 disk_options=dict(drbd.disk_options))
        r.create(initial_sync=initial_sync)
        out[pr] = r
    return out


def drbd_protocols_loss(lab, replicas: Mapping, *, delay_ms: int = 100, before_s: float = 3, hz: float = 100,
                        also=(), set_protocol: bool = False) -> Experiment:
    """The primary (iscsi-server0) writes to each resource of ``replicas`` (``{protocol: Drbd}``,
    see :func:`protocol_replicas`), one writer per resource, over a link with ``delay_ms`` of
    one-way delay, and loses power; the survivor promotes every resource and the acknowledged
    writes are read back there.  Then the old primary boots, every resource (and those in
    ``also``: other resources of the host, such as ``r0``) rejoins and resyncs from the survivor,
    and the old primary is primary again where it was before.  ``set_protocol``: give each
    resource its protocol first (``drbd.set_protocol``), for a single resource switched between
    protocols.

    Row: per protocol P ``P acked``, ``P lost_acked``, ``P rpo_s`` (with one resource:
    ``protocol``, ``acked``, ``lost_acked``, ``rpo_s``); ``t.losses[P]`` holds each loss."""
    server0, server1 = lab[SERVERS[0]], lab[SERVERS[1]]
    replicas = dict(replicas)
    single = len(replicas) == 1

    def name(pr: str) -> str:
        return f"protocol {pr}"

    def prepare(t: Trial) -> None:
        for pr, r in replicas.items():
            if set_protocol:
                r.set_protocol(pr)
        set_delay(server0, delay_ms)
        t.was_primary = [r for r in also if getattr(r.state(server0), "role", None) == "Primary"]
        if single:
            t.row["protocol"] = next(iter(replicas))

    def probe(t: Trial) -> dict:
        return {name(pr): probes.write(server0, r.device, hz=hz, name=f"proto-{pr}-{t.index}", log_sync=0,
                                       duration=300) for pr, r in replicas.items()}

    def fault(t: Trial) -> float:
        off = lab.power_off(SERVERS[0])
        # it boots while the survivor takes over: the probes' logs are on its disk, and nothing
        # on it starts DRBD by itself (a boot would not rejoin before the promotion)
        lab.power_on(SERVERS[0], wait=False)
        return off

    def recovered(t: Trial) -> None:
        # the survivor notices the lost peer (ping-int 1 s), then it is promoted by hand
        minors = "|".join(str(r.minor) for r in replicas.values())
        server1.wait_for(f"test $(grep -Ec '^ *({minors}): cs:(WFConnection|StandAlone)' /proc/drbd) -eq "
                         f"{len(replicas)}", timeout=60, interval=0.2)
        server1.run(f"drbdadm primary {' '.join(replicas[pr].name for pr in replicas)}", timeout=60)
        lab.wait_booted(SERVERS[0])

    def verify(t: Trial) -> dict:
        row, t.losses = {}, {}
        for pr in replicas:
            out = lost_writes(host=lambda _: server1, probe=name(pr), to_seq=int(t.logs[name(pr)].seq.max()))(t)
            t.losses[pr] = t.loss
            row.update(out if single else {f"{pr} {k}": v for k, v in out.items()})
        return row

    def restore(t: Trial) -> None:
        # the old primary rejoins as secondary, resyncs from the survivor, is primary again
        names = " ".join(r.name for r in replicas.values())
        server1.run(f"drbdadm secondary {names}", timeout=60)
        drbd_rejoin([*replicas.values(), *also], server0)
        server0.run(f"drbdadm primary {' '.join([names, *(r.name for r in t.was_primary)])}", timeout=60)

    what = f"DRBD protocol {next(iter(replicas))}" if single else f"DRBD protocols {', '.join(replicas)}"
    return Experiment(
        what, prepare=prepare, probe=probe, fault=fault, recovered=recovered,
        verify=verify, restore=restore, before_s=before_s, after_s=0, stall_s=None, pick="first", downtime=False)


def protocol_table(run) -> "pd.DataFrame":
    """The trials of :func:`drbd_protocols_loss` as one row per protocol and trial."""
    import pandas as pd

    rows = []
    for _, r in run.trials.iterrows():
        for pr in "ABC":
            if f"{pr} acked" in r:
                rows.append({"protocol": pr, "trial": r["trial"], "acked": r[f"{pr} acked"],
                             "lost_acked": r[f"{pr} lost_acked"], "rpo_s": r[f"{pr} rpo_s"]})
    return pd.DataFrame(rows)


def set_delay(host, ms: int, iface: str = "eth0") -> None:
    """Extra one-way delay on a host's NIC (netem), or none with ``ms=0``."""
    if ms:
        host.run(f"tc qdisc replace dev {iface} root netem delay {int(ms)}ms")
    else:
        host.run(f"tc qdisc del dev {iface} root 2>/dev/null; true")


def shape_port(host, netem: str | None, port: int | Sequence[int] = 7789, iface: str = "eth0") -> None:
    """Apply a netem discipline (``"delay 100ms"``, ``"loss 100%"``) to the traffic of one TCP
    port (or several), DRBD's replication by default, leaving the host's other traffic (the
    client's iSCSI session) as it is; ``None`` removes it."""
    if not netem:
        host.run(f"tc qdisc del dev {iface} root 2>/dev/null; true")
        return
    ports = [port] if isinstance(port, int) else list(port)
    filters = " && ".join(f"tc filter add dev {iface} parent 1: protocol ip prio {3 + i} u32 match ip {d} {p} 0xffff "
                          "flowid 1:3" for i, (p, d) in enumerate((p, d) for p in ports for d in ("dport", "sport")))
    host.run(f"tc qdisc del dev {iface} root 2>/dev/null; tc qdisc replace dev {iface} root handle 1: prio && "
             f"tc qdisc replace dev {iface} parent 1:3 handle 30: netem {netem} && {filters}")


def corosync_noise(hosts, since: float) -> dict:
    """What corosync logged on ``hosts`` since ``since``: membership changes ("Members left":
    a node declared dead) and the longest time its main process was not scheduled.  Read
    before a fault, both must be zero and short: a node lost while nobody failed is a false
    alarm, and in a cluster without fencing a false alarm is a split brain."""
    left, stall = 0, 0.0
    for h in hosts:
        out = h.run(f"journalctl -o cat --no-pager --since=@{since:.3f} -t corosync | "
                    "grep -E 'Members left|not scheduled' ; true", timeout=30).stdout
        left += sum("Members left" in line for line in out.splitlines())
        for m in re.finditer(r"not scheduled \(@\d+\) for ([0-9.]+) ms", out):
            stall = max(stall, float(m.group(1)))
    return {"membership changes before the fault": left, "longest corosync stall (ms)": round(stall)}


def pacemaker_failover(lab, pm, drbd, *, before_s: float = 2, after_s: float = 2, quiet_s: float = 20,
                       timeout_s: float = 240, hz: float = 100) -> Experiment:
    """corosync + pacemaker: power off the node that serves the disk while the client writes;
    the node boots again and rejoins by itself (corosync and pacemaker are enabled).

    ``quiet_s``: wait that long after the cluster is complete before the fault, so that the
    returning node's first monitor operations (start-delay) do not run during the failover.

    Row: ``from``, ``to``, ``downtime_s``, the lost writes and phases, and what corosync logged
    between the previous trial's restore and this fault (:func:`corosync_noise`).  A trial
    whose disk moved before the fault fails, naming the move, instead of timing nothing."""
    from ..services.pacemaker import PHASE_MARKS

    client = lab[CLIENT]
    servers = {h: lab[h] for h in SERVERS}
    restored = {"at": None}

    def prepare(t: Trial) -> None:
        step = _Steps(t, "prepare")
        since = restored["at"] or time.time()
        pm.wait_online(timeout=600)
        step("both online")
        pm.wait_started(600)
        step("all started")
        victim = pm.active()
        survivor = servers[SERVERS[1] if victim == SERVERS[0] else SERVERS[0]]
        drbd.wait_healthy(600, host=survivor)
        step("DRBD in sync")
        time.sleep(quiet_s)
        t.set(victim=victim, survivor=survivor, since=since)
        t.row.update({"from": victim, "to": survivor.name})

    def fault(t: Trial) -> float:
        t.row.update(corosync_noise(servers.values(), t.since))
        now = pm.active()
        if now != t.victim:
            raise RuntimeError(f"the disk moved from {t.victim} to {now} before the fault "
                               f"({t.row['membership changes before the fault']} membership changes)")
        return lab.power_off(t.victim)

    def restore(t: Trial) -> None:
        restored["at"] = time.time()
        lab.power_on(t.victim)

    return Experiment(
        "pacemaker power failure", prepare=prepare, probe=_write_probe(client, "pacemaker", hz),
        fault=fault, verify=lost_writes(), restore=restore, marks=PHASE_MARKS,
        journals=lambda t: [t.survivor, client],
        diagnose=lambda t, e: state_report(lab, since=getattr(t, "since", time.time() - 60)),
        before_s=before_s, after_s=after_s, timeout_s=timeout_s)


#: Log lines that tell a failed failover's story, layer by layer (for the chapter's evidence).
EVIDENCE_PATTERNS = (
    r"msg2string|zero fields|is dead|takeover complete|Resources being acquired|transition",
    r"session recovery timed out|detected conn error|operational after recovery|connection\d+:\d+",
    r"I/O error|rejecting I/O|EXT4-fs (error|warning)|Remounting filesystem read-only|Aborting journal",
    r"role\( |pdsk\( |conn\( ",
)


def flake_study_table():
    """One row per recorded run of ``scripts/try_storage.py --record`` (results/studies)."""
    import pandas as pd

    from .. import studies

    rows = []
    for r in studies.load("heartbeat-failover"):
        st = r.get("settings", {})
        d = pd.Series(r.get("downtime_s") or [float("nan")])
        rows.append({"when (UTC)": r["when"].replace("T", " ").rstrip("Z"), "failure": st.get("fault"),
                     "haresources": st.get("haresources"), "ha_clustermsg": st.get("ha_clustermsg"),
                     "trials run": r["completed"] + len(r.get("errors") or []), "failed": len(r.get("errors") or []),
                     "trials with EROFS": r.get("erofs"), "lost acked writes": r.get("lost_acked"),
                     "downtime min/median/max (s)": f"{d.min():.1f} / {d.median():.1f} / {d.max():.1f}",
                     "evidence": r.get("evidence") or ""})
    return pd.DataFrame(rows)


def evidence_lines(name: str, limit: int = 60) -> str:
    """The lines of a saved evidence file that match :data:`EVIDENCE_PATTERNS`, with the
    ``###`` headers that say which host and command they come from."""
    import re

    from .. import studies

    rx = re.compile("|".join(EVIDENCE_PATTERNS))
    out = []
    for line in studies.evidence(name).splitlines():
        if line.startswith("### ") or rx.search(line):
            out.append(line)
    # drop headers with nothing under them
    kept = [l for i, l in enumerate(out) if not (l.startswith("### ") and (i + 1 == len(out) or out[i + 1].startswith("### ")))]
    return "\n".join(kept[:limit])


def show_flake_study() -> None:
    """Display the recorded runs and the evidence of the failed one(s) (for chapter 2)."""
    from IPython.display import Markdown, display

    table = flake_study_table()
    if table.empty:
        display(Markdown("*No run of `scripts/try_storage.py --record` is recorded in `results/studies/`.*"))
        return
    display(table)
    for name in [e for e in table["evidence"] if e]:
        display(Markdown(f"Evidence kept from the failed run (`results/studies/{name}`), the lines that tell the story:"))
        print(evidence_lines(name))


def pacemaker_study_table():
    """One row per recorded run of ``scripts/try_pacemaker.py --record`` (results/studies)."""
    import pandas as pd

    from .. import studies

    rows = []
    for r in studies.load("pacemaker-failover"):
        st = r.get("settings", {})
        d = pd.Series(r.get("downtime_s") or [float("nan")])
        rows.append({"when (UTC)": r["when"].replace("T", " ").rstrip("Z"),
                     "token / consensus (ms)": f"{st.get('corosync token (ms)')} / {st.get('consensus (ms)')}",
                     "trials run": r["trials"], "failed": len(r.get("errors") or []),
                     "membership changes before a fault": sum(r.get("membership_changes_before_fault") or []),
                     "longest corosync stall (ms)": max(r.get("longest_corosync_stall_ms") or [0]),
                     "lost acked writes": r.get("lost_acked"),
                     "downtime min/median/max (s)": f"{d.min():.1f} / {d.median():.1f} / {d.max():.1f}"})
    return pd.DataFrame(rows)


#: The lines of the pacemaker evidence files that tell the story.
PACEMAKER_EVIDENCE = r"not scheduled|Members left|processor failed|ns:0 |device_mgmt|Power-on or device reset|^# "


def show_pacemaker_study() -> None:
    """The pacemaker flake of chapter 4 (section 4.1, chapter 2's storage pair on the modern
    stack): the failed run's evidence, corosync's log of the cause, and the recorded runs since
    the fix."""
    import re

    from IPython.display import Markdown, display

    from .. import studies

    rx = re.compile(PACEMAKER_EVIDENCE)
    for name, what in (("pacemaker-no-outage-20261203.txt", "The failed run (`sudo make`, 3 Dec 2026)"),
                       ("pacemaker-token-1000-flaps-20261203.txt", "corosync's log with a 1000 ms token")):
        try:
            text = studies.evidence(name)
        except FileNotFoundError:
            continue
        display(Markdown(f"{what}, from `results/studies/{name}`:"))
        print("\n".join(line[:200] for line in text.splitlines() if rx.search(line))[:6000])
    table = pacemaker_study_table()
    if table.empty:
        display(Markdown("*No run of `scripts/try_pacemaker.py --record` is recorded in `results/studies/`.*"))
    else:
        display(table)


def heartbeat_detection(lab, hb, *, before_s: float = 2, after_s: float = 1, hz: float = 100) -> Experiment:
    """Power off the active heartbeat node while the client pings the service address; the
    ``detection (s)`` phase is the time from the power cut to the survivor's "is dead".  The
    dead node boots and rejoins as standby afterwards."""
    client = lab[CLIENT]
    vip = "192.168.103.36"

    def prepare(t: Trial) -> None:
        active = lab[hb.active()]
        t.set(active=active, survivor=next(h for h in hb.hosts if h is not active))

    def restore(t: Trial) -> None:
        lab.power_on(t.active.name)
        hb.join(t.active)
        hb.wait_pair_settled()

    return Experiment("heartbeat detection", prepare=prepare,
                      probe=lambda t: probes.icmp(client, vip, hz=hz, name=f"detect-{t.index}"),
                      fault=lambda t: lab.power_off(t.active.name), restore=restore,
                      marks={"detection": r"is dead"}, journals=lambda t: [t.survivor], final_phase="takeover",
                      before_s=before_s, after_s=after_s, stall_s=None, pick="first")


def stalled_power_failure(lab, stall_s: float = 0.2, ports: int | Sequence[int] = 7789):
    """A fault for :func:`heartbeat_failover`: DRBD's replication traffic of the active server
    stops (every packet on its port, or ``ports`` for several resources, dropped), and
    ``stall_s`` later the server loses power.  The client's next write is then certainly in
    flight: its data sent, its cache flush waiting for the replication, when the power goes: the
    case a cache in the target gets wrong.  Returns the time of the power failure (the client's
    outage begins at the stall)."""

    def fault(t: Trial) -> float:
        shape_port(t.active, "loss 100%", ports)
        t.event(time.time(), "hautils: replication stalled")
        time.sleep(stall_s)
        return lab.power_off(t.active.name)

    return fault
