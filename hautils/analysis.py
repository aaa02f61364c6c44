"""Outage arithmetic on probe logs, failover phases, write loss and trial statistics.

A *probe log* has one record per attempt::

    {"seq": int, "sent": float, "recv": float | None, "ok": bool, "err": str | None}

``sent`` is when the request left the client, ``recv`` when its reply (or
write acknowledgement) arrived, both epoch seconds from the probing host's
clock.  Records may come in any order (they are sorted by ``sent``), as a list
of dicts or a pandas DataFrame with these columns.

Downtime is always computed from timestamps, never as ``lost * interval``:
real probes are not evenly spaced (a UML guest probing at a nominal 10 ms
sends every 11-29 ms, and slows further while replies are missing), so a count
of lost probes says little about time.
"""

from __future__ import annotations

import math
import numbers
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "Outage",
    "Downtime",
    "Phase",
    "WriteLoss",
    "TrialsError",
    "outages",
    "downtime",
    "align",
    "phases",
    "lost_writes",
    "summarize",
    "trials",
    "trial_summary",
]

Log = Sequence[Mapping[str, Any]] | pd.DataFrame


# --------------------------------------------------------------------------
# parsing


class _Attempt(NamedTuple):
    seq: int
    sent: float
    recv: float | None
    ok: bool


