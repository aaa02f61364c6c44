#!/usr/bin/env python3
"""hautils SIP phone: a scripted SIP user agent that finds its registrar through DNS SRV.

Chapter 5's phones (the thesis's Sipura, section 5.5.2.3, which "supports DNS SRV and ... in
case of failure, it will register to the other one").  Like ``agent.py`` it is copied to a lab
host (``/usr/local/lib/hautils/sipua.py``) and started there over SSH; it needs only the
standard library, plus dnspython (``python3-dnspython``, in the lab image) to look the SRV
records up.  It logs one JSON line per event, with the epoch time ``t``: what the chapter
measures is when a registration succeeded and on which server.

What it speaks: SIP over UDP, a subset of RFC 3261 -- REGISTER with digest authentication
(RFC 2617 MD5, with ``qop=auth`` and without qop), INVITE / 100 / 180 / 200 / ACK / BYE without
media (as caller and callee), OPTIONS (answered, and sent as a keepalive).  Server selection
follows RFC 3263 section 4: the SRV records of ``_sip._udp.DOMAIN`` ordered by priority, and by
RFC 2782's weighted random draw within a priority; no SRV record: the domain's own address,
port 5060.  A REGISTER whose transaction times out (Timer F, 64 x T1 by default: 32 s with
RFC 3261's T1 of 500 ms) moves the phone to the next target; when every target failed, it
looks the records up again.  ``--t1`` and ``--timer-f`` let the chapter show the defaults
against a tuned phone.

::

    sipua.py run --user 101 --password 101 --domain lab.uoc --dns 192.168.103.98 \\
                 --expires 15 --log /var/lib/hautils/probes/phone101.jsonl
    sipua.py run ... --call 100 --call-every 5 --hold 1     (a call every 5 s, 1 s long)
    sipua.py options --server 192.168.103.101 --count 1      (one keepalive, exit status)

Events (key ``event``): ``start``, ``resolved`` (targets in order), ``timeout`` (a transaction
got no final answer from ``server``), ``registered`` (``server``, ``target``, ``expires``,
``ms`` the whole registration took, ``failover`` true when it is not the server of the last
registration), ``register_failed``, ``call`` (``to``, ``status``, ``ms``, ``server``),
``incoming`` (a request this phone answered), ``options``, ``unregistered``, ``stopped``.
"""

import argparse
import hashlib
import json
import os
import random
import re
import select
import signal
import socket
import sys
import time
import uuid

T1 = 0.5  # RFC 3261's round-trip estimate, seconds
T2 = 4.0  # its cap on non-INVITE retransmission intervals
SIP_PORT = 5060


# -- digest (RFC 2617) --------------------------------------------------------------------------------

