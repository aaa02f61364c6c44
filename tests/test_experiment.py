"""The experiment helper on synthetic probe logs: the steps run in order, the numbers come out
as the analysis module computes them, a failed trial stops the run with the lab's explanation."""

from __future__ import annotations

import pandas as pd
import pytest

from hautils import analysis
from hautils.experiment import Experiment, ExperimentError, lost_writes
from hautils.ssh import JournalLine

T0 = 1_000_000.0


def synthetic_log(gaps: list[tuple[float, float]], *, end: float = 20.0, hz: float = 100,
                  slow: list[tuple[float, float]] = ()) -> pd.DataFrame:
    """A write-probe log from T0 to T0+end: attempts every 1/hz s; inside a gap (start, stop)
    nothing is acknowledged until the gap ends; inside a slow span an ack takes 0.8 s."""
    rows, seq, t = [], 0, 0.0
    while t < end:
        sent = T0 + t
        recv = sent + 0.002
        for a, b in gaps:
            if a <= t < b:
                recv = T0 + b  # a write blocked in the kernel returns when the disk is back
        for a, b in slow:
            if a <= t < b:
                recv = sent + 0.8
        rows.append({"seq": seq, "sent": sent, "recv": recv, "ok": True, "err": None, "late": 0})
        seq += 1
        t += 1 / hz
    return pd.DataFrame(rows)


class FakeProbe:
    def __init__(self, name: str, log: pd.DataFrame, calls: list, present=None):
        self.name, self._log, self.calls = name, log, calls
        self._running = False
        self.present = present

    def start(self):
        self.calls.append(("start", self.name))
        self._running = True
        return T0

    def running(self):
        return self._running

    def stop(self):
        self.calls.append(("stop", self.name))
        self._running = False

    def wait_recovered(self, after, timeout, max_latency):
        self.calls.append(("wait_recovered", round(after - T0, 3), max_latency))
        return after

    def log(self):
        return self._log

    def verify(self, host=None):
        self.calls.append(("verify", host))
        seqs = list(self._log.seq) if self.present is None else self.present
        return {"present": seqs, "corrupt": []}


class FakeHost:
    def __init__(self, lines: list[tuple[float, str]]):
        self.lines = lines

    def journal(self, since=None):
        return [JournalLine(T0 + t, "", "heartbeat", m) for t, m in self.lines if since is None or T0 + t >= since]


def make(log, calls, **kw) -> Experiment:
    defaults = dict(
        probe=lambda t: FakeProbe(f"w-{t.index}", log, calls),
        fault=lambda t: calls.append(("fault", t.index)) or T0 + 5.0,
        before_s=1, after_s=1, sleep=lambda s: calls.append(("sleep", s)),
    )
    defaults.update(kw)
    return Experiment("demo", **defaults)


def test_steps_run_in_order_and_downtime_is_the_longest_outage_after_the_fault():
    log = synthetic_log([(5.3, 6.0), (8.0, 17.0)])  # a short stall, then the failover
    calls: list = []
    run = make(log, calls, prepare=lambda t: calls.append(("prepare", t.index)),
               restore=lambda t: calls.append(("restore", t.index))).run(2)
    assert [c[0] for c in calls[:8]] == ["prepare", "start", "sleep", "fault", "wait_recovered", "sleep", "stop",
                                        "restore"]
    assert calls[4] == ("wait_recovered", 5.0, 0.5)
    df = run.trials
    assert list(df.trial) == [0, 1] and df.error.isna().all()
    expected = analysis.downtime(analysis.with_timeout(log, 0.5), T0 + 5, pick="longest")
    assert df.downtime_s[0] == pytest.approx(expected.downtime_s)
    assert 8.9 < df.downtime_s[0] < 9.1  # from the last ack before 8.0 to the first ack at 17.0
    assert 0.6 < df.stalls_s[0] < 0.8  # the 5.3..6.0 stall, reported apart
    assert run.values("downtime_s") == list(df.downtime_s)


