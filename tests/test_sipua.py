"""Chapter 5's scripted phone (hautils/probes/sipua.py) without a lab: digest values from
RFC 2617, RFC 2782's SRV order, message parsing, and the phone against tiny fake registrars on
127.0.0.1 that challenge, check the digest, and go silent, so the phone fails over.  T1 is
10 ms and Timer F 0.2 s here: the whole file runs in about a second."""

from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
import time

import pytest

from hautils.probes import sipua
from hautils.probes.sipua import (Message, UserAgent, authorization, build, digest_response, order_srv,
                                  parse_challenge, resolve)


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


# -- digest --------------------------------------------------------------------------------------------

def test_digest_with_qop_matches_rfc2617s_example():
    # RFC 2617 section 3.5
    r = digest_response("Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
                        "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001", "0a4f113b")
    assert r == "6629fae49393a05397450978507c4ef1"


def test_digest_without_qop_is_rfc2069s():
    ha1 = md5("100:lab.uoc:100")
    ha2 = md5("REGISTER:sip:lab.uoc")
    assert digest_response("100", "lab.uoc", "100", "REGISTER", "sip:lab.uoc", "n0nce") == md5(f"{ha1}:n0nce:{ha2}")


def test_authorization_header_answers_the_challenge():
    ch = parse_challenge('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                         'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    assert ch["realm"] == "testrealm@host.com" and ch["qop"] == "auth,auth-int"
    v = authorization(ch, "Mufasa", "Circle Of Life", "GET", "/dir/index.html", nc=1, cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in v
    assert "qop=auth" in v and "nc=00000001" in v and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in v
    plain = authorization({"realm": "lab.uoc", "nonce": "x"}, "100", "100", "REGISTER", "sip:lab.uoc")
    assert "qop" not in plain and "cnonce" not in plain
    with pytest.raises(ValueError, match="MD5 only"):
        authorization({"realm": "r", "nonce": "n", "algorithm": "SHA-256"}, "u", "p", "REGISTER", "sip:x")


# -- SRV order -----------------------------------------------------------------------------------------

def test_srv_order_is_priority_first():
    recs = [(10, 100, 5060, "c"), (0, 10, 5060, "a"), (5, 0, 5060, "b")]
    assert [r[3] for r in order_srv(recs, random.Random(1))] == ["a", "b", "c"]


def test_srv_order_within_a_priority_follows_weight():
    recs = [(0, 90, 5060, "heavy"), (0, 10, 5060, "light")]
    rng = random.Random(7)
    firsts = [order_srv(recs, rng)[0][3] for _ in range(2000)]
    share = firsts.count("heavy") / len(firsts)
    assert 0.85 < share < 0.95  # 90 % by RFC 2782's draw
    assert sorted(r[3] for r in order_srv(recs, rng)) == ["heavy", "light"]  # both, each once


class FakeResolver:
    """dnspython's resolve(name, rdtype) for the lab's zone."""

    class Srv:
        def __init__(self, p, w, port, target):
            self.priority, self.weight, self.port, self.target = p, w, port, target

    def __init__(self):
        self.asked = []

    def resolve(self, name, rdtype):
        self.asked.append((name, rdtype))
        if rdtype == "SRV":
            return [self.Srv(10, 10, 5060, "sip-server1.lab.uoc."), self.Srv(0, 10, 5060, "sip-server0.lab.uoc.")]
        return {"sip-server0.lab.uoc": ["192.168.103.101"], "sip-server1.lab.uoc": ["192.168.103.102"]}[name]


def test_resolve_asks_for_the_srv_name_and_orders_the_targets():
    r = FakeResolver()
    assert resolve("lab.uoc", resolver=r) == [("sip-server0.lab.uoc", "192.168.103.101", 5060),
                                              ("sip-server1.lab.uoc", "192.168.103.102", 5060)]
    assert r.asked[0] == ("_sip._udp.lab.uoc", "SRV")


# -- messages ------------------------------------------------------------------------------------------

def test_message_parsing_with_compact_and_folded_headers():
    m = Message(b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bKabc;rport\r\n"
                b"CSeq: 7 REGISTER\r\nContact: <sip:100@1.2.3.4:5060>;expires=15,\r\n <sip:100@5.6.7.8>;expires=3\r\n"
                b"Content-Length: 0\r\n\r\n")
    assert m.status == 200 and m.branch == "z9hG4bKabc" and m.cseq == (7, "REGISTER")
    assert "5.6.7.8" in m.get("contact")
    b = build("OPTIONS sip:x SIP/2.0", [("Via", "v"), ("Content-Length", "99")], "ab")
    assert b.endswith(b"Content-Length: 2\r\n\r\nab") and b.count(b"Content-Length") == 1


# -- against fake registrars ---------------------------------------------------------------------------

class FakeRegistrar(threading.Thread):
    """A registrar on 127.0.0.1: 401 with a digest challenge, 200 for a right answer (checked
    here with hashlib, not with sipua's code), 403 for a wrong one; ``silent`` drops everything."""

    USERS = {"100": "100", "101": "101"}

    def __init__(self, qop=True):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.addr = self.sock.getsockname()
        self.qop, self.silent, self.done = qop, False, False
        self.registered: dict[str, str] = {}
        self.seen: list[str] = []

    def run(self):
        while not self.done:
            try:
                data, src = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.seen.append(data.decode().split(" ", 1)[0])
            if self.silent:
                continue
            req = Message(data)
            base = [("Via", v) for v in req.all("via")] + [("From", req.get("from")), ("To", req.get("to") + ";tag=r"),
                                                         ("Call-ID", req.get("call-id")), ("CSeq", req.get("cseq"))]
            auth = req.get("authorization")
            if req.method == "OPTIONS":
                self.sock.sendto(build("SIP/2.0 200 OK", base), src)
            elif not auth:
                ch = 'Digest realm="lab.uoc", nonce="n%d"' % len(self.seen) + (', qop="auth"' if self.qop else "")
                self.sock.sendto(build("SIP/2.0 401 Unauthorized", base + [("WWW-Authenticate", ch)]), src)
            else:
                f = dict(re.findall(r'(\w+)="?([^",]*)"?', auth))
                ha1 = md5(f"{f['username']}:lab.uoc:{self.USERS.get(f['username'], '')}")
                ha2 = md5(f"REGISTER:{f['uri']}")
                if self.qop:
                    want = md5(f"{ha1}:{f['nonce']}:{f['nc']}:{f['cnonce']}:auth:{ha2}")
                else:
                    want = md5(f"{ha1}:{f['nonce']}:{ha2}")
                if f["response"] == want:
                    self.registered[f["username"]] = req.get("contact")
                    self.sock.sendto(build("SIP/2.0 200 OK", base + [("Contact", req.get("contact") + ";expires=15")]), src)
                else:
                    self.sock.sendto(build("SIP/2.0 403 Forbidden", base), src)

    def stop(self):
        self.done = True
        self.join(1)
        self.sock.close()


@pytest.fixture
def registrars():
    regs = [FakeRegistrar(), FakeRegistrar(qop=False)]
    for r in regs:
        r.start()
    yield regs
    for r in regs:
        r.stop()


def phone(regs, user="100", password="100", **kw):
    log = sipua.JsonLog(stream=open("/dev/null", "w"))
    targets = [(f"sip-server{i}", *r.addr) for i, r in enumerate(regs)]
    return UserAgent(user, password, "lab.uoc", targets=targets, local_ip="127.0.0.1", local_port=0,
                     t1=0.01, timer_f=0.2, log=log, **kw), log


def test_registers_with_digest_then_fails_over_when_the_first_goes_silent(registrars):
    s0, s1 = registrars
    ua, log = phone(registrars)
    try:
        t0 = time.monotonic()
        assert ua.register()[0] == "sip-server0"
        assert "100" in s0.registered and "<sip:100@127.0.0.1:" in s0.registered["100"]
        assert s0.seen == ["REGISTER", "REGISTER"]  # challenged once, then accepted
        s0.silent = True
        assert ua.register()[0] == "sip-server1"  # Timer F on server0, then server1 (no qop)
        assert "100" in s1.registered
        assert time.monotonic() - t0 < 2
        ev = [e for e in log.events if e["event"] in ("registered", "timeout")]
        assert [(e["event"], e["target"]) for e in ev] == [
            ("registered", "sip-server0"), ("timeout", "sip-server0"), ("registered", "sip-server1")]
        assert ev[0]["failover"] is False and ev[2]["failover"] is True and ev[2]["expires"] == 15
        assert ev[1]["after_s"] == 0.2
        # Timer E: the silent server got the REGISTER again after t1, 2 t1, 4 t1, ... (8 at most in 0.2 s)
        assert 4 <= s0.seen.count("REGISTER") - 2 <= 8
        # it stays with server1 while server1 answers
        assert ua.register()[0] == "sip-server1"
        assert log.events[-1]["failover"] is False
        assert ua.register(expires=0)[0] == "sip-server1" and log.events[-1]["event"] == "unregistered"
        assert ua.current is None
    finally:
        ua.close()


def test_a_wrong_password_is_refused_not_failed_over(registrars):
    ua, log = phone(registrars, password="wrong")
    try:
        assert ua.register() is None
        assert log.events[-1]["event"] == "register_failed" and log.events[-1]["status"] == 403
    finally:
        ua.close()


def test_options_keepalive(registrars):
    ua, log = phone(registrars)
    try:
        assert ua.options(registrars[0].addr) == 200
        registrars[0].silent = True
        assert ua.options(registrars[0].addr) == 0
        assert [e["status"] for e in log.events if e["event"] == "options"] == [200, 0]
    finally:
        ua.close()


def test_a_call_invite_ringing_ok_ack_bye_between_two_phones():
    """The callee's own socket plays the registrar, so the INVITE goes straight to it."""
    callee, clog = phone([], user="101", password="101")
    stop = threading.Event()
    th = threading.Thread(target=lambda: [callee.idle(0.05) for _ in iter(stop.is_set, True)], daemon=True)
    th.start()
    caller, log = phone([], user="100", password="100")
    try:
        caller.current = ("sip-server0", *callee.local)
        assert caller.call("101", hold=0.05) == 200
        call = next(e for e in log.events if e["event"] == "call")
        assert call["status"] == 200 and call["ringing"] is True
        assert [e for e in log.events if e["event"] == "bye"][0]["status"] == 200
        time.sleep(0.1)
        assert [e["method"] for e in clog.events if e["event"] == "incoming"] == ["INVITE", "BYE"]
    finally:
        stop.set()
        th.join(1)
        caller.close()
        callee.close()


def test_command_line_options_mode(registrars, tmp_path):
    path = tmp_path / "o.jsonl"
    rc = sipua.main(["options", "--server", "%s:%d" % registrars[0].addr, "--bind", "127.0.0.1", "--port", "0",
                     "--t1", "0.01", "--timer-f", "0.2", "--log", str(path)])
    assert rc == 0
    import json
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert events == ["start", "options", "stopped"]
