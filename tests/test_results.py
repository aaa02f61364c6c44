import json
import math

import numpy as np
import pandas as pd
import pytest

from hautils.results import FIELDS, Results, check, load_all, validate_entry


def entry(**kw):
    e = {
        "scenario": "heartbeat-power-failure",
        "measure": "downtime_s",
        "unit": "s",
        "values": [4.1, 4.3, 3.9],
        "paper": 5,
        "bound": [0, 16],
        "settings": {"deadtime": 10},
    }
    e.update(kw)
    return e


# ------------------------------------------------------------------ record / save / load


def test_record_save_load_roundtrip(tmp_path):
    r = Results("ch03-heartbeat", root=tmp_path)
    stored = r.record(
        "heartbeat-power-failure",
        "downtime_s",
        [4.123456789, 4.3, np.float64(3.9)],
        paper=5,
        bound=(0, 16),
        settings={"warntime": 5, "deadtime": 10},
    )
    assert stored["unit"] == "s"  # default for downtime_s
    assert stored["values"] == [4.1235, 4.3, 3.9]  # rounded to 4 decimals
    r.record("raid-member-failure", "lost_probes", [0, 0, np.int64(0)], bound=(0, 0))
    path = r.save()
    assert path == tmp_path / "ch03-heartbeat.json"

    text = path.read_text()
    assert text.endswith("]\n")
    data = json.loads(text)
    assert [list(e) for e in data] == [list(FIELDS)] * 2  # stable field order
    assert list(data[0]["settings"]) == ["deadtime", "warntime"]  # sorted settings
    assert data[1]["values"] == [0, 0, 0] and data[1]["unit"] == "probes"
    assert data[1]["paper"] is None and data[1]["settings"] == {}
    assert text.startswith('[\n {\n  "scenario": "heartbeat-power-failure",\n  "measure": "downtime_s",')

    again = Results.load("ch03-heartbeat", root=tmp_path)
    assert again.entries == r.entries
    # saving unchanged results gives byte-identical files (small diffs)
    again.save()
    assert path.read_text() == text


def test_record_replaces_same_scenario_and_measure(tmp_path):
    r = Results("ch", root=tmp_path)
    r.record("a", "downtime_s", [1.0], bound=(0, 2))
    r.record("b", "downtime_s", [1.0], bound=(0, 2))
    r.record("a", "lost_probes", [3], bound=(0, 5))
    r.record("a", "downtime_s", [1.5, 1.6], bound=(0, 2))
    assert [(e["scenario"], e["measure"]) for e in r.entries] == [
        ("a", "downtime_s"),
        ("b", "downtime_s"),
        ("a", "lost_probes"),
    ]
    assert r.get("a", "downtime_s")["values"] == [1.5, 1.6]
    with pytest.raises(KeyError, match="no entry for \\('c', 'downtime_s'\\)"):
        r.get("c", "downtime_s")


def test_unit_required_for_unknown_measure(tmp_path):
    r = Results("ch", root=tmp_path)
    with pytest.raises(ValueError, match="unit is required for measure 'throughput'"):
        r.record("a", "throughput", [1.0], bound=(0, 2))
    e = r.record("a", "throughput", [1.0], unit="MB/s", bound=(0, 2))
    assert e["unit"] == "MB/s"


def test_save_creates_root(tmp_path):
    r = Results("ch01", root=tmp_path / "deep" / "results")
    r.record("s", "downtime_s", [1], bound=(0, 1))
    assert r.save().exists()
    assert not list((tmp_path / "deep" / "results").glob(".*tmp"))  # no temp file left


def test_chapter_name_validated(tmp_path):
    with pytest.raises(ValueError, match="chapter must be a file-name-safe name"):
        Results("../evil", root=tmp_path)
    with pytest.raises(ValueError, match="chapter"):
        Results("", root=tmp_path)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results for chapter 'nope'"):
        Results.load("nope", root=tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        Results.load("bad", root=tmp_path)
    (tmp_path / "obj.json").write_text("{}")
    with pytest.raises(ValueError, match="expected a list of entries"):
        Results.load("obj", root=tmp_path)
    (tmp_path / "dup.json").write_text(json.dumps([entry(), entry()]))
    with pytest.raises(ValueError, match="entry 1: duplicate"):
        Results.load("dup", root=tmp_path)
    (tmp_path / "extra.json").write_text(json.dumps([entry(comment="hi")]))
    with pytest.raises(ValueError, match=r"entry 0: unknown key\(s\) \['comment'\]"):
        Results.load("extra", root=tmp_path)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "change, message",
    [
        ({"values": []}, r"'values' is empty"),
        ({"values": [1.0, "2"]}, r"'values'\[1\] must be a finite number, got '2'"),
        ({"values": [1.0, None]}, r"'values'\[1\] must be a finite number"),
        ({"values": [math.nan]}, r"'values'\[0\] must be a finite number"),
        ({"values": [True]}, r"'values'\[0\] must be a finite number"),
        ({"values": 3.0}, r"'values' must be a list of numbers"),
        ({"bound": [16, 0]}, r"'bound' low 16 > high 0: swap them"),
        ({"bound": [0]}, r"'bound' must be \[low, high\]"),
        ({"bound": [0, "x"]}, r"'bound' high must be a number or None"),
        ({"paper": "5 s"}, r"'paper' must be a number or None"),
        ({"scenario": ""}, r"'scenario' must be a non-empty string"),
        ({"unit": None}, r"'unit' must be a non-empty string"),
        ({"settings": [1]}, r"'settings' must be a dict"),
        ({"settings": {"f": object()}}, r"'settings' must be JSON-serialisable"),
        ({"extra": 1}, r"unknown key\(s\) \['extra'\]"),
    ],
)
def test_validation_names_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        validate_entry(entry(**change))


