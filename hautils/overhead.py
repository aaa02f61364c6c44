"""What the lab itself costs: how long starting a process takes in a lab VM, and how many
processes a host started.

In User-Mode Linux every guest process is a host process the guest kernel traces with ptrace,
so creating one (fork, exec, exit) costs far more than on a VM with hardware virtualisation.
HA software written as chains of shell scripts (heartbeat's resource scripts, OCF agents)
starts hundreds of processes during a failover, and that is where much of a failover's time
goes here.  The chapters measure it rather than guess::

    overhead.process_cost(lab["iscsi-server1"])   # {"where": "iscsi-server1", "n": 200, "ms_per_process": ...}
    overhead.process_cost()                       # the same loop on this machine, for comparison
    before = overhead.processes_started(host); ...; overhead.processes_started(host) - before
"""

from __future__ import annotations

import subprocess

__all__ = ["process_cost", "processes_started", "command_seconds"]

_LOOP = 'for i in $(seq {n}); do /bin/true; done'


def process_cost(host=None, n: int = 200) -> dict:
    """Start ``/bin/true`` ``n`` times from a bash loop (fork + exec + exit + wait each) and
    return the milliseconds per process, on ``host`` (a lab Host) or, with None, on this machine.

    The loop is timed inside the shell that runs it (``$EPOCHREALTIME``), so SSH and the start
    of that shell are not counted."""
    if n < 10:
        raise ValueError(f"n must be at least 10 (got {n}): a few processes say little")
    script = f"s=$EPOCHREALTIME; {_LOOP.format(n=int(n))}; e=$EPOCHREALTIME; echo $s $e"
    if host is None:
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
        where = "this machine (no VM)"
    else:
        out = host.run(f"bash -c {_quote(script)}", timeout=max(60.0, n * 0.5)).stdout
        where = host.name
    s, e = (float(x.replace(",", ".")) for x in out.split()[:2])
    return {"where": where, "n": int(n), "seconds": e - s, "ms_per_process": 1000 * (e - s) / n}


def command_seconds(host, command: str, repeat: int = 3) -> float:
    """Median wall time (s) of ``command`` run ``repeat`` times by bash on ``host``, timed inside
    the shell (SSH is not counted): e.g. how long ``python3 -c 'import http.server'`` takes."""
    import shlex
    import statistics

    script = (f"for i in $(seq {int(repeat)}); do s=$EPOCHREALTIME; {command} >/dev/null 2>&1; "
              "e=$EPOCHREALTIME; echo $s $e; done")
    out = host.run(f"bash -c {shlex.quote(script)}", timeout=60 + 30 * repeat).stdout
    spans = [float(b.replace(",", ".")) - float(a.replace(",", ".")) for a, b in
             (line.split()[:2] for line in out.splitlines() if line.strip())]
    return statistics.median(spans)


def processes_started(host=None) -> int:
    """Processes (and threads) created since boot: the ``processes`` line of /proc/stat.  The
    difference of two readings counts what ran in between (each SSH command adds a few)."""
    text = open("/proc/stat").read() if host is None else host.run("cat /proc/stat", timeout=30).stdout
    for line in text.splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    raise ValueError("no 'processes' line in /proc/stat")


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)

