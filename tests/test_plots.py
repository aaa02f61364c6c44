"""Figures of hautils.plots, checked on their data and layout (nothing is rendered)."""

import json
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hautils import analysis as an
from hautils import availability as av
from hautils import plots as pl
from hautils import results as rs
from hautils import topology as topo_mod

# Times are multiples of 1/8 s so expected values are exact in binary floating point.
STEP = 0.125
LAT = 0.125
T0 = 1_700_000_000.0  # epoch-like times, as the probes write them


def mklog(oks, step=STEP, lat=LAT, t0=T0, errs=None):
    """A probe log: attempt i sent at t0 + i*step, replies ``lat`` later when ok."""
    return [
        {
            "seq": i,
            "sent": t0 + i * step,
            "recv": (t0 + i * step + lat) if ok else None,
            "ok": ok,
            "err": None if ok else (errs[i] if errs else "timeout"),
        }
        for i, ok in enumerate(oks)
    ]


def outage_log():
    """200 attempts; 80..143 fail: the client saw no reply from 10.0 s to 18.125 s after t0."""
    return mklog([not (80 <= i <= 143) for i in range(200)])


FAULT = T0 + 10.0  # fault injected at the last answered request's reply
FAULT_END = T0 + 12.0


def shapes_named(fig, name):
    return [s for s in fig.layout.shapes if s.name == name]


def annotations_named(fig, name):
    return [a for a in fig.layout.annotations if a.name == name]


