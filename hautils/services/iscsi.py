"""iSCSI: tgt exports a block device as a target; open-iscsi logs in from the client (chapter 2).

The client's timers decide what a failover looks like from the application: ``noop_out_*`` how
fast a dead connection is noticed, ``replacement_timeout`` how long I/O waits for the session to
come back before it fails (and ext4 turns read-only).
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass

from ..errors import CommandError
from ..ssh import on_each
from . import render

IQN = "iqn.2013-11.edu.uoc:ha-disk"  # the paper's target name (section 2.4.2.2)


@dataclass
class Target:
    """A tgt target on one or more servers (each server gets the same file)."""

    iqn: str = IQN
    backing_store: str = "/dev/drbd0"
    conf_name: str = "ha-disk"
    initiator_address: str | None = None
    sync_writes: bool = False  # True: "bsoflags sync", tgt acknowledges only what reached the device

    @property
    def path(self) -> str:
        return f"/etc/tgt/conf.d/{self.conf_name}.conf"

    def config(self) -> str:
        return render("tgt-target.conf.j2", iqn=self.iqn, backing_store=self.backing_store,
                      conf_name=self.conf_name, initiator_address=self.initiator_address,
                      sync_writes=self.sync_writes)

    def install(self, host, tid: int = 1) -> str:
        """Write the target file and check it with ``tgt-admin --pretend`` (parses the config
        and prints the tgtadm commands it would run, without running them); install the stop
        that cannot hang (:meth:`stop_dropin`)."""
        host.put(self.path, self.config())
        host.put(self.STOP_DROPIN, self.stop_dropin(tid))
        host.run("systemctl daemon-reload && systemd-analyze verify --man=no tgt.service", timeout=120)
        res = host.run(f"tgt-admin --pretend -e -c {self.path}")
        if self.iqn not in res.stdout:
            raise CommandError(host.name, f"tgt-admin --pretend -c {self.path}", 1, res.stdout,
                               f"{self.path}: tgt-admin did not find target {self.iqn}: fix the file")
        return res.stdout

    STOP_DROPIN = "/etc/systemd/system/tgt.service.d/hautils-stop.conf"
    #: how long systemd lets tgt stop before it kills tgtd (both drop-ins)
    STOP_TIMEOUT_S = 15

    def stop_dropin(self, tid: int = 1) -> str:
        """A systemd drop-in for tgt.service whose stop force-deletes the target: Debian's stop
        fails (and hangs 90 s) when a session is still closing (chapter 2)."""
        return render("tgt-stop.conf.j2", tid=tid, timeout=self.STOP_TIMEOUT_S)

    def always_on(self, hosts, vip: str, tid: int = 1) -> str:
        """Tuned variant: tgtd runs all the time, bound to the service address only, with the
        target defined and no LUN (the failover script adds the LUN once DRBD is primary).
        ``hosts``: one host or several (set up side by side: ~10 s of systemd each in UML)."""
        dropin = render("tgt-vip.conf.j2", vip=vip, tid=tid, iqn=self.iqn, timeout=self.STOP_TIMEOUT_S)

        def one(host) -> None:
            host.put("/etc/systemd/system/tgt.service.d/hautils-vip.conf", dropin)
            host.run(f"rm -f {self.path} {self.STOP_DROPIN}; systemd-analyze verify --man=no tgt.service && "
                     "systemctl daemon-reload && systemctl enable --no-reload tgt && systemctl restart tgt", timeout=120)

        on_each(one, hosts if isinstance(hosts, (list, tuple)) else [hosts])
        return dropin

    def show(self, host) -> str:
        return host.run("tgtadm --lld iscsi --op show --mode target").stdout

    def lun_flags(self, host, lun: int = 1) -> str | None:
        """The backing-store flags tgtd uses for ``lun`` right now on ``host`` ("sync", "" for
        tgt's write-back default, None: no such LUN). Installing a new failover script changes
        nothing until the LUN is added again: check the live LUN, not the script."""
        return parse_lun_flags(self.show(host), lun)


def attached_disk(session_p3: str, lun: int | None = None) -> str | None:
    """The running disk in ``iscsiadm -m session -P 3`` output: the first one, or that of
    ``lun`` (its ``Lun: N`` line is followed by ``Attached scsi disk sdX  State: running``)."""
    where = r"Lun: %d\s+" % lun if lun is not None else ""
    m = re.search(where + r"Attached scsi disk (\w+)\s+State: running", session_p3)
    return f"/dev/{m[1]}" if m else None


def parse_lun_flags(show: str, lun: int = 1) -> str | None:
    """"Backing store flags" of ``lun`` in ``tgtadm --op show --mode target`` output."""
    current = None
    for line in show.splitlines():
        m = re.match(r"\s*LUN: (\d+)\s*$", line)
        if m:
            current = int(m.group(1))
            continue
        m = re.match(r"\s*Backing store flags:(.*)$", line)
        if m and current == lun:
            return m.group(1).strip()
    return None


@dataclass
class Initiator:
    """open-iscsi on the client: log in to ``iqn`` through ``portal`` and use the disk."""

    host: object
    portal: str
    iqn: str = IQN
    replacement_timeout: int = 120
    noop_out_interval: int = 5
    noop_out_timeout: int = 5
    login_timeout: int = 15

    def config(self) -> str:
        return render("iscsid.conf.j2", replacement_timeout=self.replacement_timeout,
                      noop_out_interval=self.noop_out_interval, noop_out_timeout=self.noop_out_timeout,
                      login_timeout=self.login_timeout)

    def install(self) -> str:
        self.host.put("/etc/iscsi/iscsid.conf", self.config())
        self.host.run("modprobe iscsi_tcp && systemctl restart iscsid", timeout=60)
        return self.config()

    def discover(self) -> str:
        return self.host.run(f"iscsiadm --mode discovery --type sendtargets --portal {self.portal}",
                             timeout=60).stdout

    def login(self, timeout: float = 60) -> str:
        """Log in and return the new disk's device (e.g. /dev/sda)."""
        self.discover()
        self.host.run(f"iscsiadm --mode node --targetname {self.iqn} --portal {self.portal} --login",
                      timeout=timeout)
        return self.device(timeout)

    def logout(self) -> None:
        self.host.run(f"iscsiadm --mode node --targetname {self.iqn} --portal {self.portal} --logout",
                      check=False, timeout=60)

    def device(self, timeout: float = 30, lun: int | None = None) -> str:
        """The SCSI disk of our session (of logical unit ``lun`` when the target has several),
        from ``iscsiadm -m session -P 3``."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.host.run("iscsiadm -m session -P 3", check=False).stdout
            disk = attached_disk(out, lun)
            if disk:
                return disk
            if time.monotonic() > deadline:
                what = "no disk" if lun is None else f"no disk for LUN {lun}"
                raise TimeoutError(f"{self.host.name}: {what} attached for {self.iqn} via {self.portal}:\n{out}")
            time.sleep(0.5)

    def format_and_mount(self, device: str, mountpoint: str = "/mnt") -> str:
        """The paper's steps: one partition over the whole disk, ext4, mounted (section 2.4.2.4)."""
        part = f"{device}1"
        q = shlex.quote
        self.host.run(f"umount {q(mountpoint)} 2>/dev/null; echo 'type=83' | sfdisk -q {q(device)} && "
                      f"for i in $(seq 50); do [ -b {q(part)} ] && break; sleep 0.1; done; "
                      f"mkfs.ext4 -q -F {q(part)} && mkdir -p {q(mountpoint)} && mount {q(part)} {q(mountpoint)}",
                      timeout=120)
        return self.host.run(f"df -h {q(mountpoint)}").stdout

    def session_state(self) -> str:
        return self.host.run("iscsiadm -m session -P 1 | grep -E 'State|Current Portal'", check=False).stdout
