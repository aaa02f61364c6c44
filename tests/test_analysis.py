import math
import random
import re

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hautils import analysis as an

# Times in the unit tests are multiples of 1/8 s so every expected value is exact
# in binary floating point and can be compared with ==.
LAT = 0.125


def mklog(sends, oks, lat=LAT, t0=0.0):
    """A probe log from send times and success flags (replies arrive ``lat`` later)."""
    return [
        {
            "seq": i,
            "sent": t0 + s,
            "recv": (t0 + s + lat) if ok else None,
            "ok": ok,
            "err": None if ok else "timeout",
        }
        for i, (s, ok) in enumerate(zip(sends, oks, strict=True))
    ]


def regular(n, step=0.25):
    return [i * step for i in range(n)]


def pattern(text):
    """'TTFFT' -> [True, True, False, False, True]."""
    return [c == "T" for c in text]


# ------------------------------------------------------------------ outages


def test_regular_single_outage_exact():
    oks = [not (4 <= i < 8) for i in range(12)]  # attempts 4..7 fail
    log = mklog(regular(12), oks, t0=1000.0)
    (o,) = an.outages(log)
    assert o.last_ok == 1000.0 + 0.75 + LAT  # reply to attempt 3
    assert o.first_fail == 1001.0  # attempt 4 sent
    assert o.last_fail == 1001.75  # attempt 7 sent
    assert o.first_ok_after == 1002.0 + LAT  # reply to attempt 8
    assert o.lost == 4
    assert o.flaps == 0
    assert o.duration == 1.25  # 1002.125 - 1000.875
    assert o.duration_lower == 1.125  # 1002.125 - 1001.0
    assert not o.open_start and not o.open_end
    assert o.start == o.last_ok and o.end == o.first_ok_after


def test_irregular_send_times_never_lost_times_interval():
    sends = [0.0, 0.5, 0.75, 2.0, 2.25, 5.0, 5.5, 6.0]
    log = mklog(sends, pattern("TTFFFTTT"))
    (o,) = an.outages(log)
    assert o.lost == 3
    assert o.last_ok == 0.625
    assert o.first_fail == 0.75
    assert o.last_fail == 2.25
    assert o.first_ok_after == 5.125
    assert o.duration == 4.5
    assert o.duration_lower == 4.375
    # the naive estimate (lost * nominal interval) would be 3 * 0.25 = 0.75 s
    assert o.duration != o.lost * 0.25


def test_no_loss_and_empty_log():
    log = mklog(regular(10), [True] * 10)
    assert an.outages(log) == []
    assert an.outages([]) == []
    d = an.downtime(log, fault_time=1.0)
    assert d.downtime_s == 0.0
    assert d.lost_probes == 0
    assert d.outage is None and not d.seen
    assert d.detect_s is None and d.recover_s is None
    assert d.recovered


def test_loss_at_start_is_open_start():
    log = mklog(regular(6), pattern("FFTTTT"), t0=10.0)
    (o,) = an.outages(log)
    assert o.open_start and not o.open_end
    assert o.last_ok is None
    assert o.first_fail == 10.0
    assert o.first_ok_after == 10.5 + LAT
    assert o.duration == 0.625  # measured from the first attempt's sent
    assert o.duration_lower == 0.625
    assert o.start == 10.0
    assert o.lost == 2


def test_loss_at_end_is_open_end():
    log = mklog(regular(6), pattern("TTTFFF"), t0=10.0)
    (o,) = an.outages(log)
    assert o.open_end and not o.open_start
    assert o.first_ok_after is None and o.end is None
    assert o.duration is None
    assert o.last_ok == 10.5 + LAT
    assert o.first_fail == 10.75
    assert o.duration_lower == 0.5  # 11.25 (last attempt) - 10.75: at least this long
    assert o.lost == 3


def test_all_failed():
    (o,) = an.outages(mklog(regular(3), pattern("FFF")))
    assert o.open_start and o.open_end
    assert o.lost == 3 and o.duration is None and o.duration_lower == 0.5


