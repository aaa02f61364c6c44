"""The storage failover on the modern stack: corosync 3 + pacemaker 2.1 instead of heartbeat.

Brings up a copy of the storage lab, creates DRBD r0, lets pacemaker run it (promotable clone)
with tgt's target, the LUN and the service address on the Primary, logs the client in through
the service address and mounts ext4 there.  Then, per trial: a write probe at 100 Hz, power off
the server that holds the disk, measure the client's downtime, the acknowledged writes lost
and where the time went (from the survivor's and the client's journals); power the server on
again and let corosync, pacemaker and DRBD's resync bring it back before the next trial.

    python scripts/try_pacemaker.py --trials 20 --record     # chapter 4 cites this run
    python scripts/try_pacemaker.py --trials 3 [--token 3000] [--consensus 1000] [--notify] [--monitor-delay 15] [--name pcmk]

``--attach`` reuses a lab brought up with ``hautils lab up`` (and already set up with
``--setup-only``) and leaves it up; without it the lab is created and always taken down.
"""

from __future__ import annotations

import argparse
import sys
import time

from hautils import analysis, studies
from hautils.lab import Lab
from hautils.scenarios import storage
from hautils.services.drbd import Drbd
from hautils.services.iscsi import Initiator
from hautils.services.pacemaker import Pacemaker

SERVERS = ["iscsi-server0", "iscsi-server1"]
ADDRESSES = ["192.168.103.99", "192.168.103.91"]
CLIENT = "iscsi-client"
VIP = "192.168.103.36"
CLIENT_ADDRESS = "192.168.103.93"
RESYNC = {"c-plan-ahead": "0", "resync-rate": "100M"}  # as chapter 2: full speed on an idle link
DRBD_NET = {"ping-int": "1",  # the survivor notices the dead Primary in ~1.5 s, not 10 s
            "connect-int": "1"}  # a returning node tries to connect every second, not every 10 s (chapter 2)
AFTER_SB = {"after-sb-0pri": "discard-zero-changes", "after-sb-1pri": "discard-secondary",
            "after-sb-2pri": "disconnect"}


def objects(lab: Lab, args) -> tuple[Drbd, Pacemaker]:
    s = [lab[h] for h in SERVERS]
    drbd = Drbd(s, ADDRESSES, net={**DRBD_NET, **(AFTER_SB if args.after_sb else {})}, disk_options=RESYNC)
    pm = Pacemaker(s, ADDRESSES, vip=VIP, token_ms=args.token, consensus_ms=args.consensus or None, drbd_notify=args.notify,
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
    t1 = time.time()
    pm.configure()
    print(f"configuration loaded and checked: {time.time() - t1:.1f} s", flush=True)
    t1 = time.time()
    pm.wait_started(300)
    print(f"every resource started: {time.time() - t1:.1f} s more", flush=True)
    print(f"resources started on {pm.active()} ({time.time() - t:.0f} s since setup began)", flush=True)
    ini = Initiator(lab[CLIENT], VIP, noop_out_interval=1, noop_out_timeout=1, login_timeout=2)
    ini.install()
    dev = ini.login()
    print(ini.format_and_mount(dev), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--token", type=int, default=3000, help="corosync token timeout, ms (>= 1000)")
    ap.add_argument("--consensus", type=int, default=1000, help="corosync consensus, ms (0: corosync's 1.2 x token)")
    ap.add_argument("--notify", action="store_true", help="DRBD clone with notify=true (the agent's default)")
    ap.add_argument("--monitor-delay", type=int, default=15, help="start-delay of the first monitor, s (0: none)")
    ap.add_argument("--quiet", type=float, default=3, help="s to wait after the cluster is complete, before a fault")
    ap.add_argument("--bsoflags", default="direct", help="tgt backing-store flags ('' = tgt's buffered default)")
    ap.add_argument("--reconfigure", action="store_true", help="with --no-setup: load the crm configuration again")
    ap.add_argument("--name", default="pcmk", help="lab name (not 'storage': that one may be running)")
    ap.add_argument("--after-sb", action="store_true", help="DRBD split-brain recovery policies (chapter 2 has none)")
    ap.add_argument("--record", action="store_true",
                    help="append the outcome to results/studies/pacemaker-failover.json (chapter 4 shows it)")
    ap.add_argument("--attach", action="store_true", help="use the running lab NAME; do not take it down")
    ap.add_argument("--setup-only", action="store_true", help="set the lab up, run no trial")
    ap.add_argument("--no-setup", action="store_true", help="the attached lab is set up already")
    args = ap.parse_args()

    lab = Lab.attach(args.name) if args.attach else Lab("storage", name=args.name)
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
        exp = storage.pacemaker_failover(lab, pm, drbd, quiet_s=args.quiet)
        run = exp.run(args.trials, keep_going=True, progress=True)
        df = run.trials
        print(df.to_string(), flush=True)
        ok = df[df["error"].isna()]
        if args.record:
            evidence = None
            if ok.shape[0] < args.trials:
                evidence = studies.save_evidence(f"pacemaker-{time.strftime('%Y%m%d-%H%M%S')}.txt", "\n\n".join(
                    f"trial {r.trial}: {r.error}\n{r.diagnostics}" for r in df[df["error"].notna()].itertuples()))
            studies.append("pacemaker-failover", {
                "script": " ".join(sys.argv), "trials": args.trials, "completed": int(ok.shape[0]),
                "settings": {"corosync token (ms)": pm.token_ms, "consensus (ms)": pm.consensus,
                             "dc-deadtime (s)": pm.dc_deadtime_s, "quiet (s)": args.quiet,
                             "DRBD net": drbd.net},
                "errors": df["error"].dropna().tolist(), "lost_acked": int(ok.lost_acked.sum()),
                "membership_changes_before_fault": [int(x) for x in ok["membership changes before the fault"]],
                "longest_corosync_stall_ms": [int(x) for x in ok["longest corosync stall (ms)"]],
                "downtime_s": [round(float(x), 3) for x in ok.downtime_s], "evidence": evidence})
        if not ok.empty:
            print(analysis.trial_summary(ok).round(3).to_string(), flush=True)
        for t in run.runs:
            lost = [f"seq {r.seq} sent {r.sent - t.fault_time:+.3f} s, acked {r.recv - t.fault_time:+.3f} s"
                    for r in t.log.itertuples() if r.seq in set(t.loss.lost_seqs)]
            for x in lost[:10]:
                print(f"    trial {t.index} LOST {x} (from the fault)", flush=True)
            print(f"trial {t.index} steps (s): " + ", ".join(f"{k} {v}" for k, v in t.timings.items()), flush=True)
        return 0 if ok.shape[0] == args.trials else 1
    finally:
        if not args.attach:
            lab.down()


if __name__ == "__main__":
    sys.exit(main())
