"""Reaching lab hosts over SSH: ``host.run()``, ``host.put()``, ``host.service()``, ``host.journal()``.

A notebook cell should read like the paper's shell session::

    lab["iscsi-server0"].run("cat /proc/drbd").stdout

Connections are opened once and reused (a first connect costs seconds inside
UML).  Host keys are pinned on first use, in the lab's own known_hosts file,
and checked on every later connection: a VM that comes back with another key
is an error, not a silent re-trust.
"""

from __future__ import annotations

import io
import json
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import paramiko

from .errors import CommandError, HostUnreachable

Connector = Callable[[float], socket.socket]


@dataclass
class Result:
    """What a command did: exit status, output and how long it took (seconds)."""

    host: str
    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def __str__(self) -> str:  # a notebook shows the output, as a shell would
        return self.stdout + (self.stderr if self.exit_status else "")


@dataclass(frozen=True)
class JournalLine:
    time: float  # epoch seconds (the guest reads the host's clock)
    unit: str
    identifier: str
    message: str

    def __str__(self) -> str:
        return f"{time.strftime('%H:%M:%S', time.localtime(self.time))}.{int(self.time % 1 * 1000):03d} {self.identifier}: {self.message}"


def on_each(fn: Callable[[Any], Any], items: Iterable[Any]) -> None:
    """``fn`` on every item (host) at once: each step is an SSH round trip or seconds of shell in a
    slow guest, and hosts need not wait for each other.  The first error is raised once all have
    finished."""
    items = list(items)
    if len(items) <= 1:
        for x in items:
            fn(x)
        return
    with ThreadPoolExecutor(len(items)) as pool:
        futures = [pool.submit(fn, x) for x in items]
    for f in futures:
        f.result()


def parse_journal_json(text: str) -> list[JournalLine]:
    """Lines of ``journalctl -o json`` as :class:`JournalLine`.

    A kernel message is timed when the kernel logged it, not when journald read it: journald
    stamps ``__REALTIME_TIMESTAMP`` on reading ``/dev/kmsg``, which in a busy UML guest came
    ~10 ms after the message (a bond's "new active slave" line then looked later than the
    first ping it let through).  The kernel's own time is ``_SOURCE_MONOTONIC_TIMESTAMP``
    (monotonic clock), so the line gets journald's wall time minus the monotonic delay."""
    lines: list[JournalLine] = []
    for raw in text.splitlines():
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or "__REALTIME_TIMESTAMP" not in rec:
            continue
        msg = rec.get("MESSAGE", "")
        if isinstance(msg, list):  # binary messages come as byte arrays
            msg = bytes(msg).decode(errors="replace")
        t = int(rec["__REALTIME_TIMESTAMP"]) / 1e6
        try:
            delay = (int(rec["__MONOTONIC_TIMESTAMP"]) - int(rec["_SOURCE_MONOTONIC_TIMESTAMP"])) / 1e6
        except (KeyError, TypeError, ValueError):
            delay = 0.0
        if 0 < delay < 60:  # same boot's monotonic clock; anything else is not a delay
            t -= delay
        lines.append(JournalLine(t, rec.get("_SYSTEMD_UNIT", ""), rec.get("SYSLOG_IDENTIFIER", ""), msg))
    return lines


