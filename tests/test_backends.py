"""The lab's backends without a lab: which one ``Lab`` picks, and the inventory backend's faults,
power, preflight and host-key policy against fake SSH and fake local commands."""

from __future__ import annotations

import re
import types
from pathlib import Path

import paramiko
import pytest
import yaml

from hautils import topology
from hautils.errors import HostUnreachable, LabError
from hautils.lab import Lab, inventory, own, preflight
from hautils.lab.backend import Backend, choose
from hautils.lab.inventory import InventoryError, InventoryHost
from hautils.lab.own import InventoryBackend, OwnHost, RejectUnknownHost, UnknownHostKey
from hautils.lab.uml import UMLBackend
from hautils.ssh import Result

STORAGE = topology.load("storage", check_memory=False)
HOSTS = list(STORAGE.hosts)  # iscsi-server0, iscsi-server1, iscsi-client
ADDR = {"iscsi-server0": "10.0.0.11", "iscsi-server1": "10.0.0.12", "iscsi-client": "10.0.0.13"}


# -- which backend ------------------------------------------------------------------------------
@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("HAUTILS_BACKEND", raising=False)
    monkeypatch.delenv("HAUTILS_INVENTORY", raising=False)
    return monkeypatch


def test_the_default_backend_is_uml(no_env):
    assert choose(None) == "uml"
    lab = Lab(STORAGE)
    assert lab.backend_kind == "uml" and lab.inventory is None and lab.backend is None


def test_the_environment_picks_the_backend_and_the_inventory(no_env, tmp_path):
    no_env.setenv("HAUTILS_BACKEND", "inventory")
    no_env.setenv("HAUTILS_INVENTORY", str(tmp_path / "inv.yml"))
    lab = Lab(STORAGE)
    assert lab.backend_kind == "inventory" and lab.inventory == tmp_path / "inv.yml"
    # the keyword wins over the environment (a notebook's papermill parameter)
    assert Lab(STORAGE, backend="uml").backend_kind == "uml"
    assert Lab(STORAGE, backend="inventory", inventory=tmp_path / "other.yml").inventory == tmp_path / "other.yml"


def test_an_unknown_backend_is_named_with_the_choices(no_env):
    with pytest.raises(LabError, match=r"unknown lab backend backend='vbox': use one of uml, inventory"):
        Lab(STORAGE, backend="vbox")
    no_env.setenv("HAUTILS_BACKEND", "docker")
    with pytest.raises(LabError, match=r"unknown lab backend HAUTILS_BACKEND='docker'"):
        Lab(STORAGE)


def test_the_inventory_backend_needs_an_inventory_and_uml_refuses_one(no_env, tmp_path):
    with pytest.raises(LabError, match=r"HAUTILS_INVENTORY"):
        Lab(STORAGE, backend="inventory")
    with pytest.raises(LabError, match=r"is for the inventory backend.*backend='inventory'"):
        Lab(STORAGE, backend="uml", inventory=tmp_path / "inv.yml")


def test_both_backends_implement_the_interface():
    assert issubclass(UMLBackend, Backend) and issubclass(InventoryBackend, Backend)
    assert not getattr(UMLBackend, "__abstractmethods__", None)
    assert not getattr(InventoryBackend, "__abstractmethods__", None)


# -- fakes ----------------------------------------------------------------------------------------
class FakeChannel:
    def __init__(self, host):
        self.host = host

    def settimeout(self, t):
        pass

    def exec_command(self, cmd):
        self.host.cmds.append(cmd)
        self._out = [b"1700000000,500000\n"]

    def recv(self, n):
        return self._out.pop(0) if self._out else b""


