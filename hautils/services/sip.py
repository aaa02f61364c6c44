"""The SIP lab's two registrars (the thesis's section 5.5.2.2), on kamailio instead of Asterisk.

The thesis's Asterisk servers each kept their own registrations and found the other server's
through DUNDi, then passed the call on over IAX2.  kamailio is a SIP proxy, not a PBX, so the
same result takes its own modules (all in Debian 12's ``kamailio`` package, 5.6: ``dmq.so``,
``dmq_usrloc.so`` and ``db_text.so`` are not in ``kamailio-extra-modules``):

* ``registrar`` + ``usrloc`` keep the location table, in memory (``db_mode 0``);
* ``dmq`` + ``dmq_usrloc`` copy every change of that table to the other registrar (a KDMQ
  request on port 5090, separate from the phones' 5060), and a registrar that starts asks its
  peer for the whole table.  So each registrar knows every phone's contact and routes a call
  to a phone registered with the other one *directly to the phone*: the contact is the phone's
  own address on the lab's LAN.  (Unlike the thesis's calls, which crossed both servers.  A
  consequence the chapter can show: while a dead registrar's replicated contacts have not
  expired, a call to its phones still gets through the survivor.)
* digest authentication with ``auth`` + ``auth_db`` on a ``db_text`` table, a directory of
  plain text files: kamailio 5.6 reads credentials only through a database module (or
  ``pv_auth_check`` with a password the script itself computes), and db_text is the one that
  needs no SQL server.  The table (``subscriber``) is generated from :attr:`Kamailio.users`
  and holds HA1 = MD5(user:realm:password) (RFC 2617), with ``calculate_ha1 0``, so no
  password is written in clear; the thesis's passwords are the extensions.

OPTIONS to a registrar itself (no user part) is answered 200 at once: the probes' keepalive.

``kamailio -c -f FILE`` parses the configuration, loads the modules and checks the script
(kamailio(8): "check configuration file for syntax errors"); :meth:`Kamailio.install` runs it
on the host, as keepalived's files are checked with ``keepalived -t``.

::

    from hautils.services.sip import Kamailio
    k = Kamailio("sip")
    print(k.config("sip-server0"))
    for name in k.servers:
        k.install(lab[name]); k.start(lab[name])
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field

from ..topology import Topology, load
from . import render, tool_check

__all__ = ["Kamailio", "User", "CONF", "DB_DIR", "ha1"]

CONF = "/etc/kamailio/kamailio.cfg"  # the path Debian's kamailio.service reads (CFGFILE)
DB_DIR = "/etc/kamailio/dbtext"
#: auth_db's table version in kamailio 5.6 (utils/kamctl/dbtext/kamailio/version: subscriber:7)
SUBSCRIBER_VERSION = 7
#: kamailio's own db_text schema for the table, except that ``password`` may be null: db_text
#: refuses to load a table with an empty non-null field ("null value not allowed - field 3"),
#: and the clear-text password is exactly what this table leaves out
SUBSCRIBER_HEADER = "id(int,auto) username(string) domain(string) password(string,null) ha1(string) ha1b(string)"
VERSION_HEADER = "id(int,auto) table_name(string) table_version(int)"
#: where kamailio -c names an error: "... config file /etc/kamailio/kamailio.cfg, line 12, column 3-9: ..."
LOCATION_RE = re.compile(r"(?:file |cfg file )?(?P<file>/[^\s,:]+)[,:]? ?line (?P<line>\d+)")


def ha1(user: str, realm: str, password: str) -> str:
    """RFC 2617's HA1 for MD5: ``MD5(user:realm:password)`` in lower-case hex."""
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()


@dataclass(frozen=True)
class User:
    """One subscriber: extension and password (the thesis's passwords are the extensions)."""

    name: str
    password: str


def _default_users() -> list[User]:
    return [User("100", "100"), User("101", "101")]  # the thesis's users.conf