def test_flapping_without_settle_gives_two_outages():
    log = mklog(regular(13), pattern("TTFFTFFTTTTTT"))
    a, b = an.outages(log)
    assert (a.lost, b.lost) == (2, 2)
    assert a.first_ok_after == 1.0 + LAT
    assert b.last_ok == 1.0 + LAT
    assert b.first_ok_after == 1.75 + LAT


@pytest.mark.parametrize("kw", [{"settle": 0.5}, {"settle_n": 2}, {"settle": 0.25, "settle_n": 1}])
def test_flapping_with_settle_is_one_outage(kw):
    log = mklog(regular(13), pattern("TTFFTFFTTTTTT"))
    (o,) = an.outages(log, **kw)
    assert o.lost == 4
    assert o.flaps == 1
    assert o.last_ok == 0.25 + LAT
    assert o.first_fail == 0.5
    assert o.last_fail == 1.5
    assert o.first_ok_after == 1.75 + LAT
    assert o.duration == 1.5


def test_settle_just_shorter_than_flap_keeps_two_outages():
    # the flap at t=1.0 is followed by a failure at 1.25: settle < 0.25 accepts it
    log = mklog(regular(13), pattern("TTFFTFFTTTTTT"))
    assert len(an.outages(log, settle=0.2)) == 2


def test_settle_n_counts_consecutive_successes():
    log = mklog(regular(9), pattern("TFTTFTTTT"))
    assert len(an.outages(log, settle_n=2)) == 2
    (o,) = an.outages(log, settle_n=3)
    assert o.lost == 2 and o.flaps == 2
    assert o.first_ok_after == 1.25 + LAT


def test_success_near_end_of_log_counts_as_stable():
    log = mklog(regular(5), pattern("TTFFT"))
    (o,) = an.outages(log, settle=10.0, settle_n=5)
    assert not o.open_end
    assert o.first_ok_after == 1.0 + LAT


def test_multiple_outages_and_min_gap():
    oks = pattern("TTTFTTTTFFFFTTTTFFTTTT")
    log = mklog(regular(len(oks)), oks)
    os_ = an.outages(log)
    assert [o.lost for o in os_] == [1, 4, 2]
    assert [o.duration for o in os_] == [0.5, 1.25, 0.75]
    assert [o.first_fail for o in os_] == [0.75, 2.0, 4.0]
    # a single lost probe spans two gaps (0.5 s): min_gap above that drops it
    assert [o.lost for o in an.outages(log, min_gap=0.6)] == [4, 2]
    assert [o.lost for o in an.outages(log, min_gap=0.5)] == [1, 4, 2]
    assert [o.lost for o in an.outages(log, min_gap=1.0)] == [4]
    assert an.outages(log, min_gap=2.0) == []


def test_order_and_dataframe_input_do_not_matter():
    oks = pattern("TTTFTTTTFFFFTTTTFFTTTT")
    log = mklog(regular(len(oks)), oks)
    shuffled = log[:]
    random.Random(4).shuffle(shuffled)
    expected = an.outages(log)
    assert an.outages(shuffled) == expected
    assert an.outages(pd.DataFrame(shuffled)) == expected


def test_numpy_scalars_and_nan_recv_are_accepted():
    import numpy as np

    log = [
        {"seq": np.int64(0), "sent": np.float64(0.0), "recv": np.float64(0.125), "ok": np.True_},
        {"seq": np.int64(1), "sent": np.float64(0.25), "recv": np.nan, "ok": np.False_},
        {"seq": 2.0, "sent": 0.5, "recv": 0.625, "ok": True},
    ]
    (o,) = an.outages(log)
    assert (o.lost, o.duration) == (1, 0.5)


def test_failed_attempt_with_error_reply_time_is_ignored():
    log = mklog(regular(4), pattern("TFFT"))
    log[1]["recv"] = 0.3  # e.g. the time an ICMP error arrived
    (o,) = an.outages(log)
    assert o.last_ok == LAT and o.duration == 0.75


