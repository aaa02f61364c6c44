"""Studies (long runs a chapter cites): records append, the chapter's table and evidence filter."""

from __future__ import annotations

import importlib

import pytest


@pytest.fixture
def studies(tmp_path, monkeypatch):
    monkeypatch.setenv("HAUTILS_STUDIES", str(tmp_path))
    import hautils.studies as st

    st = importlib.reload(st)
    yield st
    monkeypatch.delenv("HAUTILS_STUDIES")
    importlib.reload(st)


def test_records_append_and_the_chapter_table_shows_them(studies):
    from hautils.scenarios import storage

    assert studies.load("heartbeat-failover") == []
    studies.append("heartbeat-failover", {"settings": {"fault": "power", "haresources": "a b"}, "trials": 20,
                                          "completed": 20, "errors": [], "erofs": 0, "lost_acked": 0,
                                          "downtime_s": [10.0, 12.0, 14.0], "evidence": None})
    name = studies.save_evidence("ev.txt", "### client: log\nnoise\nsession recovery timed out after 120 secs\n"
                                           "### server: log\nnothing here\n")
    studies.append("heartbeat-failover", {"settings": {"fault": "graceful"}, "trials": 20, "completed": 12,
                                          "errors": ["EROFS"], "erofs": 1, "lost_acked": 0,
                                          "downtime_s": [13.0], "evidence": name})
    runs = studies.load("heartbeat-failover")
    assert [r["completed"] for r in runs] == [20, 12] and all(r["when"].endswith("Z") for r in runs)
    table = storage.flake_study_table()
    assert list(table["trials run"]) == [20, 13] and list(table["failed"]) == [0, 1]
    assert table["downtime min/median/max (s)"][0] == "10.0 / 12.0 / 14.0"
    # evidence: matching lines with their headers, empty sections dropped
    assert storage.evidence_lines(name) == "### client: log\nsession recovery timed out after 120 secs"