@dataclass
class Kamailio:
    """kamailio on the topology's two ``role: sip-registrar`` hosts, sharing their locations.

    ``min_expires``: kamailio's registrar raises a shorter Expires to this floor (its default,
    60 s, would override the thesis's 15 s refresh).  ``qop``: challenge with ``qop="auth"``
    (RFC 2617; False: the older RFC 2069 digest, no qop).  ``fr_timer_ms``/``fr_inv_timer_ms``:
    tm's give-up times for a silent phone and for an unanswered ringing call."""

    topology: Topology | str = "sip"
    domain: str = "lab.uoc"
    network: str = "lan"
    servers: tuple[str, str] | None = None
    users: list[User] = field(default_factory=_default_users)
    sip_port: int = 5060
    dmq_port: int = 5090
    min_expires: int = 5
    default_expires: int = 60
    max_expires: int = 3600
    qop: bool = True
    fr_timer_ms: int = 5000
    fr_inv_timer_ms: int = 30000
    dmq_ping_interval: int = 10
    children: int = 2
    debug: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.topology, str):
            self.topology = load(self.topology, check_memory=False)
        src = self.topology.source
        if self.servers is None:
            self.servers = tuple(h.name for h in self.topology.hosts.values() if h.role == "sip-registrar")
        if len(self.servers) != 2 or len(set(self.servers)) != 2:
            raise ValueError(f"{src}: two registrars share the location table, got {list(self.servers)} "
                             "(give two hosts role: sip-registrar, or pass servers=(a, b))")
        for s in self.servers:
            if s not in self.topology.hosts:
                raise ValueError(f"{src}: no host named {s!r}; hosts: {', '.join(self.topology.hosts)}")
            self.address(s)
        if not self.users:
            raise ValueError("users=[]: a registrar with no subscriber accepts no registration")
        seen = set()
        for u in self.users:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", u.name) or u.name in seen:
                raise ValueError(f"users: {u.name!r} is repeated or not a SIP user part (letters, digits, '.', '_', '-')")
            if not u.password or ":" in u.password or "\n" in u.password:
                raise ValueError(f"users: user {u.name}'s password is empty or has ':' or a newline "
                                 "(db_text separates fields with ':')")
            seen.add(u.name)
        for name in ("sip_port", "dmq_port"):
            v = getattr(self, name)
            if not 1 <= v <= 65535:
                raise ValueError(f"{name}={v!r}: a UDP port, 1 to 65535")
        if self.sip_port == self.dmq_port:
            raise ValueError(f"dmq_port={self.dmq_port} is sip_port: DMQ needs its own port (5090 is usual)")
        if not 1 <= self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError(f"min_expires={self.min_expires}, default_expires={self.default_expires}, "
                             f"max_expires={self.max_expires}: need 1 <= min <= default <= max (seconds)")

    # -- the topology's view ---------------------------------------------------------------------

    def address(self, host) -> str:
        """``host``'s address on the lab network: where it listens for SIP and DMQ."""
        name = host if isinstance(host, str) else host.name
        for link in self.topology.hosts[name].links:
            if link.network == self.network and link.address is not None:
                return str(link.address.ip)
        raise ValueError(f"{self.topology.source}: host '{name}' field 'links': no address on network "
                         f"'{self.network}', where the registrar listens")

    def peer(self, server) -> str:
        """The other registrar's name."""
        name = server if isinstance(server, str) else server.name
        if name not in self.servers:
            raise ValueError(f"{self.topology.source}: host {name!r} is not one of the registrars "
                             f"{', '.join(self.servers)}")
        return self.servers[1 - self.servers.index(name)]

    # -- the files -------------------------------------------------------------------------------

    def config(self, server) -> str:
        """``/etc/kamailio/kamailio.cfg`` of ``server``."""
        name = server if isinstance(server, str) else server.name
        peer = self.peer(name)
        return render("kamailio.cfg.j2", path=CONF, hostname=name, lab=self.topology.name, domain=self.domain,
                      address=self.address(name), peer=self.address(peer), peer_name=peer, db_dir=DB_DIR,
                      sip_port=self.sip_port, dmq_port=self.dmq_port, min_expires=self.min_expires,
                      default_expires=self.default_expires, max_expires=self.max_expires,
                      qop_flag="1" if self.qop else "0", fr_timer_ms=self.fr_timer_ms,
                      fr_inv_timer_ms=self.fr_inv_timer_ms, dmq_ping_interval=self.dmq_ping_interval,
                      children=self.children, debug=self.debug)

    def subscriber_table(self) -> str:
        """db_text's ``subscriber`` file: one line per user, ``id:username:domain:password:ha1:ha1b``,
        the password column left empty (auth_db reads ``ha1``); ha1b is RFC 2617's HA1 for a
        user name given as ``user@domain``, which some phones send."""
        lines = [SUBSCRIBER_HEADER]
        for i, u in enumerate(self.users, 1):
            lines.append(f"{i}:{u.name}:{self.domain}::{ha1(u.name, self.domain, u.password)}:"
                         f"{ha1(f'{u.name}@{self.domain}', self.domain, u.password)}")
        return "\n".join(lines) + "\n"

    def version_table(self) -> str:
        """db_text's ``version`` file: auth_db refuses a subscriber table of another version."""
        return f"{VERSION_HEADER}\n0:subscriber:{SUBSCRIBER_VERSION}\n"

    def files(self, server) -> dict[str, str]:
        """Every file :meth:`install` writes on ``server``, by path."""
        return {CONF: self.config(server), f"{DB_DIR}/subscriber": self.subscriber_table(),
                f"{DB_DIR}/version": self.version_table()}

    # -- life cycle (in the lab) -----------------------------------------------------------------

    def check(self, host, path: str = CONF) -> str:
        """kamailio's own check on ``host``: ``kamailio -c -f PATH`` parses the file, loads every
        module with its parameters and fixes up the script (an unknown function, a wrong
        parameter count).  Raises ``CommandError`` naming the file and line it reports."""
        return tool_check(host, f"kamailio -c -f {shlex.quote(path)}", path, "kamailio -c", "sip",
                          where=LOCATION_RE, timeout=120)

    def install(self, host) -> str:
        """Write the configuration and the credential tables on ``host`` (readable by the
        ``kamailio`` group only: they hold HA1s) and check them (:meth:`check`); returns
        kamailio's output.  The running kamailio keeps its old configuration until :meth:`start`."""
        files = self.files(host.name)  # refuses a stranger first
        host.run(f"mkdir -p {DB_DIR}", timeout=30)
        for path, text in files.items():
            host.put(path, text, mode=0o640)
        host.run(f"chgrp kamailio {CONF} {DB_DIR}/subscriber {DB_DIR}/version", timeout=30)
        return self.check(host)

    def start(self, host, timeout: float = 120) -> float:
        """Enable kamailio and (re)start it; returns the epoch time of the start (guest clock)."""
        out = host.run("systemctl enable kamailio >/dev/null 2>&1; echo $EPOCHREALTIME; systemctl restart kamailio",
                       timeout=timeout).stdout
        return float(out.split()[0].replace(",", "."))

    def stop(self, host, timeout: float = 120) -> float:
        """Stop kamailio on ``host`` (the thesis's shut-down); returns the epoch time it began."""
        out = host.run("echo $EPOCHREALTIME; systemctl stop kamailio", timeout=timeout).stdout
        return float(out.split()[0].replace(",", "."))
