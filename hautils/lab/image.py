"""The lab's disk image: one Debian bookworm root filesystem shared by every VM.

Every VM boots the same read-only base image through its own copy-on-write
file, so the image holds nothing host-specific: identity (hostname, NICs,
addresses, SSH keys) is applied at boot by ``hautils-boot`` from the kernel
command line.  The image is cached under a name derived from a hash of the
package list, the guest files and the builder version, so a second build is
a cache hit that takes well under a second.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import LabError

BUILDER_VERSION = "6"
SUITE = "bookworm"

#: Installed by debootstrap itself (minbase has no gpgv: apt could not verify indexes).
BASE_PACKAGES = ["gpgv", "systemd-sysv", "openssh-server", "iproute2", "kmod", "procps"]

#: Everything the chapters use.  Services are disabled in the image; chapters start them.
PACKAGES = [
    # basics and probes
    "iputils-ping", "fping", "python3", "python3-dnspython", "curl", "ca-certificates",
    "less", "nano", "rsync", "tcpdump", "ethtool", "nftables", "iptables", "mtr-tiny",
    "iperf3", "fio", "sip-tester", "psmisc", "lsof", "util-linux", "fdisk", "parted",
    "e2fsprogs", "xfsprogs", "lvm2", "dosfstools",
    # storage
    "drbd-utils", "tgt", "open-iscsi", "heartbeat", "mdadm", "multipath-tools",
    # networking
    "frr", "keepalived", "conntrack", "conntrackd", "ifenslave", "bridge-utils",
    # clustering
    "corosync", "pacemaker", "pacemaker-cli-utils", "crmsh", "resource-agents",
    "fence-agents", "lxc", "debootstrap",
    # application level
    "bind9", "bind9-dnsutils", "kamailio", "kamailio-extra-modules", "mariadb-server",
    "mariadb-client", "baresip-core",
]

#: Units left enabled after every package install; everything else is disabled.
KEEP_ENABLED = {"ssh.service", "hautils-boot.service", "systemd-journald.service"}

#: Units that only slow a lab VM's boot (no udev-driven networking, no timers,
#: no consoles): masked so nothing pulls them in.
MASK = [
    "systemd-networkd.service", "systemd-networkd-wait-online.service",
    "systemd-networkd.socket", "getty@.service", "serial-getty@.service",
    "getty.target", "console-getty.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "man-db.timer", "logrotate.timer",
    "dpkg-db-backup.timer", "systemd-timesyncd.service", "lvm2-monitor.service",
    "lvm2-lvmpolld.socket", "dm-event.socket", "mdmonitor.service",
    "mdcheck_start.timer", "mdcheck_continue.timer", "mdmonitor-oneshot.timer",
    "multipathd.service", "multipathd.socket", "iscsid.socket", "lxc-net.service",
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "dev-hugepages.mount", "dev-mqueue.mount",
    # Boot trimming, measured with `systemd-analyze blame` in a guest: coldplugging every
    # device took ~7 s of a 15 s boot (udevd itself stays, for devices that appear later:
    # DRBD, iSCSI disks); logind (~4 s) is unneeded once pam_systemd is gone; the rest
    # are one process each, and a process costs ~30 ms in UML.
    "systemd-udev-trigger.service", "systemd-udev-settle.service", "systemd-logind.service",
    "systemd-remount-fs.service", "systemd-modules-load.service", "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service", "systemd-random-seed.service", "systemd-sysusers.service",
    "systemd-journal-flush.service", "systemd-user-sessions.service", "systemd-pstore.service",
    "modprobe@drm.service", "modprobe@fuse.service", "modprobe@loop.service",
    "modprobe@dm_mod.service", "modprobe@efi_pstore.service", "systemd-firstboot.service",
    "systemd-hwdb-update.service", "ldconfig.service", "systemd-machine-id-commit.service",
    # static /dev nodes for not-yet-loaded modules: devtmpfs makes the node when a module loads
    "systemd-tmpfiles-setup-dev.service", "kmod-static-nodes.service", "modprobe@configfs.service",
]

GUEST_DIR = Path(__file__).parent / "guest"


def cache_dir() -> Path:
    """Where built images live (``HAUTILS_CACHE`` overrides)."""
    return Path(os.environ.get("HAUTILS_CACHE", "/var/cache/hautils"))


def uml_modules_dir() -> Path:
    """The UML kernel's modules, which the guests need in ``/lib/modules``."""
    root = Path("/usr/lib/uml/modules")
    versions = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if not versions:
        raise LabError(
            "no UML kernel modules in /usr/lib/uml/modules: install them with "
            "`apt-get install user-mode-linux`"
        )
    return versions[-1]