def test_slow_reply_before_outage_extends_last_ok():
    log = mklog(regular(6), pattern("TTFFTT"))
    log[0]["recv"] = 0.375 + 0.01  # attempt 0's reply arrives after attempt 1's
    (o,) = an.outages(log)
    assert o.last_ok == 0.385


def test_log_validation_errors_name_the_field():
    with pytest.raises(ValueError, match=r"seq=3.*'recv' is missing"):
        an.outages([{"seq": 3, "sent": 1.0, "recv": None, "ok": True}])
    with pytest.raises(ValueError, match=r"missing field 'sent'"):
        an.outages([{"seq": 1, "ok": True, "recv": 1.0}])
    with pytest.raises(ValueError, match=r"field 'ok' must be True or False"):
        an.outages([{"seq": 1, "sent": 1.0, "recv": 1.0, "ok": "yes"}])
    with pytest.raises(ValueError, match=r"field 'sent' must be a finite number"):
        an.outages([{"seq": 1, "sent": math.nan, "recv": 1.0, "ok": True}])
    with pytest.raises(ValueError, match="settle_n must be an integer >= 1"):
        an.outages([], settle_n=0)
    with pytest.raises(ValueError, match="min_gap must be"):
        an.outages([], min_gap=-1)
    with pytest.raises(TypeError, match="list of records"):
        an.outages({"seq": 1})


# ------------------------------------------------------------------ downtime


def three_outages():
    #              0         1         2
    #              012345678901234567890123456789
    oks = pattern("TTTTFFFFTTTTTTTTFFTTTTTTFFFTTT")
    # outages: fails 4..7 (sent 101.0..101.75), 16..17 (104.0..104.25), 24..26 (106.0..106.5);
    # the last outage ends with the reply to attempt 27: 106.75 + 0.125
    return mklog(regular(len(oks)), oks, t0=100.0)


def test_downtime_fault_before_outage():
    d = an.downtime(three_outages(), fault_time=100.9)
    assert d.outage.first_fail == 101.0
    assert d.downtime_s == 1.25
    assert d.lost_probes == 4
    assert d.detect_s == pytest.approx(0.1)
    assert d.recover_s == pytest.approx(102.125 - 100.9)
    assert d.recovered and d.seen


def test_downtime_fault_inside_outage():
    d = an.downtime(three_outages(), fault_time=101.5)
    assert d.outage.first_fail == 101.0
    assert d.detect_s == -0.5  # failures began before the recorded fault time
    assert d.downtime_s == 1.25


def test_downtime_fault_between_outages_picks_the_next():
    d = an.downtime(three_outages(), fault_time=102.5)
    assert d.outage.first_fail == 104.0
    assert d.lost_probes == 2
    assert d.downtime_s == 0.75
    assert d.detect_s == 1.5


def test_downtime_fault_after_last_outage_is_zero():
    d = an.downtime(three_outages(), fault_time=107.0)
    assert d.downtime_s == 0.0 and d.lost_probes == 0 and d.outage is None
    # still inside the last outage until its reply arrives at 106.875
    d = an.downtime(three_outages(), fault_time=106.75)
    assert d.lost_probes == 3 and d.downtime_s == 1.0 and d.detect_s == -0.75


def test_downtime_without_fault_time_takes_first_outage():
    d = an.downtime(three_outages())
    assert d.outage.first_fail == 101.0 and d.detect_s is None and d.recover_s is None


def test_downtime_window():
    log = three_outages()
    assert an.downtime(log, fault_time=102.5, window=1.0).downtime_s == 0.0
    assert an.downtime(log, fault_time=102.5, window=1.5).lost_probes == 2
    with pytest.raises(ValueError, match="window needs a fault_time"):
        an.downtime(log, window=1.0)


def test_downtime_settle_merges_flap():
    oks = pattern("TTTFFTFFTTTTTTT")
    log = mklog(regular(len(oks)), oks)
    assert an.downtime(log, 0.6).lost_probes == 2
    d = an.downtime(log, 0.6, settle=0.5)
    assert d.lost_probes == 4
    assert d.outage.flaps == 1
    assert d.downtime_s == 1.5  # 2.125 - 0.625


