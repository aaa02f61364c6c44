"""Integration: a real 2-host UML lab boots, talks, breaks and disappears without a trace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from hautils.errors import CommandError, HostUnreachable, LabError
from hautils.lab import Lab, netns, state

pytestmark = pytest.mark.lab
PAIR = Path(__file__).parent / "pair.yaml"
PY = sys.executable


def pings(host, target: str, count: int = 3) -> int:
    """How many of ``count`` pings (0.2 s apart, 0.5 s wait) got a reply.

    Working paths are checked as "at least 4 of 5" (CI once lost one echo on a healthy link of
    a busy host); cut paths as "none of 3"."""
    out = host.run(f"ping -n -q -c {count} -i 0.2 -W 0.5 {target}", check=False, timeout=30).stdout
    for line in out.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    raise AssertionError(f"unexpected ping output: {out!r}")


leftovers = state.leftovers  # anything of a lab still on the machine


@pytest.fixture(scope="module")
def lab():
    lab = Lab(PAIR)
    lab.up(progress=False)
    yield lab
    lab.down()
    assert leftovers("pair") == []


def test_hosts_ping_each_other_on_both_networks(lab):
    assert pings(lab["alpha"], "192.168.103.20", 5) >= 4
    assert pings(lab["beta"], "10.10.1.10", 5) >= 4
    # names from /etc/hosts, as the paper's labs use them
    assert pings(lab["alpha"], "beta", 3) >= 2


def test_identity_applied_at_boot(lab):
    a, b = lab["alpha"], lab["beta"]
    assert a.run("hostname").stdout.strip() == "alpha"
    ids = {h.run("cat /etc/machine-id").stdout.strip() for h in (a, b)}
    assert len(ids) == 2
    out = a.run("ip -o link show eth1").stdout
    assert lab.topology.hosts["alpha"].links[1].mac in out
    assert "10.10.1.10/24" in a.run("ip -o -4 addr show eth1").stdout
    # host keys are per VM, not from the shared image
    keys = {h.run("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] for h in (a, b)}
    assert len(keys) == 2


def test_run_put_get_service_journal(lab):
    a = lab["alpha"]
    for _ in range(20):  # the exit status may arrive before the last stderr bytes: none may be lost
        r = a.run("echo out; echo err >&2; exit 3", check=False)
        assert (r.exit_status, r.stdout, r.stderr) == (3, "out\n", "err\n") and r.duration > 0
    with pytest.raises(CommandError, match="on alpha: `false` exited 1"):
        a.run("false")
    a.put("/root/x/hello.txt", "héllo\n", mode=0o600)
    assert a.get("/root/x/hello.txt") == "héllo\n".encode()
    assert a.run("stat -c %a /root/x/hello.txt").stdout.strip() == "600"
    with pytest.raises(FileNotFoundError, match="alpha:/nonexistent: no such file"):
        a.get("/nonexistent")
    assert a.service("ssh").status() == "active"
    t0 = time.time()
    a.run("logger -t hautils-test marker-$((6*7))")
    lines = a.journal(identifier="hautils-test", since=t0 - 1)
    assert [l.message for l in lines] == ["marker-42"]
    assert abs(lines[0].time - t0) < 5


def test_guest_clock_is_the_host_clock(lab):
    """UML guests read the host's clock: timestamps from probes and faults line up.

    Causality check: the guest's reading must fall between the host's readings taken just
    before and after the command; a clock offset larger than that window would fall outside.
    """
    for _ in range(5):
        before = time.time()
        guest = float(lab["alpha"].run("date +%s.%N").stdout)
        after = time.time()
        assert before <= guest <= after, (before, guest, after)
        assert after - before < 2.0


def test_cable_pull_and_plug(lab):
    a = lab["alpha"]
    assert pings(a, "192.168.103.20", 5) >= 4
    t = lab.cable_pull("beta", "eth0")
    assert abs(t - time.time()) < 5
    assert pings(a, "192.168.103.20") == 0
    assert pings(a, "10.10.1.20", 5) >= 4  # the other NIC is still plugged
    assert "UNPLUGGED" in next(r for r in lab.status() if r["host"] == "beta")["nics"]
    lab.cable_plug("beta", "eth0")
    assert pings(a, "192.168.103.20", 5) >= 4
    assert [e.kind for e in lab.events[-2:]] == ["cable_pull", "cable_plug"]


def test_the_switches_send_nothing_of_their_own(lab):
    """The namespace's bridges and taps speak no IPv6: a cable pull changes two links (the
    detached tap, the bridge's MAC), and with IPv6 on they sent router solicitations into the
    guests that kept a balance-rr bond's pulled slave alive (results/studies/
    bond-rr-namespace-ipv6-20261205.txt).  The guests' own IPv6 still crosses the bridges."""
    from hautils.lab import netns

    name = lab.backend.netns
    assert netns.ipv6_disabled(name)
    lab.cable_pull("beta", "eth0")
    lab.cable_plug("beta", "eth0")
    out = subprocess.run(["ip", "netns", "exec", name, "ip", "-6", "-o", "addr", "show"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"IPv6 addresses on the lab's own links: {out}"
    beta6 = lab["beta"].run("ip -6 -o addr show dev eth0 scope link").stdout.split()[3].split("/")[0]
    assert lab["alpha"].run(f"ping -6 -c 3 -W 2 {beta6}%eth0", check=False).ok  # the guests' IPv6 is theirs


def test_partition_and_heal(lab):
    a = lab["alpha"]
    lab.partition(["alpha"], ["beta"])
    assert pings(a, "192.168.103.20") == 0 and pings(a, "10.10.1.20") == 0
    a.run("true")  # the management network still reaches every host
    lab["beta"].run("true")
    lab.heal()
    assert pings(a, "192.168.103.20", 5) >= 4 and pings(a, "10.10.1.20", 5) >= 4
    with pytest.raises(LabError, match="no host 'gamma'"):
        lab.partition(["alpha"], ["gamma"])


def test_cpu_seconds_counts_what_a_vm_burns_on_the_machine(lab):
    """Lab.cpu_seconds (chapter 1's probe cost) sees a busy guest and an idle one apart."""
    c0 = lab.cpu_seconds("beta")
    time.sleep(2)
    idle = lab.cpu_seconds("beta") - c0
    c0 = lab.cpu_seconds("alpha")
    lab["alpha"].run("timeout 2 sh -c 'while :; do :; done'; true", timeout=30)
    busy = lab.cpu_seconds("alpha") - c0
    assert idle < 0.2 and busy > 1.0, (idle, busy)


def test_power_off_and_on_keeps_disks_and_host_key(lab):
    b_spec = lab.topology.hosts["alpha"]
    a = lab["alpha"]
    a.run("echo survives > /root/marker && sync")
    a.run("echo disk-marker | dd of=/dev/ubdb bs=512 count=1 conv=sync oflag=direct 2>/dev/null")
    pgid = lab.backend.vms["alpha"].pgid
    t = lab.power_off("alpha")
    assert abs(t - time.time()) < 5
    assert state.group_pids(pgid) == []  # no process of the VM is left
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="alpha"):
        a.run("true", timeout=8)
    assert time.monotonic() - started < 15
    assert pings(lab["beta"], "192.168.103.10") == 0
    lab.power_on("alpha")
    assert a.run("cat /root/marker").stdout == "survives\n"
    assert a.run("head -c 11 /dev/ubdb").stdout == "disk-marker"
    assert pings(lab["beta"], str(b_spec.address), 5) >= 4
    # the pinned host key was verified on reconnection; a different key is refused
    kh = lab.workdir / "known_hosts"
    assert a.address in kh.read_text()


def test_a_guest_fences_another_through_the_virtual_bmc(lab):
    """beta runs Debian's stock fence_redfish against the lab's virtual power switch, as a cluster
    node fences a peer: status, off (alpha's VM is gone, as after lab.power_off), on (it boots)."""
    bmc = lab.bmc()
    beta, alpha = lab["beta"], lab["alpha"]

    def agent(action: str, **over: str):
        argv = bmc.agent_argv("alpha", action)
        argv = [next((f"--{k}={v}" for k, v in over.items() if a.startswith(f"--{k}=")), a) for a in argv]
        return beta.run(" ".join(argv), check=False, timeout=120)

    r = agent("status")
    assert r.ok and "Status: ON" in r.stdout, r.stdout + r.stderr
    assert not agent("status", password="guess").ok  # the switch wants the lab's password
    pgid = lab.backend.vms["alpha"].pgid
    r = agent("off")
    assert r.ok, r.stdout + r.stderr
    assert not lab.is_on("alpha") and state.group_pids(pgid) == []
    beta_mgmt = str(lab.topology.hosts["beta"].mgmt.address.ip)
    assert [(e.host, e.reset, e.done, e.client) for e in bmc.log] == [("alpha", "ForceOff", "off", beta_mgmt)]
    assert "Status: OFF" in agent("status").stdout
    assert pings(beta, "192.168.103.10") == 0
    r = agent("on")
    assert r.ok and lab.is_on("alpha"), r.stdout + r.stderr
    lab.wait_booted("alpha")
    assert alpha.run("hostname").stdout.strip() == "alpha"
    assert bmc.log[-1].done == "on"


def test_changed_host_key_is_refused(lab, tmp_path):
    from hautils.ssh import Host

    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                           capture_output=True)
    assert other.returncode == 0
    pub = (tmp_path / "k.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{lab['beta'].address} {pub[0]} {pub[1]}\n")
    ns = "hal-pair"
    h = Host("beta", lab["beta"].address, lab.workdir / "id_ed25519", kh,
             connector=lambda timeout: netns.connect(ns, lab["beta"].address, 22, timeout))
    with pytest.raises(paramiko.BadHostKeyException):
        h.run("true")


