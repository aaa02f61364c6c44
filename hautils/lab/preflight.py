"""Before a chapter touches the user's own machines: what each one lacks, and how to fix it.

On the lab's own VMs everything a chapter needs is in the image.  A learner's VMs are whatever
they are: another release, a cloud kernel without DRBD's module, a package not installed, one
NIC where the chapter needs two.  :func:`check` asks every host once (one SSH command each)
and returns one row per requirement, ``ok`` or not, with the fix for what is missing, so that a
chapter stops before its first step instead of failing in its tenth with an error about a
missing ``drbdadm``.  It changes nothing on the hosts: modules are looked up with
``modprobe -n`` (a dry run), packages with ``dpkg-query``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..errors import LabError

__all__ = ["NEEDS", "Finding", "PreflightError", "check", "check_host", "parse_report", "require", "table"]

# per topology package group (a host's `packages:`): the Debian packages and kernel modules its
# chapters use; "base" applies to every host
NEEDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "base": (("iproute2", "iputils-ping", "python3", "rsync", "nftables", "tcpdump"), ()),
    "storage": (("drbd-utils", "tgt", "open-iscsi", "heartbeat", "mdadm", "corosync", "pacemaker", "crmsh",
                 "resource-agents"), ("drbd", "iscsi_tcp", "raid1", "sch_netem")),
    "routing": (("frr", "keepalived", "conntrack", "conntrackd", "ifenslave", "iperf3", "mtr-tiny"),
                ("bonding", "sch_netem", "sch_tbf")),
    "cluster": (("corosync", "pacemaker", "crmsh", "resource-agents", "fence-agents", "lxc"), ()),
    "sip": (("bind9", "bind9-dnsutils", "kamailio", "sip-tester"), ()),
    "database": (("mariadb-server", "mariadb-client"), ()),
}
# the oldest release whose packages the chapters were written against
RELEASES = {"debian": 12, "ubuntu": 22}


class PreflightError(LabError):
    """Some host lacks what the chapter needs; the message is the table of what to fix, and
    ``findings`` the rows (``table(e.findings)`` shows them in a notebook)."""

    findings: list["Finding"]


@dataclass(frozen=True)
class Finding:
    host: str
    check: str  # "release", "package frr", "module drbd", "interface eth1", "address eth1"
    ok: bool
    found: str
    fix: str = ""


def _script(packages: list[str], modules: list[str]) -> str:
    """One shell command that reports everything, in sections a parser can split."""
    q = " ".join(shlex.quote(p) for p in packages)
    lines = ["echo '## os'; . /etc/os-release 2>/dev/null; echo \"$ID $VERSION_ID\"",
             f"echo '## packages'; dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {q} 2>&1; true"]
    for m in modules:
        lines.append(f"echo '## module {m}'; grep -qw '^{m}' /proc/modules && echo loaded || "
                     f"modprobe -n -v {shlex.quote(m)} 2>&1; echo \"rc=$?\"")
    lines.append("echo '## links'; ip -o -4 addr show 2>/dev/null; ip -o link show 2>/dev/null")
    return "\n".join(lines)


def parse_report(text: str) -> dict[str, str]:
    """The report's sections by name (``os``, ``packages``, ``module drbd``, ``links``)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v).strip() for k, v in out.items()}


def _release(host: str, text: str) -> Finding:
    parts = text.split()
    if len(parts) < 2:
        return Finding(host, "release", False, text or "no /etc/os-release",
                       "a Debian 12 or Ubuntu 22.04 (or newer) system is needed")
    dist, version = parts[0], parts[1].strip('"')
    major = int(re.match(r"\d+", version).group()) if re.match(r"\d+", version) else 0
    need = RELEASES.get(dist)
    ok = need is not None and major >= need
    return Finding(host, "release", ok, f"{dist} {version}",
                   "" if ok else f"the chapters use Debian {RELEASES['debian']}'s packages (or Ubuntu "
                   f"{RELEASES['ubuntu']}.04's): upgrade, or use another machine")


def _packages(host: str, text: str, wanted: list[str]) -> list[Finding]:
    status = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+) (\S+)$", line.strip())
        if m:
            status[m[1]] = m[2]
    out = []
    for p in wanted:
        st = status.get(p)
        ok = st == "installed"
        out.append(Finding(host, f"package {p}", ok, st or "not installed",
                           "" if ok else f"apt-get install {p} (or run the course's playbook on this host)"))
    return out


