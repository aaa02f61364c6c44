"""The ``inventory`` backend: a chapter's hosts are the user's own machines, from an Ansible inventory.

``Lab("storage", backend="inventory", inventory="~/ha/storage.yml")`` maps the inventory's hosts
onto the topology's (same names, checked by :meth:`~hautils.lab.inventory.Inventory.for_topology`),
reaches them over SSH with the user's keys (the inventory's key file, the SSH agent, ``~/.ssh/id_*``)
and refuses a host key it does not already know: these are real machines, so nothing is trusted on
first use (``paramiko.RejectPolicy``; the error names the host and the ``ssh-keyscan`` that fixes it).
``ProxyJump`` and ``ProxyCommand`` from ``ansible_ssh_common_args`` are honoured, and so is
``UserKnownHostsFile`` (``hautils lab inventory`` writes it: a UML lab's VMs' keys are in the lab's
own known_hosts, as its key is in the lab's own key file).

Faults go through :mod:`hautils.lab.remote`: done from inside each machine, each arming its own undo
first, and refused on a host without ``allow_destructive: true``.  Power goes through the host's
``power:`` method (virsh on its hypervisor, an IPMI or Redfish fence agent where the notebook runs,
or sysrq from inside, which cannot start the machine again).

What ``Lab.up`` does on these machines: wait until each answers SSH, run the preflight
(:mod:`hautils.lab.preflight`; a :class:`~hautils.lab.preflight.PreflightError` with the table of
what is missing stops the chapter before its first step), and put the topology's names at the top
of ``/etc/hosts`` in a block marked ``# BEGIN hautils`` / ``# END hautils`` (the rest of the file is
kept; the block is replaced by the next chapter's).
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import paramiko

from ..errors import HostUnreachable, LabError
from ..ssh import Host
from ..topology import Topology
from . import inventory as _inventory, preflight, remote
from .backend import Backend
from .inventory import Inventory, InventoryHost

__all__ = ["InventoryBackend", "OwnHost", "UnknownHostKey", "RejectUnknownHost", "inventory_path",
           "system_known_hosts", "HOSTS_BEGIN", "HOSTS_END"]

HOSTS_BEGIN = "# BEGIN hautils"
HOSTS_END = "# END hautils"
LOCAL_HYPERVISORS = {"localhost", "local", "127.0.0.1"}
#: seconds after which a cable pull or a partition undoes itself if nothing ended it before
DEFAULT_RESTORE_AFTER_S = float(os.environ.get("HAUTILS_RESTORE_AFTER", "300"))


class UnknownHostKey(LabError):
    """A host whose SSH key is in no known_hosts file read: refused, with the command that adds it."""


def system_known_hosts() -> list[Path]:
    """The files OpenSSH reads by default: the user's, then the system's."""
    return [Path("~/.ssh/known_hosts").expanduser(), Path("/etc/ssh/ssh_known_hosts")]


def inventory_path(inventory: str | os.PathLike | None) -> Path:
    """The inventory file: ``inventory`` if given, else ``$HAUTILS_INVENTORY``."""
    p = inventory if inventory is not None else os.environ.get("HAUTILS_INVENTORY")
    if not p:
        raise LabError("the inventory backend needs your machines' Ansible inventory: pass "
                       "Lab(..., inventory='path/to/inventory.yml') or set HAUTILS_INVENTORY=path/to/inventory.yml "
                       "(labs/inventory.example.yml shows the format)")
    return Path(p).expanduser()


class RejectUnknownHost(paramiko.RejectPolicy):
    """Refuse a host key found in no known_hosts file, naming the host and the fix."""

    def __init__(self, inv: InventoryHost, files: list[Path]):
        self.inv, self.files = inv, files

    def missing_host_key(self, client, hostname, key) -> None:
        h = self.inv
        port = f"-p {h.port} " if h.port != 22 else ""
        where = f" (through {h.proxy_jump or h.proxy_command})" if h.proxy_jump or h.proxy_command else ""
        target = self.files[0] if self.files else Path("~/.ssh/known_hosts")
        raise UnknownHostKey(
            f"host {h.name} ({h.address}{where}) offered a {key.get_name()} host key that is in none of "
            f"{', '.join(str(f) for f in self.files) or 'the known_hosts files'}: the course never trusts a key "
            f"on first use. Check it is your machine, then add its key: `ssh-keyscan {port}{h.address} >> {target}` "
            f"(or log in once with `ssh {port}{h.user}@{h.address}` and accept it)")


class OwnHost(Host):
    """A user's machine over SSH: the user's keys and known_hosts, its port, its jump host or
    proxy command.  Everything else (``run``, ``put``, ``journal``...) is :class:`hautils.ssh.Host`'s."""

    def __init__(self, inv: InventoryHost, known_hosts: list[Path] | None = None,
                 client_factory: Callable[[], paramiko.SSHClient] = paramiko.SSHClient):
        self.inv = inv
        files = known_hosts if known_hosts is not None else (
            [inv.known_hosts] if inv.known_hosts else system_known_hosts())
        super().__init__(inv.name, inv.address, inv.key_file or Path(os.devnull), files[0] if files else
                         Path(os.devnull), connector=self._socket, user=inv.user)
        self.key_file = inv.key_file  # type: ignore[assignment]  # None: the agent's and ~/.ssh's keys
        self.known_hosts_files = files
        self.port = inv.port
        self._client_factory = client_factory
        self._jump: paramiko.SSHClient | None = None

    def __repr__(self) -> str:
        return f"<OwnHost {self.name} {self.user}@{self.address}:{self.port}>"

    def _new_client(self) -> paramiko.SSHClient:
        client = self._client_factory()
        for f in self.known_hosts_files:
            if f.exists():
                client.load_system_host_keys(str(f))  # read only: nothing is ever written back
        client.set_missing_host_key_policy(RejectUnknownHost(self.inv, self.known_hosts_files))
        return client

    def _auth(self) -> dict:
        if self.key_file is not None:
            return {"key_filename": str(self.key_file), "allow_agent": True, "look_for_keys": False}
        return {"allow_agent": True, "look_for_keys": True}

    def _socket(self, timeout: float):
        """The TCP connection to the machine's SSH port: direct, through a jump host, or a command's stdio."""
        h = self.inv
        if h.proxy_command:
            cmd = (h.proxy_command.replace("%%", "\0").replace("%h", h.address).replace("%p", str(h.port))
                   .replace("%r", h.user).replace("\0", "%"))
            return paramiko.ProxyCommand(cmd)
        if h.proxy_jump:
            user, _, hostport = h.proxy_jump.rpartition("@")
            jhost, _, jport = hostport.partition(":") if hostport.count(":") == 1 else (hostport, "", "")
            jump = self._new_client()
            try:
                jump.connect(jhost, port=int(jport or 22), username=user or getpass.getuser(), timeout=timeout,
                             banner_timeout=timeout, auth_timeout=timeout, **self._auth())
            except UnknownHostKey:
                jump.close()
                raise
            except paramiko.BadHostKeyException as e:
                jump.close()
                raise LabError(f"jump host {h.proxy_jump} (for {h.name}) presented a {e.key.get_name()} host key "
                               f"other than the one known: `ssh-keygen -R {jhost}` if it was reinstalled") from None
            except (paramiko.SSHException, OSError, EOFError) as e:
                jump.close()
                raise OSError(f"jump host {h.proxy_jump}: {e}") from None
            transport = jump.get_transport()
            assert transport is not None
            try:
                chan = transport.open_channel("direct-tcpip", (h.address, h.port), ("127.0.0.1", 0), timeout=timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                jump.close()
                raise OSError(f"jump host {h.proxy_jump} could not reach {h.address}:{h.port}: {e}") from None
            self._jump = jump
            return chan
        return socket.create_connection((h.address, h.port), timeout=timeout)

    def _refused(self, e: BaseException) -> None:
        """The machine answered and refused (changed host key, keys refused): waiting would not
        help, so a :class:`~hautils.errors.LabError` with the fix, not ``HostUnreachable``."""
        if isinstance(e, paramiko.BadHostKeyException):
            raise LabError(f"host {self.name} ({self.address}) presented a {e.key.get_name()} host key other "
                           f"than the one known in {', '.join(map(str, self.known_hosts_files))}: the machine was "
                           f"reinstalled, or this is not it. If it is yours: `ssh-keygen -R {self.address}` "
                           f"and add the new key with ssh-keyscan") from None
        if isinstance(e, paramiko.AuthenticationException):
            how = f"the key {self.key_file}" if self.key_file else "the SSH agent's keys and ~/.ssh/id_*"
            raise LabError(f"host {self.name}: {self.user}@{self.address} refused {how} ({e}): install the "
                           f"public key in ~{self.user}/.ssh/authorized_keys there, or set "
                           "ansible_ssh_private_key_file in the inventory") from None

    def _drop(self) -> None:
        super()._drop()
        if self._jump is not None:
            self._jump.close()
            self._jump = None

def _show(argv: list[str]) -> str:
    """A power command for an error message, its password left out."""
    return shlex.join("--password=***" if a.startswith("--password=") else a for a in argv)


LocalRun = Callable[[list[str]], subprocess.CompletedProcess]


def _local_run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise LabError(f"`{argv[0]}` is not installed where the notebook runs: the power method needs it "
                       f"(Debian: apt-get install {'libvirt-clients' if argv[0] == 'virsh' else 'fence-agents'})") from None


class InventoryBackend(Backend):
    """The topology's hosts as the user's machines (see the module's docstring).

    ``is_on``: the power method's own status when the host has one (``virsh domstate`` on its
    hypervisor, the fence agent's ``status``); without one (or with ``sysrq``) whether the machine
    answers SSH within 5 s, so a machine that hangs reads as off."""

    kind = "inventory"

    def __init__(self, topo: Topology, inventory: Inventory | str | os.PathLike | None, lab: str,
                 host_factory: Callable[[InventoryHost], Host] | None = None, local_run: LocalRun = _local_run,
                 restore_after_s: float = DEFAULT_RESTORE_AFTER_S):
        self.topo, self.lab = topo, lab
        self.inventory = inventory if isinstance(inventory, Inventory) else _inventory.load(inventory_path(inventory))
        self.machines = self.inventory.for_topology(topo)
        for name, m in self.machines.items():
            if m.user != "root":
                raise LabError(f"{self.inventory.source}: host {name}: ansible_user is {m.user}: the chapters run "
                               "their commands as root over SSH (no sudo): use ansible_user: root (the "
                               "Vagrantfile's provisioner installs the key for root)")
        self._host_factory = host_factory or OwnHost
        self._local_run = local_run
        self.restore_after_s = restore_after_s
        self.hosts: dict[str, Host] = {}
        self._pulled: set[tuple[str, str]] = set()
        self._partitioned: set[str] = set()
        self._helpers: dict[str, Host] = {}  # hypervisors reached for virsh

    # -- lifecycle ---------------------------------------------------------
    def boot(self) -> float:
        """Nothing to start: the machines run already (``Lab.up`` waits for their SSH)."""
        return time.time()

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            self.hosts[name] = self._host_factory(self.machines[name])
        return self.hosts[name]

    def boot_problem(self, name: str) -> str | None:
        return None  # nothing to watch but SSH itself

    def no_answer(self, name: str, timeout: float) -> str:
        m = self.machines[name]
        via = f" via {m.proxy_jump or m.proxy_command}" if m.proxy_jump or m.proxy_command else ""
        return (f"host {name} ({m.user}@{m.address}:{m.port}{via}, from {self.inventory.source}) did not answer "
                f"SSH within {timeout:.0f} s: is it running, and does `ssh -p {m.port} {m.user}@{m.address} true` work?")

    def preflight(self) -> list[preflight.Finding]:
        """Every host's findings; raises :class:`~hautils.lab.preflight.PreflightError` (its message
        the table of what is missing, with fixes) unless all are met."""
        names = list(self.topo.hosts)
        with ThreadPoolExecutor(max(1, len(names))) as ex:
            per_host = list(ex.map(lambda n: preflight.check_host(self.host(n), self.topo.hosts[n]), names))
        findings = [f for fs in per_host for f in fs]
        preflight.require(findings)
        return findings

    def install_hosts_file(self, name: str, hosts_file: str) -> None:
        """The topology's names at the top of /etc/hosts (before Debian's ``127.0.1.1 HOSTNAME``,
        which would otherwise win), in a marked block that replaces the previous chapter's."""
        block = "".join(f"{line}\n" for line in hosts_file.splitlines() if line and "localhost" not in line)
        block = f"{HOSTS_BEGIN} lab {self.lab} (replaced by the next chapter)\n{block}{HOSTS_END}\n"
        self.host(name).run(
            "set -e; t=$(mktemp /etc/.hosts.hautils.XXXXXX); cat > \"$t\"; "
            f"sed '/^{HOSTS_BEGIN}/,/^{HOSTS_END}/d' /etc/hosts >> \"$t\"; "
            "chmod 644 \"$t\"; cat \"$t\" > /etc/hosts; rm -f \"$t\"", stdin=block, timeout=60)

    def teardown(self) -> list[str]:
        """End the faults still in place (the machines' own timers would, later); the machines stay."""
        done = []
        for name, iface in sorted(self._pulled):
            try:
                remote.cable_plug(self.host(name), iface)
                done.append(f"plugged {name}:{iface}")
            except (HostUnreachable, LabError, OSError, TimeoutError) as e:
                done.append(f"could not plug {name}:{iface} ({e}); its replug timer will")
        self._pulled.clear()
        for name in sorted(self._partitioned):
            try:
                remote.heal(self.host(name))
                done.append(f"healed {name}")
            except (HostUnreachable, LabError, OSError, TimeoutError) as e:
                done.append(f"could not heal {name} ({e}); its heal timer will")
        self._partitioned.clear()
        for h in [*self.hosts.values(), *self._helpers.values()]:
            h.close()
        return done

    # -- power -------------------------------------------------------------
    def _power(self, name: str, action: str) -> tuple[str, list[str]]:
        return remote.power_off_command(self.machines[name], action)

    def _on_hypervisor(self, name: str, where: str, argv: list[str]) -> subprocess.CompletedProcess:
        hyp = where.split(":", 1)[1]
        if hyp in LOCAL_HYPERVISORS:
            uri = os.environ.get("LIBVIRT_DEFAULT_URI", "qemu:///system")
            return self._local_run([argv[0], "-c", uri, *argv[1:]])
        if hyp not in self.inventory.hosts:
            raise LabError(f"{self.inventory.source}: host {name}: power: hypervisor {hyp} is not a host of the "
                           f"inventory: add it (ansible_host, ansible_user; best in a group `hypervisors`, which the "
                           f"playbook leaves alone), or write hypervisor: localhost for VMs on this machine")
        if hyp not in self._helpers:
            self._helpers[hyp] = self._host_factory(self.inventory.hosts[hyp])
        r = self._helpers[hyp].run(shlex.join(argv), check=False, timeout=120)
        return subprocess.CompletedProcess(argv, r.exit_status, r.stdout, r.stderr)

    def _do(self, name: str, action: str) -> subprocess.CompletedProcess:
        where, argv = self._power(name, action)
        if where.startswith("hypervisor:"):
            return self._on_hypervisor(name, where, argv)
        return self._local_run(argv)

    def power_off(self, name: str) -> float:
        """The host's power method: ``virsh destroy``, the fence agent's ``off``, or (sysrq) the
        kernel's immediate power-off from inside.  Returns when the method reported it done."""
        where, argv = self._power(name, "off")
        if where == "self":
            return self._crash(name, argv)
        return self._switch(name, "off", argv)

    def _switch(self, name: str, action: str, argv: list[str]) -> float:
        """Run the power method's ``action``; the time it reported done, or a LabError with its output."""
        r = self._do(name, action)
        t = time.time()
        if r.returncode != 0:
            raise LabError(f"host {name}: power {action} with `{_show(argv)}` failed (exit {r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-300:]}")
        return t

    def _crash(self, name: str, argv: list[str]) -> float:
        """sysrq: print the machine's clock, then power it off at once; the reply ends with the machine."""
        client = self.host(name).connect(timeout=30)
        transport = client.get_transport()
        assert transport is not None
        chan = transport.open_session(timeout=10)
        chan.settimeout(15)
        chan.exec_command(f"echo $EPOCHREALTIME; exec {shlex.join(argv)}")
        line = b""
        try:
            while not line.endswith(b"\n"):
                data = chan.recv(64)
                if not data:
                    break
                line += data
        except (socket.timeout, OSError, EOFError):
            pass
        self.host(name).close()
        try:
            return float(line.split()[0].decode().replace(",", "."))
        except (IndexError, ValueError):
            return time.time()

    def power_on(self, name: str) -> float:
        where, argv = self._power(name, "on")  # sysrq: an InventoryError saying to start it by hand
        return self._switch(name, "on", argv)

    def is_on(self, name: str) -> bool:
        m = self.machines[name]
        method = m.power.get("method")
        if method == "virsh":
            where, argv = self._power(name, "off")
            r = self._on_hypervisor(name, where, ["virsh", "domstate", argv[-1]])
            if r.returncode != 0:
                raise LabError(f"host {name}: `virsh domstate {argv[-1]}` failed: {(r.stderr or r.stdout).strip()}")
            return r.stdout.strip() not in ("shut off", "crashed", "")
        if method in ("ipmi", "redfish"):
            _, argv = self._power(name, "off")
            r = self._local_run([a if a != "--action=off" else "--action=status" for a in argv])
            if r.returncode not in (0, 2):
                raise LabError(f"host {name}: {argv[0]} status failed (exit {r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()[-300:]}")
            return r.returncode == 0
        try:
            self.host(name).run("true", timeout=5)
            return True
        except (HostUnreachable, TimeoutError):
            return False

    # -- network faults ----------------------------------------------------
    def _iface(self, name: str, iface: str) -> str:
        ifaces = [link.iface for link in self.topo.hosts[name].links]
        if iface not in ifaces:
            raise LabError(f"host {name!r} has no interface {iface!r} in labs/{self.topo.name}.yaml; it has: "
                           f"{', '.join(ifaces)} (the management NIC is never pulled on your machines: "
                           "it is how the notebook reaches them)")
        return iface

    def cable_pull(self, name: str, iface: str) -> float:
        """``ip link set IFACE down`` on the machine, a replug armed first (``restore_after_s``)."""
        t = remote.cable_pull(self.host(name), self.machines[name], self._iface(name, iface), self.restore_after_s)
        self._pulled.add((name, iface))
        return t

    def cable_plug(self, name: str, iface: str) -> float:
        self.machines[name].refuse_fault(f"a cable plug of {iface}")
        t = remote.cable_plug(self.host(name), self._iface(name, iface))
        self._pulled.discard((name, iface))
        return t

    def _addresses(self, names: list[str]) -> list[str]:
        return [str(link.address.ip) for n in names for link in self.topo.hosts[n].links if link.address]

    def partition(self, groups: list[list[str]]) -> float:
        """On each host: drop the lab addresses of every host in another group (x_tables, a heal
        timer armed first).  The management addresses are never dropped: the notebook keeps its way in."""
        named = [h for g in groups for h in g]
        first = groups[0] + [h for h in self.topo.hosts if h not in named]
        groups = [first, *groups[1:]]
        for g in groups:
            for h in g:
                self.machines[h].refuse_fault("a partition")
        plan = []
        for i, g in enumerate(groups):
            others = [h for j, o in enumerate(groups) if j != i for h in o]
            peers = self._addresses(others)
            for h in g:
                if peers:
                    plan.append((h, peers))
        self.heal()
        t = 0.0
        for h, peers in plan:
            keep = tuple(a for a in self._notebook_address(h) if a not in peers)
            t = max(t, remote.partition(self.host(h), self.machines[h], peers, self.restore_after_s, keep))
            self._partitioned.add(h)
        return t or time.time()

    def _notebook_address(self, name: str) -> list[str]:
        """The address the machine sees the notebook's SSH connection come from (``$SSH_CLIENT``):
        never cut off, even on a machine whose only NIC is a lab network."""
        words = self.host(name).run("echo $SSH_CLIENT", timeout=30).stdout.split()
        return [words[0]] if words and all(c.isdigit() or c == "." for c in words[0]) else []

    def heal(self) -> float:
        t = time.time()
        for h in sorted(self._partitioned):
            t = remote.heal(self.host(h))
        self._partitioned.clear()
        return t

    # -- information -------------------------------------------------------
    def status(self) -> list[dict]:
        rows = []
        for name, m in self.machines.items():
            spec = self.topo.hosts[name]
            nics = " ".join(f"{link.iface}={link.address.with_prefixlen if link.address else '-'}@"
                            f"{'UNPLUGGED' if (name, link.iface) in self._pulled else link.network}"
                            for link in spec.links)
            rows.append({"host": name, "running": self.is_on(name), "pgid": None, "mgmt": m.address,
                         "memory_mb": spec.memory_mb, "nics": nics,
                         "power": m.power.get("method", "-"), "allow_destructive": m.allow_destructive})
        return rows