def _is_missing(v: object) -> bool:
    """None, NaN and pandas NA all mean "no value" (DataFrames turn None into NaN)."""
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _time(v: object, field: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ValueError(f"{where}: field {field!r} must be a finite number (epoch seconds), got {v!r}")
    return float(v)


def _records(log: Log, what: str = "log") -> list[Mapping[str, Any]]:
    if isinstance(log, pd.DataFrame):
        return log.to_dict("records")
    if isinstance(log, Mapping) or isinstance(log, (str, bytes)):
        raise TypeError(f"{what} must be a list of records (dicts) or a DataFrame, got {type(log).__name__}")
    return list(log)


def _attempts(log: Log, what: str = "log") -> list[_Attempt]:
    """Validate and sort the records of a probe log by send time."""
    out: list[_Attempt] = []
    for i, r in enumerate(_records(log, what)):
        if not isinstance(r, Mapping):
            raise TypeError(f"{what} record {i} must be a dict, got {type(r).__name__}")
        seq_v = r.get("seq", i)
        where = f"{what} record {i} (seq={seq_v!r})"
        for key in ("sent", "ok"):
            if key not in r:
                raise ValueError(f"{where}: missing field {key!r}")
        ok = r["ok"]
        if isinstance(ok, np.bool_):  # from a DataFrame column: not a bool, but acts like one
            ok = bool(ok)
        if not isinstance(ok, bool):
            raise ValueError(f"{where}: field 'ok' must be True or False, got {ok!r}")
        sent = _time(r["sent"], "sent", where)
        recv_v = r.get("recv")
        recv = None if _is_missing(recv_v) else _time(recv_v, "recv", where)
        if ok and recv is None:
            raise ValueError(f"{where}: ok is True but 'recv' is missing: a success needs its reply time")
        if isinstance(seq_v, bool) or not isinstance(seq_v, numbers.Integral):
            if isinstance(seq_v, float) and seq_v.is_integer():
                seq_v = int(seq_v)
            else:
                raise ValueError(f"{where}: field 'seq' must be an integer, got {seq_v!r}")
        out.append(_Attempt(int(seq_v), sent, recv, ok))
    out.sort(key=lambda a: (a.sent, a.seq))
    return out


# --------------------------------------------------------------------------
# outages


@dataclass(frozen=True)
class Outage:
    """A maximal run of failed probe attempts.

    Times are absolute (epoch seconds, probe clock):

    * ``last_ok``: arrival (``recv``) of the last successful reply before the
      run; None when the log starts inside the outage (``open_start``).
    * ``first_fail``: ``sent`` of the first failed attempt.
    * ``last_fail``: ``sent`` of the last failed attempt.
    * ``first_ok_after``: ``recv`` of the first *stable* success after the run
      (see ``settle`` in :func:`outages`); None when the log ends inside the
      outage (``open_end``).

    ``duration = first_ok_after - last_ok`` is the client-visible gap: the
    time during which the client got no answer at all.  It is the honest
    measure because the probe cannot know *when* between its last answered
    and its first unanswered request the service died (nor when, before the
    answer, it came back); the answered requests on either side are the only
    facts.  It over-estimates the true outage by less than one inter-attempt
    gap on each side, and does not under-estimate it (up to differences in
    reply latency).  With ``open_start`` it is
    measured from ``first_fail`` (the log's first attempt); with ``open_end``
    it is None.

    ``duration_lower = first_ok_after - first_fail`` leaves out the time
    before the first failing request: a shorter measure that can
    under-estimate the outage by up to one gap.  With ``open_end`` it is the
    time from ``first_fail`` to the last attempt of the log (the outage lasted
    at least that long).

    ``lost`` counts failed attempts; ``flaps`` counts isolated successes that
    were absorbed into the outage because the service did not stay up.
    """

    last_ok: float | None
    first_fail: float
    last_fail: float
    first_ok_after: float | None
    lost: int
    flaps: int
    duration: float | None
    duration_lower: float
    open_start: bool = False
    open_end: bool = False

    @property
    def start(self) -> float:
        """Start of the client-visible gap (``last_ok``, or ``first_fail`` if open)."""
        return self.first_fail if self.last_ok is None else self.last_ok

    @property
    def end(self) -> float | None:
        """End of the client-visible gap (``first_ok_after``; None if open)."""
        return self.first_ok_after


def outages(
    log: Log,
    min_gap: float = 0.0,
    *,
    settle: float = 0.0,
    settle_n: int = 1,
) -> list[Outage]:
    """The outages of a probe log, in time order.

    An outage starts at a failed attempt and ends at the first success that
    *stays up*: a success is stable when it and the following ``settle_n - 1``
    attempts all succeed, and no attempt sent within ``settle`` seconds after
    it fails.  Successes before that (flapping) are absorbed into the outage
    and counted in ``Outage.flaps``.  The end of the log counts as "still up":
    a success near the end is stable if no failure follows it.  The defaults
    (``settle=0``, ``settle_n=1``) end an outage at the very first success.

    Outages whose ``duration`` (or, when open-ended, ``duration_lower``) is
    below ``min_gap`` seconds are dropped: use it to ignore single-probe
    blips.  Note that one lost probe already gives a duration of about two
    inter-attempt gaps.
    """
    min_gap = _nonneg(min_gap, "min_gap")
    settle = _nonneg(settle, "settle")
    if isinstance(settle_n, bool) or not isinstance(settle_n, numbers.Integral) or settle_n < 1:
        raise ValueError(f"settle_n must be an integer >= 1 (1 = no settling), got {settle_n!r}")

    att = _attempts(log)
    n = len(att)
    # next_fail[i]: index of the first failed attempt at or after i (n if none)
    next_fail = [n] * (n + 1)
    for i in range(n - 1, -1, -1):
        next_fail[i] = i if not att[i].ok else next_fail[i + 1]

    def stable(k: int) -> bool:
        nf = next_fail[k]
        if nf == n:
            return True
        return nf - k >= settle_n and att[nf].sent > att[k].sent + settle

    result: list[Outage] = []
    max_recv: float | None = None  # latest reply arrival among successes so far
    i = 0
    while i < n:
        a = att[i]
        if a.ok:
            max_recv = a.recv if max_recv is None else max(max_recv, a.recv)  # type: ignore[type-var]
            i += 1
            continue
        start = i
        k = i
        lost = flaps = 0
        last_fail = a.sent
        while k < n and not (att[k].ok and stable(k)):
            if att[k].ok:
                flaps += 1
            else:
                lost += 1
                last_fail = att[k].sent
            k += 1
        first_fail = att[start].sent
        last_ok = max_recv
        if k < n:
            end = att[k].recv
            assert end is not None
            begin = first_fail if last_ok is None else last_ok
            # a very slow reply from before the outage can arrive after the
            # recovering one: then no client-visible gap remained
            duration: float | None = max(0.0, end - begin)
            lower = max(0.0, end - first_fail)
        else:
            end = None
            duration = None
            lower = att[n - 1].sent - first_fail
        # absorbed flaps also count as replies seen
        for j in range(start, k):
            if att[j].ok:
                max_recv = att[j].recv if max_recv is None else max(max_recv, att[j].recv)  # type: ignore[type-var]
        o = Outage(
            last_ok=last_ok,
            first_fail=first_fail,
            last_fail=last_fail,
            first_ok_after=end,
            lost=lost,
            flaps=flaps,
            duration=duration,
            duration_lower=lower,
            open_start=last_ok is None,
            open_end=end is None,
        )
        measured = o.duration if o.duration is not None else o.duration_lower
        if measured >= min_gap:
            result.append(o)
        i = k
    return result


def _nonneg(v: object, field: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)) or float(v) < 0:
        raise ValueError(f"{field} must be a finite number >= 0 (seconds), got {v!r}")
    return float(v)


