"""One look for every figure of the book (plotly).

Every function returns a :class:`plotly.graph_objects.Figure` styled with the
``"halab"`` template defined here, so the chapters look alike:

* colours come from :data:`PALETTE`, the Okabe-Ito palette, which stays
  distinguishable for the common forms of colour blindness; failures are also
  drawn with their own marker symbols and missing data with a hatch pattern,
  so no figure relies on colour alone;
* fonts are the reader's system fonts (a CSS font stack): the figures load no
  web font, script or image from the network and render offline in the HTML
  book;
* figures are deterministic (no random jitter, no timestamps), so executing a
  notebook twice gives the same output.

The figures consume the outputs of :mod:`hautils.analysis`,
:mod:`hautils.results` and :mod:`hautils.availability`:

* :func:`timeline`: a probe log with the fault window, outages and phases;
* :func:`phase_bars`: failover phases of several runs side by side;
* :func:`trials_strip`: per-trial values of a measure, with bound and paper;
* :func:`paper_vs_lab`: the paper's numbers next to ours, from results entries;
* :func:`nines_figure`: allowed downtime against availability;
* :func:`write_loss`: acknowledged writes, the lost ones and the RPO span.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.io.base_renderers import MimetypeRenderer
import plotly.io as pio
from plotly.subplots import make_subplots

from hautils import analysis as an
from hautils import availability as av
from hautils import results as rs

__all__ = [
    "PALETTE",
    "FONT_FAMILY",
    "TEMPLATE",
    "apply_style",
    "timeline",
    "phase_bars",
    "trials_strip",
    "paper_vs_lab",
    "nines_figure",
    "write_loss",
]

# --------------------------------------------------------------------------
# style

#: Okabe-Ito colours, in the order traces use them (the template's colorway).
PALETTE: dict[str, str] = {
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "green": "#009E73",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "purple": "#CC79A7",
    "yellow": "#F0E442",
    "black": "#000000",
}
GREY = "#8C8C8C"
LIGHT_GREY = "#D9D9D9"
TEXT = "#222222"

# roles: the same thing has the same colour in every figure
OK_COLOR = PALETTE["blue"]
LOST_COLOR = PALETTE["vermillion"]
LAB_COLOR = PALETTE["blue"]
PAPER_COLOR = GREY
BOUND_COLOR = PALETTE["green"]
FAULT_COLOR = "#7F7F7F"
# phases: neither the probe blue nor the loss vermillion, light enough for dark labels
_PHASE_COLORS = (
    PALETTE["orange"],
    PALETTE["sky"],
    PALETTE["green"],
    PALETTE["purple"],
    PALETTE["yellow"],
    "#A6CEE3",
    "#E5C494",
    "#B3DE69",
)
_FAIL_SYMBOLS = ("x", "triangle-down", "square", "diamond", "cross", "star")
_FAIL_COLORS = (LOST_COLOR, PALETTE["purple"], PALETTE["orange"], PALETTE["black"], PALETTE["sky"], GREY)

#: System font stack: no web font is ever downloaded.
FONT_FAMILY = (
    'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", '
    '"Liberation Sans", Arial, sans-serif'
)

_AXIS = dict(
    showgrid=True,
    gridcolor="#E8E8E8",
    zeroline=False,
    showline=True,
    linecolor="#555555",
    ticks="outside",
    tickcolor="#555555",
    automargin=True,
    title=dict(standoff=8),
)

#: The book's plotly template, also registered as ``plotly.io.templates["halab"]``.
TEMPLATE = go.layout.Template(
    layout=dict(
        font=dict(family=FONT_FAMILY, size=13, color=TEXT),
        title=dict(x=0, xanchor="left", font=dict(size=16)),
        colorway=list(PALETTE.values()),
        paper_bgcolor="white",
        plot_bgcolor="white",
        xaxis=_AXIS,
        yaxis=_AXIS,
        legend=dict(
            orientation="h",
            x=0,
            xanchor="left",
            y=1.02,
            yanchor="bottom",
            bgcolor="rgba(255,255,255,0)",
            font=dict(size=12),
        ),
        hoverlabel=dict(font=dict(family=FONT_FAMILY, size=12)),
        hovermode="closest",
        margin=dict(l=60, r=20, t=80, b=50),
        bargap=0.25,
        annotationdefaults=dict(font=dict(size=12, color=TEXT), showarrow=False),
        uniformtext=dict(minsize=9, mode="hide"),
    ),
)
pio.templates["halab"] = TEMPLATE

#: Above this many points a trace is drawn with WebGL (Scattergl); below it
#: SVG, which is sharper and does not use up the browser's WebGL contexts.
GL_THRESHOLD = 5_000
#: A timeline labels at most this many outages (the longest); all are shaded.
MAX_OUTAGE_LABELS = 12


def apply_style(fig: go.Figure, *, height: int | None = None) -> go.Figure:
    """Give ``fig`` the book's look (template "halab"); returns the same figure."""
    fig.update_layout(template=TEMPLATE)
    if height is not None:
        fig.update_layout(height=height)
    return fig


# --------------------------------------------------------------------------
# small helpers


def _fmt_s(seconds: float) -> str:
    """A duration as the book prints it: "850 ms", "8.1 s", "12.3 s", "5.26 min"."""
    s = float(seconds)
    if s < 0:
        return "-" + _fmt_s(-s)
    if round(s, 1) < 1.0:
        return f"{s * 1000:.0f} ms"
    if round(s, 1) < 100.0:
        return f"{s:.1f} s"
    return av.format_duration(s)


def _fmt_num(v: float) -> str:
    """4.0 -> "4", 4.25 -> "4.25", 1234.5 -> "1234.5" (at most 3 decimals)."""
    v = float(v)
    if v.is_integer():
        return str(int(v))
    return f"{v:.3f}".rstrip("0").rstrip(".")


def _unit_of(measure: str, unit: str | None = None) -> str:
    if unit:
        return unit
    if measure in rs.KNOWN_UNITS:
        return rs.KNOWN_UNITS[measure]
    return "s" if measure.endswith("_s") else ""


def _measure_label(measure: str, unit: str | None = None) -> str:
    """"downtime_s" -> "downtime (s)"; "lost_probes" -> "lost probes (probes)"."""
    u = _unit_of(measure, unit)
    name = measure[:-2] if measure.endswith("_s") and u == "s" else measure
    name = name.replace("_", " ")
    return f"{name} ({u})" if u else name


def _hover_safe(text: object) -> str:
    """Text that plotly shows literally inside a hovertemplate."""
    return html.escape(str(text)).replace("%{", "%&#123;")