class FakeHost:
    """What the backend uses of an SSH host: run (recorded), connect (for sysrq's channel), close."""

    def __init__(self, inv: InventoryHost, replies: dict[str, str] | None = None, down: bool = False):
        self.inv, self.name, self.replies, self.down = inv, inv.name, replies or {}, down
        self.cmds: list[str] = []
        self.stdin: list[str] = []
        self.closed = 0

    def run(self, cmd, check=True, timeout=60, stdin=None):
        if self.down:
            raise HostUnreachable(self.name, "fake: off")
        self.cmds.append(cmd)
        if stdin is not None:
            self.stdin.append(stdin)
        out = next((v for k, v in self.replies.items() if k in cmd), "1700000000,250000\n")
        return Result(self.name, cmd, 0, out, "", 0.01)

    def connect(self, timeout=10):
        transport = types.SimpleNamespace(open_session=lambda timeout=10: FakeChannel(self))
        return types.SimpleNamespace(get_transport=lambda: transport)

    def close(self):
        self.closed += 1


def storage_inventory(**hosts) -> inventory.Inventory:
    base = {n: {"ansible_host": ADDR[n]} for n in HOSTS}
    for name, hv in hosts.items():
        base[name.replace("_", "-")] = hv
    return inventory.parse({"all": {"hosts": base}}, "inv.yml")


def backend(inv, replies=None, local_rc=0, local_out="", down=()):
    made: dict[str, FakeHost] = {}
    local: list[list[str]] = []

    def factory(h: InventoryHost) -> FakeHost:
        made[h.name] = FakeHost(h, replies, down=h.name in down)
        return made[h.name]

    def run_local(argv):
        local.append(argv)
        return types.SimpleNamespace(returncode=local_rc, stdout=local_out, stderr="")

    b = InventoryBackend(STORAGE, inv, "storage", host_factory=factory, local_run=run_local, restore_after_s=90)
    return b, made, local


VIRSH = {"ansible_host": ADDR["iscsi-server0"], "allow_destructive": True,
         "power": {"method": "virsh", "hypervisor": "localhost", "domain": "storage_srv0"}}


# -- faults ---------------------------------------------------------------------------------------
def test_every_fault_is_refused_without_allow_destructive_and_nothing_runs():
    b, made, local = backend(storage_inventory())
    faults = {
        "power failure": lambda: b.power_off("iscsi-server1"),
        "power on": lambda: b.power_on("iscsi-server1"),
        "cable pull": lambda: b.cable_pull("iscsi-server1", "eth0"),
        "cable plug": lambda: b.cable_plug("iscsi-server1", "eth0"),
        "partition": lambda: b.partition([["iscsi-server1"], ["iscsi-client"]]),
    }
    for what, fault in faults.items():
        with pytest.raises(InventoryError, match=r"iscsi-server1: refusing .*allow_destructive: true"):
            fault()
    assert all(not h.cmds for h in made.values()) and local == []


def test_a_partition_is_refused_when_any_host_of_it_is_not_destructive():
    b, made, _ = backend(storage_inventory(iscsi_server0=VIRSH))
    with pytest.raises(InventoryError, match=r"iscsi-(client|server1): refusing a partition"):
        b.partition([["iscsi-server0"], ["iscsi-server1"]])
    assert all(not h.cmds for h in made.values())


def test_a_cable_pull_arms_its_replug_and_teardown_plugs_it_back():
    b, made, _ = backend(storage_inventory(iscsi_client={"ansible_host": ADDR["iscsi-client"],
                                                         "allow_destructive": True}))
    assert b.cable_pull("iscsi-client", "eth0") == 1700000000.25
    c = made["iscsi-client"]
    assert "--on-active=90s /sbin/ip link set eth0 up" in c.cmds[-1] and "ip link set eth0 down" in c.cmds[-1]
    assert "UNPLUGGED" in next(r for r in b.status() if r["host"] == "iscsi-client")["nics"]
    with pytest.raises(LabError, match=r"no interface 'mgmt0'.*management NIC is never pulled"):
        b.cable_pull("iscsi-client", "mgmt0")
    assert b.teardown() == ["plugged iscsi-client:eth0"]
    assert "ip link set eth0 up" in c.cmds[-1] and "systemctl stop hautils-replug-eth0.timer" in c.cmds[-1]