# --------------------------------------------------------------------------
# downtime after a fault


@dataclass(frozen=True)
class Downtime:
    """The outage a fault caused, as seen by a probe.

    ``downtime_s`` is the outage's ``duration`` (0.0 when the probe saw no
    outage: e.g. a RAID member failure).  ``detect_s`` is the time from the
    fault to the first failed attempt (negative if the probe was already
    failing before the fault), ``recover_s`` the time from the fault to the
    first stable success; both None without an outage.  ``recovered`` is
    False only for an outage still open at the end of the log (then
    ``downtime_s`` and ``recover_s`` are None).
    """

    fault_time: float | None
    outage: Outage | None
    detect_s: float | None
    recover_s: float | None
    downtime_s: float | None
    lost_probes: int
    recovered: bool = True

    @property
    def seen(self) -> bool:
        """True if the probe saw an outage at all."""
        return self.outage is not None


def downtime(
    log: Log,
    fault_time: float | None = None,
    *,
    settle: float = 0.0,
    settle_n: int = 1,
    min_gap: float = 0.0,
    window: float | None = None,
    allow_open: bool = False,
    pick: str = "first",
    trailing: str = "error",
) -> Downtime:
    """Downtime caused by a fault injected at ``fault_time`` (probe clock).

    Picks the first outage that contains or follows ``fault_time`` (or the
    first outage of the log if ``fault_time`` is None); with ``window`` only an
    outage whose first failure is at most ``window`` seconds after the fault
    counts.  ``pick="longest"`` takes the longest of those instead: for a
    failover whose interruption may be preceded by a brief stall (a busy
    server slows a write down before it lets go of the service).  No such
    outage gives a zero-downtime result (``downtime_s=0.0``,
    ``lost_probes=0``, ``outage=None``).

    Raises ValueError if the log does not cover ``fault_time`` (it is before
    the first or after the last attempt: then "no outage" would be a lie) and,
    unless ``allow_open``, if the outage has not ended by the end of the log.
    ``trailing="ignore"``: with ``pick="longest"``, an outage still open at the
    end of the log does not count when a closed one follows the fault (a stall
    in the last attempts of a probe that had already seen the recovery); it is
    still an error when no outage after the fault has ended.
    """
    att = _attempts(log)
    if fault_time is not None:
        fault_time = _time(fault_time, "fault_time", "downtime()")
        if not att:
            raise ValueError(f"the probe log is empty: it cannot cover fault_time={fault_time!r}")
        if not att[0].sent <= fault_time <= att[-1].sent:
            raise ValueError(
                f"the probe log does not cover fault_time={fault_time!r}: its attempts span "
                f"{att[0].sent!r} .. {att[-1].sent!r} (sent). Start the probe before injecting the "
                f"fault and stop it after recovery, or align() the log if the clocks differ."
            )
    if window is not None:
        window = _nonneg(window, "window")
        if fault_time is None:
            raise ValueError("window needs a fault_time to count from")

    if pick not in ("first", "longest"):
        raise ValueError(f"pick must be 'first' or 'longest', got {pick!r}")
    candidates: list[Outage] = []
    for o in outages(log, min_gap, settle=settle, settle_n=settle_n):
        if fault_time is not None and o.end is not None and o.end <= fault_time:
            continue  # over before the fault
        if window is not None and fault_time is not None and o.first_fail - fault_time > window:
            break
        candidates.append(o)
        if pick == "first":
            break
    if trailing not in ("error", "ignore"):
        raise ValueError(f"trailing must be 'error' or 'ignore', got {trailing!r}")
    if trailing == "ignore" and any(not o.open_end for o in candidates):
        candidates = [o for o in candidates if not o.open_end]
    found: Outage | None = None
    if candidates:
        # an open outage (still going at the end of the log) is the longest by definition
        found = max(candidates, key=lambda o: math.inf if o.open_end else o.duration)

    if found is None:
        return Downtime(fault_time, None, None, None, 0.0, 0, True)
    if found.open_end and not allow_open:
        raise ValueError(
            f"the outage starting at {found.first_fail!r} has not ended by the last attempt "
            f"({found.first_fail + found.duration_lower!r}): the service did not recover within "
            f"the probe run. Probe longer, or pass allow_open=True to get a result with recovered=False."
        )
    detect = None if fault_time is None else found.first_fail - fault_time
    recover = None
    if fault_time is not None and found.first_ok_after is not None:
        recover = found.first_ok_after - fault_time
    return Downtime(
        fault_time=fault_time,
        outage=found,
        detect_s=detect,
        recover_s=recover,
        downtime_s=found.duration,
        lost_probes=found.lost,
        recovered=not found.open_end,
    )


