"""A virtual power switch for every lab VM, which a cluster inside the lab can fence through.

A real cluster fences a node through its BMC (IPMI, Redfish) or a PDU: out of band, so that
the node's power goes off whatever state its kernel is in.  The lab's VMs are processes on
this machine, and only the lab can cut their power (``lab.power_off``: SIGKILL of the VM's
process group).  ``Bmc`` puts that switch behind the Redfish API, the DMTF standard that
today's BMCs speak (``fence_redfish`` in Debian's fence-agents):

::

    bmc = lab.bmc()                       # HTTPS in the lab's namespace, on its management network
    lab["node1"].run(" ".join(bmc.agent_argv("node0", "off")))   # the stock agent, from a guest
    bmc.fence_params("node0")             # params of a pacemaker stonith:fence_redfish resource

The service listens on the lab namespace's own management address (172.31.255.1 by default),
which every VM reaches over its ``mgmt0`` NIC, so no request ever leaves the namespace.  One
system per VM at ``/redfish/v1/Systems/<host>``; ``ComputerSystem.Reset`` with ``ForceOff``
(what ``fence_redfish --action=off`` sends) is ``lab.power_off``, ``On`` is
``lab.power_on(wait=False)`` (the agent polls ``PowerState``, not SSH), ``ForceRestart`` both.
Every request that changes power is kept in :attr:`Bmc.log` with the address that sent it, so a
chapter can show which node fenced which, and when.

HTTPS with a self-signed certificate made at start (``fence_redfish`` speaks only HTTPS; the
agent is told ``ssl_insecure``), HTTP basic authentication with a per-lab password.  Lab use
only: the password is in the stonith resource's parameters in clear, as with every fence agent.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from ..errors import LabError
from . import netns

__all__ = ["Bmc", "PowerEvent", "DEFAULT_PORT", "self_signed"]

DEFAULT_PORT = 8443
SYSTEMS = "/redfish/v1/Systems"
_SYSTEM_RE = re.compile(r"^/redfish/v1/Systems/([A-Za-z0-9_.-]+)(/Actions/ComputerSystem\.Reset)?/?$")
#: Redfish ResetType -> what the switch does (UML has no NMI and no ACPI button: a graceful
#: shutdown request is a power cut here, which is what a fence must do anyway)
RESETS = {"On": "on", "ForceOn": "on", "ForceOff": "off", "GracefulShutdown": "off", "PushPowerButton": "toggle",
          "ForceRestart": "cycle", "GracefulRestart": "cycle", "PowerCycle": "cycle"}


class Power(Protocol):
    """What the switch needs of a lab: :class:`hautils.lab.Lab` has these."""

    def is_on(self, host: str) -> bool: ...
    def power_off(self, host: str) -> float: ...
    def power_on(self, host: str, wait: bool = ...) -> float: ...


@dataclass(frozen=True)
class PowerEvent:
    """One power request the switch carried out: epoch ``time`` it took effect, the ``host``
    switched, the Redfish ``reset`` type, what was done (``off``, ``on``, ``none`` when the
    host already was in that state) and the ``client`` address that asked (the fencing node)."""
    time: float
    host: str
    reset: str
    done: str
    client: str


def self_signed(common_name: str = "hautils-bmc", days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed certificate and its key, PEM: ``(cert, key)``.  Made with ``cryptography``
    (paramiko's own dependency), so no ``openssl`` binary is needed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class Bmc:
    """A Redfish service that switches the power of the hosts ``hosts`` of ``power`` (a lab).

    ``address``/``port``: where it listens; ``namespace``: the network namespace to open the
    socket in (the lab's; ``None``: this process's own, for tests).  :meth:`start` returns once
    it accepts connections; :meth:`stop` (``lab.down`` calls it) closes it."""

    def __init__(self, power: Power, hosts: list[str], *, address: str, port: int = DEFAULT_PORT,
                 namespace: str | None = None, username: str = "fence", password: str | None = None) -> None:
        self.power = power
        self.hosts = list(hosts)
        self.address = str(ipaddress.ip_address(address))
        self.port = int(port)
        self.namespace = namespace
        self.username = username
        self.password = password or secrets.token_urlsafe(12)
        self.log: list[PowerEvent] = []
        # every power-state read of a system (``reset="status"``, ``done`` = the state answered):
        # a fence agent reads first, and a node that is already off is fenced by that read alone
        self.queries: list[PowerEvent] = []
        self._lock = threading.Lock()  # one power change at a time, as a real PDU outlet
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._certdir: tempfile.TemporaryDirectory | None = None

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> "Bmc":
        if self._server is not None:
            return self
        cert, key = self_signed()
        self._certdir = tempfile.TemporaryDirectory(prefix="hautils-bmc-")
        certfile, keyfile = Path(self._certdir.name) / "cert.pem", Path(self._certdir.name) / "key.pem"
        certfile.write_bytes(cert)
        keyfile.write_bytes(key)
        keyfile.chmod(0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        handler = type("Handler", (_Handler,), {"bmc": self})

        def open_server() -> ThreadingHTTPServer:
            # the listening socket belongs to the namespace of the thread that creates it; the
            # connections it accepts too, whichever thread serves them
            return _Server((self.address, self.port), handler)

        try:
            server = netns.run_in(self.namespace, open_server, timeout=30) if self.namespace else open_server()
        except OSError as exc:
            raise LabError(f"virtual BMC: cannot listen on {self.address}:{self.port}"
                           f"{' in namespace ' + self.namespace if self.namespace else ''}: {exc} "
                           "(another BMC of this lab already running? pass another port)") from exc
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"hautils-bmc-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._certdir is not None:
            self._certdir.cleanup()
        self._server = self._thread = self._certdir = None

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- what a cluster is given ---------------------------------------------------------------
    def system_uri(self, host: str) -> str:
        self._need(host)
        return f"{SYSTEMS}/{host}"

    def fence_params(self, host: str) -> dict[str, str]:
        """The parameters of a pacemaker ``stonith:fence_redfish`` resource that fences ``host``."""
        return {"ip": self.address, "ipport": str(self.port), "username": self.username,
                "password": self.password, "ssl_insecure": "1", "systems_uri": self.system_uri(host),
                "pcmk_host_list": host}

    def agent_argv(self, host: str, action: str = "status") -> list[str]:
        """``fence_redfish`` on the command line, as a guest runs it by hand (``status``, ``off``,
        ``on``, ``reboot``)."""
        if action not in ("status", "off", "on", "reboot", "monitor"):
            raise ValueError(f"action must be status, off, on, reboot or monitor, got {action!r}")
        return ["fence_redfish", f"--ip={self.address}", f"--ipport={self.port}", f"--username={self.username}",
                f"--password={self.password}", "--ssl-insecure", f"--systems-uri={self.system_uri(host)}",
                f"--action={action}"]

    # -- the switch ----------------------------------------------------------------------------
    def _need(self, host: str) -> None:
        if host not in self.hosts:
            raise KeyError(f"no host {host!r} behind this BMC (it switches {', '.join(self.hosts)})")

    def state(self, host: str) -> str:
        """``On`` or ``Off``, Redfish's words."""
        self._need(host)
        return "On" if self.power.is_on(host) else "Off"

    def reset(self, host: str, reset: str, client: str = "") -> PowerEvent:
        """Carry out a Redfish ``ResetType`` on ``host``; raises ValueError on an unknown one."""
        self._need(host)
        what = RESETS.get(reset)
        if what is None:
            raise ValueError(f"ResetType {reset!r} not supported here (one of {', '.join(RESETS)})")
        with self._lock:
            on = self.power.is_on(host)
            if what == "toggle":
                what = "off" if on else "on"
            t, done = time.time(), "none"
            if what in ("off", "cycle") and on:
                t, done = self.power.power_off(host), "off"
            if what == "on" and not on or what == "cycle":
                t = self.power.power_on(host, wait=False)
                done = "on" if done == "none" else "off+on"
            event = PowerEvent(t, host, reset, done, client)
            self.log.append(event)
            return event


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    bmc: Bmc
    server_version = "hautils-bmc/1"
    timeout = 30

    def setup(self) -> None:
        super().setup()
        try:  # the TLS handshake in the request's own thread, not the accept loop
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
            raise

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the notebook's output is not a web server log; power changes are in Bmc.log

    def _send(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("OData-Version", "4.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"code": "Base.1.0.GeneralError", "message": message}})

    def _authorized(self) -> bool:
        want = base64.b64encode(f"{self.bmc.username}:{self.bmc.password}".encode()).decode()
        if secrets.compare_digest(self.headers.get("Authorization", ""), f"Basic {want}"):
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="hautils-bmc"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._authorized():
            return
        path = self.path.split("?")[0].rstrip("/") or "/"
        if path == "/redfish/v1":
            return self._send(200, {"@odata.id": "/redfish/v1", "Id": "RootService", "RedfishVersion": "1.6.0",
                                    "Systems": {"@odata.id": SYSTEMS}})
        if path == SYSTEMS:
            return self._send(200, {"@odata.id": SYSTEMS, "Members@odata.count": len(self.bmc.hosts),
                                    "Members": [{"@odata.id": f"{SYSTEMS}/{h}"} for h in self.bmc.hosts]})
        m = _SYSTEM_RE.match(path)
        if m and not m.group(2) and m.group(1) in self.bmc.hosts:
            host = m.group(1)
            target = f"{SYSTEMS}/{host}/Actions/ComputerSystem.Reset"
            state = self.bmc.state(host)
            self.bmc.queries.append(PowerEvent(time.time(), host, "status", state, self.client_address[0]))
            return self._send(200, {"@odata.id": f"{SYSTEMS}/{host}", "Id": host, "Name": host,
                                    "PowerState": state,
                                    "Actions": {"#ComputerSystem.Reset": {
                                        "target": target, "ResetType@Redfish.AllowableValues": list(RESETS)}}})
        self._error(404, f"no resource {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        m = _SYSTEM_RE.match(self.path.split("?")[0])
        if not m or not m.group(2) or m.group(1) not in self.bmc.hosts:
            return self._error(404, f"no action {self.path}")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            reset = json.loads(self.rfile.read(length) or b"{}").get("ResetType")
        except (ValueError, AttributeError):
            return self._error(400, "body must be JSON with ResetType")
        try:
            self.bmc.reset(m.group(1), str(reset), client=self.client_address[0])
        except ValueError as exc:
            return self._error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - the agent must hear that the fence failed
            return self._error(500, f"{type(exc).__name__}: {exc}")
        self._send(204)