def test_downtime_pick_longest_skips_a_stall_before_the_failover():
    # a one-attempt stall, quick answers, then the failover's long outage, then a later blip
    oks = pattern("TTFTTTTFFFFFFTTTFTT")
    log = mklog(regular(len(oks)), oks)
    first = an.downtime(log, 0.25)
    assert first.lost_probes == 1
    d = an.downtime(log, 0.25, pick="longest")
    assert d.lost_probes == 6 and d.outage.first_fail == 1.75
    assert d.downtime_s == 1.75  # 3.375 - 1.625
    assert an.downtime(log, 0.25, pick="longest", window=1.0).lost_probes == 1  # the failover is later
    with pytest.raises(ValueError, match="pick must be"):
        an.downtime(log, 0.25, pick="last")


def test_downtime_log_must_cover_fault_time():
    log = three_outages()  # attempts sent 100.0 .. 107.25
    with pytest.raises(ValueError, match=r"does not cover fault_time=99\.0.*100\.0 \.\. 107\.25"):
        an.downtime(log, fault_time=99.0)
    with pytest.raises(ValueError, match=r"does not cover fault_time=200\.0"):
        an.downtime(log, fault_time=200.0)
    with pytest.raises(ValueError, match="log is empty"):
        an.downtime([], fault_time=1.0)
    # the edges are covered
    assert an.downtime(log, fault_time=100.0).lost_probes == 4
    assert an.downtime(log, fault_time=107.25).downtime_s == 0.0


def test_downtime_open_end():
    log = mklog(regular(6), pattern("TTTFFF"))
    with pytest.raises(ValueError, match=r"has not ended.*allow_open=True"):
        an.downtime(log, fault_time=0.6)
    d = an.downtime(log, fault_time=0.6, allow_open=True)
    assert not d.recovered
    assert d.downtime_s is None and d.recover_s is None
    assert d.lost_probes == 3
    assert d.detect_s == pytest.approx(0.15)


# ------------------------------------------------------------------ clock offsets


def test_align_shifts_list_and_frame_without_mutating():
    log = mklog(regular(4), pattern("TFFT"))
    shifted = an.align(log, 10.0)
    assert [r["sent"] for r in shifted] == [10.0, 10.25, 10.5, 10.75]
    assert [r["recv"] for r in shifted] == [10.125, None, None, 10.875]
    assert log[0]["sent"] == 0.0  # original untouched
    df = pd.DataFrame(log)
    sdf = an.align(df, -2.0)
    assert isinstance(sdf, pd.DataFrame)
    assert sdf["sent"].tolist() == [-2.0, -1.75, -1.5, -1.25]
    assert sdf["recv"].isna().tolist() == [False, True, True, False]
    assert df["sent"].iloc[0] == 0.0
    with pytest.raises(ValueError, match="offset_s"):
        an.align(log, math.inf)


def test_clock_offset_between_lab_and_probe_host():
    # the probe host's clock is 2.5 s ahead of the lab host that injected the fault
    ahead = 2.5
    oks = pattern("TTTTFFFFTTTT")
    probe_log = mklog(regular(len(oks)), oks, t0=1000.0 + ahead)
    fault = 1000.875  # lab clock
    with pytest.raises(ValueError, match="does not cover"):
        an.downtime(probe_log[:6], fault_time=fault)  # 1002.5 .. 1003.75 on its own clock
    d = an.downtime(an.align(probe_log, -ahead), fault_time=fault)
    assert d.detect_s == 0.125
    assert d.downtime_s == 1.25
    assert d.outage.first_fail == 1001.0
    # equivalently, the fault time can be moved onto the probe's clock instead
    assert an.downtime(probe_log, fault_time=fault + ahead).detect_s == 0.125


# ------------------------------------------------------------------ phases


EVENTS = [
    (10.0, "kernel: eth0 link down"),
    (12.0, "heartbeat: WARN: node alice is dead"),
    (12.5, "heartbeat: info: Resources being acquired from alice"),
    (13.0, "IPaddr[123]: INFO: ip addr add 10.0.0.10 ... start"),
    (15.0, "drbd: r0: operational after recovery"),
    (30.0, "heartbeat: node alice is dead"),  # after end: ignored
]
MARKS = {
    "detection": r"node .* is dead",
    "takeover": r"IPaddr.* start",
    "reconnect": r"operational after recovery",
}


