"""``Lab``: a set of real Linux machines wired as a topology says, configured over SSH, broken on demand.

The machines come from a backend (:mod:`hautils.lab.backend`): ``uml`` (the default) boots them
as User-Mode Linux VMs on this machine; ``inventory`` uses the user's own machines, listed in an
Ansible inventory (:mod:`hautils.lab.own`)::

    Lab("storage", backend="inventory", inventory="storage.yml")  # or HAUTILS_BACKEND/HAUTILS_INVENTORY

::

    with Lab("storage") as lab:          # boots every VM, waits for SSH
        lab["iscsi-client"].run("ping -c1 iscsi-server0")
        t = lab.power_off("iscsi-server0")   # SIGKILL: a real power failure
        lab.power_on("iscsi-server0")        # boots again on the same disks

Faults are methods of the lab because only the lab knows how to pull a VM's
power or a cable; each returns the epoch time at which it took effect, for
the analysis toolkit.  Every fault is also kept in ``lab.events``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko
from tqdm import tqdm

from .. import topology as _topology
from ..errors import HostUnreachable, LabError
from ..ssh import Host
from . import backend as _backend, container as _container, image as _image, netns, state
from .backend import Backend
from .uml import UMLBackend

__all__ = ["Lab", "Event", "require_root"]

DEFAULT_BOOT_TIMEOUT = float(os.environ.get("HAUTILS_BOOT_TIMEOUT", "240"))


@dataclass(frozen=True)
class Event:
    """A fault (or repair) and the moment it took effect."""

    time: float
    kind: str
    target: str

    def __str__(self) -> str:
        return f"{time.strftime('%H:%M:%S', time.localtime(self.time))}.{int(self.time % 1 * 1000):03d} {self.kind} {self.target}"


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges, taps): run it as root, e.g. with sudo")


def require_tools() -> None:
    from . import uml

    if not Path(uml.UML_BINARY).exists():
        raise LabError("User-Mode Linux is missing: install it with `apt-get install user-mode-linux`")


def workdir_for(lab: str) -> Path:
    return Path(os.environ.get("HAUTILS_WORKDIR", "/var/tmp/hautils")) / lab


def _make_key(path: Path) -> str:
    """A per-lab ed25519 key: the only way into the lab's VMs."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(priv)
    path.with_suffix(".pub").write_bytes(pub + b" hautils-lab\n")
    return pub.decode()



def _abs_source(source: str) -> str:
    """The topology file as an absolute path, so ``Lab.attach`` finds it from any directory."""
    p = Path(source)
    return str(p.resolve()) if p.exists() else source

