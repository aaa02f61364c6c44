"""Chapter 3's gateway files without a VM: keepalived.conf, conntrackd.conf, the notify script
and the NAT rules rendered for labs/gateway.yaml, their option checks, the tools' checks on a
fake host, and keepalived's log lines as the experiments read them.

The expected values are typed from labs/gateway.yaml, not computed from it.  (The rendered
files were also run through keepalived 2.2.7's ``keepalived -t`` and conntrackd 1.4.7's parser
by hand while writing them; in CI only the lab runs the tools, see ``Keepalived.check``.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from hautils import analysis, topology
from hautils.errors import CommandError
from hautils.services import keepalived as ka
from hautils.services import render
from hautils.services.keepalived import (CONF, CONNTRACKD_CONF, NAT_UNIT, NOTIFY_SCRIPT, RULES, STATE_RE, VRRP_MARKS,
                                         Conntrackd, Keepalived, Nat, holders, master_of, wait_master)
from fakes import RecordingHost

GATEWAY = Path(__file__).resolve().parents[1] / "labs" / "gateway.yaml"


@pytest.fixture(scope="module")
def topo():
    return topology.load(GATEWAY, check_memory=False)


def blocks(conf: str) -> dict[str, list[str]]:
    """keepalived.conf as {"vrrp_instance VI_inside": [body lines, nested ones flattened]}."""
    out: dict[str, list[str]] = {}
    depth, name = 0, None
    for raw in conf.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if depth == 0 and line.endswith("{"):
            name = line[:-1].strip()
            assert name not in out, f"{name} twice"
            out[name] = []
        elif name is not None and depth > 0 and line != "}":
            out[name].append(line)
        depth += line.count("{") - line.count("}")
        assert depth >= 0, f"unbalanced braces at {raw!r}"
        if depth == 0:
            name = None
    assert depth == 0, "a block is never closed"
    return out


# -- keepalived.conf -----------------------------------------------------------------------------------

def test_the_pair_and_its_instances_come_from_the_topology(topo):
    k = Keepalived(topo)
    assert k.routers == ("gw1", "gw2") and k.vips == ["192.168.1.1", "192.168.2.1"]
    inst = k.instances("gw2")
    assert [(i["name"], i["iface"], i["vip"], i["vrid"]) for i in inst] == [
        ("VI_inside", "eth0", "192.168.1.1/24", 51), ("VI_outside", "eth1", "192.168.2.1/24", 52)]


@pytest.mark.parametrize("router, state, priority", [("gw1", "MASTER", 150), ("gw2", "BACKUP", 100)])
def test_default_config_preempts_with_the_first_router_as_master(topo, router, state, priority):
    b = blocks(Keepalived(topo).config(router))
    assert set(b) == {"global_defs", "vrrp_sync_group gateway", "vrrp_instance VI_inside",
                      "vrrp_instance VI_outside"}
    assert f"router_id {router}" in b["global_defs"] and "vrrp_version 3" in b["global_defs"]
    assert "enable_script_security" in b["global_defs"] and "script_user root" in b["global_defs"]
    for name, iface, vip, vrid in (("VI_inside", "eth0", "192.168.1.1/24", 51),
                                   ("VI_outside", "eth1", "192.168.2.1/24", 52)):
        body = b[f"vrrp_instance {name}"]
        assert body[:5] == [f"state {state}", f"interface {iface}", f"virtual_router_id {vrid}",
                            f"priority {priority}", "advert_int 1"]
        assert f"{vip} dev {iface}" in body
        assert "nopreempt" not in body and not any(l.startswith(("unicast", "notify")) for l in body)
    assert b["vrrp_sync_group gateway"] == ["group {", "VI_inside", "VI_outside"]  # no notify without conntrackd


def test_sub_second_adverts_and_conntrackd_notify_scripts(topo):
    for router in ("gw1", "gw2"):
        b = blocks(Keepalived(topo, advert_int=0.1, conntrackd=True).config(router))
        assert all("advert_int 0.1" in b[f"vrrp_instance {i}"] for i in ("VI_inside", "VI_outside"))
        group = b["vrrp_sync_group gateway"]
        for state, arg in (("master", "primary"), ("backup", "backup"), ("fault", "fault")):
            assert f'notify_{state} "{NOTIFY_SCRIPT} {arg}"' in group  # conntrackd's doc: on the group
        assert not any("notify" in l for i in ("VI_inside", "VI_outside") for l in b[f"vrrp_instance {i}"])


def test_nopreempt_starts_both_as_backup(topo):
    for router in ("gw1", "gw2"):
        b = blocks(Keepalived(topo, preempt=False).config(router))
        for i in ("VI_inside", "VI_outside"):
            assert "state BACKUP" in b[f"vrrp_instance {i}"] and "nopreempt" in b[f"vrrp_instance {i}"]
    assert "priority 150" in blocks(Keepalived(topo, preempt=False).config("gw1"))["vrrp_instance VI_inside"]


def test_preempt_delay_also_starts_as_backup(topo):
    # keepalived -t: "preempt delay will not work with initial state MASTER - clearing"
    body = blocks(Keepalived(topo, preempt_delay=2.5).config("gw1"))["vrrp_instance VI_inside"]
    assert "state BACKUP" in body and "preempt_delay 2.5" in body and "nopreempt" not in body


def test_unicast_peers_are_the_other_routers_addresses(topo):
    b1 = blocks(Keepalived(topo, unicast=True).config("gw1"))
    assert "unicast_src_ip 192.168.1.2" in b1["vrrp_instance VI_inside"]
    assert b1["vrrp_instance VI_inside"][b1["vrrp_instance VI_inside"].index("unicast_peer {") + 1] == "192.168.1.3"
    b2 = blocks(Keepalived(topo, unicast=True).config("gw2"))
    assert "unicast_src_ip 192.168.2.3" in b2["vrrp_instance VI_outside"]
    assert "192.168.2.2" in b2["vrrp_instance VI_outside"]


def test_other_options(topo):
    k = Keepalived(topo, virtual_router_id=7, priorities=(200, 50), vrrp_version=2, advert_int=2,
                   garp_master_delay=1, routers=("gw2", "gw1"), sync_group="G1")
    b = blocks(k.config("gw2"))
    assert "state MASTER" in b["vrrp_instance VI_inside"] and "priority 200" in b["vrrp_instance VI_inside"]
    assert "virtual_router_id 8" in b["vrrp_instance VI_outside"] and "advert_int 2" in b["vrrp_instance VI_outside"]
    assert "vrrp_version 2" in b["global_defs"] and "vrrp_garp_master_delay 1" in b["global_defs"]
    assert "vrrp_sync_group G1" in b
    assert k.failover_bound() == pytest.approx(3 * 2 + (256 - 50) / 256 * 2)


def test_one_virtual_address_needs_no_sync_group_and_notifies_from_the_instance(topo):
    data = yaml.safe_load(GATEWAY.read_text())
    data["virtual_ips"] = data["virtual_ips"][:1]
    one = topology.parse(data, check_memory=False)
    b = blocks(Keepalived(one, conntrackd=True).config("gw1"))
    assert set(b) == {"global_defs", "vrrp_instance VI_inside"}
    assert f'notify_master "{NOTIFY_SCRIPT} primary"' in b["vrrp_instance VI_inside"]


def test_failover_bound_is_rfc_5798s_master_down_interval(topo):
    assert Keepalived(topo).failover_bound() == pytest.approx(3 + 156 / 256)
    assert Keepalived(topo, advert_int=0.1).failover_bound() == pytest.approx(0.3609375)


def test_header_and_defaults_file(topo):
    k = Keepalived(topo)
    conf = k.config("gw2")
    assert conf.startswith(f"# {CONF} of gw2 -- written by hautils (chapter 3)") and "3.2.2" in conf[:300]
    d = k.defaults("gw1")
    assert 'DAEMON_ARGS="--log-detail"' in d.splitlines()
    assert 'DAEMON_ARGS=""' in Keepalived(topo, log_detail=False).defaults("gw1").splitlines()


@pytest.mark.parametrize("kw, needle", [
    ({"advert_int": 0.5, "vrrp_version": 2}, "VRRPv2 counts in whole seconds"),
    ({"advert_int": 0.005}, "hundredths of a second, 0.01 to 40.95"),
    ({"advert_int": 0.125}, "hundredths of a second"),
    ({"advert_int": 41}, "0.01 to 40.95"),
    ({"advert_int": float("nan")}, "advert_int=nan"),
    ({"vrrp_version": 4}, "vrrp_version=4"),
    ({"priorities": (100, 150)}, "its priority must be the higher"),
    ({"priorities": (255, 100)}, "255 is reserved"),
    ({"priorities": (150,)}, "two whole numbers"),
    ({"preempt": False, "preempt_delay": 3}, "preempt_delay needs preempt=True"),
    ({"preempt_delay": 2000}, "0 to 1000"),
    ({"virtual_router_id": 255}, "1 to 254"),
    ({"virtual_router_id": 0}, "virtual_router_id=0"),
    ({"routers": ("gw1",)}, "exactly two routers"),
    ({"routers": ("gw1", "gw3")}, "no host named 'gw3'"),
    ({"routers": ("gw1", "client")}, "host 'client' field 'links': no addressed NIC on network 'outside'"),
    ({"sync_group": "two words"}, "sync_group"),
])
def test_bad_options_are_refused_naming_the_field(topo, kw, needle):
    with pytest.raises(ValueError, match=re.escape(needle) if "(" in needle else needle):
        Keepalived(topo, **kw)


def test_a_router_outside_the_pair_is_refused(topo):
    with pytest.raises(ValueError, match="host 'server' is not one of the VRRP pair gw1, gw2"):
        Keepalived(topo).config("server")


def test_a_topology_without_virtual_ips_is_refused():
    data = yaml.safe_load(GATEWAY.read_text())
    data.pop("virtual_ips")
    with pytest.raises(ValueError, match="no virtual_ips"):
        Keepalived(topology.parse(data, source="labs/gateway.yaml", check_memory=False))


# -- conntrackd ---------------------------------------------------------------------------------------------

def conntrackd_sections(conf: str) -> str:
    return "\n".join(l.split("#", 1)[0].rstrip() for l in conf.splitlines() if l.split("#", 1)[0].strip())


def test_conntrackd_ftfw_over_udp_on_the_sync_link(topo):
    c = Conntrackd(topo)
    for router, me, peer in (("gw1", "10.0.0.1", "10.0.0.2"), ("gw2", "10.0.0.2", "10.0.0.1")):
        text = conntrackd_sections(c.config(router))
        assert "Mode FTFW {" in text and "PurgeTimeout 60" in text and "CommitTimeout" not in text
        assert f"IPv4_address {me}\n        IPv4_Destination_Address {peer}" in text
        assert "Interface eth2" in text and "Port 3780" in text
        assert "Systemd on" in text  # Debian's conntrackd.service is Type=notify
        assert "LockFile /var/lock/conntrackd.lock" in text and "Path /var/run/conntrackd.sock" in text
        assert text.count("{") == text.count("}")
    ignore = Conntrackd(topo).ignored("gw1")
    assert ignore == ["127.0.0.1", "192.168.1.2", "192.168.2.2", "10.0.0.1", "192.168.1.1", "192.168.2.1"]


def test_conntrackd_multicast_and_options(topo):
    text = conntrackd_sections(Conntrackd(topo, transport="multicast", commit_timeout=180,
                                          protocols=("TCP", "UDP")).config("gw2"))
    assert "Multicast {" in text and "IPv4_address 225.0.0.50" in text and "Group 3780" in text
    assert "IPv4_interface 10.0.0.2" in text and "UDP {" not in text
    assert "CommitTimeout 180" in text
    proto = text[text.index("Protocol Accept {"):]
    assert proto.split("}")[0].split()[3:] == ["TCP", "UDP"]


@pytest.mark.parametrize("kw, needle", [
    ({"transport": "tcp"}, "'udp' or 'multicast'"),
    ({"sync_network": "backplane"}, "no network 'backplane'"),
    ({"protocols": ("TCP", "QUIC")}, "protocols="),
    ({"protocols": ()}, "protocols="),
    ({"multicast_address": "10.0.0.9"}, "not a multicast address"),
    ({"port": 0}, "port=0"),
    ({"purge_timeout": 0}, "purge_timeout=0"),
])
def test_conntrackd_bad_options(topo, kw, needle):
    with pytest.raises(ValueError, match=needle):
        Conntrackd(topo, **kw)


def test_notify_script_follows_conntrackds_primary_backup_steps(topo):
    s = Conntrackd(topo).notify_script("gw1")
    assert s.startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n"], input=s, text=True, check=True)
    body = s[s.index("case"):]
    primary = body[body.index("primary)"):body.index("backup)")]
    flags = re.findall(r"\$CONNTRACKD (-\w)", primary)
    assert flags == ["-c", "-f", "-R", "-B"]  # commit, flush, resync, bulk: the doc's order
    backup = body[body.index("backup)"):body.index("fault)")]
    assert re.findall(r"\$CONNTRACKD (-\w)", backup) == ["-s", "-d", "-t", "-n"]
    assert f'CONNTRACKD="conntrackd -C {CONNTRACKD_CONF}"' in s
    assert "logger -t hautils-conntrackd" in s


def test_notify_script_runs_with_a_fake_conntrackd(topo, tmp_path):
    """Run the script with stand-ins for conntrackd and logger: the right calls, in order."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls = tmp_path / "calls"
    for tool in ("conntrackd", "logger"):
        (bin_ / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        (bin_ / tool).chmod(0o755)
    script = tmp_path / "primary-backup.sh"
    script.write_text(Conntrackd(topo).notify_script("gw2"))
    env = {"PATH": f"{bin_}:/usr/bin:/bin"}
    subprocess.run(["sh", str(script), "primary"], env=env, check=True)
    lines = calls.read_text().splitlines()
    assert [l for l in lines if l.startswith("conntrackd")] == [
        f"conntrackd -C {CONNTRACKD_CONF} {f}" for f in ("-c", "-f", "-R", "-B")]
    assert lines[0] == "logger -t hautils-conntrackd primary: committing the external cache"
    # the commit's end is logged right after it: the phase mark of networking.CONNTRACKD_MARKS
    assert lines[2] == "logger -t hautils-conntrackd primary: external cache committed"
    assert lines[1] == f"conntrackd -C {CONNTRACKD_CONF} -c"
    assert subprocess.run(["sh", str(script), "nonsense"], env=env).returncode == 1


# -- NAT ---------------------------------------------------------------------------------------------------

def test_nat_rules(topo):
    r = Nat(topo).rules("gw2")
    rules = [l for l in r.splitlines() if l and not l.startswith("#")]
    assert rules[:4] == ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]"]
    assert "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT" in rules
    assert "-A FORWARD -i eth0 -o eth1 -p tcp --syn -m conntrack --ctstate NEW -j ACCEPT" in rules
    # to the virtual address, and only the inside network's packets: a SNATed VRRP advertisement
    # failed VRRPv3's checksum at the other router, and the new master's could not be sent at all
    snat = [l for l in rules if "SNAT" in l]
    assert snat == ["-A POSTROUTING -s 192.168.1.0/24 -o eth1 -j SNAT --to-source 192.168.2.1"]
    assert rules.count("COMMIT") == 2 and r.startswith(f"# {RULES} of gw2")


