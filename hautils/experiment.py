"""Failover experiments: one scenario, N trials, the same steps every time.

Every chapter breaks something on purpose and measures what the client saw.  The steps are
always the same, so they live here once::

    prepare  ->  start probe(s)  ->  wait before_s  ->  FAULT  ->  wait until recovered
             ->  during  ->  wait after_s  ->  stop probes  ->  downtime, stalls
             ->  verify (lost writes ...)  ->  phases from the journals  ->  restore

A scenario is data plus a few callables, each taking the :class:`Trial` being run (its index,
the fault time, the probes, and whatever ``prepare`` chose, such as the victim)::

    power = Experiment(
        "heartbeat power failure",
        prepare=lambda t: t.set(victim=lab[hb.active()], survivor=...),
        probe=lambda t: probes.write(client, "/mnt/probe.dat", hz=100, name=f"power-{t.index}"),
        fault=lambda t: lab.power_off(t.victim.name),
        marks={"detection (deadtime)": r"is dead", ...}, journals=lambda t: [t.survivor, client],
        verify=lost_writes(), restore=lambda t: ...,
    ).run(trials)
    power.trials       # one row per trial: downtime_s, stalls_s, lost_acked, "<phase> (s)" ...
    power.phase_table  # one row per trial, one column per phase
    power.timeline()   # the last trial's probe log with fault, outage and phases (a figure)

Downtime is the client's view, computed from probe timestamps (:mod:`hautils.analysis`): for
synchronous probes (writes) an answer slower than ``stall_s`` counts as no answer; the longest
outage after the fault is the failover (``pick="longest"``), shorter ones are listed apart as
stalls.  Phases split fault..recovery at journal lines (``marks``) of the hosts ``journals``
names; callables may add their own timestamped events with :meth:`Trial.event`.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import analysis
from .ssh import on_each as _each  # probes, journals and read-backs side by side

__all__ = ["Experiment", "Trial", "Run", "lost_writes", "ExperimentError"]


class ExperimentError(RuntimeError):
    """A trial failed; ``frame`` holds the rows so far, ``diagnostics`` what the lab said."""

    def __init__(self, message: str, frame: pd.DataFrame, diagnostics: str = ""):
        super().__init__(message + (f"\n--- diagnostics ---\n{diagnostics}" if diagnostics else ""))
        self.frame = frame
        self.diagnostics = diagnostics


class Trial:
    """One trial in progress.  Scenario callables read it and may add to it:

    * ``t.set(victim=..., survivor=...)`` (or ``t.victim = ...``): anything later steps need;
    * ``t.row["rebuild_s"] = 0.5``: an extra measure in this trial's row of the table;
    * ``t.event(time, "text")``: a timestamped event for the phase analysis (e.g. power on).
    """

    def __init__(self, index: int, label: str):
        self.index = index
        self.label = label
        self.fault_time: float | None = None
        self.probes: dict[str, Any] = {}
        self.logs: dict[str, pd.DataFrame] = {}
        self.downtime: analysis.Downtime | None = None
        self.stalls: list[analysis.Outage] = []
        self.phases: list[analysis.Phase] = []
        self.events: list[tuple[float, str]] = []
        self.row: dict[str, Any] = {}
        self.timings: dict[str, float] = {}  # wall-clock seconds of each step, for budgets
        self.offsets: dict[str, float] = {}  # host -> seconds its clock is ahead (clock_offsets)

    def set(self, **values: Any) -> "Trial":
        for k, v in values.items():
            setattr(self, k, v)
        return self

    def event(self, when: float, text: str) -> float:
        self.events.append((float(when), text))
        return when

    @property
    def probe(self):
        """The main probe (the first one): its outage is the trial's downtime."""
        return next(iter(self.probes.values()))

    @property
    def log(self) -> pd.DataFrame:
        return next(iter(self.logs.values()))

    def __repr__(self) -> str:
        return f"<Trial {self.label} #{self.index}>"