def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def parse_challenge(value):
    """``Digest realm="x", nonce="y", qop="auth"`` -> {"realm": "x", "nonce": "y", "qop": "auth"}."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError("not a Digest challenge: %r" % value)
    out = {}
    for m in re.finditer(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))', rest):
        out[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return out


def digest_response(user, realm, password, method, uri, nonce, qop=None, nc=None, cnonce=None):
    """RFC 2617 section 3.2.2.1's request-digest for MD5: with qop=auth
    MD5(HA1:nonce:nc:cnonce:auth:HA2), without qop (RFC 2069) MD5(HA1:nonce:HA2)."""
    ha1 = md5("%s:%s:%s" % (user, realm, password))
    ha2 = md5("%s:%s" % (method, uri))
    if qop:
        return md5("%s:%s:%s:%s:%s:%s" % (ha1, nonce, nc, cnonce, qop, ha2))
    return md5("%s:%s:%s" % (ha1, nonce, ha2))


def authorization(challenge, user, password, method, uri, nc=1, cnonce=None):
    """The Authorization (or Proxy-Authorization) value that answers ``challenge`` (a dict)."""
    algorithm = challenge.get("algorithm", "MD5")
    if algorithm.upper() != "MD5":
        raise ValueError("digest algorithm %s: this phone speaks MD5 only" % algorithm)
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    if qops and "auth" not in qops:
        raise ValueError("qop %r offered: this phone speaks qop=auth only" % challenge["qop"])
    qop = "auth" if qops else None
    ncs = "%08x" % nc
    cnonce = cnonce or uuid.uuid4().hex[:16]
    resp = digest_response(user, challenge["realm"], password, method, uri, challenge["nonce"],
                           qop, ncs, cnonce)
    parts = ['username="%s"' % user, 'realm="%s"' % challenge["realm"], 'nonce="%s"' % challenge["nonce"],
             'uri="%s"' % uri, 'response="%s"' % resp, "algorithm=MD5"]
    if "opaque" in challenge:
        parts.append('opaque="%s"' % challenge["opaque"])
    if qop:
        parts += ["qop=auth", "nc=%s" % ncs, 'cnonce="%s"' % cnonce]
    return "Digest " + ", ".join(parts)


# -- server selection (RFC 3263, RFC 2782) ------------------------------------------------------------

def order_srv(records, rng=random):
    """RFC 2782's order of SRV ``records`` (tuples priority, weight, port, target): lower
    priority first; within one priority, drawn at random in proportion to weight (zero-weight
    records first in the draw, so they have a small chance, as the RFC says)."""
    out = []
    for prio in sorted({r[0] for r in records}):
        group = sorted((r for r in records if r[0] == prio), key=lambda r: r[1] != 0)
        while group:
            total = sum(r[1] for r in group)
            pick = rng.uniform(0, total) if total else 0
            acc = 0
            for i, r in enumerate(group):
                acc += r[1]
                if acc >= pick:
                    out.append(group.pop(i))
                    break
    return out


def resolve(domain, nameserver=None, resolver=None, rng=random, lifetime=2.0):
    """The registrars of ``domain`` in the order to try them: [(target, ip, port), ...].
    ``resolver``: an object with dnspython's ``resolve(name, rdtype)`` (tests pass a fake)."""
    if resolver is None:
        import dns.resolver  # python3-dnspython, on the lab's hosts
        resolver = dns.resolver.Resolver(configure=nameserver is None)
        if nameserver:
            resolver.nameservers = [nameserver]
        resolver.lifetime = lifetime
    try:
        answer = resolver.resolve("_sip._udp.%s" % domain, "SRV")
        recs = [(r.priority, r.weight, r.port, str(r.target).rstrip(".")) for r in answer]
    except Exception as e:  # noqa: BLE001 - NXDOMAIN, NoAnswer: RFC 3263 4.2, the domain itself
        if type(e).__name__ not in ("NXDOMAIN", "NoAnswer"):
            raise
        recs = [(0, 0, SIP_PORT, domain)]
    out = []
    for _prio, _weight, port, target in order_srv(recs, rng):
        for a in resolver.resolve(target, "A"):
            out.append((target, str(a), port))
    return out


# -- messages -----------------------------------------------------------------------------------------

class Message:
    """A parsed SIP message: ``start`` line, ``headers`` (list of (name, value), names as sent),
    ``body``; a request has ``method``/``uri``, a response ``status``/``reason``."""

    COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}

    def __init__(self, data):
        text = data.decode("utf-8", "replace")
        head, _, self.body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        self.start = lines[0]
        self.headers = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and self.headers:
                n, v = self.headers[-1]
                self.headers[-1] = (n, v + " " + line.strip())
            elif ":" in line:
                n, v = line.split(":", 1)
                self.headers.append((n.strip(), v.strip()))
        parts = self.start.split(" ", 2)
        if parts[0].startswith("SIP/"):
            self.method, self.uri = None, None
            self.status, self.reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
        else:
            self.method, self.uri, self.status, self.reason = parts[0], parts[1], None, None

    def all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if self.COMPACT.get(n.lower(), n.lower()) == name]

    def get(self, name, default=""):
        v = self.all(name)
        return v[0] if v else default

    @property
    def branch(self):
        m = re.search(r";\s*branch=([^;,\s]+)", self.get("via"))
        return m.group(1) if m else ""

    @property
    def cseq(self):
        n, _, m = self.get("cseq").partition(" ")
        return int(n or 0), m.strip()