def test_nat_needs_a_virtual_address_outside(topo):
    data = yaml.safe_load(GATEWAY.read_text())
    data["virtual_ips"] = data["virtual_ips"][:1]
    with pytest.raises(ValueError, match="no virtual IP on network 'outside' to NAT to"):
        Nat(topology.parse(data, check_memory=False))
    with pytest.raises(ValueError, match="no network 'dmz'"):
        Nat(topo, outside="dmz")


# -- templates: no variable may go missing ----------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda t: Keepalived(t, conntrackd=True, unicast=True, preempt_delay=1, garp_master_delay=2).config("gw1"),
    lambda t: Keepalived(t).defaults("gw1"),
    lambda t: Conntrackd(t, commit_timeout=10).config("gw1"),
    lambda t: Conntrackd(t, transport="multicast").config("gw1"),
    lambda t: Conntrackd(t).notify_script("gw1"),
    lambda t: Nat(t).rules("gw1"),
    lambda t: Nat(t).unit("gw1"),
])
def test_a_missing_template_variable_is_an_error(topo, monkeypatch, call):
    seen = {}

    def spy(template, **values):
        seen["template"], seen["values"] = template, values
        return render(template, **values)

    monkeypatch.setattr(ka, "render", spy)
    call(topo)
    for key in seen["values"]:
        partial = {k: v for k, v in seen["values"].items() if k != key}
        try:
            render(seen["template"], **partial)
        except jinja2.UndefinedError as e:
            assert f"'{key}' is undefined" in str(e)
        else:  # a variable used only under a condition this call did not take
            assert key in {"unicast_src", "multicast_address", "multicast_group", "sync_address",
                           "peer_sync_address", "port", "commit_timeout"} or False, key


