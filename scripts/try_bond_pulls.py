"""Many cable pulls of one bonding mode in a row (chapter 3's links page, section "the other modes"),
with each side's link-monitor verdict and every frame that the lab namespace itself sends into a
guest's pulled side: the series behind results/studies/bond-rr-namespace-ipv6-20261205.txt.

Per pull it prints the loss window (the pull to the last failed probe), when the bonded host's and
the peer's ARP monitors took eth0 down (their kernel logs), and how often each monitor ran (the
ARP requests it sends on eth0, captured on the host side of the tap).  A window much longer than
both verdicts means the bond kept losing packets for another reason; a verdict late despite
monitor runs on time means the slave still received something.

    python scripts/try_bond_pulls.py 20                    # from labs/; balance-rr, quiet machine
    python scripts/try_bond_pulls.py 35 --hogs 1           # with one busy CPU on the machine
    python scripts/try_bond_pulls.py 20 --mode balance-xor
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

from hautils.lab import Lab
from hautils.scenarios import networking

SNIFFER = r'''
import select, socket, struct, sys, time
out = open(sys.argv[1], "w", buffering=1)
socks = []
for ifc in sys.argv[2:]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind((ifc, 0)); socks.append((ifc, s))
while True:
    ready, _, _ = select.select([s for _, s in socks], [], [])
    for ifc, s in socks:
        if s in ready:
            data, addr = s.recvfrom(4096)
            kind = struct.unpack("!H", data[12:14])[0]
            # an ARP request's sender: one per monitor run (replies carry their sender's address too)
            arp_sender = socket.inet_ntoa(data[28:32]) if kind == 0x0806 and data[20:22] == b"\x00\x01" else "-"
            out.write(f"{time.time():.6f} {ifc} {addr[2]} {data[6:12].hex()} {kind:04x} {arp_sender}\n")
'''
DOWN = re.compile(r"bond0: \(slave eth0\): (link status definitely down|interface is now down)")
ADDRESS = {"bonded": "192.168.1.10", "peer": "192.168.1.20"}
OUTGOING = "4"  # PACKET_OUTGOING on the host side of a tap: a frame on its way into the guest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trials", type=int)
    ap.add_argument("--mode", default="balance-rr")
    ap.add_argument("--hogs", type=int, default=0, help="busy CPU loops on the machine while the pulls run")
    ap.add_argument("--name", default="pulls", help="lab name")
    args = ap.parse_args()
    lab = Lab("bonding", name=args.name).up(progress=False)
    hogs: list[subprocess.Popen] = []
    sniffer = None
    capture = f"/tmp/bond-pulls-{time.strftime('%H%M%S')}.txt"
    try:
        taps = {h: lab.backend.tap(h, "eth0") for h in ADDRESS}
        sniffer = subprocess.Popen(["ip", "netns", "exec", lab.backend.netns, sys.executable, "-c", SNIFFER,
                                    capture, *taps.values()])
        t0 = time.time()
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
        run = networking.bond_mode_pulls(lab, (args.mode,), trials=args.trials, before_s=1, after_s=1)[args.mode]
        time.sleep(0.5)
        verdicts = {h: [l.time for l in lab[h].journal(since=t0) if DOWN.search(l.message)] for h in ADDRESS}
        frames = [line.split() for line in open(capture)]
        own_macs = {m for _, _, pkttype, m, _, _ in frames if pkttype != OUTGOING}  # what the guests send
        windows = []
        for t in run.runs:
            f = t.fault_time
            row = {"trial": t.index, "loss window_s": t.row["loss window_s"]}
            for h, tap in taps.items():
                after = [x - f for x in verdicts[h] if f - 0.05 <= x <= f + 30]
                row[f"{h} verdict_s"] = round(min(after), 3) if after else None
                runs = sorted(float(ts) - f for ts, ifc, pkttype, _, kind, sender in frames
                              if ifc == tap and pkttype != OUTGOING and kind == "0806" and sender == ADDRESS[h]
                              and 0 <= float(ts) - f <= 1)
                row[f"{h} monitor runs (s)"] = " ".join(f"{x:.2f}" for x in runs[:8])
                foreign = [float(ts) - f for ts, ifc, pkttype, mac, _, _ in frames
                           if ifc == tap and pkttype == OUTGOING and mac not in own_macs and 0 <= float(ts) - f <= 1.5]
                row[f"frames from the namespace into {h}"] = len(foreign)
            windows.append(row["loss window_s"])
            print(row, flush=True)
        print(f"{args.mode}: {len(windows)} pulls, loss window min/median/max {min(windows):.3f} / "
              f"{statistics.median(windows):.3f} / {max(windows):.3f} s (capture: {capture})", flush=True)
        return 0
    finally:
        for h in hogs:
            h.kill()
        if sniffer is not None:
            sniffer.kill()
        lab.down()


if __name__ == "__main__":
    sys.exit(main())
