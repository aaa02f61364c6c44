"""The user's own machines, from an Ansible inventory, mapped onto a chapter's topology.

The course's second backend runs the same chapters on VMs a learner or a class already has
(Vagrant, Proxmox, OpenStack, a cloud), reached over SSH.  Those machines are described the way
their users already describe them: an inventory in Ansible's YAML format, whose host names are
the topology's host names::

    all:
      vars:
        ansible_user: root
        ansible_ssh_private_key_file: ~/.ssh/lab
      hosts:
        iscsi-server0: {ansible_host: 10.0.0.11, allow_destructive: true,
                        power: {method: virsh, hypervisor: kvm1, domain: srv0}}
        iscsi-server1: {ansible_host: 10.0.0.12}
        iscsi-client:  {ansible_host: 10.0.0.13}

This module only reads and checks: every mistake is an :class:`InventoryError` naming the file,
the host and the key, and the fix.  It connects to nothing (the backend does, with these
settings), and it never guesses: a host the chapter needs and the inventory lacks, an address
that differs from the one the chapter uses, or a fault method it cannot check is refused here,
before anything touches a machine.

What is read: ``ansible_host`` (required), ``ansible_user`` (default root), ``ansible_port``
(22), ``ansible_ssh_private_key_file`` (else the SSH agent), ``ansible_ssh_common_args`` (only
``-o ProxyJump=...``, ``-J ...`` or ``-o ProxyCommand=...``: how to reach a machine behind a
jump host or inside a network namespace; and ``-o UserKnownHostsFile=...``: the known_hosts file
to check its host key against instead of ``~/.ssh/known_hosts``, as a UML lab's own), ``allow_destructive`` (faults are refused without it),
``power`` (how a power failure is done: ``virsh``, ``ipmi``, ``redfish`` or ``sysrq``) and
``hautils_links`` (``{iface: address/prefix}``, checked against the topology's).  Variables are
inherited as Ansible does: ``all``, then each group from parent to child, then the host.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import LabError

__all__ = ["InventoryError", "InventoryHost", "Inventory", "from_lab", "load", "parse", "POWER_METHODS"]

# how a power failure is done on a user's machine, and the keys each method needs
POWER_METHODS: dict[str, tuple[str, ...]] = {
    "virsh": ("hypervisor", "domain"),  # `virsh destroy DOMAIN` run on the hypervisor host over SSH
    "ipmi": ("address", "username", "password"),  # fence_ipmilan against the machine's BMC
    "redfish": ("address", "username", "password"),  # fence_redfish
    "sysrq": (),  # the guest powers itself off (echo o > /proc/sysrq-trigger): the last resort
}
_KNOWN = {"ansible_host", "ansible_user", "ansible_port", "ansible_ssh_private_key_file",
          "ansible_ssh_common_args", "allow_destructive", "power", "hautils_links"}
# Ansible's own variables this backend has no use for: accepted, ignored
_IGNORED = re.compile(r"^(ansible_(become\w*|python_interpreter|connection|ssh_extra_args|ssh_pipelining|"
                      r"host_key_checking|ssh_timeout|timeout)|hautils_\w+_note)$")


class InventoryError(LabError):
    """An inventory that cannot be used as it is; the message names the file, host and key."""


@dataclass(frozen=True)
class InventoryHost:
    """One of the user's machines, as the chapter's host ``name``."""

    name: str
    address: str  # ansible_host: an IP address or a DNS name
    user: str = "root"
    port: int = 22
    key_file: Path | None = None  # None: the SSH agent's keys
    proxy_jump: str | None = None  # user@host:port of a jump host
    proxy_command: str | None = None  # a command whose stdin/stdout is the TCP connection (%h, %p)
    known_hosts: Path | None = None  # -o UserKnownHostsFile=: read instead of ~/.ssh/known_hosts
    allow_destructive: bool = False
    power: dict[str, str] = field(default_factory=dict)  # {"method": ..., and that method's keys}
    links: dict[str, ipaddress.IPv4Interface] = field(default_factory=dict)  # hautils_links
    groups: tuple[str, ...] = ()

    def refuse_fault(self, fault: str) -> None:
        """Raise unless this machine may be broken on purpose (``allow_destructive: true``)."""
        if not self.allow_destructive:
            raise InventoryError(f"{self.name}: refusing {fault}: the inventory does not set "
                                 f"allow_destructive: true for this host (a fault on a real machine is "
                                 f"opt-in; add the key to its host vars if it is a lab machine)")


@dataclass
class Inventory:
    hosts: dict[str, InventoryHost]
    source: str = "<memory>"

    def for_topology(self, topology) -> dict[str, InventoryHost]:
        """The machines a chapter's topology needs, checked against it: every topology host
        present, no two on one address, and each ``hautils_links`` address equal to the
        topology's (the chapters use the topology's addresses: VIPs, routes, configs)."""
        missing = [n for n in topology.hosts if n not in self.hosts]
        if missing:
            raise InventoryError(
                f"{self.source}: the {topology.name} lab needs {', '.join(missing)}, which the inventory does not "
                f"list (it has {', '.join(sorted(self.hosts)) or 'no hosts'}): add each as a host whose name is "
                f"the topology's (labs/{topology.name}.yaml)")
        out = {n: self.hosts[n] for n in topology.hosts}
        seen: dict[tuple[str, int], str] = {}
        for n, h in out.items():
            key = (h.address, h.port)
            if key in seen and not (h.proxy_jump or h.proxy_command):
                raise InventoryError(f"{self.source}: {n} and {seen[key]} have the same ansible_host {h.address} "
                                     f"and port {h.port}: one machine cannot play two hosts of the {topology.name} lab")
            seen.setdefault(key, n)
            links = {link.iface: link for link in topology.hosts[n].links}
            for iface, addr in h.links.items():
                if iface not in links:
                    raise InventoryError(f"{self.source}: {n}: hautils_links names {iface}, which {n} does not have "
                                         f"in labs/{topology.name}.yaml (it has {', '.join(links) or 'no NICs'})")
                want = links[iface].address
                if want is not None and addr != want:
                    raise InventoryError(f"{self.source}: {n}: hautils_links {iface} is {addr}, the chapter uses {want} "
                                         f"(its configs and service addresses are the paper's): give {iface} that "
                                         f"address on the machine, or drop the key")
        return out


def load(path: str | os.PathLike) -> Inventory:
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as e:
        raise InventoryError(f"{p}: cannot read the inventory ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InventoryError(f"{p}: not valid YAML ({e})") from None
    return parse(data, str(p), base=p.parent)


def parse(data: Any, source: str = "<memory>", base: Path | None = None) -> Inventory:
    """An inventory from Ansible's YAML structure (top-level keys are groups, usually ``all``)."""
    if not isinstance(data, dict) or not data:
        raise InventoryError(f"{source}: an inventory is a mapping of groups (usually `all:` with `hosts:`), "
                             f"got {type(data).__name__ if data is not None else 'an empty file'}")
    found: dict[str, tuple[dict[str, Any], list[str]]] = {}  # host -> (merged vars, groups)

    def walk(group: str, body: Any, inherited: dict[str, Any], path: list[str]) -> None:
        where = f"group {'/'.join(path + [group])}"
        if body is None:
            return
        if not isinstance(body, dict):
            raise InventoryError(f"{source}: {where} must be a mapping with hosts:, vars: or children:, "
                                 f"got {type(body).__name__}")
        unknown = set(body) - {"hosts", "vars", "children"}
        if unknown:
            raise InventoryError(f"{source}: {where} has {', '.join(sorted(map(str, unknown)))}: a group holds only "
                                 "hosts:, vars: and children: (host variables go under the host)")
        gvars = body.get("vars") or {}
        if not isinstance(gvars, dict):
            raise InventoryError(f"{source}: {where}: vars must be a mapping, got {type(gvars).__name__}")
        merged = {**inherited, **gvars}
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise InventoryError(f"{source}: {where}: hosts must be a mapping of host names to their variables "
                                 f"(`name:` or `name: {{ansible_host: ...}}`), got {type(hosts).__name__}")
        for name, hvars in hosts.items():
            if hvars is None:
                hvars = {}
            if not isinstance(hvars, dict):
                raise InventoryError(f"{source}: host {name} in {where}: its variables must be a mapping, "
                                     f"got {type(hvars).__name__}")
            old_vars, old_groups = found.get(str(name), ({}, []))
            found[str(name)] = ({**old_vars, **merged, **hvars}, old_groups + [group])
        children = body.get("children") or {}
        if not isinstance(children, dict):
            raise InventoryError(f"{source}: {where}: children must be a mapping of group names, "
                                 f"got {type(children).__name__}")
        for child, cbody in children.items():
            walk(str(child), cbody, merged, path + [group])

    for group, body in data.items():
        walk(str(group), body, {}, [])
    if not found:
        raise InventoryError(f"{source}: no hosts: list the chapter's machines under `all: hosts:`")
    return Inventory({n: _host(n, v, g, source, base) for n, (v, g) in found.items()}, source)