# -- the tools' checks on a fake host -------------------------------------------------------------------

class FakeHost(RecordingHost):
    """``addrs``: what ``ip -o -4 addr show`` prints (a test moves the addresses between calls)."""

    def __init__(self, name="gw1", answers=None, addrs=""):
        super().__init__(name, answers)
        self.addrs = addrs

    def run(self, command, check=True, timeout=60.0):
        self.outputs["ip -o -4 addr show"] = self.addrs
        return super().run(command, check, timeout)

def test_keepalived_install_writes_then_checks(topo):
    k, h = Keepalived(topo, advert_int=0.1), FakeHost("gw2")
    k.install(h)
    assert h.puts == [(CONF, k.config("gw2"), 0o644), ("/etc/default/keepalived", k.defaults("gw2"), 0o644)]
    assert h.runs[-1] == f"keepalived -t -f {CONF}"


def test_keepalived_check_raises_with_keepalived_s_words(topo):
    said = "(/etc/keepalived/keepalived.conf: Line 12) Unknown keyword 'bogus_keyword'"
    h = FakeHost("gw1", {"keepalived -t": (5, "", said)})
    with pytest.raises(CommandError) as e:
        Keepalived(topo).check(h)
    assert said in str(e.value) and "gw1" in str(e.value) and e.value.exit_status == 5


