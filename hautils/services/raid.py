"""Local disk redundancy: the RAID levels of the paper's Figure 2.1 as data, and md RAID1 (chapter 2).

The table is computed, not typed: each level is a rule for the minimum number of disks, how many
may fail, and how much of n disks' capacity is usable.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd


@dataclass(frozen=True)
class RaidLevel:
    level: str
    description: str
    min_disks: int
    tolerates: Callable[[int], int]  # disk failures survived for sure, with n disks
    usable: Callable[[int], float]  # usable capacity in disks, with n disks

    def check(self, n: int) -> None:
        if n < self.min_disks:
            raise ValueError(f"RAID {self.level} needs at least {self.min_disks} disks, got {n}")
        if self.level == "10" and n % 2:
            raise ValueError("RAID 10 (as md builds it here: mirrored pairs) needs an even number of disks")


LEVELS = [
    RaidLevel("0", "striping, no redundancy", 2, lambda n: 0, lambda n: n),
    RaidLevel("1", "mirroring: every disk holds everything", 2, lambda n: n - 1, lambda n: 1),
    RaidLevel("5", "striping with one distributed parity block", 3, lambda n: 1, lambda n: n - 1),
    RaidLevel("6", "striping with two distributed parity blocks", 4, lambda n: 2, lambda n: n - 2),
    RaidLevel("10", "a stripe of mirrored pairs", 4, lambda n: 1, lambda n: n / 2),
]


def level(name: str) -> RaidLevel:
    for lv in LEVELS:
        if lv.level == str(name):
            return lv
    raise ValueError(f"unknown RAID level {name!r}: known are {', '.join(l.level for l in LEVELS)}")


def capacity(level_name: str, n: int, disk_size: float = 1.0) -> dict:
    """Usable capacity and guaranteed fault tolerance of ``n`` disks of ``disk_size`` each."""
    lv = level(level_name)
    lv.check(n)
    return {"level": f"RAID {lv.level}", "disks": n, "usable": lv.usable(n) * disk_size,
            "usable_fraction": lv.usable(n) / n, "failures_tolerated": lv.tolerates(n)}


def levels_table(n: int | None = None, disk_size: float = 1.0) -> pd.DataFrame:
    """Figure 2.1 as a table; with ``n``, also each level's capacity and tolerance for n disks."""
    rows = []
    for lv in LEVELS:
        row = {"level": f"RAID {lv.level}", "description": lv.description, "min_disks": lv.min_disks}
        if n is not None:
            try:
                c = capacity(lv.level, n, disk_size)
                row.update(usable=c["usable"], failures_tolerated=c["failures_tolerated"])
            except ValueError:
                row.update(usable=None, failures_tolerated=None)
        rows.append(row)
    return pd.DataFrame(rows)


def parse_mdstat(text: str, md: str = "md0") -> dict:
    """State of one array from /proc/mdstat: members, [UU] map, and a running resync/recovery."""
    m = re.search(rf"^{md} : (\w+) (\w+) (.*)\n\s+(\d+) blocks.*\[(\d+)/(\d+)\] \[([U_]+)\]((?:\n\s+\S.*)*)",
                  text, re.M)
    if not m:
        return {}
    sync = re.search(r"(resync|recovery|reshape|check)\s*=\s*([\d.]+)%|(resync|recovery)\s*=\s*(DELAYED|PENDING)", m[8])
    return {"state": m[1], "level": m[2], "members": m[3].split(), "blocks": int(m[4]),
            "disks": int(m[5]), "up": int(m[6]), "map": m[7],
            "syncing": (sync[1] or sync[3]) if sync else None,
            "percent": float(sync[2]) if sync and sync[2] else None}


@dataclass
class Raid1:
    """An md RAID1 on one host."""

    host: object
    members: list[str]
    md: str = "/dev/md0"

    @property
    def name(self) -> str:
        return self.md.rsplit("/", 1)[-1]

    def create(self, timeout: float = 600) -> float:
        """Create the mirror and wait for the initial resync; returns its duration (s)."""
        q = " ".join(shlex.quote(m) for m in self.members)
        self.host.run(f"modprobe raid1; mdadm --stop {self.md} 2>/dev/null; mdadm --zero-superblock {q} 2>/dev/null; "
                      f"mdadm --create {self.md} --level=1 --raid-devices={len(self.members)} --run {q}",
                      timeout=120)
        return self.wait_synced(timeout)

    def mdstat(self) -> dict:
        return parse_mdstat(self.host.run("cat /proc/mdstat").stdout, self.name)

    def wait_synced(self, timeout: float = 600) -> float:
        t0 = time.time()
        deadline = time.monotonic() + timeout
        while True:
            st = self.mdstat()
            if st and not st["syncing"] and "_" not in st["map"]:
                return time.time() - t0
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.host.name}: {self.md} not in sync after {timeout:.0f} s: {st}")
            time.sleep(0.1)

    def fail(self, member: str) -> float:
        """Mark a member faulty (what md does when a disk returns errors); returns the guest's time."""
        out = self.host.run(f"mdadm {self.md} --fail {shlex.quote(member)} >/dev/null; echo $EPOCHREALTIME").stdout
        return float(out.split()[-1].replace(",", "."))

    def replace(self, member: str, timeout: float = 600) -> float:
        """Remove the failed member, add it back as a new disk, and wait for the rebuild (s)."""
        m = shlex.quote(member)
        self.host.run(f"mdadm {self.md} --remove {m} && mdadm --zero-superblock {m} && mdadm {self.md} --add {m}")
        return self.wait_synced(timeout)
