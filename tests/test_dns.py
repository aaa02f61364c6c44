"""Chapter 5's DNS server without a VM: the zone, named.conf.options and named.conf.local
rendered for labs/sip.yaml, and BIND's checks on a fake host.

Expected values are typed from labs/sip.yaml and the thesis (section 5.5.2.1: both SRV records
priority 0, weight 10, port 5060), not computed from them.  (The rendered files were also run
through BIND 9.18's named-checkconf -z and named-checkzone in the lab image while writing them;
in CI only the lab runs the tools, see ``Dns.check``.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hautils import topology
from hautils.errors import CommandError
from hautils.services.dns import LOCAL, NAMED_CONF, OPTIONS, Dns, Srv, locate
from fakes import RecordingHost

SIP = Path(__file__).resolve().parents[1] / "labs" / "sip.yaml"


@pytest.fixture(scope="module")
def topo():
    return topology.load(SIP, check_memory=False)


def records(zone: str) -> list[list[str]]:
    """The zone's records as [owner, class, type, rdata...], comments and the SOA's parentheses
    joined (enough for this zone's one multi-line record)."""
    text = re.sub(r";[^\n]*", "", zone)
    text = re.sub(r"\(([^)]*)\)", lambda m: " ".join(m[1].split()), text)
    return [line.split() for line in text.splitlines() if line.strip() and not line.startswith("$")]


def test_zone_has_the_hosts_the_srv_records_and_a_soa(topo):
    z = Dns(topo, serial=2026120501).zone_file()
    recs = records(z)
    a = {r[0]: r[3] for r in recs if r[2] == "A"}
    assert a == {"dns-server": "192.168.103.98", "sip-server0": "192.168.103.101",
                 "sip-server1": "192.168.103.102", "phone100": "192.168.103.89", "phone101": "192.168.103.90"}
    srv = [r[3:] for r in recs if r[0] == "_sip._udp"]
    assert srv == [["0", "10", "5060", "sip-server0"], ["0", "10", "5060", "sip-server1"]]  # the thesis's
    soa = next(r for r in recs if r[2] == "SOA")
    assert soa[0] == "@" and soa[3:5] == ["dns-server.lab.uoc.", "hostmaster.lab.uoc."]
    assert soa[5:] == ["2026120501", "3600", "600", "1209600", "5"]
    assert ["@", "IN", "NS", "dns-server"] in recs
    assert "$ORIGIN lab.uoc.\n$TTL 5\n" in z


def test_srv_order_is_priority_then_heavier_weight(topo):
    d = Dns(topo, serial=7, srv=[Srv("sip-server1", 10, 50), Srv("sip-server0", 0, 5),
                                 Srv("dns-server", 10, 60)])
    assert [r.target for r in d.srv_order()] == ["sip-server0", "dns-server", "sip-server1"]
    srv = [r[3:] for r in records(d.zone_file()) if r[0] == "_sip._udp"]
    assert srv == [["0", "5", "5060", "sip-server0"], ["10", "60", "5060", "dns-server"],
                   ["10", "50", "5060", "sip-server1"]]


def test_options_are_authoritative_only_on_the_lab_address(topo):
    d = Dns(topo, serial=1)
    o = d.named_conf()
    assert "listen-on port 53 { 127.0.0.1; 192.168.103.98; };" in o
    assert "recursion no;" in o and "allow-query { 127.0.0.1; 192.168.103.0/24; };" in o
    assert o.count("{") == o.count("}")
    z = d.named_conf_local()
    assert 'zone "lab.uoc" {' in z and 'file "/etc/bind/db.lab.uoc";' in z and "type primary;" in z
    assert set(d.files()) == {OPTIONS, LOCAL, "/etc/bind/db.lab.uoc"}


def test_serial_defaults_to_the_render_time(topo):
    import time
    d = Dns(topo)
    assert abs(d.serial - time.time()) < 60
    assert "epoch seconds" in d.zone_file()


@pytest.mark.parametrize("kw, words", [
    ({"server": "nobody"}, "no host named 'nobody'"),
    ({"network": "wan"}, "no network 'wan'"),
    ({"srv": [Srv("ghost")]}, "target 'ghost'"),
    ({"srv": [Srv("sip-server0", priority=70000)]}, "priority=70000"),
    ({"ttl": -1}, "ttl=-1"),
    ({"expire": 100}, "expire=100"),
    ({"zone": "lab_uoc"}, "zone='lab_uoc'"),
])
def test_bad_options_name_the_field(topo, kw, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        Dns(topo, **kw)


def test_resolv_conf_points_at_the_server(topo):
    r = Dns(topo, serial=1).resolv_conf()
    assert "nameserver 192.168.103.98\nsearch lab.uoc\n" in r


def FakeHost(name="dns-server", answers=None):
    return RecordingHost(name, answers)

def test_install_writes_then_checks_with_bind_tools(topo):
    d, h = Dns(topo, serial=1), FakeHost(answers={"named-checkzone": (0, "zone lab.uoc/IN: loaded serial 1\nOK\n", "")})
    out = d.install(h)
    assert [p for p, _, _ in h.puts] == [OPTIONS, LOCAL, "/etc/bind/db.lab.uoc"]
    assert h.runs == [f"named-checkconf {NAMED_CONF}", "named-checkzone lab.uoc /etc/bind/db.lab.uoc"]
    assert out.endswith("OK")


def test_a_rejected_zone_names_file_and_line(topo):
    msg = "dns_rdata_fromtext: /etc/bind/db.lab.uoc:29: near 'sip-server1': not a valid number\n"
    h = FakeHost(answers={"named-checkzone": (1, msg, "")})
    with pytest.raises(CommandError, match=r"/etc/bind/db\.lab\.uoc line 29 rejected by named-checkzone on dns-server"):
        Dns(topo, serial=1).install(h)
    assert locate("/tmp/bad.conf:1: unknown option 'bogus'") == ("/tmp/bad.conf", 1)


def test_install_refuses_another_host(topo):
    with pytest.raises(ValueError, match="not the zone's server"):
        Dns(topo, serial=1).install(FakeHost("phone100"))


def test_answers_parses_dig(topo):
    h = FakeHost(answers={"dig": (0, "0 10 5060 sip-server1.lab.uoc.\n0 10 5060 sip-server0.lab.uoc.\n", "")})
    assert Dns(topo, serial=1).answers(h) == [(0, 10, 5060, "sip-server0.lab.uoc"), (0, 10, 5060, "sip-server1.lab.uoc")]
