"""The guest of chapter 4: a small Debian root filesystem for an LXC container.

The thesis's cluster moved an OpenVZ container whose private area lived on an iSCSI disk; here
that disk (a topology disk with ``content: container``) starts life as an ext4 filesystem that
already holds a Debian ``bookworm`` root: systemd as its init, ``iproute2``, ``ping`` and a
web service (busybox ``httpd`` on port 80, started by ``web.service``, serving a page that
names the guest).  Built once on this machine with debootstrap from the same package cache
as the VM image and kept under :func:`hautils.lab.image.cache_dir`; every lab that needs the
disk gets a fresh filesystem made from it with ``mkfs.ext4 -d`` (no mount, a few seconds).

It is built here, not inside the lab, because the lab has no route to a package mirror.

Two ways to start it (``hautils.services.pacemaker.GuestCluster``): ``/sbin/init`` (systemd,
what ``lxc-create -t debian`` would give) or :data:`LEAN_INIT`, a shell script that starts only
the web service (the tuned chapter-4 failover: a guest whose boot is one process).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from ..errors import LabError
from . import image

BUILDER_VERSION = "1"
PACKAGES = ["systemd-sysv", "iproute2", "busybox", "iputils-ping"]
WEB_ROOT = "/srv/www"
#: the lean init: configure loopback (lxc configured eth0 already), serve, and reap children
LEAN_INIT = "/sbin/hautils-lean-init"

_WEB_UNIT = f"""[Unit]
Description=the guest's web service (busybox httpd on port 80)

[Service]
ExecStart=/bin/busybox httpd -f -p 80 -h {WEB_ROOT}

[Install]
WantedBy=multi-user.target
"""

_LEAN = f"""#!/bin/sh
# hautils: a guest whose boot is one process (chapter 4, tuned failover)
ip link set lo up
# announce the address and its MAC: the container may have just moved to another node
/bin/busybox arping -q -U -c 1 -I eth0 "$(ip -4 -o addr show eth0 | awk '{{print $4}}' | cut -d/ -f1)" &
exec /bin/busybox httpd -f -p 80 -h {WEB_ROOT}
"""

#: trimmed from the root filesystem: documentation, translations, apt's package cache
_TRIM = ["usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
         "var/cache/apt/archives", "var/lib/apt/lists"]


def rootfs_hash() -> str:
    h = hashlib.sha256(f"{BUILDER_VERSION}|{image.SUITE}|{' '.join(PACKAGES)}|{_WEB_UNIT}|{_LEAN}".encode())
    return h.hexdigest()[:12]


def rootfs_path() -> Path:
    return image.cache_dir() / f"container-{image.SUITE}-{rootfs_hash()}"


def build(force: bool = False, progress: bool = True) -> Path:
    """Build (or reuse) the container's root filesystem; returns its directory.  Cold: ~30 s."""
    target = rootfs_path()
    if target.is_dir() and not force:
        return target
    if not shutil.which("debootstrap"):
        raise LabError("`debootstrap` not found: install it with `apt-get install debootstrap`")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="container-build-", dir=target.parent))
    root = work / "rootfs"
    log_path = target.with_name(target.name + ".log")
    debs = image.cache_dir() / "debs"
    (debs / "partial").mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=2, desc="container", unit="step", disable=not progress)
    t0 = time.monotonic()
    try:
        with open(log_path, "w") as log:
            bar.set_postfix_str("debootstrap")
            image._run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        f"--cache-dir={debs}", image.SUITE, str(root), image.apt_mirror()], log)
            bar.update()
            bar.set_postfix_str("guest config")
            for rel in _TRIM:
                shutil.rmtree(root / rel, ignore_errors=True)
            (root / "etc/hostname").write_text("guest\n")
            unit = root / "etc/systemd/system/web.service"
            unit.write_text(_WEB_UNIT)
            wants = root / "etc/systemd/system/multi-user.target.wants"
            wants.mkdir(parents=True, exist_ok=True)
            (wants / "web.service").symlink_to("/etc/systemd/system/web.service")
            (root / WEB_ROOT.lstrip("/")).mkdir(parents=True, exist_ok=True)
            (root / WEB_ROOT.lstrip("/") / "index.html").write_text("hello from the guest\n")
            lean = root / LEAN_INIT.lstrip("/")
            lean.write_text(_LEAN)
            lean.chmod(0o755)
            log.write(f"\nbuilt in {time.monotonic() - t0:.1f} s\n")
            bar.update()
        os.replace(root, target)
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    for old in target.parent.glob(f"container-{image.SUITE}-*"):
        if old.is_dir() and old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def make_disk(path: Path, size_mb: int, label: str = "guest") -> None:
    """An ext4 filesystem of ``size_mb`` at ``path`` holding the container's root (no mount)."""
    root = build(progress=False)
    res = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0", "-d", str(root),
                          str(path), f"{size_mb}M"], capture_output=True, text=True)
    if res.returncode != 0:
        raise LabError(f"{path}: mkfs.ext4 -d {root} failed: {res.stderr.strip()}")