def tag_of(value):
    m = re.search(r";\s*tag=([^;>\s]+)", value)
    return m.group(1) if m else ""


def uri_of(value):
    """The URI inside a name-addr (``"x" <sip:a@b;lr>;tag=1`` -> ``sip:a@b;lr``)."""
    m = re.search(r"<([^>]*)>", value)
    return m.group(1) if m else value.split(";")[0].strip()


def hostport(uri, default_port=SIP_PORT):
    """(host, port) a SIP URI points at: ``sip:101@192.168.103.90:5062;x`` -> ("192.168.103.90", 5062)."""
    rest = uri.split(":", 1)[1] if uri.startswith("sip:") else uri
    rest = rest.split(";")[0].split("?")[0].split("@")[-1]
    host, _, port = rest.partition(":")
    return host, int(port) if port else default_port


def build(start, headers, body=""):
    lines = [start] + ["%s: %s" % (n, v) for n, v in headers if n.lower() != "content-length"]
    lines.append("Content-Length: %d" % len(body.encode()))
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def new_branch():
    return "z9hG4bK" + uuid.uuid4().hex[:16]


# -- the phone ----------------------------------------------------------------------------------------

class JsonLog:
    def __init__(self, path=None, stream=None):
        self.path = path
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.f = open(path, "a", buffering=1) if path else (stream or sys.stdout)
        self.events = []

    def __call__(self, event, **fields):
        rec = {"t": round(time.time(), 6), "event": event}
        rec.update(fields)
        self.events.append(rec)
        self.f.write(json.dumps(rec, sort_keys=False) + "\n")
        self.f.flush()
        return rec