def _number(v: object, field: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ValueError(f"{field} must be a finite number, got {v!r}")
    return float(v)


def _blank(v: object) -> bool:
    """None, NaN, pandas NA or an empty string: no error text recorded."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _frame(log: Any, what: str = "log") -> pd.DataFrame:
    """A probe log as a DataFrame (seq, sent, recv, ok, err) sorted by send time.

    The records are validated by :func:`hautils.analysis.outages` (which
    raises a ValueError naming the bad record) before this is called.
    """
    if isinstance(log, pd.DataFrame):
        df = log.copy()
    else:
        df = pd.DataFrame.from_records(list(log))
    n = len(df)
    if "seq" not in df.columns:
        df["seq"] = np.arange(n)
    for col in ("recv", "err"):
        if col not in df.columns:
            df[col] = None
    if n == 0:
        return pd.DataFrame({"seq": [], "sent": [], "recv": [], "ok": [], "err": []}).astype(
            {"seq": "int64", "sent": "float64", "recv": "float64", "ok": "bool", "err": "object"}
        )
    out = pd.DataFrame(
        {
            "seq": pd.to_numeric(df["seq"]).astype("int64"),
            "sent": pd.to_numeric(df["sent"]).astype("float64"),
            "recv": pd.to_numeric(df["recv"]).astype("float64"),
            "ok": df["ok"].map(bool).astype(bool),
            "err": df["err"].where(df["err"].notna(), None),
        }
    )
    return out.sort_values(["sent", "seq"], kind="mergesort").reset_index(drop=True)


def _thin(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ~``max_points`` points that keep the shape of a series.

    Deterministic: the x range is cut into ``max_points // 4`` bins and each bin
    keeps its first, last, lowest and highest point, so spikes and the edges
    of gaps survive.
    """
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    bins = max(1, max_points // 4)
    lo, hi = float(np.min(x)), float(np.max(x))
    span = hi - lo
    b = np.zeros(n, dtype=np.int64) if span <= 0 else np.minimum(((x - lo) / span * bins).astype(np.int64), bins - 1)
    frame = pd.DataFrame({"b": b, "y": y, "i": np.arange(n)})
    g = frame.groupby("b", sort=True)
    keep = np.concatenate(
        [
            g["i"].first().to_numpy(),
            g["i"].last().to_numpy(),
            frame.loc[g["y"].idxmin().to_numpy(), "i"].to_numpy(),
            frame.loc[g["y"].idxmax().to_numpy(), "i"].to_numpy(),
        ]
    )
    return np.unique(keep)


def _scatter(n: int, **kw: Any) -> go.Scatter | go.Scattergl:
    return go.Scattergl(**kw) if n > GL_THRESHOLD else go.Scatter(**kw)


def _count_name(name: str, shown: int, total: int) -> str:
    if shown == total:
        return f"{name} ({total:,})"
    return f"{name} ({shown:,} of {total:,} shown)"


def _axis_ref(fig: go.Figure, row: int) -> tuple[str, str]:
    """("x2", "y2") for a subplot row of a one-column figure."""
    sp = fig.get_subplot(row, 1)
    return sp.xaxis.plotly_name.replace("axis", ""), sp.yaxis.plotly_name.replace("axis", "")


# --------------------------------------------------------------------------
# phases


def _check_phase(p: object, where: str) -> None:
    for attr in ("name", "start", "duration", "found"):
        if not hasattr(p, attr):
            raise TypeError(f"{where} must be an analysis.Phase, got {type(p).__name__}")


def _segments(phases: Sequence[an.Phase], where: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Drawable segments of a phase list, and the names of trailing phases not seen.

    A phase whose mark was not found has no extent: :func:`analysis.phases`
    lets the next found phase start where it started, so that phase's span
    covers both and cannot be split.  Such a span becomes one "not seen"
    segment naming all the phases it covers.
    """
    segs: list[dict[str, Any]] = []
    pending: list[str] = []
    for i, p in enumerate(phases):
        _check_phase(p, f"{where}[{i}]")
        if not p.found or p.duration is None:
            pending.append(str(p.name))
            continue
        dur = _number(p.duration, f"{where}[{i}].duration")
        start = _number(p.start, f"{where}[{i}].start")
        segs.append({"name": str(p.name), "start": start, "duration": dur, "missing": tuple(pending)})
        pending = []
    return segs, pending


def _seg_label(seg: Mapping[str, Any]) -> str:
    if seg["missing"]:
        return f"{_fmt_s(seg['duration'])} {' + '.join(seg['missing'])} + {seg['name']}"
    return f"{_fmt_s(seg['duration'])} {seg['name']}"


def _seg_hover(seg: Mapping[str, Any], run: str | None = None) -> str:
    head = f"<b>{_hover_safe(run)}</b><br>" if run is not None else ""
    if seg["missing"]:
        names = ", ".join(_hover_safe(m) for m in seg["missing"])
        return (
            f"{head}{_hover_safe(seg['name'])}: {_fmt_s(seg['duration'])}<br>"
            f"includes {names} (not seen: no mark found, the span cannot be split)"
        )
    return f"{head}{_hover_safe(seg['name'])}: {_fmt_s(seg['duration'])}"


def _phase_colors(names: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        if name not in out:
            out[name] = _PHASE_COLORS[len(out) % len(_PHASE_COLORS)]
    return out


_NOT_SEEN_MARKER = dict(
    color=LIGHT_GREY,
    line=dict(color=GREY, width=1),
    pattern=dict(shape="/", fgcolor=GREY, bgcolor=LIGHT_GREY, size=6, solidity=0.3),
)


# --------------------------------------------------------------------------
# timeline


def timeline(
    log: Any,
    fault_time: float | None = None,
    fault_end: float | None = None,
    phases: Sequence[an.Phase] | None = None,
    title: str | None = None,
    relative_to: float | None = None,
    *,
    fault_label: str = "fault",
    min_gap: float = 0.0,
    settle: float = 0.0,
    settle_n: int = 1,
    log_y: bool = True,
    max_points: int = 10_000,
) -> go.Figure:
    """Probe timeline: every attempt at its send time, replies by latency, failures below.

    x is seconds since ``relative_to`` (default: ``fault_time``, else the first
    attempt).  Successful attempts are plotted at their reply latency in ms
    (``recv - sent``; log axis unless ``log_y=False``); failed ones in a "lost"
    band underneath, one row and marker per error kind.  The fault is a grey
    band from ``fault_time`` to ``fault_end`` (a dashed line without an end);
    every outage found by :func:`analysis.outages` (with ``min_gap``,
    ``settle``, ``settle_n``) is marked and labelled with its duration.
    ``phases`` (from :func:`analysis.phases`) are drawn as a strip on top.

    Outages are computed on the full log; only the drawing is thinned to about
    ``max_points`` points per trace (keeping each bin's first, last, lowest
    and highest point), and large traces use WebGL.
    """
    outs = an.outages(log, min_gap, settle=settle, settle_n=settle_n)  # also validates the log
    df = _frame(log)
    if fault_time is not None:
        fault_time = _number(fault_time, "fault_time")
    if fault_end is not None:
        if fault_time is None:
            raise ValueError("fault_end needs a fault_time (the start of the fault window)")
        fault_end = _number(fault_end, "fault_end")
        if fault_end < fault_time:
            raise ValueError(f"fault_end={fault_end!r} is before fault_time={fault_time!r}")
    if isinstance(max_points, bool) or not isinstance(max_points, numbers.Integral) or max_points < 4:
        raise ValueError(f"max_points must be an integer >= 4, got {max_points!r}")

    if relative_to is not None:
        ref = _number(relative_to, "relative_to")
        x_title = "time (s)"
    elif fault_time is not None:
        ref = fault_time
        x_title = "time since fault (s)"
    else:
        ref = float(df["sent"].iloc[0]) if len(df) else 0.0
        x_title = "time since first probe (s)"

    # failure categories: one row of the lost band each
    fails = df[~df["ok"]]
    err = fails["err"].map(lambda e: "no reply" if _blank(e) else str(e))
    counts = err.value_counts(sort=False)
    order = sorted(counts.index, key=lambda c: (-counts[c], c))
    if len(order) > len(_FAIL_SYMBOLS):
        keep = set(order[: len(_FAIL_SYMBOLS) - 1])
        err = err.where(err.isin(keep), "other")
        order = order[: len(_FAIL_SYMBOLS) - 1] + ["other"]
    n_cat = max(1, len(order))

    seg_list: list[dict[str, Any]] = []
    trailing: list[str] = []
    if phases:
        seg_list, trailing = _segments(list(phases), "phases")
    has_phases = bool(phases)
    lost_h = min(0.3, 0.12 + 0.04 * (n_cat - 1))
    heights = ([0.1] if has_phases else []) + [1.0 - lost_h - (0.1 if has_phases else 0.0), lost_h]
    fig = make_subplots(
        rows=len(heights), cols=1, shared_xaxes=True, vertical_spacing=0.03, row_heights=heights
    )
    r_lat = 2 if has_phases else 1
    r_lost = r_lat + 1
    x_lat, y_lat = _axis_ref(fig, r_lat)
    x_lost, y_lost = _axis_ref(fig, r_lost)

    # replies
    oks = df[df["ok"]]
    if len(oks):
        xs = (oks["sent"] - ref).to_numpy()
        rtt = ((oks["recv"] - oks["sent"]) * 1000.0).to_numpy()
        if log_y:
            rtt = np.maximum(rtt, 1e-3)  # a log axis drops zeros; keep the point visible
        idx = _thin(xs, rtt, max_points)
        fig.add_trace(
            _scatter(
                len(idx),
                x=xs[idx],
                y=rtt[idx],
                customdata=oks["seq"].to_numpy()[idx],
                mode="markers",
                name=_count_name("reply", len(idx), len(oks)),
                marker=dict(color=OK_COLOR, size=4, symbol="circle"),
                hovertemplate="seq %{customdata}<br>t = %{x:.3f} s<br>rtt = %{y:.2f} ms<extra></extra>",
            ),
            row=r_lat,
            col=1,
        )

    # failures
    for k, cat in enumerate(order):
        sel = fails[(err == cat).to_numpy()]
        xs = (sel["sent"] - ref).to_numpy()
        ys = np.full(len(xs), float(k))
        idx = _thin(xs, ys, max_points)
        fig.add_trace(
            _scatter(
                len(idx),
                x=xs[idx],
                y=ys[idx],
                customdata=sel["seq"].to_numpy()[idx],
                mode="markers",
                name=_count_name(f"lost: {cat[:40]}", len(idx), len(sel)),
                marker=dict(color=_FAIL_COLORS[k], size=6, symbol=_FAIL_SYMBOLS[k]),
                hovertemplate=f"seq %{{customdata}}<br>t = %{{x:.3f}} s<br>{_hover_safe(cat)}<extra></extra>",
            ),
            row=r_lost,
            col=1,
        )

    # shapes and annotations are collected and set once: add_shape() copies
    # the whole list each time, which is quadratic for logs with many blips
    shapes: list[dict[str, Any]] = []
    annots: list[dict[str, Any]] = []

    # fault window (behind everything, over all rows)
    if fault_time is not None:
        fx = fault_time - ref
        if fault_end is not None:
            shapes.append(dict(
                type="rect", xref="x", yref="paper", x0=fx, x1=fault_end - ref, y0=0, y1=1,
                fillcolor=FAULT_COLOR, opacity=0.18, line=dict(width=0), layer="below", name="fault",
            ))  # fmt: skip
        else:
            shapes.append(dict(
                type="line", xref="x", yref="paper", x0=fx, x1=fx, y0=0, y1=1,
                line=dict(color=FAULT_COLOR, width=2, dash="dash"), layer="below", name="fault",
            ))  # fmt: skip
        annots.append(dict(
            x=fx, xref=x_lat, y=1, yref=f"{y_lat} domain", text=html.escape(fault_label),
            xanchor="left", yanchor="top", font=dict(color="#555555"), name="fault",
        ))  # fmt: skip

    # outages: every one shaded; the MAX_OUTAGE_LABELS longest labelled
    last_x = float(df["sent"].iloc[-1]) - ref if len(df) else 0.0
    labels: list[str] = []
    measured = [o.duration if o.duration is not None else o.duration_lower for o in outs]
    labelled = set(sorted(range(len(outs)), key=lambda i: (-measured[i], i))[:MAX_OUTAGE_LABELS])
    for i, o in enumerate(outs):
        x0 = o.start - ref
        x1 = (o.end - ref) if o.end is not None else last_x
        if o.open_end:
            label = f"≥ {_fmt_s(o.duration_lower)} (not recovered)"
        elif o.open_start:
            label = f"≥ {_fmt_s(o.duration)}"
        else:
            label = _fmt_s(o.duration)
        labels.append(label)
        hover = (
            f"outage {i + 1}: {label}<br>{o.lost} probes lost"
            + (f", {o.flaps} flaps" if o.flaps else "")
            + f"<br>last reply t = {x0:.3f} s"
            + (f"<br>first stable reply t = {x1:.3f} s" if o.end is not None else "<br>no reply until the end")
        )
        shapes.append(dict(
            type="rect", xref=x_lost, yref=f"{y_lost} domain", x0=x0, x1=x1, y0=0, y1=1,
            fillcolor=LOST_COLOR, opacity=0.12, line=dict(width=0), layer="below", name=f"outage {i + 1}",
        ))  # fmt: skip
        shapes.append(dict(
            type="line", xref=x_lat, yref=f"{y_lat} domain", x0=x0, x1=x1, y0=0.03, y1=0.03,
            line=dict(color=LOST_COLOR, width=2), name=f"outage {i + 1} span",
        ))  # fmt: skip
        if i in labelled:
            annots.append(dict(
                x=(x0 + x1) / 2, xref=x_lat, y=0.04, yref=f"{y_lat} domain", text=label, hovertext=hover,
                yanchor="bottom", font=dict(color=LOST_COLOR, size=13), bgcolor="rgba(255,255,255,0.7)",
                name=f"outage {i + 1}",
            ))  # fmt: skip

    # phases strip
    if has_phases:
        colors = _phase_colors(s["name"] for s in seg_list)
        for s in seg_list:
            fig.add_trace(
                go.Bar(
                    x=[s["duration"]],
                    base=[s["start"] - ref],
                    y=["phases"],
                    orientation="h",
                    name=s["name"],
                    text=[_seg_label(s)],
                    textposition="inside",
                    insidetextanchor="middle",
                    textangle=0,
                    hovertext=[_seg_hover(s)],
                    hoverinfo="text",
                    marker=_NOT_SEEN_MARKER if s["missing"] else dict(color=colors[s["name"]], line=dict(width=0)),
                    showlegend=False,
                ),
                row=1,
                col=1,
            )
        if trailing:
            end = (seg_list[-1]["start"] + seg_list[-1]["duration"] - ref) if seg_list else 0.0
            x_ph, y_ph = _axis_ref(fig, 1)
            annots.append(dict(
                x=end, xref=x_ph, y="phases", yref=y_ph,
                text=html.escape(f"{', '.join(trailing)}: not seen"), xanchor="left", font=dict(color=GREY),
                name="phases not seen",
            ))  # fmt: skip
        fig.update_yaxes(row=1, col=1, showgrid=False, showline=False, ticks="", fixedrange=True)
        fig.update_layout(barmode="overlay")

    # axes
    fig.update_yaxes(row=r_lat, col=1, title_text="reply latency (ms)", type="log" if log_y else "linear")
    if not log_y:
        fig.update_yaxes(row=r_lat, col=1, rangemode="tozero")
    fig.update_yaxes(
        row=r_lost, col=1, title_text="lost", tickmode="array", tickvals=list(range(n_cat)),
        ticktext=[c[:20] for c in order] if order else [""], range=[-0.7, n_cat - 0.3],
        showgrid=False, zeroline=False, fixedrange=True,
    )  # fmt: skip
    fig.update_xaxes(row=len(heights), col=1, title_text=x_title)

    fig.update_layout(shapes=shapes, annotations=annots)

    if title is None:
        if not outs:
            title = f"Probe timeline: no outage in {len(df):,} probes"
        else:
            lost = sum(o.lost for o in outs)
            if len(outs) == 1:
                what = f"1 outage ({labels[0]})"
            elif len(outs) <= 3:
                what = f"{len(outs)} outages ({', '.join(labels)})"
            else:
                longest = max(range(len(outs)), key=lambda i: (measured[i], -i))
                what = f"{len(outs)} outages (longest {labels[longest]})"
            title = f"Probe timeline: {what}, {lost:,} of {len(df):,} probes lost"
    fig.update_layout(title_text=title or None)
    return apply_style(fig, height=480 if has_phases else 420)


# --------------------------------------------------------------------------
# phase bars


def phase_bars(
    phases_by_run: Mapping[str, Sequence[an.Phase]],
    paper: Mapping[str, float | None] | None = None,
    *,
    title: str | None = None,
) -> go.Figure:
    """Failover phases of several runs as horizontal stacked bars, one bar per run.

    ``phases_by_run`` maps a run or scenario name ("this lab", "tuned") to its
    :func:`analysis.phases` list; ``paper`` optionally gives the paper's phase
    durations in seconds ({"detection": 3.0, "takeover": 2.0}, None for a
    phase it does not report), drawn as a first bar named "paper".  Segments
    start at their phase's start (seconds since the fault), are as wide as the
    phase lasted and are labelled "3.0 s detection"; a phase whose mark was not
    found is drawn hatched grey, merged with the phase that absorbed it.
    """
    if not isinstance(phases_by_run, Mapping):
        raise TypeError(f"phases_by_run must be a dict {{run name: [Phase, ...]}}, got {type(phases_by_run).__name__}")
    runs: dict[str, list[an.Phase]] = {}
    if paper is not None:
        if not isinstance(paper, Mapping):
            raise TypeError(f"paper must be a dict {{phase name: seconds}}, got {type(paper).__name__}")
        if "paper" in phases_by_run:
            raise ValueError("phases_by_run already has a run named 'paper': pass the paper's phases in one place")
        t = 0.0
        paper_phases = []
        for name, d in paper.items():
            if d is None:
                paper_phases.append(an.Phase(str(name), t, None, None, found=False))
                continue
            d = _number(d, f"paper[{name!r}]")
            if d < 0:
                raise ValueError(f"paper[{name!r}] must be >= 0 seconds, got {d!r}")
            paper_phases.append(an.Phase(str(name), t, t + d, d))
            t += d
        runs["paper"] = paper_phases
    for run, ph in phases_by_run.items():
        if isinstance(ph, (str, bytes, Mapping)) or not isinstance(ph, Iterable):
            raise TypeError(f"phases_by_run[{run!r}] must be a list of Phase, got {type(ph).__name__}")
        runs[str(run)] = list(ph)
    if not runs:
        raise ValueError("phase_bars() needs at least one run")

    segs_by_run: dict[str, list[dict[str, Any]]] = {}
    trailing_by_run: dict[str, list[str]] = {}
    names: list[str] = []
    for run, ph in runs.items():
        segs, trailing = _segments(ph, f"phases_by_run[{run!r}]")
        origin = float(ph[0].start) if ph else 0.0
        for s in segs:
            s["rel"] = s["start"] - origin
        segs_by_run[run] = segs
        trailing_by_run[run] = trailing
        names.extend(str(p.name) for p in ph)
    colors = _phase_colors(names)

    fig = go.Figure()
    # one trace per phase name, so a phase has one colour and one legend entry
    for name in colors:
        ys, xs, bases, texts, hovers = [], [], [], [], []
        for run, segs in segs_by_run.items():
            for s in segs:
                if s["name"] == name and not s["missing"]:
                    ys.append(run)
                    xs.append(s["duration"])
                    bases.append(s["rel"])
                    texts.append(_seg_label(s))
                    hovers.append(_seg_hover(s, run))
        if not ys:
            continue
        fig.add_trace(
            go.Bar(
                y=ys, x=xs, base=bases, orientation="h", name=name, text=texts, hovertext=hovers,
                hoverinfo="text", textposition="inside", insidetextanchor="middle", textangle=0,
                marker=dict(color=colors[name], line=dict(color="white", width=1)),
            )
        )  # fmt: skip
    ys, xs, bases, texts, hovers = [], [], [], [], []
    for run, segs in segs_by_run.items():
        for s in segs:
            if s["missing"]:
                ys.append(run)
                xs.append(s["duration"])
                bases.append(s["rel"])
                texts.append(_seg_label(s))
                hovers.append(_seg_hover(s, run))
    if ys:
        fig.add_trace(
            go.Bar(
                y=ys, x=xs, base=bases, orientation="h", name="not seen", text=texts, hovertext=hovers,
                hoverinfo="text", textposition="inside", insidetextanchor="middle", textangle=0,
                marker=_NOT_SEEN_MARKER,
            )
        )  # fmt: skip
    for run, trailing in trailing_by_run.items():
        segs = segs_by_run[run]
        if not trailing and segs:
            continue
        end = max((s["rel"] + s["duration"] for s in segs), default=0.0)
        text = f"{', '.join(trailing)}: not seen" if trailing else "no phases"
        fig.add_annotation(
            x=end, y=run, xref="x", yref="y", text=html.escape(text), xanchor="left",
            font=dict(color=GREY), name=f"{run}: not seen",
        )  # fmt: skip

    run_names = list(runs)
    fig.update_yaxes(
        type="category", categoryorder="array", categoryarray=run_names, autorange="reversed", showgrid=False
    )
    fig.update_xaxes(title_text="time since fault (s)", rangemode="tozero")
    fig.update_layout(barmode="overlay", title_text=title or "Failover phases", bargap=0.35)
    return apply_style(fig, height=160 + 60 * len(run_names))


# --------------------------------------------------------------------------
# trials


def trials_strip(
    df: pd.DataFrame,
    measure: str,
    by: str | None = None,
    bound: Sequence[float | None] | None = None,
    paper: float | Mapping[str, float] | None = None,
    *,
    unit: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """Per-trial values of ``measure`` as a box with every trial shown as a point.

    ``df`` is an :func:`analysis.trials` frame (failed trials, NaN, are left
    out); ``by`` names a column to group by (one box each).  ``bound`` is the
    chapter's [low, high] check (None for an open side), drawn as a green
    band; ``paper`` the paper's value, a dashed line (or a dict {group:
    value} for one line per group).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a DataFrame from analysis.trials(), got {type(df).__name__}")
    if measure not in df.columns:
        have = [c for c in df.select_dtypes("number").columns if c != "trial"]
        raise ValueError(f"no column {measure!r} in the trials frame; measures: {have}")
    if by is not None and by not in df.columns:
        raise ValueError(f"no column {by!r} to group by in the trials frame; columns: {list(df.columns)}")
    u = _unit_of(measure, unit)
    vals = pd.to_numeric(df[measure], errors="coerce")
    ok = vals.notna()
    if not ok.any():
        raise ValueError(f"column {measure!r} has no numeric values (did every trial fail?)")
    data = df.loc[ok].assign(_v=vals[ok])
    if by is None:
        label = _measure_label(measure, unit)
        groups = [(label[: label.rfind(" (")] if label.endswith(")") else label, data)]
    else:
        groups = [(str(k), g) for k, g in data.groupby(by, sort=False, dropna=False)]

    fig = go.Figure()
    labels = []
    for name, g in groups:
        label = f"{name} (n={len(g)})"
        labels.append(label)
        trial_col = g["trial"].tolist() if "trial" in g.columns else list(range(len(g)))
        fig.add_trace(
            go.Box(
                y=g["_v"].to_numpy(dtype=float),
                x=[label] * len(g),
                name=label,
                boxpoints="all",
                jitter=0.3,  # plotly.js seeds its jitter: the same figure draws the same way
                pointpos=0,
                hovertext=[f"trial {t}" for t in trial_col],
                hoverinfo="y+text",
                marker=dict(color=LAB_COLOR, size=7, opacity=0.8),
                line=dict(color=LAB_COLOR, width=1.5),
                fillcolor="rgba(0,114,178,0.10)",
                showlegend=False,
            )
        )

    all_v = data["_v"].to_numpy(dtype=float)
    extent = [float(all_v.min()), float(all_v.max())]
    paper_vals: list[float] = []
    if paper is not None:
        if isinstance(paper, Mapping):
            for k, v in paper.items():
                paper_vals.append(_number(v, f"paper[{k!r}]"))
        else:
            paper_vals.append(_number(paper, "paper"))
    lo = hi = None
    if bound is not None:
        if isinstance(bound, (str, bytes)) or not isinstance(bound, Sequence) or len(bound) != 2:
            raise ValueError(f"bound must be [low, high] (None for an open side), got {bound!r}")
        lo = None if bound[0] is None else _number(bound[0], "bound low")
        hi = None if bound[1] is None else _number(bound[1], "bound high")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"bound low {lo!r} > high {hi!r}")
    pts = extent + paper_vals + [b for b in (lo, hi) if b is not None]
    span = (max(pts) - min(pts)) or max(abs(max(pts)), 1.0)
    y_range = [min(pts) - 0.08 * span, max(pts) + 0.08 * span]
    if min(pts) >= 0 and y_range[0] < 0:
        y_range[0] = -0.02 * span

    if bound is not None and (lo is not None or hi is not None):
        b0 = y_range[0] if lo is None else lo
        b1 = y_range[1] if hi is None else hi
        fig.add_shape(
            type="rect", xref="paper", yref="y", x0=0, x1=1, y0=b0, y1=b1, fillcolor=BOUND_COLOR,
            opacity=0.12, line=dict(width=0), layer="below", name="bound",
        )  # fmt: skip
        for edge in (lo, hi):
            if edge is not None:
                fig.add_shape(
                    type="line", xref="paper", yref="y", x0=0, x1=1, y0=edge, y1=edge,
                    line=dict(color=BOUND_COLOR, width=1), layer="below", name="bound edge",
                )  # fmt: skip
        text = f"bound {'' if lo is None else _fmt_num(lo)}–{'' if hi is None else _fmt_num(hi)} {u}".rstrip()
        if lo is None:
            text = f"bound ≤ {_fmt_num(hi)} {u}".rstrip()  # type: ignore[arg-type]
        elif hi is None:
            text = f"bound ≥ {_fmt_num(lo)} {u}".rstrip()
        fig.add_annotation(
            x=0, xref="paper", y=b1 if hi is not None else b0, yref="y", text=text, xanchor="left",
            yanchor="top" if hi is not None else "bottom", font=dict(color=BOUND_COLOR), name="bound",
        )  # fmt: skip

    if paper is not None:
        pairs: list[tuple[float, float, float]] = []  # (x0, x1, value); x in category index units
        if isinstance(paper, Mapping):
            names = [n for n, _ in groups]
            for k, v in paper.items():
                if str(k) not in names:
                    raise ValueError(f"paper has a value for {k!r}, which is not a group of {by!r}: {names}")
                i = names.index(str(k))
                pairs.append((i - 0.45, i + 0.45, float(v)))
            xref = "x"
        else:
            pairs.append((0.0, 1.0, float(paper)))
            xref = "paper"
        for x0, x1, v in pairs:
            fig.add_shape(
                type="line", xref=xref, yref="y", x0=x0, x1=x1, y0=v, y1=v,
                line=dict(color=TEXT, width=2, dash="dash"), name="paper",
            )  # fmt: skip
            fig.add_annotation(
                x=x1, xref=xref, y=v, yref="y", text=f"paper: {_fmt_num(v)} {u}".rstrip(), xanchor="right",
                yanchor="bottom", name="paper",
            )  # fmt: skip

    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels, showgrid=False)
    fig.update_yaxes(title_text=_measure_label(measure, unit), range=y_range)
    fig.update_layout(title_text=title or f"{_measure_label(measure, unit)} per trial")
    return apply_style(fig, height=380)


