"""Starts of a path router, many in a row, under one FRR setting: the series chapter 3 cites for
"does a restarted router cost the flow through it?" (results/studies/ospf-start.json).

Each trial is chapter 3's ``ospf_event(..., "start")``: FRR stopped on the router (the end
routers route around it), started again, a 100 Hz probe from host1 to host2 on a source address
whose flow crossed the router before the stop; then the path of the flow after the start, the
outage, and from the router's journal when its adjacencies went Full and (``stub``) when
hautils-ospf-ready lifted the max-metric.

    python scripts/try_ospf_start.py stub 20 --record     # from labs/ (the lab's YAML is found there)
    python scripts/try_ospf_start.py paper 20
    python scripts/try_ospf_start.py on-startup 6
    python scripts/try_ospf_start.py stub 40 --monitor    # stop at the first start that loses > 0.5 s and
                                                          # print every layer: routes, ospfd, zebra, the gate
"""
from __future__ import annotations

import argparse
import re
import time

from hautils import studies
from hautils.lab import Lab
from hautils.scenarios import networking
from hautils.services.frr import Frr

SETTINGS = {"paper": {}, "stub": {"stub_until_routed": True}, "on-startup": {"max_metric_on_startup": 12}}

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("setting", choices=SETTINGS)
ap.add_argument("trials", type=int)
ap.add_argument("--router", default="patha")
ap.add_argument("--record", action="store_true", help="append the outcome to results/studies/ospf-start.json")
ap.add_argument("--monitor", action="store_true",
                help="run `ip -ts monitor route` on router1, router2 and the router; at the first start that loses "
                     "more than 0.5 s print it with the routers' journals and stop")
a = ap.parse_args()

lab = Lab("routing").up(progress=False)
rows, lines = [], []
try:
    frr = Frr(lab.topology, **SETTINGS[a.setting])
    frr.deploy([lab[r] for r in frr.routers])
    sources = networking.flow_sources(lab)
    watch = ["router1", "router2", a.router]
    if a.monitor:
        for h in watch:
            lab[h].run("setsid -f sh -c 'exec ip -ts monitor route >> /tmp/mon.log 2>&1' < /dev/null > /dev/null 2>&1",
                       timeout=30)
    for i in range(a.trials):
        if a.monitor:
            lab.run_all(watch, ": > /tmp/mon.log")
        since = time.time()
        ev = networking.ospf_event(lab, a.router, "start", frr=frr, sources=sources, hz=100, before_s=1, after_s=2)
        run = ev.run(1)
        t = run.trials.iloc[0]
        crossed = a.router in (t["path out after"], t["path back after"])
        log = [f"{l.time:.3f} {l.message}" for l in lab[a.router].journal(since=since)
               if l.identifier in ("ospfd", "hautils-ospf-ready") and re.search(r"Full|lifted|stub", l.message)]
        lifted = t.get("stub router for (s)")
        rows.append({"downtime_s": float(t.downtime_s), "crossed": crossed,
                     "lifted_after_s": None if lifted is None or lifted != lifted else float(lifted)})
        lines += [f"## trial {i}: source {t.source}, path before {t['path out']}/{t['path back']}, after "
                  f"{t['path out after']}/{t['path back after']}, outage {t.downtime_s:.3f} s"] + log
        print(i, rows[-1], flush=True)
        if a.monitor and t.downtime_s > 0.5:
            o = run.runs[0].downtime.outage
            print(f"OUTAGE last_ok {o.last_ok:.3f} first_fail {o.first_fail:.3f} last_fail {o.last_fail:.3f} "
                  f"first_ok_after {o.first_ok_after:.3f}; start of FRR {run.runs[0].fault_time:.3f}")
            for h in watch:
                print(f"--- {h}: ip -ts monitor route\n" + lab[h].run("cat /tmp/mon.log").stdout)
                print(f"--- {h}: journal")
                for line in lab[h].journal(since=since):
                    if line.identifier in ("ospfd", "zebra", "hautils-ospf-ready", "watchfrr"):
                        print(f"{line.time:.3f} {line.identifier}: {line.message}")
            break
finally:
    lab.down()

hit = [r for r in rows if r["downtime_s"] > 0.5]
crossed = [r for r in rows if r["crossed"]]
print(f"{a.setting}: {len(hit)} of {len(rows)} starts lost > 0.5 s; the flow crossed the started router after "
      f"{len(crossed)}; outages {[round(r['downtime_s'], 3) for r in rows]}")
if a.record:
    stamp = time.strftime("%Y%m%d-%H%M")
    ev_name = studies.save_evidence(f"ospf-start-{a.setting}-{stamp}.txt", "\n".join(lines) + "\n")
    studies.append("ospf-start", {
        "script": f"scripts/try_ospf_start.py {a.setting} {a.trials} --router {a.router}",
        "settings": {"frr": SETTINGS[a.setting] or "the paper's", "router": a.router, "probe": "ICMP echo, 100 Hz"},
        "trials": a.trials, "completed": len(rows), "downtime_s": [r["downtime_s"] for r in rows],
        "crossed": [r["crossed"] for r in rows], "lifted_after_s": [r["lifted_after_s"] for r in rows],
        "over_0_5_s": len(hit), "evidence": ev_name})
