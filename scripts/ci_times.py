#!/usr/bin/env python3
"""Where CI's time went: a table built from pytest's junit XML files and .ci/run's step log.

Reads, in DIR (default artifacts/timings):
  <step>.xml   pytest --junitxml of a step (the Makefile writes unit-and-lab.xml, nbval.xml and
               test-book.xml); each testcase has a file and a time in seconds (setup, call and
               teardown together). nbval's testcases are notebook cells
               ("chapters/02-storage.ipynb::Cell 12"): a notebook's time is the sum of its cells'.
  steps.tsv    written by .ci/run, one line per step: name, wall-clock start and end (seconds
               since the epoch), exit status; start and end are "-" and the status "not-run" for
               a step skipped because an earlier one failed.
  experiments.jsonl  one JSON line per experiment trial run under nbval (hautils.experiment,
               HAUTILS_TIMINGS): its experiment, trial, whether it finished, and the wall-clock
               seconds of its steps (prepare, until recovered, probing, analysis, restore, and
               sub-steps named "step: part"); summed per experiment into a second table, so that
               a chapter over its budget shows which experiment and which step to cut.
  machine.tsv  written by .ci/run at the start and at the end: a label and the milliseconds one
               fork + exec of /bin/true takes on this machine (a bash loop), printed under the
               table: the same machine read 0.9 and 1.3 ms on one day, and every lab number
               follows it, so a run's times are only comparable at a similar speed.

Prints one row per notebook and per test file (slowest first within a step), one row per step
(its tests' time, its wall-clock time, its exit status) and one for the whole run, flags a
notebook or a chapter (its pages together) over its budget (600 s) and a run over its budget
(3600 s), and writes the same table
as Markdown to DIR/summary.md. A missing or unreadable file is reported in the table, never
raised. Standard library only, so it runs even when setup failed before .venv existed; it
always exits 0 (it reports, CI's exit status is decided elsewhere).

Usage: python3 scripts/ci_times.py [DIR] [--markdown FILE] [--notebook-budget S] [--run-budget S]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

NOTEBOOK_BUDGET_S = 600.0
RUN_BUDGET_S = 3600.0
# the steps that run pytest (and so leave a junit XML), in the order `make test` runs them
TEST_STEPS = ["unit-and-lab", "nbval", "test-book"]


@dataclass
class Item:
    """One test file or one notebook of a step."""

    name: str
    tests: int = 0
    time: float = 0.0
    failed: int = 0
    skipped: int = 0

    @property
    def is_notebook(self) -> bool:
        return self.name.endswith(".ipynb")


@dataclass
class Step:
    name: str
    start: float | None = None
    end: float | None = None
    status: str | None = None  # exit status as text, "not-run", or None when .ci/run logged nothing
    items: dict[str, Item] = field(default_factory=dict)
    report: str | None = None  # why the step's junit XML could not be used, if it could not

    @property
    def wall(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    @property
    def tests(self) -> int:
        return sum(i.tests for i in self.items.values())

    @property
    def time(self) -> float:
        return sum(i.time for i in self.items.values())


def file_of(testcase: ET.Element) -> str:
    """The file a junit testcase belongs to.

    pytest writes it in the "file" attribute with junit_family=xunit1 (the Makefile asks for
    it). Without it (xunit2), it is guessed from the dotted classname: chapters.02-storage.ipynb
    is chapters/02-storage.ipynb, tests.lab.test_engine.TestUp is tests/lab/test_engine.py.
    """
    file = testcase.get("file")
    if file:
        return file
    dotted = testcase.get("classname") or testcase.get("name") or "?"  # a collection error has no classname
    parts = dotted.split(".")
    if parts[-1] == "ipynb" and len(parts) > 1:
        return "/".join(parts[:-1]) + ".ipynb"
    while len(parts) > 1 and parts[-1][:1].isupper():  # test classes
        parts.pop()
    return "/".join(parts) + ".py"


def read_junit(path: Path) -> dict[str, Item]:
    """Test files and notebooks of one junit XML file, with their summed times.

    Raises OSError or ET.ParseError: the caller reports those."""
    items: dict[str, Item] = {}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        name = file_of(case)
        item = items.setdefault(name, Item(name))
        item.tests += 1
        try:
            item.time += float(case.get("time") or 0.0)
        except ValueError:
            pass
        if case.find("failure") is not None or case.find("error") is not None:
            item.failed += 1
        elif case.find("skipped") is not None:
            item.skipped += 1
    return items


def read_steps(path: Path) -> list[Step]:
    """The steps .ci/run logged, in the order it ran them; [] without a log."""
    steps: list[Step] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return steps
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            print(f"ci_times: {path}:{n}: expected 4 tab-separated fields, ignored: {line!r}", file=sys.stderr)
            continue
        name, start, end, status = fields
        step = Step(name, status=status)
        try:
            step.start = None if start == "-" else float(start)
            step.end = None if end == "-" else float(end)
        except ValueError:
            print(f"ci_times: {path}:{n}: bad time, ignored: {line!r}", file=sys.stderr)
        steps.append(step)
    return steps


def collect(directory: Path) -> list[Step]:
    """Every step: those .ci/run logged, in its order, then those with only a junit XML
    (steps run by hand), each with its items."""
    steps = read_steps(directory / "steps.tsv")
    by_name = {s.name: s for s in steps}
    xmls = {p.stem: p for p in sorted(directory.glob("*.xml"))} if directory.is_dir() else {}
    order = [n for n in TEST_STEPS if n in xmls] + sorted(n for n in xmls if n not in TEST_STEPS)
    for name in order:
        if name not in by_name:
            by_name[name] = Step(name)
            steps.append(by_name[name])
    for step in steps:
        path = xmls.get(step.name)
        if step.status == "not-run":
            continue  # any XML of that name is from an earlier run
        if path is None:
            if step.name in TEST_STEPS and step.status is not None:
                step.report = f"no test report ({step.name}.xml missing)"
            continue
        try:
            if step.start is not None and path.stat().st_mtime < step.start:
                step.report = f"{path.name} is older than the step, ignored"
                continue
            step.items = read_junit(path)
        except (OSError, ET.ParseError) as e:
            step.report = f"unreadable test report {path.name}: {e}"
    return steps


@dataclass
class Table:
    rows: list[list[str]]  # step, item, tests, time, wall, note
    flags: list[str]
    overall_wall: float | None
    overall_time: float


HEADER = ["step", "item", "tests", "time (s)", "wall (s)", "note"]
RIGHT = {2, 3, 4}  # right-aligned columns


def secs(t: float | None) -> str:
    return "" if t is None else f"{t:.1f}"


def chapters(items) -> dict[str, list[Item]]:
    """The chapter notebooks grouped by chapter number: ``chapters/02-storage.ipynb`` and
    ``chapters/02b-storage-tuned.ipynb`` are two pages of chapter 02, whose budget is one
    chapter's (a chapter continued on a second page does not get twice the time)."""
    out: dict[str, list[Item]] = {}
    for item in items:
        m = re.match(r"chapters/(\d+)[a-z]?-", item.name)
        if item.is_notebook and m:
            out.setdefault(m[1], []).append(item)
    return out


