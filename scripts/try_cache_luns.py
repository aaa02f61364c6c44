"""Chapter 2 (tuned page)'s cache test, N times in a row: a write-through LUN (r0, bsoflags sync)
and a write-back LUN (r1, tgt's default) behind one target, one writer each, the active server's
replication stalled 0.2 s and then its power cut.  Prints each trial's row with its step times.

Run from the repository root: `sudo .venv/bin/python scripts/try_cache_luns.py 20`
(the evidence in results/studies/two-lun-cache-20-20261203.txt)."""
import sys, time
from hautils.lab import Lab
from hautils.scenarios import storage
from hautils.services.drbd import Drbd
from hautils.services.heartbeat import Heartbeat, fast_disk_script, install_script
from hautils.services.iscsi import Initiator, Target
N = int(sys.argv[1]) if len(sys.argv) > 1 else 3
t0 = time.monotonic()
def lap(s):
    global t0
    n = time.monotonic(); print(f"{s}: {n-t0:.1f} s", flush=True); t0 = n
lab = Lab("storage").up(progress=False)
server0, server1, client = lab["iscsi-server0"], lab["iscsi-server1"], lab["iscsi-client"]
try:
    net, opts = {"ping-int": "1", "connect-int": "1"}, {"c-plan-ahead": "0", "resync-rate": "100M"}
    drbd = Drbd([server0, server1], ["192.168.103.99", "192.168.103.91"], disk="/dev/ubdb", net=net, disk_options=opts)
    cache = Drbd(drbd.hosts, drbd.addresses, disk="/dev/ubdc", name="r1", device="/dev/drbd1", port=drbd.port + 1,
                 net=net, disk_options=opts)
    for r in (drbd, cache):
        r.create(initial_sync=False)
        r.secondary(server0)
    target = Target()
    script = fast_disk_script("192.168.103.36", sync_writes=True, more_luns=[("r1", "/dev/drbd1", False)])
    dropin = target.always_on([server0, server1], "192.168.103.36")
    for h in (server0, server1):
        install_script(h, "hadisk", script)
    lap("lab+drbd+target")
    hb = Heartbeat([server0, server1], ["192.168.103.99", "192.168.103.91"], ["hadisk"], keepalive=0.2, warntime=0.5, deadtime=1)
    hb.install(); hb.start()
    initiator = Initiator(client, "192.168.103.36", noop_out_interval=1, noop_out_timeout=1, login_timeout=2)
    initiator.install(); initiator.login()
    print(initiator.format_and_mount(initiator.device(lun=1), "/mnt"))
    print(initiator.format_and_mount(initiator.device(lun=2), "/srv/write-back"))
    print(client.run("cat /sys/class/scsi_disk/*/cache_type; lsblk").stdout)
    lap("hb+initiator")
    wt = storage.preallocated_probe(client, "write-through", "/mnt/records.dat")
    wb = storage.preallocated_probe(client, "write-back", "/srv/write-back/records.dat", mib=16, hz=20)
    lap("prealloc")
    run = storage.heartbeat_failover(lab, hb, [drbd, cache], target, "power", label="cache", marks=storage.TUNED_MARKS,
                                     probe=lambda t: {"write-through": wt(t), "write-back": wb(t)}, luns=(1, 2),
                                     inject=storage.stalled_power_failure(lab, ports=(drbd.port, cache.port)),
                                     before_s=1, after_s=1).run(N, progress=True, restore_last=False, keep_going=True)
    lap(f"{N} trials")
    import pandas as pd; pd.set_option("display.width", 250)
    print(run.trials.T, flush=True)
finally:
    lab.down()
