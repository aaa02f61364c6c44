"""The book's structure: outline chapters stay outlines, and _toc.yml matches the notebooks."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARK = "Outline: this chapter's lab is not built yet"


def cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


OUTLINES = sorted(nb for nb in (ROOT / "chapters").glob("[0-9][0-9]-*.ipynb")
                  if any(MARK in source(c) for c in cells(nb) if c["cell_type"] == "markdown"))


def test_there_are_outlines_to_check():
    assert OUTLINES, f"no chapter carries the mark {MARK!r}"


@pytest.mark.parametrize("nb", OUTLINES, ids=lambda p: p.name)
def test_an_outline_is_markdown_and_one_figure(nb):
    cs = cells(nb)
    assert cs[0]["cell_type"] == "markdown" and MARK in source(cs[0]), "the mark belongs under the title"
    heading = source(cs[0]).splitlines()[0]
    assert re.match(rf"^# {int(nb.name[:2])}\. \S", heading), f"{heading!r}: '# N. Title' with N the file's number"
    md = "\n".join(source(c) for c in cs if c["cell_type"] == "markdown")
    assert "{cite}`rivero2014`" in md
    code = [c for c in cs if c["cell_type"] == "code"]
    assert len(code) <= 1, "an outline has at most one code cell: its lab's figure"
    for c in code:
        assert "plots.topology(topology.load(" in source(c) and "Lab(" not in source(c)
        assert c["outputs"] and all(o["output_type"] != "error" for o in c["outputs"]), "commit it executed"
        assert "nbval-ignore-output" in c["metadata"].get("tags", [])


def test_toc_matches_the_notebooks_and_conclusions_come_last():
    spec = importlib.util.spec_from_file_location("make_toc", ROOT / "scripts" / "make_toc.py")
    make_toc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_toc)
    toc = make_toc.build()
    assert (ROOT / "_toc.yml").read_text() == toc, "run scripts/make_toc.py"
    captions = re.findall(r'caption: "([^"]+)"', toc)
    assert captions[-2:] == ["Conclusions", "References"]


ALL_NOTEBOOKS = sorted([*(ROOT / "chapters").glob("*.ipynb"), *(ROOT / "labs").glob("*.ipynb")])


@pytest.mark.parametrize("nb", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_no_code_cell_is_repeated_as_markdown(nb):
    """A notebook generator that copied cells by index once turned chapter 3's parameters and
    imports into Markdown (the page showed them as text, and lost the two sections it meant)."""
    cs = cells(nb)
    code = {source(c).strip() for c in cs if c["cell_type"] == "code" and source(c).strip()}
    twins = [i for i, c in enumerate(cs) if c["cell_type"] == "markdown" and source(c).strip() in code]
    assert not twins, f"{nb.name}: Markdown cells {twins} repeat a code cell's source"
    first = [i for i, c in enumerate(cs) if c["cell_type"] == "markdown"
             and re.match(r"(import |from \S+ import |# Papermill parameters)", source(c))]
    assert not first, f"{nb.name}: Markdown cells {first} start like code"


@pytest.mark.parametrize("nb", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_names_no_path_of_the_machine_it_ran_on(nb):
    """The book is published: a notebook executed to a scratch copy kept papermill's record of
    that copy (a scratch directory outside the repository).  Paths in a committed notebook are
    the repository's."""
    text = nb.read_text()
    leaks = sorted(set(re.findall(r'"(/(?:work|tmp|home|root)/[^"]*)"', text)))
    assert not leaks, f"{nb.relative_to(ROOT)} names paths of this machine: {leaks[:5]}"
    pm = json.loads(text).get("metadata", {}).get("papermill", {})
    rel = str(nb.relative_to(ROOT))
    assert pm.get("input_path", rel) == rel and pm.get("output_path", rel) == rel, (pm.get("input_path"),
                                                                                    pm.get("output_path"))