def test_phases_all_found():
    ps = an.phases(EVENTS, MARKS, start=9.0, end=16.0)
    assert [(p.name, p.start, p.end, p.duration, p.found) for p in ps] == [
        ("detection", 9.0, 12.0, 3.0, True),
        ("takeover", 12.0, 13.0, 1.0, True),
        ("reconnect", 13.0, 15.0, 2.0, True),
        ("rest", 15.0, 16.0, 1.0, True),
    ]
    assert sum(p.duration for p in ps) == 16.0 - 9.0


def test_phases_missing_mark_is_reported_not_zero():
    events = [e for e in EVENTS if "IPaddr" not in e[1]]
    ps = an.phases(events, MARKS, start=9.0, end=16.0, final="client")
    assert [(p.name, p.start, p.end, p.duration, p.found) for p in ps] == [
        ("detection", 9.0, 12.0, 3.0, True),
        ("takeover", 12.0, None, None, False),
        ("reconnect", 12.0, 15.0, 3.0, True),
        ("client", 15.0, 16.0, 1.0, True),
    ]


def test_phases_order_matters_and_window_applies():
    # the only "dead" line inside the window comes after the takeover mark
    events = [(13.0, "IPaddr start"), (14.0, "node bob is dead"), (8.0, "node x is dead")]
    ps = an.phases(events, {"detection": r"is dead", "takeover": r"IPaddr.* start"}, 9.0, 20.0)
    assert [(p.name, p.end, p.found) for p in ps] == [
        ("detection", 14.0, True),
        ("takeover", None, False),  # its line was before the detection mark
        ("rest", 20.0, True),
    ]
    assert ps[-1].start == 14.0


def test_phases_one_line_cannot_end_two_phases():
    events = [(1.0, "node a is dead; IPaddr start")]
    ps = an.phases(events, {"d": "dead", "t": "IPaddr"}, 0.0, 2.0)
    assert [p.found for p in ps] == [True, False, True]


def test_phases_compiled_patterns_and_unsorted_events():
    events = list(reversed(EVENTS))
    marks = {k: re.compile(v) for k, v in MARKS.items()}
    ps = an.phases(events, marks, 9.0, 16.0)
    assert [p.end for p in ps] == [12.0, 13.0, 15.0, 16.0]


def test_phases_errors():
    with pytest.raises(ValueError, match="end=1.0 is before start=2.0"):
        an.phases([], MARKS, 2.0, 1.0)
    with pytest.raises(ValueError, match="mark 'bad' has an invalid regex"):
        an.phases([], {"bad": "("}, 0.0, 1.0)
    with pytest.raises(ValueError, match="marks is empty"):
        an.phases([], {}, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"events\[0\] must be a \(time, line\) pair"):
        an.phases(["oops"], MARKS, 0.0, 1.0)
    with pytest.raises(ValueError, match="final phase name 'detection'"):
        an.phases([], MARKS, 0.0, 1.0, final="detection")


# ------------------------------------------------------------------ write loss


def writes(n, ok=None):
    ok = ok or [True] * n
    return mklog(regular(n), ok)


def test_lost_writes_none_lost():
    w = an.lost_writes(writes(5), present=range(5))
    assert (w.acked, w.lost_acked, w.lost_seqs, w.rpo_s) == (5, 0, [], 0.0)
    assert w.corrupt_seqs == [] and w.unacked_present == []
    assert w.last_acked_at == 1.0 + LAT


def test_lost_writes_tail_lost():
    w = an.lost_writes(writes(8), present={0, 1, 2, 3, 4})
    assert w.lost_acked == 3
    assert w.lost_seqs == [5, 6, 7]
    assert w.consistent_at == 1.0 + LAT  # ack of write 4
    assert w.last_acked_at == 1.75 + LAT  # ack of write 7
    assert w.rpo_s == 0.75


