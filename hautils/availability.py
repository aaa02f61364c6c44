"""Availability arithmetic: nines, allowed downtime, MTBF/MTTR, RTO/RPO.

Everything here is pure maths so the book can *derive* its tables (e.g. the
"nines" table of Figure 1.1) from formulas instead of copying numbers, and so
chapters can turn measured downtimes into availability figures the same way.

Availabilities are fractions in [0, 1] (0.999, not 99.9).  Only
:func:`nines_table` takes percentages, because that is how the table is read.

Period lengths follow the convention of the classic nines table: a year is
365 days, a month is 30 days, a week is 7 days.  These are the only lengths
that reproduce the published values when rounded to three significant digits:
99.999 % gives 5.26 min/year, 25.9 s/month, 6.05 s/week, 864 ms/day, and
99.9 % gives 8.76 h/year.  (A 365.25-day year gives 8.77 h for 99.9 %, and a
month of year/12 gives 26.3 s instead of 25.9 s.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

__all__ = [
    "DAY_S",
    "PERIOD_S",
    "Objective",
    "AvailabilityLevel",
    "GRAY_SIEWIOREK_CLASSES",
    "availability_from_nines",
    "nines",
    "downtime_per",
    "nines_table",
    "format_duration",
    "format_nines_table",
    "availability",
    "mttr_for",
    "mtbf_for",
    "series",
    "parallel",
    "annual_downtime_from_events",
    "availability_from_events",
    "meets",
    "classify",
]

DAY_S = 86_400.0
#: Seconds per named period (365-day year, 30-day month; see module docstring).
PERIOD_S: dict[str, float] = {
    "year": 365 * DAY_S,
    "month": 30 * DAY_S,
    "week": 7 * DAY_S,
    "day": DAY_S,
    "hour": 3_600.0,
}


# --------------------------------------------------------------------------
# validation helpers


def _number(value: object, field: str) -> float:
    """Return ``value`` as a finite float or raise a ValueError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{field} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{field} must be finite, got {value!r}")
    return result


def _fraction(value: object, field: str = "availability") -> float:
    """Validate an availability given as a fraction; catch percentages early."""
    a = _number(value, field)
    if not 0.0 <= a <= 1.0:
        hint = " (looks like a percentage: divide by 100)" if 1.0 < a <= 100.0 else ""
        raise ValueError(f"{field} must be a fraction in [0, 1], got {a!r}{hint}")
    return a


def _period_s(period: str | float) -> float:
    if isinstance(period, str):
        try:
            return PERIOD_S[period]
        except KeyError:
            raise ValueError(
                f"period must be one of {sorted(PERIOD_S)} or a number of seconds, "
                f"got {period!r}"
            ) from None
    p = _number(period, "period")
    if p <= 0:
        raise ValueError(f"period must be a positive number of seconds, got {p!r}")
    return p


# --------------------------------------------------------------------------
# nines


def availability_from_nines(n: float) -> float:
    """Availability with ``n`` nines: 5 -> 0.99999, 3.3 -> 0.99950 (about)."""
    n = _number(n, "n")
    if n < 0:
        raise ValueError(f"n (number of nines) must be >= 0, got {n!r}")
    return 1.0 - 10.0 ** (-n)


def nines(avail: float) -> float:
    """Number of nines of an availability: 0.9995 -> 3.30, 1.0 -> inf.

    Rounded to 9 decimals so that ``nines(0.99999)`` is exactly 5.0 instead of
    showing the float noise of ``log10``.
    """
    a = _fraction(avail)
    if a == 1.0:
        return math.inf
    return round(-math.log10(1.0 - a), 9)


def downtime_per(avail: float, period: str | float = "year") -> float:
    """Seconds of downtime per ``period`` that an availability allows.

    ``period`` is "year" (365 d), "month" (30 d), "week", "day", "hour" or a
    number of seconds.
    """
    return (1.0 - _fraction(avail)) * _period_s(period)


_TABLE_PERIODS = ("year", "month", "week", "day")


