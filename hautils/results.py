"""The results record each chapter writes: ``results/<chapter>.json``.

One file per chapter holds a list of entries, one per (scenario, measure)::

    {"scenario": "heartbeat-power-failure", "measure": "downtime_s", "unit": "s",
     "values": [4.1, 4.3, 3.9], "paper": 5, "bound": [0, 16], "settings": {...}}

``values`` has one number per trial, ``paper`` is the value the original paper
reports (or null), ``bound`` the range the chapter checks (null for an open
side).  Files are written with a stable key order, indent 1 and values rounded
to 4 decimals so re-running a chapter gives small, readable diffs.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

#: The book's results records (``HAUTILS_RESULTS`` overrides): one file per chapter, next to the
#: chapters, whatever directory a notebook runs in.
RESULTS_DIR = Path(os.environ.get("HAUTILS_RESULTS", Path(__file__).resolve().parent.parent / "results"))

__all__ = ["Results", "KNOWN_UNITS", "FIELDS", "check", "load_all", "validate_entry"]

#: Entry fields, in the order they are written.
FIELDS = ("scenario", "measure", "unit", "values", "paper", "bound", "settings")
#: Default units of the common measures (``record`` needs ``unit=`` for others).
KNOWN_UNITS: dict[str, str] = {
    "downtime_s": "s",
    "detect_s": "s",
    "recover_s": "s",
    "rpo_s": "s",
    "lost_probes": "probes",
    "lost_acked_writes": "writes",
}
DECIMALS = 4
_CHAPTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _round(v: int | float) -> int | float:
    """Ints stay ints; floats get DECIMALS decimals (and -0.0 becomes 0.0)."""
    if isinstance(v, numbers.Integral):
        return int(v)
    return round(float(v), DECIMALS) + 0.0


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _json_clean(v: Any, field: str) -> Any:
    """Settings as plain JSON types with sorted keys, so the file is stable."""
    try:
        text = json.dumps(v, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field} must be JSON-serialisable: {exc}") from None
    return json.loads(text)


def _json_default(o: Any) -> Any:
    # numpy scalars and paths are common in settings; anything else is an error
    if isinstance(o, numbers.Integral):
        return int(o)
    if isinstance(o, numbers.Real):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
    raise TypeError(f"{type(o).__name__} {o!r} is not JSON-serialisable")


def validate_entry(entry: Mapping[str, Any], where: str = "entry") -> dict[str, Any]:
    """Check an entry and return it normalised (field order, rounding, lists).

    Raises ValueError naming the field: unknown or missing keys, empty or
    non-numeric values, a bad bound (not two numbers/nulls, or low > high).
    """
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a dict with keys {list(FIELDS)}, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed keys are {list(FIELDS)}")
    missing = [k for k in ("scenario", "measure", "unit", "values", "bound") if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")

    for key in ("scenario", "measure", "unit"):
        v = entry[key]
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{where}: {key!r} must be a non-empty string, got {v!r}")
    where = f"{where} ({entry['scenario']} {entry['measure']})"

    values = entry["values"]
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ValueError(f"{where}: 'values' must be a list of numbers (one per trial), got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{where}: 'values' is empty: record at least one trial")
    for i, v in enumerate(values):
        if not _is_number(v):
            raise ValueError(f"{where}: 'values'[{i}] must be a finite number, got {v!r}")

    paper = entry.get("paper")
    if paper is not None and not _is_number(paper):
        raise ValueError(f"{where}: 'paper' must be a number or None, got {paper!r}")

    bound = entry["bound"]
    if isinstance(bound, (str, bytes, Mapping)) or not isinstance(bound, Sequence) or len(bound) != 2:
        raise ValueError(f"{where}: 'bound' must be [low, high] (None for an open side), got {bound!r}")
    lo, hi = bound
    for name, b in (("low", lo), ("high", hi)):
        if b is not None and not _is_number(b):
            raise ValueError(f"{where}: 'bound' {name} must be a number or None, got {b!r}")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{where}: 'bound' low {lo!r} > high {hi!r}: swap them")

    settings = entry.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise ValueError(f"{where}: 'settings' must be a dict or None, got {settings!r}")

    return {
        "scenario": entry["scenario"],
        "measure": entry["measure"],
        "unit": entry["unit"],
        "values": [_round(v) for v in values],
        "paper": None if paper is None else _round(paper),
        "bound": [None if lo is None else _round(lo), None if hi is None else _round(hi)],
        "settings": _json_clean(settings, f"{where}: 'settings'"),
    }


def _fmt(x: float | None) -> str:
    """16.0 -> "16", 2.5 -> "2.5": bounds read like the chapter text."""
    if x is None:
        return "?"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return repr(x)


def _range(lo: float | None, hi: float | None) -> str:
    if lo is None and hi is None:
        return "(-inf, inf)"
    if lo is None:
        return f"(-inf, {_fmt(hi)}]"
    if hi is None:
        return f"[{_fmt(lo)}, inf)"
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


def check(entry: Mapping[str, Any]) -> str:
    """Check every value of an entry against its bound (inclusive).

    Returns a deterministic line such as
    "heartbeat-power-failure downtime_s: all 3 trials within [0, 16] s: OK";
    raises AssertionError naming the scenario, the offending values and the
    bound otherwise.
    """
    e = validate_entry(entry)
    lo, hi = e["bound"]
    values = e["values"]
    bad = [v for v in values if (lo is not None and v < lo) or (hi is not None and v > hi)]
    head = f"{e['scenario']} {e['measure']}"
    rng = f"{_range(lo, hi)} {e['unit']}"
    n = len(values)
    if bad:
        raise AssertionError(
            f"{head}: {len(bad)} of {n} trial{'s' if n != 1 else ''} outside {rng}: "
            f"{bad} (all values: {values})"
        )
    what = "the 1 trial" if n == 1 else f"all {n} trials"
    return f"{head}: {what} within {rng}: OK"


class Results:
    """The results of one chapter; ``record`` measures, then ``save``.

    ``Results(chapter)`` starts empty; ``Results.load(chapter)`` continues
    from the saved file (use it to update some entries and keep the rest).
    """

    def __init__(self, chapter: str, root: str | os.PathLike[str] | None = None):
        if not isinstance(chapter, str) or not _CHAPTER_RE.match(chapter):
            raise ValueError(
                f"chapter must be a file-name-safe name like 'ch03-heartbeat' (letters, digits, . _ -), got {chapter!r}"
            )
        self.chapter = chapter
        self.root = Path(root) if root is not None else RESULTS_DIR
        self.entries: list[dict[str, Any]] = []

    @property
    def path(self) -> Path:
        """The JSON file this chapter is saved to."""
        return self.root / f"{self.chapter}.json"

    def record(
        self,
        scenario: str,
        measure: str,
        values: Iterable[float],
        *,
        unit: str | None = None,
        paper: float | None = None,
        bound: Sequence[float | None],
        settings: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add or replace the entry for (scenario, measure); returns the stored entry.

        ``unit`` defaults from :data:`KNOWN_UNITS`; floats are rounded to 4
        decimals here, so what is in memory is what gets saved.
        """
        if unit is None:
            unit = KNOWN_UNITS.get(measure) if isinstance(measure, str) else None
            if unit is None:
                raise ValueError(
                    f"unit is required for measure {measure!r} (defaults exist only for {sorted(KNOWN_UNITS)})"
                )
        entry = validate_entry(
            {
                "scenario": scenario,
                "measure": measure,
                "unit": unit,
                "values": values,
                "paper": paper,
                "bound": bound,
                "settings": settings,
            },
            where=f"{self.chapter} entry",
        )
        for i, old in enumerate(self.entries):
            if (old["scenario"], old["measure"]) == (scenario, measure):
                self.entries[i] = entry
                break
        else:
            self.entries.append(entry)
        return entry

    def get(self, scenario: str, measure: str) -> dict[str, Any]:
        """The entry for (scenario, measure); KeyError naming what exists otherwise."""
        for e in self.entries:
            if (e["scenario"], e["measure"]) == (scenario, measure):
                return e
        have = [(e["scenario"], e["measure"]) for e in self.entries]
        raise KeyError(f"{self.chapter}: no entry for ({scenario!r}, {measure!r}); recorded: {have}")

    def check_all(self) -> list[str]:
        """:func:`check` every entry (raises on the first one out of bound)."""
        return [check(e) for e in self.entries]

    def to_json(self) -> str:
        """The file content: entries in recording order, fields in FIELDS order."""
        return json.dumps(self.entries, indent=1, ensure_ascii=False, allow_nan=False) + "\n"

    def save(self) -> Path:
        """Write ``<root>/<chapter>.json`` atomically; returns the path."""
        self.root.mkdir(parents=True, exist_ok=True)
        text = self.to_json()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.chapter}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path

    @classmethod
    def load(cls, chapter: str, root: str | os.PathLike[str] | None = None) -> Results:
        """Read ``<root>/<chapter>.json`` back, validating every entry."""
        r = cls(chapter, root)
        path = r.path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no results for chapter {chapter!r}: {path} does not exist (run the chapter to create it)"
            ) from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of entries, got {type(data).__name__}")
        seen: set[tuple[str, str]] = set()
        for i, raw in enumerate(data):
            e = validate_entry(raw, where=f"{path} entry {i}")
            key = (e["scenario"], e["measure"])
            if key in seen:
                raise ValueError(f"{path} entry {i}: duplicate (scenario, measure) {key}")
            seen.add(key)
            r.entries.append(e)
        return r

    def __repr__(self) -> str:
        return f"Results({self.chapter!r}, root={str(self.root)!r}, entries={len(self.entries)})"


_ALL_COLUMNS = [
    "chapter", "scenario", "measure", "unit", "n", "min", "median", "max",
    "paper", "bound_low", "bound_high", "values", "settings",
]  # fmt: skip


def load_all(root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Every entry of every ``<root>/*.json``, one row each, with min/median/max of the values.

    Rows are ordered by chapter (file name), then by entry order in the file.
    """
    rows = []
    root = Path(root) if root is not None else RESULTS_DIR
    for path in sorted(root.glob("*.json")):
        res = Results.load(path.stem, root)
        for e in res.entries:
            v = e["values"]
            rows.append(
                {
                    "chapter": res.chapter,
                    "scenario": e["scenario"],
                    "measure": e["measure"],
                    "unit": e["unit"],
                    "n": len(v),
                    "min": min(v),
                    "median": statistics.median(v),
                    "max": max(v),
                    "paper": e["paper"],
                    "bound_low": e["bound"][0],
                    "bound_high": e["bound"][1],
                    "values": v,
                    "settings": e["settings"],
                }
            )
    return pd.DataFrame(rows, columns=_ALL_COLUMNS)