def test_conntrackd_check_accepts_a_parsed_file_without_daemon(topo):
    no_daemon = "[ERROR] can't connect: is conntrackd running? appropriate permissions?"
    h = FakeHost("gw1", {"conntrackd -C": (1, "", no_daemon)})
    assert "can't connect" in Conntrackd(topo).check(h)
    assert h.runs == [f"conntrackd -C {CONNTRACKD_CONF} -s"]
    assert Conntrackd(topo).check(FakeHost("gw1", {"conntrackd -C": (0, "cache internal: ...", "")}))


@pytest.mark.parametrize("said", [
    "[ERROR] parsing config file in line (12), symbol 'BogusKey': syntax error",
    "[ERROR] can't open config file `/etc/conntrackd/conntrackd.conf'",
])
def test_conntrackd_check_refuses_a_file_it_cannot_parse(topo, said):
    h = FakeHost("gw2", {"conntrackd -C": (1, "", said)})
    with pytest.raises(CommandError, match=re.escape(said)):
        Conntrackd(topo).check(h)


def test_conntrackd_install_writes_the_script_executable(topo):
    h = FakeHost("gw1", {"conntrackd -C": (1, "", "can't connect")})
    Conntrackd(topo).install(h)
    dropin = "/etc/systemd/system/keepalived.service.d/hautils-conntrackd.conf"
    assert [(p, m) for p, _, m in h.puts] == [(CONNTRACKD_CONF, 0o644), (NOTIFY_SCRIPT, 0o755), (dropin, 0o644)]
    # keepalived waits for conntrackd at boot: seen started 9 ms apart after a power failure
    text = h.puts[2][1]
    assert "After=conntrackd.service" in text and "Wants=conntrackd.service" in text and "[Unit]" in text
    assert "systemctl daemon-reload" in h.runs


