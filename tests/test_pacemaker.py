"""The modern stack's configs (corosync.conf, crm configure text) say what the lab needs: no VM."""

from __future__ import annotations

import re

import pytest

from hautils import analysis
from hautils.services import pacemaker
from hautils.services.pacemaker import PHASE_MARKS, Pacemaker, parse_crm_mon


class FakeHost:
    def __init__(self, name):
        self.name = name


def cluster(**kw):
    return Pacemaker([FakeHost("iscsi-server0"), FakeHost("iscsi-server1")], ["192.168.103.99", "192.168.103.91"],
                     **kw)


def test_corosync_conf_two_nodes_without_fencing_quorum_and_tuned_token():
    conf = cluster().corosync_conf()
    assert re.search(r"^\s*two_node: 1$", conf, re.M)
    assert re.search(r"^\s*token: 3000$", conf, re.M)  # corosync's default: 1000 flapped in the lab
    assert re.search(r"^\s*consensus: 1000$", conf, re.M)  # below the token: safe with two nodes
    assert re.search(r"^\s*consensus: 1200$", cluster(token_ms=1000, consensus_ms=None).corosync_conf(), re.M)
    assert re.search(r"^\s*provider: corosync_votequorum$", conf, re.M)
    assert re.search(r"^\s*crypto_cipher: aes256$", conf, re.M)
    for i, (name, addr) in enumerate([("iscsi-server0", "192.168.103.99"), ("iscsi-server1", "192.168.103.91")], 1):
        block = re.search(rf"node {{\n\s*name: {name}\n\s*nodeid: {i}\n\s*ring0_addr: {re.escape(addr)}\n\s*}}", conf)
        assert block, f"node block of {name} missing or on one line (corosync exits 8 then)"


def test_corosync_braces_balance():
    conf = cluster().corosync_conf()
    body = "\n".join(line.split("#")[0] for line in conf.splitlines())
    assert body.count("{") == body.count("}") == 6  # totem, nodelist, 2 x node, quorum, logging


def test_token_below_1000_ms_is_refused():
    with pytest.raises(ValueError, match="token_ms=500"):
        cluster(token_ms=500)
    assert "token: 2000" in cluster(token_ms=2000).corosync_conf()


def test_crm_config_has_the_resources():
    crm = cluster().crm_config()
    assert re.search(r"^primitive p_drbd_r0 ocf:linbit:drbd", crm, re.M)
    assert "params drbd_resource=r0" in crm
    assert re.search(r"^clone ms_drbd_r0 p_drbd_r0", crm, re.M)
    assert re.search(r"promotable=true promoted-max=1 promoted-node-max=1 clone-max=2 clone-node-max=1", crm)
    assert re.search(r"^primitive p_target ocf:heartbeat:iSCSITarget", crm, re.M)
    assert 'implementation=tgt iqn="iqn.2013-11.edu.uoc:ha-disk" tid=1 allowed_initiators="ALL"' in crm
    assert re.search(r"^primitive p_lu ocf:heartbeat:iSCSILogicalUnit", crm, re.M)
    assert 'target_iqn="iqn.2013-11.edu.uoc:ha-disk" lun=1 path=/dev/drbd0 tgt_bsoflags=direct' in crm
    assert "tgt_bsoflags" not in cluster(tgt_bsoflags="").crm_config()  # tgt's buffered default
    assert re.search(r"^primitive p_ip ocf:heartbeat:IPaddr2\s*\\\n\s*"
                     r"params ip=192\.168\.103\.36 cidr_netmask=24 nic=eth0", crm, re.M)
    assert re.search(r"^primitive p_tgtd systemd:tgt", crm, re.M) and re.search(r"^clone cl_tgtd p_tgtd", crm, re.M)


def test_crm_config_constraints_and_no_fencing():
    crm = cluster().crm_config()
    assert re.search(r"^group g_iscsi p_target p_lu p_ip$", crm, re.M)  # address last
    assert re.search(r"^colocation \S+ inf: g_iscsi ms_drbd_r0:Promoted$", crm, re.M)
    assert re.search(r"^order \S+ Mandatory: ms_drbd_r0:promote g_iscsi:start$", crm, re.M)
    assert re.search(r"^order \S+ Mandatory: cl_tgtd g_iscsi$", crm, re.M)
    assert "stonith-enabled=false" in crm and "no-quorum-policy=ignore" in crm
    assert re.search(r"^op_defaults op-options: \\\n\s*timeout=60s$", crm, re.M)
    assert "no fencing" in pacemaker.__doc__.lower() and "needs a fence device" in pacemaker.__doc__