def test_a_fault_with_no_outage_gives_zero_downtime():
    log = synthetic_log([])
    run = make(log, [], recovered=None).run(1)
    assert run.trials.downtime_s[0] == 0.0 and run.trials.stalls_s[0] == 0.0


def test_stall_threshold_turns_slow_acks_into_an_outage():
    log = synthetic_log([], slow=[(6.0, 9.0)])
    run = make(log, []).run(1)
    assert 2.9 < run.trials.downtime_s[0] < 3.9
    assert make(log, [], stall_s=None).run(1).trials.downtime_s[0] == 0.0  # an async view: no outage


def test_lost_writes_verify_on_another_host():
    log = synthetic_log([(8.0, 12.0)])
    calls: list = []
    lost = {10, 11, 12}
    present = [s for s in log.seq if s not in lost]
    run = make(log, calls, probe=lambda t: FakeProbe("w", log, calls, present),
               verify=lost_writes(host=lambda t: "survivor")).run(1)
    assert ("verify", "survivor") in calls
    assert run.trials.lost_acked[0] == 3 and run.trials.acked[0] == len(log)
    assert run.last.loss.lost_seqs == [10, 11, 12]


def test_phases_come_from_the_journals_and_the_trials_own_events():
    log = synthetic_log([(5.0, 12.0)])
    host = FakeHost([(8.0, "node iscsi-server0 is dead"), (9.5, "drbddisk r0 start"), (4.0, "before the fault")])

    def fault(t):
        t.event(T0 + 5.5, "hautils: fault acknowledged")
        return T0 + 5.0

    run = make(log, [], fault=fault, journals=lambda t: [host],
               marks={"ack": r"fault acknowledged", "detection": r"is dead", "scripts": r"drbddisk r0\s+start"}).run(1)
    ph = {p.name: p.duration for p in run.last.phases}
    assert ph["ack"] == pytest.approx(0.5) and ph["detection"] == pytest.approx(2.5)
    assert ph["scripts"] == pytest.approx(1.5)
    assert ph["client reconnects"] == pytest.approx(run.last.downtime.outage.first_ok_after - (T0 + 9.5))
    assert list(run.phase_table.columns) == ["ack", "detection", "scripts", "client reconnects"]
    assert "ack (s)" in run.trials.columns
    assert list(run.phases()) == ["demo 0"]


def test_a_failed_trial_stops_the_run_with_the_labs_explanation():
    log = synthetic_log([(5.0, 12.0)])
    calls: list = []

    def recovered(t):
        raise TimeoutError("client never wrote again")

    exp = make(log, calls, recovered=recovered, diagnose=lambda t, e: f"client dmesg for trial {t.index}: EROFS")
    with pytest.raises(ExperimentError, match="trial 0 of 3 failed: TimeoutError") as err:
        exp.run(3)
    assert "client dmesg for trial 0: EROFS" in str(err.value)
    assert list(err.value.frame.trial) == [0]
    assert ("stop", "w-0") in calls  # the probe was stopped all the same
    # keep_going: every trial runs, failures are rows
    run = make(log, [], recovered=recovered).run(2, keep_going=True)
    assert run.trials.error.notna().all() and run.runs == []


def test_several_probes_each_get_a_downtime():
    main = synthetic_log([(5.0, 8.0)])
    other = synthetic_log([(5.0, 6.0)])
    run = make(main, [], probe=lambda t: {"disk": FakeProbe("disk", main, []),
                                          "ping": FakeProbe("ping", other, [])}).run(1)
    assert 2.9 < run.trials.downtime_s[0] < 3.1
    assert 0.9 < run.trials["ping downtime_s"][0] < 1.1
    # and its own count of unanswered attempts (the paper's "pings lost" from a 1 Hz probe)
    expected = analysis.downtime(analysis.with_timeout(other, 0.5), T0 + 5.0, allow_open=True).lost_probes
    assert expected > 0 and run.trials["ping lost_probes"][0] == expected


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="pick"):
        make(synthetic_log([]), [], pick="median")
    with pytest.raises(ValueError, match="journals"):
        make(synthetic_log([]), [], marks={"x": "y"})
    with pytest.raises(ValueError, match="trials"):
        make(synthetic_log([]), []).run(0)


