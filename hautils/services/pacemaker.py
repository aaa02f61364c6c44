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
from pathlib import Path
from typing import Any

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
        # a node that rejoined is "online" before its controller has joined ("pending"): not yet
        # a member that can run anything, and ``crm_mon`` still shows it as pending
        online=[n.get("name") for n in nodes if n.get("online") == "true" and n.get("pending") != "true"],
        offline=[n.get("name") for n in nodes if n.get("online") != "true" or n.get("pending") == "true"],
        resources=res,
    )


def unprobed(cib_xml: str) -> dict[str, list[str]]:
    """``{node: [what it still lacks]}`` for every node of the configuration (``cibadmin -Q``):
    ``"offline"`` until its controller is a member, then the resource ids it has no operation
    history for (not yet probed).  Empty when every node is online and has probed everything."""
    root = ET.fromstring(cib_xml)
    ids = [p.get("id") for p in root.iter("primitive") if p.get("id")]
    states = {ns.get("uname"): ns for ns in root.iter("node_state")}
    out: dict[str, list[str]] = {}
    for node in root.findall("./configuration/nodes/node"):
        name = node.get("uname")
        ns = states.get(name)
        in_ccm = ns.get("in_ccm", "") if ns is not None else ""  # "true", or (>= 2.1.7) when it joined
        if ns is None or ns.get("crmd") != "online" or not (in_ccm == "true" or in_ccm.isdigit()):
            out[name] = ["offline"]
            continue
        seen = {r.get("id") for r in ns.iter("lrm_resource")}
        missing = [i for i in ids if i not in seen]
        if missing:
            out[name] = missing
    return out


