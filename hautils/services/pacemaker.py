"""corosync 3 + pacemaker 2.1: the modern stack: chapter 4 runs chapter 2's storage failover on it.

corosync keeps the membership (who is alive: a node is declared dead when the token has not
come back for ``token`` ms, and a new membership forms ``consensus`` ms later); pacemaker
decides where resources run and drives them through OCF agents: DRBD ``r0`` as a promotable
clone (one Primary), and, on the Primary only, tgt's target, its LUN on ``/dev/drbd0`` and
the service address, in that order.  crmsh loads the configuration as text.

**Lab only: there is no fencing.**  The cluster runs with ``stonith-enabled=false`` and
corosync's ``two_node`` (the survivor keeps quorum alone).  A two-node cluster in production
needs a fence device (IPMI, a PDU, a hypervisor's power switch): without one, a node that only
*looks* dead (a cut cable, a frozen kernel) keeps its resources while the peer takes them over,
and both DRBD sides become Primary (split brain).  Here a failure is a real power-off, so the
dead node cannot write any more; but a node that only *stalls* looks dead too, which is why
the token is 3 s (see ``token_ms``).

::

    s = [lab["iscsi-server0"], lab["iscsi-server1"]]
    addrs = ["192.168.103.99", "192.168.103.91"]
    drbd = Drbd(s, addrs, net={"ping-int": "1"})
    drbd.create(); drbd.secondary(s[0])          # then leave DRBD to pacemaker
    pm = Pacemaker(s, addrs, vip="192.168.103.36")  # token 3000 ms, consensus 1000 ms
    print(pm.corosync_conf()); print(pm.crm_config())
    pm.install(); pm.configure(); pm.wait_started()
    pm.active()                                  # "iscsi-server0" or "iscsi-server1"

``scripts/try_pacemaker.py`` runs the power-failure trials (downtime, lost writes, phases).
"""

from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ..errors import CommandError, HostUnreachable
from ..ssh import on_each
from . import render
from .iscsi import IQN

CONF = "/etc/corosync/corosync.conf"
AUTHKEY = "/etc/corosync/authkey"
CRM_FILE = "/etc/corosync/hautils-storage.crm"  # the loaded configuration, kept for readers
CIB = "/var/lib/pacemaker/cib/cib.xml"

# Where a failover spends its time, as the survivor's journal shows it: phase name -> regex of
# the log line that ends the phase (for ``analysis.phases``).  The last phase, from the address
# up to the client's first fast write, is the client's reconnect (``final="client reconnect"``):
# iscsid's own "operational after recovery" line reaches the journal after the write probe has
# already seen the disk back, so the probe marks the end, not the journal.
PHASE_MARKS = {
    "corosync detection": r"\[TOTEM \] A new membership .* was formed",
    "pacemaker decision": r"Initiating promote operation p_drbd",
    "drbd promote": r"Result of promote operation for p_drbd\S* on .*: ok",
    "target": r"Result of start operation for p_target on .*: ok",
    "LUN": r"Result of start operation for p_lu on .*: ok",
    "IP": r"Result of start operation for p_ip on .*: ok",
}


@dataclass
class ClusterState:
    """What ``crm_mon --output-as=xml`` says, reduced to what the lab needs."""

    dc: str | None
    online: list[str]
    offline: list[str]
    resources: list[dict]  # {"id", "agent", "role", "active", "failed", "node"}

    def running(self, rid: str) -> list[str]:
        return [r["node"] for r in self.resources if r["id"] == rid and r["active"] and r["node"]]

    def role(self, rid: str, node: str) -> str | None:
        for r in self.resources:
            if r["id"] == rid and r["node"] == node:
                return r["role"]
        return None

    @property
    def failed(self) -> list[str]:
        return [f"{r['id']}@{r['node']}" for r in self.resources if r["failed"]]