# --------------------------------------------------------------------------
# paper vs lab


_ROW_COLUMNS = ["chapter", "scenario", "measure", "unit", "n", "median", "min", "max", "paper"]


def _entry_rows(entries: Any) -> pd.DataFrame:
    """results entries (list of dicts, a Results, or load_all()'s frame) as one row each."""
    if hasattr(entries, "entries") and not isinstance(entries, pd.DataFrame):
        entries = entries.entries  # a results.Results
    if isinstance(entries, pd.DataFrame):
        need = {"scenario", "measure", "paper"}
        missing = sorted(need - set(entries.columns))
        if missing:
            raise ValueError(f"entries frame lacks column(s) {missing}: pass results.load_all()'s frame")
        df = entries.copy()
        if not {"median", "min", "max"} <= set(df.columns):
            if "values" not in df.columns:
                raise ValueError("entries frame needs median/min/max columns or a values column")
            df["median"] = df["values"].map(lambda v: float(np.median(v)))
            df["min"] = df["values"].map(min)
            df["max"] = df["values"].map(max)
        if "n" not in df.columns:
            df["n"] = df["values"].map(len) if "values" in df.columns else np.nan
        if "unit" not in df.columns:
            df["unit"] = df["measure"].map(lambda m: _unit_of(str(m)))
        if "chapter" not in df.columns:
            df["chapter"] = None
        df = df[_ROW_COLUMNS].reset_index(drop=True)
    else:
        if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Iterable):
            raise TypeError(
                f"entries must be a list of results entries or load_all()'s frame, got {type(entries).__name__}"
            )
        rows = []
        for i, raw in enumerate(entries):
            chapter = None
            if isinstance(raw, Mapping) and "chapter" in raw:  # tolerate rows that name their chapter
                chapter = raw["chapter"]
                raw = {k: v for k, v in raw.items() if k != "chapter"}
            e = rs.validate_entry(raw, where=f"entries[{i}]")
            v = e["values"]
            rows.append(
                {
                    "chapter": chapter,
                    "scenario": e["scenario"],
                    "measure": e["measure"],
                    "unit": e["unit"],
                    "n": len(v),
                    "median": float(np.median(v)),
                    "min": float(min(v)),
                    "max": float(max(v)),
                    "paper": e["paper"],
                }
            )
        df = pd.DataFrame(rows, columns=_ROW_COLUMNS)
    if df.empty:
        raise ValueError("paper_vs_lab() got no entries")
    df["paper"] = df["paper"].map(lambda p: None if p is None or (isinstance(p, float) and math.isnan(p)) else float(p))
    return df