def align(log: Log, offset_s: float) -> Log:
    """A copy of ``log`` with ``sent`` and ``recv`` shifted by ``offset_s`` seconds.

    Use it to bring a log from a host whose clock differs onto the reference
    clock: if the host's clock is ``d`` seconds ahead, call ``align(log, -d)``.
    Returns the same kind of object it was given (list of dicts or DataFrame).
    """
    off = _time(offset_s, "offset_s", "align()")
    if isinstance(log, pd.DataFrame):
        df = log.copy()
        for col in ("sent", "recv"):
            if col in df.columns:
                df[col] = df[col] + off
        return df
    out = []
    for r in _records(log):
        d = dict(r)
        for col in ("sent", "recv"):
            if col in d and not _is_missing(d[col]):
                d[col] = d[col] + off
        out.append(d)
    return out


def with_timeout(log: Log, timeout_s: float) -> Log:
    """A copy of ``log`` where a success slower than ``timeout_s`` counts as failed.

    Synchronous probes (``write``, ``cmd``) never fail during a storage failover: the write
    blocks until the new server answers, then succeeds.  A client with a deadline sees it as
    unanswered, and so does :func:`outages` after this: the blocked write becomes a failure and
    the outage spans from the last fast ack before it to the first fast ack after it.  Returns
    the same kind of object it was given.
    """
    t = _time(timeout_s, "timeout_s", "with_timeout()")
    if not t > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if isinstance(log, pd.DataFrame):
        df = log.copy()
        slow = df["ok"].astype(bool) & ((df["recv"] - df["sent"]) > t)
        df["ok"] = df["ok"].astype(bool) & ~slow
        return df
    out = []
    for r in _records(log):
        d = dict(r)
        if d.get("ok") is True and not _is_missing(d.get("recv")) and d["recv"] - d["sent"] > t:
            d["ok"] = False
        out.append(d)
    return out


# --------------------------------------------------------------------------
# phases of a failover


@dataclass(frozen=True)
class Phase:
    """One phase of a failover: from the previous mark (or the fault) to this phase's mark.

    A phase whose mark was not found has ``found=False`` and ``end`` and
    ``duration`` None; the next phase then starts where this one started.
    """

    name: str
    start: float
    end: float | None
    duration: float | None
    found: bool = True