def test_lost_writes_corrupt_and_hole():
    # write 2 is corrupt although later writes survived: consistent only up to write 1
    w = an.lost_writes(writes(6), present=range(6), corrupt=[2, 99])
    assert w.lost_seqs == [2] and w.corrupt_seqs == [2]
    assert w.consistent_at == 0.25 + LAT
    assert w.rpo_s == 1.0  # 1.25 - 0.25


def test_lost_writes_unacked_present_is_harmless():
    log = writes(5, pattern("TTTFF"))
    w = an.lost_writes(log, present=[0, 1, 2, 3, 42])
    assert w.acked == 3 and w.lost_acked == 0 and w.rpo_s == 0.0
    assert w.unacked_present == [3, 42]


def test_lost_writes_everything_lost():
    w = an.lost_writes(writes(4), present=[])
    assert w.lost_seqs == [0, 1, 2, 3]
    assert w.consistent_at is None
    assert w.rpo_s == 0.75 + LAT  # from the first write's sent to the last ack


def test_lost_writes_accepts_dataframe_and_validates():
    w = an.lost_writes(pd.DataFrame(writes(3)), present=[0, 1])
    assert w.lost_seqs == [2]
    dup = writes(2)
    dup[1]["seq"] = 0
    with pytest.raises(ValueError, match="seq 0 appears twice"):
        an.lost_writes(dup, present=[0])
    with pytest.raises(ValueError, match="present must hold integer seqs"):
        an.lost_writes(writes(2), present=["1"])


# ------------------------------------------------------------------ trials


def test_summarize():
    assert an.summarize([3, 1, 2, 10]) == {"min": 1.0, "median": 2.5, "max": 10.0, "mean": 4.0, "n": 4}
    with pytest.raises(ValueError, match="values is empty"):
        an.summarize([])
    with pytest.raises(ValueError, match=r"values\[1\] is not a number"):
        an.summarize([1.0, None])


def test_trials_and_summary():
    df = an.trials(lambda i, base: {"downtime_s": base + i, "lost_probes": 2 * i}, 3, base=1.5)
    assert list(df.columns) == ["trial", "downtime_s", "lost_probes", "error"]
    assert df["trial"].tolist() == [0, 1, 2]
    assert df["downtime_s"].tolist() == [1.5, 2.5, 3.5]
    assert df["error"].isna().all()
    s = an.trial_summary(df)
    assert s.loc["downtime_s", "min"] == 1.5
    assert s.loc["downtime_s", "median"] == 2.5
    assert s.loc["downtime_s", "max"] == 3.5
    assert s.loc["lost_probes", "max"] == 4
    assert list(s.index) == ["downtime_s", "lost_probes"]


def failing(i):
    if i == 1:
        raise RuntimeError("vm did not boot")
    return {"downtime_s": float(i)}


def test_trials_records_errors_then_raises():
    calls = []

    def fn(i):
        calls.append(i)
        return failing(i)

    with pytest.raises(an.TrialsError, match=r"1 of 3 trials failed \(trials \[1\]\).*vm did not boot") as ei:
        an.trials(fn, 3)
    assert calls == [0, 1, 2]  # the other trials still ran
    frame = ei.value.frame
    assert frame.loc[1, "error"] == "RuntimeError: vm did not boot"
    assert isinstance(ei.value.__cause__, RuntimeError)
    assert frame["downtime_s"].tolist()[0::2] == [0.0, 2.0]


def test_trials_without_raising():
    df = an.trials(failing, 3, raise_errors=False)
    assert df["error"].notna().tolist() == [False, True, False]
    s = an.trial_summary(df)
    assert s.loc["downtime_s"].to_dict() == {"min": 0.0, "median": 1.0, "max": 2.0, "mean": 1.0, "n": 2}


def test_trials_bad_returns():
    df = an.trials(lambda i: 5, 1, raise_errors=False)
    assert df.loc[0, "error"].startswith("TypeError: trial function must return a dict")
    df = an.trials(lambda i: {"trial": 1}, 1, raise_errors=False)
    assert "reserved key" in df.loc[0, "error"]
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        an.trials(failing, 0)


