# HA Lab Book entry points (run as root: the labs need namespaces and taps).
#   make        set everything up and run the course (today: image + storage lab smoke run)
#   make test   run every test (unit tests and real-VM lab tests)
PY := .venv/bin/python

.PHONY: all setup image labs test unit clean benchmark

all: setup image labs

setup:
	scripts/setup

image: setup
	$(PY) -m hautils.cli image build

# Bring up every course lab in turn, show each host answering, tear it down.
labs: setup
	$(PY) scripts/smoke_labs.py storage

test: setup
	$(PY) -m pytest -v -rs tests

unit: setup
	$(PY) -m pytest -q -m "not lab" tests

benchmark: setup
	$(PY) scripts/benchmark.py

clean:
	-$(PY) -m hautils.cli lab down --all
	rm -rf _build .pytest_cache