def test_crm_config_is_valid_crm_syntax_shape():
    crm = cluster().crm_config()
    # crmsh rejects comments with "--"; every continued line ends in a backslash
    for line in crm.splitlines():
        if line.startswith("#"):
            assert "--" not in line and not line.endswith("-")
    lines = [ln for ln in crm.splitlines() if ln and not ln.startswith("#")]
    for a, b in zip(lines, lines[1:]):
        if b.startswith("    "):
            assert a.endswith("\\"), f"continuation without backslash before {b!r}"
    ids = re.findall(r"^(?:primitive|clone|group|colocation|order) (\S+)", crm, re.M)
    assert len(ids) == len(set(ids))


def test_tuning_knobs():
    stock = cluster().crm_config()
    assert "notify=true" in stock and "start-delay" not in stock and "ignore_missing_notifications" not in stock
    tuned = cluster(drbd_notify=False, monitor_delay_s=15, allowed_initiators="192.168.103.93").crm_config()
    assert "notify=false" in tuned and "ignore_missing_notifications=true" in tuned
    # the monitors of what a failover starts wait (promoted DRBD, target, LUN, address); the clones'
    # monitors on a returning node (Unpromoted DRBD, tgtd) do not
    delayed = re.findall(r"op monitor [^\n]*start-delay=15s", tuned)
    assert len(delayed) == 4 and all("Unpromoted" not in m for m in delayed)
    assert 'allowed_initiators="192.168.103.93"' in tuned
    assert re.search(r"load-threshold=\d+%", tuned) and re.search(r"node-action-limit=\d+", tuned)
    monitors = re.findall(r"op monitor interval=(\d+)s role=(\w+)", tuned)
    assert len({i for i, _ in monitors}) == 2  # Promoted and Unpromoted monitors need different intervals


CRM_MON = """<pacemaker-result api-version="2.29" request="crm_mon -1 --output-as=xml">
  <summary><current_dc present="true" version="2.1.5" name="iscsi-server1" id="2" with_quorum="true"/></summary>
  <nodes>
    <node name="iscsi-server0" id="1" online="true" standby="false" type="member"/>
    <node name="iscsi-server1" id="2" online="true" standby="false" type="member"/>
  </nodes>
  <resources>
    <group id="g_iscsi" number_resources="3">
      <resource id="p_target" resource_agent="ocf:heartbeat:iSCSITarget" role="Started" active="true" failed="false">
        <node name="iscsi-server1" id="2" cached="true"/></resource>
      <resource id="p_lu" resource_agent="ocf:heartbeat:iSCSILogicalUnit" role="Started" active="true" failed="false">
        <node name="iscsi-server1" id="2" cached="true"/></resource>
      <resource id="p_ip" resource_agent="ocf:heartbeat:IPaddr2" role="Started" active="true" failed="false">
        <node name="iscsi-server1" id="2" cached="true"/></resource>
    </group>
    <clone id="ms_drbd_r0" multi_state="true">
      <resource id="p_drbd_r0" resource_agent="ocf:linbit:drbd" role="Promoted" active="true" failed="false">
        <node name="iscsi-server1" id="2" cached="true"/></resource>
      <resource id="p_drbd_r0" resource_agent="ocf:linbit:drbd" role="Unpromoted" active="true" failed="false">
        <node name="iscsi-server0" id="1" cached="true"/></resource>
    </clone>
    <clone id="cl_tgtd">
      <resource id="p_tgtd" resource_agent="systemd:tgt" role="Started" active="true" failed="false">
        <node name="iscsi-server0" id="1" cached="true"/></resource>
      <resource id="p_tgtd" resource_agent="systemd:tgt" role="Started" active="true" failed="false">
        <node name="iscsi-server1" id="2" cached="true"/></resource>
    </clone>
  </resources>
</pacemaker-result>"""


