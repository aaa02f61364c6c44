"""Chapter 3's FRR files say what the paper's Quagga files said (section 3.3.2), for every
router of labs/routing.yaml: no VM, no vtysh (the lab checks the files with ``vtysh -C``).

The expected values below are typed from the paper (Figure 3.3, the ospfd.conf listings), not
computed from the topology, so a wrong topology or a wrong generator both fail."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jinja2
import pytest
import yaml

from hautils import topology
from hautils.errors import CommandError
from hautils.services import frr as frr_mod
from hautils.services import render
from hautils.services.frr import CONF, DAEMONS, OPTIONAL_DAEMONS, READY_SCRIPT, READY_UNIT, Frr
from hautils.ssh import Result
from fakes import RecordingHost

ROUTING = Path(__file__).resolve().parents[1] / "labs" / "routing.yaml"

PAPER_LINES = ["ip ospf authentication null", "ip ospf hello-interval 1",
               "ip ospf dead-interval minimal hello-multiplier 5"]

# Figure 3.3 and the paper's listings: router-id (eth0 address), OSPF interfaces with their
# descriptions (host names in lowercase, as the lab spells them), networks in OSPF
PAPER = {
    "router1": ("192.168.103.80", {"eth1": "link to host1", "eth2": "link to patha", "eth3": "link to pathb"},
                {"10.10.10.0/24", "10.10.11.0/24", "10.10.13.0/24"}),
    "patha": ("192.168.103.92", {"eth1": "link to router1", "eth2": "link to router2"},
              {"10.10.11.0/24", "10.10.12.0/24"}),
    "pathb": ("192.168.103.98", {"eth1": "link to router1", "eth2": "link to router2"},
              {"10.10.13.0/24", "10.10.14.0/24"}),
    "router2": ("192.168.103.99", {"eth1": "link to patha", "eth2": "link to pathb", "eth3": "link to host2"},
                {"10.10.12.0/24", "10.10.14.0/24", "10.10.15.0/24"}),
}


@pytest.fixture(scope="module")
def topo():
    return topology.load(ROUTING, check_memory=False)


def blocks(conf: str) -> dict[str, list[str]]:
    """frr.conf as {node line: its body lines}, comments dropped; top-level commands under ""."""
    out: dict[str, list[str]] = {"": []}
    node = None
    for line in conf.splitlines():
        if not line.strip() or line.lstrip().startswith("!"):
            continue
        if node is None:
            if line.startswith(" "):
                raise AssertionError(f"indented line outside a node: {line!r}")
            if line.startswith(("interface ", "router ospf", "bfd", "route-map ")):
                node = line
                assert node not in out, f"{node!r} twice"
                out[node] = []
            else:
                out[""].append(line)
        elif line == "exit":
            node = None
        else:
            assert line.startswith(" "), f"unindented {line!r} inside {node!r}: a missing exit"
            out[node].append(line.strip())
    assert node is None, f"{node!r} is never closed with exit"
    return out


def ospf_ifaces(b: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k.split()[1]: v for k, v in b.items() if k.startswith("interface ") and any("ip ospf" in x for x in v)}


# -- the paper's settings --------------------------------------------------------------------------

def test_the_routers_are_the_papers_four(topo):
    assert Frr(topo).routers == ["router1", "patha", "pathb", "router2"]


@pytest.mark.parametrize("router", list(PAPER))
def test_every_ospf_interface_has_the_papers_timers_and_description(topo, router):
    _, descriptions, _ = PAPER[router]
    b = blocks(Frr(topo).config(router))
    ospf = ospf_ifaces(b)
    assert set(ospf) == set(descriptions), f"{router}: OSPF on {sorted(ospf)}, the paper on {sorted(descriptions)}"
    for iface, body in ospf.items():
        for line in PAPER_LINES:
            assert body.count(line) == 1, f"{router} {iface}: {line!r} missing or repeated in {body}"
        assert f"description {descriptions[iface]}" in body
        assert "link-detect" in body and "ipv6 nd suppress-ra" in body  # the paper's zebra.conf
        assert not any("bfd" in x for x in body)
    # eth0 (br0, the paper's Internet side) speaks no OSPF
    assert not any("ip ospf" in x for x in b["interface eth0"])


@pytest.mark.parametrize("router", list(PAPER))
def test_router_id_is_the_eth0_address(topo, router):
    router_id, _, _ = PAPER[router]
    ospf = blocks(Frr(topo).config(router))["router ospf"]
    assert ospf.count(f"ospf router-id {router_id}") == 1
    eth0 = next(l for l in topo.hosts[router].links if l.iface == "eth0")
    assert str(eth0.address.ip) == router_id  # the topology agrees with the paper
    assert "redistribute connected route-map CONNECTED" in ospf


def test_the_management_network_is_not_redistributed(topo):
    conf = Frr(topo).config("router1")
    deny = conf.index("route-map CONNECTED deny 10")
    assert conf.index("match interface mgmt0", deny) < conf.index("route-map CONNECTED permit 20", deny)


@pytest.mark.parametrize("router", list(PAPER))
def test_one_network_statement_per_connected_10_10_network_and_none_for_br0(topo, router):
    _, _, nets = PAPER[router]
    conf = Frr(topo).config(router)
    ospf = blocks(conf)["router ospf"]
    statements = [x for x in ospf if x.startswith("network ")]
    assert sorted(statements) == sorted(f"network {n} area 0" for n in nets)  # one each, no duplicates
    # br0 stays out of OSPF, as in the paper: it arrives as an external route (redistribute connected)
    assert "192.168.103.0" not in " ".join(statements)
    assert not any(x.startswith("network") for x in blocks(conf)[""])  # only inside router ospf


def test_global_lines_and_hostname(topo):
    top = blocks(Frr(topo).config("pathb"))[""]
    assert "hostname pathb" in top and "ip forwarding" in top  # vtysh.conf's and zebra.conf's
    assert "log syslog informational" in top


def test_comment_header_names_hautils_chapter_and_paper_section(topo):
    f = Frr(topo)
    for router in f.routers:
        conf, daemons = f.config(router), f.daemons(router)
        head = "\n".join(conf.splitlines()[:3])
        assert conf.startswith(f"! {CONF} of {router}") and "written by hautils (chapter 3)" in head
        assert "section 3.3.2" in head
        dhead = "\n".join(daemons.splitlines()[:3])
        assert daemons.startswith(f"# {DAEMONS} of {router}") and "written by hautils (chapter 3)" in dhead
        assert "section 3.3.2" in dhead


def test_config_follows_the_topology_not_a_copy_of_it():
    data = yaml.safe_load(ROUTING.read_text())
    data = copy.deepcopy(data)
    data["networks"].append({"name": "br16", "subnet": "10.10.16.0/24"})
    r1 = next(h for h in data["hosts"] if h["name"] == "router1")
    r1["links"].append({"iface": "eth4", "network": "br16", "address": "10.10.16.1/24"})
    r1["links"][0]["address"] = "192.168.103.70/24"
    b = blocks(Frr(topology.parse(data, check_memory=False)).config("router1"))
    assert "network 10.10.16.0/24 area 0" in b["router ospf"]
    assert "ospf router-id 192.168.103.70" in b["router ospf"]
    assert all(line in b["interface eth4"] for line in PAPER_LINES)
    assert not any(x.startswith("description") for x in b["interface eth4"])  # nobody else on br16


# -- daemons ---------------------------------------------------------------------------------------

def daemon_lines(text: str) -> dict[str, str]:
    return dict(l.split("=", 1) for l in text.splitlines() if l and not l.startswith("#"))


@pytest.mark.parametrize("bfd", [False, True])
def test_daemons_file(topo, bfd):
    d = daemon_lines(Frr(topo, bfd=bfd).daemons("router2"))
    assert d["ospfd"] == "yes"
    assert d["bfdd"] == ("yes" if bfd else "no")
    for name in OPTIONAL_DAEMONS:
        if name not in ("ospfd", "bfdd"):
            assert d[name] == "no", name
    assert "zebra" not in d  # always on in FRR; "zebra=no" would read as if it were off
    assert d["vtysh_enable"] == "yes"
    assert "-A 127.0.0.1" in d["ospfd_options"] and "-A 127.0.0.1" in d["zebra_options"]
    assert ("bfdd_options" in d) == bfd


# -- options ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("router", list(PAPER))
def test_bfd_only_when_asked(topo, router):
    plain = Frr(topo).config(router)
    assert "bfd" not in plain.replace("bfdd", "")  # neither the node nor an interface line
    f = Frr(topo, bfd=True, bfd_profile="lab", bfd_receive_ms=100, bfd_transmit_ms=150, bfd_detect_multiplier=4)
    b = blocks(f.config(router))
    ospf = ospf_ifaces(b)
    for iface, body in ospf.items():
        assert body.count("ip ospf bfd profile lab") == 1, iface
        assert "ip ospf bfd" in body, iface  # the profile line alone creates no session (FRR 8.4, seen in the lab)
        assert all(line in body for line in PAPER_LINES)  # BFD adds to the paper's timers
    assert not any("bfd" in x for x in b["interface eth0"])
    assert b["bfd"] == ["profile lab", "receive-interval 100", "transmit-interval 150", "detect-multiplier 4",
                        "exit"]


def test_plain_dead_interval(topo):
    b = blocks(Frr(topo, dead_interval=4).config("router1"))
    for iface, body in ospf_ifaces(b).items():
        assert "ip ospf dead-interval 4" in body and "ip ospf hello-interval 1" in body
        assert not any("minimal" in x for x in body)
    b = blocks(Frr(topo, hello_interval=2, dead_interval=8).config("router1"))
    assert "ip ospf hello-interval 2" in b["interface eth2"] and "ip ospf dead-interval 8" in b["interface eth2"]
    assert "ip ospf dead-interval minimal hello-multiplier 10" in \
        blocks(Frr(topo, hello_multiplier=10).config("patha"))["interface eth1"]


def test_max_metric_on_startup(topo):
    assert "max-metric" not in Frr(topo).config("patha")
    ospf = blocks(Frr(topo, max_metric_on_startup=30).config("patha"))["router ospf"]
    assert "max-metric router-lsa on-startup 30" in ospf


def test_stub_until_routed_starts_as_a_stub_router(topo):
    ospf = blocks(Frr(topo, stub_until_routed=True).config("patha"))["router ospf"]
    assert "max-metric router-lsa administrative" in ospf and not any("on-startup" in x for x in ospf)
    with pytest.raises(ValueError, match="stub_until_routed and max_metric_on_startup both set"):
        Frr(topo, stub_until_routed=True, max_metric_on_startup=12)


def test_expected_routes_are_the_next_routers_towards_each_network(topo):
    """From Figure 3.3: each path router reaches the far networks through the end router on that
    side; the end routers reach each other's networks through both paths (ECMP)."""
    f = Frr(topo)
    assert f.expected_routes("patha") == {"10.10.10.0/24": ["10.10.11.2"], "10.10.13.0/24": ["10.10.11.2"],
                                          "10.10.14.0/24": ["10.10.12.2"], "10.10.15.0/24": ["10.10.12.2"]}
    assert f.expected_routes("pathb") == {"10.10.10.0/24": ["10.10.13.2"], "10.10.11.0/24": ["10.10.13.2"],
                                          "10.10.12.0/24": ["10.10.14.2"], "10.10.15.0/24": ["10.10.14.2"]}
    assert f.expected_routes("router1") == {"10.10.12.0/24": ["10.10.11.1"], "10.10.14.0/24": ["10.10.13.1"],
                                            "10.10.15.0/24": ["10.10.11.1", "10.10.13.1"]}
    assert f.expected_routes("router2")["10.10.10.0/24"] == ["10.10.12.1", "10.10.14.1"]
    # detours: while router2 is a stub router too, patha reaches the pathB-router2 link through
    # router1 (no farther from it); towards host1's and host2's networks there is no detour
    d = f.expected_routes("patha", detours=True)
    assert d["10.10.14.0/24"] == ["10.10.11.2", "10.10.12.2"] and d["10.10.15.0/24"] == ["10.10.12.2"]
    assert d["10.10.10.0/24"] == ["10.10.11.2"]