def nines_table(levels: Iterable[float] = (90, 99, 99.9, 99.99, 99.999, 99.9999)) -> pd.DataFrame:
    """Allowed downtime per year/month/week/day for availability percentages.

    Regenerates the nines table (Figure 1.1) from the formula.  Columns:
    ``availability_percent``, ``per_year_s``, ``per_month_s``, ``per_week_s``,
    ``per_day_s`` (seconds, unrounded).
    """
    rows = []
    for i, pct in enumerate(levels):
        p = _number(pct, f"levels[{i}]")
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"levels[{i}] must be a percentage in [0, 100], got {p!r}")
        row: dict[str, float] = {"availability_percent": p}
        for period in _TABLE_PERIODS:
            row[f"per_{period}_s"] = (100.0 - p) / 100.0 * PERIOD_S[period]
        rows.append(row)
    return pd.DataFrame(rows, columns=["availability_percent"] + [f"per_{p}_s" for p in _TABLE_PERIODS])


# ascending units: (name, seconds, largest value before switching to the next)
_UNITS: tuple[tuple[str, float, float], ...] = (
    ("µs", 1e-6, 1000.0),
    ("ms", 1e-3, 1000.0),
    ("s", 1.0, 60.0),
    ("min", 60.0, 60.0),
    ("h", 3600.0, 24.0),
    ("days", DAY_S, math.inf),
)


def _sig3(x: float) -> str:
    """Three significant digits, keeping trailing zeros (2.40, 72.0, 864)."""
    if x == 0:
        return "0"
    # round first, then choose the decimals from the rounded value, so that
    # 0.99996 becomes "1.00" and not "1.000"
    x = round(x, 2 - math.floor(math.log10(abs(x))))
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def format_duration(seconds: float) -> str:
    """Human-readable duration with 3 significant digits: 315.36 -> "5.26 min".

    Picks the largest unit in which the value is >= 1 (µs, ms, s, min, h,
    days) and moves up a unit when rounding reaches the next one, so 59.99 s
    prints as "1.00 min", never "60.0 s".
    """
    s = _number(seconds, "seconds")
    if s < 0:
        raise ValueError(f"seconds must be >= 0, got {s!r}")
    if s == 0:
        return "0 s"
    for name, size, limit in _UNITS:
        v = s / size
        if v < limit or name == "days":
            text = _sig3(v)
            if float(text) < limit:
                return f"{text} {name}"
    raise AssertionError("unreachable")  # pragma: no cover


