"""The virtual power switch (hautils.lab.bmc) over real HTTPS on the loopback, with a fake lab:
what fence_redfish sends (GET the system, POST ComputerSystem.Reset, poll PowerState)."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request

import pytest

from hautils.lab.bmc import Bmc


class FakePower:
    def __init__(self) -> None:
        self.on = {"node0": True, "node1": True}
        self.calls: list[tuple[str, str]] = []

    def is_on(self, host: str) -> bool:
        return self.on[host]

    def power_off(self, host: str) -> float:
        self.calls.append(("off", host))
        self.on[host] = False
        return 100.0

    def power_on(self, host: str, wait: bool = True) -> float:
        assert wait is False, "the switch must not wait for SSH: the agent polls PowerState"
        self.calls.append(("on", host))
        self.on[host] = True
        return 200.0


@pytest.fixture
def bmc():
    power = FakePower()
    b = Bmc(power, ["node0", "node1"], address="127.0.0.1", port=0, password="s3cret").start()
    yield b, power
    b.stop()


def call(b: Bmc, path: str, body: dict | None = None, password: str | None = None):
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # fence_redfish --ssl-insecure
    req = urllib.request.Request(f"https://127.0.0.1:{b.port}{path}", method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None)
    auth = base64.b64encode(f"{b.username}:{password or b.password}".encode()).decode()
    req.add_header("Authorization", f"Basic {auth}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            data = resp.read()
            return resp.status, json.loads(data) if data else None
    except urllib.error.HTTPError as exc:
        data = exc.read()
        return exc.code, json.loads(data) if data else None


def test_fence_redfish_walk_off_and_on(bmc):
    b, power = bmc
    status, root = call(b, "/redfish/v1")
    assert status == 200 and root["Systems"]["@odata.id"] == "/redfish/v1/Systems"
    status, systems = call(b, "/redfish/v1/Systems")
    assert [m["@odata.id"] for m in systems["Members"]] == ["/redfish/v1/Systems/node0", "/redfish/v1/Systems/node1"]
    status, node0 = call(b, b.system_uri("node0"))
    assert node0["PowerState"] == "On"
    target = node0["Actions"]["#ComputerSystem.Reset"]["target"]
    assert call(b, target, {"ResetType": "ForceOff"}) == (204, None)
    assert call(b, b.system_uri("node0"))[1]["PowerState"] == "Off"
    assert call(b, target, {"ResetType": "ForceOff"}) == (204, None)  # already off: nothing to do
    assert call(b, target, {"ResetType": "On"}) == (204, None)
    assert power.calls == [("off", "node0"), ("on", "node0")]
    assert [(e.host, e.reset, e.done, e.client) for e in b.log] == [
        ("node0", "ForceOff", "off", "127.0.0.1"), ("node0", "ForceOff", "none", "127.0.0.1"),
        ("node0", "On", "on", "127.0.0.1")]
    assert b.log[0].time == 100.0 and b.log[2].time == 200.0
    # every read of a system's state is kept apart: a fence agent reads before it switches
    assert [(e.host, e.reset, e.done) for e in b.queries] == [("node0", "status", "On"), ("node0", "status", "Off")]


def test_restart_is_off_then_on_and_nmi_is_refused(bmc):
    b, power = bmc
    target = b.system_uri("node1") + "/Actions/ComputerSystem.Reset"
    assert call(b, target, {"ResetType": "ForceRestart"})[0] == 204
    assert power.calls == [("off", "node1"), ("on", "node1")] and b.log[-1].done == "off+on"
    status, body = call(b, target, {"ResetType": "Nmi"})
    assert status == 400 and "not supported" in body["error"]["message"]


def test_wrong_password_unknown_host_and_bad_body(bmc):
    b, power = bmc
    assert call(b, b.system_uri("node0"), password="guess")[0] == 401
    assert call(b, "/redfish/v1/Systems/node7")[0] == 404
    assert call(b, "/redfish/v1/Systems/node7/Actions/ComputerSystem.Reset", {"ResetType": "ForceOff"})[0] == 404
    assert power.calls == []
    with pytest.raises(KeyError, match="no host 'node7' behind this BMC"):
        b.fence_params("node7")


def test_what_a_cluster_is_given(bmc):
    b, _ = bmc
    p = b.fence_params("node1")
    assert p == {"ip": "127.0.0.1", "ipport": str(b.port), "username": "fence", "password": "s3cret",
                 "ssl_insecure": "1", "systems_uri": "/redfish/v1/Systems/node1", "pcmk_host_list": "node1"}
    argv = b.agent_argv("node1", "off")
    assert argv[0] == "fence_redfish" and "--action=off" in argv and "--ssl-insecure" in argv
    with pytest.raises(ValueError, match="action must be"):
        b.agent_argv("node1", "explode")


def test_a_taken_port_names_the_address():
    power = FakePower()
    first = Bmc(power, ["node0"], address="127.0.0.1", port=0).start()
    try:
        with pytest.raises(Exception, match=f"cannot listen on 127.0.0.1:{first.port}"):
            Bmc(power, ["node0"], address="127.0.0.1", port=first.port).start()
    finally:
        first.stop()
    assert not first.running