def paper_vs_lab(entries: Any, *, title: str | None = None) -> go.Figure:
    """The paper's numbers next to this lab's, one panel per measure.

    ``entries`` are results entries (a list of dicts in the results format, a
    :class:`results.Results`, or the frame of :func:`results.load_all`).
    Each scenario gets a "this lab" bar at the median of its trials, with
    error bars from the minimum to the maximum, and a "paper" bar when the
    paper reports a value (scenarios without one show the lab bar only).
    """
    df = _entry_rows(entries)
    facets = list(dict.fromkeys(zip(df["measure"], df["unit"], strict=True)))
    ncols = min(2, len(facets))
    nrows = math.ceil(len(facets) / ncols)
    fig = make_subplots(
        rows=nrows, cols=ncols, subplot_titles=[_measure_label(m, u) for m, u in facets],
        # plotly needs spacing < 1 / (rows - 1): the gap shrinks as panels are added
        horizontal_spacing=0.12, vertical_spacing=min(0.18, 0.5 / (nrows - 1)) if nrows > 1 else 0.1,
    )  # fmt: skip
    for j, (measure, unit) in enumerate(facets):
        r, c = j // ncols + 1, j % ncols + 1
        sub = df[(df["measure"] == measure) & (df["unit"] == unit)]
        dup = sub["scenario"].duplicated(keep=False)
        xs = [
            f"{ch}/{sc}" if d and ch else str(sc)
            for sc, ch, d in zip(sub["scenario"], sub["chapter"], dup, strict=True)
        ]
        paper_y = [None if pd.isna(p) else float(p) for p in sub["paper"]]
        med = sub["median"].to_numpy(dtype=float)
        lo = sub["min"].to_numpy(dtype=float)
        hi = sub["max"].to_numpy(dtype=float)
        lab_hover = [
            f"<b>{_hover_safe(x)}</b><br>this lab: median {_fmt_num(m)} {unit}, min {_fmt_num(a)}, max {_fmt_num(b)}"
            f"{'' if pd.isna(n) else f' ({int(n)} trials)'}"
            f"<br>paper: {'not reported' if p is None else f'{_fmt_num(p)} {unit}'}"
            for x, m, a, b, n, p in zip(xs, med, lo, hi, sub["n"], paper_y, strict=True)
        ]
        fig.add_trace(
            go.Bar(
                x=xs, y=paper_y, name="paper", legendgroup="paper", showlegend=j == 0,
                marker=dict(color=PAPER_COLOR), text=["" if p is None else _fmt_num(p) for p in paper_y],
                textposition="outside", hovertext=[f"<b>{_hover_safe(x)}</b><br>paper: "
                + ("not reported" if p is None else f"{_fmt_num(p)} {unit}") for x, p in zip(xs, paper_y, strict=True)],
                hoverinfo="text",
            ),
            row=r, col=c,
        )  # fmt: skip
        fig.add_trace(
            go.Bar(
                x=xs, y=med, name="this lab (median, min–max)", legendgroup="lab", showlegend=j == 0,
                marker=dict(color=LAB_COLOR),
                error_y=dict(type="data", symmetric=False, array=hi - med, arrayminus=med - lo,
                             color=TEXT, thickness=1.5, width=6),
                text=[_fmt_num(m) for m in med], textposition="inside", insidetextanchor="end",
                hovertext=lab_hover, hoverinfo="text",
            ),
            row=r, col=c,
        )  # fmt: skip
        fig.update_yaxes(row=r, col=c, rangemode="tozero", title_text=unit or None)
        fig.update_xaxes(row=r, col=c, showgrid=False, type="category")
    fig.update_layout(barmode="group", title_text=title or "Paper vs this lab")
    return apply_style(fig, height=140 + 300 * nrows)