def _fake_tools(tmp_path, routes_json: list[str]):
    """``ip`` answering each call with the next of ``routes_json`` (the last one repeats), and a
    ``vtysh`` that logs its arguments: the ready script runs against them."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for i, text in enumerate(routes_json):
        (tmp_path / f"routes{i}").write_text(text)
    (bin_ / "ip").write_text(f"""#!/bin/sh
n=$(cat {tmp_path}/n 2>/dev/null || echo 0); f={tmp_path}/routes$n
[ -f $f ] && echo $((n+1)) > {tmp_path}/n || f={tmp_path}/routes{len(routes_json) - 1}
cat $f
""")
    (bin_ / "vtysh").write_text(f'#!/bin/sh\nprintf "%s|" "$@" > {tmp_path}/vtysh\n')
    for x in bin_.iterdir():
        x.chmod(0o755)
    return bin_


def test_the_ready_script_lifts_the_stub_only_when_every_route_is_as_expected(topo, tmp_path):
    """The script that runs in the guest, run here against a fake ``ip``: a route missing, then
    one through the wrong neighbour (a restarted router's loop), then all as expected."""
    import os
    import subprocess
    import sys

    f = Frr(topo, stub_until_routed=True)
    script = tmp_path / "ready.py"
    script.write_text(f.ready_script("patha"))
    want = f.expected_routes("patha")
    good = [{"dst": net, "gateway": hops[0]} for net, hops in want.items()] + [{"dst": "10.10.11.0/24"}]
    # a detour (another router still a stub) is fine: 10.10.14.0/24 through router1
    good = [dict(r, gateway="10.10.11.2") if r["dst"] == "10.10.14.0/24" else r for r in good]
    loop = [dict(r, gateway="10.10.11.2") if r["dst"] == "10.10.15.0/24" else r for r in good]
    bin_ = _fake_tools(tmp_path, [json.dumps(good[1:]), json.dumps(loop), json.dumps(good)])
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "n").read_text().strip() == "3"  # asked three times: lifted on the third answer only
    assert (tmp_path / "vtysh").read_text() == "-c|configure terminal|-c|router ospf|-c|no max-metric router-lsa administrative|"
    assert "max-metric lifted" in out.stdout


