import math

import pandas as pd
import pytest

from hautils import availability as av


# ---------------------------------------------------------------- nines


def test_availability_from_nines_exact():
    assert av.availability_from_nines(5) == 0.99999
    assert av.availability_from_nines(3) == 0.999
    assert av.availability_from_nines(1) == 0.9
    assert av.availability_from_nines(0) == 0.0


def test_nines():
    assert av.nines(0.99999) == 5.0
    assert av.nines(0.9) == 1.0
    assert av.nines(0.9995) == pytest.approx(3.30103, abs=1e-5)
    assert round(av.nines(0.9995), 1) == 3.3
    assert av.nines(1.0) == math.inf
    assert av.nines(0.0) == 0.0


@pytest.mark.parametrize("n", [0.5, 1, 2, 3, 3.3, 4, 5, 6, 7])
def test_nines_roundtrip(n):
    assert av.nines(av.availability_from_nines(n)) == pytest.approx(n, abs=1e-6)


def test_percentage_is_rejected_with_hint():
    with pytest.raises(ValueError, match="percentage: divide by 100"):
        av.nines(99.9)
    with pytest.raises(ValueError, match="availability"):
        av.downtime_per(-0.1)
    with pytest.raises(ValueError, match="n .* >= 0"):
        av.availability_from_nines(-1)
    with pytest.raises(ValueError, match="must be a number"):
        av.nines("0.9")


def test_downtime_per_periods():
    a = 0.99999
    assert av.downtime_per(a) == pytest.approx(315.36)
    assert av.downtime_per(a, "year") == pytest.approx(365 * 86400 * 1e-5)
    assert av.downtime_per(a, "month") == pytest.approx(25.92)
    assert av.downtime_per(a, "week") == pytest.approx(6.048)
    assert av.downtime_per(a, "day") == pytest.approx(0.864)
    assert av.downtime_per(a, 1000.0) == pytest.approx(0.01)
    assert av.downtime_per(1.0, "year") == 0.0
    with pytest.raises(ValueError, match="period must be one of"):
        av.downtime_per(a, "fortnight")
    with pytest.raises(ValueError, match="period must be a positive"):
        av.downtime_per(a, 0)


# ---------------------------------------------------------------- table


def test_nines_table_columns_and_values():
    t = av.nines_table()
    assert list(t.columns) == ["availability_percent", "per_year_s", "per_month_s", "per_week_s", "per_day_s"]
    assert list(t["availability_percent"]) == [90, 99, 99.9, 99.99, 99.999, 99.9999]
    row = t.set_index("availability_percent").loc[99.999]
    assert row["per_year_s"] == pytest.approx(315.36)
    assert row["per_month_s"] == pytest.approx(25.92)
    assert row["per_week_s"] == pytest.approx(6.048)
    assert row["per_day_s"] == pytest.approx(0.864)


def test_nines_table_matches_published_figure():
    """Values of the classic table (Figure 1.1), to three significant digits."""
    f = av.format_nines_table().set_index("Availability")
    assert f.loc["99.999 %", "per year"] == "5.26 min"
    assert f.loc["99.999 %", "per month"] == "25.9 s"
    assert f.loc["99.999 %", "per week"] == "6.05 s"
    assert f.loc["99.999 %", "per day"] == "864 ms"
    assert f.loc["99.9 %", "per year"] == "8.76 h"
    assert f.loc["99.9 %", "per month"] == "43.2 min"
    assert f.loc["99.9 %", "per week"] == "10.1 min"
    assert f.loc["99.9 %", "per day"] == "1.44 min"
    assert f.loc["99.99 %", "per year"] == "52.6 min"
    assert f.loc["99 %", "per year"] == "3.65 days"
    assert f.loc["90 %", "per year"] == "36.5 days"
    assert f.loc["90 %", "per week"] == "16.8 h"
    assert f.loc["99.9999 %", "per year"] == "31.5 s"
    assert list(f.columns) == ["per year", "per month", "per week", "per day"]


def test_nines_table_custom_levels_and_errors():
    t = av.nines_table([50, 100])
    assert t["per_day_s"].tolist() == [43200.0, 0.0]
    with pytest.raises(ValueError, match=r"levels\[1\] must be a percentage"):
        av.nines_table([99, 0.5e3])


@pytest.mark.parametrize(
    "seconds, text",
    [
        (315.36, "5.26 min"),
        (25.92, "25.9 s"),
        (6.048, "6.05 s"),
        (0.864, "864 ms"),
        (31536.0, "8.76 h"),
        (8640.0, "2.40 h"),
        (259200.0, "3.00 days"),
        (1.0, "1.00 s"),
        (0.0, "0 s"),
        (59.999, "1.00 min"),  # rounding moves up a unit
        (0.0009996, "1.00 ms"),
        (3599.9, "1.00 h"),
        (86399.0, "1.00 days"),
        (2.5e-5, "25.0 µs"),
        (12345678.0, "143 days"),
    ],
)
def test_format_duration(seconds, text):
    assert av.format_duration(seconds) == text