# --------------------------------------------------------------------------
# nines


_HUMAN_TICKS = (
    (1e-3, "1 ms"),
    (1.0, "1 s"),
    (60.0, "1 min"),
    (3600.0, "1 h"),
    (av.DAY_S, "1 day"),
    (7 * av.DAY_S, "1 week"),
    (30 * av.DAY_S, "1 month"),
    (365 * av.DAY_S, "1 year"),
)


def nines_figure(table: pd.DataFrame | None = None, *, title: str | None = None) -> go.Figure:
    """Allowed downtime per year (and month, week, day) against availability, log y axis.

    ``table`` is :func:`availability.nines_table` (the default).  Availability
    levels are spaced by their number of nines; hovering shows the durations
    as the book prints them ("5.26 min").  100 % (no downtime at all) cannot
    sit on a log axis and is left out.
    """
    t = av.nines_table() if table is None else table
    cols = ["availability_percent", "per_year_s", "per_month_s", "per_week_s", "per_day_s"]
    if not isinstance(t, pd.DataFrame) or any(c not in t.columns for c in cols[:2]):
        raise ValueError(f"table must be availability.nines_table()'s frame (columns {cols})")
    t = t[t["availability_percent"] < 100].sort_values("availability_percent", kind="mergesort")
    if t.empty:
        raise ValueError("nines_figure(): no availability level below 100 % to plot")
    pct = t["availability_percent"].to_numpy(dtype=float)
    x = np.array([av.nines(p / 100.0) for p in pct])
    pct_text = [f"{p:g} %" for p in pct]
    fig = go.Figure()
    periods = [p for p in ("year", "month", "week", "day") if f"per_{p}_s" in t.columns]
    for i, period in enumerate(periods):
        y = t[f"per_{period}_s"].to_numpy(dtype=float)
        text = [av.format_duration(v) for v in y]
        main = period == "year"
        fig.add_trace(
            go.Scatter(
                x=x, y=y, name=f"per {period}", mode="lines+markers+text" if main else "lines+markers",
                text=text if main else None, textposition="middle right" if main else None,
                customdata=np.column_stack([pct_text, text]),
                hovertemplate=f"%{{customdata[0]}} available<br>%{{customdata[1]}} down per {period}<extra></extra>",
                line=dict(color=list(PALETTE.values())[i], width=3 if main else 1.5, dash="solid" if main else "dot"),
                marker=dict(size=9 if main else 6),
                visible=True if main else "legendonly",
            )
        )  # fmt: skip
    ys = np.concatenate([t[f"per_{p}_s"].to_numpy(dtype=float) for p in periods])
    ys = ys[ys > 0]
    lo, hi = float(ys.min()), float(ys.max())
    ticks = [(v, s) for v, s in _HUMAN_TICKS if lo / 1000 <= v <= hi * 1000]
    fig.update_yaxes(
        type="log", title_text="allowed downtime", tickmode="array",
        tickvals=[v for v, _ in ticks], ticktext=[s for _, s in ticks],
    )  # fmt: skip
    fig.update_xaxes(
        title_text="availability", tickmode="array", tickvals=list(x), ticktext=pct_text,
        range=[float(x.min()) - 0.3, float(x.max()) + 0.8],
    )  # fmt: skip
    fig.update_layout(title_text=title or "Allowed downtime per year for each level of availability")
    return apply_style(fig, height=420)


