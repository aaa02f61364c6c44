"""What a lab left on the machine, recorded so a crashed run can be cleaned up.

Each running lab writes ``/run/hautils/<lab>.json``: its namespace, work
directory and the process group of every VM.  ``hautils lab down --all``
reads these records and removes exactly what they name; before killing a
process group it checks that its processes really are this lab's VMs (their
command line carries the lab's ``umid=``), so a recycled PID is never hit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from . import netns

STATE_DIR = Path(os.environ.get("HAUTILS_STATE", "/run/hautils"))
NETNS_PREFIX = "hal-"


def state_file(lab: str) -> Path:
    return STATE_DIR / f"{lab}.json"


def write(lab: str, record: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = state_file(lab).with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, state_file(lab))


def read(lab: str) -> dict[str, Any] | None:
    try:
        return json.loads(state_file(lab).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def labs() -> list[str]:
    return sorted(p.stem for p in STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []


def _stat(pid: str) -> tuple[str, int, int] | None:
    """(state letter, process group, parent PID) of a PID, from /proc/<pid>/stat; None if gone."""
    try:
        stat = (Path("/proc") / pid / "stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return fields[0], int(fields[2]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def group_pids(pgid: int, marker: str | None = None, zombies: bool = False) -> list[int]:
    """PIDs whose process group is ``pgid`` (and whose command line holds ``marker``).

    ``zombies``: count exited processes not reaped yet too (a zombie has no command line, so
    ``marker`` never matches one) -- those that PID 1 or this process will reap: ``ps`` still
    lists them, with their process group.  A zombie whose parent is another live process (the
    lab's owner, when another process tears its lab down) is left to that parent."""
    pids = []
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        st = _stat(d.name)
        if st is None or st[1] != pgid:
            continue
        if st[0] == "Z" and (not zombies or st[2] not in (1, me)):
            continue
        if marker is not None:
            try:
                if marker not in (d / "cmdline").read_bytes().decode(errors="replace"):
                    continue
            except OSError:
                continue
        pids.append(int(d.name))
    return pids


def reap(pgid: int) -> None:
    """Collect the exit status of our own exited children in process group ``pgid``.

    A VM's main process is a child of the process that booted it: only that process can reap
    it.  The VM's other processes, orphaned when it dies, are reaped by PID 1 (in its own
    time: seconds on some machines)."""
    while True:
        try:
            info = os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return
        if info is None:
            return


def kill_group(pgid: int, marker: str, timeout: float = 30.0, zombies: bool = False) -> float | None:
    """SIGKILL a VM's process group if it is still ours and wait until every process of it
    has exited (``zombies``: and been reaped too).

    A power failure needs only the first: an exited process holds no memory, disk or tap
    any more, so the VM can boot again at once.  Returns the time read right before the
    signal (the moment the power failed), or None if the group was not running.  Raises
    LabError naming the PIDs if the group outlives ``timeout`` seconds."""
    if not group_pids(pgid, marker):
        return None
    t = time.time()
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    wait_gone(pgid, timeout, zombies=zombies)
    return t


def wait_gone(pgid: int, timeout: float = 30.0, zombies: bool = True) -> None:
    """Wait until process group ``pgid`` has no process left (``zombies``: none unreaped
    either), reaping our own children; SIGKILL again every second meanwhile."""
    deadline = time.monotonic() + timeout
    next_kill = time.monotonic() + 1.0
    while True:
        reap(pgid)
        left = group_pids(pgid, zombies=zombies)
        if not left:
            return
        now = time.monotonic()
        if now > deadline:
            from ..errors import LabError

            raise LabError(f"process group {pgid} still has {len(left)} process(es) {timeout:.0f} s after "
                           f"SIGKILL (PIDs {', '.join(map(str, left[:10]))}): a process stuck in the kernel "
                           "(state D) or a parent that does not reap its children; see `ps -o pid,ppid,stat,cmd "
                           f"-g {pgid}`")
        if now > next_kill:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            next_kill = now + 1.0
        time.sleep(0.01)


def leftovers(lab: str, pgids: list[int] | tuple[int, ...] = ()) -> list[str]:
    """Anything of lab ``lab`` still on the machine (empty after a clean ``down``).

    ``pgids``: the VMs' process groups, when known (read them from the record before
    ``down``): then unreaped zombies count too, which have no command line to recognise."""
    found = []
    if netns.exists(f"{NETNS_PREFIX}{lab}"):
        found.append("namespace")
    if state_file(lab).exists():
        found.append("state record")
    if (Path(os.environ.get("HAUTILS_WORKDIR", "/var/tmp/hautils")) / lab).exists():
        found.append("work directory")
    seen: set[int] = set()
    for pgid in pgids:
        for pid in group_pids(pgid, zombies=True):
            seen.add(pid)
            found.append(f"process {pid}")
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) not in seen:
            try:
                if f"umid={lab}-".encode() in (d / "cmdline").read_bytes():
                    found.append(f"process {d.name}")
            except OSError:
                pass
    return found