# ------------------------------------------------------------------ properties

FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
EPOCH = 1_700_000_000.0


@st.composite
def jittered_sends(draw, min_n=5, max_n=200):
    """Send times of a real probe: every 11-29 ms at a nominal 10 ms."""
    gaps = draw(st.lists(st.floats(0.011, 0.029), min_size=min_n - 1, max_size=max_n - 1))
    t, sends = 0.0, [0.0]
    for g in gaps:
        t += g
        sends.append(t)
    return sends


@st.composite
def random_logs(draw):
    sends = draw(jittered_sends())
    oks = draw(st.lists(st.booleans(), min_size=len(sends), max_size=len(sends)))
    lats = draw(st.lists(st.floats(0.0005, 0.005), min_size=len(sends), max_size=len(sends)))
    return [
        {"seq": i, "sent": EPOCH + s, "recv": EPOCH + s + lat if ok else None, "ok": ok}
        for i, (s, ok, lat) in enumerate(zip(sends, oks, lats))
    ]


settle_args = st.fixed_dictionaries({"settle": st.sampled_from([0.0, 0.03, 0.1]), "settle_n": st.integers(1, 4)})


@FAST
@given(random_logs(), settle_args)
def test_prop_outages_ordered_disjoint_and_within_span(log, kw):
    os_ = an.outages(log, **kw)
    span = max(r["recv"] or r["sent"] for r in log) - min(r["sent"] for r in log)
    assert sum(o.duration or 0.0 for o in os_) <= span + 1e-9
    for o in os_:
        assert o.lost >= 1
        assert o.first_fail <= o.last_fail
        if o.duration is not None:
            assert o.duration >= 0 and o.duration_lower <= o.duration + 1e-12
            assert o.end >= o.start
    for a, b in zip(os_, os_[1:]):
        assert a.end is not None
        assert a.end <= b.start  # no overlap
        assert a.last_fail < b.first_fail
    # only the first can be open at the start, only the last at the end
    assert all(not o.open_start for o in os_[1:])
    assert all(not o.open_end for o in os_[:-1])


@FAST
@given(random_logs(), settle_args)
def test_prop_lost_equals_failed_attempts(log, kw):
    os_ = an.outages(log, **kw)
    assert sum(o.lost for o in os_) == sum(not r["ok"] for r in log)
    # with min_gap some outages may be dropped, never invented
    assert sum(o.lost for o in an.outages(log, min_gap=0.05, **kw)) <= sum(o.lost for o in os_)


@FAST
@given(random_logs(), st.floats(-1e5, 1e5), st.randoms(use_true_random=False))
def test_prop_shift_and_order_invariance(log, c, rnd):
    base = an.outages(log)
    shuffled = log[:]
    rnd.shuffle(shuffled)
    assert an.outages(shuffled) == base
    moved = an.outages(an.align(shuffled, c))
    assert len(moved) == len(base)
    for o, m in zip(base, moved):
        assert (m.lost, m.flaps, m.open_start, m.open_end) == (o.lost, o.flaps, o.open_start, o.open_end)
        assert m.first_fail == pytest.approx(o.first_fail + c, abs=1e-6)
        assert m.start == pytest.approx(o.start + c, abs=1e-6)
        if o.end is not None:
            assert m.end == pytest.approx(o.end + c, abs=1e-6)
            assert m.duration == pytest.approx(o.duration, abs=1e-6)


@st.composite
def one_down_interval(draw):
    """Send times and a true down interval [d0, d1) with attempts before, inside and after."""
    sends = draw(jittered_sends(min_n=10, max_n=300))
    i = draw(st.integers(1, len(sends) - 3))  # first failing attempt index
    j = draw(st.integers(i, len(sends) - 2))  # last failing attempt index
    # the true edges fall anywhere in the gaps around the failing run
    u = draw(st.floats(0.01, 0.99))
    v = draw(st.floats(0.01, 0.99))
    d0 = sends[i] - u * (sends[i] - sends[i - 1])
    d1 = sends[j] + v * (sends[j + 1] - sends[j])
    return sends, d0, d1