def test_a_partition_cuts_the_other_groups_lab_addresses_and_keeps_the_notebook():
    opened = {n: {"ansible_host": ADDR[n], "allow_destructive": True} for n in HOSTS}
    b, made, _ = backend(storage_inventory(**{n.replace("-", "_"): v for n, v in opened.items()}),
                         replies={"echo $SSH_CLIENT": "10.0.0.1 50022 22\n"})
    b.partition([["iscsi-server0"], ["iscsi-server1"]])  # the client stays with the first group
    s0, s1, c = (made[n].cmds[-1] for n in HOSTS)
    assert "-s 192.168.103.91 -j DROP" in s0 and "192.168.103.93" not in s0
    assert "-s 192.168.103.99 -j DROP" in s1 and "-s 192.168.103.93 -j DROP" in s1
    assert "-s 192.168.103.91 -j DROP" in c and "-s 10.0.0.1 -j RETURN" in c  # the notebook's address kept
    b.heal()
    assert all("-X HAUTILS-CUT" in made[n].cmds[-1] for n in HOSTS)


# -- power ----------------------------------------------------------------------------------------
def test_power_off_runs_each_method_where_it_belongs():
    hyp = {"ansible_host": "10.0.0.2"}
    inv = storage_inventory(
        iscsi_server0=VIRSH,
        iscsi_server1={"ansible_host": ADDR["iscsi-server1"], "allow_destructive": True,
                       "power": {"method": "virsh", "hypervisor": "kvm1", "domain": "srv1"}},
        iscsi_client={"ansible_host": ADDR["iscsi-client"], "allow_destructive": True,
                      "power": {"method": "redfish", "address": "10.9.0.5", "username": "u", "password": "p"}},
        kvm1=hyp)
    b, made, local = backend(inv)
    b.power_off("iscsi-server0")  # a VM on this machine: virsh here, on the system's libvirt
    assert local[-1] == ["virsh", "-c", "qemu:///system", "destroy", "storage_srv0"]
    b.power_off("iscsi-server1")  # a VM on another hypervisor: virsh there, over SSH
    assert made["kvm1"].cmds == ["virsh destroy srv1"]
    b.power_off("iscsi-client")
    assert local[-1][0] == "fence_redfish" and "--action=off" in local[-1] and "--ip=10.9.0.5" in local[-1]
    b.power_on("iscsi-client")
    assert "--action=on" in local[-1]
    b.power_on("iscsi-server1")
    assert made["kvm1"].cmds[-1] == "virsh start srv1"


def test_an_unknown_hypervisor_is_named_with_the_fix():
    inv = storage_inventory(iscsi_server0={**VIRSH, "power": {**VIRSH["power"], "hypervisor": "kvm9"}})
    b, _, _ = backend(inv)
    with pytest.raises(LabError, match=r"host iscsi-server0: power: hypervisor kvm9 is not a host of the inventory"):
        b.power_off("iscsi-server0")


def test_a_failed_power_command_is_an_error_with_its_output():
    b, _, _ = backend(storage_inventory(iscsi_server0=VIRSH), local_rc=1)
    with pytest.raises(LabError, match=r"host iscsi-server0: power off with `virsh destroy storage_srv0` failed \(exit 1\)"):
        b.power_off("iscsi-server0")


def test_sysrq_powers_off_from_inside_and_cannot_power_on():
    sysrq = {"ansible_host": ADDR["iscsi-client"], "allow_destructive": True, "power": {"method": "sysrq"}}
    b, made, local = backend(storage_inventory(iscsi_client=sysrq))
    assert b.power_off("iscsi-client") == 1700000000.5  # the machine's clock, just before
    assert "echo o > /proc/sysrq-trigger" in made["iscsi-client"].cmds[-1] and local == []
    with pytest.raises(InventoryError, match=r"iscsi-client: power: method sysrq .* start it by hand"):
        b.power_on("iscsi-client")