def phases(
    events: Iterable[tuple[float, str]],
    marks: Mapping[str, str | re.Pattern[str]],
    start: float,
    end: float,
    *,
    final: str = "rest",
) -> list[Phase]:
    """Split ``start`` (fault) .. ``end`` (probe recovery) into phases at log marks.

    ``events`` are timestamped journal lines (any order; sorted by time,
    stably).  ``marks`` maps phase names to regexes, in order; each phase ends
    at the first line matching its regex (``re.search``) at or after the end
    of the previous found phase (and after the line that ended it).  A last
    phase named ``final`` runs from the last found mark to ``end``.

    Only lines between ``start`` and ``end`` count: a message logged after
    the client already recovered did not delay it.  Missing marks are reported
    with ``found=False``, never as zero-length phases.
    """
    t0 = _time(start, "start", "phases()")
    t1 = _time(end, "end", "phases()")
    if t1 < t0:
        raise ValueError(f"phases(): end={t1!r} is before start={t0!r}: pass the fault time as start")
    if not marks:
        raise ValueError("phases(): marks is empty: give at least one {phase name: regex}")
    if final in marks:
        raise ValueError(f"phases(): final phase name {final!r} is also a mark name: pick another final=")
    compiled: list[tuple[str, re.Pattern[str]]] = []
    for name, pat in marks.items():
        try:
            compiled.append((name, pat if isinstance(pat, re.Pattern) else re.compile(pat)))
        except (re.error, TypeError) as exc:
            raise ValueError(f"phases(): mark {name!r} has an invalid regex {pat!r}: {exc}") from None

    lines: list[tuple[float, str]] = []
    for i, ev in enumerate(events):
        try:
            t, text = ev
        except (TypeError, ValueError):
            raise ValueError(f"phases(): events[{i}] must be a (time, line) pair, got {ev!r}") from None
        t = _time(t, "time", f"phases() events[{i}]")
        if t0 <= t <= t1:
            lines.append((t, str(text)))
    lines.sort(key=lambda e: e[0])

    result: list[Phase] = []
    boundary = t0
    pos = 0  # index of the first line that may still match
    for name, rx in compiled:
        hit = next((j for j in range(pos, len(lines)) if rx.search(lines[j][1])), None)
        if hit is None:
            result.append(Phase(name, boundary, None, None, found=False))
            continue
        t = lines[hit][0]
        result.append(Phase(name, boundary, t, t - boundary))
        boundary = t
        pos = hit + 1
    result.append(Phase(final, boundary, t1, t1 - boundary))
    return result


# --------------------------------------------------------------------------
# write loss (RPO)


@dataclass(frozen=True)
class WriteLoss:
    """Which acknowledged writes a failover lost.

    ``lost_seqs`` are acknowledged writes missing on the survivor or corrupt
    there (``corrupt_seqs`` is the corrupt subset).  ``rpo_s`` is the data-loss
    window: from the ack of the newest write up to which *every* acknowledged
    write survived (the consistent point) to the last ack; 0.0 if nothing was
    lost.  If even the first acknowledged write was lost, the window starts at
    that write's ``sent`` (``consistent_at`` is None).  ``unacked_present`` are
    writes present but never acknowledged (including seqs unknown to the
    write log): harmless, reported for completeness.
    """

    acked: int
    lost_acked: int
    lost_seqs: list[int]
    corrupt_seqs: list[int]
    unacked_present: list[int]
    rpo_s: float
    last_acked_at: float | None
    consistent_at: float | None


def _seqs(values: Iterable[Any], field: str) -> set[int]:
    out: set[int] = set()
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ValueError(f"{field} must hold integer seqs, got {v!r}")
        out.add(int(v))
    return out


def lost_writes(acked: Log, present: Iterable[int], corrupt: Iterable[int] = ()) -> WriteLoss:
    """Compare the write probe's log with what survived the failover.

    ``acked`` is the write probe log (``ok`` = acknowledged, ``recv`` = ack
    time); ``present`` the seqs found on the survivor; ``corrupt`` the seqs
    found but with wrong content.
    """
    att = _attempts(acked, "acked")
    seen: set[int] = set()
    for a in att:
        if a.seq in seen:
            raise ValueError(f"acked: seq {a.seq} appears twice: each write needs a unique seq")
        seen.add(a.seq)
    present_s = _seqs(present, "present")
    corrupt_s = _seqs(corrupt, "corrupt")
    ok = [a for a in att if a.ok]
    ok_seqs = {a.seq for a in ok}
    lost = [a for a in ok if a.seq not in present_s or a.seq in corrupt_s]
    lost_seqs = sorted(a.seq for a in lost)
    last_acked_at = max((a.recv for a in ok), default=None)  # type: ignore[type-var]

    consistent_at: float | None = None
    rpo = 0.0
    if lost:
        lost_set = {a.seq for a in lost}
        first_lost = next(i for i, a in enumerate(ok) if a.seq in lost_set)  # ok is in send order
        if first_lost > 0:
            consistent_at = max(a.recv for a in ok[:first_lost])  # type: ignore[type-var]
            rpo = last_acked_at - consistent_at  # type: ignore[operator]
        else:
            rpo = last_acked_at - ok[0].sent  # type: ignore[operator]
        rpo = max(0.0, rpo)
    return WriteLoss(
        acked=len(ok),
        lost_acked=len(lost),
        lost_seqs=lost_seqs,
        corrupt_seqs=sorted(ok_seqs & corrupt_s),
        unacked_present=sorted(present_s - ok_seqs),
        rpo_s=rpo,
        last_acked_at=last_acked_at,
        consistent_at=consistent_at,
    )