def test_crm_mon_parsing_and_started():
    st = parse_crm_mon(CRM_MON)
    assert st.dc == "iscsi-server1" and st.online == ["iscsi-server0", "iscsi-server1"] and not st.offline
    assert st.running("p_ip") == ["iscsi-server1"]
    assert st.role("p_drbd_r0", "iscsi-server0") == "Unpromoted"
    pm = cluster()
    assert pm.started(st)
    # the LUN still starting: not started
    st2 = parse_crm_mon(CRM_MON.replace('id="p_lu" resource_agent="ocf:heartbeat:iSCSILogicalUnit" role="Started" '
                                        'active="true"', 'id="p_lu" resource_agent="ocf:heartbeat:iSCSILogicalUnit" '
                                        'role="Stopped" active="false"'))
    assert not pm.started(st2)
    st3 = parse_crm_mon(CRM_MON.replace('role="Promoted"', 'role="Unpromoted"'))
    assert not pm.started(st3)
    # a node that just rejoined: online, but its controller has not joined yet (crm_mon: pending)
    st4 = parse_crm_mon(CRM_MON.replace('<node name="iscsi-server0" id="1" online="true"',
                                        '<node name="iscsi-server0" id="1" online="true" pending="true"'))
    assert st4.online == ["iscsi-server1"] and st4.offline == ["iscsi-server0"]


def test_phase_marks_split_a_failover():
    t = 1000.0
    journal = [
        (t + 0.75, "corosync: [TOTEM ] Token has not been received in 751 ms"),
        (t + 2.2, "corosync: [TOTEM ] A new membership (2.1e) was formed. Members left: 1"),
        (t + 4.5, "pacemaker-controld: Initiating promote operation p_drbd_r0_promote_0 locally on iscsi-server1"),
        (t + 6.5, "pacemaker-controld: Result of promote operation for p_drbd_r0 on iscsi-server1: ok"),
        (t + 8.8, "pacemaker-controld: Result of start operation for p_target on iscsi-server1: ok"),
        (t + 11.6, "pacemaker-controld: Result of start operation for p_lu on iscsi-server1: ok"),
        (t + 14.0, "pacemaker-controld: Result of start operation for p_ip on iscsi-server1: ok"),
    ]
    ph = analysis.phases(journal, PHASE_MARKS, t, t + 14.25, final="client reconnect")
    assert [p.name for p in ph] == [*PHASE_MARKS, "client reconnect"]
    assert all(p.found for p in ph)
    assert [round(p.duration, 2) for p in ph] == [2.2, 2.3, 2.0, 2.3, 2.8, 2.4, 0.25]


def test_the_seeded_cib_sets_dc_deadtime_and_parses():
    import xml.etree.ElementTree as ET

    from hautils.services import render

    root = ET.fromstring(render("cib-seed.xml.j2", dc_deadtime_s=2))
    props = {n.get("name"): n.get("value") for n in root.iter("nvpair")}
    assert props == {"dc-deadtime": "2s", "stonith-enabled": "false"}
    assert root.find("configuration/resources") is not None and root.find("status") is not None
    assert cluster().dc_deadtime_s == 2


class AnsweringHost(FakeHost):
    """Answers every command with its own name; ``dead`` raises as an unreachable guest does."""

    def __init__(self, name, dead=False):
        super().__init__(name)
        self.dead = dead
        self.commands = []

    def run(self, cmd, check=True, timeout=None):
        self.commands.append(cmd)
        if self.dead:
            raise TimeoutError(f"{self.name}: no SSH answer")

        class R:
            stdout, stderr, ok = f"corosync says {self.name}\n", "", True
        return R()


def test_a_timeout_reports_every_node_and_layer():
    """The node that never joins has its reason in its own journal: both nodes are asked, and a
    dead one is named instead of hiding the other's answer."""
    a, b = AnsweringHost("iscsi-server0"), AnsweringHost("iscsi-server1", dead=True)
    pm = Pacemaker([a, b], ["192.168.103.99", "192.168.103.91"])
    text = pm.diagnostics()
    assert "===== iscsi-server0\ncorosync says iscsi-server0" in text
    assert "===== iscsi-server1\n(no answer: iscsi-server1: no SSH answer)" in text
    for layer in ("corosync-cfgtool -s", "corosync-quorumtool -s", "crm_mon -1", "-u corosync -u pacemaker"):
        assert layer in a.commands[0]


