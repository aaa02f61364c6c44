"""Long runs that a chapter cites but does not repeat: N consecutive failovers to show a flake
gone, or a reproduction that caught one.  Scripts (``scripts/try_storage.py --record``) append
their outcome to ``results/studies/<name>.json``; the chapter reads and shows it.  Numbers come
from the lab run that produced them, never typed.

A record::

    {"study": "heartbeat-failover", "when": "2026-12-02T18:20:00Z", "script": "...command line...",
     "settings": {...}, "trials": 20, "completed": 20, "errors": ["..."], "erofs": 0,
     "lost_acked": 0, "downtime_s": [...], "evidence": "<file name>" or null}
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STUDIES_DIR = Path(os.environ.get("HAUTILS_STUDIES", Path(__file__).resolve().parent.parent / "results" / "studies"))


def path(study: str) -> Path:
    return STUDIES_DIR / f"{study}.json"


def append(study: str, record: dict[str, Any]) -> Path:
    """Add one run's record (a ``when`` timestamp is added) to the study's file."""
    STUDIES_DIR.mkdir(parents=True, exist_ok=True)
    p = path(study)
    runs = load(study)
    runs.append({"study": study, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record})
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, p)
    return p


def load(study: str) -> list[dict[str, Any]]:
    try:
        return json.loads(path(study).read_text())
    except FileNotFoundError:
        return []


def save_evidence(name: str, text: str) -> str:
    """Keep a text (log lines) next to the studies; returns its file name for a record."""
    STUDIES_DIR.mkdir(parents=True, exist_ok=True)
    (STUDIES_DIR / name).write_text(text)
    return name


def evidence(name: str) -> str:
    return (STUDIES_DIR / name).read_text()