def _module(host: str, name: str, text: str) -> Finding:
    lines = [line for line in text.splitlines() if line.strip()]
    rc = next((line[3:] for line in lines if line.startswith("rc=")), "0")
    body = "\n".join(line for line in lines if not line.startswith("rc="))
    if body == "loaded":
        return Finding(host, f"module {name}", True, "loaded")
    m = re.search(r"^install (.+)$", body, re.M)
    if m and re.search(r"/bin/(false|true)\b", m[1]):
        return Finding(host, f"module {name}", False, f"blocked by `install {name} {m[1].strip()}`",
                       f"remove that line from /etc/modprobe.d/ (grep -r {name} /etc/modprobe.d)")
    if rc != "0":
        return Finding(host, f"module {name}", False, body.splitlines()[-1] if body else "not found",
                       f"this kernel has no {name} module: install the kernel's extra modules "
                       f"(Debian: linux-image-amd64; Ubuntu: linux-modules-extra-$(uname -r))"
                       + ("; DRBD 8.4 also ships as drbd-dkms" if name == "drbd" else ""))
    return Finding(host, f"module {name}", True, "loadable" + (f" ({body.splitlines()[0]})" if body else ""))


def _links(host: str, text: str, spec) -> list[Finding]:
    ifaces = set(re.findall(r"^\d+: ([^:@\s]+)[:@]", text, re.M))
    addrs: dict[str, set[str]] = {}
    for iface, addr in re.findall(r"^\d+: (\S+)\s+inet (\S+)", text, re.M):
        addrs.setdefault(iface, set()).add(addr)
    out = []
    for link in spec.links:
        has = link.iface in ifaces
        out.append(Finding(host, f"interface {link.iface}", has, "present" if has else "missing",
                           "" if has else f"the chapter plugs {link.iface} into network {link.network}: add a NIC "
                           "(the VM's settings) or rename one"))
        if has and link.address is not None:
            want = link.address.with_prefixlen
            got = addrs.get(link.iface, set())
            ok = want in got
            out.append(Finding(host, f"address {link.iface}", ok, ", ".join(sorted(got)) or "none",
                               "" if ok else f"give {link.iface} {want} (the chapter's configs use it): "
                               f"ip addr add {want} dev {link.iface}, and make it permanent"))
    return out


def check_host(host, spec, run=None) -> list[Finding]:
    """Everything ``spec`` (the topology's host) needs, as found on ``host`` (anything with
    ``run(command)``; ``run`` replaces it for tests)."""
    groups = ["base", spec.packages] if spec.packages != "base" else ["base"]
    packages = [p for g in groups for p in NEEDS[g][0]]
    modules = list(dict.fromkeys(m for g in groups for m in NEEDS[g][1]))
    script = _script(packages, modules)
    text = run(script) if run is not None else host.run(script, check=False, timeout=120).stdout
    sec = parse_report(text)
    name = spec.name
    out = [_release(name, sec.get("os", ""))]
    out += _packages(name, sec.get("packages", ""), packages)
    out += [_module(name, m, sec.get(f"module {m}", "rc=1")) for m in modules]
    out += _links(name, sec.get("links", ""), spec)
    return out


def check(hosts: dict, topology) -> list[Finding]:
    """``hosts``: ``{topology host name: host}``.  All findings, every host (nothing raised)."""
    return [f for name, h in hosts.items() for f in check_host(h, topology.hosts[name])]


def table(findings: list[Finding], only_missing: bool = False):
    """The findings as a DataFrame (host, check, ok, found, fix), for a notebook to show."""
    import pandas as pd

    rows = [f.__dict__ for f in findings if not (only_missing and f.ok)]
    return pd.DataFrame(rows, columns=["host", "check", "ok", "found", "fix"])


def require(findings: list[Finding]) -> None:
    """Raise :class:`PreflightError` listing every missing requirement and its fix."""
    bad = [f for f in findings if not f.ok]
    if bad:
        lines = "\n".join(f"  {f.host}: {f.check}: {f.found} -> {f.fix}" for f in bad)
        err = PreflightError(f"{len(bad)} requirement(s) missing on {len({f.host for f in bad})} host(s):\n{lines}")
        err.findings = list(findings)
        raise err
