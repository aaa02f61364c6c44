"""Bring up each named lab, show every host answering over SSH, and tear it down."""

from __future__ import annotations

import sys
import time

from hautils.lab import Lab


def main(names: list[str]) -> int:
    for name in names:
        t = time.monotonic()
        with Lab(name) as lab:
            print(f"lab {name}: {len(lab.hosts)} hosts answering SSH after {time.monotonic() - t:.1f} s")
            for host in lab:
                r = host.run("hostname; ip -4 -o addr show scope global | awk '{print $2, $4}' | tr '\\n' ' '")
                name_, _, addrs = r.stdout.partition("\n")
                print(f"  {name_:<15} {addrs.strip()}")
        print(f"lab {name}: torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["storage"]))
