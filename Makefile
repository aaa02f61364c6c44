# HA Lab Book entry points (run as root: the labs need namespaces and taps).
#   make        set everything up and run the course: execute every notebook against
#               fresh labs, then build the HTML book (_build/html/index.html)
#   make test   run every test: unit tests, real-VM lab tests, and the notebooks under nbval
PY := .venv/bin/python
NOTEBOOKS := $(sort $(wildcard chapters/*.ipynb)) $(sort $(wildcard labs/*.ipynb))
# fast mode (default): fewer trials, shorter probing; FULL=1 for the book's full run
# (the notebooks' own defaults are the fast mode: nothing is injected then)
ifeq ($(FULL),1)
PARAMS := -p fast False -p trials 10
else
PARAMS :=
endif
# Parameters go only to notebooks that declare them (a cell tagged "parameters"): papermill
# would put them into any other notebook as a new code cell at the top of its page (the labs
# overview and the outline chapters take none).
HAS_PARAMS = $(PY) -c 'import json, sys; sys.exit(not any("parameters" in c["metadata"].get("tags", []) for c in json.load(open(sys.argv[1]))["cells"]))'

# Each pytest step (unit-and-lab, nbval, test-book) writes a junit XML report, named after
# it, into artifacts/timings/: every test's and every notebook cell's time, with its file
# (junit_family=xunit1). `python3 scripts/ci_times.py` turns them into a table of where the
# time went; .ci/run prints it at its end, with each step's wall-clock time.
TIMINGS := artifacts/timings
JUNIT = -o junit_family=xunit1 --junitxml=$(TIMINGS)/$@.xml

.PHONY: all setup image labs notebooks chapter html book test test-book unit-and-lab unit nbval clean benchmark

all: setup image notebooks html

setup:
	scripts/setup

image: setup
	$(PY) -m hautils.cli image build

# Bring up a course lab, show every host answering, tear it down (a quick engine check).
labs: setup
	$(PY) scripts/smoke_labs.py storage

# Execute every notebook in place against fresh labs (its outputs become the book's).
notebooks: setup image
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  params=""; $(HAS_PARAMS) "$$nb" && params="$(PARAMS)"; \
	  $(PY) -m papermill "$$nb" "$$nb" --cwd "$$(dirname $$nb)" -k python3 $$params --no-progress-bar || exit 1; \
	done

# One notebook: make chapter NB=chapters/01-availability.ipynb
chapter: setup image
	params=""; $(HAS_PARAMS) "$(NB)" && params="$(PARAMS)"; \
	$(PY) -m papermill "$(NB)" "$(NB)" --cwd "$$(dirname $(NB))" -k python3 $$params

# Build the HTML book from the executed notebooks (no execution here).
html: setup
	$(PY) scripts/make_toc.py
	PY=$(PY) scripts/vendor_assets
	.venv/bin/jupyter-book build . --warningiserror --keep-going
	@echo "book: $$(pwd)/_build/html/index.html"

# Open every built page in headless Chromium: figures and formulas render, no JS errors,
# nothing fetched from the network; screenshots land in artifacts/screenshots/.
test-book: html
	@mkdir -p $(TIMINGS)
	$(PY) -m pytest -v -p no:cacheprovider $(JUNIT) tests/book

book: notebooks html

test: setup unit-and-lab nbval

unit-and-lab:
	@mkdir -p $(TIMINGS)
	$(PY) -m pytest -v -rs $(JUNIT) tests

# Re-execute the committed notebooks against fresh labs and compare their outputs:
# measured numbers are ignored (NBVAL_IGNORE_OUTPUT), range checks are compared exactly.
# The re-run writes its results to a scratch copy: results/ keeps matching the notebooks.
# Every experiment trial logs its steps' seconds to $(TIMINGS)/experiments.jsonl (ci_times.py).
nbval: setup image
	@mkdir -p $(TIMINGS) && rm -f $(TIMINGS)/experiments.jsonl
	scratch=$$(mktemp -d) && cp results/*.json "$$scratch"/ && \
	HAUTILS_RESULTS="$$scratch" HAUTILS_TIMINGS="$(CURDIR)/$(TIMINGS)" $(PY) -m pytest -v --nbval $(NOTEBOOKS) \
	  --nbval-sanitize-with .ci/nbval-sanitize.cfg --nbval-cell-timeout 1800 -p no:cacheprovider $(JUNIT); \
	status=$$?; rm -rf "$$scratch"; exit $$status

unit: setup
	$(PY) -m pytest -q -m "not lab" tests

benchmark: setup
	$(PY) scripts/benchmark.py

clean:
	-$(PY) -m hautils.cli lab down --all
	rm -rf _build _vendor artifacts .pytest_cache