def _host(name: str, v: dict[str, Any], groups: list[str], source: str, base: Path | None) -> InventoryHost:
    def fail(key: str, msg: str) -> InventoryError:
        return InventoryError(f"{source}: host {name}: {key}: {msg}")

    for key, value in v.items():
        if isinstance(value, str) and "{{" in value:
            raise fail(key, "Jinja2 templates are not expanded here; write the value itself")
        if key not in _KNOWN and not _IGNORED.match(str(key)) and str(key).startswith(("ansible_", "hautils_")):
            raise fail(key, f"not a variable this backend reads (it reads {', '.join(sorted(_KNOWN))})")
    address = v.get("ansible_host")
    if not isinstance(address, str) or not address.strip():
        raise fail("ansible_host", "missing or empty: give the address (or DNS name) to reach this machine "
                   "over SSH, e.g. `ansible_host: 10.0.0.11`")
    user = v.get("ansible_user", "root")
    if not isinstance(user, str) or not re.fullmatch(r"[a-z_][a-z0-9_.-]*", user):
        raise fail("ansible_user", f"{user!r} is not a user name")
    port = v.get("ansible_port", 22)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise fail("ansible_port", f"{port!r} is not a TCP port (1-65535)")
    key_file = v.get("ansible_ssh_private_key_file")
    if key_file is not None:
        if not isinstance(key_file, str):
            raise fail("ansible_ssh_private_key_file", f"{key_file!r} is not a path")
        kp = Path(key_file).expanduser()
        if not kp.is_absolute() and base is not None:
            kp = base / kp
        if not kp.is_file():
            raise fail("ansible_ssh_private_key_file", f"{kp} does not exist (or is not a file): give the "
                       "private key's path, or drop the key to use the SSH agent")
        key_file = kp
    jump, command, known_hosts = _proxy(v.get("ansible_ssh_common_args"), fail, base)
    destructive = v.get("allow_destructive", False)
    if not isinstance(destructive, bool):
        raise fail("allow_destructive", f"{destructive!r} is not true or false (unquoted)")
    power = _power(v.get("power"), fail)
    if power and not destructive:
        raise fail("power", "a power method without allow_destructive: true would never be used; set both "
                   "or neither")
    links = _links(v.get("hautils_links"), fail)
    return InventoryHost(name, address.strip(), user, port, key_file, jump, command, known_hosts, destructive,
                         power, links, tuple(groups))