def test_validation_missing_key():
    e = entry()
    del e["bound"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['bound'\]"):
        validate_entry(e)


def test_record_validates_too(tmp_path):
    r = Results("ch", root=tmp_path)
    with pytest.raises(ValueError, match="'bound' low 3 > high 1"):
        r.record("s", "downtime_s", [1.0], bound=(3, 1))
    with pytest.raises(ValueError, match="'values' is empty"):
        r.record("s", "downtime_s", [], bound=(0, 1))
    assert r.entries == []


def test_settings_normalised():
    e = validate_entry(entry(settings={"b": (1, 2), "a": {"z": np.int64(3), "y": 0.5}}))
    assert e["settings"] == {"a": {"y": 0.5, "z": 3}, "b": [1, 2]}
    assert list(e["settings"]) == ["a", "b"]


# ------------------------------------------------------------------ check


def test_check_ok_text():
    assert check(entry()) == "heartbeat-power-failure downtime_s: all 3 trials within [0, 16] s: OK"
    assert (
        check(entry(values=[0], measure="lost_acked_writes", unit="writes", bound=[0, 0]))
        == "heartbeat-power-failure lost_acked_writes: the 1 trial within [0, 0] writes: OK"
    )
    assert check(entry(bound=[0.5, None])) == "heartbeat-power-failure downtime_s: all 3 trials within [0.5, inf) s: OK"
    # bounds are inclusive
    assert check(entry(values=[0.0, 16.0])).endswith("all 2 trials within [0, 16] s: OK")


def test_check_failure_names_scenario_values_and_bound():
    with pytest.raises(AssertionError) as ei:
        check(entry(values=[3.1, 17.25, 18.0]))
    assert str(ei.value) == (
        "heartbeat-power-failure downtime_s: 2 of 3 trials outside [0, 16] s: "
        "[17.25, 18.0] (all values: [3.1, 17.25, 18.0])"
    )
    with pytest.raises(AssertionError, match=r"1 of 1 trial outside \(-inf, 2\] s"):
        check(entry(values=[2.5], bound=[None, 2]))


def test_check_all(tmp_path):
    r = Results("ch", root=tmp_path)
    r.record("a", "downtime_s", [1.0], bound=(0, 2))
    r.record("b", "lost_probes", [1, 2], bound=(0, 5))
    assert r.check_all() == [
        "a downtime_s: the 1 trial within [0, 2] s: OK",
        "b lost_probes: all 2 trials within [0, 5] probes: OK",
    ]
    r.record("b", "lost_probes", [1, 9], bound=(0, 5))
    with pytest.raises(AssertionError, match="b lost_probes: 1 of 2 trials outside"):
        r.check_all()


# ------------------------------------------------------------------ load_all


def test_load_all(tmp_path):
    r = Results("ch05-drbd", root=tmp_path)
    r.record("drbd-failover", "downtime_s", [2.0, 4.0, 3.0], paper=3, bound=(0, 10))
    r.record("drbd-failover", "lost_acked_writes", [0, 0, 0], bound=(0, 0))
    r.save()
    r2 = Results("ch03-heartbeat", root=tmp_path)
    r2.record("hb", "downtime_s", [10.5], bound=(0, None))
    r2.save()
    (tmp_path / "notes.txt").write_text("ignored")

    df = load_all(tmp_path)
    assert list(df["chapter"]) == ["ch03-heartbeat", "ch05-drbd", "ch05-drbd"]
    assert list(df["measure"]) == ["downtime_s", "downtime_s", "lost_acked_writes"]
    row = df.iloc[1]
    assert (row["n"], row["min"], row["median"], row["max"]) == (3, 2.0, 3.0, 4.0)
    assert row["paper"] == 3
    assert (row["bound_low"], row["bound_high"]) == (0, 10)
    assert row["values"] == [2.0, 4.0, 3.0]
    assert pd.isna(df.iloc[0]["bound_high"])


def test_load_all_empty(tmp_path):
    df = load_all(tmp_path)
    assert df.empty
    assert {"chapter", "scenario", "measure", "min", "median", "max"} <= set(df.columns)