def parse_crm_mon(xml: str) -> ClusterState:
    root = ET.fromstring(xml)
    dc = root.find("./summary/current_dc")
    nodes = root.findall("./nodes/node")
    res = []
    for r in root.iter("resource"):
        where = [n.get("name") for n in r.findall("node")] or [None]
        for n in where:
            res.append({"id": r.get("id"), "agent": r.get("resource_agent"), "role": r.get("role"),
                        "active": r.get("active") == "true", "failed": r.get("failed") == "true", "node": n})
    return ClusterState(
        dc=dc.get("name") if dc is not None and dc.get("present") == "true" else None,
        online=[n.get("name") for n in nodes if n.get("online") == "true"],
        offline=[n.get("name") for n in nodes if n.get("online") != "true"],
        resources=res,
    )


@dataclass
class Pacemaker:
    """A two-node corosync/pacemaker cluster serving DRBD ``drbd_resource`` over iSCSI at ``vip``.

    ``hosts`` are ``hautils.ssh.Host`` objects, ``addresses`` their cluster (ring0) addresses,
    same order.  The DRBD resource must exist already (``Drbd.create()``), Secondary on both
    nodes: from ``configure()`` on, pacemaker alone promotes and demotes it."""

    hosts: list
    addresses: list[str]
    vip: str = "192.168.103.36"
    prefix: int = 24
    iface: str = "eth0"
    iqn: str = IQN
    tid: int = 1
    lun: int = 1
    # how tgtd opens /dev/drbd0.  "direct" (O_DIRECT): a WRITE is acknowledged once DRBD has it
    # on both nodes.  The default (buffered) acknowledges from the server's page cache and
    # advertises a write-back cache: the client's flush comes next, and if the server dies in
    # between, the client retries the flush on the *new* server, which succeeds - the write is
    # acknowledged to the application and lost (seen in this lab: 1 of 474 writes, RPO > 0).
    # "" = tgt's default; "sync" or "sync:direct" also work.
    tgt_bsoflags: str = "direct"
    # addresses that may log in, space-separated; the agent's empty default lets nobody in
    # with tgt (resource-agents 4.12: ``${allowed_initiators=ALL}`` never fires), so say ALL
    allowed_initiators: str = "ALL"
    device: str = "/dev/drbd0"
    drbd_resource: str = "r0"
    cluster_name: str = "hal-storage"
    # corosync's own default.  A 1000 ms token flapped in this lab: a booting UML guest's
    # corosync was not scheduled for up to 2.3 s (its log says so), the membership broke while
    # both nodes were up, and without fencing the rejoining node could promote itself (seen
    # once: the disk moved away seconds before a planned power failure; chapter 2)
    token_ms: int = 3000
    # corosync's default is 1.2 x token; in a two-node cluster anything above the join timeout
    # (50 ms) and below the token is safe (corosync.conf(5)), and it adds to every detection
    consensus_ms: int | None = 1000
    op_timeout: int = 20  # s, monitors
    # s, every other operation (op_defaults): tgt.service took > 20 s to start on a node that
    # had just booted, the start timed out and pacemaker never retried it there (fail-count)
    action_timeout: int = 60
    drbd_timeout: int = 60  # s, start/stop/promote/demote/notify of the DRBD agent
    monitor_s: int = 10  # s between monitors (the DRBD Unpromoted one 1 s more: intervals must differ)
    # pre/post-promote notifications of the DRBD clone: two more runs of the (slow) DRBD agent
    # per failover (~3 s here).  The agent wants them by default; with False it is told
    # ``ignore_missing_notifications=true`` and skips the peer bookkeeping it does in them
    # (e.g. outdating a stopped peer), which this lab, without fencing, does not rely on
    drbd_notify: bool = True
    # first monitor this many s after a start (``start-delay``) of the resources a failover starts
    # (the promoted DRBD, the group): a UML guest has one CPU, and a monitor that runs at once
    # competes with the next start of the group.  The clones' monitors on a returning node
    # (Unpromoted DRBD, tgtd) start at once: they run while that node rejoins, not in a failover
    monitor_delay_s: int = 0
    # pacemaker throttles itself to one action at a time when the load average nears the
    # (single) CPU of a UML guest; raise the limit so a failover's actions are not serialised
    load_threshold: int = 400  # %
    # s a starting node waits for a DC before an election (pacemaker's default 20 s); written
    # into a fresh CIB before the first start (None: leave pacemaker's default and any old CIB)
    dc_deadtime_s: int | None = 2
    node_action_limit: int = 8
    authkey: bytes = field(default_factory=lambda: secrets.token_bytes(256), repr=False)

    def __post_init__(self) -> None:
        if len(self.hosts) != 2 or len(self.addresses) != 2:
            raise ValueError("this cluster has exactly two nodes and two addresses")
        if self.token_ms < 1000:
            # UML guests miss their timers by up to seconds under load: shorter tokens declare
            # healthy nodes dead all the time (and 1000 ms already did now and then)
            raise ValueError(f"token_ms={self.token_ms}: keep it >= 1000 ms in this lab (UML timer noise)")

    @property
    def consensus(self) -> int:
        return self.consensus_ms if self.consensus_ms is not None else round(1.2 * self.token_ms)  # corosync's rule

    # -- configuration ------------------------------------------------------------------------

    def corosync_conf(self) -> str:
        nodes = [{"name": h.name, "address": a} for h, a in zip(self.hosts, self.addresses)]
        return render("corosync.conf.j2", cluster_name=self.cluster_name, nodes=nodes,
                      token=self.token_ms, consensus=self.consensus)

    def crm_config(self) -> str:
        return render("crm-storage.crm.j2", drbd_resource=self.drbd_resource, iqn=self.iqn, tid=self.tid,
                      allowed_initiators=self.allowed_initiators, tgt_bsoflags=self.tgt_bsoflags,
                      lun=self.lun, device=self.device, vip=self.vip, prefix=self.prefix, iface=self.iface,
                      op_timeout=self.op_timeout, action_timeout=self.action_timeout, drbd_timeout=self.drbd_timeout, monitor_s=self.monitor_s,
                      drbd_notify=self.drbd_notify, monitor_delay_s=self.monitor_delay_s,
                      load_threshold=self.load_threshold, node_action_limit=self.node_action_limit)

    # -- life cycle ---------------------------------------------------------------------------

    def install(self, timeout: float = 180) -> float:
        """Write corosync.conf and the shared authkey on both nodes, check them with
        ``corosync -t``, start corosync and pacemaker (enabled: a node that boots again rejoins
        by itself) on both nodes at once and wait until both are online.  Returns the seconds
        it took.  With ``dc_deadtime_s`` the CIB starts fresh, with that property set (checked
        with ``crm_verify --xml-file``).

        Stops heartbeat and tgt first: from now on only pacemaker starts tgtd and DRBD."""
        t0 = time.time()
        conf = self.corosync_conf()
        cib = render("cib-seed.xml.j2", dc_deadtime_s=self.dc_deadtime_s)

        def prepare(h) -> None:  # (a plain enable or disable reloads systemd: ~10 s in a UML guest)
            h.run("systemctl stop pacemaker corosync heartbeat tgt; systemctl is-enabled -q tgt 2>/dev/null && "
                  "systemctl disable --no-reload tgt; true", timeout=120)
            h.put(CONF, conf)
            h.put(AUTHKEY, self.authkey, mode=0o400)
            res = h.run("corosync -t", check=False, timeout=60)
            if not res.ok:
                raise CommandError(h.name, "corosync -t", res.exit_status, res.stdout,
                                   f"{CONF} rejected by corosync -t: {res.stderr.strip() or res.stdout.strip()}")
            if self.dc_deadtime_s is not None:  # a fresh CIB: the cluster has never run here
                h.run(f"rm -f {CIB}* /var/lib/pacemaker/cib/cib-*", timeout=30)
                h.put(CIB, cib, mode=0o600)
                h.run(f"chown hacluster:haclient {CIB} && crm_verify --xml-file {CIB}", timeout=60)
            h.run("systemctl enable --no-reload corosync pacemaker && systemctl restart corosync", timeout=120)

        # both nodes at once: a node started alone waits for its peer
        on_each(prepare, self.hosts)
        on_each(lambda h: h.run("systemctl restart pacemaker", timeout=120), self.hosts)
        self.wait_online(timeout=timeout)
        return time.time() - t0

    def configure(self, timeout: float = 180) -> str:
        """Load the crm configuration (``crm configure load update``), check the live CIB with
        ``crm_verify -L -V`` (raises on errors) and return crm_verify's output."""
        h = self.hosts[0]
        h.put(CRM_FILE, self.crm_config())
        h.run(f"crm --force configure load update {CRM_FILE}", timeout=timeout)  # wait_started() waits
        return self.verify()

    def verify(self) -> str:
        h = self._reachable()
        res = h.run("crm_verify -L -V", check=False, timeout=60)
        out = (res.stdout + res.stderr).strip()
        if not res.ok or "error" in out.lower():
            raise CommandError(h.name, "crm_verify -L -V", res.exit_status, res.stdout,
                               f"the cluster configuration has errors:\n{out}")
        return out

    # -- state --------------------------------------------------------------------------------

    def _reachable(self, timeout: float = 10):
        last: Exception | None = None
        for h in self.hosts:
            try:
                h.run("true", timeout=timeout)
                return h
            except (HostUnreachable, TimeoutError, OSError) as e:
                last = e
        raise HostUnreachable(" and ".join(h.name for h in self.hosts), f"no cluster node answers: {last}")

    def state(self, host=None) -> ClusterState:
        h = host or self._reachable()
        return parse_crm_mon(h.run("crm_mon -1 --output-as=xml", timeout=60).stdout)

    def diagnostics(self, lines: int = 40) -> str:
        """Every layer on every node, for an error message: one node's ``crm_mon`` shows only
        its own partition, and a node that never joins has its reason in its own journal
        (corosync's membership, pacemaker's daemons)."""
        cmd = ("systemctl is-active corosync pacemaker | paste -sd' '; corosync-cfgtool -s 2>&1; "
               "corosync-quorumtool -s 2>&1 | sed -n '/Membership/,$p'; crm_mon -1 2>&1 | sed -n '/Node List/,/^$/p'; "
               f"journalctl -b -o short-precise --no-pager -u corosync -u pacemaker | tail -n {lines}")
        out: dict[str, str] = {}

        def one(h) -> None:
            try:
                res = h.run(cmd, check=False, timeout=60)
                out[h.name] = (res.stdout + res.stderr).rstrip()
            except Exception as e:  # noqa: BLE001 - a node that does not answer is itself the news
                out[h.name] = f"(no answer: {e})"
        on_each(one, self.hosts)
        return "\n".join(f"===== {h.name}\n{out.get(h.name, '')}" for h in self.hosts)

    def status(self) -> str:
        """``crm_mon -1rf`` as text, for the reader."""
        return self._reachable().run("crm_mon -1rf", timeout=60).stdout

    def wait_online(self, nodes: list[str] | None = None, timeout: float = 180) -> ClusterState:
        """Wait until ``nodes`` (default: both) are online members with a DC elected."""
        want = set(nodes or [h.name for h in self.hosts])
        return self._wait(lambda st: st.dc is not None and want <= set(st.online),
                          f"nodes {sorted(want)} online", timeout)

    def started(self, st: ClusterState) -> bool:
        """Everything runs: the group on the Primary, and on every online node tgtd and a DRBD
        instance (Promoted or Unpromoted); nothing failed."""
        drbd = f"p_drbd_{self.drbd_resource}"
        ip = st.running("p_ip")
        if st.failed or len(ip) != 1 or st.role(drbd, ip[0]) != "Promoted":
            return False
        if any(not st.running(r) or st.running(r) != ip for r in ("p_target", "p_lu")):
            return False
        return all(st.role(drbd, n) in ("Promoted", "Unpromoted") and n in st.running("p_tgtd")
                   for n in st.online)

    def wait_started(self, timeout: float = 120) -> ClusterState:
        """Wait until every resource is started (see :meth:`started`); raises with the status."""
        return self._wait(self.started, "all resources started", timeout)

    def _wait(self, cond, what: str, timeout: float) -> ClusterState:
        deadline = time.monotonic() + timeout
        st = None
        while True:
            try:
                st = self.state()
                if cond(st):
                    return st
            except (CommandError, ET.ParseError, HostUnreachable):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"pacemaker: not {what} after {timeout:.0f} s; last state {st}\n"
                                   + self.diagnostics())
            time.sleep(1.0)

    def active(self) -> str | None:
        """The node that serves the disk: where the service address runs (and, by the
        colocation, the DRBD Primary); None when nowhere."""
        ip = self.state().running("p_ip")
        return ip[0] if ip else None