class Lab:
    """A running lab built from a topology (a name in ``labs/``, a path, or a ``Topology``): UML VMs
    (``backend="uml"``) or the user's machines from an Ansible inventory (``backend="inventory"``,
    ``inventory=`` a path).  ``backend=None`` takes ``$HAUTILS_BACKEND`` (default ``uml``);
    ``inventory=None`` takes ``$HAUTILS_INVENTORY``."""

    def __init__(self, topology: str | os.PathLike | _topology.Topology, name: str | None = None,
                 keep: bool = False, backend: str | None = None, inventory: str | os.PathLike | None = None):
        self.topology = topology if isinstance(topology, _topology.Topology) else _topology.load(topology)
        if self.topology.figure:
            raise LabError(f"{self.topology.source} is a figure (figure: true): it is drawn with "
                           "hautils.plots.topology, not booted as a lab")
        self.name = name or self.topology.name
        if not _topology.NAME_RE.match(self.name) or len(self.name) > 12:
            raise LabError(f"lab name {self.name!r}: up to 12 lowercase letters, digits and '-'")
        self.keep = keep  # True: VMs outlive this Python process (the CLI's `lab up`)
        self.backend_kind = _backend.choose(backend)
        self.inventory = None
        if self.backend_kind == "inventory":
            from .own import inventory_path

            self.inventory = inventory_path(inventory)
        elif inventory is not None:
            raise LabError(f"inventory={str(inventory)!r} is for the inventory backend, and this lab's backend is "
                           f"{self.backend_kind!r}: pass backend='inventory' (or set HAUTILS_BACKEND=inventory)")
        self.workdir = workdir_for(self.name)
        self.events: list[Event] = []
        self.hosts: dict[str, Host] = {}
        self.backend: Backend | None = None
        self._is_up = False
        self._atexit_registered = False
        self._prev_sigterm = None
        self._bmc = None  # the virtual power switch (bmc()), started on first use

    # -- lifecycle ---------------------------------------------------------
    def up(self, progress: bool = True, timeout: float = DEFAULT_BOOT_TIMEOUT) -> "Lab":
        """Create the network, boot every VM in parallel and wait until each answers SSH.

        On the inventory backend: wait until every machine answers SSH, run the preflight (a
        :class:`~hautils.lab.preflight.PreflightError` with the table of what is missing stops
        here) and give each the topology's names in /etc/hosts."""
        if self.backend_kind != "uml":
            return self._up_own(progress, timeout)
        require_root()
        require_tools()
        if self._is_up:
            return self
        if state.read(self.name) or netns.exists(f"{state.NETNS_PREFIX}{self.name}"):
            raise LabError(f"lab {self.name!r} is already up (or a crashed run left it): "
                           f"`hautils lab down {self.name}` removes it")
        img = _image.build(progress=progress)
        if any(d.content == "container" for h in self.topology.hosts.values() for d in h.disks):
            _container.build(progress=progress)  # the disk that holds chapter 4's guest
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        pub = _make_key(self.workdir / "id_ed25519")
        self.backend = UMLBackend(self.topology, self.name, self.workdir, img.path, pub)
        self._record()
        self._register_cleanup()
        try:
            for h in self.topology.hosts.values():
                self.hosts[h.name] = self._host(h.name)
            t0 = self.backend.boot()  # the network, then every VM
            self._record()
            self.wait_ready(list(self.topology.hosts), timeout=timeout, progress=progress)
            self.boot_seconds = time.time() - t0
            hosts_file = self.topology.hosts_file()

            def settle(h: Host) -> None:
                h.put("/etc/hosts", hosts_file)
                # A first boot writes the VM's SSH host key; ext4 keeps new data in RAM for up to
                # 30 s.  A power failure before it reached the disk cost the key: the next boot
                # made another one and SSH refused the host (seen in a quick power cycle).
                h.run("sync", timeout=60)
            with ThreadPoolExecutor(len(self.hosts)) as ex:
                list(ex.map(settle, self.hosts.values()))
            self._check_reachable_from_record()
        except BaseException:
            self.down()
            raise
        self._is_up = True
        return self

    def _up_own(self, progress: bool, timeout: float) -> "Lab":
        """``up`` on the user's machines: nothing to boot, everything to check."""
        from .own import InventoryBackend

        if self._is_up:
            return self
        b = InventoryBackend(self.topology, self.inventory, self.name)
        self.backend = b
        try:
            b.boot()
            for h in self.topology.hosts:
                self.hosts[h] = self._host(h)
            t0 = time.time()
            self.wait_ready(list(self.topology.hosts), timeout=timeout, progress=progress)
            self.boot_seconds = time.time() - t0
            b.preflight()
            hosts_file = self.topology.hosts_file()
            with ThreadPoolExecutor(len(self.hosts)) as ex:
                list(ex.map(lambda h: b.install_hosts_file(h, hosts_file), self.hosts))
        except BaseException:
            self.down()
            raise
        self._is_up = True
        return self

    def _check_reachable_from_record(self) -> None:
        """Reach every host the way ``hautils lab ssh`` will, from the record alone (fresh
        connections, the record's key and known_hosts): ``up`` must not return while some
        host would refuse the next command."""
        other = Lab.attach(self.name)
        try:
            def check(h: Host) -> None:
                r = h.run("hostname", timeout=60)
                if r.stdout.strip() != h.name:
                    raise LabError(f"host {h.name}: answered as {r.stdout.strip()!r} (hostname not applied)")
            with ThreadPoolExecutor(len(other.hosts)) as ex:
                list(ex.map(check, other.hosts.values()))
        finally:
            for h in other.hosts.values():
                h.close()

    def down(self) -> list[str]:
        """Stop every VM and remove the namespace, taps, bridges, COW files and the record.

        Returns only when they are gone: every VM process has exited and been reaped (a
        bounded wait after SIGKILL of its process group; LabError names what survived)."""
        if self._bmc is not None:
            self._bmc.stop()
            self._bmc = None
        if self.backend_kind != "uml":  # the user's machines stay; faults still in place are undone
            removed = self.backend.teardown() if self.backend is not None else []
            for h in self.hosts.values():
                h.close()
            self._is_up = False
            return removed
        for h in self.hosts.values():
            h.close()
        removed = state.cleanup(self.name)
        self._is_up = False
        return removed

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def _register_cleanup(self) -> None:
        if self.keep:
            return
        if not self._atexit_registered:
            owner = os.getpid()
            atexit.register(lambda: os.getpid() == owner and self.down())
            self._atexit_registered = True
        if threading.current_thread() is threading.main_thread():
            prev = signal.getsignal(signal.SIGTERM)
            owner = os.getpid()

            def on_term(signum, frame):
                if os.getpid() != owner:  # a forked child (pyroute2's helpers) must not tear down
                    os._exit(128 + signum)
                self.down()
                if callable(prev):
                    prev(signum, frame)
                raise SystemExit(128 + signum)

            signal.signal(signal.SIGTERM, on_term)

    def _record(self) -> None:
        if self.backend_kind != "uml":
            return  # nothing on this machine to clean up after a crash
        vms = {}
        if self.backend:
            vms = {h: {"pgid": vm.pgid, "started": vm.started} for h, vm in self.backend.vms.items()}
        state.write(self.name, {
            "name": self.name, "topology": _abs_source(self.topology.source), "netns": f"{state.NETNS_PREFIX}{self.name}",
            "workdir": str(self.workdir), "image": str(self.backend.image) if self.backend else None,
            "owner_pid": os.getpid(), "keep": self.keep, "vms": vms,
            "mgmt": {h.name: str(h.mgmt.address.ip) for h in self.topology.hosts.values()},
        })

    @classmethod
    def attach(cls, name: str) -> "Lab":
        """Reach a lab that another process brought up (``hautils lab up``) to run commands on it."""
        rec = state.read(name)
        if rec is None:
            raise LabError(f"no lab {name!r} is up; running labs: {', '.join(state.labs()) or 'none'}")
        lab = cls(rec["topology"], name=name, keep=True, backend="uml")
        key = lab.workdir / "id_ed25519"
        try:
            pub = key.with_suffix(".pub").read_text()
        except OSError:
            raise LabError(f"lab {name!r} is half torn down: its SSH key {key} is gone; "
                           f"`hautils lab down {name}` removes the rest") from None
        lab.backend = UMLBackend(lab.topology, name, lab.workdir, Path(rec.get("image") or "/nonexistent"), pub)
        for h, vm in rec.get("vms", {}).items():
            lab.backend.vms[h].pgid = vm.get("pgid")
            lab.backend.vms[h].started = vm.get("started")
        for h in lab.topology.hosts.values():
            lab.hosts[h.name] = lab._host(h.name)
        lab._is_up = True
        return lab

    def _host(self, name: str) -> Host:
        assert self.backend is not None
        return self.backend.host(name)

    def wait_ready(self, hosts: list[str], timeout: float = DEFAULT_BOOT_TIMEOUT, progress: bool = True) -> None:
        """Wait until every host answers a command over SSH; a VM that dies or hangs fails with its console."""
        assert self.backend is not None
        deadline = time.monotonic() + timeout
        bar = tqdm(total=len(hosts), desc=f"boot {self.name}", unit="host", disable=not progress)

        def wait(host: str) -> None:
            while True:
                problem = self.backend.boot_problem(host)
                if problem:
                    raise LabError(problem)
                try:
                    self.hosts[host].run("true", timeout=20)
                    bar.update()
                    return
                except (HostUnreachable, TimeoutError):
                    pass
                except paramiko.BadHostKeyException as e:
                    raise LabError(f"VM {host} answered with another SSH host key than the one pinned in "
                                   f"{self.workdir / 'known_hosts'}: its disk lost the key made at its first "
                                   "boot (a power failure before it was synced?). `hautils lab down "
                                   f"{self.name}` and up again gives it a fresh disk") from e
                if time.monotonic() > deadline:
                    raise LabError(self.backend.no_answer(host, timeout))
                time.sleep(0.3)

        try:
            with ThreadPoolExecutor(max(1, len(hosts))) as ex:
                for f in [ex.submit(wait, h) for h in hosts]:
                    f.result()
        finally:
            bar.close()

    # -- access --------------------------------------------------------------
    def resolve(self, host: str) -> str:
        """The topology's name of ``host``; host names are case-insensitive, as in DNS, so the
        paper's ``pathA`` finds the lab's ``patha``."""
        if host in self.topology.hosts:
            return host
        match = [h for h in self.topology.hosts if h.lower() == str(host).lower()]
        if not match:
            raise LabError(f"no host {host!r} in lab {self.name!r}; its hosts: {', '.join(self.topology.hosts)}")
        return match[0]

    def __getitem__(self, host: str) -> Host:
        name = self.resolve(host)
        if name not in self.hosts:
            raise LabError(f"lab {self.name!r} is not up: call lab.up() before using host {name!r}")
        return self.hosts[name]

    def __iter__(self):
        return iter(self.hosts.values())

    def cpu_seconds(self, host: str) -> float:
        """CPU time the VM has used on the machine so far (user + system of all its host
        processes, with the exited ones its kernel reaped), in seconds.  The guest's own
        accounting is not to be trusted under UML: a probe that sent on time, three wakeups per
        attempt, once read 87 % of a CPU inside the guest.  The difference over a window is what
        running something in the VM cost the machine, to 10 ms (the host's clock tick)."""
        return self._need_up().cpu_seconds(self.resolve(host))

    def clock_offsets(self, hosts=None, samples: int = 20) -> dict[str, float]:
        """``{host: seconds its clock is ahead of the machine's}`` for ``hosts`` (default: all),
        from ICMP timestamps (:mod:`hautils.clock`); powered-off hosts are left out.  A guest
        sets its clock at boot, up to ~14 ms off: subtract before comparing times of two hosts."""
        from .. import clock

        if self._need_up().kind != "uml":
            raise LabError(f"lab {self.name!r}: clock offsets are measured from the UML lab's namespace; on your "
                           "own machines keep their clocks synchronised (chrony or systemd-timesyncd) instead")
        return clock.offsets(self, list(hosts) if hosts is not None else list(self.topology.hosts), samples)

    def run_all(self, hosts, command: str, **kw):
        """Run ``command`` on several hosts at once (names or hosts); returns their results in
        order.  For slow steps every host must do, such as stopping a service: one UML guest's
        systemctl takes seconds, and nothing makes the hosts wait for each other."""
        targets = [h if isinstance(h, Host) else self[h] for h in hosts]
        with ThreadPoolExecutor(max(1, len(targets))) as ex:
            return list(ex.map(lambda h: h.run(command, **kw), targets))

    def _need_up(self) -> Backend:
        if self.backend is None:
            raise LabError(f"lab {self.name!r} is not up: call lab.up() first")
        return self.backend

    def _event(self, t: float, kind: str, target: str) -> float:
        self.events.append(Event(t, kind, target))
        return t

    # -- faults ----------------------------------------------------------------
    def power_off(self, host: str) -> float:
        """Pull the VM's power: SIGKILL its process group.  Returns the time of the kill.
        (Own machines: the host's ``power:`` method, see :mod:`hautils.lab.own`.)"""
        b = self._need_up()
        host = self.resolve(host)
        self[host].close()
        t = b.power_off(host)
        self._record()
        return self._event(t, "power_off", host)

    def is_on(self, host: str) -> bool:
        """Whether the VM's power is on (its kernel process runs), whatever its guest is doing.
        (Own machines: the power method's status, else whether SSH answers within 5 s.)"""
        return self._need_up().is_on(self.resolve(host))

    def bmc(self, port: int | None = None):
        """The lab's virtual power switch (:class:`hautils.lab.bmc.Bmc`): a Redfish service on the
        namespace's management address through which a guest fences another with the stock
        ``fence_redfish`` agent.  Started on first use, stopped by :meth:`down`."""
        from .bmc import DEFAULT_PORT, Bmc

        b = self._need_up()
        if not isinstance(b, UMLBackend):
            raise LabError(f"lab {self.name!r}: the virtual BMC is the UML lab's power switch; on your own "
                           "machines fence through their real power method (virsh, IPMI, Redfish)")
        if self._bmc is None:
            self._bmc = Bmc(self, list(self.topology.hosts), address=str(self.topology.mgmt_gateway.ip),
                            port=DEFAULT_PORT if port is None else port, namespace=b.netns).start()
        elif port is not None and port != self._bmc.port:
            raise LabError(f"lab {self.name!r}: the virtual BMC already listens on port {self._bmc.port}")
        return self._bmc

    def power_on(self, host: str, wait: bool = True, timeout: float = DEFAULT_BOOT_TIMEOUT) -> float:
        """Boot the VM again on the same disks; with ``wait``, return once it answers SSH."""
        b = self._need_up()
        host = self.resolve(host)
        t = b.power_on(host)
        self._record()
        self._event(t, "power_on", host)
        if wait:
            self.wait_booted(host, timeout)
        return t

    def wait_booted(self, host: str, timeout: float = DEFAULT_BOOT_TIMEOUT) -> None:
        """After ``power_on(host, wait=False)``: wait until the VM answers SSH (and give it the
        lab's /etc/hosts again), e.g. once other work has overlapped its boot."""
        host = self.resolve(host)
        self.wait_ready([host], timeout=timeout, progress=False)
        if self.backend_kind == "uml":  # (own machines keep their /etc/hosts block across boots)
            self[host].put("/etc/hosts", self.topology.hosts_file())

    def cable_pull(self, host: str, iface: str = "eth0") -> float:
        """Unplug a NIC: detach its tap from the bridge (the guest sees no carrier change, as on UML).
        (Own machines: ``ip link set down`` from inside, a replug timer armed first.)"""
        b = self._need_up()
        host = self.resolve(host)
        return self._event(b.cable_pull(host, iface), "cable_pull", f"{host}:{iface}")

    def cable_plug(self, host: str, iface: str = "eth0") -> float:
        b = self._need_up()
        host = self.resolve(host)
        return self._event(b.cable_plug(host, iface), "cable_plug", f"{host}:{iface}")

    def partition(self, *groups: list[str] | tuple[str, ...] | str) -> float:
        """Split the lab's networks between host groups; hosts named in no group stay with the first.

        ``lab.partition(["node0"], ["node1", "node2"])`` leaves node0 alone on the
        real bridges and gives node1 and node2 bridges of their own.
        """
        b = self._need_up()
        gs = [[g] if isinstance(g, str) else list(g) for g in groups]
        if len(gs) < 2:
            raise LabError("a partition needs at least two groups of hosts")
        try:
            gs = [[self.resolve(h) for h in g] for g in gs]
        except LabError as e:
            raise LabError(f"partition: {e}") from None
        named = [h for g in gs for h in g]
        if len(named) != len(set(named)):
            raise LabError("partition: a host is in more than one group")
        return self._event(b.partition(gs), "partition", " | ".join(",".join(g) for g in gs))

    def heal(self) -> float:
        """Undo a partition: every NIC back on its own network."""
        return self._event(self._need_up().heal(), "heal", "all")

    # -- information -------------------------------------------------------------
    def status(self) -> list[dict]:
        """One row per host: running, process group, management address, NICs and their bridges."""
        return self._need_up().status()
