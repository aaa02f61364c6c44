"""The storage chapter's heartbeat failover alone, on a lab of its own, repeated: for tuning it and
for hunting flakes.

Sets up what chapter 2 sets up (DRBD r0 with ping-int 1, the paper's tgt target with the stop
drop-in, heartbeat with the paper's ha.cf and ``drbddisk::r0 tgt IPaddr2``, the client logged in
with Debian's default initiator timers, ext4 on /mnt), then runs N failovers of one kind
(``--fault power`` or ``graceful``) through the same experiment as the chapter
(``hautils.scenarios.storage.heartbeat_failover``) and prints one line per trial, with the
seconds each step took.  A failed trial stops the run and prints what every layer says (the
client's kernel messages, DRBD's and tgt's state and heartbeat's log on both servers).

    python scripts/try_storage.py --fault power --trials 20 --record     # the chapter cites these runs
    python scripts/try_storage.py --fault graceful --trials 20 --paper-order   # the paper's resource order
    python scripts/try_storage.py --tuned --writeback --stall-replication --prealloc --trials 3

``--record`` appends the outcome to ``results/studies/heartbeat-failover.json`` (and a failed run's
evidence next to it), which chapter 2 shows; ``--log`` and ``--tgt-log`` keep more of every trial
(the first costs tens of seconds per trial); ``--stock-clustermsg`` keeps heartbeat's own
``ha_clustermsg``; ``--attach``/``--no-setup`` reuse a lab brought up before.
"""

from __future__ import annotations

import argparse
import sys
import time

from hautils import studies
from hautils.experiment import ExperimentError
from hautils.lab import Lab
from hautils.scenarios import storage
from hautils.services.drbd import Drbd
from hautils.services.heartbeat import Heartbeat, fast_disk_script, install_script
from hautils.services.iscsi import Initiator, Target

ADDRESSES = ["192.168.103.99", "192.168.103.91"]
VIP = "192.168.103.36"
RESYNC = {"c-plan-ahead": "0", "resync-rate": "100M"}  # full speed: a small disk, an idle link
RESOURCES = storage.HB_RESOURCES
PAPER_ORDER = ["drbddisk::r0", f"IPaddr2::{VIP}/24/eth0", "tgt"]


def objects(lab: Lab, args) -> tuple[Drbd, Target, Heartbeat]:
    s = [lab[h] for h in storage.SERVERS]
    drbd = Drbd(s, ADDRESSES, disk="/dev/ubdb", net={"ping-int": "1", "connect-int": "1"}, disk_options=RESYNC)
    target = Target(sync_writes=not args.writeback)
    if args.tuned:
        hb = Heartbeat(s, ADDRESSES, ["hadisk"], keepalive=0.2, warntime=0.5, deadtime=1)
    else:
        hb = Heartbeat(s, ADDRESSES, PAPER_ORDER if args.paper_order else RESOURCES)
    return drbd, target, hb


def setup_tuned(lab: Lab, target: Target, hb: Heartbeat, writeback: bool) -> None:
    """Chapter 2's tuned variant: tgtd always on (bound to the address), one hadisk script,
    sub-second heartbeats, tight client timers."""
    client = lab[storage.CLIENT]
    client.run("umount /mnt; iscsiadm -m node -u; iscsiadm -m node -o delete; true", timeout=120)
    for h in hb.hosts:
        h.run("systemctl stop heartbeat", timeout=180)
    target.always_on(hb.hosts, VIP)
    for h in hb.hosts:
        install_script(h, "hadisk", fast_disk_script(VIP, sync_writes=not writeback))
    hb.install()
    hb.start()
    ini = Initiator(client, VIP, noop_out_interval=1, noop_out_timeout=1, login_timeout=2)
    ini.install()
    client.run(f"mount {ini.login()}1 /mnt")
    print(f"tuned variant up ({'write-back' if writeback else 'bsoflags sync'}), resources on {hb.active()}", flush=True)


