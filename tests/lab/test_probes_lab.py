"""Integration: every probe kind, run against a real lab host, sees a power-off as an outage of
plausible length, and the write probe loses no acknowledged write when its host loses power.

One lab (``probes.yaml``): a server with a web site (TCP port 80), an authoritative DNS zone and a
spare disk, and a client that probes it.  The server is powered off (SIGKILL of its UML process)
for ~2 s and booted again; the guests read the host's clock, so fault times from ``lab`` and probe
timestamps from the guests are on one clock.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hautils import analysis, probes
from hautils.lab import Lab, netns, state

pytestmark = pytest.mark.lab
TOPOLOGY = Path(__file__).parent / "probes.yaml"
LAB = "probelab"
SERVER_IP = "192.168.103.10"

OFF_S = 2.0          # how long the server stays powered off
MIN_BOOT_S = 2.0     # power-on to the first answer of any kind: measured 2.9 s for ping (CI, Dec 2026);
                     # a kernel boot plus the boot script never takes less than this
MAX_DOWNTIME_S = 120.0  # generous: a loaded 2-core machine boots slowly
SETTLE_S = 1.0       # a success counts as recovery only if no failure follows within 1 s

WEB_UNIT = f"""\
[Unit]
Description=lab web site (python3 http.server)
After=network.target
StartLimitIntervalSec=0

[Service]
ExecStart=/usr/bin/python3 -m http.server --bind {SERVER_IP} --directory /srv/www 80
Restart=always
RestartSec=0.5

