"""Chapter 4's scenarios, without a lab: the lone node's journal read live (the ``Follower`` on
an SSH channel), the marks that find its steps in what it logged, the fence read from the BMC
and the comparison table's row."""

from __future__ import annotations

import json
import re
import socket

import pytest

from hautils.scenarios.clustering import LONE_MARKS
from hautils.ssh import Follower, parse_journal_json

# what node2 logged after it was cut off alone (a lab run, tuned timers), shortened
LONE = [
    (0.80, "corosync", "  [KNET  ] link: host: 2 link: 0 is down"),
    (1.48, "corosync", "  [TOTEM ] A processor failed, forming new configuration: token timed out (1650ms), waiting 1000ms for consensus."),
    (2.58, "corosync", "  [TOTEM ] A new membership (3.11) was formed. Members left: 1 2"),
    (2.58, "corosync", "  [QUORUM] This node is within the non-primary component and will NOT provide any services."),
    (2.60, "pacemaker-controld", " warning: Quorum lost"),
    (4.73, "pacemaker-schedulerd", " warning: Fencing and resource management disabled due to lack of quorum"),
    (4.75, "pacemaker-schedulerd", " notice: Actions: Stop       p_guest      ( node2 )  due to no quorum"),
    (4.78, "pacemaker-controld", " notice: Initiating stop operation p_guest_stop_0 locally on node2"),
]


def first(step: str, lines) -> float | None:
    return next((t for t, _, m in lines if re.search(LONE_MARKS[step], m)), None)


def test_the_lone_nodes_steps_are_found_in_order():
    assert first("lone: membership shrinks", LONE) == 2.58
    assert first("lone: quorum lost", LONE) == 2.58
    assert first("lone: stop ordered", LONE) == 4.78
    assert first("lone: guest stopped", LONE) is None  # switched off before the stop ended


def test_a_stonith_devices_stop_is_not_the_guests():
    lines = [(4.9, "pacemaker-controld", " notice: Initiating stop operation st_node0_stop_0 locally on node1"),
             (4.99, "pacemaker-controld", " notice: Requesting local execution of stop operation for p_guest on node1")]
    assert first("lone: stop ordered", lines) == 4.99
    assert first("lone: guest stopped", [(6.0, "x", "Result of stop operation for p_guest on node1: ok")]) == 6.0


class FakeChannel:
    """An SSH channel that delivers some output, times out once, then ends (the host died)."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.closed = False
        self.command = None

    def exec_command(self, command):
        self.command = command

    def settimeout(self, t):
        pass

    def recv(self, n):
        if self.closed:
            return b""
        if not self.chunks:
            return b""
        c = self.chunks.pop(0)
        if c is None:
            raise socket.timeout()
        return c

    def close(self):
        self.closed = True


class FakeHost:
    name = "node2"

    def __init__(self, chan):
        self.chan = chan

    def connect(self):
        host = self

        class Client:
            def get_transport(self):
                class T:
                    def open_session(self, timeout=None):
                        return host.chan
                return T()
        return Client()


def test_a_follower_keeps_what_the_host_said_until_it_died():
    recs = [{"__REALTIME_TIMESTAMP": str(int(t * 1e6)), "MESSAGE": m, "SYSLOG_IDENTIFIER": i} for t, i, m in LONE[:3]]
    text = "".join(json.dumps(r) + "\n" for r in recs).encode()
    chan = FakeChannel([text[:50], None, text[50:]])  # split mid-line, with a quiet moment between
    f = Follower(FakeHost(chan), "journalctl -f -o json")
    out = f.stop()
    assert chan.command == "journalctl -f -o json"
    lines = parse_journal_json(out)
    assert [ln.message for ln in lines] == [m for _, _, m in LONE[:3]]
    assert lines[2].time == 2.58


def test_the_fence_row_names_the_fencing_node_and_what_the_bmc_saw():
    from types import SimpleNamespace as NS

    from hautils.experiment import Trial
    from hautils.lab.bmc import PowerEvent
    from hautils.scenarios.clustering import _GuestSteps

    bmc = NS(log=[PowerEvent(105.0, "node2", "ForceOff", "off", "172.31.255.3")],
             queries=[PowerEvent(104.0, "node2", "status", "On", "172.31.255.3"),
                      PowerEvent(99.0, "node2", "status", "On", "172.31.255.4"),  # before the fault
                      PowerEvent(104.5, "node1", "status", "On", "172.31.255.4")])  # another node
    steps = _GuestSteps.__new__(_GuestSteps)
    steps.gc = NS(bmc=bmc, active=lambda: "node1")
    steps.names = {"172.31.255.3": "node0", "172.31.255.4": "node1"}
    t = Trial(0, "x")
    t.fault_time, t.victim = 100.0, "node2"
    asked = steps.fence(t)
    assert [e.reset for e in asked] == ["status", "ForceOff"]
    assert t.row == {"to": "node1", "fenced by": "node0", "BMC saw": "status:On, ForceOff:off"}


def test_the_summary_row_takes_medians_and_counts_a_phase_the_journal_lacks_as_zero():
    from types import SimpleNamespace as NS

    import pandas as pd

    from hautils.scenarios.clustering import summary

    trials = pd.DataFrame({"downtime_s": [6.3, 5.8, 6.4], "web downtime_s": [6.7, 7.2, 6.9],
                           "corosync detection (s)": [2.5, 2.4, 2.6], "pacemaker decision (s)": [1.2, None, 0.2],
                           "fencing (s)": [1.6, 1.0, 1.2], "container start (s)": [0.9, 1.7, 1.9],
                           "web after ping_s": [0.4, 0.9, 1.1]})  # the lean agent: no "mount (s)" column
    row = summary("tuned", NS(trials=trials))
    assert row[""] == "tuned" and row["ping back after (s, median)"] == 6.3 and row["max"] == 6.4
    assert row["web back after (s, median)"] == 6.9 and row["detection (s)"] == 2.5
    assert row["decision + fence (s)"] == pytest.approx(1.4)  # 2.8, 1.0 (no decision line), 1.4
    assert row["disk + container (s)"] == pytest.approx(1.7)
    assert row["guest boot to web (s)"] == 0.9