def item_note(item: Item, notebook_budget: float) -> str:
    notes = []
    if item.is_notebook and item.time > notebook_budget:
        notes.append(f"OVER BUDGET ({notebook_budget:g} s)")
    if item.failed:
        notes.append(f"{item.failed} failed")
    if item.skipped:
        notes.append(f"{item.skipped} skipped")
    return "; ".join(notes)


def step_note(step: Step) -> str:
    notes = []
    if step.status == "not-run":
        notes.append("not run (an earlier step failed)")
    elif step.status is not None:
        notes.append(f"exit {step.status}")
    failed = sum(i.failed for i in step.items.values())
    if failed:
        notes.append(f"{failed} failed")
    if step.report:
        notes.append(step.report)
    return "; ".join(notes)


def build(steps: list[Step], notebook_budget: float = NOTEBOOK_BUDGET_S,
          run_budget: float = RUN_BUDGET_S) -> Table:
    rows: list[list[str]] = []
    flags: list[str] = []
    for step in steps:
        for item in sorted(step.items.values(), key=lambda i: (-i.time, i.name)):
            rows.append([step.name, item.name, str(item.tests), secs(item.time), "",
                         item_note(item, notebook_budget)])
            if item.is_notebook and item.time > notebook_budget:
                flags.append(f"notebook {item.name} took {item.time:.1f} s, over its budget of "
                             f"{notebook_budget:g} s")
        for chapter, pages in chapters(step.items.values()).items():
            if len(pages) < 2:
                continue  # a one-page chapter is its notebook's row
            total = sum(p.time for p in pages)
            over = total > notebook_budget
            rows.append([step.name, f"chapter {chapter} ({len(pages)} pages)", str(sum(p.tests for p in pages)),
                         secs(total), "", f"OVER BUDGET ({notebook_budget:g} s)" if over else ""])
            if over:
                flags.append(f"chapter {chapter} ({', '.join(p.name for p in pages)}) took {total:.1f} s, "
                             f"over a chapter's budget of {notebook_budget:g} s")
        has_tests = bool(step.items) or (step.name in TEST_STEPS and step.status != "not-run")
        rows.append([step.name, "(step total)", str(step.tests) if has_tests else "",
                     secs(step.time) if has_tests else "", secs(step.wall), step_note(step)])
    starts = [s.start for s in steps if s.start is not None]
    ends = [s.end for s in steps if s.end is not None]
    overall_wall = max(ends) - min(starts) if starts and ends else None
    overall_time = sum(s.time for s in steps)
    # the run's budget is for its wall-clock time; without a step log (steps run by hand),
    # the tests' own time is all there is to go by
    spent = overall_wall if overall_wall is not None else overall_time
    note = ""
    if spent > run_budget:
        what = "wall-clock time" if overall_wall is not None else "test time"
        note = f"OVER BUDGET ({run_budget:g} s)"
        flags.append(f"the whole run's {what} was {spent:.1f} s ({spent / 60:.0f} min), over its "
                     f"budget of {run_budget:g} s")
    rows.append(["overall", "", str(sum(s.tests for s in steps)), secs(overall_time),
                 secs(overall_wall), note])
    return Table(rows, flags, overall_wall, overall_time)