# -- the thesis's three-node cluster (chapter 4b) ------------------------------------------------

class FakeBmc:
    def fence_params(self, host):
        return {"ip": "172.31.255.1", "ipport": "8443", "username": "fence", "password": "pw", "ssl_insecure": "1",
                "systems_uri": f"/redfish/v1/Systems/{host}", "pcmk_host_list": host}


def guest_cluster(**kw):
    from hautils.services.pacemaker import GuestCluster
    return GuestCluster([FakeHost(n) for n in ("node0", "node1", "node2")],
                        ["192.168.103.85", "192.168.103.98", "192.168.103.92"], bmc=FakeBmc(), **kw)


def test_three_nodes_vote_no_two_node_and_the_token_includes_the_third_nodes_share():
    conf = guest_cluster().corosync_conf()
    assert "two_node" not in conf.split("quorum {")[1]
    assert re.search(r"^\s*token: 3000$", conf, re.M) and "3650 ms" in conf
    assert conf.count("ring0_addr:") == 3


def test_guest_cluster_fences_every_node_from_elsewhere_and_stops_without_quorum():
    crm = guest_cluster().crm_config()
    assert re.search(r"stonith-enabled=true", crm) and "stonith-action=off" in crm and "no-quorum-policy=stop" in crm
    for n in ("node0", "node1", "node2"):
        assert re.search(rf"primitive st_{n} stonith:fence_redfish \\\n\s+params .*systems_uri=\"/redfish/v1/Systems/{n}\""
                         rf".*pcmk_host_list=\"{n}\"", crm)
        assert re.search(rf"^location l_st_{n} st_{n} -inf: {n}$", crm, re.M)  # never fences itself
    # the stock agents: the disk, then the container, in a group
    assert "primitive p_fs ocf:heartbeat:Filesystem" in crm and "primitive p_guest ocf:heartbeat:lxc" in crm
    assert re.search(r"^group g_guest p_fs p_guest$", crm, re.M)


def test_the_lean_agent_mounts_itself_and_the_lean_init_replaces_systemd():
    from hautils.lab import container
    gc = guest_cluster(agent="ocf:hautils:container", init=container.LEAN_INIT)
    crm = gc.crm_config()
    assert "p_fs" not in crm and "group" not in crm.split("p_guest")[1]
    assert re.search(r'primitive p_guest ocf:hautils:container \\\n\s+params container=guest config=/var/lib/lxc/guest/config '
                     r'device="/dev/disk/by-label/guest" directory="/var/lib/lxc/guest/rootfs"', crm)
    conf = gc.lxc_config()
    assert f"lxc.init.cmd = {container.LEAN_INIT}" in conf
    assert "lxc.init.cmd" not in guest_cluster().lxc_config()  # the default: the guest's systemd
    for line in ("lxc.rootfs.path = dir:/var/lib/lxc/guest/rootfs", "lxc.net.0.type = macvlan",
                 "lxc.net.0.ipv4.address = 192.168.103.99/24", "lxc.net.0.hwaddr = 02:00:c0:a8:67:63"):
        assert line in conf


def test_guest_cluster_refuses_no_fencing_and_unknown_agents():
    from hautils.services.pacemaker import GuestCluster
    with pytest.raises(ValueError, match="bmc=lab.bmc"):
        GuestCluster([FakeHost("a"), FakeHost("b"), FakeHost("c")], ["1", "2", "3"])
    with pytest.raises(ValueError, match="agent="):
        guest_cluster(agent="ocf:heartbeat:VirtualDomain")


def test_the_lean_agent_is_valid_sh_and_prints_its_metadata(tmp_path):
    import subprocess
    from pathlib import Path
    agent = Path(pacemaker.__file__).parent / "files" / "container.ocf"
    assert subprocess.run(["sh", "-n", str(agent)]).returncode == 0
    out = subprocess.run(["sh", str(agent), "meta-data"], capture_output=True, text=True)
    assert out.returncode == 0 and '<resource-agent name="container"' in out.stdout
    for p in ("container", "config", "device", "directory"):
        assert f'<parameter name="{p}"' in out.stdout
    # without its parameters it is not configured (OCF_ERR_CONFIGURED), not "running"
    assert subprocess.run(["sh", str(agent), "monitor"], env={"PATH": "/usr/bin:/bin"}).returncode == 6