[Install]
WantedBy=multi-user.target
"""

NAMED_LOCAL = """\
zone "lab.test" {
	type primary;
	file "/etc/bind/db.lab.test";
};
"""

ZONE = f"""\
$TTL 60
@	IN SOA	ns.lab.test. hostmaster.lab.test. (1 60 60 600 60)
@	IN NS	ns.lab.test.
ns	IN A	{SERVER_IP}
www	IN A	{SERVER_IP}
_http._tcp	IN SRV	10 5 80 www.lab.test.
"""


leftovers = state.leftovers  # anything of a lab still on the machine


def setup_server(lab: Lab) -> None:
    """Web site on port 80 and named with zone lab.test, both enabled so they come back at boot."""
    s = lab["server"]
    s.put("/srv/www/index.html", "<h1>probelab</h1>\n")
    s.put("/etc/systemd/system/web.service", WEB_UNIT)
    s.put("/etc/bind/named.conf.local", NAMED_LOCAL)
    s.put("/etc/bind/db.lab.test", ZONE)
    # the real tools' checks: the configuration (with its zones loaded) and the zone itself
    s.run("named-checkconf -z /etc/bind/named.conf")
    out = s.run("named-checkzone lab.test /etc/bind/db.lab.test").stdout
    assert "loaded serial 1" in out and out.rstrip().endswith("OK"), out
    # ... and they do reject a broken zone (an SRV record without its target)
    s.put("/tmp/db.broken", ZONE.replace("10 5 80 www.lab.test.", "10 5 80"))
    assert not s.run("named-checkzone lab.test /tmp/db.broken", check=False).ok
    s.run("systemctl daemon-reload && systemctl enable --now web.service named.service", timeout=120)
    s.run("sync")  # a power cut loses the guest's page cache: the setup must be on the disk


# succeeds on the client once the web site (port 80) and the zone answer
SERVICES_ANSWER = (f"curl -fsS -m 2 -o /dev/null http://{SERVER_IP}/ && "
                   f"dig +time=1 +tries=1 +short @{SERVER_IP} www.lab.test A | grep -qx {SERVER_IP}")


@pytest.fixture(scope="module")
def lab():
    lab = Lab(TOPOLOGY, name=LAB)
    lab.up(progress=False)
    try:
        setup_server(lab)
        lab["client"].wait_for(SERVICES_ANSWER, timeout=60)
        yield lab
    finally:
        lab.down()
    assert leftovers(LAB) == []


def test_services_answer_before_any_fault(lab):
    c = lab["client"]
    assert c.run(f"curl -fsS http://{SERVER_IP}/").stdout == "<h1>probelab</h1>\n"
    assert c.run(f"dig +short @{SERVER_IP} www.lab.test A").stdout.split() == [SERVER_IP]
    assert c.run(f"dig +short @{SERVER_IP} _http._tcp.lab.test SRV").stdout.split() == \
        ["10", "5", "80", "www.lab.test."]
    s = lab["server"]
    assert s.service("web").status() == "active" and s.service("named").status() == "active"
    assert s.run("systemctl is-enabled web named").stdout.split() == ["enabled", "enabled"]


def _probes(client) -> dict[str, probes.Probe]:
    return {
        "icmp": probes.icmp(client, SERVER_IP, hz=100),
        "tcp": probes.tcp(client, SERVER_IP, 80, hz=20),
        "http": probes.http(client, f"http://{SERVER_IP}/", hz=20),
        "dns": probes.dns(client, SERVER_IP, "www.lab.test", "A", hz=50),
        "command": probes.command(client, f"ping -c1 -W1 {SERVER_IP}", hz=2),
    }


def test_power_off_is_an_outage_of_plausible_length(lab):
    client = lab["client"]
    ps = _probes(client)
    started = []
    try:
        for p in ps.values():
            p.start()
            started.append(p)
        time.sleep(3.0)  # a healthy stretch before the fault
        t_fault = lab.power_off("server")
        try:
            time.sleep(OFF_S)
        finally:
            t_on = lab.power_on("server", wait=False)
            lab.wait_ready(["server"], progress=False)
            t_ssh_back = time.time()
            lab["server"].put("/etc/hosts", lab.topology.hosts_file())
        client.wait_for(SERVICES_ANSWER, timeout=MAX_DOWNTIME_S)
        time.sleep(3.0)  # every probe logs a stable stretch after recovery
    finally:
        for p in started:
            p.stop()
    assert t_on - t_fault >= OFF_S

    logs = {kind: p.log() for kind, p in ps.items()}
    report = {kind: analysis.downtime(df, t_fault, settle=SETTLE_S) for kind, df in logs.items()}
    icmp = report["icmp"]
    summary = {k: (round(d.downtime_s or -1, 2), round(d.recover_s or -1, 2), d.lost_probes) for k, d in report.items()}
    print(f"\noff {t_on - t_fault:.2f} s, SSH back after {t_ssh_back - t_fault:.2f} s; "
          f"(downtime, recovered after, lost probes): {summary}")

    for kind, p in ps.items():
        df, d = logs[kind], report[kind]
        assert p.footer is not None and p.footer["reason"] == "SIGTERM", (kind, p.footer)
        # healthy first: at least a second of answered attempts, and no outage ended before the fault
        assert df[df["sent"] < t_fault]["ok"].sum() >= p.hz, kind
        before = [o for o in analysis.outages(df, settle=SETTLE_S) if o.end is not None and o.end <= t_fault]
        assert before == [], (kind, before)
        assert d.seen and d.recovered and d.lost_probes > 0, (kind, d)
        # the outage began at the fault and lasted the power-off plus a boot, but not absurdly long
        assert -0.5 <= d.detect_s <= 2.0, (kind, d)
        assert d.downtime_s >= OFF_S + MIN_BOOT_S, (kind, d)
        assert d.recover_s >= (t_on - t_fault) + MIN_BOOT_S, (kind, d)
        assert d.downtime_s < MAX_DOWNTIME_S, (kind, d)

    # at 100 Hz the outage starts within half a second of the kill (one clock for host and guests;
    # requests sent a few ms before the kill may already go unanswered: a busy 2-core host
    # deschedules the server for tens of ms)
    assert abs(icmp.detect_s) <= 0.5, icmp
    assert abs(icmp.outage.last_ok - t_fault) <= 0.5, icmp
    # consistent with SSH: the server answers ping once its boot script configured the NIC, some
    # seconds before sshd runs and completes a handshake (measured 3-9 s later), never much later
    back = t_fault + icmp.recover_s
    assert t_ssh_back - 15.0 <= back <= t_ssh_back + 2.0, (back - t_fault, t_ssh_back - t_fault)
    # services come back after the network: none recovers before ICMP does (within 0.5 s)
    for kind in ("tcp", "http", "dns"):
        assert report[kind].recover_s >= icmp.recover_s - 0.5, (kind, report[kind], icmp)


def test_write_probe_with_fdatasync_loses_no_acknowledged_write_at_power_off(lab):
    """The database way (chapter 2's write-back test): write() into the page cache, then
    fdatasync(); an acknowledged record must be on the disk after a power failure."""
    server = lab["server"]
    p = probes.write(server, "/var/tmp/fdatasync.dat", hz=50, sync="fdatasync")
    p.start()
    assert p.header["direct"] is False and p.header["sync"] == "write+fdatasync", p.header
    time.sleep(2.0)
    lab.power_off("server")
    lab.power_on("server")
    df = p.log()
    acked = df[df["ok"]]
    assert len(acked) >= 50, len(acked)
    found = p.verify()
    loss = analysis.lost_writes(df, found["present"], found["corrupt"])
    assert loss.acked == len(acked) and loss.lost_acked == 0, loss


def test_write_probe_loses_no_acknowledged_write_at_power_off(lab):
    server = lab["server"]
    p = probes.write(server, "/dev/ubdb", hz=50, direct="yes")
    t_start = p.start()
    assert p.header["direct"] is True and p.header["sync"] == "O_DIRECT|O_SYNC", p.header
    time.sleep(3.0)
    t_fault = lab.power_off("server")
    try:
        time.sleep(1.0)
    finally:
        lab.power_on("server")

    df = p.log()  # what survived of the log on the server's root disk: no footer
    assert df.attrs["footer"] is None and df.attrs["header"]["run"] == p.run_id
    acked = df[df["ok"]]
    assert len(acked) >= 50, len(acked)
    assert (~df["ok"]).sum() == 0, df[~df["ok"]]
    # the log lost at most its last moments: fdatasynced every 50 ms (generously: 1 s)
    assert acked["recv"].max() > t_fault - 1.0, (acked["recv"].max(), t_fault)
    assert acked["sent"].min() >= t_start - 0.1

    found = p.verify()
    assert found["direct"] is True
    loss = analysis.lost_writes(df, found["present"], found["corrupt"])
    assert loss.acked == len(acked)
    assert loss.lost_acked == 0 and loss.lost_seqs == [], loss
    assert loss.rpo_s == 0.0
    # records on the disk but not acknowledged in the surviving log: only the newest few, whose
    # log lines were not yet synced (or a write in flight at the cut)
    last_logged = int(df["seq"].max())
    assert all(s > last_logged for s in loss.unacked_present), loss.unacked_present
    assert len(loss.unacked_present) <= 50, loss.unacked_present
    assert all(s > last_logged for s in found["corrupt"]), found["corrupt"]
    # the check is not vacuous: a zeroed and a damaged acknowledged record are found lost
    # record 20: one byte flipped (its bits inverted, so it changes whatever it was: writing a fixed
    # b'X' there left the record intact whenever the random run id held an 'X' at that place,
    # 1 run in 256, and failed CI at f95eadd)
    server.run("python3 -c \"import os; fd = os.open('/dev/ubdb', os.O_RDWR); "
               "os.pwrite(fd, bytes(4096), 10 * 4096); off = 20 * 4096 + 100; "
               "os.pwrite(fd, bytes([os.pread(fd, 1, off)[0] ^ 0xFF]), off); os.fsync(fd)\"")
    damaged = p.verify()
    bad = analysis.lost_writes(df, damaged["present"], damaged["corrupt"])
    assert (bad.lost_seqs, bad.corrupt_seqs) == ([10, 20], [20]), bad
    print(f"\nwrite probe: {loss.acked} acked writes checked, {loss.lost_acked} lost, "
          f"{len(loss.unacked_present)} present but unacked in the log, corrupt {found['corrupt']}")