def test_format_duration_rejects_negative():
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        av.format_duration(-1)


# ---------------------------------------------------------------- MTBF/MTTR


def test_availability_mtbf_mttr():
    assert av.availability(999, 1) == 0.999
    assert av.availability(1, 0) == 1.0
    assert av.availability(3, 1) == 0.75
    with pytest.raises(ValueError, match="mtbf must be > 0"):
        av.availability(0, 1)
    with pytest.raises(ValueError, match="mttr must be >= 0"):
        av.availability(10, -1)
    with pytest.raises(ValueError, match="mtbf must be finite"):
        av.availability(math.inf, 1)


def test_mttr_and_mtbf_for():
    assert av.mttr_for(0.999, 999) == pytest.approx(1.0)
    # a year between failures and five nines: 5.26 min repairs
    assert av.mttr_for(0.99999, 365 * 86400) == pytest.approx(315.36, rel=1e-4)
    assert av.mtbf_for(0.75, 1) == pytest.approx(3.0)
    assert av.mtbf_for(1.0, 0) == 0.0
    with pytest.raises(ValueError, match="availability must be > 0"):
        av.mttr_for(0.0, 10)
    with pytest.raises(ValueError, match="mttr == 0"):
        av.mtbf_for(1.0, 5)
    for a, f in [(0.9, 10.0), (0.99999, 1e6), (0.5, 3.0)]:
        assert av.availability(f, av.mttr_for(a, f)) == pytest.approx(a)


def test_series_parallel():
    assert av.series(0.99, 0.99) == pytest.approx(0.9801)
    assert av.series(0.9) == 0.9
    assert av.parallel(0.99, 0.99) == pytest.approx(0.9999)
    assert av.parallel(0.9, 0.9, 0.9) == pytest.approx(0.999)
    assert av.parallel(0.5) == 0.5
    # redundant pair in series with a single switch
    assert av.series(av.parallel(0.99, 0.99), 0.999) == pytest.approx(0.9999 * 0.999)
    with pytest.raises(ValueError, match="needs at least one"):
        av.series()
    with pytest.raises(ValueError, match="parallel argument 1"):
        av.parallel(0.9, 90)


def test_events():
    assert av.annual_downtime_from_events(12, 4) == 48
    assert av.availability_from_events(315.36, 1) == pytest.approx(0.99999)
    assert av.availability_from_events(0, 100) == 1.0
    with pytest.raises(ValueError, match="exceeds a year"):
        av.availability_from_events(86400, 366)
    with pytest.raises(ValueError, match="events_per_year must be >= 0"):
        av.annual_downtime_from_events(1, -1)


# ---------------------------------------------------------------- RTO/RPO, levels


def test_objective_and_meets():
    o = av.Objective("web", rto_s=30, rpo_s=0, description="no acked write may be lost")
    assert av.meets(o, 12.0, 0.0)
    assert av.meets(o, 30.0, 0.0)  # bounds are inclusive
    assert not av.meets(o, 30.01, 0.0)
    assert not av.meets(o, 1.0, 0.5)
    assert av.meets(av.Objective("any", math.inf, math.inf), 1e9, 1e9)
    with pytest.raises(ValueError, match="downtime_s must be >= 0"):
        av.meets(o, -1, 0)
    with pytest.raises(ValueError, match="Objective.rto_s"):
        av.Objective("x", -1, 0)
    with pytest.raises(ValueError, match="Objective.name"):
        av.Objective("", 1, 0)
    with pytest.raises(AttributeError):
        o.rto_s = 5  # frozen


def test_levels_and_classify():
    levels = av.GRAY_SIEWIOREK_CLASSES
    assert [lv.name for lv in levels][:3] == ["unmanaged", "managed", "well-managed"]
    assert [round(lv.nines) for lv in levels] == [1, 2, 3, 4, 5, 6, 7]
    assert av.classify(0.99999).name == "high-availability"
    assert av.classify(0.999995).name == "high-availability"
    assert av.classify(0.5) is None
    # from a yearly downtime budget: exactly 5.26 min a year is five nines
    assert av.classify(av.availability_from_events(315.36, 1)).name == "high-availability"
    custom = [av.AvailabilityLevel("gold", 0.9999), av.AvailabilityLevel("silver", 0.999)]
    assert av.classify(0.9995, custom).name == "silver"
    assert av.classify(0.9999, custom).name == "gold"
    assert custom[1].downtime_per_year_s == pytest.approx(31536.0)
    with pytest.raises(ValueError, match="min_availability"):
        av.AvailabilityLevel("bad", 99.9)


def test_nines_table_is_dataframe():
    assert isinstance(av.nines_table(), pd.DataFrame)