class UserAgent:
    """One phone: ``user``/``password`` at ``domain``; ``targets`` is a list of (name, ip, port)
    in the order to try, or None to look them up (:func:`resolve`, ``nameserver``).  ``t1`` and
    ``timer_f`` (default 64 x t1) are RFC 3261's timers: a REGISTER is resent after t1, 2 t1, ...
    (at most T2 apart) and given up on after timer_f, and the phone then tries the next target."""

    def __init__(self, user, password, domain, targets=None, nameserver=None, local_ip="0.0.0.0",
                 local_port=SIP_PORT, t1=T1, timer_f=None, expires=15, log=None, resolver=None,
                 contact_ip=None):
        self.user, self.password, self.domain = user, password, domain
        self.static_targets = list(targets) if targets is not None else None
        self.nameserver, self.resolver = nameserver, resolver
        self.t1 = float(t1)
        self.timer_f = float(timer_f) if timer_f is not None else 64 * self.t1
        self.t2 = max(T2, self.t1)
        self.expires = int(expires)
        self.log = log or JsonLog(stream=sys.stdout)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_ip, local_port))
        ip, port = self.sock.getsockname()
        if contact_ip is None:
            contact_ip = ip if ip != "0.0.0.0" else self._outbound_ip()
        self.local = (contact_ip, port)
        self.aor = "sip:%s@%s" % (user, domain)
        self.contact = "<sip:%s@%s:%d>" % (user, contact_ip, port)
        self.call_id = uuid.uuid4().hex + "@" + contact_ip  # one per registration binding (RFC 3261 10.2)
        self.from_tag = uuid.uuid4().hex[:10]
        self.cseq = 0
        self.targets = []
        self.current = None  # (name, ip, port) of the last successful registration
        self.dialogs = {}  # call-id -> last final response we sent as callee (resent on a repeat INVITE)

    def _outbound_ip(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the kernel picks the source address
            return s.getsockname()[0]
        finally:
            s.close()

    def close(self):
        self.sock.close()

    # -- transport and transactions --

    def via(self, branch):
        return "SIP/2.0/UDP %s:%d;branch=%s;rport" % (self.local[0], self.local[1], branch)

    def send(self, data, dest):
        self.sock.sendto(data, dest)

    def poll(self, timeout):
        """Wait up to ``timeout`` s for one message; requests are answered here (this phone as
        callee), responses returned.  Returns (Message, source) or (None, None)."""
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return None, None
        data, src = self.sock.recvfrom(65535)
        try:
            msg = Message(data)
        except (ValueError, IndexError):
            return None, None
        if msg.method:
            self.answer(msg, src)
            return None, None
        return msg, src

    def transaction(self, build_request, dest, invite=False):
        """Send a request (``build_request(branch)`` -> bytes) to ``dest`` and run RFC 3261's
        client transaction over UDP: resend after t1, doubling (non-INVITE: at most T2, and T2
        once a provisional came), until a final response or Timer F/B.  Returns (final
        response or None on timeout, [provisional responses])."""
        branch = new_branch()
        data = build_request(branch)
        start = time.monotonic()
        deadline = start + self.timer_f
        interval, next_send = self.t1, start
        provisional = []
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None, provisional
            if next_send is not None and now >= next_send:
                self.send(data, dest)
                next_send = now + interval
                interval = min(interval * 2, self.t2) if not invite else interval * 2
            wait = deadline - now if next_send is None else min(deadline, next_send) - now
            msg, _src = self.poll(wait)
            if msg is None or msg.branch != branch:
                continue
            if msg.status < 200:
                provisional.append(msg)
                if invite:
                    next_send = None  # Timer A stops; Timer B keeps running
                    deadline = start + max(self.timer_f, 64 * self.t1) + 180  # ringing may last
                else:
                    interval = self.t2
                continue
            if invite and msg.status >= 300:  # ACK for a failure belongs to the transaction
                self.send(self._ack_failure(data, msg, branch), dest)
            return msg, provisional

    def _ack_failure(self, invite_data, resp, branch):
        inv = Message(invite_data)
        return build("ACK %s SIP/2.0" % inv.uri, [
            ("Via", self.via(branch)), ("Max-Forwards", "70"), ("From", inv.get("from")),
            ("To", resp.get("to")), ("Call-ID", inv.get("call-id")), ("CSeq", "%d ACK" % inv.cseq[0])])

    # -- registration --

    def resolve(self):
        if self.static_targets is not None:
            self.targets = list(self.static_targets)
        else:
            self.targets = resolve(self.domain, self.nameserver, self.resolver)
        self.log("resolved", targets=["%s %s:%d" % t for t in self.targets])
        return self.targets

    def _register_request(self, target, auth_header=None, expires=None):
        self.cseq += 1
        cseq = self.cseq
        uri = "sip:%s" % self.domain

        def build_request(branch):
            h = [("Via", self.via(branch)), ("Max-Forwards", "70"),
                 ("From", "<%s>;tag=%s" % (self.aor, self.from_tag)), ("To", "<%s>" % self.aor),
                 ("Call-ID", self.call_id), ("CSeq", "%d REGISTER" % cseq), ("Contact", self.contact),
                 ("Expires", str(self.expires if expires is None else expires)),
                 ("User-Agent", "hautils-sipua")]
            if auth_header:
                h.append(auth_header)
            return build("REGISTER %s SIP/2.0" % uri, h)
        return build_request, uri

    def register_at(self, target, expires=None):
        """One registration with ``target`` (name, ip, port), answering a digest challenge.
        Returns the final response, or None when a transaction timed out."""
        dest = (target[1], target[2])
        auth = None
        for _round in range(3):  # the first try, then at most two challenges (a stale nonce)
            build_request, uri = self._register_request(target, auth, expires)
            resp, _ = self.transaction(build_request, dest)
            if resp is None:
                return None
            if resp.status in (401, 407):
                hdr = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
                ch = parse_challenge(resp.get(hdr.lower()))
                if auth is not None and ch.get("stale", "").lower() != "true":
                    return resp  # our answer was refused: wrong password
                name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
                auth = (name, authorization(ch, self.user, self.password, "REGISTER", uri))
                continue
            return resp
        return resp

    def register(self, expires=None):
        """Register with the first target that answers, the last good one first; log the
        outcome.  Returns the target registered with, or None."""
        t0 = time.time()
        if not self.targets:
            self.resolve()
        order = list(self.targets)
        if self.current in order:  # stay where we are while that server answers
            order.remove(self.current)
            order.insert(0, self.current)
        for rounds in range(2):
            for target in order:
                resp = self.register_at(target, expires)
                where = "%s:%d" % (target[1], target[2])
                if resp is None:
                    self.log("timeout", method="REGISTER", server=where, target=target[0],
                             after_s=round(self.timer_f, 3))
                    continue
                if 200 <= resp.status < 300:
                    failover = self.current is not None and self.current != target
                    self.current = target
                    if expires == 0:
                        self.current = None
                        self.log("unregistered", server=where, target=target[0])
                        return target
                    got = self._granted_expires(resp)
                    self.log("registered", server=where, target=target[0], expires=got,
                             ms=round((time.time() - t0) * 1000, 1), failover=failover)
                    return target
                self.log("register_failed", server=where, target=target[0], status=resp.status,
                         reason=resp.reason)
                if resp.status >= 500:  # the server is there but cannot serve: RFC 3263 4.3, next
                    continue
                return None  # refused (a wrong password): another server would refuse it too
            if rounds == 0:  # every target failed: the records may have changed
                order = self.resolve()
        self.current = None
        self.log("register_failed", server=None, status=None, reason="no target answered")
        return None

    def _granted_expires(self, resp):
        mine = uri_of(self.contact)
        for c in resp.all("contact"):
            for one in c.split(","):
                if uri_of(one) == mine:
                    m = re.search(r";\s*expires=(\d+)", one)
                    if m:
                        return int(m.group(1))
        v = resp.get("expires")
        return int(v) if v.isdigit() else self.expires

    # -- calls (as caller) --

    def call(self, to_user, hold=1.0):
        """Call ``to_user`` through the current registrar: INVITE (answering a 407), wait for the
        answer, ACK, hold ``hold`` s, BYE.  Logs and returns the INVITE's final status (0: no
        answer within Timer B)."""
        if self.current is None:
            self.log("call", to=to_user, status=None, reason="not registered")
            return None
        dest = (self.current[1], self.current[2])
        where = "%s:%d" % dest
        uri = "sip:%s@%s" % (to_user, self.domain)
        call_id = uuid.uuid4().hex + "@" + self.local[0]
        tag = uuid.uuid4().hex[:10]
        auth = None
        t0 = time.time()
        for _round in range(2):
            self.cseq += 1
            cseq = self.cseq

            def build_request(branch, cseq=cseq, auth=auth):
                h = [("Via", self.via(branch)), ("Max-Forwards", "70"),
                     ("From", "<%s>;tag=%s" % (self.aor, tag)), ("To", "<%s>" % uri), ("Call-ID", call_id),
                     ("CSeq", "%d INVITE" % cseq), ("Contact", self.contact), ("User-Agent", "hautils-sipua")]
                if auth:
                    h.append(auth)
                return build("INVITE %s SIP/2.0" % uri, h)
            resp, prov = self.transaction(build_request, dest, invite=True)
            if resp is not None and resp.status in (401, 407) and auth is None:
                hdr = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
                name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
                auth = (name, authorization(parse_challenge(resp.get(hdr)), self.user, self.password,
                                            "INVITE", uri))
                continue
            break
        ms = round((time.time() - t0) * 1000, 1)
        ringing = any(p.status == 180 for p in prov)
        if resp is None or resp.status >= 300:
            self.log("call", to=to_user, server=where, status=resp.status if resp else 0,
                     reason=resp.reason if resp else "timeout", ringing=ringing, ms=ms)
            return resp.status if resp else 0
        # 2xx: ACK and BYE are new transactions along the route set (RFC 3261 12.1.2, 13.2.2.4)
        remote = uri_of(resp.get("contact")) or uri
        routes = [uri_of(v) for rr in reversed(resp.all("record-route")) for v in rr.split(",")]
        hop = hostport(routes[0]) if routes else hostport(remote)
        to = resp.get("to")

        def in_dialog(method, n, branch):
            h = [("Via", self.via(branch)), ("Max-Forwards", "70"), ("From", "<%s>;tag=%s" % (self.aor, tag)),
                 ("To", to), ("Call-ID", call_id), ("CSeq", "%d %s" % (n, method))]
            h += [("Route", "<%s>" % r) for r in routes]
            return build("%s %s SIP/2.0" % (method, remote), h)
        self.send(in_dialog("ACK", self.cseq, new_branch()), hop)
        self.log("call", to=to_user, server=where, status=resp.status, reason=resp.reason, ringing=ringing, ms=ms)
        self.idle(hold)
        self.cseq += 1
        bye, _ = self.transaction(lambda b, n=self.cseq: in_dialog("BYE", n, b), hop)
        self.log("bye", to=to_user, status=bye.status if bye else 0)
        return resp.status

    def options(self, dest):
        """One OPTIONS to ``dest`` (ip, port): the registrar's keepalive.  Returns the status (0: timeout)."""
        def build_request(branch):
            return build("OPTIONS sip:%s:%d SIP/2.0" % dest, [
                ("Via", self.via(branch)), ("Max-Forwards", "70"),
                ("From", "<%s>;tag=%s" % (self.aor, self.from_tag)), ("To", "<sip:%s:%d>" % dest),
                ("Call-ID", uuid.uuid4().hex), ("CSeq", "1 OPTIONS")])
        t0 = time.time()
        resp, _ = self.transaction(build_request, dest)
        status = resp.status if resp else 0
        self.log("options", server="%s:%d" % dest, status=status, ms=round((time.time() - t0) * 1000, 1))
        return status

    # -- as callee --

    def answer(self, req, src):
        """Answer a request: INVITE (100, 180, 200 without a body), BYE/OPTIONS/CANCEL (200);
        ACK needs no answer.  A repeated INVITE gets the same final response again."""
        if req.method == "ACK":
            return
        dest = src  # where it came from (RFC 3581's rport), not the Via's port
        via = req.all("via")
        base = [("Via", v) for v in via] + [("From", req.get("from")), ("Call-ID", req.get("call-id")),
                                            ("CSeq", req.get("cseq"))]
        to = req.get("to")
        if req.method == "INVITE":
            call_id = req.get("call-id")
            if call_id in self.dialogs:
                self.send(self.dialogs[call_id], dest)
                return
            if not tag_of(to):
                to += ";tag=" + uuid.uuid4().hex[:10]
            rr = [("Record-Route", v) for v in req.all("record-route")]
            self.send(build("SIP/2.0 100 Trying", base + [("To", req.get("to"))]), dest)
            self.send(build("SIP/2.0 180 Ringing", base + [("To", to)] + rr + [("Contact", self.contact)]), dest)
            ok = build("SIP/2.0 200 OK", base + [("To", to)] + rr + [("Contact", self.contact)])
            self.dialogs[call_id] = ok
            self.send(ok, dest)
        else:
            if not tag_of(to):
                to += ";tag=" + uuid.uuid4().hex[:10]
            self.send(build("SIP/2.0 200 OK", base + [("To", to)]), dest)
            if req.method == "BYE":
                self.dialogs.pop(req.get("call-id"), None)
        self.log("incoming", method=req.method, src="%s:%d" % src, frm=uri_of(req.get("from")))

    def idle(self, seconds):
        """Answer requests for ``seconds``."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.poll(left)

    def run(self, duration, refresh=None, call=None, call_every=5.0, hold=1.0, stop=lambda: False):
        """Stay registered for ``duration`` s: register, refresh every ``refresh`` s (default
        0.9 x expires, before the binding runs out, as phones do; the thesis's Sipura: 15 s),
        fail over when a refresh times out (:meth:`register`), a failed registration retried
        after 1 s; between them answer calls, and with ``call`` place one every ``call_every`` s."""
        refresh = refresh if refresh is not None else 0.9 * self.expires
        end = time.monotonic() + duration
        next_reg = next_call = time.monotonic()
        while time.monotonic() < end and not stop():
            now = time.monotonic()
            if now >= next_reg:
                ok = self.register()
                next_reg = time.monotonic() + (refresh if ok else 1.0)
                continue
            if call and now >= next_call and self.current is not None:
                self.call(call, hold)
                next_call = time.monotonic() + call_every
                continue
            wake = min(next_reg, next_call if call else end, end)
            self.poll(min(wake - now, 0.5))
        if self.current is not None:
            self.register(expires=0)  # unregister on the way out


def parse_args(argv):
    p = argparse.ArgumentParser(prog="sipua.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for mode in ("run", "options"):
        s = sub.add_parser(mode)
        s.add_argument("--user", default="probe")
        s.add_argument("--password", default="")
        s.add_argument("--domain", default="lab.uoc")
        s.add_argument("--dns", help="the DNS server to ask (default: /etc/resolv.conf's)")
        s.add_argument("--server", action="append", default=[],
                       help="IP[:PORT] instead of DNS, in order (repeatable)")
        s.add_argument("--bind", default="0.0.0.0")
        s.add_argument("--port", type=int, default=SIP_PORT)
        s.add_argument("--t1", type=float, default=T1, help="RFC 3261's T1, seconds (0.5)")
        s.add_argument("--timer-f", type=float, default=None, help="give up on a transaction after (64 x T1)")
        s.add_argument("--log", help="JSON lines here (default stdout)")
        s.add_argument("--duration", type=float, default=3600.0)
    r = sub.choices["run"]
    r.add_argument("--expires", type=int, default=15, help="registration expiry asked for (the thesis's 15)")
    r.add_argument("--refresh", type=float, default=None, help="seconds between registrations (0.9 x expires)")
    r.add_argument("--call", help="call this user now and then")
    r.add_argument("--call-every", type=float, default=5.0)
    r.add_argument("--hold", type=float, default=1.0)
    sub.choices["options"].add_argument("--count", type=int, default=1)
    sub.choices["options"].add_argument("--interval", type=float, default=1.0)
    return p.parse_args(argv)


def _targets(servers):
    out = []
    for s in servers:
        host, _, port = s.partition(":")
        out.append((host, host, int(port) if port else SIP_PORT))
    return out or None


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    log = JsonLog(a.log)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    ua = UserAgent(a.user, a.password, a.domain, targets=_targets(a.server), nameserver=a.dns,
                   local_ip=a.bind, local_port=a.port, t1=a.t1, timer_f=a.timer_f,
                   expires=getattr(a, "expires", 15), log=log)
    log("start", mode=a.mode, user=a.user, domain=a.domain, pid=os.getpid(), local="%s:%d" % ua.local,
        t1=ua.t1, timer_f=ua.timer_f, expires=ua.expires, dns=a.dns)
    status = 0
    try:
        if a.mode == "run":
            ua.run(a.duration, a.refresh, a.call, a.call_every, a.hold, stop=lambda: bool(stopping))
        else:
            targets = ua.static_targets or ua.resolve()
            for i in range(a.count):
                codes = [ua.options((t[1], t[2])) for t in targets]
                status = 0 if all(200 <= c < 300 for c in codes) else 1
                if i + 1 < a.count and not stopping:
                    ua.idle(a.interval)
    except KeyboardInterrupt:
        pass
    finally:
        log("stopped", registered=ua.current[0] if ua.current else None)
        ua.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