def test_a_probe_on_the_failing_host_measures_no_downtime():
    """The writer dies with its host (DRBD's protocol test): its log ends at the fault."""
    log = synthetic_log([], end=5.0)  # ends at T0+5, the fault time
    run = make(log, [], recovered=None, downtime=False, verify=lost_writes()).run(1)
    assert "downtime_s" not in run.trials and run.trials.lost_acked[0] == 0


def test_a_stall_still_open_when_the_probe_stops_counts_as_a_stall_not_the_failover():
    # the failover (8..12), then acks slower than the stall threshold up to the end of the log:
    # the probe saw the recovery, so the open stall is reported apart, with its lower bound
    log = synthetic_log([(8.0, 12.0)], slow=[(19.0, 20.0)])
    run = make(log, []).run(1)
    assert 3.9 < run.trials.downtime_s[0] < 4.1
    open_stalls = [o for o in run.last.stalls if o.open_end]
    assert len(open_stalls) == 1
    assert 0.9 < run.trials.stalls_s[0] < 1.1
    assert run.trials.stalls_s[0] == pytest.approx(open_stalls[0].duration_lower, abs=1e-3)


def test_run_together_interleaves_trials_and_keeps_a_table_per_experiment():
    """Trial 0 of each, then trial 1 of each: a stop's trial leaves the lab where the start's begins."""
    calls: list = []
    log = synthetic_log([(6.0, 7.0)])
    stop = make(log, calls, prepare=lambda t: calls.append(("prepare", "stop", t.index)))
    start = make(log, calls, prepare=lambda t: calls.append(("prepare", "start", t.index)))
    runs = Experiment.run_together({"stop": stop, "start": start}, 2)
    order = [c[1:] for c in calls if c[0] == "prepare"]
    assert order == [("stop", 0), ("start", 0), ("stop", 1), ("start", 1)]
    assert set(runs) == {"stop", "start"}
    assert list(runs["stop"].trials.trial) == [0, 1] and list(runs["start"].trials.trial) == [0, 1]
    assert 0.95 < runs["start"].trials.downtime_s[1] < 1.05


def test_run_together_stops_at_the_first_failed_trial():
    calls: list = []
    log = synthetic_log([(6.0, 7.0)])

    def broken(t):
        raise RuntimeError("router did not come back")

    ok = make(log, calls)
    bad = make(log, calls, prepare=broken)
    with pytest.raises(ExperimentError, match="trial 0 of 3 failed: RuntimeError: router did not come back"):
        Experiment.run_together({"ok": ok, "bad": bad}, 3)


def test_clock_offsets_move_logs_and_journal_lines_onto_the_machines_clock():
    """Seen in the gateway lab: the client's clock 14 ms behind, the survivor's 0.5 ms: the
    router's line came after the client's first answer until both were moved onto one clock."""
    log = synthetic_log([(5.0, 6.0)])  # the client's clock: its first answer at +6.0 (+6.014 really)
    journal = FakeHost([(6.01, "becomes master")])  # the survivor's clock, right
    journal.name = "survivor"

    def probe(t):
        p = FakeProbe("w", log, [])
        p.host = type("H", (), {"name": "client"})()
        return p

    kw = dict(probe=probe, marks={"takeover": r"becomes master"}, journals=lambda t: [journal])
    plain = make(log, [], **kw).run(1)
    assert pd.isna(plain.trials["takeover (s)"][0])  # 6.01 is after the client's 6.0: not in the outage
    shifted = make(log, [], clock_offsets=lambda t: {"client": -0.014, "survivor": 0.0}, **kw).run(1)
    t = shifted.runs[0]
    assert t.offsets == {"client": -0.014, "survivor": 0.0}
    assert t.log["sent"].iloc[0] == pytest.approx(T0 + 0.014)  # moved forward by 14 ms
    assert shifted.trials["takeover (s)"][0] == pytest.approx(1.01)
    assert shifted.trials.downtime_s[0] == pytest.approx(plain.trials.downtime_s[0])  # one clock: same length