@dataclass
class Cluster:
    """corosync 3 + pacemaker 2 on any number of nodes: the membership and everything that does
    not depend on what the cluster runs (install, load a crm configuration, verify, state).
    Subclasses say what runs: :meth:`crm_config` and :meth:`started`.

    ``hosts`` are ``hautils.ssh.Host`` objects, ``addresses`` their cluster (ring0) addresses,
    same order.  Two nodes get corosync's ``two_node`` (the survivor keeps quorum alone); three
    or more vote: a partition keeps quorum only with a majority."""

    hosts: list
    addresses: list[str]
    cluster_name: str = "hal"
    # corosync's own default.  A 1000 ms token flapped in this lab: a booting UML guest's
    # corosync was not scheduled for up to 2.3 s (its log says so), the membership broke while
    # both nodes were up, and without fencing the rejoining node could promote itself (seen
    # once: the disk moved away seconds before a planned power failure; chapter 2)
    token_ms: int = 3000
    # corosync's default is 1.2 x token; anything above the join timeout (50 ms) and below the
    # token is safe (corosync.conf(5)), and it adds to every detection
    consensus_ms: int | None = 1000
    # s a starting node waits for a DC before an election (pacemaker's default 20 s); written
    # into a fresh CIB before the first start (None: leave pacemaker's default and any old CIB)
    dc_deadtime_s: int | None = 2
    authkey: bytes = field(default_factory=lambda: secrets.token_bytes(256), repr=False)

    #: stopped on every node before corosync is (re)configured
    STOP_FIRST = "pacemaker corosync"
    CRM_FILE = "/etc/corosync/hautils.crm"  # the loaded configuration, kept for readers

    def __post_init__(self) -> None:
        if len(self.hosts) != len(self.addresses) or len(self.hosts) < 2:
            raise ValueError(f"a cluster needs two or more nodes, one address each: {len(self.hosts)} hosts, "
                             f"{len(self.addresses)} addresses")
        if self.token_ms < 1000:
            # UML guests miss their timers by up to seconds under load: shorter tokens declare
            # healthy nodes dead all the time (and 1000 ms already did now and then)
            raise ValueError(f"token_ms={self.token_ms}: keep it >= 1000 ms in this lab (UML timer noise)")

    @property
    def consensus(self) -> int:
        return self.consensus_ms if self.consensus_ms is not None else round(1.2 * self.token_ms)  # corosync's rule

    def crm_config(self) -> str:
        raise NotImplementedError

    def started(self, st: ClusterState) -> bool:
        raise NotImplementedError

    def corosync_conf(self) -> str:
        nodes = [{"name": h.name, "address": a} for h, a in zip(self.hosts, self.addresses)]
        # corosync adds token_coefficient (650 ms) per node above two to the token
        note = (f"\n    # (+ token_coefficient, 650 ms, per node above two: {self.token_ms + 650 * (len(nodes) - 2)} ms)"
                if len(nodes) > 2 else "")
        return render("corosync.conf.j2", cluster_name=self.cluster_name, nodes=nodes,
                      token=self.token_ms, consensus=self.consensus, two_node=len(nodes) == 2, token_note=note)

    def _prepare_node(self, h) -> None:
        """Before corosync is configured on ``h`` (subclasses stop what the cluster takes over)."""
        h.run(f"systemctl stop {self.STOP_FIRST}", timeout=120)

    # -- life cycle ---------------------------------------------------------------------------

    def install(self, timeout: float = 180) -> float:
        """Write corosync.conf and the shared authkey on every node, check them with
        ``corosync -t``, start corosync and pacemaker (enabled: a node that boots again rejoins
        by itself) on all nodes at once and wait until all are online.  Returns the seconds
        it took.  With ``dc_deadtime_s`` the CIB starts fresh, with that property set (checked
        with ``crm_verify --xml-file``).

        Stops what the cluster takes over first (:meth:`_prepare_node`)."""
        t0 = time.time()
        conf = self.corosync_conf()
        cib = render("cib-seed.xml.j2", dc_deadtime_s=self.dc_deadtime_s)

        def prepare(h) -> None:
            self._prepare_node(h)
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

        # all nodes at once: a node started alone waits for its peers
        on_each(prepare, self.hosts)
        on_each(lambda h: h.run("systemctl restart pacemaker", timeout=120), self.hosts)
        self.wait_online(timeout=timeout)
        return time.time() - t0

    def configure(self, timeout: float = 180) -> str:
        """Load the crm configuration (``crm configure load update``), check the live CIB with
        ``crm_verify -L -V`` (raises on errors) and return crm_verify's output."""
        self._load(self.hosts[0], timeout)  # wait_started() waits for what it starts
        return self.verify()

    def _load(self, h, timeout: float) -> None:
        """Write the crm configuration on ``h`` (kept there for readers) and load it with crmsh."""
        h.put(self.CRM_FILE, self.crm_config())
        h.run(f"crm --force configure load update {self.CRM_FILE}", timeout=timeout)

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
        """Wait until ``nodes`` (default: all) are online members with a DC elected."""
        want = set(nodes or [h.name for h in self.hosts])
        return self._wait(lambda st: st.dc is not None and want <= set(st.online),
                          f"nodes {sorted(want)} online", timeout)

    def wait_started(self, timeout: float = 120) -> ClusterState:
        """Wait until every resource is started (see :meth:`started`); raises with the status."""
        return self._wait(self.started, "all resources started", timeout)

    def wait_idle(self, timeout: float = 120) -> None:
        """Wait until every node is online and has probed every resource (the CIB's status
        section holds an operation history for each) and no action is pending (``crm_resource
        --wait``).  A node that has just rejoined probes every resource first: a failure during
        that measures the probes too (seen: 4 s more in a guest failover)."""
        h = self._reachable()
        deadline = time.monotonic() + timeout
        while True:
            missing = unprobed(h.run("cibadmin -Q", timeout=60).stdout)
            if not missing:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"pacemaker: not every node has probed every resource after {timeout:.0f} s: "
                                   f"{missing}\n" + self.diagnostics())
            time.sleep(0.5)
        left = max(1, int(deadline - time.monotonic()))
        res = h.run(f"crm_resource --wait --timeout={left}s", check=False, timeout=left + 30)
        if not res.ok:
            raise TimeoutError(f"pacemaker: actions still pending after {timeout:.0f} s: "
                               f"{(res.stderr or res.stdout).strip()}\n" + self.diagnostics())

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


