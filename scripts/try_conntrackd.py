"""conntrackd across power failures, many in a row: the series chapter 3's links-and-gateways page cites
(results/studies/conntrackd-20-20261203.txt).

Runs the page's sequence first (VRRP at 1 s nopreempt, 0.1 s twice, 0.01 s, the NAT pair without
conntrackd), then N single conntrackd trials in a row on the synced pair, each checked.  On a
broken session it prints every layer from both routers (keepalived, the notify script, conntrackd,
the kernel's conntrack table, the firewall counters).

    python scripts/try_conntrackd.py 20                   # from labs/ (the lab's YAML is found there)
    python scripts/try_conntrackd.py 3 --no-dropin        # without keepalived's boot order after conntrackd
    python scripts/try_conntrackd.py 20 --no-prelude      # the synced pair only
"""
import sys, time, json
import pandas as pd
pd.set_option("display.width", 250); pd.set_option("display.max_columns", 40)
from hautils.lab import Lab
from hautils.services.keepalived import Keepalived, Conntrackd, Nat
from hautils.scenarios import networking

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20
prelude = "--no-prelude" not in sys.argv
T = time.time()
lab = Lab("gateway").up(progress=False)
print("up", round(time.time() - T, 1), flush=True)
rows = []
try:
    tuned = Keepalived("gateway", advert_int=0.1)
    if prelude:
        default = Keepalived("gateway", advert_int=1, preempt=False)
        default.deploy(lab)
        r = networking.vrrp_power_failure(lab, default.routers, "client", "192.168.2.10", vrrp=default,
                                          before_s=1, after_s=1).run(1)
        print("default", r.trials[["downtime_s", "master after return"]].to_dict("records"), flush=True)
        tuned.deploy(lab)
        r = networking.vrrp_power_failure(lab, tuned.routers, "client", "192.168.2.10", vrrp=tuned,
                                          before_s=1, after_s=1).run(2)
        print("tuned", r.trials[["downtime_s", "return downtime_s"]].to_dict("records"), flush=True)
        fastest = Keepalived("gateway", advert_int=0.01)
        fastest.deploy(lab)
        r = networking.vrrp_power_failure(lab, fastest.routers, "client", "192.168.2.10", vrrp=fastest,
                                          before_s=1, after_s=1).run(1)
        print("fastest", r.trials[["downtime_s"]].to_dict("records"), flush=True)
    nat = Nat("gateway")
    nat.install(*(lab[rt] for rt in tuned.routers))
    tuned.deploy(lab)
    if prelude:
        r = networking.conntrackd_session(lab, tuned.routers, "client", "192.168.2.10", vrrp=tuned,
                                          before_s=1, after_s=1, watch_return=False).run(1)
        print("no sync", r.trials[["survived", "break_err", "downtime_s"]].to_dict("records"), flush=True)
    synced = Keepalived("gateway", advert_int=0.1, conntrackd=True)
    ctd = Conntrackd("gateway")
    synced.deploy(lab, ctd)
    if "--no-dropin" in sys.argv:  # the state before 6c1e2d3: no boot order between the two units
        lab.run_all(synced.routers, "rm -f /etc/systemd/system/keepalived.service.d/hautils-conntrackd.conf; "
                    "systemctl daemon-reload")
        print("drop-in removed", flush=True)
    exp = networking.conntrackd_session(lab, synced.routers, "client", "192.168.2.10", vrrp=synced,
                                        before_s=1, after_s=1)
    for i in range(N):
        t0 = time.time()
        run = exp.run(1)
        row = run.trials.drop(columns=["diagnostics"], errors="ignore").iloc[0].to_dict()
        row["i"] = i
        rows.append(row)
        cache = row.get("in backup's cache")
        print(f"trial {i}: survived={row.get('survived')} cache={cache} "
              f"down={row.get('downtime_s'):.3f} err={row.get('break_err')} ({time.time() - t0:.0f} s)", flush=True)
        if not row.get("survived"):
            since = int(t0) - 2
            for h in synced.routers:
                out = lab[h].run(
                    f"journalctl -o short-precise --no-pager --since=@{since} -t Keepalived_vrrp -t hautils-conntrackd "
                    f"-t conntrackd -t systemd | grep -v 'sending bulk\\|resync req' | tail -60; "
                    "echo ---conntrack; conntrack -L -p tcp 2>/dev/null | grep 7007; "
                    "echo ---ext; conntrackd -C /etc/conntrackd/conntrackd.conf -e 2>&1 | grep 7007; "
                    "echo ---stats; conntrackd -C /etc/conntrackd/conntrackd.conf -s 2>&1 | head -30; "
                    "echo ---fw; iptables-legacy -L FORWARD -v -n; iptables-legacy -t nat -L -v -n; "
                    "echo ---procs; pgrep -a conntrackd; systemctl is-active conntrackd keepalived; "
                    "sysctl net.netfilter.nf_conntrack_tcp_loose net.netfilter.nf_conntrack_tcp_be_liberal",
                    check=False, timeout=60).stdout
                print(f"===== {h}\n{out}", flush=True)
finally:
    lab.down()
df = pd.DataFrame(rows)
print(df.to_string())
print("survived", int(df["survived"].astype(bool).sum()), "of", len(df), "total", round(time.time() - T), "s")