def setup(lab: Lab, drbd: Drbd, target: Target, hb: Heartbeat, stock_clustermsg: bool = False) -> None:
    t = time.time()
    print(f"DRBD initial sync: {drbd.create():.1f} s", flush=True)
    drbd.secondary(drbd.hosts[0])  # heartbeat decides who is primary
    for h in drbd.hosts:
        target.install(h)
    hb.install()
    if stock_clustermsg:
        for h in drbd.hosts:  # take hautils' one-write ha_clustermsg out again
            h.run("sed -i '/^# --- hautils: ha_clustermsg/,$d' /etc/ha.d/shellfuncs")
        print("heartbeat's stock ha_clustermsg kept", flush=True)
    print(f"heartbeat holds the resources after {hb.start():.1f} s", flush=True)
    ini = Initiator(lab[storage.CLIENT], VIP)  # Debian's defaults, as the paper
    ini.install()
    print(ini.format_and_mount(ini.login()), flush=True)
    print(f"set up in {time.time() - t:.0f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fault", choices=["power", "graceful"], default="power")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--name", default="st", help="lab name (not 'storage': the chapter's may run)")
    ap.add_argument("--writeback", action="store_true", help="tgt's write-back cache instead of bsoflags sync")
    ap.add_argument("--tuned", action="store_true", help="the chapter's tuned variant (hadisk, fast heartbeats)")
    ap.add_argument("--stall-replication", action="store_true",
                    help="stop DRBD's replication traffic of the active server just before its power fails")
    ap.add_argument("--log", default=None, help="file for every trial's evidence (default: none)")
    ap.add_argument("--tgt-log", default=None,
                    help="file for the old server's tgt.service journal of every trial (cheap; graceful stops)")
    ap.add_argument("--attach", action="store_true", help="use the running lab NAME; leave it up")
    ap.add_argument("--no-setup", action="store_true", help="the attached lab is set up already")
    ap.add_argument("--setup-only", action="store_true")
    ap.add_argument("--keep-going", action="store_true", help="run every trial even after a failure")
    ap.add_argument("--prealloc", action="store_true",
                    help="probe into a file written in full first (overwrites only: no ext4 metadata writes)")
    ap.add_argument("--paper-order", action="store_true",
                    help="haresources in the paper's order (address before tgt; to reproduce the EROFS)")
    ap.add_argument("--record", action="store_true",
                    help="append the outcome to results/studies/heartbeat-failover.json (the chapter shows it)")
    ap.add_argument("--stock-clustermsg", action="store_true",
                    help="keep heartbeat's own ha_clustermsg (its FIFO messages can be lost: to reproduce that)")
    args = ap.parse_args()

    lab = Lab.attach(args.name) if args.attach else Lab("storage", name=args.name)
    logf = open(args.log, "a") if args.log else None
    try:
        if not args.attach:
            lab.up()
        drbd, target, hb = objects(lab, args)
        if not args.no_setup:
            if args.tuned:
                paper = Heartbeat(hb.hosts, ADDRESSES, RESOURCES)
                setup(lab, drbd, target, paper, args.stock_clustermsg)
                setup_tuned(lab, target, hb, args.writeback)
            else:
                setup(lab, drbd, target, hb, args.stock_clustermsg)
        if args.setup_only:
            return 0
        probe = None
        if args.prealloc:
            probe = storage.preallocated_probe(lab[storage.CLIENT], "try")
        exp = storage.heartbeat_failover(lab, hb, drbd, target, args.fault, probe=probe,
                                         marks=storage.TUNED_MARKS if args.tuned and args.fault == "power" else None)
        if args.tgt_log:
            inner_restore = exp.restore

            def restore_tgt(t):
                j = t.active.run(f"journalctl -u tgt -o short-precise --no-pager --since=@{t.fault_time - 2:.3f}",
                                 check=False, timeout=60).stdout
                with open(args.tgt_log, "a") as f:
                    f.write(f"\n===== trial {t.index} ({t.active.name}), phases: "
                            + ", ".join(f"{p.name} {p.duration:.1f}" for p in t.phases if p.found) + f"\n{j}")
                inner_restore(t)

            exp.restore = restore_tgt
        if args.stall_replication:
            exp.fault = storage.stalled_power_failure(lab)  # replaces the plain power failure
        if logf:
            inner = exp.restore

            def restore(t):
                logf.write(f"\n===== trial {t.index} {args.fault} {time.strftime('%T')}: downtime "
                           f"{t.downtime.downtime_s if t.downtime else None}\n")
                logf.write(storage.state_report(lab, since=t.fault_time - 5) + "\n")
                logf.flush()
                inner(t)

            exp.restore = restore
        inner_diagnose = exp.diagnose
        erofs: dict[int, int] = {}

        def diagnose(t, e):
            try:  # how many writes ext4 refused as read-only: the symptom this script hunts
                erofs[t.index] = int((t.probe.log()["err"] == "EROFS").sum())
            except Exception:  # noqa: BLE001
                pass
            return inner_diagnose(t, e)

        exp.diagnose = diagnose
        settings = {"fault": args.fault, "variant": "tuned" if args.tuned else "paper",
                    "haresources": " ".join(hb.resources),
                    "tgt": "write-back" if args.writeback else "bsoflags sync",
                    "ha_clustermsg": "stock" if args.stock_clustermsg else "one write (hautils)",
                    "replication stalled before the fault": args.stall_replication}
        try:
            run = exp.run(args.trials, keep_going=args.keep_going, progress=True)
        except ExperimentError as e:
            print(e.frame.to_string(), flush=True)
            if args.record:
                name = studies.save_evidence(f"heartbeat-{args.fault}-{time.strftime('%Y%m%d-%H%M%S')}.txt",
                                             str(e))
                done = e.frame[e.frame["error"].isna()]
                studies.append("heartbeat-failover", {
                    "script": " ".join(sys.argv), "settings": settings, "trials": args.trials,
                    "completed": len(done), "errors": e.frame["error"].dropna().tolist(),
                    "erofs": sum(1 for n in erofs.values() if n),
                    "lost_acked": int(done["lost_acked"].sum()) if "lost_acked" in done else 0,
                    "downtime_s": [round(float(x), 3) for x in done.get("downtime_s", [])], "evidence": name})
            raise
        if args.record:
            ok = run.trials[run.trials["error"].isna()]
            studies.append("heartbeat-failover", {
                "script": " ".join(sys.argv), "settings": settings, "trials": args.trials, "completed": len(ok),
                "errors": run.trials["error"].dropna().tolist() if "error" in run.trials else [],
                "erofs": sum(1 for n in erofs.values() if n) + sum(1 for t in run.runs if (t.log["err"] == "EROFS").any()),
                "lost_acked": int(ok.lost_acked.sum()),
                "downtime_s": [round(float(x), 3) for x in ok.downtime_s], "evidence": None})
        for t in run.runs:
            print(f"trial {t.index} steps (s): " + ", ".join(f"{k} {v}" for k, v in t.timings.items()), flush=True)
        print(run.trials.to_string(), flush=True)
        ok = run.trials[run.trials["error"].isna()]
        print(f"{len(ok)} of {args.trials} trials ok; downtime min/median/max "
              f"{ok.downtime_s.min():.2f}/{ok.downtime_s.median():.2f}/{ok.downtime_s.max():.2f} s; "
              f"lost acknowledged writes {int(ok.lost_acked.sum())}", flush=True)
        return 0 if len(ok) == args.trials else 1
    finally:
        if logf:
            logf.close()
        if not args.attach:
            lab.down()


if __name__ == "__main__":
    sys.exit(main())