def lost_writes(host: Callable[[Trial], Any] | None = None, probe: str | None = None,
                **verify_kw: Any) -> Callable[[Trial], dict[str, Any]]:
    """A ``verify`` step for write probes: read the records back (on the probe's host, or on
    ``host(trial)``: the survivor that sees the disk now) and count the acknowledged writes
    that are missing or corrupt.  Adds ``acked``, ``lost_acked`` and ``rpo_s`` to the row."""

    def verify(t: Trial) -> dict[str, Any]:
        loss = t.loss = read_back(t, probe, host(t) if host else None, **verify_kw)
        return {"acked": loss.acked, "lost_acked": loss.lost_acked, "rpo_s": loss.rpo_s}

    return verify


def read_back(t: Trial, probe: str | None = None, host: Any = None, **verify_kw: Any) -> analysis.WriteLoss:
    """One write probe's records read back (on its host, or ``host``) against its log: what
    :func:`lost_writes` records, for a scenario that reads several probes itself."""
    p = t.probes[probe] if probe else t.probe
    v = p.verify(host=host, **verify_kw)
    return analysis.lost_writes(t.logs[probe] if probe else t.log, v["present"], v["corrupt"])


@dataclass
class Run:
    """The outcome of :meth:`Experiment.run`: the table, the phases and each trial's timeline."""

    name: str
    trials: pd.DataFrame
    runs: list[Trial] = field(default_factory=list)
    settle: float = 0.0  # the experiment's, so that figures find the outages the table counts

    @property
    def phase_table(self) -> pd.DataFrame:
        """One row per trial, one column per phase (seconds; NaN where a mark was not found)."""
        rows = [{"trial": t.index, **{p.name: p.duration for p in t.phases}} for t in self.runs if t.phases]
        return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()

    def phases(self) -> dict[str, list[analysis.Phase]]:
        """``{"<name> <i>": phases}`` for :func:`hautils.plots.phase_bars`."""
        return {f"{self.name} {t.index}": t.phases for t in self.runs if t.phases}

    def phase_median(self) -> pd.Series:
        return self.phase_table.median().round(2)

    @property
    def last(self) -> Trial:
        return self.runs[-1]

    def timeline(self, trial: int = -1, *, title: str | None = None, probe: str | None = None, **kw: Any):
        """The probe log of one trial (default: the last) with fault, outage and phases."""
        from . import plots

        t = self.runs[trial]
        log = t.logs[probe] if probe else t.log
        d = t.downtime
        if title is None:
            what = f"{d.downtime_s:.1f} s without answers" if d and d.seen else "no outage"
            title = f"{self.name}, trial {t.index}: {what}"
        kw.setdefault("settle", self.settle)
        return plots.timeline(log, fault_time=t.fault_time, phases=t.phases or None, title=title, **kw)

    def phase_bars(self, *, title: str | None = None, paper: Mapping[str, float | None] | None = None):
        from . import plots

        return plots.phase_bars(self.phases(), paper=paper, title=title or f"{self.name}: where the time goes")

    def values(self, column: str) -> list:
        """A column of the trials table as a plain list (for ``results.record``)."""
        return [v.item() if hasattr(v, "item") else v for v in self.trials[column].tolist()]