@FAST
@given(one_down_interval(), st.floats(0.0005, 0.005))
def test_prop_duration_brackets_true_outage(case, lat):
    sends, d0, d1 = case
    oks = [not (d0 <= s < d1) for s in sends]
    log = [{"seq": k, "sent": s, "recv": s + lat if ok else None, "ok": ok} for k, (s, ok) in enumerate(zip(sends, oks))]
    (o,) = an.outages(log)
    true = d1 - d0
    fails = [k for k, ok in enumerate(oks) if not ok]
    i, j = fails[0], fails[-1]
    gap_before = sends[i] - sends[i - 1]  # the gap in which the service died
    gap_after = sends[j + 1] - sends[j]  # the gap in which it came back
    assert o.lost == j - i + 1
    # duration never under-estimates, and over-estimates by less than one gap per edge
    assert true <= o.duration + 1e-9
    assert o.duration - true < gap_before + gap_after + 1e-9
    # duration_lower is within one inter-attempt gap (plus the reply latency) of the truth
    assert -gap_before - 1e-9 < o.duration_lower - true < gap_after + lat + 1e-9
    # and the fault/recovery is located: detect within one gap
    d = an.downtime(log, fault_time=d0)
    assert 0 <= d.detect_s < gap_before + 1e-9
    assert d.downtime_s == o.duration


@FAST
@given(random_logs(), st.sampled_from([0.03, 0.1]))
def test_prop_settle_leaves_quiet_time_after_each_outage(log, settle):
    os_ = an.outages(log, settle=settle)
    by_recv = {r["recv"]: r["sent"] for r in log if r["ok"]}
    for a, b in zip(os_, os_[1:]):
        # the success that ended a is followed by `settle` seconds without failure
        assert b.first_fail > by_recv[a.first_ok_after] + settle
    # settling can only merge outages, never add failures
    assert len(os_) <= len(an.outages(log))


def test_with_timeout_turns_a_blocked_write_into_an_outage():
    # 10 Hz writes; the write sent at 1.0 blocks until 4.0 (a failover), then fast again
    log = [{"seq": i, "sent": i / 10, "recv": i / 10 + 0.002, "ok": True} for i in range(10)]
    log.append({"seq": 10, "sent": 1.0, "recv": 4.0, "ok": True})
    log += [{"seq": 11 + i, "sent": 4.0 + i / 10, "recv": 4.0 + i / 10 + 0.002, "ok": True} for i in range(10)]
    assert an.downtime(log, 1.0).downtime_s == 0.0  # no failed attempt: the stall is invisible
    d = an.downtime(an.with_timeout(log, 0.5), 1.0)
    assert d.lost_probes == 1
    assert d.downtime_s == pytest.approx(4.002 - 0.902)
    df = an.with_timeout(pd.DataFrame(log), 0.5)
    assert int((~df.ok).sum()) == 1
    with pytest.raises(ValueError):
        an.with_timeout(log, 0)


def test_downtime_can_ignore_a_stall_at_the_very_end_of_the_log():
    """A probe that saw the recovery and was then stopped in the middle of one slow write: the
    trailing open outage is a stall, not the failover (with trailing="ignore")."""
    log = [{"seq": i, "sent": float(i), "recv": float(i) + 0.01, "ok": True} for i in range(10)]
    log[3]["ok"] = log[4]["ok"] = False  # the failover: 3..4
    log[9]["ok"] = False  # the last attempt failed: an open outage
    with pytest.raises(ValueError, match="has not ended"):
        an.downtime(log, 2.5, pick="longest")
    d = an.downtime(log, 2.5, pick="longest", trailing="ignore")
    assert d.outage.first_fail == 3.0 and d.downtime_s == pytest.approx(5.01 - 2.01)
    only_open = [dict(r, ok=r["seq"] < 5) for r in log]
    with pytest.raises(ValueError, match="has not ended"):
        an.downtime(only_open, 2.5, pick="longest", trailing="ignore")