def render_text(table: Table, title: str) -> str:
    widths = [max(len(r[c]) for r in [HEADER, *table.rows]) for c in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if i in RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    lines = [title, "", line(HEADER), line(["-" * w for w in widths])]
    previous = None
    for row in table.rows:
        if previous is not None and row[0] != previous:
            lines.append("")
        lines.append(line(row))
        previous = row[0]
    lines.append("")
    lines.append("tests: test cases of a file or step, or cells of a notebook; time: their summed pytest")
    lines.append("durations; wall: the step's wall-clock time as .ci/run measured it")
    lines.extend(f"FLAG: {f}" for f in table.flags)
    if not table.flags:
        lines.append("no notebook or run over its budget")
    return "\n".join(lines) + "\n"


def render_markdown(table: Table, title: str) -> str:
    def cell(c: str) -> str:
        return c.replace("|", "\\|")

    lines = [f"# {title}", "", "| " + " | ".join(HEADER) + " |",
             "| " + " | ".join("---:" if i in RIGHT else "---" for i in range(len(HEADER))) + " |"]
    lines.extend("| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows)
    lines.append("")
    lines.append("*tests*: test cases of a file or step, or cells of a notebook; *time*: their summed "
                 "pytest durations; *wall*: the step's wall-clock time as `.ci/run` measured it.")
    lines.append("")
    lines.extend(f"- **FLAG**: {f}" for f in table.flags)
    if not table.flags:
        lines.append("No notebook or run over its budget.")
    return "\n".join(lines) + "\n"


def machine_speed(d: Path) -> str | None:
    """The machine's speed line from DIR/machine.tsv ("label<TAB>ms" lines), or None."""
    path = d / "machine.tsv"
    try:
        text = path.read_text()
    except OSError:
        return None
    parts = []
    for n, line in enumerate(text.splitlines(), 1):
        f = line.split("\t")
        try:
            parts.append(f"{float(f[1]):.2f} ms {f[0]}")
        except (IndexError, ValueError):
            print(f"ci_times: {path}:{n}: expected 'label<TAB>ms', ignored: {line!r}", file=sys.stderr)
    return ("machine speed, one fork + exec of /bin/true: " + ", ".join(parts)) if parts else None


MAIN_STEPS = ["prepare", "until recovered", "probing", "analysis", "restore"]


def read_experiments(path: Path) -> list[dict]:
    """The trial lines of an experiments.jsonl; bad lines are reported and skipped."""
    recs: list[dict] = []
    try:
        text = path.read_text()
    except OSError:
        return recs
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec.get("experiment"), str) or not isinstance(rec.get("steps"), dict):
                raise ValueError("no experiment or steps")
            steps = {str(k): float(v) for k, v in rec["steps"].items()}
        except (ValueError, TypeError, AttributeError) as e:
            print(f"ci_times: {path}:{n}: not a trial line ({e}), ignored: {line[:120]!r}", file=sys.stderr)
            continue
        recs.append({"experiment": rec["experiment"], "finished": bool(rec.get("finished", True)), "steps": steps})
    return recs


def experiments_rows(recs: list[dict]) -> list[list[str]]:
    """One row per experiment, slowest first: trials, unfinished trials, total seconds, seconds
    per trial, each main step's mean, and the slowest sub-step (by mean) with its seconds."""
    groups: dict[str, list[dict]] = {}
    for r in recs:
        groups.setdefault(r["experiment"], []).append(r)
    rows = []
    for name, trials in groups.items():
        total = sum(v for r in trials for k, v in r["steps"].items() if ":" not in k)
        means = [sum(r["steps"].get(k, 0.0) for r in trials) / len(trials) for k in MAIN_STEPS]
        subs: dict[str, float] = {}
        for r in trials:
            for k, v in r["steps"].items():
                if ":" in k:
                    subs[k] = subs.get(k, 0.0) + v / len(trials)
        top = max(subs.items(), key=lambda kv: kv[1]) if subs else None
        rows.append((total, [name, str(len(trials)), str(sum(not r["finished"] for r in trials)), f"{total:.1f}",
                             f"{total / len(trials):.1f}", *(f"{m:.1f}" for m in means),
                             f"{top[0]} {top[1]:.1f}" if top else ""]))
    return [r for _, r in sorted(rows, key=lambda x: -x[0])]


EXP_HEADER = ["experiment", "trials", "unfinished", "time (s)", "per trial", *MAIN_STEPS, "slowest sub-step (s)"]


def render_experiments(rows: list[list[str]], markdown: bool = False) -> str:
    """The experiments table as text or Markdown ("" without rows)."""
    if not rows:
        return ""
    title = "Where the experiments' time went (nbval; seconds, step columns are means per trial)"
    if markdown:
        lines = [f"## {title}", "", "| " + " | ".join(EXP_HEADER) + " |",
                 "| " + " | ".join("---" if i in (0, len(EXP_HEADER) - 1) else "---:" for i in range(len(EXP_HEADER))) + " |"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[c]) for r in [EXP_HEADER, *rows]) for c in range(len(EXP_HEADER))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i in (0, len(cells) - 1) else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([title, "", fmt(EXP_HEADER), fmt(["-" * w for w in widths]), *map(fmt, rows)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", default="artifacts/timings", type=Path,
                    help="directory with the junit XML files and steps.tsv (default: %(default)s)")
    ap.add_argument("--markdown", type=Path, help="where to write the Markdown table (default: DIR/summary.md)")
    ap.add_argument("--notebook-budget", type=float, default=NOTEBOOK_BUDGET_S, metavar="S")
    ap.add_argument("--run-budget", type=float, default=RUN_BUDGET_S, metavar="S")
    args = ap.parse_args(argv)

    title = f"Where CI's time went ({args.dir})"
    steps = collect(args.dir)
    if not steps:
        print(f"{title}: nothing recorded (no steps.tsv, no junit XML)")
        return 0
    table = build(steps, args.notebook_budget, args.run_budget)
    speed = machine_speed(args.dir)
    exp = experiments_rows(read_experiments(args.dir / "experiments.jsonl"))
    sys.stdout.write(render_text(table, title) + (speed + "\n" if speed else "")
                     + ("\n" + render_experiments(exp) if exp else ""))
    md = args.markdown or args.dir / "summary.md"
    try:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(render_markdown(table, title) + ("\n" + speed + "\n" if speed else "")
                      + ("\n" + render_experiments(exp, markdown=True) if exp else ""))
    except OSError as e:
        print(f"ci_times: cannot write {md}: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