def test_second_up_after_a_killed_run(lab):
    """A run killed with SIGKILL leaves VMs behind; `hautils lab down --all` clears them."""
    name = "crash"
    script = (
        "import os, signal\n"
        "from hautils.lab import Lab\n"
        f"lab = Lab({str(PAIR)!r}, name={name!r})\n"
        "lab.up(progress=False)\n"
        "print('UP', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=300)
    assert "UP" in p.stdout, p.stderr[-2000:]
    assert p.returncode == -signal.SIGKILL
    assert "namespace" in leftovers(name) and any(x.startswith("process") for x in leftovers(name))
    with pytest.raises(LabError, match="already up"):
        Lab(PAIR, name=name).up(progress=False)
    cli = subprocess.run([PY, "-m", "hautils.cli", "lab", "down", "--all"], capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "removed VM alpha" in cli.stdout
    assert leftovers(name) == []
    # the module's own lab was removed too: bring it back for the remaining tests
    lab.backend = None
    lab._is_up = False
    lab.hosts.clear()
    with Lab(PAIR, name=name) as again:
        assert pings(again["alpha"], "192.168.103.20", 5) >= 4
    assert leftovers(name) == []
    lab.up(progress=False)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "exit"])
def test_owner_process_ending_tears_the_lab_down(how):
    """SIGTERM, Ctrl-C inside `with Lab(...)`, or a plain exit: nothing of the lab survives."""
    name = "owner"
    body = {
        "SIGTERM": "lab.up(progress=False)\nprint('UP', flush=True)\ntime.sleep(300)\n",
        "SIGINT": "with lab:\n    print('UP', flush=True)\n    time.sleep(300)\n",
        "exit": "lab.up(progress=False)\nprint('UP', flush=True)\nsys.stdin.read()\n",
    }[how]
    # SIGUSR1 makes a stuck child print where it is stuck (faulthandler) before the test kills it
    # and Ctrl-C must work in it: a shell that starts jobs in the background (as CI's may) hands
    # them SIGINT ignored, and Python then never raises KeyboardInterrupt
    script = ("import faulthandler, signal, sys, time\nfaulthandler.register(signal.SIGUSR1)\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              f"from hautils.lab import Lab\nlab = Lab({str(PAIR)!r}, name={name!r})\n" + body)
    p = subprocess.Popen([PY, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "UP"
        assert any(x.startswith("process") for x in leftovers(name))
        if how == "exit":
            p.stdin.close()
        else:
            p.send_signal(getattr(signal, how))
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGUSR1)  # its stack goes to the captured stderr
            time.sleep(1)
            raise
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
            # a killed owner cannot tear down: do it here, so one failure does not fail the next case
            subprocess.run([PY, "-m", "hautils.cli", "lab", "down", name], capture_output=True, timeout=120)
    assert leftovers(name) == []


def test_not_root_is_refused_at_once():
    code = ("import os; os.geteuid = lambda: 1000\n"
            "from hautils.lab import Lab\n"
            "from hautils.errors import LabError\n"
            f"try:\n    Lab({str(PAIR)!r}).up()\nexcept LabError as e:\n    print(e)\n")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "needs root" in out


def test_cli_up_status_ssh_down():
    """The command line a learner uses: `hautils lab up/status/ssh/down`."""
    cli = [PY, "-m", "hautils.cli", "lab"]
    run = lambda *a: subprocess.run([*cli, *a], capture_output=True, text=True, timeout=300)  # noqa: E731
    up = run("up", str(PAIR), "--name", "clitest")
    assert up.returncode == 0, up.stderr[-2000:]
    assert "lab clitest up in" in up.stdout and "alpha" in up.stdout
    try:
        st = run("status", "clitest")
        assert "alpha" in st.stdout and "running" in st.stdout and "eth1=10.10.1.10/24@back" in st.stdout
        ssh = run("ssh", "clitest", "beta", "hostname")
        assert (ssh.returncode, ssh.stdout) == (0, "beta\n")
        bad = run("ssh", "clitest", "beta", "exit 7")
        assert bad.returncode == 7
    finally:
        down = run("down", "clitest")
    assert down.returncode == 0 and "removed VM alpha" in down.stdout
    assert leftovers("clitest") == []
    missing = run("ssh", "nosuchlab", "alpha", "true")
    assert missing.returncode == 2 and "no lab 'nosuchlab' is up" in missing.stderr


ROUTING = Path(__file__).parents[2] / "labs" / "routing.yaml"


def test_cli_up_ssh_down_five_times_on_the_six_host_lab():
    """The sequence a learner types, five times in a row: `lab up routing`, `lab ssh` to every
    host (by the paper's names: pathA, not the lab's patha), `lab down`, and at once, with no
    sleep, nothing of the lab left: no process (zombies included), no namespace, no tap."""
    cli = [PY, "-m", "hautils.cli", "lab"]
    run = lambda *a: subprocess.run([*cli, *a], capture_output=True, text=True, timeout=300)  # noqa: E731
    names = ["host1", "router1", "pathA", "pathB", "router2", "host2"]
    for attempt in range(5):
        up = run("up", str(ROUTING), "--name", "clirouting")
        pgids = state.recorded_pgids("clirouting")
        try:
            assert up.returncode == 0, up.stderr[-2000:]
            assert len(pgids) == 6
            for h in names:
                r = run("ssh", "clirouting", h, "hostname")
                assert (r.returncode, r.stdout, r.stderr) == (0, h.lower() + "\n", ""), (attempt, h, r)
        finally:
            down = run("down", "clirouting")
        assert down.returncode == 0, down.stderr[-2000:]
        # 8 bridges (7 lab networks + mgmt) and 24 taps deleted before the namespace went
        assert "namespace hal-clirouting (32 bridges and taps deleted)" in down.stdout, down.stdout
        assert leftovers("clirouting", pgids) == [], attempt
        assert "hal-clirouting" not in netns.listed()


def test_cli_errors_name_the_host_and_the_cause():
    cli = [PY, "-m", "hautils.cli", "lab"]
    run = lambda *a: subprocess.run([*cli, *a], capture_output=True, text=True, timeout=300)  # noqa: E731
    up = run("up", str(PAIR), "--name", "clierr")
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        unknown = run("ssh", "clierr", "gamma", "true")
        assert unknown.returncode == 2 and "no host 'gamma' in lab 'clierr'; its hosts: alpha, beta" in unknown.stderr
        # power beta off behind the lab's back: ssh says which host, why, and where to look
        pgid = next(vm["pgid"] for h, vm in state.read("clierr")["vms"].items() if h == "beta")
        os.killpg(pgid, signal.SIGKILL)
        state.wait_gone(pgid)
        off = run("ssh", "clierr", "beta", "true")
        assert off.returncode == 255 and "host 'beta' is unreachable" in off.stderr and "not running" in off.stderr
        st = run("status", "clierr")
        assert "beta" in st.stdout and "OFF" in st.stdout and "some VMs powered off" in st.stdout
    finally:
        down = run("down", "clierr")
    assert down.returncode == 0 and leftovers("clierr") == []


def test_power_failure_right_after_up_keeps_the_host_key():
    """A VM's first boot makes its SSH host key; a power failure seconds later must not lose it
    (before ``up`` synced the guests, the next boot made another key and SSH refused the host:
    2 of 2 quick power cycles failed)."""
    quick = Lab(PAIR, name="pair-quick")
    quick.up(progress=False)
    try:
        a = quick["alpha"]
        key = (quick.workdir / "known_hosts").read_text()
        quick.power_off("alpha")
        quick.power_on("alpha", wait=False)
        quick.wait_booted("alpha", timeout=60)
        assert [r.stdout.strip() for r in quick.run_all(["alpha", quick["beta"]], "hostname")] == ["alpha", "beta"]
        assert (quick.workdir / "known_hosts").read_text() == key
    finally:
        quick.down()
    assert leftovers("pair-quick") == []


def test_preflight_finds_the_image_complete_and_names_a_blocked_module(lab):
    """The own-machines backend's preflight against a real guest: the lab image has everything
    the storage chapter needs; a module blocked in /etc/modprobe.d is the one row that fails."""
    from dataclasses import replace

    from hautils.lab import preflight

    a = lab["alpha"]
    spec = replace(lab.topology.hosts["alpha"], packages="storage")
    found = preflight.check_host(a, spec)
    assert all(f.ok for f in found), [f for f in found if not f.ok]
    assert {"module drbd", "package drbd-utils", "address eth1"} <= {f.check for f in found}
    loaded = a.run("cut -d' ' -f1 /proc/modules").stdout.split()
    victim = next(m for m in ("drbd", "raid1", "iscsi_tcp") if m not in loaded)
    a.run(f"echo 'install {victim} /bin/false' > /etc/modprobe.d/hautils-test.conf")
    try:
        bad = [f for f in preflight.check_host(a, spec) if not f.ok]
    finally:
        a.run("rm -f /etc/modprobe.d/hautils-test.conf")
    assert [f.check for f in bad] == [f"module {victim}"], bad
    assert f"install {victim} /bin/false" in bad[0].found and "/etc/modprobe.d" in bad[0].fix


def test_a_cable_pulled_from_inside_comes_back_by_itself(lab):
    """The own-machines backend's cable pull (``ip link set down`` with a replug timer armed
    first), on a real guest: the link is dead, then back without anyone plugging it."""
    from hautils.lab import remote
    from hautils.lab.inventory import InventoryHost

    a = lab["alpha"]

    def answers() -> bool:  # (with the link down there is no route: ping fails at once)
        return a.run("ping -n -c 1 -W 0.5 10.10.1.20", check=False, timeout=30).ok

    t = remote.cable_pull(a, InventoryHost("alpha", "-", allow_destructive=True), "eth1", restore_after_s=5)
    try:
        assert not answers()
        deadline = t + 8  # due after 5 s: systemd's default AccuracySec (1 min) once made it 30 s
        while not answers():
            if time.time() > deadline:
                why = a.run("ip -br link show eth1; ip -4 route; systemctl list-timers --all --no-pager | "
                            "grep -i hautils; journalctl --no-pager -o short-precise -n 20 -u 'hautils-replug-*'",
                            check=False, timeout=30)
                raise AssertionError(f"eth1 did not come back after its replug timer:\n{why.stdout}{why.stderr}")
            time.sleep(0.3)
        assert time.time() - t >= 4
    finally:
        remote.cable_plug(a, "eth1")
    # a timer that fired before the pull (here: 1 ms, and a second's wait before pulling) is
    # caught, and the link put back.  Without the wait this was a race of its own: a 1 ms timer
    # with AccuracySec=100ms fired before the pull in 3 of 20 tries in the lab and after it in 17,
    # sometimes after the check too (CI once: "DID NOT RAISE"); results/studies/replug-race-20261204.txt
    late = remote.cable_pull_command("eth1", 1).replace("--on-active=1s", "--on-active=1ms")
    late = late.replace("echo $EPOCHREALTIME && ip link set eth1 down", "sleep 1 && echo $EPOCHREALTIME && ip link set eth1 down")
    assert "sleep 1 &&" in late
    with pytest.raises(CommandError, match="replug timer fired before the pull"):
        a.run(late)
    assert answers()


def test_an_exported_inventory_reaches_every_vm_through_the_namespace_proxy(lab, tmp_path):
    """`hautils lab inventory` writes what the own-machines backend reads: each VM by its
    management address behind a ProxyCommand into the lab's namespace.  The inventory parses,
    matches the topology, and paramiko gets a shell through that very command."""
    import yaml

    from hautils.lab import inventory

    out = subprocess.run([PY, "-m", "hautils.cli", "lab", "inventory", "pair"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "pair.yml"
    path.write_text(out.stdout)
    hosts = inventory.load(path).for_topology(lab.topology)
    beta = hosts["beta"]
    assert beta.proxy_command and "hautils.lab.nsproxy hal-pair %h %p" in beta.proxy_command
    assert str(beta.links["eth0"]) == "192.168.103.20/24" and beta.allow_destructive
    cmd = beta.proxy_command.replace("%h", beta.address).replace("%p", str(beta.port))
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab.workdir / "known_hosts"))
    try:
        client.connect(beta.address, port=beta.port, username=beta.user, key_filename=str(beta.key_file),
                       sock=paramiko.ProxyCommand(cmd), allow_agent=False, look_for_keys=False, timeout=30)
        _, stdout, _ = client.exec_command("hostname")
        assert stdout.read().decode().strip() == "beta"
    finally:
        client.close()
    assert yaml.safe_load(out.stdout)["all"]["vars"]["ansible_user"] == "root"


def test_a_partition_made_from_inside_heals_by_itself_and_keeps_the_notebook(lab):
    """The own-machines backend's partition (iptables, a heal timer armed first), on a real
    guest: beta's lab addresses are cut off, the management network is kept, and the table is
    gone again when its timer fires; heal() ends it at once."""
    from hautils.lab import remote
    from hautils.lab.inventory import InventoryHost

    a = lab["alpha"]
    inv = InventoryHost("alpha", "-", allow_destructive=True)

    def answers() -> bool:
        return a.run("ping -n -c 1 -W 0.5 10.10.1.20", check=False, timeout=30).ok

    t = remote.partition(a, inv, ["192.168.103.20", "10.10.1.20"], restore_after_s=5,
                         keep=[str(lab.topology.mgmt_gateway.ip)])
    try:
        assert not answers() and pings(a, "192.168.103.20") == 0
        a.run("true")  # the notebook still reaches the host
        while not answers():
            assert time.time() < t + 8, a.run("iptables-legacy -S; systemctl list-timers --all --no-pager", check=False).stdout
            time.sleep(0.3)
        assert "HAUTILS-CUT" not in a.run("iptables-legacy -S").stdout
        remote.partition(a, inv, ["10.10.1.20"], restore_after_s=60)
        assert not answers()
        remote.heal(a)
        assert answers() and "hautils" not in a.run("systemctl list-timers --all --no-pager", check=False).stdout
        # a heal timer that fired before the rules were in is caught, and the rules removed
        late = remote.partition_command(["10.10.1.20"], 1).replace("--on-active=1s", "--on-active=1ms")
        late = late.replace("echo $EPOCHREALTIME &&", "sleep 1 && echo $EPOCHREALTIME &&")
        assert "sleep 1 &&" in late
        with pytest.raises(CommandError, match="heal timer fired before the partition"):
            a.run(late)
        assert answers() and "HAUTILS-CUT" not in a.run("iptables-legacy -S").stdout
    finally:
        remote.heal(a)