def _proxy(args: Any, fail, base: Path | None = None) -> tuple[str | None, str | None, Path | None]:
    if args is None:
        return None, None, None
    if not isinstance(args, str):
        raise fail("ansible_ssh_common_args", f"{args!r} is not a string of ssh options")
    try:
        words = shlex.split(args)
    except ValueError as e:
        raise fail("ansible_ssh_common_args", f"cannot split {args!r} ({e})") from None
    jump = command = None
    known_hosts: Path | None = None
    i = 0
    while i < len(words):
        w = words[i]
        opt = None
        if w == "-J" and i + 1 < len(words):
            jump, i = words[i + 1], i + 2
            continue
        if w == "-o" and i + 1 < len(words):
            opt, i = words[i + 1], i + 2
        elif w.startswith("-o") and len(w) > 2:
            opt, i = w[2:], i + 1
        else:
            raise fail("ansible_ssh_common_args", f"{w!r}: only -J HOST, -o ProxyJump=HOST and "
                       "-o ProxyCommand=COMMAND are understood here")
        k, _, val = opt.partition("=")
        if k.lower() == "proxyjump" and val:
            jump = val
        elif k.lower() == "proxycommand" and val:
            command = val
        elif k.lower() == "userknownhostsfile" and val:
            kh = Path(val).expanduser()
            known_hosts = base / kh if not kh.is_absolute() and base is not None else kh
        else:
            raise fail("ansible_ssh_common_args", f"-o {opt}: only ProxyJump and ProxyCommand are understood "
                       "here, and UserKnownHostsFile (the backend connects with paramiko, not the ssh command)")
    if jump and command:
        raise fail("ansible_ssh_common_args", "both a ProxyJump and a ProxyCommand: give one")
    if jump and not re.fullmatch(r"(?:[\w.-]+@)?[\w.:-]+(?::\d+)?", jump):
        raise fail("ansible_ssh_common_args", f"ProxyJump {jump!r} is not [user@]host[:port] (one hop)")
    return jump, command, known_hosts


