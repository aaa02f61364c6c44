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


def group_pids(pgid: int, marker: str | None = None) -> list[int]:
    """PIDs whose process group is ``pgid`` (and whose command line holds ``marker``)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            if marker is not None and marker not in (d / "cmdline").read_bytes().decode(errors="replace"):
                continue
            pids.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def kill_group(pgid: int, marker: str, timeout: float = 10.0) -> float | None:
    """SIGKILL a VM's process group if it is still ours and wait until it is gone.

    Returns the time read right before the signal (the moment the power failed), or None if
    the group was not running."""
    if not group_pids(pgid, marker):
        return None
    t = time.time()
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout
    while group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return t


def leftovers(lab: str) -> list[str]:
    """Anything of lab ``lab`` still on the machine (empty after a clean ``down``)."""
    found = []
    if netns.exists(f"{NETNS_PREFIX}{lab}"):
        found.append("namespace")
    if state_file(lab).exists():
        found.append("state record")
    if (Path(os.environ.get("HAUTILS_WORKDIR", "/var/tmp/hautils")) / lab).exists():
        found.append("work directory")
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if f"umid={lab}-".encode() in (d / "cmdline").read_bytes():
                    found.append(f"process {d.name}")
            except OSError:
                pass
    return found


def cleanup(lab: str) -> list[str]:
    """Remove everything a lab's record names; return what was removed."""
    rec = read(lab) or {}
    done: list[str] = []
    for host, vm in (rec.get("vms") or {}).items():
        if vm.get("pgid") and kill_group(int(vm["pgid"]), f"umid={lab}-{host}") is not None:
            done.append(f"VM {host} (process group {vm['pgid']})")
    ns = rec.get("netns") or f"{NETNS_PREFIX}{lab}"
    if netns.exists(ns):
        netns.remove(ns)
        done.append(f"namespace {ns} (with its bridges and taps)")
    work = rec.get("workdir")
    if work and Path(work).is_dir() and not rec.get("keep_workdir"):
        shutil.rmtree(work, ignore_errors=True)
        done.append(f"work directory {work}")
    state_file(lab).unlink(missing_ok=True)
    return done


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