@dataclass
class Experiment:
    """A failover scenario; :meth:`run` repeats it.  See the module docstring.

    Callables (each receives the :class:`Trial`):

    ``probe``     returns the probe (or ``{name: probe}``; the first is the main one), unstarted;
    ``fault``     injects the fault and returns the epoch time it took effect;
    ``prepare``   before the probes start (choose the victim, wait for a healthy pair);
    ``recovered`` waits until the service is back (default: the main probe saw an outage and
                  answers quickly again, :meth:`hautils.probes.Probe.wait_recovered`); ``None``
                  for faults that cause no outage (just ``after_s``);
    ``during``    after recovery, while the probes still run;
    ``verify``    after the probes stopped: returns measures for the row (see :func:`lost_writes`);
    ``restore``   last: give the lab its redundancy back for the next trial;
    ``journals``  the hosts whose journals hold the phase ``marks``;
    ``diagnose``  on a failed trial: text that explains it (kernel messages, states), shown in
                  the error;
    ``clock_offsets`` after the probes stopped: ``{host: seconds its clock is ahead of the
                  machine's}`` (:func:`hautils.clock.offsets`); probe logs and journal lines of
                  those hosts are moved onto the machine's clock, the fault's, before the
                  analysis (guests' clocks were seen up to 14 ms apart: enough to order a
                  router's log line after the client's first answer through it).
    """

    name: str
    probe: Callable[[Trial], Any]
    fault: Callable[[Trial], float]
    prepare: Callable[[Trial], Any] | None = None
    recovered: Callable[[Trial], Any] | str | None = "probe"
    during: Callable[[Trial], Any] | None = None
    verify: Callable[[Trial], Mapping[str, Any] | None] | None = None
    restore: Callable[[Trial], Any] | None = None
    marks: Mapping[str, str] | None = None
    journals: Callable[[Trial], Iterable[Any]] | None = None
    final_phase: str = "client reconnects"
    diagnose: Callable[[Trial, BaseException], str] | None = None
    clock_offsets: Callable[[Trial], Mapping[str, float]] | None = None
    before_s: float = 2.0
    after_s: float = 2.0
    timeout_s: float = 240.0
    stall_s: float | None = 0.5
    settle: float = 0.0
    downtime: bool = True  # False: the probe runs on the host that fails (its log ends at the fault)
    pick: str = "longest"
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.pick not in ("first", "longest"):
            raise ValueError(f"{self.name}: pick must be 'first' or 'longest', got {self.pick!r}")
        if isinstance(self.recovered, str) and self.recovered != "probe":
            raise ValueError(f"{self.name}: recovered must be a callable, 'probe' or None, got {self.recovered!r}")
        if self.marks and self.journals is None:
            raise ValueError(f"{self.name}: marks need journals= (the hosts whose journals hold them)")

    # -- one trial ------------------------------------------------------------------------------

    def _probes(self, t: Trial) -> dict[str, Any]:
        made = self.probe(t)
        if isinstance(made, Mapping):
            if not made:
                raise ValueError(f"{self.name}: probe() returned no probe")
            return dict(made)
        return {getattr(made, "name", "probe"): made}

    def _analyse(self, t: Trial) -> None:
        fetched: dict[str, pd.DataFrame] = {}
        _each(lambda item: fetched.__setitem__(item[0], item[1].log()), t.probes.items())  # side by side
        for name, p in t.probes.items():
            log = fetched[name]
            off = t.offsets.get(getattr(getattr(p, "host", None), "name", None), 0.0)
            t.logs[name] = analysis.align(log, -off) if off else log
        if not self.downtime:
            return
        log = t.log
        view = analysis.with_timeout(log, self.stall_s) if self.stall_s else log
        # the probe saw the recovery (``recovered``) before it was stopped: a write slow in the
        # last moments of the log is a stall after it, not a failover that never ended
        trailing = "ignore" if self.recovered == "probe" else "error"
        t.downtime = analysis.downtime(view, t.fault_time, settle=self.settle, pick=self.pick, trailing=trailing)
        t.stalls = [o for o in analysis.outages(view, settle=self.settle)
                    if o != t.downtime.outage and ((o.first_ok_after or 0) > t.fault_time or o.open_end)]
        for name in list(t.logs)[1:]:  # other probes: their own downtime, side by side
            v = analysis.with_timeout(t.logs[name], self.stall_s) if self.stall_s else t.logs[name]
            d = analysis.downtime(v, t.fault_time, settle=self.settle, pick=self.pick, allow_open=True)
            t.row[f"{name} downtime_s"] = d.downtime_s
            t.row[f"{name} lost_probes"] = d.lost_probes

    def _phases(self, t: Trial) -> None:
        if not self.marks or t.downtime is None or not t.downtime.seen:
            return
        events = list(t.events)
        hosts = list(self.journals(t))  # type: ignore[misc]

        def read(host) -> list[tuple[float, str]]:
            off = t.offsets.get(getattr(host, "name", None), 0.0)
            return [(line.time - off, f"{line.identifier}: {line.message}")
                    for line in host.journal(since=t.fault_time - 1 + off)]

        # every host's journal at once: each journalctl costs most of a second in a UML guest
        with ThreadPoolExecutor(max(1, len(hosts))) as pool:
            for lines in pool.map(read, hosts):
                events += lines
        t.phases = analysis.phases(events, self.marks, start=t.fault_time, end=t.downtime.outage.first_ok_after,
                                   final=self.final_phase)

    def trial(self, index: int, t: Trial | None = None, restore: bool = True) -> Trial:
        """Run one trial and return it (``run`` calls this N times); ``restore=False`` leaves the
        lab as the fault left it."""
        t = t if t is not None else Trial(index, self.name)
        clock = time.monotonic()

        def lap(step: str) -> None:
            nonlocal clock
            now = time.monotonic()
            t.timings[step] = round(now - clock, 2)
            clock = now

        if self.prepare:
            self.prepare(t)
        lap("prepare")
        t.probes = self._probes(t)
        started: list[Any] = []

        def start(p) -> None:
            p.start()
            started.append(p)

        def stop(p) -> None:
            try:  # stop() itself checks that the agent still runs: no extra round trip first
                p.stop()
            except Exception:  # a probe on a host that was powered off: its log tells the rest
                pass

        try:
            _each(start, t.probes.values())  # side by side: starting one costs a second in a UML guest
            self.sleep(self.before_s)
            t.fault_time = float(self.fault(t))
            if self.recovered == "probe":
                t.probe.wait_recovered(t.fault_time, timeout=self.timeout_s, max_latency=self.stall_s or 0.5)
            elif callable(self.recovered):
                self.recovered(t)
            lap("until recovered")
            if self.during:
                self.during(t)
            self.sleep(self.after_s)
        finally:
            _each(stop, list(started))
        lap("probing")
        if self.clock_offsets:
            t.offsets = dict(self.clock_offsets(t))
        self._analyse(t)
        if self.verify:
            t.row.update(self.verify(t) or {})
        self._phases(t)
        lap("analysis")
        if self.restore and restore:
            self.restore(t)
        lap("restore")
        return t

    def row(self, t: Trial) -> dict[str, Any]:
        d = t.downtime
        row: dict[str, Any] = {}
        if self.downtime:
            row = {"downtime_s": d.downtime_s if d else None, "lost_probes": d.lost_probes if d else None,
                   "stalls_s": round(sum((o.duration if o.duration is not None else o.duration_lower)
                                         for o in t.stalls), 3)}
        row.update(t.row)
        row.update({f"{p.name} (s)": p.duration for p in t.phases})
        return row

    # -- N trials ---------------------------------------------------------------------------------

    def run(self, trials: int, *, keep_going: bool = False, progress: bool = False,
            restore_last: bool = True) -> Run:
        """Run ``trials`` trials; stop at the first failure unless ``keep_going``.
        ``restore_last=False``: the last trial leaves the lab as its fault left it (the survivor
        serving alone), where nothing after it needs the redundancy back: that restore would only
        cost time (a boot and a resync).

        A failed trial raises :class:`ExperimentError` carrying the rows so far and the
        scenario's ``diagnose`` text (with ``keep_going`` the failure is a row with ``error``)."""
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise ValueError(f"{self.name}: trials must be an integer >= 1, got {trials!r}")
        rows: list[dict[str, Any]] = []
        done: list[Trial] = []
        for i in range(trials):
            self._one(i, trials, rows, done, keep_going=keep_going, progress=progress,
                      restore=restore_last or i < trials - 1)
        return Run(self.name, _frame(rows), done, settle=self.settle)

    def _one(self, i: int, trials: int, rows: list[dict[str, Any]], done: list[Trial], *, keep_going: bool,
             progress: bool, restore: bool = True) -> None:
        """Trial ``i`` of ``trials``: its row (or its error) appended to ``rows``."""
        t = Trial(i, self.name)
        if progress:
            print(f"{time.strftime('%H:%M:%S')} {self.name} {i}: starting", flush=True)
        try:
            try:
                self.trial(i, t, restore=restore)
            finally:
                log_timings(t)
            done.append(t)
            rows.append({"trial": i, **self.row(t), "error": None})
            if progress:
                steps = ", ".join(f"{k} {v:.0f}" for k, v in t.timings.items())
                print(f"{self.name} {i}: {self._brief(rows[-1])} [s: {steps}]", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported with the lab's own explanation
            why = ""
            if self.diagnose:
                try:
                    why = self.diagnose(t, exc)
                except Exception as e2:  # noqa: BLE001
                    why = f"(diagnose failed: {type(e2).__name__}: {e2})"
            rows.append({"trial": i, "error": f"{type(exc).__name__}: {exc}", "diagnostics": why or None})
            if progress:
                print(f"{self.name} {i}: FAILED {type(exc).__name__}: {exc}\n{why}", flush=True)
            if not keep_going:
                raise ExperimentError(f"{self.name}: trial {i} of {trials} failed: {type(exc).__name__}: {exc}",
                                      _frame(rows), why) from exc
            traceback.print_exc()

    @staticmethod
    def run_together(experiments: Mapping[str, "Experiment"], trials: int, *, keep_going: bool = False,
                     progress: bool = False) -> dict[str, Run]:
        """Trial 0 of every experiment in order, then trial 1 of each, ...: for scenarios that
        leave the lab where the next one starts (the paper's "stop pathA, start pathA" test: a
        stop's trial need not restore what the next start does anyway).  Returns ``{key: Run}``."""
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
        rows: dict[str, list] = {k: [] for k in experiments}
        done: dict[str, list] = {k: [] for k in experiments}
        for i in range(trials):
            for k, e in experiments.items():
                e._one(i, trials, rows[k], done[k], keep_going=keep_going, progress=progress)
        return {k: Run(e.name, _frame(rows[k]), done[k], settle=e.settle) for k, e in experiments.items()}

    @staticmethod
    def _brief(row: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in row.items() if k not in ("trial", "error") and v is not None)


#: CI sets this to its timings directory (the Makefile's nbval step): every trial of every
#: experiment then appends its steps' wall-clock seconds to ``experiments.jsonl`` there, and
#: ``scripts/ci_times.py`` shows where each experiment's time went (a chapter over its budget
#: names the step to cut: a restore's boot, a slow setup, the failover itself).
TIMINGS_ENV = "HAUTILS_TIMINGS"


def log_timings(t: Trial, directory: str | os.PathLike[str] | None = None) -> Path | None:
    """Append one line for trial ``t`` (experiment, trial, whether it finished, its steps'
    seconds) to ``<directory or $HAUTILS_TIMINGS>/experiments.jsonl``; nothing without either.
    Never raises: a budget report must not fail the experiment it times."""
    d = directory if directory is not None else os.environ.get(TIMINGS_ENV)
    if not d:
        return None
    path = Path(d) / "experiments.jsonl"
    try:
        line = {"experiment": t.label, "trial": t.index, "finished": "restore" in t.timings, "steps": t.timings}
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(line) + "\n")
    except (OSError, TypeError, ValueError):
        return None
    return path


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    front = ["trial"]
    back = [c for c in ("error", "diagnostics") if c in df.columns]
    return df[front + [c for c in df.columns if c not in front + back] + back]