def _power(p: Any, fail) -> dict[str, str]:
    if p is None:
        return {}
    if not isinstance(p, dict) or "method" not in p:
        raise fail("power", f"expected a mapping with method: ({', '.join(POWER_METHODS)}), got {p!r}")
    method = p["method"]
    if method not in POWER_METHODS:
        raise fail("power", f"method {method!r} is unknown: use one of {', '.join(POWER_METHODS)}")
    need = POWER_METHODS[method]
    missing = [k for k in need if not p.get(k)]
    if missing:
        raise fail("power", f"method {method} needs {', '.join(need)}; missing {', '.join(missing)}")
    extra = set(p) - {"method", *need}
    if extra:
        raise fail("power", f"method {method} has no {', '.join(sorted(map(str, extra)))}")
    return {str(k): str(val) for k, val in p.items()}


def _links(links: Any, fail) -> dict[str, ipaddress.IPv4Interface]:
    if links is None:
        return {}
    if not isinstance(links, dict):
        raise fail("hautils_links", f"expected {{iface: address/prefix}}, got {links!r}")
    out = {}
    for iface, addr in links.items():
        try:
            out[str(iface)] = ipaddress.IPv4Interface(str(addr))
        except ValueError:
            raise fail("hautils_links", f"{iface}: {addr!r} is not an IPv4 address with its prefix "
                       "(e.g. 192.168.103.99/24)") from None
        if "/" not in str(addr):
            raise fail("hautils_links", f"{iface}: {addr!r} has no prefix length (e.g. /24)")
    return out


def from_lab(lab, python: str | None = None) -> dict[str, Any]:
    """An inventory (Ansible's YAML structure) for a running UML lab: each VM by its
    management address, reached through :mod:`hautils.lab.nsproxy` (the lab's addresses exist
    only in its namespace), with the lab's key and the lab's known_hosts (the VMs' host keys,
    pinned at their first boot: the backend trusts no key on first use).  For trying the own-machines backend and its
    playbook on the lab's own VMs; ``allow_destructive`` is set (they are lab VMs), and their
    power is pulled by the lab (``power: {method: sysrq}`` would crash them from inside)."""
    import sys

    from . import state

    py = python or sys.executable
    ns = f"{state.NETNS_PREFIX}{lab.name}"
    hosts = {}
    for spec in lab.topology.hosts.values():
        hosts[spec.name] = {
            "ansible_host": str(spec.mgmt.address.ip),
            "ansible_ssh_common_args": f"-o 'ProxyCommand={py} -m hautils.lab.nsproxy {ns} %h %p' "
                                       f"-o {shlex.quote('UserKnownHostsFile=' + str(lab.workdir / 'known_hosts'))}",
            "allow_destructive": True,
            "hautils_links": {link.iface: link.address.with_prefixlen for link in spec.links if link.address},
        }
    return {"all": {"vars": {"ansible_user": "root",
                             "ansible_ssh_private_key_file": str(lab.workdir / "id_ed25519")},
                    "hosts": hosts}}