def test_the_ready_script_stays_a_stub_and_fails_naming_the_route(topo, tmp_path):
    import os
    import subprocess
    import sys

    f = Frr(topo, stub_until_routed=True)
    text = f.ready_script("patha").replace("TIMEOUT_S = 300", "TIMEOUT_S = 0.3")
    script = tmp_path / "ready.py"
    script.write_text(text)
    bin_ = _fake_tools(tmp_path, ["[]"])
    out = subprocess.run([sys.executable, str(script)], env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and not (tmp_path / "vtysh").exists()
    assert "still a stub router after 0.3 s" in out.stderr and "10.10.15.0/24 via 10.10.12.2 (kernel: no route)" in out.stderr


def test_converged_waits_for_the_stub_to_be_lifted(topo):
    full = {"192.168.103.92": "Full/Backup", "192.168.103.98": "Full/DR"}

    class Gate(StateHost):
        state = "running"

        def run(self, command, check=True, timeout=60.0):
            if "SubState" in command:
                return Result(self.name, command, 0, self.state + "\n", "", 0.0)
            return super().run(command, check, timeout)

    h = Gate("router1", full, ALL_NETS)
    f = Frr(topo, stub_until_routed=True)
    assert f.converged(h) == [f"router1: still a stub router ({READY_UNIT} running)"]
    h.state = "exited"
    assert f.converged(h) == []


@pytest.mark.parametrize("kw, needle", [
    ({"hello_multiplier": 1}, "hello_multiplier=1"),
    ({"hello_multiplier": 21}, "hello_multiplier=21"),
    ({"dead_interval": 1}, "dead_interval=1 must be longer than hello_interval=1"),
    ({"hello_interval": 0}, "hello_interval=0"),
    ({"max_metric_on_startup": 4}, "max_metric_on_startup=4"),
    ({"stub_until_routed": True, "stub_timeout_s": 5}, "stub_timeout_s=5"),
    ({"bfd": True, "bfd_profile": "two words"}, "bfd_profile='two words'"),
    ({"bfd": True, "bfd_receive_ms": 5}, "bfd_receive_ms=5"),
    ({"bfd": True, "bfd_detect_multiplier": 0}, "bfd_detect_multiplier=0"),
    ({"area": "backbone"}, "area='backbone'"),
])
def test_bad_options_are_refused_naming_the_field(topo, kw, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        Frr(topo, **kw)


# -- refusals and templates ------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["host1", "host2"])
def test_a_non_router_is_refused_by_name(topo, host):
    f = Frr(topo)
    for method in (f.config, f.daemons):
        with pytest.raises(ValueError, match=rf"host '{host}' has role 'end-host', not 'router'") as e:
            method(host)
        assert "labs/routing.yaml" in str(e.value) and "router1, patha, pathb, router2" in str(e.value)
    with pytest.raises(ValueError, match="no host named 'router3'"):
        f.config("router3")


def test_a_router_without_eth0_address_is_refused_naming_it():
    data = yaml.safe_load(ROUTING.read_text())
    pathb = next(h for h in data["hosts"] if h["name"] == "pathb")
    pathb["links"][0].pop("address")
    with pytest.raises(ValueError, match="host 'pathb' field 'links': no address on eth0"):
        Frr(topology.parse(data, source="labs/routing.yaml", check_memory=False))


def captured(monkeypatch, call) -> tuple[str, dict]:
    seen = {}

    def spy(template, **values):
        seen["template"], seen["values"] = template, values
        return render(template, **values)

    monkeypatch.setattr(frr_mod, "render", spy)
    call()
    return seen["template"], seen["values"]


@pytest.mark.parametrize("which", ["config", "daemons", "ready_script"])
def test_a_missing_template_variable_is_an_error(topo, monkeypatch, which):
    # every option on, so that every variable of the template is reached
    f = Frr(topo, bfd=True, max_metric_on_startup=30)
    template, values = captured(monkeypatch, lambda: getattr(f, which)("router1"))
    assert render(template, **values)  # complete: renders
    for key in values:
        partial = {k: v for k, v in values.items() if k != key}
        with pytest.raises(jinja2.UndefinedError, match=rf"'{key}' is undefined"):
            render(template, **partial)


# -- life cycle with a fake host -------------------------------------------------------------------

def FakeHost(name, vtysh=(0, "", "")):
    """Records what install/start would do over SSH; ``vtysh`` is what ``vtysh -C`` answers."""
    return RecordingHost(name, {"vtysh -C": vtysh}, {"EPOCHREALTIME": "1733300000,250000\n"})

def test_install_writes_both_files_then_checks_with_vtysh(topo):
    f, h = Frr(topo, bfd=True), FakeHost("patha")
    f.install(h)
    assert h.puts == [(DAEMONS, f.daemons("patha"), 0o640), (CONF, f.config("patha"), 0o640)]
    assert h.runs[0].startswith(f"chown frr:frr {DAEMONS} {CONF} && ") and h.runs[0].endswith(" && sync")
    # no stub-router gate in this configuration: one left by an earlier deploy is removed
    assert f"systemctl disable --quiet --now {READY_UNIT}" in h.runs[0] and f"rm -f /etc/systemd/system/{READY_UNIT}" in h.runs[0]
    assert h.runs[1:] == ["vtysh -C -f /etc/frr/frr.conf"]


def test_install_of_the_stub_gate_writes_and_enables_it(topo):
    f, h = Frr(topo, stub_until_routed=True), FakeHost("pathb")
    f.install(h)
    files = {p: (d, m) for p, d, m in h.puts}
    assert files[READY_SCRIPT] == (f.ready_script("pathb"), 0o755)
    unit = files[f"/etc/systemd/system/{READY_UNIT}"][0]
    # started whenever FRR starts, stopped and restarted with it, after it (config loaded)
    assert "WantedBy=frr.service" in unit and "PartOf=frr.service" in unit and "After=frr.service" in unit
    assert "RemainAfterExit=yes" in unit  # "exited" = lifted, for converged()
    assert f"systemctl daemon-reload && systemctl enable --quiet {READY_UNIT}" in h.runs[0]


@pytest.mark.parametrize("answer", [
    (1, "", "line 14: % Unknown command: ip ospf bfd profile fast"),
    (0, "line 14: % Unknown command: ip ospf bfd profile fast", ""),  # an error without an exit status
])
def test_install_raises_with_host_file_and_vtysh_message(topo, answer):
    h = FakeHost("router2", vtysh=answer)
    with pytest.raises(CommandError) as e:
        Frr(topo).install(h)
    msg = str(e.value)
    assert "router2" in msg and CONF in msg and "line 14: % Unknown command: ip ospf bfd profile fast" in msg
    assert e.value.host == "router2" and e.value.command == "vtysh -C -f /etc/frr/frr.conf"


def test_install_on_a_non_router_writes_nothing(topo):
    h = FakeHost("host1")
    with pytest.raises(ValueError, match="host 'host1'"):
        Frr(topo).install(h)
    assert h.puts == [] and h.runs == []


def test_start_restarts_frr_and_stop_reads_the_guest_clock(topo):
    f, h = Frr(topo), FakeHost("pathb")
    assert f.start(h) >= 0 and h.runs == ["systemctl restart frr"]
    assert f.stop(h) == pytest.approx(1733300000.25)
    assert h.runs[-1] == "echo $EPOCHREALTIME; systemctl stop frr"


class StateHost:
    """A router that answers the converged() query with given neighbours, routes and BFD peers."""

    def __init__(self, name, nbrs, routes, bfd=()):
        self.name, self.nbrs, self.routes, self.bfd = name, nbrs, routes, bfd

    def run(self, command, check=True, timeout=60.0):
        if "show bfd peers json" in command:
            out = json.dumps([{"peer": p, "status": s} for p, s in self.bfd])
        else:
            out = (json.dumps({"neighbors": {rid: [{"nbrState": st}] for rid, st in self.nbrs.items()}})
                   + "\n#\n" + json.dumps([{"dst": d} for d in self.routes]))
        return Result(self.name, command, 0, out, "", 0.0)


ALL_NETS = ["10.10.10.0/24", "10.10.11.0/24", "10.10.12.0/24", "10.10.13.0/24", "10.10.14.0/24", "10.10.15.0/24"]


def test_neighbours_are_the_routers_on_the_ospf_links(topo):
    assert Frr(topo).neighbours("router1") == {"192.168.103.92": "patha", "192.168.103.98": "pathb"}
    assert Frr(topo).neighbours("patha") == {"192.168.103.80": "router1", "192.168.103.99": "router2"}
    assert sorted(Frr(topo).all_networks()) == ALL_NETS


def test_converged_names_what_is_missing(topo):
    full = {"192.168.103.92": "Full/Backup", "192.168.103.98": "Full/DR"}
    assert Frr(topo).converged(StateHost("router1", full, ALL_NETS)) == []
    half = {"192.168.103.92": "Full/Backup", "192.168.103.98": "ExStart/DROther"}
    missing = Frr(topo).converged(StateHost("router1", half, ALL_NETS[:-1]))
    assert missing == ["router1: neighbour pathb (192.168.103.98) not Full", "router1: no route to 10.10.15.0/24"]
    # with BFD: a session per neighbour must be up too
    one_up = StateHost("router1", full, ALL_NETS, bfd=[("10.10.11.1", "up"), ("10.10.13.1", "down")])
    assert Frr(topo, bfd=True).converged(one_up) == ["router1: 1 of 2 BFD sessions up"]


def test_deploy_installs_and_restarts_every_router_then_waits_for_convergence(topo, monkeypatch):
    f = Frr(topo)
    hosts = [FakeHost(r) for r in f.routers]
    waited = []
    monkeypatch.setattr(Frr, "wait_converged", lambda self, hs, timeout=120: waited.append([h.name for h in hs]) or 0.0)
    assert f.deploy(hosts) >= 0
    for h in hosts:
        assert [p for p, _, _ in h.puts] == [DAEMONS, CONF]
        assert h.runs[-1] == "systemctl restart frr" and "vtysh -C -f /etc/frr/frr.conf" in h.runs
    assert waited == [list(f.routers)]
    bad = [FakeHost(f.routers[0], vtysh=(1, "", "line 3: % Unknown command")), *[FakeHost(r) for r in f.routers[1:]]]
    with pytest.raises(CommandError, match="Unknown command"):
        f.deploy(bad)
    assert not any("restart" in r for h in bad for r in h.runs)  # nothing restarted on a bad file
