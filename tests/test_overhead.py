"""Process cost and process counters: the numbers the chapters explain UML's slowness with."""

from __future__ import annotations

import pytest

from hautils import overhead


class FakeHost:
    name = "vm"

    def __init__(self, out: str):
        self.out, self.commands = out, []

    def run(self, command, timeout=None):
        self.commands.append(command)

        class R:
            stdout = self.out

        return R()


def test_cost_on_this_machine_is_measured():
    c = overhead.process_cost(n=20)
    assert c["n"] == 20 and c["where"].startswith("this machine")
    assert 0.01 < c["ms_per_process"] < 200  # a real fork+exec, not zero


def test_cost_in_a_vm_is_timed_inside_the_shell():
    h = FakeHost("1000.000000 1006.200000\n")
    c = overhead.process_cost(h, n=200)
    assert c["ms_per_process"] == pytest.approx(31.0)
    assert "EPOCHREALTIME" in h.commands[0] and "seq 200" in h.commands[0]
    with pytest.raises(ValueError, match="at least 10"):
        overhead.process_cost(h, n=3)


def test_processes_started_reads_proc_stat():
    assert overhead.processes_started() > 0
    assert overhead.processes_started(FakeHost("cpu 1 2 3\nprocesses 4242\nprocs_running 1\n")) == 4242
    with pytest.raises(ValueError):
        overhead.processes_started(FakeHost("cpu 1 2\n"))


def test_command_seconds_is_the_median_of_the_runs():
    h = FakeHost("10.0 10.5\n20.0 20.7\n30.0 30.6\n")
    assert overhead.command_seconds(h, "python3 -c pass") == pytest.approx(0.6)
    assert "python3 -c pass" in h.commands[0]
