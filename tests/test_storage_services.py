"""Storage service modules (chapter 2): rendered configs and parsers, without a lab."""

import pytest

from hautils.errors import LabError
from hautils.services import raid
from hautils.services.drbd import Drbd, parse_proc_drbd
from hautils.services.heartbeat import Heartbeat, fast_disk_script
from hautils.services.iscsi import Initiator, Target, parse_lun_flags

MDSTAT_RESYNC = """Personalities : [raid1]
md0 : active raid1 ubdc[1] ubdb[0]
      130048 blocks super 1.2 [2/2] [UU]
      [==>..................]  resync = 14.1% (18432/130048) finish=0.1min speed=18432K/sec

unused devices: <none>
"""
MDSTAT_DEGRADED = """Personalities : [raid1]
md0 : active raid1 ubdc[1](F) ubdb[0]
      130048 blocks super 1.2 [2/1] [U_]

unused devices: <none>
"""
MDSTAT_DELAYED = """md0 : active raid1 ubdc[2] ubdb[0]
      130048 blocks super 1.2 [2/1] [U_]
        resync=DELAYED

"""
PROC_DRBD = """version: 8.4.11 (api:1/proto:86-101)
srcversion: 059B1B470318F053F5077D5
 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
    ns:262100 nr:0 dw:0 dr:262100 al:8 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0
\t[=====>..............] sync'ed: 30.5% (180000/262100)K
"""


class FakeHost:
    def __init__(self, name):
        self.name = name


def test_raid_table_matches_figure_2_1_rules():
    t = raid.levels_table(4).set_index("level")
    assert t.loc["RAID 1", "min_disks"] == 2 and t.loc["RAID 5", "min_disks"] == 3
    assert t.loc["RAID 6", "min_disks"] == 4 and t.loc["RAID 10", "min_disks"] == 4
    assert t.loc["RAID 5", "usable"] == 3 and t.loc["RAID 6", "usable"] == 2 and t.loc["RAID 10", "usable"] == 2
    assert t.loc["RAID 0", "failures_tolerated"] == 0 and t.loc["RAID 1", "failures_tolerated"] == 3
    assert raid.capacity("5", 5, 2.0)["usable"] == 8.0
    with pytest.raises(ValueError, match="at least 3"):
        raid.capacity("5", 2)
    with pytest.raises(ValueError, match="unknown RAID level"):
        raid.level("7")


def test_mdstat_parser():
    s = raid.parse_mdstat(MDSTAT_RESYNC)
    assert s["map"] == "UU" and s["syncing"] == "resync" and s["percent"] == 14.1
    d = raid.parse_mdstat(MDSTAT_DEGRADED)
    assert d["map"] == "U_" and d["syncing"] is None and d["up"] == 1
    assert raid.parse_mdstat(MDSTAT_DELAYED)["syncing"] == "resync"
    assert raid.parse_mdstat("unused devices: <none>\n") == {}


def test_proc_drbd_parser():
    st = parse_proc_drbd(PROC_DRBD)
    assert (st.cs, st.role, st.peer_role, st.disk, st.peer_disk, st.protocol) == (
        "SyncSource", "Primary", "Secondary", "UpToDate", "Inconsistent", "C")
    assert st.synced_percent == 30.5 and not st.healthy
    assert parse_proc_drbd("version: 8.4.11\n") is None


PROC_DRBD_MANY = """version: 8.4.11 (api:1/proto:86-101)
 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----
    ns:4 nr:0 dw:4 dr:0 al:1 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0
 1: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent A r-----
    ns:2000 nr:0 dw:0 dr:2000 al:8 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:30000
\t[==>.................] sync'ed: 12.5% (30000/32000)K
 3: cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown C r-----
"""


def test_proc_drbd_parser_reads_one_minor_of_many():
    r0, a, c = (parse_proc_drbd(PROC_DRBD_MANY, m) for m in (0, 1, 3))
    assert r0.healthy and r0.synced_percent is None  # another minor's sync is not r0's
    assert (a.cs, a.protocol, a.synced_percent) == ("SyncSource", "A", 12.5)
    assert (c.cs, c.peer_disk) == ("WFConnection", "DUnknown") and parse_proc_drbd(PROC_DRBD_MANY, 2) is None