def recorded_pgids(lab: str) -> list[int]:
    """The process groups of a lab's VMs, as its record names them."""
    rec = read(lab) or {}
    return [int(vm["pgid"]) for vm in (rec.get("vms") or {}).values() if vm.get("pgid")]


def cleanup(lab: str, timeout: float = 30.0) -> list[str]:
    """Remove everything a lab's record names and return what was removed; return only when
    it is gone: every VM process exited and reaped, taps and bridges deleted, namespace and
    work directory removed.

    Every VM is killed at once (SIGKILL of its process group: they are going away, there is
    nothing to shut down gracefully), then waited for, ``timeout`` s at most."""
    rec = read(lab) or {}
    done: list[str] = []
    killed: list[tuple[str, int]] = []
    for host, vm in (rec.get("vms") or {}).items():
        pgid = vm.get("pgid")
        if pgid and group_pids(int(pgid), f"umid={lab}-{host}"):
            try:
                os.killpg(int(pgid), signal.SIGKILL)
                killed.append((host, int(pgid)))
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for host, pgid in killed:
        wait_gone(pgid, max(1.0, deadline - time.monotonic()))
        done.append(f"VM {host} (process group {pgid})")
    ns = rec.get("netns") or f"{NETNS_PREFIX}{lab}"
    if netns.exists(ns):
        links = netns.delete_links(ns)
        netns.remove(ns)
        if netns.exists(ns):
            from ..errors import LabError

            raise LabError(f"namespace {ns} is still listed after removal: see `ip netns list`")
        done.append(f"namespace {ns} ({links} bridges and taps deleted)")
    work = rec.get("workdir")
    if work and Path(work).is_dir() and not rec.get("keep_workdir"):
        shutil.rmtree(work, ignore_errors=True)
        done.append(f"work directory {work}")
    state_file(lab).unlink(missing_ok=True)
    return done


def health(lab: str) -> dict[str, Any]:
    """What of a lab is on the machine, part by part, for ``hautils lab status``.

    ``{"record": bool, "namespace": bool, "workdir": bool, "vms": {host: {"pgid", "running",
    "zombies"}}, "problems": [str]}``: a lab that is fully up has no problems; a lab half torn
    down (a killed ``down``, a crashed owner) lists what is missing or left over."""
    rec = read(lab) or {}
    ns = rec.get("netns") or f"{NETNS_PREFIX}{lab}"
    work = Path(rec.get("workdir") or Path(os.environ.get("HAUTILS_WORKDIR", "/var/tmp/hautils")) / lab)
    out: dict[str, Any] = {"record": bool(rec), "namespace": netns.exists(ns), "workdir": work.is_dir(),
                           "vms": {}, "problems": []}
    for host, vm in (rec.get("vms") or {}).items():
        pgid = vm.get("pgid")
        running = bool(pgid) and bool(group_pids(int(pgid), f"umid={lab}-{host}"))
        zombies = 0
        if pgid:
            zombies = sum(1 for p in group_pids(int(pgid), zombies=True) if (_stat(str(p)) or ("",))[0] == "Z")
        out["vms"][host] = {"pgid": pgid, "running": running, "zombies": zombies}
        if zombies:
            out["problems"].append(f"VM {host}: {zombies} exited process(es) not reaped yet")
    if out["vms"] and not any(v["running"] for v in out["vms"].values()):
        out["problems"].append("no VM is running")
    if not rec:
        out["problems"].append("no record in " + str(state_file(lab)))
    if not out["namespace"]:
        out["problems"].append(f"namespace {ns} is missing")
    if not out["workdir"]:
        out["problems"].append(f"work directory {work} is missing")
    return out


def orphans() -> list[str]:
    """``hal-*`` namespaces that no lab record names (left by a crashed run)."""
    named = {(read(lab) or {}).get("netns") or f"{NETNS_PREFIX}{lab}" for lab in labs()}
    return [ns for ns in netns.listed() if ns.startswith(NETNS_PREFIX) and ns not in named]


def cleanup_all() -> list[str]:
    """Clean every recorded lab, then any hautils namespace left without a record."""
    done: list[str] = []
    for lab in labs():
        done += cleanup(lab)
    for ns in netns.listed():
        if ns.startswith(NETNS_PREFIX):
            netns.remove(ns)
            done.append(f"namespace {ns} (no record)")
    return done