def test_nat_install_tests_before_loading_through_a_boot_unit(topo):
    h = FakeHost("gw1")
    Nat(topo).install(h)
    assert [p for p, _, _ in h.puts] == [RULES, f"/etc/systemd/system/{NAT_UNIT}"]
    assert h.runs[-2:] == [f"iptables-legacy-restore --test {RULES}",
                           f"systemctl daemon-reload && systemctl enable --no-reload {NAT_UNIT} >/dev/null 2>&1 && "
                           f"systemctl restart {NAT_UNIT} && {{ conntrack -D -p 112 >/dev/null 2>&1 || true; }}"]
    bad = FakeHost("gw1", {"iptables-legacy-restore --test": (1, "", "iptables-legacy-restore: line 9 failed")})
    with pytest.raises(CommandError, match="line 9 failed"):
        Nat(topo).install(bad)
    assert not any("systemctl" in r for r in bad.runs)  # nothing loaded
    both = [FakeHost("gw1"), FakeHost("gw2")]
    Nat(topo).install(*both)  # the pair at once
    assert all(f"iptables-legacy-restore --test {RULES}" in h.runs for h in both)
    with pytest.raises(ValueError, match="at least one router"):
        Nat(topo).install()


def test_nat_unit_loads_the_rules_before_keepalived(topo):
    u = Nat(topo).unit("gw2")
    lines = u.splitlines()
    assert "Before=network-pre.target keepalived.service conntrackd.service" in lines
    assert f"ExecStart=/usr/sbin/iptables-legacy-restore {RULES}" in lines
    assert "ExecStart=/usr/sbin/sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0" in lines
    assert "Type=oneshot" in lines and "RemainAfterExit=yes" in lines and "WantedBy=multi-user.target" in lines
    with pytest.raises(ValueError, match="not one of the pair"):
        Nat(topo).unit("client")