def test_drbd_resources_side_by_side_carry_their_own_protocol():
    hosts = [FakeHost("iscsi-server0"), FakeHost("iscsi-server1")]
    a = Drbd(hosts, ["192.168.103.99", "192.168.103.91"], name="proto-a", device="/dev/drbd1", disk="/dev/ubdc",
             port=7790, protocol="A", own_protocol=True, net={"ping-int": "1"})
    res = a.resource()
    assert "resource proto-a {" in res and "protocol A;" in res and "ping-int 1;" in res and ":7790;" in res
    assert a.minor == 1 and Drbd(hosts, a.addresses).minor == 0
    assert "protocol" not in Drbd(hosts, a.addresses).resource()  # the paper's r0: protocol in common
    with pytest.raises(ValueError, match="minor"):
        _ = Drbd(hosts, a.addresses, device="/dev/drbd").minor


def test_waiting_for_several_resources_names_the_ones_not_in_sync():
    from hautils.services.drbd import wait_healthy

    class Host:
        name = "iscsi-server0"

        def run(self, cmd):
            return type("R", (), {"stdout": PROC_DRBD_MANY})()

    hosts = [FakeHost("iscsi-server0"), FakeHost("iscsi-server1")]
    r0 = Drbd(hosts, ["a", "b"])
    pa = Drbd(hosts, ["a", "b"], name="proto-a", device="/dev/drbd1")
    pb = Drbd(hosts, ["a", "b"], name="proto-b", device="/dev/drbd2")
    assert wait_healthy([r0], Host(), timeout=0)[0].cs == "Connected"
    with pytest.raises(TimeoutError, match=r"DRBD proto-a, proto-b on iscsi-server0 not in sync"):
        wait_healthy([r0, pa, pb], Host(), timeout=0)


def test_drbd_renders_the_papers_resource():
    d = Drbd([FakeHost("iscsi-server0"), FakeHost("iscsi-server1")], ["192.168.103.99", "192.168.103.91"],
             net={"ping-int": "1"})
    res = d.resource()
    for line in ("resource r0 {", "device    /dev/drbd0;", "meta-disk internal;", "ping-int 1;",
                 "on iscsi-server0 {", "address 192.168.103.99:7789;", "address 192.168.103.91:7789;"):
        assert line in res
    assert "protocol C;" in d.global_common() and "allow-two-primaries" not in d.global_common()
    dual = Drbd(d.hosts, d.addresses, dual_primary=True)
    assert "allow-two-primaries;" in dual.global_common() and "become-primary-on both;" in dual.resource()
    with pytest.raises(ValueError, match="protocol"):
        Drbd(d.hosts, d.addresses, protocol="D")


def test_heartbeat_files():
    hb = Heartbeat([FakeHost("iscsi-server0"), FakeHost("iscsi-server1")], ["192.168.103.99", "192.168.103.91"],
                   ["drbddisk::r0", "IPaddr2::192.168.103.36/24/eth0", "tgt"])
    cf = hb.ha_cf()
    for line in ("keepalive 1\n", "warntime 2\n", "deadtime 3\n", "udpport 694\n", "ucast eth0 192.168.103.99\n",
                 "ucast eth0 192.168.103.91\n", "auto_failback off\n", "node iscsi-server0\n"):
        assert line in cf
    assert hb.haresources().strip().endswith("iscsi-server0 drbddisk::r0 IPaddr2::192.168.103.36/24/eth0 tgt")
    shown, real = hb.authkeys(), hb.authkeys(reveal=True)
    assert hb.secret not in shown and hb.secret in real and "RandomSecretPassword" not in real
    assert len(hb.secret) == 32 and Heartbeat(hb.hosts, hb.addresses, []).secret != hb.secret
    fast = Heartbeat(hb.hosts, hb.addresses, ["hadisk"], keepalive=0.2, warntime=0.5, deadtime=1)
    assert "keepalive 200ms\n" in fast.ha_cf() and "warntime 500ms\n" in fast.ha_cf()
    with pytest.raises(ValueError, match="keepalive < warntime"):
        Heartbeat(hb.hosts, hb.addresses, [], keepalive=3, warntime=2, deadtime=1)
    script = fast_disk_script("192.168.103.36")
    assert "drbdadm primary r0" in script and "--lun 1 -b /dev/drbd0" in script and "VIP=192.168.103.36" in script