def json_strings(obj, key=None):
    """Every string in a figure's JSON, except the base64 payloads of numeric arrays."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "bdata":
                continue
            yield k
            yield from json_strings(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from json_strings(v, key)
    elif isinstance(obj, str):
        yield obj


# ------------------------------------------------------------------ style


def test_template_registered_and_applied():
    assert pio.templates["halab"] is pl.TEMPLATE or pio.templates["halab"] == pl.TEMPLATE
    assert list(pl.TEMPLATE.layout.colorway) == list(pl.PALETTE.values())
    assert all(c.startswith("#") and len(c) == 7 for c in pl.PALETTE.values())
    assert pl.TEMPLATE.layout.font.family == pl.FONT_FAMILY
    assert pl.FONT_FAMILY.rstrip().endswith("sans-serif")  # a generic family: always resolvable
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    assert pl.apply_style(fig) is fig
    assert fig.layout.template.layout.font.family == pl.FONT_FAMILY


def test_format_seconds():
    assert pl._fmt_s(8.125) == "8.1 s"
    assert pl._fmt_s(0.85) == "850 ms"
    assert pl._fmt_s(0.9996) == "1.0 s"
    assert pl._fmt_s(315.36) == "5.26 min"


# ------------------------------------------------------------------ timeline


def test_timeline_marks_fault_and_measured_outage():
    log = outage_log()
    fig = pl.timeline(log, fault_time=FAULT, fault_end=FAULT_END)

    (o,) = an.outages(log)
    assert o.duration == 8.125
    # the annotation shows the duration analysis measured, not lost * interval (8.0 s)
    (ann,) = annotations_named(fig, "outage 1")
    assert "8.1 s" in ann.text and f"{o.duration:.1f} s" in ann.text
    assert f"{o.lost * STEP:.1f} s" not in ann.text
    assert "8.1 s" in fig.layout.title.text and "64 of 200" in fig.layout.title.text

    # the fault band: a rect over the whole height from fault to fault end, x relative to the fault
    (fault,) = shapes_named(fig, "fault")
    assert (fault.type, fault.yref, fault.y0, fault.y1) == ("rect", "paper", 0, 1)
    assert (fault.x0, fault.x1) == (0.0, 2.0)

    # the outage spans last reply .. first reply after, relative to the fault
    (span,) = shapes_named(fig, "outage 1")
    assert (span.x0, span.x1) == (o.start - FAULT, o.end - FAULT) == (0.0, 8.125)
    assert ann.x == pytest.approx(8.125 / 2)


def test_timeline_traces_hold_every_attempt():
    log = outage_log()
    fig = pl.timeline(log, fault_time=FAULT)
    assert [t.type for t in fig.data] == ["scatter", "scatter"]
    reply, lost = fig.data
    oks = [r for r in log if r["ok"]]
    fails = [r for r in log if not r["ok"]]
    assert len(reply.x) == len(oks) == 136 and len(lost.x) == len(fails) == 64
    assert list(reply.x) == [r["sent"] - FAULT for r in oks]
    assert set(np.asarray(reply.y).tolist()) == {LAT * 1000}  # rtt in ms
    assert list(lost.x) == [r["sent"] - FAULT for r in fails]
    assert set(np.asarray(lost.y).tolist()) == {0.0}
    assert lost.marker.symbol != reply.marker.symbol
    assert lost.yaxis != reply.yaxis  # failures sit in their own "lost" band
    assert fig.layout[reply.yaxis.replace("y", "yaxis")].type == "log"
    assert list(reply.customdata) == [r["seq"] for r in oks]


def test_timeline_fault_without_end_is_a_line_and_relative_to_moves_x():
    log = outage_log()
    fig = pl.timeline(log, fault_time=FAULT, relative_to=T0)
    (fault,) = shapes_named(fig, "fault")
    assert fault.type == "line" and fault.x0 == fault.x1 == 10.0
    assert fig.data[0].x[0] == 0.0
    (span,) = shapes_named(fig, "outage 1")
    assert (span.x0, span.x1) == (10.0, 18.125)


def test_timeline_dataframe_same_as_list_and_deterministic():
    log = outage_log()
    a = pl.timeline(log, fault_time=FAULT, fault_end=FAULT_END).to_json()
    b = pl.timeline(pd.DataFrame(log), fault_time=FAULT, fault_end=FAULT_END).to_json()
    c = pl.timeline(list(reversed(log)), fault_time=FAULT, fault_end=FAULT_END).to_json()
    assert a == b == c


def test_timeline_error_kinds_get_their_own_markers():
    oks = [not (20 <= i < 40) for i in range(60)]
    errs = {i: ("timeout" if i < 30 else "connection refused") for i in range(20, 40)}
    fig = pl.timeline(mklog(oks, errs=errs))
    lost = fig.data[1:]
    assert [t.name for t in lost] == ["lost: connection refused (10)", "lost: timeout (10)"]
    assert lost[0].marker.symbol != lost[1].marker.symbol
    assert lost[0].marker.color != lost[1].marker.color
    assert sorted(np.asarray(lost[0].y).tolist() + np.asarray(lost[1].y).tolist()) == [0.0] * 10 + [1.0] * 10


def test_timeline_open_outage_is_labelled_as_a_lower_bound():
    log = mklog([i < 50 for i in range(80)])
    fig = pl.timeline(log)
    (o,) = an.outages(log)
    (ann,) = annotations_named(fig, "outage 1")
    assert o.open_end and ann.text == f"≥ {o.duration_lower:.1f} s (not recovered)"


def test_timeline_phases_strip():
    log = outage_log()
    events = [(T0 + 13.0, "node1 declared dead"), (T0 + 15.5, "resource ip started")]
    marks = {"detection": "dead", "takeover": "started", "arp": "gratuitous arp"}
    ph = an.phases(events, marks, FAULT, T0 + 18.125)
    assert [p.found for p in ph] == [True, True, False, True]
    fig = pl.timeline(log, fault_time=FAULT, phases=ph)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == ["detection", "takeover", "rest"]
    assert [b.x[0] for b in bars] == [3.0, 2.5, 2.625]
    assert [b.base[0] for b in bars] == [0.0, 3.0, 5.5]
    assert bars[0].text[0] == "3.0 s detection"
    # the phase after the missing mark absorbed it: drawn hatched, naming both
    assert bars[2].text[0] == "2.6 s arp + rest"
    assert bars[2].marker.pattern.shape == "/"
    assert bars[0].marker.pattern.shape is None


def test_timeline_large_log_is_thinned_but_measured_in_full():
    n = 30_000
    oks = [not (12_000 <= i < 12_800) for i in range(n)]
    log = mklog(oks, step=0.01, lat=0.001)
    log[20_000]["recv"] = log[20_000]["sent"] + 0.75  # one slow reply: must survive thinning
    t = time.perf_counter()
    fig = pl.timeline(log, fault_time=log[12_000]["sent"], max_points=4_000)
    assert time.perf_counter() - t < 5
    reply, lost = fig.data
    assert len(reply.x) <= 4_000 and "of 29,200 shown" in reply.name
    assert max(reply.y) == pytest.approx(750.0)
    assert len(lost.x) == 800  # under the limit: all kept
    (o,) = an.outages(log)
    (ann,) = annotations_named(fig, "outage 1")
    assert ann.text == f"{o.duration:.1f} s" == "8.0 s"
    assert pl.timeline(log).data[0].type == "scatter"  # thinned to few points: SVG
    big = pl.timeline(log, max_points=50_000)  # above GL_THRESHOLD points: WebGL
    assert big.data[0].type == "scattergl" and len(big.data[0].x) == 29_200


def test_timeline_rejects_bad_input():
    log = outage_log()
    with pytest.raises(ValueError, match="fault_end needs a fault_time"):
        pl.timeline(log, fault_end=FAULT_END)
    with pytest.raises(ValueError, match="before fault_time"):
        pl.timeline(log, fault_time=FAULT_END, fault_end=FAULT)
    bad = [dict(r) for r in log]
    bad[3]["sent"] = "soon"
    with pytest.raises(ValueError, match="sent"):
        pl.timeline(bad)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=300),
    st.integers(4, 40),
)
def test_thin_keeps_edges_and_extremes(ys, max_points):
    y = np.array(ys)
    x = np.arange(len(y), dtype=float)
    idx = pl._thin(x, y, max_points)
    assert list(idx) == sorted(set(idx.tolist()))
    assert len(idx) <= max(len(y) if len(y) <= max_points else max_points, 0)
    assert {0, len(y) - 1} <= set(idx.tolist())
    assert y[idx].max() == y.max() and y[idx].min() == y.min()


# ------------------------------------------------------------------ phase bars


def test_phase_bars_widths_are_durations():
    lab = an.phases([(13.0, "dead"), (15.0, "takeover")], {"detection": "dead", "takeover": "takeover"}, 10.0, 16.5)
    tuned = an.phases([(11.0, "dead")], {"detection": "dead", "takeover": "takeover"}, 10.0, 12.25)
    paper = {"detection": 5.0, "takeover": 2.0, "rest": 1.0}
    fig = pl.phase_bars({"this lab": lab, "tuned": tuned}, paper=paper)

    by_name = {t.name: t for t in fig.data}
    assert list(by_name) == ["detection", "takeover", "rest", "not seen"]
    det = by_name["detection"]
    assert list(det.y) == ["paper", "this lab", "tuned"]
    assert list(det.x) == [5.0, 3.0, 1.0] and list(det.base) == [0.0, 0.0, 0.0]
    assert list(det.text) == ["5.0 s detection", "3.0 s detection", "1.0 s detection"]
    tk = by_name["takeover"]
    assert list(zip(tk.y, tk.x, tk.base, strict=True)) == [("paper", 2.0, 5.0), ("this lab", 2.0, 3.0)]
    rest = by_name["rest"]
    assert list(zip(rest.y, rest.x, rest.base, strict=True)) == [("paper", 1.0, 7.0), ("this lab", 1.5, 5.0)]
    # tuned: no takeover mark, so its rest (1.25 s) covers both and is drawn "not seen"
    ns = by_name["not seen"]
    assert list(zip(ns.y, ns.x, ns.base, strict=True)) == [("tuned", 1.25, 1.0)]
    assert ns.text[0] == "1.2 s takeover + rest" and ns.marker.pattern.shape == "/"
    # every run's segments add up to its phases' total
    for run, ph in {"this lab": lab, "tuned": tuned}.items():
        total = sum(x for t in fig.data for y, x in zip(t.y, t.x, strict=True) if y == run)
        assert total == sum(p.duration for p in ph if p.found)
    assert list(fig.layout.yaxis.categoryarray) == ["paper", "this lab", "tuned"]
    assert fig.layout.yaxis.autorange == "reversed"  # first run on top


def test_phase_bars_trailing_missing_phase_and_errors():
    ph = [an.Phase("detection", 0.0, 2.0, 2.0), an.Phase("takeover", 2.0, None, None, found=False)]
    fig = pl.phase_bars({"run": ph})
    (ann,) = annotations_named(fig, "run: not seen")
    assert ann.text == "takeover: not seen" and ann.x == 2.0
    with pytest.raises(ValueError, match="already has a run named 'paper'"):
        pl.phase_bars({"paper": ph}, paper={"detection": 1.0})
    with pytest.raises(TypeError, match="Phase"):
        pl.phase_bars({"run": [("detection", 1.0)]})


# ------------------------------------------------------------------ trials


def test_trials_strip_values_bound_and_paper():
    vals = [4.25, 4.5, None, 3.75, 5.0]

    def trial(i):
        if vals[i] is None:
            raise RuntimeError("lab did not come up")
        return {"downtime_s": vals[i]}

    df = an.trials(trial, 5, raise_errors=False)
    fig = pl.trials_strip(df, "downtime_s", bound=[0, 16], paper=5)
    (box,) = fig.data
    assert box.type == "box" and box.boxpoints == "all"
    assert list(box.y) == [4.25, 4.5, 3.75, 5.0]  # the failed trial is left out
    assert box.name == "downtime (n=4)"
    assert list(box.hovertext) == ["trial 0", "trial 1", "trial 3", "trial 4"]
    (band,) = shapes_named(fig, "bound")
    assert (band.y0, band.y1) == (0.0, 16.0)
    (paper,) = shapes_named(fig, "paper")
    assert paper.y0 == paper.y1 == 5.0
    assert fig.layout.yaxis.title.text == "downtime (s)"
    lo, hi = fig.layout.yaxis.range
    assert lo <= 0 and hi >= 16


def test_trials_strip_groups_and_open_bound():
    df = pd.DataFrame(
        {"trial": range(6), "scenario": ["a", "a", "a", "b", "b", "b"], "downtime_s": [1, 2, 3, 10, 11, 12.5]}
    )
    fig = pl.trials_strip(df, "downtime_s", by="scenario", bound=[None, 14], paper={"b": 9})
    assert [t.name for t in fig.data] == ["a (n=3)", "b (n=3)"]
    assert list(fig.data[1].y) == [10, 11, 12.5]
    (band,) = shapes_named(fig, "bound")
    assert band.y1 == 14 and band.y0 == fig.layout.yaxis.range[0]  # open low side reaches the axis
    (paper,) = shapes_named(fig, "paper")
    assert (paper.x0, paper.x1, paper.y0) == (0.55, 1.45, 9.0)  # over group "b" only
    with pytest.raises(ValueError, match="no column 'rpo_s'"):
        pl.trials_strip(df, "rpo_s")
    with pytest.raises(ValueError, match="not a group"):
        pl.trials_strip(df, "downtime_s", by="scenario", paper={"c": 1})


# ------------------------------------------------------------------ paper vs lab

ENTRIES = [
    {"scenario": "heartbeat-power", "measure": "downtime_s", "unit": "s", "values": [4.1, 4.6, 3.9],
     "paper": 5, "bound": [0, 16], "settings": {}},
    {"scenario": "heartbeat-cable", "measure": "downtime_s", "unit": "s", "values": [7.0, 8.5, 7.5],
     "paper": None, "bound": [0, 16], "settings": {}},
    {"scenario": "drbd-power", "measure": "lost_acked_writes", "unit": "writes", "values": [0, 0, 2],
     "paper": 0, "bound": [0, None], "settings": {}},
]  # fmt: skip


def _check_paper_vs_lab(fig):
    assert len(fig.data) == 4  # paper + lab bars for each of the 2 measures
    paper, lab = fig.data[0], fig.data[1]
    assert list(lab.x) == ["heartbeat-power", "heartbeat-cable"]
    assert list(lab.y) == [4.1, 7.5]
    assert list(paper.y) == [5.0, None]  # no paper value: lab bar only
    assert paper.text[1] == ""
    # error bars go from min to max (asymmetric around the median)
    assert lab.error_y.symmetric is False
    assert np.allclose(np.asarray(lab.y) + lab.error_y.array, [4.6, 8.5])
    assert np.allclose(np.asarray(lab.y) - lab.error_y.arrayminus, [3.9, 7.0])
    w_paper, w_lab = fig.data[2], fig.data[3]
    assert (w_paper.xaxis, w_lab.xaxis) == ("x2", "x2")
    assert list(w_lab.y) == [0.0] and list(w_lab.error_y.array) == [2.0] and list(w_lab.error_y.arrayminus) == [0.0]
    assert list(w_paper.y) == [0.0]
    assert [a.text for a in fig.layout.annotations] == ["downtime (s)", "lost acked writes (writes)"]
    assert [t.showlegend for t in fig.data] == [True, True, False, False]
    assert "not reported" in lab.hovertext[1]


def test_paper_vs_lab_from_entries_and_from_load_all(tmp_path):
    _check_paper_vs_lab(pl.paper_vs_lab(ENTRIES))
    res = rs.Results("ch03-heartbeat", root=tmp_path)
    for e in ENTRIES:
        res.record(e["scenario"], e["measure"], e["values"], unit=e["unit"], paper=e["paper"], bound=e["bound"])
    res.save()
    _check_paper_vs_lab(pl.paper_vs_lab(rs.load_all(tmp_path)))
    _check_paper_vs_lab(pl.paper_vs_lab(res))


def test_paper_vs_lab_many_measures_fit_one_figure():
    # every chapter adds measures: 13 panels (7 rows) once failed plotly's spacing limit
    many = [dict(ENTRIES[0], measure=f"m{i}", unit="s") for i in range(13)]
    fig = pl.paper_vs_lab(many)
    assert len({t.text for t in fig.layout.annotations}) == 13


def test_paper_vs_lab_rejects_bad_entries():
    with pytest.raises(ValueError, match="no entries"):
        pl.paper_vs_lab([])
    with pytest.raises(ValueError, match="values"):
        pl.paper_vs_lab([dict(ENTRIES[0], values=[])])


# ------------------------------------------------------------------ nines


def test_nines_figure_log_axis_and_formatted_hover():
    fig = pl.nines_figure()
    assert fig.layout.yaxis.type == "log"
    year = fig.data[0]
    assert year.name == "per year" and year.visible is True
    table = av.nines_table()
    assert list(year.y) == list(table["per_year_s"])
    assert list(fig.layout.xaxis.ticktext) == ["90 %", "99 %", "99.9 %", "99.99 %", "99.999 %", "99.9999 %"]
    hover = [tuple(r) for r in year.customdata]
    assert ("99.999 %", "5.26 min") in hover and ("99.9 %", "8.76 h") in hover
    assert "%{customdata[1]}" in year.hovertemplate
    assert [t.name for t in fig.data] == ["per year", "per month", "per week", "per day"]
    # 100 % allows no downtime: it cannot sit on a log axis
    fig = pl.nines_figure(av.nines_table([99, 99.9, 100]))
    assert len(fig.data[0].y) == 2


# ------------------------------------------------------------------ write loss


def write_log(n=100, acked_until=90):
    return [
        {"seq": i, "sent": T0 + i * STEP, "recv": T0 + i * STEP + LAT if i < acked_until else None,
         "ok": i < acked_until, "err": None if i < acked_until else "timeout"}
        for i in range(n)
    ]  # fmt: skip


def test_write_loss_highlights_lost_and_marks_rpo():
    log = write_log()
    loss = an.lost_writes(log, present=[*range(80), 85], corrupt=[85])
    assert loss.lost_seqs == list(range(80, 90)) and loss.rpo_s == 10 * STEP
    fig = pl.write_loss(loss, log)
    by_name = {t.name.split(" (")[0]: t for t in fig.data}
    assert sorted(np.asarray(by_name["acknowledged, lost"].y).tolist()) == [80, 81, 82, 83, 84, 86, 87, 88, 89]
    assert list(by_name["acknowledged, corrupt"].y) == [85]
    assert len(by_name["acknowledged, survived"].y) == 80
    assert len(by_name["not acknowledged"].y) == 10
    assert list(by_name["acknowledged, corrupt"].x) == [85 * STEP + LAT]  # at the ack time
    (rpo,) = shapes_named(fig, "rpo")
    assert (rpo.x0, rpo.x1) == (loss.consistent_at - T0, loss.last_acked_at - T0) == (80 * STEP, 90 * STEP)
    (ann,) = annotations_named(fig, "rpo")
    assert ann.text == "RPO 1.2 s"  # 1.25 s
    assert fig.layout.title.text == "10 of 90 acknowledged writes lost (1 corrupt)"


def test_write_loss_without_loss_and_mismatch():
    log = write_log()
    fig = pl.write_loss(an.lost_writes(log, present=range(100)), log)
    assert not shapes_named(fig, "rpo")
    (ann,) = annotations_named(fig, "rpo")
    assert "no acknowledged write lost" in ann.text
    other = an.lost_writes(write_log(acked_until=50), present=range(40))
    with pytest.raises(ValueError, match="does not match"):
        pl.write_loss(other, log)


# ------------------------------------------------------------------ offline


def all_figures():
    log = outage_log()
    ph = an.phases([(T0 + 13.0, "dead")], {"detection": "dead", "takeover": "x"}, FAULT, T0 + 18.125)
    wlog = write_log()
    return {
        "timeline": pl.timeline(log, fault_time=FAULT, fault_end=FAULT_END, phases=ph),
        "timeline_gl": pl.timeline(mklog([i % 500 != 0 for i in range(12_000)], step=0.01, lat=0.001)),
        "phase_bars": pl.phase_bars({"lab": ph}, paper={"detection": 3.0}),
        "trials_strip": pl.trials_strip(pd.DataFrame({"trial": [0, 1], "x_s": [1.0, 2.0]}), "x_s", bound=[0, 3]),
        "paper_vs_lab": pl.paper_vs_lab(ENTRIES),
        "nines": pl.nines_figure(),
        "write_loss": pl.write_loss(an.lost_writes(wlog, present=range(85)), wlog),
        "topology": pl.topology(topo_mod.load("routing", check_memory=False)),
        "topology_figure": pl.topology(topo_mod.load(topo_mod.LABS_DIR / "figures" / "network-redundancy.yaml")),
    }


def test_figures_reference_nothing_remote_and_use_the_template():
    for name, fig in all_figures().items():
        text = fig.to_json()
        strings = list(json_strings(json.loads(text)))
        remote = [s for s in strings if "http" in s.lower() or "cdn" in s.lower() or "//" in s or "url(" in s]
        assert remote == [], f"{name} references remote assets: {remote[:3]}"
        assert fig.layout.template.layout.font.family == pl.FONT_FAMILY, name
        assert fig.layout.font.family is None, name  # fonts only come from the template
        assert text == fig.to_json(), name


def test_topology_figure_draws_every_link_from_the_yaml():
    from hautils import topology as topo_mod

    t = topo_mod.load("routing", check_memory=False)
    fig = pl.topology(t)
    links = [(h.name, l) for h in t.hosts.values() for l in h.links]
    edges = [tr for tr in fig.data if tr.mode == "lines"]
    assert len(edges) == len(links) == 18
    labels = {a.text for a in fig.layout.annotations}
    assert "eth3 10.10.15.1" in labels and "eth1 10.10.10.2" in labels
    hosts = next(tr for tr in fig.data if tr.name == "hosts")
    assert list(hosts.text) == list(t.hosts)
    nets = next(tr for tr in fig.data if tr.name == "networks (bridges)")
    assert sorted(x.split()[0] for x in nets.text) == sorted(t.networks)
    s = topo_mod.load("storage", check_memory=False)
    assert any("virtual IP iscsi-server-ha 192.168.103.36" == a.text for a in pl.topology(s).layout.annotations)


def _link_labels(fig):
    return [a for a in fig.layout.annotations if a.font.size == 10 and not a.text.startswith("virtual IP")]


@pytest.mark.parametrize("path", ["routing", "storage", "cluster", "sip", "availability", "bonding", "gateway",
                                  "figures/multipath", "figures/network-redundancy"])
def test_topology_labels_do_not_collide(path):
    """Link labels sit on their own link, above the networks, and no two overlap (at the
    width the figure is laid out for); network labels that would touch are staggered."""
    t = topo_mod.load(path, check_memory=False)
    fig = pl.topology(t)
    x_lo, x_hi = fig.layout.xaxis.range
    y_lo, y_hi = fig.layout.yaxis.range
    unit_px = pl.TOPOLOGY_PLOT_PX / (x_hi - x_lo)
    label_h = 16 / ((fig.layout.height - 130) / (y_hi - y_lo))
    labels = _link_labels(fig)
    assert len(labels) == sum(len(h.links) for h in t.hosts.values())
    edges = [tr for tr in fig.data if tr.mode == "lines"]
    for a, e in zip(labels, edges):
        (hx, nx_), (hy, ny_) = e.x, e.y
        assert pl.LABEL_MIN_Y <= a.y < 1.0
        assert a.x == pytest.approx(nx_ + (hx - nx_) * (a.y - ny_) / (hy - ny_))  # on its own line
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            half = (pl._text_width(a.text, 10, unit_px) + pl._text_width(b.text, 10, unit_px)) / 2
            assert abs(a.x - b.x) >= half or abs(a.y - b.y) >= label_h, (a.text, b.text)
    nets = next(tr for tr in fig.data if (tr.name or "").startswith("networks"))
    rows = {}
    for x, y, text in zip(nets.x, nets.y, nets.text):
        rows.setdefault(y, []).append((x, pl._text_width(text, 13, unit_px)))
    for row in rows.values():
        for (xa, wa), (xb, wb) in zip(row, row[1:]):
            assert xb - xa >= (wa + wb) / 2
        assert all(x - w / 2 >= x_lo and x + w / 2 <= x_hi for x, w in row)  # nothing cut at the sides


def test_topology_figure_of_a_thesis_figure():
    t = topo_mod.load(topo_mod.LABS_DIR / "figures" / "network-redundancy.yaml")
    assert t.figure
    fig = pl.topology(t)
    labels = {a.text for a in _link_labels(fig)}
    assert {"eth0 (bond0)", "eth1 (bond0)", "eth0", "eth1"} <= labels
    nets = next(tr for tr in fig.data if tr.name == "networks (switches, links)")
    assert "a1-pa" in nets.text and "sw-a1 192.168.1.0/24" in nets.text  # no subnet: the name alone
    assert len(set(nets.y)) == 2  # eight networks: staggered
    hosts = next(tr for tr in fig.data if tr.name == "hosts")
    assert not any("MiB" in h for h in hosts.hovertext)  # a drawing has no VM sizes
    assert "pc-a: host on LAN A, two NICs bonded" in hosts.hovertext
    vips = sorted(a.text for a in fig.layout.annotations if a.text.startswith("virtual IP"))
    assert vips == ["virtual IP gw-a 192.168.1.1", "virtual IP gw-b 192.168.2.1"]
    assert max(a.y for a in fig.layout.annotations if a.text.startswith("virtual IP")) < min(nets.y) - 0.1
    # a lab's figure keeps its bridges and memory sizes
    lab = pl.topology(topo_mod.load("storage", check_memory=False))
    assert any(tr.name == "networks (bridges)" for tr in lab.data)
    assert all("MiB" in h for h in next(tr for tr in lab.data if tr.name == "hosts").hovertext)