def test_start_and_stop_read_the_guest_clock(topo):
    h = FakeHost("gw1")
    assert Keepalived(topo).start(h) == pytest.approx(1733300000.5)
    assert "systemctl enable keepalived" in h.runs[-1] and "systemctl restart keepalived" in h.runs[-1]
    assert Keepalived(topo).stop(h) == pytest.approx(1733300000.5)


# -- who is master ----------------------------------------------------------------------------------------

ADDRS_MASTER = """1: lo    inet 127.0.0.1/8 scope host lo
2: eth0    inet 192.168.1.2/24 brd 192.168.1.255 scope global eth0
2: eth0    inet 192.168.1.1/24 scope global secondary eth0
3: eth1    inet 192.168.2.2/24 brd 192.168.2.255 scope global eth1
3: eth1    inet 192.168.2.1/24 scope global secondary eth1
"""
ADDRS_BACKUP = """2: eth0    inet 192.168.1.3/24 brd 192.168.1.255 scope global eth0
3: eth1    inet 192.168.2.3/24 brd 192.168.2.255 scope global eth1
"""


def test_master_is_the_router_holding_every_address(topo):
    gw1, gw2 = FakeHost("gw1", addrs=ADDRS_MASTER), FakeHost("gw2", addrs=ADDRS_BACKUP)
    vips = Keepalived(topo).vips
    assert holders([gw1, gw2], vips) == {"gw1": ["192.168.1.1", "192.168.2.1"], "gw2": []}
    assert master_of([gw1, gw2], vips) == "gw1" and Keepalived(topo).master([gw1, gw2]) == "gw1"
    # half-way (one address each) and split brain are no master
    half = FakeHost("gw2", addrs=ADDRS_BACKUP + "3: eth1    inet 192.168.2.1/24 scope global secondary eth1\n")
    assert master_of([FakeHost("gw1", addrs=ADDRS_MASTER.replace("192.168.2.1/", "192.168.2.9/")), half], vips) is None
    assert master_of([gw1, FakeHost("gw2", addrs=ADDRS_MASTER)], vips) is None
    assert master_of([FakeHost("gw1", addrs=ADDRS_BACKUP), gw2], vips) is None


def test_wait_master_needs_the_same_master_for_stable_s(topo):
    vips = Keepalived(topo).vips
    gw1, gw2 = FakeHost("gw1", addrs=ADDRS_BACKUP), FakeHost("gw2", addrs=ADDRS_MASTER)
    now = [0.0]

    def sleep(s):
        now[0] += s
        if now[0] >= 2:  # the old master comes back and preempts
            gw1.addrs, gw2.addrs = ADDRS_MASTER, ADDRS_BACKUP

    assert wait_master([gw1, gw2], vips, stable_s=1, sleep=sleep, clock=lambda: now[0]) == "gw2"
    now[0] = 0.0
    gw1.addrs, gw2.addrs = ADDRS_BACKUP, ADDRS_MASTER
    assert wait_master([gw1, gw2], vips, expected="gw1", stable_s=1, sleep=sleep, clock=lambda: now[0]) == "gw1"
    assert now[0] >= 3
    with pytest.raises(TimeoutError, match="want gw2.*'gw1': \\['192.168.1.1', '192.168.2.1'\\]"):
        wait_master([gw1, gw2], vips, expected="gw2", timeout=5, sleep=sleep, clock=lambda: now[0])