def test_iscsi_configs():
    t = Target()
    assert "<target iqn.2013-11.edu.uoc:ha-disk>" in t.config() and "backing-store /dev/drbd0" in t.config()
    ini = Initiator(FakeHost("iscsi-client"), "192.168.103.36", replacement_timeout=120, noop_out_interval=1,
                    noop_out_timeout=1, login_timeout=2)
    c = ini.config()
    assert "node.session.timeo.replacement_timeout = 120" in c
    assert "node.conn[0].timeo.noop_out_interval = 1" in c and "node.conn[0].timeo.login_timeout = 2" in c


def test_write_through_options():
    assert "bsoflags sync" in Target(sync_writes=True).config()
    assert "bsoflags" not in Target().config()
    assert "--bsoflags sync" in fast_disk_script("192.168.103.36")
    assert "--bsoflags" not in fast_disk_script("192.168.103.36", sync_writes=False)
    assert "logger -t hadisk" in fast_disk_script("192.168.103.36")


TGT_SHOW = """Target 1: iqn.2013-11.edu.uoc:ha-disk
    System information:
        Driver: iscsi
        State: ready
    LUN information:
        LUN: 0
            Type: controller
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            Backing store type: rdwr
            Backing store path: /dev/drbd0
            Backing store flags: sync
    Account information:
"""


def test_lun_flags_read_from_tgtadm_show():
    assert parse_lun_flags(TGT_SHOW, 1) == "sync"
    assert parse_lun_flags(TGT_SHOW, 0) == ""
    assert parse_lun_flags(TGT_SHOW, 2) is None  # no such LUN (a standby server)
    write_back = TGT_SHOW.replace("flags: sync", "flags: ")
    assert parse_lun_flags(write_back, 1) == ""


def test_both_tgt_dropins_force_delete_the_target_before_stopping_the_daemon():
    """A bare "delete system" fails while a target exists and systemd then waits 90 s per node:
    both the paper's and the tuned drop-in must force-delete the target first, within a timeout."""
    from hautils.services import render
    from hautils.services.iscsi import Target

    t = Target()
    vip = render("tgt-vip.conf.j2", vip="192.168.103.36", tid=1, iqn=t.iqn, timeout=t.STOP_TIMEOUT_S)
    for dropin in (t.stop_dropin(), vip):
        stops = [line for line in dropin.splitlines() if line.startswith("ExecStop=")]
        assert stops[0] == "ExecStop=", dropin  # Debian's own stop lines are replaced
        assert "--op delete --force --tid 1" in stops[2] and stops[-1].endswith("--op delete --mode system"), stops
        assert f"TimeoutStopSec={t.STOP_TIMEOUT_S}" in dropin


def test_hadisk_with_a_second_lun_takes_both_over_and_gives_both_back():
    script = fast_disk_script("192.168.103.36", sync_writes=True, more_luns=[("r1", "/dev/drbd1", False)])
    start, stop = script.split("start)")[1].split(";;")[0], script.split("stop)")[1].split(";;")[0]
    assert "drbdadm primary r0 r1 || exit 1" in start
    assert "--lun 1 -b /dev/drbd0 --bsoflags sync ||" in start and "--lun 2 -b /dev/drbd1 ||" in start
    assert start.index("--lun 2") < start.index("ip addr add")  # the address last
    assert stop.index("--lun 2") < stop.index("--lun 1") < stop.index("drbdadm secondary r0 r1")
    assert "# LUN 2 (/dev/drbd1, DRBD r1), tgt's default write-back cache" in script
    with pytest.raises(ValueError, match="own DRBD resource"):
        fast_disk_script("192.168.103.36", more_luns=[("r0", "/dev/drbd1", False)])