# --------------------------------------------------------------------------
# write loss


def write_loss(
    loss: an.WriteLoss,
    acked_log: Any,
    *,
    relative_to: float | None = None,
    title: str | None = None,
    max_points: int = 10_000,
) -> go.Figure:
    """Acknowledged writes over time, the lost and corrupt ones highlighted, the RPO span shaded.

    ``loss`` comes from :func:`analysis.lost_writes` on the same ``acked_log``
    (the write probe's log).  Each acknowledged write is a point at its ack
    time (x, seconds since ``relative_to``, default the first write) and its
    seq (y); writes never acknowledged are small grey points at their send
    time.  The RPO span runs from the consistent point to the last ack.
    """
    if not isinstance(loss, an.WriteLoss):
        raise TypeError(f"loss must be an analysis.WriteLoss (from lost_writes()), got {type(loss).__name__}")
    an.outages(acked_log)  # validates the records
    df = _frame(acked_log, "acked_log")
    oks = df[df["ok"]]
    ok_seqs = set(oks["seq"].tolist())
    unknown = sorted(set(loss.lost_seqs) - ok_seqs)
    if unknown or loss.acked != len(oks):
        raise ValueError(
            f"loss does not match acked_log: it counts {loss.acked} acknowledged writes (log: {len(oks)})"
            + (f" and lost seqs {unknown[:10]} that the log does not acknowledge" if unknown else "")
            + ": pass the log given to lost_writes()"
        )
    if relative_to is not None:
        ref = _number(relative_to, "relative_to")
        x_title = "ack time (s)"
    else:
        ref = float(df["sent"].iloc[0]) if len(df) else 0.0
        x_title = "ack time since the first write (s)"

    lost_set = set(loss.lost_seqs)
    corrupt_set = set(loss.corrupt_seqs)
    is_lost = oks["seq"].isin(lost_set).to_numpy()
    is_corrupt = oks["seq"].isin(corrupt_set).to_numpy()
    fig = go.Figure()

    pending = df[~df["ok"]]
    if len(pending):
        xs = (pending["sent"] - ref).to_numpy()
        ys = pending["seq"].to_numpy(dtype=float)
        idx = _thin(xs, ys, max_points)
        fig.add_trace(
            _scatter(
                len(idx), x=xs[idx], y=ys[idx], mode="markers",
                name=_count_name("not acknowledged", len(idx), len(pending)),
                marker=dict(color=LIGHT_GREY, size=4),
                hovertemplate="seq %{y}<br>sent t = %{x:.3f} s<br>not acknowledged<extra></extra>",
            )
        )  # fmt: skip
    kept = oks[~is_lost]
    if len(kept):
        xs = (kept["recv"] - ref).to_numpy()
        ys = kept["seq"].to_numpy(dtype=float)
        idx = _thin(xs, ys, max_points)
        fig.add_trace(
            _scatter(
                len(idx), x=xs[idx], y=ys[idx], mode="markers",
                name=_count_name("acknowledged, survived", len(idx), len(kept)),
                marker=dict(color=OK_COLOR, size=4), hovertemplate="seq %{y}<br>ack t = %{x:.3f} s<extra></extra>",
            )
        )  # fmt: skip
    for name, mask, color, symbol in (
        ("acknowledged, lost", is_lost & ~is_corrupt, LOST_COLOR, "x"),
        ("acknowledged, corrupt", is_corrupt, PALETTE["purple"], "diamond"),
    ):
        sel = oks[mask]
        if not len(sel):
            continue
        fig.add_trace(
            _scatter(
                len(sel), x=(sel["recv"] - ref).to_numpy(), y=sel["seq"].to_numpy(dtype=float), mode="markers",
                name=f"{name} ({len(sel):,})", marker=dict(color=color, size=9, symbol=symbol),
                hovertemplate=f"seq %{{y}}<br>ack t = %{{x:.3f}} s<br>{name}<extra></extra>",
            )
        )  # fmt: skip

    if loss.lost_acked and loss.last_acked_at is not None:
        start = loss.consistent_at if loss.consistent_at is not None else float(oks["sent"].iloc[0])
        x0, x1 = start - ref, loss.last_acked_at - ref
        fig.add_shape(
            type="rect", xref="x", yref="paper", x0=x0, x1=x1, y0=0, y1=1, fillcolor=LOST_COLOR,
            opacity=0.12, line=dict(width=0), layer="below", name="rpo",
        )  # fmt: skip
        fig.add_shape(
            type="line", xref="x", yref="paper", x0=x0, x1=x0, y0=0, y1=1,
            line=dict(color=LOST_COLOR, width=1.5, dash="dash"), name="consistent point",
        )  # fmt: skip
        fig.add_annotation(
            x=(x0 + x1) / 2, xref="x", y=1, yref="paper", yanchor="top", text=f"RPO {_fmt_s(loss.rpo_s)}",
            font=dict(color=LOST_COLOR, size=13), bgcolor="rgba(255,255,255,0.7)", name="rpo",
            hovertext=(
                "all writes acknowledged before the dashed line survived"
                if loss.consistent_at is not None
                else "even the first acknowledged write was lost"
            ),
        )  # fmt: skip
    else:
        fig.add_annotation(
            x=0.5, xref="paper", y=1, yref="paper", yanchor="top", text="no acknowledged write lost (RPO 0 s)",
            font=dict(color=PALETTE["green"]), name="rpo",
        )  # fmt: skip
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text="write seq")
    fig.update_layout(
        title_text=title or f"{loss.lost_acked:,} of {loss.acked:,} acknowledged writes lost"
        + (f" ({len(loss.corrupt_seqs):,} corrupt)" if loss.corrupt_seqs else "")
    )
    return apply_style(fig, height=380)