# -- keepalived's log lines ------------------------------------------------------------------------------

# as keepalived 2.2.7 logs a takeover with --log-detail (the journal's SYSLOG_IDENTIFIER first,
# as the experiment helper joins them)
TAKEOVER = [
    (0.00, "Keepalived_vrrp: (VI_inside) Receive advertisement timeout"),
    (0.00, "Keepalived_vrrp: (VI_inside) Entering MASTER STATE"),
    (0.01, "Keepalived_vrrp: (VI_inside) setting VIPs."),
    (0.01, "Keepalived_vrrp: VRRP_Group(gateway) Syncing instances to MASTER state"),
    (0.02, "Keepalived_vrrp: (VI_outside) Entering MASTER STATE"),
    (0.03, "Keepalived_vrrp: (VI_inside) Sending/queueing gratuitous ARPs on eth0 for 192.168.1.1"),
    (0.05, "hautils-conntrackd: primary: committing the external cache"),
]


def test_vrrp_marks_split_a_takeover():
    fault = 100.0
    events = [(fault + 0.33 + dt, text) for dt, text in TAKEOVER]
    phases = analysis.phases(events, VRRP_MARKS, start=fault, end=fault + 0.6, final="client reaches the server")
    assert [p.name for p in phases] == [*VRRP_MARKS, "client reaches the server"]
    assert phases[0].duration == pytest.approx(0.33) and phases[1].duration == pytest.approx(0.0)
    assert phases[2].duration == pytest.approx(0.27)


def test_state_re_reads_every_transition():
    lines = ["(VI_inside) Entering MASTER STATE", "(VI_outside) Entering BACKUP STATE (init)",
             "(VI_inside) Entering FAULT STATE", "VRRP_Instance(VI_1) Transition to MASTER STATE",
             "(VI_inside) Backup received priority 0 advertisement"]
    got = [(m["instance"], m["state"]) for m in map(STATE_RE.search, lines) if m]
    assert got == [("VI_inside", "MASTER"), ("VI_outside", "BACKUP"), ("VI_inside", "FAULT")]
    assert not re.search(VRRP_MARKS["becomes MASTER"], "(VI_inside) Entering BACKUP STATE")


class FakePairLab:
    def __init__(self, hosts):
        self.hosts = {h.name: h for h in hosts}

    def __getitem__(self, name):
        return self.hosts[name]

    def run_all(self, hosts, command, **kw):
        return [h.run(command) for h in hosts]


def test_deploy_writes_both_routers_then_restarts_conntrackd_before_keepalived(topo):
    no_daemon = {"conntrackd -C": (1, "", "can't connect")}
    gw1 = FakeHost("gw1", no_daemon, addrs=ADDRS_MASTER)
    gw2 = FakeHost("gw2", no_daemon, addrs=ADDRS_BACKUP)
    lab = FakePairLab([gw1, gw2])
    k = Keepalived(topo, advert_int=0.1, conntrackd=True)
    with pytest.raises(ValueError, match="pass the Conntrackd"):
        k.deploy(lab)
    assert k.deploy(lab, Conntrackd(topo)) == "gw1"
    for h in (gw1, gw2):
        assert [p for p, _, _ in h.puts][:3] == [CONNTRACKD_CONF, NOTIFY_SCRIPT,
                                                 "/etc/systemd/system/keepalived.service.d/hautils-conntrackd.conf"]
        assert [p for p, _, _ in h.puts][3] == CONF  # keepalived's files after the script they name
        restart = next(r for r in h.runs if "systemctl restart keepalived" in r)
        assert restart.index("restart conntrackd") < restart.index("restart keepalived")
    # nopreempt: whoever holds the addresses
    gw1.addrs, gw2.addrs = ADDRS_BACKUP, ADDRS_MASTER
    assert Keepalived(topo, advert_int=0.1, preempt=False).deploy(lab) == "gw2"


def test_settle_s_is_one_master_down_interval_and_a_margin(topo):
    """A settled pair: the master held the addresses longer than a silent backup would wait."""
    assert Keepalived(topo).settle_s() == pytest.approx(3 + 156 / 256 + 0.5)
    assert Keepalived(topo, advert_int=0.1).settle_s() == 1.0