CIB = """<cib><configuration><nodes><node id="1" uname="node0"/><node id="2" uname="node1"/><node id="3" uname="node2"/></nodes>
<resources><primitive id="st_node0"/><group id="g"><primitive id="p_fs"/><primitive id="p_guest"/></group></resources></configuration>
<status>
 <node_state uname="node0" crmd="online" in_ccm="true"><lrm><lrm_resources><lrm_resource id="st_node0"/><lrm_resource id="p_fs"/><lrm_resource id="p_guest"/></lrm_resources></lrm></node_state>
 <node_state uname="node1" crmd="online" in_ccm="1733390000"><lrm><lrm_resources><lrm_resource id="st_node0"/></lrm_resources></lrm></node_state>
 <node_state uname="node2" crmd="offline" in_ccm="false"/>
</status></cib>"""


def test_unprobed_names_nodes_still_joining_and_resources_not_yet_probed():
    from hautils.services.pacemaker import unprobed
    assert unprobed(CIB) == {"node1": ["p_fs", "p_guest"], "node2": ["offline"]}
    done = CIB.replace('<lrm_resource id="st_node0"/></lrm_resources></lrm></node_state>\n <node_state uname="node2" crmd="offline" in_ccm="false"/>',
                       '<lrm_resource id="st_node0"/><lrm_resource id="p_fs"/><lrm_resource id="p_guest"/></lrm_resources></lrm></node_state>\n'
                       ' <node_state uname="node2" crmd="online" in_ccm="true"><lrm><lrm_resources><lrm_resource id="st_node0"/>'
                       '<lrm_resource id="p_fs"/><lrm_resource id="p_guest"/></lrm_resources></lrm></node_state>')
    assert unprobed(done) == {}


def test_guest_phase_marks_split_a_guest_failover_as_the_survivors_logged_it():
    from hautils.services.pacemaker import GUEST_PHASE_MARKS
    t = 1000.0
    journal = [  # lines of a recorded trial (node1 lost; node0 the DC, node2 the new owner)
        (t + 2.62, "corosync: [TOTEM ] A new membership (1.1a) was formed. Members left: 2"),
        (t + 4.15, "pacemaker-schedulerd: Actions: Fence (off) node1 'peer is no longer part of the cluster'"),
        (t + 4.20, "pacemaker-fenced: Requesting peer fencing (off) targeting node1"),
        (t + 5.59, "pacemaker-fenced: Operation 'off' targeting node1 by node0 for pacemaker-controld.1019@node0: OK (complete)"),
        (t + 5.59, "pacemaker-controld: Peer node1 was terminated (off) by node0 on behalf of pacemaker-controld.1019@node0: OK"),
        (t + 10.88, "pacemaker-controld: Result of start operation for p_fs on node2: ok"),
        (t + 12.9, "pacemaker-controld: Result of start operation for p_guest on node2: ok"),
    ]
    ph = analysis.phases(journal, GUEST_PHASE_MARKS, t, t + 12.5, final="container start")
    assert [p.name for p in ph] == [*GUEST_PHASE_MARKS, "container start"]
    assert [round(p.duration, 2) for p in ph] == [2.62, 1.58, 1.39, 5.29, 1.62]


def test_configure_writes_the_crm_file_loads_it_and_verifies_the_live_cib():
    from fakes import RecordingHost
    from hautils.errors import CommandError
    from hautils.services.pacemaker import CRM_FILE

    h = RecordingHost("iscsi-server0")
    pm = Pacemaker([h, RecordingHost("iscsi-server1")], ["192.168.103.99", "192.168.103.91"])
    pm.configure()
    assert h.puts == [(CRM_FILE, pm.crm_config(), 0o644)]
    assert h.runs[0] == f"crm --force configure load update {CRM_FILE}"
    assert h.runs[-1] == "crm_verify -L -V"
    bad = RecordingHost("iscsi-server0", {"crm_verify": (1, "", "error: unpack_resources: no fencing")})
    with pytest.raises(CommandError, match="configuration has errors"):
        Pacemaker([bad, RecordingHost("iscsi-server1")], ["192.168.103.99", "192.168.103.91"]).configure()
