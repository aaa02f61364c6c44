"""The built book in a real browser: every figure and formula renders, no JS errors, nothing remote.

Runs against ``_build/html`` (``make html`` first; ``make test-book`` does both). Headless
Chromium loads each chapter page from disk with the network blocked, so anything the page
tries to fetch from the internet fails loudly.  A screenshot per page goes to
``artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("HAUTILS_BOOK_HTML", ROOT / "_build" / "html"))
SHOTS = ROOT / "artifacts" / "screenshots"

pytestmark = pytest.mark.book


def pages() -> list[Path]:
    return sorted([*HTML.glob("chapters/*.html"), *HTML.glob("labs/*.html")])


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book in {HTML}: run `make html` first")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,2000", "--allow-file-access-from-files",
                # no network at all: a page that needs a CDN shows it as an error
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_there_are_pages_to_check():
    assert pages(), f"no chapter pages under {HTML}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(HTML)))
def test_page_renders_every_figure_offline(browser, page):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    expected = browser.execute_script("return document.querySelectorAll('div.plotly-graph-div').length")
    # a figure has rendered when plotly drew its SVG inside the div
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('div.plotly-graph-div'))"
            ".filter(e => e.querySelector('svg.main-svg')).length") == expected)
    # formulas are typeset by the book's own MathJax (no CDN): wait until each one is
    maths = browser.execute_script("return document.querySelectorAll('.math').length")
    if maths:
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script("return document.querySelectorAll('.MathJax_CHTML').length") >= maths)
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / (page.relative_to(HTML).as_posix().replace("/", "__") + ".png")))
    # The theme logs one console.error on a first visit (no colour mode stored yet): not a fault.
    errors = [e for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and "Got invalid theme mode" not in e["message"]]
    assert not errors, f"{page.name}: JavaScript/console errors: {errors}"
    remote = browser.execute_script(
        "return performance.getEntriesByType('resource').map(r => r.name)"
        ".filter(n => !n.startsWith('file:') && !n.startsWith('data:') && !n.startsWith('blob:'))")
    assert not remote, f"{page.name} fetched remote assets: {remote}"
    if page.parent.name == "chapters" and page.stem == "01-availability":
        assert expected >= 4, "chapter 1 has at least four figures"