class Follower:
    """A command's output as it comes (``journalctl -f``), read on its own SSH channel until
    :meth:`stop` or until the host dies.  What a host said in its last seconds before it was
    switched off is then kept here, on the machine that watched, not lost with the guest's
    page cache."""

    def __init__(self, host: "Host", command: str):
        self.host, self.command = host, command
        self._buf = io.BytesIO()
        self._lock = threading.Lock()
        transport = host.connect().get_transport()
        assert transport is not None
        try:
            self._chan = transport.open_session(timeout=10)
            self._chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise HostUnreachable(host.name, f"while starting `{command}`: {e}") from None
        self._chan.settimeout(0.5)
        self._thread = threading.Thread(target=self._read, name=f"follow-{host.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self._chan.recv(65536)
            except socket.timeout:
                if self._chan.closed:
                    return
                continue
            except (paramiko.SSHException, OSError, EOFError):
                return
            if not data:  # EOF: stopped, or the connection died with the host
                return
            with self._lock:
                self._buf.write(data)

    @property
    def text(self) -> str:
        with self._lock:
            return self._buf.getvalue().decode(errors="replace")

    def stop(self, timeout: float = 5.0) -> str:
        """End the command (closing its channel ends it on the host) and return all it printed."""
        try:
            self._chan.close()
        except Exception:  # noqa: BLE001 - a dead host's channel is closed already
            pass
        self._thread.join(timeout)
        return self.text


class PinOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Trust a host key the first time (inside the private lab network), then insist on it."""

    def __init__(self, known_hosts: Path, lock: threading.Lock):
        self.path, self.lock = known_hosts, lock

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        with self.lock:
            client.get_host_keys().add(hostname, key.get_name(), key)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class Service:
    """A systemd unit on a lab host: ``host.service("heartbeat").stop()``."""

    def __init__(self, host: "Host", name: str):
        self.host, self.name = host, name

    def _ctl(self, verb: str, timeout: float = 120) -> float:
        self.host.run(f"systemctl {verb} {shlex.quote(self.name)}", timeout=timeout)
        return time.time()

    def start(self) -> float:
        """Start the unit; returns the time it reported started."""
        return self._ctl("start")

    def stop(self) -> float:
        """A graceful stop (the service's own shutdown runs); returns when it finished."""
        return self._ctl("stop")

    def restart(self) -> float:
        return self._ctl("restart")

    def enable(self) -> None:
        self._ctl("enable")

    def status(self) -> str:
        """``active``, ``inactive``, ``failed``, ``activating`` ... as systemd says."""
        return self.host.run(f"systemctl is-active {shlex.quote(self.name)}", check=False).stdout.strip()

    def is_active(self) -> bool:
        return self.status() == "active"


class Host:
    """A lab machine reached over SSH through a socket the lab provides."""

    def __init__(self, name: str, address: str, key_file: Path, known_hosts: Path,
                 connector: Connector, user: str = "root", lock: threading.Lock | None = None):
        self.name, self.address, self.user = name, address, user
        self.key_file, self.known_hosts = Path(key_file), Path(known_hosts)
        self._connector = connector
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self._sftp_lock = threading.Lock()
        self._kh_lock = lock or threading.Lock()

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address}>"

    # -- connection -------------------------------------------------------
    port = 22

    def connect(self, timeout: float = 10.0) -> paramiko.SSHClient:
        """Open (or reuse) the SSH connection; ``HostUnreachable`` if the host does not answer in time."""
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return self._client
                self._drop()
            deadline = time.monotonic() + timeout
            try:
                sock = self._connector(timeout)
            except (OSError, TimeoutError, paramiko.SSHException) as e:
                self._drop()
                raise HostUnreachable(self.name, f"no TCP connection to {self.address}:{self.port} ({e})") from None
            client = self._new_client()
            left = max(1.0, deadline - time.monotonic())
            try:
                client.connect(self.address, port=self.port, username=self.user, sock=sock, timeout=left,
                               banner_timeout=left, auth_timeout=left, **self._auth())
            except Exception as e:
                sock.close()
                self._drop()
                self._refused(e)  # a clearer error for what waiting would not mend, if there is one
                if isinstance(e, paramiko.BadHostKeyException) or not isinstance(
                        e, (paramiko.SSHException, OSError, EOFError)):
                    raise
                raise HostUnreachable(self.name, f"SSH handshake with {self.address}:{self.port} failed ({e})") from None
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(5)
            self._client = client
            return client

    def _new_client(self) -> paramiko.SSHClient:
        """A client that knows the lab's host keys and pins a new VM's on first use."""
        client = paramiko.SSHClient()
        if self.known_hosts.exists():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(PinOnFirstUse(self.known_hosts, self._kh_lock))
        return client

    def _auth(self) -> dict:
        """``client.connect``'s key arguments: the lab's own key only."""
        return {"key_filename": str(self.key_file), "allow_agent": False, "look_for_keys": False}

    def _refused(self, e: BaseException) -> None:
        """Raise a clearer error than ``e`` when the host answered and refused; the lab's VMs use
        the lab's key and known_hosts, so there is none here (a changed key is raised as is)."""

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._sftp = None

    def close(self) -> None:
        """Drop the connection (after a power-off the old one is dead)."""
        with self._lock:
            self._drop()

    # -- commands ----------------------------------------------------------
    def run(self, command: str, check: bool = True, timeout: float | None = 60.0,
            stdin: str | bytes | None = None) -> Result:
        """Run a shell command; raise ``CommandError`` on a non-zero exit when ``check``.

        ``timeout`` bounds the whole command: a host that dies meanwhile raises
        ``HostUnreachable`` instead of hanging the notebook.
        """
        started = time.monotonic()
        client = self.connect(timeout=min(timeout or 30.0, 30.0))
        transport = client.get_transport()
        assert transport is not None
        try:
            chan = transport.open_session(timeout=10)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
            chan.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise HostUnreachable(self.name, f"while starting `{command}`: {e}") from None
        out, err = io.BytesIO(), io.BytesIO()
        deadline = None if timeout is None else started + timeout
        chan.settimeout(0.5)
        while True:
            progressed = False
            if chan.recv_ready():
                out.write(chan.recv(65536)); progressed = True
            if chan.recv_stderr_ready():
                err.write(chan.recv_stderr(65536)); progressed = True
            # Done when the remote side closed its output (EOF) and the exit status came, and
            # everything buffered was read: the exit status can arrive before the last stderr.
            if (chan.eof_received or chan.closed) and chan.exit_status_ready() \
                    and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if not transport.is_active():
                self.close()
                raise HostUnreachable(self.name, f"connection lost while running `{command}`")
            if deadline is not None and time.monotonic() > deadline:
                chan.close()
                # The host may be alive but the command stuck, or the host gone: tell them apart.
                if not self._alive():
                    self.close()
                    raise HostUnreachable(self.name, f"no answer within {timeout} s while running `{command}`")
                raise TimeoutError(f"on {self.name}: `{command}` did not finish within {timeout} s")
            if not progressed:
                chan.status_event.wait(0.02)
        status = chan.recv_exit_status()
        chan.close()
        res = Result(self.name, command, status, out.getvalue().decode(errors="replace"),
                     err.getvalue().decode(errors="replace"), time.monotonic() - started)
        if check and status != 0:
            raise CommandError(self.name, command, status, res.stdout, res.stderr)
        return res

    def _alive(self) -> bool:
        try:
            c = self._client
            t = c.get_transport() if c else None
            if t is None or not t.is_active():
                return False
            t.send_ignore()
            ch = t.open_session(timeout=3)
            ch.close()
            return True
        except Exception:
            return False

    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session (one ``sftp-server`` process, reused: forks are dear in UML)."""
        client = self.connect()
        if self._sftp is None or self._sftp.sock.closed:
            self._sftp = client.open_sftp()
        return self._sftp

    def _sftp_call(self, path: str, fn):
        try:
            with self._sftp_lock:
                return fn(self.sftp())
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.name}:{path}: no such file or directory") from None
        except PermissionError:
            raise PermissionError(f"{self.name}:{path}: permission denied") from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            if isinstance(e, OSError) and e.errno is not None:
                raise OSError(e.errno, f"{self.name}:{path}: {e.strerror}") from None
            self.close()
            raise HostUnreachable(self.name, f"while accessing {path}: {e}") from None

    def put(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        """Write a file on the host atomically (missing parent directories are created)."""
        payload = data.encode() if isinstance(data, str) else data
        tmp = f"{path}.hautils-tmp"

        def write(sftp: paramiko.SFTPClient) -> None:
            parent = path.rsplit("/", 1)[0] or "/"
            try:
                sftp.stat(parent)
            except FileNotFoundError:
                self.run(f"mkdir -p {shlex.quote(parent)}")
            with sftp.open(tmp, "wb") as f:
                f.write(payload)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, path)

        self._sftp_call(path, write)

    def get(self, path: str) -> bytes:
        """Read a file from the host."""

        def read(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(path, "rb") as f:
                f.prefetch()
                return f.read()

        return self._sftp_call(path, read)

    def service(self, name: str) -> Service:
        return Service(self, name)

    def journal(self, unit: str | None = None, since: float | None = None,
                identifier: str | None = None) -> list[JournalLine]:
        """Journal lines with their timestamps, for phase analysis (``since`` is epoch seconds)."""
        cmd = ("journalctl -o json --no-pager -q "
               "--output-fields=MESSAGE,_SYSTEMD_UNIT,SYSLOG_IDENTIFIER,_SOURCE_MONOTONIC_TIMESTAMP")
        if unit:
            cmd += f" -u {shlex.quote(unit)}"
        if identifier:
            cmd += f" -t {shlex.quote(identifier)}"
        if since is not None:
            cmd += f" --since=@{since:.6f}"
        return parse_journal_json(self.run(cmd, timeout=60).stdout)

    def follow(self, command: str) -> Follower:
        """Start ``command`` and keep reading its output in the background (:class:`Follower`)."""
        return Follower(self, command)

    def follow_journal(self) -> Follower:
        """The journal from now on, as JSON (``journalctl -f``; :func:`parse_journal_json` reads
        ``.stop()``'s text): what a host logs up to the moment it is powered off."""
        return self.follow("journalctl -f -n 0 -o json --no-pager -q "
                           "--output-fields=MESSAGE,_SYSTEMD_UNIT,SYSLOG_IDENTIFIER,_SOURCE_MONOTONIC_TIMESTAMP")

    def wait_for(self, command: str, timeout: float = 60.0, interval: float = 0.5) -> Result:
        """Run ``command`` until it succeeds (e.g. waiting for a DRBD sync); raise on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.run(command, check=False, timeout=max(5.0, timeout))
            if res.ok:
                return res
            if time.monotonic() > deadline:
                raise TimeoutError(f"on {self.name}: `{command}` still failing after {timeout} s: {res.stderr.strip()[-200:]}")
            time.sleep(interval)