def apt_mirror() -> str:
    """The Debian mirror this machine already uses (or ``HAUTILS_APT_MIRROR``).

    The lab must fetch from whatever mirror the system is configured for, so
    the address is read from apt's own sources, never written in the code.
    """
    env = os.environ.get("HAUTILS_APT_MIRROR")
    if env:
        return env.rstrip("/")
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1).rstrip("/")
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*.list"))]:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if m and m.group(2) == SUITE:
                return m.group(1).rstrip("/")
    raise LabError(
        f"no apt source for Debian {SUITE} found in /etc/apt: set HAUTILS_APT_MIRROR "
        "to a Debian mirror URL"
    )


def image_hash() -> str:
    """Hash of everything that ends up in the image: a change means a rebuild."""
    h = hashlib.sha256()
    h.update(f"{BUILDER_VERSION}|{SUITE}|{' '.join(BASE_PACKAGES)}|{' '.join(PACKAGES)}".encode())
    h.update(f"|{' '.join(sorted(KEEP_ENABLED))}|{' '.join(MASK)}|{uml_modules_dir().name}".encode())
    for f in sorted(GUEST_DIR.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


@dataclass
class Image:
    """A built base image: the file every VM's COW disk points at."""

    path: Path
    hash: str
    built_in_s: float | None = None  # None when it came from the cache

    @property
    def cached(self) -> bool:
        return self.built_in_s is None


def image_path() -> Path:
    return cache_dir() / f"{SUITE}-{image_hash()}.img"


def _run(cmd: list[str], log, **kw) -> None:
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    res = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)
    if res.returncode != 0:
        raise LabError(f"image build step failed ({res.returncode}): {' '.join(cmd)}; see {log.name}")


def _chroot(root: Path, script: str, log, binds: dict[Path, str] | None = None) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
        "HOME": "/root",
    }
    # A private mount namespace: /proc and /dev/pts vanish with the process,
    # even if the build is killed half-way.
    mounts = "".join(f"mkdir -p {root}{inside}; mount --bind {outside} {root}{inside}; "
                     for outside, inside in (binds or {}).items())
    _run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
         f"mount -t proc proc {root}/proc; mount -t devpts devpts {root}/dev/pts || true; {mounts}"
         f"exec chroot {root} sh -ec '{script}'"],
        log, env=env,
    )


