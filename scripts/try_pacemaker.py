"""The storage failover on the modern stack: corosync 3 + pacemaker 2.1 instead of heartbeat.

Brings up a copy of the storage lab, creates DRBD r0, lets pacemaker run it (promotable clone)
with tgt's target, the LUN and the service address on the Primary, logs the client in through
the service address and mounts ext4 there.  Then, per trial: a write probe at 100 Hz, power off
the server that holds the disk, measure the client's downtime, the acknowledged writes lost
and where the time went (from the survivor's and the client's journals); power the server on
again and let corosync, pacemaker and DRBD's resync bring it back before the next trial.

    python scripts/try_pacemaker.py --trials 3 [--token 1000] [--notify] [--monitor-delay 15] [--name pcmk]

``--attach`` reuses a lab brought up with ``hautils lab up`` (and already set up with
``--setup-only``) and leaves it up; without it the lab is created and always taken down.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from hautils import analysis, probes
from hautils.lab import Lab
from hautils.services.drbd import Drbd
from hautils.services.iscsi import Initiator
from hautils.services.pacemaker import PHASE_MARKS, Pacemaker

SERVERS = ["iscsi-server0", "iscsi-server1"]
ADDRESSES = ["192.168.103.99", "192.168.103.91"]
CLIENT = "iscsi-client"
VIP = "192.168.103.36"
CLIENT_ADDRESS = "192.168.103.93"
DRBD_NET = {"ping-int": "1",  # the survivor notices the dead Primary in ~1.5 s, not 10 s
            "after-sb-0pri": "discard-zero-changes", "after-sb-1pri": "discard-secondary",
            "after-sb-2pri": "disconnect"}
BLOCKED = 0.5  # s: an ack slower than this counts as a failed write (the client's deadline)


def topology(name: str) -> Path:
    """labs/storage.yaml under another lab name (its own network namespace)."""
    src = Path(__file__).resolve().parent.parent / "labs" / "storage.yaml"
    topo = yaml.safe_load(src.read_text())
    topo["name"] = name
    out = Path(tempfile.mkdtemp(prefix="hautils-")) / f"{name}.yaml"
    out.write_text(yaml.safe_dump(topo, sort_keys=False))
    return out


def objects(lab: Lab, args) -> tuple[Drbd, Pacemaker]:
    s = [lab[h] for h in SERVERS]
    drbd = Drbd(s, ADDRESSES, net=DRBD_NET)
    pm = Pacemaker(s, ADDRESSES, vip=VIP, token_ms=args.token, drbd_notify=args.notify,
                   monitor_delay_s=args.monitor_delay, allowed_initiators=CLIENT_ADDRESS,
                   tgt_bsoflags=args.bsoflags)
    return drbd, pm


def setup(lab: Lab, drbd: Drbd, pm: Pacemaker) -> None:
    t = time.time()
    for h in drbd.hosts:
        h.run("systemctl stop heartbeat tgt", timeout=120)
    print(f"DRBD initial sync: {drbd.create():.1f} s", flush=True)
    drbd.secondary(drbd.hosts[0])  # from here on only pacemaker promotes
    print(f"corosync + pacemaker up: {pm.install():.1f} s", flush=True)
    pm.configure()
    pm.wait_started(300)
    print(f"resources started on {pm.active()} ({time.time() - t:.0f} s since setup began)", flush=True)
    ini = Initiator(lab[CLIENT], VIP, noop_out_interval=1, noop_out_timeout=1, login_timeout=2)
    ini.install()
    dev = ini.login()
    print(ini.format_and_mount(dev), flush=True)


def wait_ready(drbd: Drbd, pm: Pacemaker, timeout: float = 600) -> None:
    """Both nodes online, every resource started, DRBD UpToDate/UpToDate."""
    pm.wait_online(timeout=timeout)
    pm.wait_started(timeout)
    drbd.wait_healthy(timeout, host=next(h for h in drbd.hosts if h.name == pm.active()))


def trial(i: int, lab: Lab, drbd: Drbd, pm: Pacemaker, settle: float = 3.0, quiet: float = 20.0) -> dict:
    wait_ready(drbd, pm)
    time.sleep(quiet)  # the returning node's first monitors (start-delay) run now, not during the failover
    client = lab[CLIENT]
    victim = pm.active()
    survivor = lab[next(h for h in SERVERS if h != victim)]
    p = probes.write(client, "/mnt/probe.dat", hz=100, name=f"pcmk-{i}", duration=300)
    p.start()
    time.sleep(settle)
    t = lab.power_off(victim)
    # wait until the client's writes are acknowledged fast again, then a few seconds more
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        time.sleep(2)
        recs = p.records()
        fast = [r for r in recs if r["ok"] and r["sent"] > t and r["recv"] - r["sent"] < BLOCKED]
        if len(fast) > 300:  # ~3 s of writes at 100 Hz after the failover
            break
    p.stop()
    log = p.log()
    v = p.verify()
    dt = analysis.downtime(analysis.with_timeout(log, BLOCKED), t, allow_open=True, pick="longest")
    lw = analysis.lost_writes(log, v["present"], v["corrupt"])
    events = [(j.time, f"{j.identifier}: {j.message}") for h in (survivor, client) for j in h.journal(since=t - 2)]
    end = dt.outage.end if dt.outage and dt.outage.end else time.time()
    ph = analysis.phases(events, PHASE_MARKS, t, end, final="client reconnect")
    row = {"victim": victim, "downtime_s": dt.downtime_s, "recover_s": dt.recover_s, "lost_writes": lw.lost_acked,
           "rpo_s": lw.rpo_s, "acked": lw.acked}
    row.update({f"{x.name}_s": x.duration for x in ph})
    lost = [f"seq {r.seq} sent {r.sent - t:+.3f} s, acked {r.recv - t:+.3f} s" for r in log.itertuples()
            if r.seq in set(lw.lost_seqs)]
    print(f"\ntrial {i}: power off {victim}; downtime {dt.downtime_s} s (from fault: {dt.recover_s} s), "
          f"lost acknowledged writes {lw.lost_acked} of {lw.acked} (RPO {lw.rpo_s:.3f} s)", flush=True)
    for x in lost[:10]:
        print(f"    LOST {x} (from the fault)", flush=True)
    for x in ph:
        print(f"    {x.name:<20} {'%.2f s' % x.duration if x.found else 'not found'}", flush=True)
    # the dead node boots again: corosync and pacemaker start by themselves (enabled), pacemaker
    # starts DRBD there as Unpromoted and DRBD resyncs what changed while it was away
    t_on = time.time()
    lab.power_on(victim)
    wait_ready(drbd, pm)
    row["rejoin_s"] = time.time() - t_on
    print(f"    {victim} back, in sync and clean after {row['rejoin_s']:.0f} s", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--token", type=int, default=1000, help="corosync token timeout, ms (>= 1000)")
    ap.add_argument("--notify", action="store_true", help="DRBD clone with notify=true (the agent's default)")
    ap.add_argument("--monitor-delay", type=int, default=15, help="start-delay of the first monitor, s (0: none)")
    ap.add_argument("--bsoflags", default="direct", help="tgt backing-store flags ('' = tgt's buffered default)")
    ap.add_argument("--reconfigure", action="store_true", help="with --no-setup: load the crm configuration again")
    ap.add_argument("--name", default="pcmk", help="lab name (not 'storage': that one may be running)")
    ap.add_argument("--attach", action="store_true", help="use the running lab NAME; do not take it down")
    ap.add_argument("--setup-only", action="store_true", help="set the lab up, run no trial")
    ap.add_argument("--no-setup", action="store_true", help="the attached lab is set up already")
    args = ap.parse_args()

    tmp = None
    if args.attach:
        lab = Lab.attach(args.name)
    else:
        tmp = topology(args.name)
        lab = Lab(tmp, name=args.name)
    try:
        if not args.attach:
            lab.up()
        drbd, pm = objects(lab, args)
        if not args.no_setup:
            setup(lab, drbd, pm)
        elif args.reconfigure:
            pm.configure()
            pm.wait_started(300)
        if args.setup_only:
            return 0
        print(pm.crm_config() if args.trials else "", flush=True)
        df = analysis.trials(trial, args.trials, raise_errors=False, lab=lab, drbd=drbd, pm=pm)
        print(df.to_string(), flush=True)
        ok = df[df["error"].isna()]
        if not ok.empty:
            print(analysis.trial_summary(ok).round(3).to_string(), flush=True)
        return 0 if ok.shape[0] == args.trials else 1
    finally:
        if not args.attach:
            lab.down()
        if tmp:
            shutil.rmtree(tmp.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