@dataclass
class Pacemaker(Cluster):
    """A two-node corosync/pacemaker cluster serving DRBD ``drbd_resource`` over iSCSI at ``vip``.

    The DRBD resource must exist already (``Drbd.create()``), Secondary on both nodes: from
    ``configure()`` on, pacemaker alone promotes and demotes it."""

    cluster_name: str = "hal-storage"
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
    node_action_limit: int = 8

    STOP_FIRST = "pacemaker corosync heartbeat tgt"
    CRM_FILE = CRM_FILE

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.hosts) != 2:
            raise ValueError("this cluster has exactly two nodes and two addresses")

    def _prepare_node(self, h) -> None:  # (a plain enable or disable reloads systemd: ~10 s in a UML guest)
        h.run(f"systemctl stop {self.STOP_FIRST}; systemctl is-enabled -q tgt 2>/dev/null && "
              "systemctl disable --no-reload tgt; true", timeout=120)

    def crm_config(self) -> str:
        return render("crm-storage.crm.j2", drbd_resource=self.drbd_resource, iqn=self.iqn, tid=self.tid,
                      allowed_initiators=self.allowed_initiators, tgt_bsoflags=self.tgt_bsoflags,
                      lun=self.lun, device=self.device, vip=self.vip, prefix=self.prefix, iface=self.iface,
                      op_timeout=self.op_timeout, action_timeout=self.action_timeout, drbd_timeout=self.drbd_timeout, monitor_s=self.monitor_s,
                      drbd_notify=self.drbd_notify, monitor_delay_s=self.monitor_delay_s,
                      load_threshold=self.load_threshold, node_action_limit=self.node_action_limit)

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

    def active(self) -> str | None:
        """The node that serves the disk: where the service address runs (and, by the
        colocation, the DRBD Primary); None when nowhere."""
        ip = self.state().running("p_ip")
        return ip[0] if ip else None


#: Where a guest failover spends its time, from the survivors' journals (chapter 4, the thesis's
#: cluster): membership, the DC's decision, the fence that makes taking over safe, the disk.
#: The last phase, up to the guest's first answer, is the container's start: the DC's next
#: action, the container agent and ``lxc-start`` (``final="container start"``); the guest's web
#: service comes after it.
GUEST_PHASE_MARKS = {
    "corosync detection": r"\[TOTEM \] A new membership .* was formed",
    "pacemaker decision": r"Requesting peer fencing \((off|reboot)\) targeting",
    "fencing": r"Operation '(off|reboot)' targeting \S+ by \S+ for .*: OK",
    "mount": r"Result of start operation for p_fs on .*: ok",
}


