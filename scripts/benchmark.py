"""Engine benchmark (not a timed test): image build time, 6-host boot and teardown time, memory per idle VM.

    sudo .venv/bin/python scripts/benchmark.py [--cold] [--lab routing] [--boots 3]

Targets on a 2-core machine: the routing lab (6 VMs) SSH-ready in under 20 s from a cached
image; under 128 MiB per idle VM.  Memory is measured three ways because host RSS sums
overcount UML (its guest memory is one shared file mapped by every host process of the VM):
guest-used memory from the guest's /proc/meminfo (MemTotal - MemAvailable); the host RAM
really allocated for the guest's memory (blocks of UML's memory file in /dev/shm); and, for
comparison, the proportional set size (PSS) summed over the VM's host processes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from hautils.lab import Lab, image, state


def pss_mib(pgid: int) -> float:
    total_kb = 0
    for pid in state.group_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


def physmem_mib(pgid: int) -> float:
    """Host RAM really allocated for the guest's memory: the blocks of UML's (deleted) memory
    file in /dev/shm.  Unlike summed RSS or PSS this counts each page once."""
    import os

    fd_dir = Path(f"/proc/{pgid}/fd")
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd).startswith("/dev/shm/"):
                return os.stat(fd).st_blocks * 512 / 2**20
        except OSError:
            continue
    return float("nan")


def guest_used_mib(host) -> float:
    info = dict(l.split(":", 1) for l in host.run("cat /proc/meminfo").stdout.splitlines())
    kb = lambda k: int(info[k].split()[0])  # noqa: E731
    return (kb("MemTotal") - kb("MemAvailable")) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold", action="store_true", help="also time a cold image build (minutes)")
    ap.add_argument("--lab", default="routing")
    ap.add_argument("--boots", type=int, default=3)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds to let VMs settle before measuring memory")
    a = ap.parse_args()

    if a.cold:
        img = image.build(force=True, progress=False)
        print(f"image build, cold: {img.built_in_s:.0f} s ({img.path.stat().st_size / 2**30:.2f} GiB image)")
    t = time.monotonic()
    img = image.build(progress=False)
    print(f"image build, cached: {time.monotonic() - t:.2f} s")

    boots, downs = [], []
    for i in range(a.boots):
        lab = Lab(a.lab)
        t = time.monotonic()
        lab.up(progress=False)
        boots.append(time.monotonic() - t)
        print(f"lab {a.lab} ({len(lab.hosts)} VMs) up #{i + 1}: all answering SSH after {boots[-1]:.1f} s "
              f"(VMs started to SSH-ready: {lab.boot_seconds:.1f} s)")
        if i == a.boots - 1:
            time.sleep(a.idle)
            print(f"memory per idle VM after {a.idle:.0f} s:")
            used, pss, phys = [], [], []
            for name, vm in lab.backend.vms.items():
                u, p, m = guest_used_mib(lab[name]), pss_mib(vm.pgid), physmem_mib(vm.pgid)
                used.append(u), pss.append(p), phys.append(m)
                print(f"  {name:<15} mem={vm.spec.memory_mb} MiB  guest-used {u:6.1f} MiB  "
                      f"host RAM for guest memory {m:6.1f} MiB  summed PSS {p:6.1f} MiB")
            print(f"  mean: guest-used {statistics.mean(used):.1f} MiB, host RAM for guest memory "
                  f"{statistics.mean(phys):.1f} MiB, summed PSS {statistics.mean(pss):.1f} MiB")
            blame = lab[next(iter(lab.hosts))].run("systemd-analyze; systemd-analyze blame | head -8").stdout
            print("boot of one VM (systemd-analyze):\n  " + blame.strip().replace("\n", "\n  "))
        pgids = [vm.pgid for vm in lab.backend.vms.values()]
        t = time.monotonic()
        lab.down()
        downs.append(time.monotonic() - t)
        left = state.leftovers(lab.name, pgids)
        print(f"lab {a.lab} down #{i + 1}: {downs[-1]:.1f} s until no process, tap or namespace was left"
              + (f" (LEFT: {left})" if left else ""))
    print(f"boot to SSH-ready: min {min(boots):.1f} s, median {statistics.median(boots):.1f} s, max {max(boots):.1f} s")
    print(f"down: min {min(downs):.1f} s, median {statistics.median(downs):.1f} s, max {max(downs):.1f} s")


if __name__ == "__main__":
    main()
