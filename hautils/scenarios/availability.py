"""Chapter 1's faults: the web service crashes (systemd restarts it), the server loses power.

::

    crash = availability.service_crash(lab, web).run(trials)
    power = availability.power_cycle(lab, web).run(trials)

The client fetches the page ten times a second over HTTP (0.5 s timeout); the downtime runs
from the last answer before the fault to the first answer that stays (``settle`` 0.5 s).
"""

from __future__ import annotations

import time

from .. import probes
from ..experiment import Experiment, Trial

#: Where a power cycle's seconds go: phase name -> the log line that ends it.
POWER_MARKS = {
    "power off": r"hautils: power restored",
    "kernel boot": r"running in system mode",
    "systemd starts web.service": r"Started web\.service",
}


def _http(lab, web, label: str, hz: float):
    client = lab["client"]
    return lambda t: probes.http(client, web.url(), hz=hz, name=f"{label}-{t.index}", timeout=0.5)


def service_crash(lab, web, *, before_s: float = 2, after_s: float = 4, hz: float = 10) -> Experiment:
    """SIGKILL of the web server's process; systemd's ``Restart=always`` brings it back."""
    return Experiment("service crash", probe=_http(lab, web, "crash", hz), fault=lambda t: web.crash(),
                      recovered=None, before_s=before_s, after_s=after_s, stall_s=None, settle=0.5, pick="first")


def power_cycle(lab, web, *, off_s: float = 2, before_s: float = 2, after_s: float = 4,
                hz: float = 10) -> Experiment:
    """The server's power is cut, restored ``off_s`` later; the server boots and systemd starts
    the web service.  Phases from the lab's power-on event and the server's journal."""
    server = lab["server"]

    def fault(t: Trial) -> float:
        t_off = lab.power_off("server")
        time.sleep(off_s)
        t.event(lab.power_on("server"), "hautils: power restored")
        return t_off

    return Experiment("power cycle", probe=_http(lab, web, "power", hz), fault=fault,
                      marks=POWER_MARKS, journals=lambda t: [server], final_phase="first answer",
                      before_s=before_s, after_s=after_s, stall_s=None, settle=0.5, pick="first",
                      timeout_s=180)


def soak(lab, web, *, seconds: float, mtbf_s: float, seed: int, off_s: float = 2, hz: float = 10) -> dict:
    """Random power failures of the server for ``seconds`` while the client probes the service.

    The time from each recovery to the next failure is drawn from an exponential distribution
    with mean ``mtbf_s`` (``seed``: the same schedule on every run); each failure is the
    chapter's power cycle.  Returns ``{"start", "end", "failures": [fault times], "log"}``."""
    import random

    rng = random.Random(seed)
    client = lab["client"]
    probe = probes.http(client, web.url(), hz=hz, name="soak", timeout=0.5, duration=seconds + 300)
    start = probe.start()
    end = start + seconds
    failures: list[float] = []
    try:
        while True:
            up_for = rng.expovariate(1 / mtbf_s)
            if time.time() + up_for >= end:
                time.sleep(max(0.0, end - time.time()))
                break
            time.sleep(up_for)
            failures.append(lab.power_off("server"))
            time.sleep(off_s)
            lab.power_on("server", wait=False)
            client.wait_for(f"curl -sf -o /dev/null -m 1 {web.url()}", timeout=180, interval=0.2)
        time.sleep(1)
    finally:
        if probe.running():
            probe.stop()
    return {"start": start, "end": end, "failures": failures, "log": probe.log()}