def build(force: bool = False, progress: bool = True) -> Image:
    """Build (or reuse) the base image.  Cold: debootstrap + packages, minutes; cached: instant."""
    for tool in ("debootstrap", "mkfs.ext4", "unshare"):
        if not shutil.which(tool):
            raise LabError(f"`{tool}` not found: install it with `apt-get install debootstrap e2fsprogs util-linux`")
    target = image_path()
    if target.exists() and not force:
        return Image(target, image_hash())
    target.parent.mkdir(parents=True, exist_ok=True)
    mirror = apt_mirror()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    root = work / "rootfs"
    log_path = target.with_suffix(".log")
    steps = ["debootstrap", "packages", "UML modules", "guest config", "filesystem image"]
    bar = tqdm(total=len(steps), desc="image", unit="step", disable=not progress)
    try:
        with open(log_path, "w") as log:
            bar.set_postfix_str(steps[0])
            # Downloaded packages are kept between builds: a rebuild fetches only what changed.
            debs = cache_dir() / "debs"
            (debs / "partial").mkdir(parents=True, exist_ok=True)
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                  f"--cache-dir={debs}", SUITE, str(root), mirror], log)
            bar.update()

            bar.set_postfix_str(steps[1])
            (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
            (root / "usr/sbin/policy-rc.d").chmod(0o755)
            (root / "tmp").chmod(0o1777)
            (root / "etc/apt/sources.list").write_text(f"deb {mirror} {SUITE} main\n")
            (root / "etc/dpkg/dpkg.cfg.d/hautils-nodoc").write_text(
                "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n"
                "path-exclude=/usr/share/man/*\npath-exclude=/usr/share/locale/*\n"
                "path-include=/usr/share/locale/locale.alias\n"
            )
            _chroot(root, "apt-get update -q; apt-get install -y -q --no-install-recommends "
                    + " ".join(PACKAGES), log, binds={debs: "/var/cache/apt/archives"})
            _chroot(root, "rm -rf /var/lib/apt/lists/*", log)
            bar.update()

            bar.set_postfix_str(steps[2])
            mods = uml_modules_dir()
            dest = root / "lib/modules" / mods.name
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(mods, dest, symlinks=True)
            bar.update()

            bar.set_postfix_str(steps[3])
            _configure_guest(root, log)
            bar.update()

            bar.set_postfix_str(steps[4])
            size_mb = _du_mb(root) * 13 // 10 + 1024
            tmp_img = work / "image.img"
            _run(["mkfs.ext4", "-q", "-F", "-L", "hautils-root", "-E", "root_owner=0:0",
                  "-d", str(root), str(tmp_img), f"{size_mb}M"], log)
            os.chmod(tmp_img, 0o444)
            os.replace(tmp_img, target)
            bar.update()
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    for old in target.parent.glob(f"{SUITE}-*"):
        if old.suffix in (".img", ".log") and old.stem != target.stem:
            old.unlink(missing_ok=True)
    return Image(target, image_hash(), built_in_s=time.monotonic() - started)


def _du_mb(path: Path) -> int:
    out = subprocess.run(["du", "-sm", "-x", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def _configure_guest(root: Path, log) -> None:
    """Make the image boot fast and anonymously under UML."""
    sbin = root / "usr/local/sbin/hautils-boot"
    shutil.copy(GUEST_DIR / "hautils-boot", sbin)
    sbin.chmod(0o755)
    shutil.copy(GUEST_DIR / "hautils-boot.service", root / "etc/systemd/system/hautils-boot.service")
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    shutil.copy(GUEST_DIR / "sshd_config", root / "etc/ssh/sshd_config.d/hautils.conf")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # generated per VM on first boot
    (root / "etc/machine-id").write_text("")  # systemd.machine_id= on the command line
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/fstab").write_text("/dev/ubda / ext4 rw,noatime 0 0\n")
    (root / "etc/hostname").write_text("lab\n")
    jd = root / "etc/systemd/journald.conf.d"
    jd.mkdir(parents=True, exist_ok=True)
    (jd / "hautils.conf").write_text("[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n")
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    # No logind in the guests: logins must not wait for it.
    pam = root / "etc/pam.d/common-session"
    pam.write_text("".join(l for l in pam.read_text().splitlines(True) if "pam_systemd" not in l))
    sd = root / "etc/systemd/system/ssh.service.d"
    sd.mkdir(parents=True, exist_ok=True)
    (sd / "hautils.conf").write_text("[Service]\n# the config is checked when the image is built\nExecStartPre=\n")
    (root / "var/lib/hautils").mkdir(parents=True, exist_ok=True)
    keep = " ".join(sorted(KEEP_ENABLED))
    _chroot(root, (
        "systemctl list-unit-files --state=enabled --no-legend | while read -r u s rest; do "
        f"case \" {keep} \" in *\" $u \"*) ;; *) systemctl disable \"$u\" >/dev/null 2>&1 || true ;; esac; done; "
        f"systemctl mask {' '.join(MASK)} >/dev/null 2>&1 || true; "
        "systemctl enable hautils-boot.service ssh.service; "
        "systemctl set-default multi-user.target; "
        "rm -f /usr/sbin/policy-rc.d"
    ), log)
