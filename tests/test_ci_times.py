"""scripts/ci_times.py: the table of where CI's time went, from synthetic junit XML files."""

import importlib.util
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("ci_times", ROOT / "scripts" / "ci_times.py")
ci_times = importlib.util.module_from_spec(spec)
sys.modules["ci_times"] = ci_times  # dataclasses look their module up while the class is made
spec.loader.exec_module(ci_times)


def junit(path: Path, cases, family="xunit1"):
    """Write a junit XML file as pytest does: cases are (file, name, time[, outcome]) with
    outcome "passed", "failed", "error" or "skipped"."""
    out = ['<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">',
           f'<testsuite name="pytest" tests="{len(cases)}" time="1.0">']
    for file, name, time, *outcome in cases:
        if file.endswith(".ipynb"):
            classname = file.replace("/", ".")
        else:
            classname = file.replace("/", ".").removesuffix(".py")
        attrs = f"classname={quoteattr(classname)} name={quoteattr(name)} time=\"{time}\""
        if family == "xunit1":
            attrs += f" file={quoteattr(file)} line=\"0\""
        body = {"failed": '<failure message="boom">boom</failure>',
                "error": '<error message="setup failed">x</error>',
                "skipped": '<skipped type="pytest.skip" message="no">no</skipped>'}.get(
                    outcome[0] if outcome else "passed", "")
        out.append(f"<testcase {attrs}>{body}</testcase>")
    out.append("</testsuite></testsuites>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(out))


def steps_log(path: Path, rows):
    """Write .ci/run's step log: rows are (name, start, end, status) with start/end None for '-'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(
        f"{n}\t{'-' if s is None else s}\t{'-' if e is None else e}\t{st}\n" for n, s, e, st in rows))


def run(tmp_path, capsys, *args):
    assert ci_times.main([str(tmp_path), *args]) == 0
    return capsys.readouterr().out


def row(text: str, step: str, item: str) -> str:
    """The table line of one step's item."""
    lines = [l for l in text.splitlines() if l.split()[:1] == [step] and f" {item} " in l + " "]
    assert len(lines) == 1, (step, item, text)
    return lines[0]


def nbval_cells(nb: str, times, outcome="passed"):
    return [(nb, f"Cell {i}", t, outcome) for i, t in enumerate(times)]


# ------------------------------------------------------------------ reading junit XML


def test_notebook_time_is_the_sum_of_its_cells(tmp_path):
    junit(tmp_path / "nbval.xml",
          nbval_cells("chapters/02-storage.ipynb", [10.5, 200.25, 0.25])
          + nbval_cells("labs/01-availability-lab.ipynb", [1, 2])
          + [("labs/01-availability-lab.ipynb", "Cell 2", 3, "failed")])
    items = ci_times.read_junit(tmp_path / "nbval.xml")
    assert set(items) == {"chapters/02-storage.ipynb", "labs/01-availability-lab.ipynb"}
    storage = items["chapters/02-storage.ipynb"]
    assert (storage.tests, storage.time, storage.failed) == (3, pytest.approx(211.0), 0)
    assert storage.is_notebook
    lab = items["labs/01-availability-lab.ipynb"]
    assert (lab.tests, lab.time, lab.failed) == (3, pytest.approx(6.0), 1)


def test_test_files_group_their_tests_and_count_failures_and_skips(tmp_path):
    junit(tmp_path / "unit-and-lab.xml", [
        ("tests/test_analysis.py", "test_a", 0.5),
        ("tests/test_analysis.py", "test_b", 0.25, "skipped"),
        ("tests/lab/test_engine.py", "test_up", 120.0, "error"),
        ("tests/lab/test_engine.py", "test_down", 30.0, "failed"),
    ])
    items = ci_times.read_junit(tmp_path / "unit-and-lab.xml")
    assert items["tests/test_analysis.py"].tests == 2
    assert items["tests/test_analysis.py"].skipped == 1
    assert items["tests/lab/test_engine.py"].time == pytest.approx(150.0)
    assert items["tests/lab/test_engine.py"].failed == 2
    assert not items["tests/lab/test_engine.py"].is_notebook


def test_without_file_attribute_the_file_comes_from_the_classname(tmp_path):
    """xunit2 (pytest's default family) has no file attribute: the dotted classname is used."""
    junit(tmp_path / "x.xml", nbval_cells("chapters/02-storage.ipynb", [1.0])
          + [("tests/lab/test_engine.py", "test_up", 2.0)], family="xunit2")
    assert set(ci_times.read_junit(tmp_path / "x.xml")) == {"chapters/02-storage.ipynb",
                                                            "tests/lab/test_engine.py"}
    case = ci_times.ET.fromstring('<testcase classname="tests.lab.test_engine.TestUp" name="test_x"/>')
    assert ci_times.file_of(case) == "tests/lab/test_engine.py"
    collection_error = ci_times.ET.fromstring('<testcase classname="" name="tests.test_broken"/>')
    assert ci_times.file_of(collection_error) == "tests/test_broken.py"


def test_pytest_junitxml_with_the_makefile_options_is_read(tmp_path):
    """The real thing: pytest run with the Makefile's options, then read back."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    sub = tmp_path / "tests" / "sub"
    sub.mkdir(parents=True)
    (sub / "test_x.py").write_text(textwrap.dedent("""\
        import pytest
        class TestA:
            def test_a(self): pass
        @pytest.mark.parametrize("p", ["a/b", "c::d"])
        def test_p(p): assert p != "c::d"
    """))
    xml = tmp_path / "artifacts" / "timings" / "unit-and-lab.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-o", "junit_family=xunit1", f"--junitxml={xml}", "tests"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # test_p[c::d] fails on purpose
    assert "PytestWarning" not in proc.stdout + proc.stderr
    items = ci_times.read_junit(xml)
    assert list(items) == ["tests/sub/test_x.py"]
    assert (items["tests/sub/test_x.py"].tests, items["tests/sub/test_x.py"].failed) == (3, 1)


# ------------------------------------------------------------------ the table


def test_table_rows_per_notebook_file_and_step_with_wall_times(tmp_path, capsys):
    junit(tmp_path / "unit-and-lab.xml", [("tests/test_analysis.py", "test_a", 0.5),
                                          ("tests/lab/test_engine.py", "test_up", 100.0)])
    junit(tmp_path / "nbval.xml", nbval_cells("chapters/01-availability.ipynb", [5, 7])
          + nbval_cells("chapters/00-labs.ipynb", [1, 1, 1]))
    junit(tmp_path / "test-book.xml", [("tests/book/test_browser.py", "test_pages", 20.0)])
    steps_log(tmp_path / "steps.tsv", [("setup", 1000.0, 1002.0, 0),
                                       ("unit-and-lab", 1002.0, 1110.0, 0),
                                       ("image", 1110.0, 1111.0, 0),
                                       ("nbval", 1111.0, 1140.5, 0),
                                       ("test-book", 1140.5, 1200.0, 0),
                                       ("lab-down", 1200.0, 1201.0, 0)])
    out = run(tmp_path, capsys)

    assert row(out, "unit-and-lab", "tests/lab/test_engine.py").split()[2:4] == ["1", "100.0"]
    assert row(out, "nbval", "chapters/01-availability.ipynb").split()[2:4] == ["2", "12.0"]
    assert row(out, "nbval", "chapters/00-labs.ipynb").split()[2:4] == ["3", "3.0"]
    assert row(out, "nbval", "(step total)").split()[3:7] == ["5", "15.0", "29.5", "exit"]
    assert row(out, "unit-and-lab", "(step total)").split()[3:6] == ["2", "100.5", "108.0"]
    assert row(out, "test-book", "(step total)").split()[3:6] == ["1", "20.0", "59.5"]
    assert row(out, "setup", "(step total)").split()[3:5] == ["2.0", "exit"]
    assert row(out, "overall", "").split()[1:4] == ["8", "135.5", "201.0"]
    assert "OVER BUDGET" not in out and "no notebook or run over its budget" in out

    # slowest first within a step; steps in the order .ci/run ran them
    lines = out.splitlines()
    assert lines.index(row(out, "nbval", "chapters/01-availability.ipynb")) < \
        lines.index(row(out, "nbval", "chapters/00-labs.ipynb"))
    firsts = [l.split()[0] for l in lines if l.split() and l.split()[0] in
              ("setup", "unit-and-lab", "image", "nbval", "test-book", "lab-down", "overall")]
    assert list(dict.fromkeys(firsts)) == ["setup", "unit-and-lab", "image", "nbval", "test-book",
                                           "lab-down", "overall"]

    # aligned: numbers end under their header
    header = next(l for l in lines if l.startswith("step "))
    time_end = header.index("time (s)") + len("time (s)")
    wall_end = header.index("wall (s)") + len("wall (s)")
    nb = row(out, "nbval", "chapters/01-availability.ipynb")
    assert nb[:time_end].endswith(" 12.0")
    total = row(out, "nbval", "(step total)")
    assert total[:wall_end].endswith(" 29.5")


def test_notebook_over_budget_is_flagged(tmp_path, capsys):
    junit(tmp_path / "nbval.xml",
          nbval_cells("chapters/02-storage.ipynb", [300.0, 300.5])     # 600.5 s: over
          + nbval_cells("labs/02-storage-lab.ipynb", [400.0, 200.0])   # 600 s exactly: within
          + nbval_cells("chapters/01-availability.ipynb", [30.0]))
    steps_log(tmp_path / "steps.tsv", [("nbval", 0.0, 1300.0, 1)])
    out = run(tmp_path, capsys)

    assert "OVER BUDGET (600 s)" in row(out, "nbval", "chapters/02-storage.ipynb")
    assert "OVER BUDGET" not in row(out, "nbval", "labs/02-storage-lab.ipynb")
    assert "OVER BUDGET" not in row(out, "nbval", "chapters/01-availability.ipynb")
    flags = [l for l in out.splitlines() if l.startswith("FLAG:")]
    assert flags == ["FLAG: notebook chapters/02-storage.ipynb took 600.5 s, over its budget of 600 s"]
    assert "exit 1" in row(out, "nbval", "(step total)")

    md = (tmp_path / "summary.md").read_text()
    assert "| nbval | chapters/02-storage.ipynb | 2 | 600.5 |  | OVER BUDGET (600 s) |" in md
    assert "- **FLAG**: notebook chapters/02-storage.ipynb took 600.5 s" in md


def test_a_chapter_on_two_pages_has_one_chapters_budget(tmp_path, capsys):
    junit(tmp_path / "nbval.xml",
          nbval_cells("chapters/02-storage.ipynb", [300.0])             # each page within,
          + nbval_cells("chapters/02b-storage-tuned.ipynb", [350.0])    # together 650 s: over
          + nbval_cells("chapters/01-availability.ipynb", [90.0])
          + nbval_cells("chapters/03-networking.ipynb", [200.0, 100.0])
          + nbval_cells("chapters/03b-routing.ipynb", [250.0]))         # chapter 03: 550 s, within
    steps_log(tmp_path / "steps.tsv", [("nbval", 0.0, 1300.0, 0)])
    out = run(tmp_path, capsys)

    assert "OVER BUDGET" not in row(out, "nbval", "chapters/02-storage.ipynb")
    assert "650.0" in row(out, "nbval", "chapter 02 (2 pages)")
    assert "OVER BUDGET (600 s)" in row(out, "nbval", "chapter 02 (2 pages)")
    assert "OVER BUDGET" not in row(out, "nbval", "chapter 03 (2 pages)")
    assert "chapter 01" not in out  # one page: its notebook's row says it all
    flags = [l for l in out.splitlines() if l.startswith("FLAG:")]
    assert flags == ["FLAG: chapter 02 (chapters/02-storage.ipynb, chapters/02b-storage-tuned.ipynb) took "
                     "650.0 s, over a chapter's budget of 600 s"]


def test_budgets_are_options(tmp_path, capsys):
    junit(tmp_path / "nbval.xml", nbval_cells("chapters/00-labs.ipynb", [20.0]))
    out = run(tmp_path, capsys, "--notebook-budget", "10", "--run-budget", "15")
    assert "OVER BUDGET (10 s)" in row(out, "nbval", "chapters/00-labs.ipynb")
    # no step log (steps run by hand): the run's budget is checked against the tests' time
    assert "OVER BUDGET (15 s)" in row(out, "overall", "")
    assert "FLAG: the whole run's test time was 20.0 s" in out


def test_run_over_budget_is_flagged_on_wall_clock_time(tmp_path, capsys):
    junit(tmp_path / "unit-and-lab.xml", [("tests/test_analysis.py", "test_a", 1.0)])
    steps_log(tmp_path / "steps.tsv", [("setup", 0.0, 100.0, 0),
                                       ("unit-and-lab", 100.0, 3000.0, 0),
                                       ("nbval", 3000.0, 3700.0, 0)])
    out = run(tmp_path, capsys)
    assert "OVER BUDGET (3600 s)" in row(out, "overall", "")
    assert "FLAG: the whole run's wall-clock time was 3700.0 s (62 min), over its budget of 3600 s" in out


# ------------------------------------------------------------------ missing and broken files


def test_missing_report_of_a_step_that_ran_is_reported(tmp_path, capsys):
    """unit-and-lab crashed before pytest wrote its XML; later steps never ran."""
    steps_log(tmp_path / "steps.tsv", [("setup", 0.0, 5.0, 0),
                                       ("unit-and-lab", 5.0, 9.0, 2),
                                       ("image", None, None, "not-run"),
                                       ("nbval", None, None, "not-run"),
                                       ("test-book", None, None, "not-run")])
    out = run(tmp_path, capsys)
    unit = row(out, "unit-and-lab", "(step total)")
    assert "exit 2" in unit and "no test report (unit-and-lab.xml missing)" in unit
    assert "not run (an earlier step failed)" in row(out, "nbval", "(step total)")
    assert "not run" in row(out, "test-book", "(step total)")
    assert row(out, "overall", "").split()[1:4] == ["0", "0.0", "9.0"]
    assert (tmp_path / "summary.md").exists()


def test_missing_directory_is_not_an_error(tmp_path, capsys):
    out = run(tmp_path / "nowhere", capsys)
    assert "nothing recorded" in out
    assert not (tmp_path / "nowhere").exists()


def test_unreadable_report_is_reported_not_raised(tmp_path, capsys):
    (tmp_path / "nbval.xml").write_text('<?xml version="1.0"?><testsuites><testsuite><testcase ')
    junit(tmp_path / "unit-and-lab.xml", [("tests/test_analysis.py", "test_a", 1.0)])
    steps_log(tmp_path / "steps.tsv", [("unit-and-lab", 0.0, 2.0, 0), ("nbval", 2.0, 3.0, 1)])
    out = run(tmp_path, capsys)
    assert "unreadable test report nbval.xml" in row(out, "nbval", "(step total)")
    assert row(out, "unit-and-lab", "tests/test_analysis.py").split()[2:4] == ["1", "1.0"]


def test_reports_of_steps_that_did_not_run_this_time_are_ignored(tmp_path, capsys):
    junit(tmp_path / "nbval.xml", nbval_cells("chapters/02-storage.ipynb", [900.0]))   # left over
    junit(tmp_path / "test-book.xml", [("tests/book/test_browser.py", "test_pages", 9.0)])
    later = time.time() + 3600   # test-book "started" after its XML was written: stale
    steps_log(tmp_path / "steps.tsv", [("nbval", None, None, "not-run"),
                                       ("test-book", later, later + 1, 0)])
    out = run(tmp_path, capsys)
    assert "chapters/02-storage.ipynb" not in out and "OVER BUDGET" not in out
    assert "test-book.xml is older than the step, ignored" in row(out, "test-book", "(step total)")


def test_bad_step_log_lines_are_skipped(tmp_path, capsys):
    (tmp_path / "steps.tsv").write_text("garbage\nsetup\t0\t1.5\t0\n\nnbval\tx\t2\t0\n")
    assert ci_times.main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert row(out, "setup", "(step total)").split()[3] == "1.5"
    assert "steps.tsv:1: expected 4 tab-separated fields" in err   # warnings go to stderr
    assert "steps.tsv:4: bad time" in err
    assert "garbage" not in out


def test_markdown_table_escapes_pipes_and_can_go_elsewhere(tmp_path, capsys):
    junit(tmp_path / "unit-and-lab.xml", [("tests/test_a|b.py", "test_a", 1.0)])
    md = tmp_path / "out" / "table.md"
    run(tmp_path, capsys, "--markdown", str(md))
    text = md.read_text()
    assert text.startswith("# Where CI's time went")
    assert "| unit-and-lab | tests/test_a\\|b.py | 1 | 1.0 |  |  |" in text
    assert not (tmp_path / "summary.md").exists()


def test_script_runs_standalone_with_system_python(tmp_path):
    """.ci/run falls back to python3 when setup failed before .venv existed: stdlib only
    (-S: no site-packages at all)."""
    junit(tmp_path / "nbval.xml", nbval_cells("chapters/00-labs.ipynb", [1.0]))
    proc = subprocess.run([sys.executable, "-I", "-S", str(ROOT / "scripts" / "ci_times.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "chapters/00-labs.ipynb" in proc.stdout


def test_the_machines_speed_is_printed_under_the_table(tmp_path, capsys):
    (tmp_path / "steps.tsv").write_text("test\t100.0\t160.0\t0\n")
    (tmp_path / "machine.tsv").write_text("at the start\t0.93\nat the end\t1.31\nbroken line\n")
    ci_times.main([str(tmp_path)])
    out = capsys.readouterr()
    assert "machine speed, one fork + exec of /bin/true: 0.93 ms at the start, 1.31 ms at the end" in out.out
    assert "machine.tsv:3" in out.err
    assert "1.31 ms at the end" in (tmp_path / "summary.md").read_text()
    (tmp_path / "machine.tsv").unlink()
    ci_times.main([str(tmp_path)])
    assert "machine speed" not in capsys.readouterr().out


def test_experiment_trials_are_summed_per_experiment_slowest_first(tmp_path, capsys):
    """hautils.experiment.log_timings writes these lines under nbval; the table names the
    experiment and the step a chapter over its budget should cut."""
    import json

    junit(tmp_path / "nbval.xml", [("chapters/02-storage.ipynb", "Cell 1", 100.0)])
    lines = [{"experiment": "heartbeat power", "trial": i, "finished": True, "cwd": "chapters",
              "steps": {"prepare": 1.0, "until recovered": 20.0, "probing": 3.0, "analysis": 1.0,
                        "restore: boot": 6.0 + i, "restore: DRBD rejoin": 4.0, "restore": 12.0 + i}}
             for i in range(2)]
    lines.append({"experiment": "raid", "trial": 0, "finished": False, "cwd": "chapters",
                  "steps": {"prepare": 0.5, "until recovered": 2.0}})
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json\n" + json.dumps({"trial": 3}) + "\n"
    (tmp_path / "experiments.jsonl").write_text(text)
    assert ci_times.main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "Where the experiments' time went" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("heartbeat power", "raid "))]
    # heartbeat power: 2 trials, 0 unfinished, 37 + 38 s, 37.5 per trial, restore mean 12.5, boot 6.5
    assert rows[0][:2] == ["heartbeat", "power"] and rows[0][2:12] == [
        "2", "0", "75.0", "37.5", "1.0", "20.0", "3.0", "1.0", "12.5", "restore:"]
    assert rows[0][-1] == "6.5" and rows[1][:4] == ["raid", "1", "1", "2.5"]
    assert err.count("not a trial line") == 2
    md = (tmp_path / "summary.md").read_text()
    assert "## Where the experiments' time went" in md and "| heartbeat power | 2 | 0 | 75.0 |" in md


def test_no_experiment_table_without_trial_lines(tmp_path, capsys):
    junit(tmp_path / "nbval.xml", [("chapters/01-availability.ipynb", "Cell 1", 10.0)])
    ci_times.main([str(tmp_path)])
    assert "experiments' time" not in capsys.readouterr().out