def test_is_on_asks_the_power_method_or_ssh():
    b, made, local = backend(storage_inventory(iscsi_server0=VIRSH), local_out="shut off\n", down={"iscsi-client"})
    assert b.is_on("iscsi-server0") is False
    assert local[-1] == ["virsh", "-c", "qemu:///system", "domstate", "storage_srv0"]
    assert b.is_on("iscsi-server1") is True  # no power method: SSH answers
    assert b.is_on("iscsi-client") is False  # ... or does not


# -- preflight and up -----------------------------------------------------------------------------
def test_up_stops_with_the_preflight_table_when_something_is_missing(no_env, tmp_path, monkeypatch):
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {n: {"ansible_host": ADDR[n]} for n in HOSTS}}}))
    report = "## os\ndebian 12\n## packages\niproute2 installed\n## links\n"
    fakes: list[FakeHost] = []

    def factory(inv):
        fakes.append(FakeHost(inv, {"## os": report}))
        return fakes[-1]

    monkeypatch.setattr(own, "OwnHost", factory)
    lab = Lab(STORAGE, backend="inventory", inventory=path)
    with pytest.raises(preflight.PreflightError) as e:
        lab.up(progress=False, timeout=5)
    msg = str(e.value)
    assert "iscsi-server0: package drbd-utils: not installed -> apt-get install drbd-utils" in msg
    assert "iscsi-client: interface eth0: missing" in msg
    assert not preflight.table(e.value.findings, only_missing=True).empty
    assert not lab._is_up and all(f.closed for f in fakes)  # torn down: connections closed
    assert all(not f.stdin for f in fakes)  # /etc/hosts untouched when the preflight fails


def test_up_on_ready_machines_puts_the_names_atop_etc_hosts(no_env, tmp_path, monkeypatch):
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {n: {"ansible_host": ADDR[n]} for n in HOSTS}}}))
    monkeypatch.setattr(InventoryBackend, "preflight", lambda self: [])
    fakes: list[FakeHost] = []
    monkeypatch.setattr(own, "OwnHost", lambda inv: fakes.append(FakeHost(inv)) or fakes[-1])
    lab = Lab(STORAGE, backend="inventory", inventory=path).up(progress=False, timeout=5)
    assert set(lab.hosts) == set(HOSTS) and lab.backend.kind == "inventory"
    block = fakes[0].stdin[0]
    assert block.startswith("# BEGIN hautils") and "192.168.103.36\tiscsi-server-ha\n" in block
    assert block.endswith("# END hautils\n") and "localhost" not in block
    assert "sed '/^# BEGIN hautils/,/^# END hautils/d' /etc/hosts" in fakes[0].cmds[-1]
    with pytest.raises(LabError, match="virtual BMC is the UML lab's"):
        lab.bmc()
    assert lab.down() == []


def test_the_chapters_need_root():
    with pytest.raises(LabError, match=r"inv.yml: host iscsi-client: ansible_user is vagrant: .*ansible_user: root"):
        backend(storage_inventory(iscsi_client={"ansible_host": ADDR["iscsi-client"], "ansible_user": "vagrant"}))


# -- SSH: the user's keys and known_hosts, nothing trusted on first use ---------------------------
class FakeClient:
    def __init__(self):
        self.loaded, self.policy, self.kw = [], None, None

    def load_system_host_keys(self, f):
        self.loaded.append(f)

    def set_missing_host_key_policy(self, p):
        self.policy = p

    def connect(self, hostname, **kw):
        self.kw = dict(kw, hostname=hostname)
        raise UnknownHostKey("fake")  # what the policy raises for an unknown key

    def close(self):
        pass