# --------------------------------------------------------------------------
# repeated trials


def summarize(values: Iterable[float]) -> dict[str, float]:
    """min, median, max, mean and n of measured values (the book reports all of them)."""
    vals = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(float(v)):
            raise ValueError(f"summarize(): values[{i}] is not a number: {v!r}")
        vals.append(float(v))
    if not vals:
        raise ValueError("summarize(): values is empty: nothing to summarize")
    return {
        "min": min(vals),
        "median": statistics.median(vals),
        "max": max(vals),
        "mean": statistics.fmean(vals),
        "n": len(vals),
    }


class TrialsError(RuntimeError):
    """Some trials raised; ``frame`` holds every trial's row, with the errors recorded."""

    def __init__(self, message: str, frame: pd.DataFrame):
        super().__init__(message)
        self.frame = frame


def trials(fn: Callable[..., Mapping[str, Any]], n: int, *, raise_errors: bool = True, **kw: Any) -> pd.DataFrame:
    """Run ``fn(trial_index, **kw)`` for trial_index 0..n-1; one row per trial.

    Each call returns a dict of measures, e.g. ``{"downtime_s": 4.2}``.
    Columns: ``trial``, the measures, and ``error`` (None, or
    "ExceptionType: message" for a trial that raised).  All ``n`` trials run
    even if some fail, so one bad trial does not waste the others; then, by
    default (``raise_errors=True``), a TrialsError is raised that carries the
    full frame (``.frame``) and chains the first exception.  With
    ``raise_errors=False`` the frame is returned and the caller inspects
    ``error``.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (number of trials), got {n!r}")
    rows: list[dict[str, Any]] = []
    first_exc: BaseException | None = None
    for i in range(int(n)):
        try:
            measures = fn(i, **kw)
            if not isinstance(measures, Mapping):
                raise TypeError(f"trial function must return a dict of measures, got {type(measures).__name__}")
            bad = {"trial", "error"} & set(measures)
            if bad:
                raise ValueError(f"trial function returned reserved key(s) {sorted(bad)}: rename them")
            rows.append({"trial": i, **measures, "error": None})
        except Exception as exc:  # noqa: BLE001 - recorded, re-raised below
            rows.append({"trial": i, "error": f"{type(exc).__name__}: {exc}"})
            if first_exc is None:
                first_exc = exc
    df = pd.DataFrame(rows)
    cols = ["trial"] + [c for c in df.columns if c not in ("trial", "error")] + ["error"]
    df = df[cols]
    if first_exc is not None and raise_errors:
        failed = df.loc[df["error"].notna(), "trial"].tolist()
        raise TrialsError(
            f"{len(failed)} of {n} trials failed (trials {failed}); first error: {df['error'].dropna().iloc[0]}. "
            f"The recorded rows are in .frame; use raise_errors=False to get them without raising.",
            df,
        ) from first_exc
    return df


def trial_summary(df: pd.DataFrame) -> pd.DataFrame:
    """min/median/max/mean/n per numeric measure column of a :func:`trials` frame.

    One row per measure (index), failed trials (NaN) left out.
    """
    measures = [c for c in df.select_dtypes("number").columns if c != "trial"]
    rows = {}
    for c in measures:
        col = df[c].dropna()
        if col.empty:
            continue
        rows[c] = summarize(col.tolist())
    return pd.DataFrame.from_dict(rows, orient="index", columns=["min", "median", "max", "mean", "n"])