def topology(topo: Any, *, title: str | None = None, show_mgmt: bool = False) -> go.Figure:
    """Draw a lab from its topology (a ``hautils.topology.Topology``): hosts above, the
    networks (bridges) they plug into below, each link labelled with its NIC and address.

    The paper's network figures are drawn from the same YAML files the labs boot from, so a
    figure can never disagree with the lab it describes.  A figure-only topology
    (``figure: true``, a thesis figure with no lab) is drawn the same way, except that its
    networks are switches or links rather than bridges, a network without a subnet is
    labelled by its name alone, NICs enslaved to a bond say so ("eth0 (bond0)") and hosts
    show no memory size (they are never booted).

    Labels are laid out for a plot about :data:`TOPOLOGY_PLOT_PX` wide: each link's label
    takes the first height along its link (:data:`LABEL_ROWS`) where it covers no other
    label, widest labels first; when neighbouring network labels would touch, every other
    network sits a little lower; the x range grows to fit the outermost network labels.
    """
    figure = bool(getattr(topo, "figure", False))
    hosts = list(topo.hosts.values())
    nets = list(topo.networks.values())
    hx = {h.name: float(i) for i, h in enumerate(hosts)}
    # a network sits under the hosts it connects (mean x), spread so none overlap
    order = sorted(nets, key=lambda n: np.mean([hx[h.name] for h in hosts
                                                 for l in h.links if l.network == n.name] or [0.0]))
    span = max(len(hosts) - 1, 1)
    nx = {n.name: (span * i / max(len(order) - 1, 1) if len(order) > 1 else span / 2) for i, n in enumerate(order)}

    def net_label(n: Any, *extra: str) -> str:
        return " ".join(x for x in (n.name, str(n.subnet) if n.subnet else "", *extra) if x)

    # x range [-pad, span + pad]: at least 0.8, more if the outermost network labels need it
    pad = 0.8
    for _ in range(2):
        unit_px = TOPOLOGY_PLOT_PX / (span + 2 * pad)
        pad = max([0.8] + [_text_width(net_label(n), 13, unit_px) / 2 + 0.1 - min(nx[n.name], span - nx[n.name])
                           for n in order])
    unit_px = TOPOLOGY_PLOT_PX / (span + 2 * pad)

    # network labels that would run into their neighbour's: every other network one row lower
    gap = span / max(len(order) - 1, 1)
    crowded = any(_text_width(net_label(a), 13, unit_px) / 2 + _text_width(net_label(b), 13, unit_px) / 2 > gap
                  for a, b in zip(order, order[1:]))
    ny = {n.name: (-NET_STAGGER if crowded and i % 2 else 0.0) for i, n in enumerate(order)}

    height = 400 if crowded else 360
    vip_y = -0.32 - (NET_STAGGER + 0.12 if crowded else 0.0)  # below every network label, even a lowered one
    y_lo = min(-0.5 - (NET_STAGGER if crowded else 0.0), vip_y - 0.14 if getattr(topo, "virtual_ips", []) else 0.0)
    label_h = 16 / ((height - 130) / (1.35 - y_lo))  # a 10 px label's height (with its padding) in y units

    fig = go.Figure()
    links = [(hx[h.name], nx[l.network], ny[l.network],
              " ".join(x for x in (l.iface, f"({l.bond})" if getattr(l, "bond", "") else "",
                                   str(l.address.ip) if l.address else "") if x))
             for h in hosts for l in h.links]
    # the widest labels are the hardest to fit: they choose their place first
    placed: list[tuple[float, float, float]] = []  # link labels placed so far: x from, x to, y
    where = {}
    for i in sorted(range(len(links)), key=lambda i: -len(links[i][3])):
        x0, x1, y1, label = links[i]
        where[i] = _place_label(placed, x0, x1, y1, _text_width(label, 10, unit_px), label_h)
    for i, (x0, x1, y1, label) in enumerate(links):
        fig.add_trace(go.Scatter(x=[x0, x1], y=[1.0, y1], mode="lines", hoverinfo="skip", showlegend=False,
                                 line={"color": PALETTE["sky"], "width": 2}))
        fig.add_annotation(x=where[i][0], y=where[i][1], text=html.escape(label), showarrow=False,
                           font={"size": 10}, bgcolor="rgba(255,255,255,0.85)")
    fig.add_trace(go.Scatter(
        x=[hx[h.name] for h in hosts], y=[1.0] * len(hosts), mode="markers+text", name="hosts",
        text=[html.escape(h.name) for h in hosts], textposition="top center",
        marker={"symbol": "square", "size": 26, "color": PALETTE["blue"]},
        hovertext=[html.escape(f"{h.name}: {h.role or 'host'}" + ("" if figure else f", {h.memory_mb} MiB")
                               + (f", disks {', '.join(d.name for d in h.disks)}" if h.disks else ""))
                   for h in hosts], hoverinfo="text"))
    fig.add_trace(go.Scatter(
        x=[nx[n.name] for n in order], y=[ny[n.name] for n in order], mode="markers+text",
        name="networks (switches, links)" if figure else "networks (bridges)",
        text=[html.escape(net_label(n)) for n in order], textposition="bottom center",
        marker={"symbol": "diamond", "size": 18, "color": PALETTE["orange"]}, hoverinfo="text",
        hovertext=[html.escape(net_label(n, n.description)) for n in order]))
    for v in getattr(topo, "virtual_ips", []):
        fig.add_annotation(x=nx[v.network], y=vip_y, showarrow=False,
                           font={"size": 10}, text=html.escape(f"virtual IP {v.name} {v.address}"))
    fig.update_xaxes(visible=False, range=[-pad, span + pad])
    fig.update_yaxes(visible=False, range=[y_lo, 1.35])
    fig.update_layout(title=title or html.escape(f"{topo.name}: {topo.description}"),
                      legend={"orientation": "h", "y": -0.05})
    return apply_style(fig, height=height)