def test_the_last_trial_can_leave_the_lab_as_the_fault_left_it():
    log = synthetic_log([(8.0, 12.0)])
    calls: list = []
    make(log, calls, restore=lambda t: calls.append(("restore", t.index))).run(3, restore_last=False)
    assert [c for c in calls if c[0] == "restore"] == [("restore", 0), ("restore", 1)]
    calls.clear()
    make(log, calls, restore=lambda t: calls.append(("restore", t.index))).run(2)
    assert [c for c in calls if c[0] == "restore"] == [("restore", 0), ("restore", 1)]


def test_probes_start_and_stop_side_by_side():
    import threading
    import time as _time

    log = synthetic_log([(8.0, 12.0)])
    calls: list = []
    both = threading.Barrier(2, timeout=5)  # each start waits for the other: sequential starts would time out

    class Slow(FakeProbe):
        def start(self):
            both.wait()
            _time.sleep(0.01)
            return super().start()

    run = make(log, calls, probe=lambda t: {"a": Slow("a", log, calls), "b": Slow("b", log, calls)}).run(1)
    assert run.trials.error.isna().all()
    assert sorted(c for c in calls if c[0] in ("start", "stop")) == [("start", "a"), ("start", "b"),
                                                                     ("stop", "a"), ("stop", "b")]


def test_a_probe_that_cannot_start_fails_the_trial_and_the_others_are_stopped():
    log = synthetic_log([(8.0, 12.0)])
    calls: list = []

    class Broken(FakeProbe):
        def start(self):
            raise RuntimeError("no agent")

    with pytest.raises(ExperimentError, match="no agent"):
        make(log, calls, probe=lambda t: {"a": FakeProbe("a", log, calls), "b": Broken("b", log, calls)}).run(1)
    assert ("stop", "a") in calls


def test_each_trial_logs_its_steps_for_the_ci_budget_table(tmp_path, monkeypatch):
    """With HAUTILS_TIMINGS set (CI's nbval step), every trial, also a failed one, appends a
    line that scripts/ci_times.py sums per experiment; without it nothing is written."""
    import json

    from hautils import experiment

    calls: list = []
    log = synthetic_log([(5.0, 8.0)])

    def make(fail: bool):
        def fault(t):
            if fail:
                raise RuntimeError("no power switch")
            return T0 + 5.0
        return Experiment("timed", probe=lambda t: FakeProbe("w", log, calls), fault=fault, recovered=None,
                          sleep=lambda s: None, restore=lambda t: None)

    monkeypatch.delenv(experiment.TIMINGS_ENV, raising=False)
    make(False).run(1)
    assert not (tmp_path / "experiments.jsonl").exists()
    monkeypatch.setenv(experiment.TIMINGS_ENV, str(tmp_path))
    make(False).run(2)
    with pytest.raises(ExperimentError):
        make(True).run(1)
    lines = [json.loads(x) for x in (tmp_path / "experiments.jsonl").read_text().splitlines()]
    assert [(x["experiment"], x["trial"], x["finished"]) for x in lines] == [
        ("timed", 0, True), ("timed", 1, True), ("timed", 0, False)]
    assert set(lines[0]["steps"]) == {"prepare", "until recovered", "probing", "analysis", "restore"}
    assert "until recovered" not in lines[2]["steps"]