@dataclass
class GuestCluster(Cluster):
    """The thesis's cluster (section 4.3) on today's stack: three nodes that run one LXC
    container whose root filesystem is a shared iSCSI disk, fenced through the lab's virtual BMC.

    Every node is logged in to the disk all the time (a SAN, as the thesis's nodes were);
    pacemaker mounts it on one node (``ocf:heartbeat:Filesystem``) and starts the container
    from it (``ocf:heartbeat:lxc``), in a group.  The container has its own address
    (``guest_ip``) on the nodes' network through a macvlan NIC with a fixed MAC, so the address
    and the MAC move with it.

    **Fencing is on** (``stonith-enabled=true``): one ``stonith:fence_redfish`` device per node,
    pointing at that node's system on the BMC (``bmc``: :class:`hautils.lab.bmc.Bmc`) and kept
    off the node it fences.  Before the survivors mount the disk, the node that had it must be
    known to be off: a node that only *looks* dead (a stalled kernel, a cut cluster link) and
    still has the ext4 mounted would otherwise write to it together with the new owner, and
    ext4 is not a cluster filesystem.  ``stonith_action="off"``: a fenced node stays off until
    someone (the trial's restore) powers it on, as a node with an unknown fault should.

    ::

        nodes = [lab["node0"], lab["node1"], lab["node2"]]
        gc = GuestCluster(nodes, ["192.168.103.85", "192.168.103.98", "192.168.103.92"],
                          bmc=lab.bmc(), portal="192.168.103.97")
        gc.prepare()      # iSCSI login and the container's config on every node
        gc.install(); gc.configure(); gc.wait_started()
        gc.active()       # the node that runs the guest
    """

    cluster_name: str = "hal-cluster"
    bmc: Any = None
    portal: str = "192.168.103.97"
    iqn: str = IQN
    guest: str = "guest"
    guest_ip: str = "192.168.103.99"
    guest_mac: str = "02:00:c0:a8:67:63"  # locally administered, the address's last bytes
    prefix: int = 24
    iface: str = "eth0"
    # the LUN's ext4 carries this label (hautils.lab.container.make_disk): found by udev on any node
    device: str = "/dev/disk/by-label/guest"
    # None: the guest's own /sbin/init (systemd); else a program to run as its init
    # (hautils.lab.container.LEAN_INIT: the web service alone)
    init: str | None = None
    # the container's resource agent: the stock ``ocf:heartbeat:lxc`` (after ``Filesystem`` in a
    # group), or ``ocf:hautils:container`` (hautils/services/files/container.ocf: mount,
    # lxc-start and lxc-wait in one lean run, without the stock agents' 2-5 s of start-up work
    # each in a UML guest)
    agent: str = "ocf:heartbeat:lxc"
    stonith_action: str = "off"
    no_quorum_policy: str = "stop"
    monitor_s: int = 10
    op_timeout: int = 20
    action_timeout: int = 60
    load_threshold: int = 400  # %, as in Pacemaker: a UML guest has one CPU
    node_action_limit: int = 8

    STOP_FIRST = "pacemaker corosync"
    AGENTS = {"ocf:heartbeat:lxc": None, "ocf:hautils:container": "container.ocf"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bmc is None:
            raise ValueError("GuestCluster fences through a BMC: pass bmc=lab.bmc() "
                             "(this cluster does not run without fencing)")
        if self.agent not in self.AGENTS:
            raise ValueError(f"agent={self.agent!r}: one of {', '.join(self.AGENTS)}")

    @property
    def config_path(self) -> str:
        """lxc's own place for it: ``lxc-ls``, ``lxc-info -n guest`` and ``lxc-attach`` find it."""
        return f"/var/lib/lxc/{self.guest}/config"

    @property
    def mountpoint(self) -> str:
        return f"/var/lib/lxc/{self.guest}/rootfs"

    def lxc_config(self) -> str:
        return render("lxc-guest.conf.j2", guest=self.guest, rootfs=self.mountpoint, init=self.init,
                      iface=self.iface, mac=self.guest_mac, ip=self.guest_ip, prefix=self.prefix)

    def crm_config(self) -> str:
        fence = [{"node": h.name, "params": self.bmc.fence_params(h.name)} for h in self.hosts]
        return render("crm-guest.crm.j2", fence=fence, stonith_action=self.stonith_action,
                      no_quorum_policy=self.no_quorum_policy, device=self.device, mountpoint=self.mountpoint,
                      guest=self.guest, config=self.config_path, agent=self.agent, monitor_s=self.monitor_s, op_timeout=self.op_timeout,
                      action_timeout=self.action_timeout, load_threshold=self.load_threshold,
                      node_action_limit=self.node_action_limit)

    def prepare(self, initiator_kw: dict | None = None) -> None:
        """On every node: log in to the disk (again at every boot: open-iscsi and iscsid are
        enabled, the node record says ``automatic``), write the container's config and check
        that lxc parses it."""
        from .iscsi import Initiator

        conf = self.lxc_config()

        def one(h) -> None:
            ini = Initiator(h, self.portal, self.iqn, **(initiator_kw or {}))
            ini.install()
            ini.login()
            h.run(f"iscsiadm -m node -T {self.iqn} -p {self.portal} -o update -n node.startup -v automatic && "
                  "systemctl enable --no-reload -q iscsid.service open-iscsi.service && "
                  f"mkdir -p {self.mountpoint} && for i in $(seq 50); do [ -e {self.device} ] && break; "
                  "sleep 0.1; done; test -e " + self.device, timeout=60)
            h.put(self.config_path, conf)
            self.check_config(h)
            if self.AGENTS[self.agent]:
                self.install_agent(h)

        on_each(one, self.hosts)

    def retune(self, timeout: float = 300, **changes: Any) -> float:
        """Change the running cluster's settings (``token_ms``, ``consensus_ms``, ``init``,
        ``agent``...): corosync.conf is rewritten on every node and reloaded (``corosync-cfgtool
        -R``: new timers without a restart), the container's config too; the guest is stopped,
        the resources that go are deleted, the new configuration loaded and the guest started
        again.  Returns the seconds taken."""
        t0 = time.time()
        was = self._top()
        for k, v in changes.items():
            if k not in self.__dataclass_fields__ or k in ("hosts", "addresses", "authkey", "bmc"):
                raise ValueError(f"retune: {k!r} is not a setting of GuestCluster")
            setattr(self, k, v)
        self.__post_init__()
        conf, lxc = self.corosync_conf(), self.lxc_config()

        def one(h) -> None:
            h.put(CONF, conf)
            res = h.run("corosync -t", check=False, timeout=60)
            if not res.ok:
                raise CommandError(h.name, "corosync -t", res.exit_status, res.stdout, f"{CONF} rejected: {res.stderr.strip()}")
            h.put(self.config_path, lxc)
            self.check_config(h)
            if self.AGENTS[self.agent]:
                self.install_agent(h)

        on_each(one, self.hosts)
        h = self._reachable()
        h.run("corosync-cfgtool -R", timeout=60)
        # the old guest is killed first: the stock lxc agent's stop of the systemd guest took 65 s
        # here (a reconfiguration, not a measurement).  Then pacemaker's own tools, not crmsh
        # (seconds per call in a UML guest)
        where = self.active()
        if where:
            next(n for n in self.hosts if n.name == where).run(f"lxc-stop -n {self.guest} -k", check=False, timeout=60)
        h.run(f"crm_resource -r {was} --meta -p target-role -v Stopped", timeout=60)
        self._wait(lambda st: not st.running("p_guest") and not st.running("p_fs"), "guest stopped", timeout)
        h.run(f"crm_resource --wait --timeout={int(timeout)}s", timeout=timeout + 30)
        if was != self._top():  # the old resource goes with its members (crmsh's load only adds and changes)
            tag = "group" if was == "g_guest" else "primitive"
            h.run(f"cibadmin --delete --xml-text '<{tag} id=\"{was}\"/>'", timeout=60)
        self._load(h, 120)
        if was == self._top():  # the same resource: clear the stop
            h.run(f"crm_resource -r {was} --meta -d target-role", timeout=60)
        self.verify()
        self.wait_started(timeout)
        return time.time() - t0

    def _top(self) -> str:
        """The resource that holds the guest: the group, or the lean agent's one primitive."""
        return "p_guest" if self.agent == "ocf:hautils:container" else "g_guest"

    def check_config(self, h) -> str:
        """lxc's own parser: ``lxc-info`` loads the file and prints one key from it."""
        conf = self.config_path
        res = h.run(f"lxc-info -n {self.guest} --rcfile {conf} -c lxc.net.0.ipv4.address", check=False, timeout=30)
        if not res.ok or self.guest_ip not in res.stdout:
            raise CommandError(h.name, f"lxc-info --rcfile {conf}", res.exit_status, res.stdout,
                               f"{conf}: lxc did not parse it: {(res.stderr or res.stdout).strip()}")
        return res.stdout

    def install_agent(self, h) -> str:
        """Install ``ocf:hautils:container`` and check that pacemaker reads its meta-data."""
        provider, kind = self.agent.split(":")[1:]
        path = f"/usr/lib/ocf/resource.d/{provider}/{kind}"
        h.put(path, (Path(__file__).parent / "files" / self.AGENTS[self.agent]).read_text(), mode=0o755)
        res = h.run(f"crm_resource --show-metadata {self.agent}", check=False, timeout=60)
        if not res.ok or "<resource-agent" not in res.stdout:
            raise CommandError(h.name, f"crm_resource --show-metadata {self.agent}", res.exit_status, res.stdout,
                               f"{path}: pacemaker cannot read the agent's meta-data: {res.stderr.strip()}")
        return path

    def started(self, st: ClusterState) -> bool:
        """The guest (and its disk) runs on one node, a fence device runs for every node,
        nothing failed."""
        where = st.running("p_guest")
        if st.failed or len(where) != 1:
            return False
        if self.agent != "ocf:hautils:container" and st.running("p_fs") != where:
            return False
        return all(st.running(f"st_{h.name}") for h in self.hosts if h.name in st.online)

    def active(self) -> str | None:
        """The node that runs the guest (None: nowhere)."""
        where = self.state().running("p_guest")
        return where[0] if where else None