#: Width (px) a topology figure's plot area is laid out for (the book's text column); labels
#: are spaced for it, and a wider screen only adds room.
TOPOLOGY_PLOT_PX = 640
#: How far below the others every other network of a crowded topology figure sits.
NET_STAGGER = 0.22
#: Heights (as a fraction of the way from the network up to the host) a link label may take,
#: in order of preference: a few well spread ones, then a finer grid.
LABEL_ROWS = (0.28, 0.5, 0.72, 0.39, 0.61, 0.17, 0.83) + tuple(round(0.12 + 0.04 * i, 2) for i in range(19))
#: No link label lower than this (the networks' markers sit at 0).
LABEL_MIN_Y = 0.1


def _text_width(text: str, size: float, unit_px: float) -> float:
    """Rough width of ``text`` in x units (a sans-serif character is about 0.6 em wide)."""
    return (len(text) * 0.6 * size + 6) / unit_px


def _place_label(placed: list[tuple[float, float, float]], x0: float, x1: float, y1: float,
                 width: float, height: float) -> tuple[float, float]:
    """Where on the link from a host (x0, 1) to a network (x1, y1) its label goes: the first of
    :data:`LABEL_ROWS` where it overlaps no label placed before (or, if every row collides,
    the one where it overlaps least), never lower than :data:`LABEL_MIN_Y` (the network
    markers).  ``placed`` records the choice."""
    best: tuple[float, float, float] | None = None  # overlap, x, y
    for row in LABEL_ROWS:
        y = y1 + (1.0 - y1) * row
        if y < LABEL_MIN_Y:
            continue
        x = x1 + (x0 - x1) * row  # the link's x at that height
        lo, hi = x - width / 2, x + width / 2
        overlap = sum(max(0.0, min(hi, b) - max(lo, a)) * max(0.0, height - abs(y - yy))
                      for a, b, yy in placed)
        if best is None or overlap < best[0] - 1e-12:
            best = (overlap, x, y)
        if overlap == 0:
            break
    _, x, y = best
    placed.append((x - width / 2, x + width / 2, y))
    return x, y


# ---------------------------------------------------------------------------
# Showing figures in notebooks and in the offline book
# ---------------------------------------------------------------------------


class _BookRenderer(MimetypeRenderer):
    """Plotly renderer for the course's notebooks.

    It emits the figure twice: as plotly's own JSON mimetype (JupyterLab draws it) and as an
    HTML ``<div>`` *without* plotly.js.  The HTML book loads plotly.js once per page from its
    own ``_static/`` folder (``make book`` copies it from the installed plotly package), so
    pages work offline and notebooks stay small.  The div id is derived from the figure's
    content, so re-running a notebook does not change its outputs needlessly.
    """

    def to_mimebundle(self, fig_dict):
        import hashlib
        import json

        import plotly.io as pio

        blob = json.dumps(fig_dict, sort_keys=True, default=str).encode()
        div_id = "halab-" + hashlib.sha256(blob).hexdigest()[:12]
        html = pio.to_html(fig_dict, include_plotlyjs=False, full_html=False, div_id=div_id,
                           config={"displaylogo": False, "responsive": True}, validate=False)
        return {"application/vnd.plotly.v1+json": {"data": fig_dict.get("data", []),
                                                   "layout": fig_dict.get("layout", {})},
                "text/html": html}


def use_book_renderer() -> None:
    """Make every figure a notebook displays render in JupyterLab and in the offline book."""
    import plotly.io as pio

    pio.renderers["halab"] = _BookRenderer()
    pio.renderers.default = "halab"