def format_nines_table(table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The nines table as text, as printed in the book (e.g. "99.999 %", "5.26 min")."""
    t = nines_table() if table is None else table
    out = pd.DataFrame(
        {
            "Availability": [f"{p:g} %" for p in t["availability_percent"]],
            **{
                f"per {period}": [format_duration(v) for v in t[f"per_{period}_s"]]
                for period in _TABLE_PERIODS
            },
        }
    )
    return out


# --------------------------------------------------------------------------
# MTBF / MTTR and composition


def availability(mtbf: float, mttr: float) -> float:
    """Steady-state availability MTBF / (MTBF + MTTR); both in the same unit."""
    f = _number(mtbf, "mtbf")
    r = _number(mttr, "mttr")
    if f <= 0:
        raise ValueError(f"mtbf must be > 0 (mean time between failures), got {f!r}")
    if r < 0:
        raise ValueError(f"mttr must be >= 0 (mean time to repair), got {r!r}")
    return f / (f + r)


def mttr_for(avail: float, mtbf: float) -> float:
    """Largest MTTR that still reaches ``avail`` for a given MTBF (same unit as mtbf)."""
    a = _fraction(avail)
    f = _number(mtbf, "mtbf")
    if f <= 0:
        raise ValueError(f"mtbf must be > 0, got {f!r}")
    if a == 0:
        raise ValueError("availability must be > 0: no finite MTTR gives 0 availability")
    return f * (1.0 - a) / a


def mtbf_for(avail: float, mttr: float) -> float:
    """Smallest MTBF that reaches ``avail`` for a given MTTR (same unit as mttr)."""
    a = _fraction(avail)
    r = _number(mttr, "mttr")
    if r < 0:
        raise ValueError(f"mttr must be >= 0, got {r!r}")
    if a == 1.0:
        if r == 0:
            return 0.0
        raise ValueError("availability 1.0 needs mttr == 0: no finite MTBF reaches it")
    return r * a / (1.0 - a)


def _fractions(values: Sequence[float], name: str) -> list[float]:
    if len(values) == 0:
        raise ValueError(f"{name}() needs at least one availability")
    return [_fraction(v, f"{name} argument {i}") for i, v in enumerate(values)]


def series(*avails: float) -> float:
    """Availability of components that are *all* needed: the product.

    Chaining components always lowers availability: 0.99 * 0.99 = 0.9801.
    """
    return math.prod(_fractions(avails, "series"))


def parallel(*avails: float) -> float:
    """Availability of redundant components of which *one* suffices: 1 - prod(1 - a).

    Assumes independent failures and perfect failover, so it is an upper
    bound that the measured failover downtime of the chapters then corrects.
    """
    return 1.0 - math.prod(1.0 - a for a in _fractions(avails, "parallel"))


def annual_downtime_from_events(downtime_s_per_event: float, events_per_year: float) -> float:
    """Seconds of downtime per year when each of ``events_per_year`` costs a measured downtime.

    This is how a measured failover time becomes a yearly figure: a 12 s
    failover, 4 times a year, is 48 s of downtime a year.
    """
    d = _number(downtime_s_per_event, "downtime_s_per_event")
    e = _number(events_per_year, "events_per_year")
    if d < 0:
        raise ValueError(f"downtime_s_per_event must be >= 0, got {d!r}")
    if e < 0:
        raise ValueError(f"events_per_year must be >= 0, got {e!r}")
    return d * e


def availability_from_events(downtime_s_per_event: float, events_per_year: float) -> float:
    """Availability over a 365-day year given per-event downtime and event rate."""
    total = annual_downtime_from_events(downtime_s_per_event, events_per_year)
    if total > PERIOD_S["year"]:
        raise ValueError(
            f"downtime_s_per_event * events_per_year = {total!r} s exceeds a year "
            f"({PERIOD_S['year']!r} s): check the units (seconds per event, events per year)"
        )
    return 1.0 - total / PERIOD_S["year"]


# --------------------------------------------------------------------------
# RTO / RPO and availability levels


@dataclass(frozen=True)
class Objective:
    """A recovery objective: at most ``rto_s`` downtime and ``rpo_s`` of lost data.

    RTO (recovery time objective) bounds how long the service may be down;
    RPO (recovery point objective) bounds how much recent data (measured as
    time) may be lost.  Use ``math.inf`` for "no objective".
    """

    name: str
    rto_s: float
    rpo_s: float
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Objective.name must be a non-empty string, got {self.name!r}")
        for field in ("rto_s", "rpo_s"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v < 0:
                raise ValueError(f"Objective.{field} must be a number >= 0 (math.inf for none), got {v!r}")


def meets(objective: Objective, downtime_s: float, lost_s: float) -> bool:
    """True if a measured outage (downtime and data-loss window, seconds) meets the objective."""
    d = _number(downtime_s, "downtime_s")
    lost = _number(lost_s, "lost_s")
    if d < 0:
        raise ValueError(f"downtime_s must be >= 0, got {d!r}")
    if lost < 0:
        raise ValueError(f"lost_s must be >= 0, got {lost!r}")
    return d <= objective.rto_s and lost <= objective.rpo_s


@dataclass(frozen=True)
class AvailabilityLevel:
    """A named level (class) of availability: reached when availability >= ``min_availability``."""

    name: str
    min_availability: float
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"AvailabilityLevel.name must be a non-empty string, got {self.name!r}")
        _fraction(self.min_availability, "AvailabilityLevel.min_availability")

    @property
    def nines(self) -> float:
        """Number of nines of the level's threshold."""
        return nines(self.min_availability)

    @property
    def downtime_per_year_s(self) -> float:
        """Most downtime per 365-day year the level allows."""
        return downtime_per(self.min_availability, "year")


#: An example classification (Gray & Siewiorek, 1991): class n has n nines.
GRAY_SIEWIOREK_CLASSES: tuple[AvailabilityLevel, ...] = tuple(
    AvailabilityLevel(name, availability_from_nines(n), f"class {n}")
    for n, name in enumerate(
        (
            "unmanaged",
            "managed",
            "well-managed",
            "fault-tolerant",
            "high-availability",
            "very-high-availability",
            "ultra-availability",
        ),
        start=1,
    )
)


def classify(avail: float, levels: Iterable[AvailabilityLevel] = GRAY_SIEWIOREK_CLASSES) -> AvailabilityLevel | None:
    """The highest level whose threshold ``avail`` reaches, or None if it reaches none.

    Thresholds are compared with a 1e-12 tolerance so that an availability
    computed as ``1 - downtime/year`` is not pushed a level down by float noise.
    """
    a = _fraction(avail)
    best: AvailabilityLevel | None = None
    for level in levels:
        if a + 1e-12 >= level.min_availability and (
            best is None or level.min_availability > best.min_availability
        ):
            best = level
    return best