SESSION_P3 = """\t\tHost Number: 2\tState: running
\t\tscsi2 Channel 00 Id 0 Lun: 0
\t\tscsi2 Channel 00 Id 0 Lun: 1
\t\t\tAttached scsi disk sda\t\tState: running
\t\tscsi2 Channel 00 Id 0 Lun: 2
\t\t\tAttached scsi disk sdb\t\tState: running
"""


def test_the_disk_of_each_lun_is_read_from_the_session():
    from hautils.services.iscsi import attached_disk

    assert attached_disk(SESSION_P3) == "/dev/sda"
    assert attached_disk(SESSION_P3, 1) == "/dev/sda" and attached_disk(SESSION_P3, 2) == "/dev/sdb"
    assert attached_disk(SESSION_P3, 3) is None
    assert attached_disk(SESSION_P3.replace("sdb\t\tState: running", "sdb\t\tState: blocked"), 2) is None


def _proc(**cs) -> str:
    """/proc/drbd with minor 0 (r0) and 1 (r1) in the given connection states."""
    ds = {"Connected": "UpToDate/UpToDate", "SyncTarget": "Inconsistent/UpToDate"}
    return "".join(f" {m}: cs:{c} ro:Secondary/{'Primary' if c != 'StandAlone' and c != 'WFConnection' else 'Unknown'} "
                   f"ds:{ds.get(c, 'Outdated/DUnknown')} C r-----\n" for m, c in enumerate(cs.values()))


def test_a_rejoin_reconnects_only_what_split_and_never_disconnects_a_connected_resource():
    from hautils.services import drbd as drbd_mod

    class Host:
        name = "iscsi-server1"

        def __init__(self, texts):
            self.texts, self.cmds = list(texts), []

        def run(self, cmd, timeout=None, check=True):
            self.cmds.append(cmd)
            text = self.texts.pop(0) if cmd == "cat /proc/drbd" and len(self.texts) > 1 else self.texts[0]
            return type("R", (), {"stdout": text if cmd == "cat /proc/drbd" else ""})()

    hosts = [FakeHost("iscsi-server0"), FakeHost("iscsi-server1")]
    r0, r1 = Drbd(hosts, ["a", "b"]), Drbd(hosts, ["a", "b"], name="r1", device="/dev/drbd1", port=7790)
    # r1 (small) has connected and resynced at once; r0 found diverged data and stands alone
    h = Host([_proc(r0="WFConnection", r1="SyncTarget"), _proc(r0="StandAlone", r1="Connected"),
              _proc(r0="SyncTarget", r1="Connected"), _proc(r0="Connected", r1="Connected")])
    drbd_mod.rejoin([r0, r1], h, timeout=5)
    assert not any("disconnect" in c for c in h.cmds)
    assert [c for c in h.cmds if "discard-my-data" in c] == ["drbdadm -- --discard-my-data connect r0"]
    # refused again after the discard: named at once, not a 600 s wait for a sync
    h = Host([_proc(r0="StandAlone", r1="Connected"), _proc(r0="StandAlone", r1="Connected")])
    with pytest.raises(LabError, match="DRBD r0 on iscsi-server1 stays StandAlone after a connect with"):
        drbd_mod.rejoin([r0, r1], h, timeout=5)
    # a peer that never answers: the error names the resources and the host
    h = Host([_proc(r0="WFConnection", r1="WFConnection")])
    drbd_mod.time, real = type("T", (), {"monotonic": staticmethod(iter(range(0, 10**6, 100)).__next__),
                                         "sleep": staticmethod(lambda s: None)}), drbd_mod.time
    try:
        with pytest.raises(TimeoutError, match="DRBD r0 r1 on iscsi-server1: no handshake"):
            drbd_mod.rejoin([r0, r1], h, timeout=5)
    finally:
        drbd_mod.time = real