def test_own_host_rejects_unknown_keys_and_reads_the_inventory_known_hosts(tmp_path, monkeypatch):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    key = tmp_path / "id"
    key.write_text("")
    inv = InventoryHost("iscsi-client", "10.0.0.13", port=2222, key_file=key, known_hosts=kh)
    clients: list[FakeClient] = []
    h = OwnHost(inv, client_factory=lambda: clients.append(FakeClient()) or clients[-1])
    monkeypatch.setattr(h, "_connector", lambda timeout: types.SimpleNamespace(close=lambda: None))
    with pytest.raises(UnknownHostKey):
        h.connect()
    c = clients[0]
    assert isinstance(c.policy, paramiko.RejectPolicy) and not isinstance(c.policy, paramiko.AutoAddPolicy)
    assert c.loaded == [str(kh)]  # UserKnownHostsFile replaces ~/.ssh/known_hosts, as in ssh
    assert c.kw["port"] == 2222 and c.kw["key_filename"] == str(key) and c.kw["look_for_keys"] is False
    agent_only = OwnHost(InventoryHost("n", "10.0.0.9"))
    assert agent_only._auth() == {"allow_agent": True, "look_for_keys": True}
    assert agent_only.known_hosts_files == own.system_known_hosts()


def test_an_unknown_host_key_names_the_host_and_the_keyscan_fix(tmp_path):
    inv = InventoryHost("iscsi-server0", "10.0.0.11", port=2222, proxy_jump="admin@bastion")
    policy = RejectUnknownHost(inv, [tmp_path / "known_hosts"])
    key = paramiko.ECDSAKey.generate()
    with pytest.raises(UnknownHostKey, match=r"host iscsi-server0 \(10.0.0.11 \(through admin@bastion\)\) offered "
                                             r"a ecdsa-sha2-nistp256 host key .*`ssh-keyscan -p 2222 10.0.0.11 >> "):
        policy.missing_host_key(None, "[10.0.0.11]:2222", key)


def test_a_proxy_command_gets_host_port_and_user(monkeypatch):
    seen = []
    monkeypatch.setattr(paramiko, "ProxyCommand", lambda cmd: seen.append(cmd) or "sock")
    inv = InventoryHost("h", "172.31.0.2", port=22, proxy_command="nsproxy hal-x %h %p %r 100%%")
    assert OwnHost(inv)._socket(5) == "sock" and seen == ["nsproxy hal-x 172.31.0.2 22 root 100%"]


def test_an_exported_lab_inventory_carries_its_known_hosts(tmp_path):
    """`hautils lab inventory` points at the lab's own key and known_hosts; the backend reads both."""
    (tmp_path / "id_ed25519").write_text("")
    lab = types.SimpleNamespace(name="storage", topology=STORAGE, workdir=tmp_path)
    data = inventory.from_lab(lab, python="/usr/bin/python3")
    inv = inventory.parse(yaml.safe_load(yaml.safe_dump(data)), "exported.yml")
    h = inv.for_topology(STORAGE)["iscsi-client"]
    assert h.known_hosts == tmp_path / "known_hosts" and h.key_file == tmp_path / "id_ed25519"
    assert h.proxy_command == "/usr/bin/python3 -m hautils.lab.nsproxy hal-storage %h %p"
    assert OwnHost(h).known_hosts_files == [tmp_path / "known_hosts"]


@pytest.mark.parametrize("raised, error, says", [
    (paramiko.BadHostKeyException("10.0.0.13", paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()),
     LabError, "ssh-keygen -R 10.0.0.13"),
    (paramiko.AuthenticationException("no"), LabError, "authorized_keys"),
    (paramiko.SSHException("Error reading SSH protocol banner"), HostUnreachable, "handshake with 10.0.0.13:2222"),
    (EOFError(), HostUnreachable, "handshake"),
])
def test_a_machine_that_refuses_is_a_lab_error_with_the_fix_one_that_does_not_answer_is_unreachable(
        monkeypatch, raised, error, says):
    class Refusing(FakeClient):
        def connect(self, hostname, **kw):
            raise raised

    h = OwnHost(InventoryHost("iscsi-client", "10.0.0.13", port=2222), known_hosts=[], client_factory=Refusing)
    closed = []
    monkeypatch.setattr(h, "_connector", lambda timeout: types.SimpleNamespace(close=lambda: closed.append(1)))
    with pytest.raises(error, match=re.escape(says)):
        h.connect()
    assert closed == [1] and h._client is None
