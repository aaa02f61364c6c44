"""hautils.scenarios.storage.drbd_protocols_loss on a fake lab: the order of the steps (power
off, boot overlapped with the promotion, rejoin together) and the per-protocol rows."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pandas as pd

from hautils.scenarios import storage

T0 = 1_000_000.0
HEALTHY = "".join(f" {m}: cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate C r-----\n" for m in range(4))


class Host:
    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def run(self, cmd: str, **kw):
        self.calls.append((self.name, cmd))
        return SimpleNamespace(stdout=HEALTHY if cmd == "cat /proc/drbd" else "", stderr="", ok=True)

    def wait_for(self, cmd: str, **kw):
        self.calls.append((self.name, "wait_for " + cmd))


class Lab:
    def __init__(self, calls: list):
        self.calls = calls
        self.hosts = {n: Host(n, calls) for n in storage.SERVERS}

    def __getitem__(self, name):
        return self.hosts[name]

    def power_off(self, name):
        self.calls.append(("lab", f"power_off {name}"))
        return T0 + 1.0

    def power_on(self, name, wait=True):
        self.calls.append(("lab", f"power_on {name} wait={wait}"))

    def wait_booted(self, name):
        self.calls.append(("lab", f"wait_booted {name}"))


class Res:
    def __init__(self, name: str, minor: int, role: str = "Primary"):
        self.name, self.minor, self.device, self.role = name, minor, f"/dev/drbd{minor}", role

    def state(self, host):
        return SimpleNamespace(role=self.role)


class Probe:
    """A writer that wrote 300 records, all acknowledged; the survivor has all but the last ``lost``."""

    def __init__(self, name: str, lost: int, calls: list):
        self.name, self.lost, self.calls = name, lost, calls
        self.log_df = pd.DataFrame({"seq": range(300), "sent": [T0 - 3 + i / 100 for i in range(300)],
                                    "recv": [T0 - 3 + i / 100 + 0.001 for i in range(300)], "ok": True,
                                    "err": None, "late": 0})
        self._running = False

    def start(self):
        self._running = True

    def running(self):
        return self._running

    def stop(self):
        self._running = False

    def log(self):
        return self.log_df

    def verify(self, host=None, to_seq=None):
        self.calls.append((host.name, f"verify {self.name} to {to_seq}"))
        return {"present": list(range(300 - self.lost)), "corrupt": []}


def test_one_power_failure_measures_every_protocol_and_everything_rejoins_together(monkeypatch):
    calls: list = []
    lab = Lab(calls)
    lost = {"/dev/drbd1": 10, "/dev/drbd2": 0, "/dev/drbd3": 0}
    monkeypatch.setattr(storage.probes, "write",
                        lambda host, path, **kw: Probe(kw["name"], lost[path], calls))
    replicas = {"A": Res("proto-a", 1), "B": Res("proto-b", 2), "C": Res("proto-c", 3)}
    r0 = Res("r0", 0)
    exp = storage.drbd_protocols_loss(lab, replicas, delay_ms=100, before_s=0, also=[r0])
    run = exp.run(1)

    row = run.trials.iloc[0]
    assert (row["A lost_acked"], row["B lost_acked"], row["C lost_acked"]) == (10, 0, 0)
    assert row["A acked"] == 300 and round(row["A rpo_s"], 2) == 0.1
    assert set(run.last.losses) == {"A", "B", "C"}
    table = storage.protocol_table(run)
    assert list(table.protocol) == ["A", "B", "C"] and list(table.lost_acked) == [10, 0, 0]

    steps = [c for h, c in calls if not c.startswith(("cat /proc", "tc "))]
    off = steps.index("power_off iscsi-server0")
    assert steps[off + 1] == "power_on iscsi-server0 wait=False"  # boots while the survivor takes over
    promote = steps.index("drbdadm primary proto-a proto-b proto-c")
    assert "grep -Ec '^ *(1|2|3): cs:(WFConnection|StandAlone)' /proc/drbd) -eq 3" in steps[promote - 1]
    assert steps[promote + 1] == "wait_booted iscsi-server0"  # the logs are on its disk
    assert ("iscsi-server1", "drbdadm secondary proto-a proto-b proto-c") in calls
    rejoin = next(c for h, c in calls if h == "iscsi-server0" and c.startswith("modprobe drbd"))
    assert "drbdadm up proto-a proto-b proto-c r0" in rejoin and "disconnect" not in rejoin
    # every resource connected (the fake /proc/drbd): none is reconnected with --discard-my-data
    assert not any("discard-my-data" in c for h, c in calls)
    assert calls[-1] == ("iscsi-server0", "drbdadm primary proto-a proto-b proto-c r0")  # r0 was primary there


def test_one_resource_keeps_the_exercises_columns(monkeypatch):
    calls: list = []
    lab = Lab(calls)
    monkeypatch.setattr(storage.probes, "write", lambda host, path, **kw: Probe(kw["name"], 4, calls))
    r0 = Res("r0", 0)
    r0.set_protocol = lambda pr: calls.append(("drbd", f"set_protocol {pr}"))
    run = storage.drbd_protocol_loss(lab, r0, "A", before_s=0).run(1)
    assert ("drbd", "set_protocol A") in calls
    row = run.trials.iloc[0]
    assert row["protocol"] == "A" and row["lost_acked"] == 4 and run.last.loss.lost_acked == 4


def test_a_stall_on_several_ports_drops_each_port_both_ways():
    calls: list = []
    storage.shape_port(Host("iscsi-server0", calls), "loss 100%", (7789, 7790))
    cmd = calls[-1][1]
    for port in (7789, 7790):
        assert f"match ip dport {port} 0xffff" in cmd and f"match ip sport {port} 0xffff" in cmd
    assert sorted(re.findall(r"protocol ip prio (\d+)", cmd)) == ["3", "4", "5", "6"]  # four filters
    assert cmd.startswith("tc qdisc del dev eth0 root")  # a second call does not pile filters up


def test_every_probe_is_read_back_the_first_one_unprefixed():
    from hautils.experiment import Trial

    calls: list = []
    client = Host("iscsi-client", calls)

    class OnClient(Probe):  # a client's probe: read back where it wrote (host=None)
        def verify(self, host=None, to_seq=None):
            return super().verify(host or client, to_seq)

    t = Trial(0, "cache")
    t.probes = {"write-through": OnClient("write-through", 0, calls), "write-back": OnClient("write-back", 1, calls)}
    t.logs = {n: p.log() for n, p in t.probes.items()}
    row = storage._every_probe_read_back(t)
    assert row["lost_acked"] == 0 and row["write-back lost_acked"] == 1 and row["acked"] == 300
    assert set(t.losses) == {"write-through", "write-back"} and t.loss is t.losses["write-through"]
