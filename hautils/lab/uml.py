"""User-Mode Linux backend: each lab host is a real Linux 6.1 kernel running as a process.

Layout on the machine, for a lab called ``storage``:

* network namespace ``hal-storage``: one bridge per topology network, one
  persistent tap per NIC (``h<host#>-<iface>``), and the management bridge
  ``mgmt`` whose address is the notebook's way in (guest ports isolated, so
  guests cannot talk to each other over it);
* ``/var/tmp/hautils/storage/``: the lab's SSH key and known_hosts, one COW
  file per VM over the shared base image, extra disks, console logs;
* one UML process group per VM, started inside the namespace.

Facts this relies on (see the course's lab findings): ``gro=1`` on every
vector NIC (without it large TCP segments are lost between VMs), a machine-id
and MAC per VM (one shared image otherwise gives every VM the same identity),
cable pulls done by detaching the tap from its bridge (setting a UML tap
down leaves the guest NIC stuck), and, on hosts whose CPU has AMX, a small
preloaded wrapper around ``ptrace`` (``uml_xstate.c``) without which
bookworm's UML 6.1 kills its guests' init at once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError
from ..ssh import Host
from ..topology import Host as HostSpec, Link, Topology
from . import container, netns, state
from .backend import Backend

UML_BINARY = "/usr/bin/linux"
MGMT_BRIDGE = "mgmt"
_XSTATE_SOURCE = Path(__file__).with_name("uml_xstate.c")


def xstate_preload() -> Path:
    """The compiled ``uml_xstate.c`` (built once per source version into the image cache).

    UML 6.1 restores its guests' FPU state through a buffer sized at build time; on a host
    with AMX the kernel refuses it (EFAULT) and every guest dies while starting init.  The
    wrapper fixes the size and changes nothing on other hosts, so it is always preloaded."""
    from .image import cache_dir

    src = _XSTATE_SOURCE.read_bytes()
    out = cache_dir() / f"uml-xstate-{hashlib.sha256(src).hexdigest()[:12]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        res = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", tmp, str(_XSTATE_SOURCE), "-ldl"],
                             capture_output=True, text=True)
    except FileNotFoundError:
        os.unlink(tmp)
        raise LabError("gcc is missing: it builds the small ptrace wrapper UML needs on hosts with AMX "
                       f"({_XSTATE_SOURCE.name}); install it with `apt-get install gcc libc6-dev` "
                       "(or just `sudo make`)") from None
    if res.returncode != 0:
        os.unlink(tmp)
        raise LabError(f"building {_XSTATE_SOURCE} failed (gcc exit {res.returncode}):\n{res.stderr[-2000:]}")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return out


@dataclass
class VM:
    """A running (or stopped) UML guest."""

    spec: HostSpec
    index: int
    cmdline: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    pgid: int | None = None
    started: float | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def tap_name(host_index: int, link_index: int, iface: str) -> str:
    """Host-side tap name; readable when it fits the 15-character limit."""
    name = f"h{host_index}-{iface}"
    return name if len(name) <= 15 else f"h{host_index}i{link_index}"


def machine_id(lab: str, host: str) -> str:
    return hashlib.sha256(f"hautils/{lab}/{host}".encode()).hexdigest()[:32]


class UMLBackend(Backend):
    """Brings a topology to life as UML VMs inside a private network namespace."""

    kind = "uml"

    def __init__(self, topo: Topology, lab: str, workdir: Path, image: Path, public_key: str):
        self.topo, self.lab, self.workdir, self.image = topo, lab, workdir, image
        self.netns = f"{state.NETNS_PREFIX}{lab}"
        self.public_key = public_key
        self.vms: dict[str, VM] = {h: VM(spec, i) for i, (h, spec) in enumerate(topo.hosts.items())}
        # tap -> bridge it belongs on now (partitions move taps to other bridges)
        self.tap_bridge: dict[str, str] = {
            tap: (MGMT_BRIDGE if link is self.vms[h].spec.mgmt else link.network)
            for h in self.vms for tap, link in self.taps(h).values()
        }
        self.partition_bridges: list[str] = []

    # -- names ---------------------------------------------------------------
    def taps(self, host: str) -> dict[str, tuple[str, Link]]:
        """iface name -> (tap name, link) for one host, management NIC included."""
        vm = self.vms[host]
        out = {l.iface: (tap_name(vm.index, i, l.iface), l) for i, l in enumerate(vm.spec.links)}
        assert vm.spec.mgmt is not None
        out[vm.spec.mgmt.iface] = (f"h{vm.index}-m", vm.spec.mgmt)
        return out

    def tap(self, host: str, iface: str) -> str:
        taps = self.taps(self._vm(host).spec.name)
        if iface not in taps:
            raise LabError(f"host {host!r} has no interface {iface!r}; it has: {', '.join(taps)}")
        return taps[iface][0]

    def _vm(self, host: str) -> VM:
        if host not in self.vms:
            raise LabError(f"no host {host!r} in lab {self.lab!r}; hosts: {', '.join(self.vms)}")
        return self.vms[host]

    # -- the Backend interface (hautils.lab.backend) ------------------------------
    def boot(self) -> float:
        """Network first, then every VM; returns the time the first VM was started."""
        self.create_network()
        t0 = time.time()
        for h in self.topo.hosts:
            self.start(h)
        return t0

    def host(self, name: str) -> Host:
        """SSH over a socket opened inside the lab's namespace, with the lab's key; host keys
        pinned on first use in the lab's known_hosts (the VMs make theirs at first boot)."""
        addr = str(self.topo.hosts[name].mgmt.address.ip)
        ns = self.netns
        return Host(name, addr, self.workdir / "id_ed25519", self.workdir / "known_hosts",
                    connector=lambda timeout: netns.connect(ns, addr, 22, timeout))

    def boot_problem(self, name: str) -> str | None:
        vm = self.vms[name]
        if vm.running:
            return None
        return (f"VM {name} exited during boot (status {vm.proc.returncode if vm.proc else '?'}); "
                f"console ({self.console_log(name)}):\n{self.console_tail(name)}")

    def no_answer(self, name: str, timeout: float) -> str:
        return (f"VM {name} did not answer SSH within {timeout:.0f} s; "
                f"console ({self.console_log(name)}):\n{self.console_tail(name)}")

    def teardown(self) -> list[str]:
        """Every VM, tap, bridge, the namespace, the work directory and the record."""
        return state.cleanup(self.lab)

    def power_off(self, name: str) -> float:
        return self.kill(name)

    def power_on(self, name: str) -> float:
        return self.start(name)

    def is_on(self, name: str) -> bool:
        """The VM's kernel process runs, whatever its guest is doing."""
        return self._vm(name).running

    def cable_pull(self, name: str, iface: str) -> float:
        """Detach the NIC's tap from its bridge (the guest sees no carrier change, as on UML)."""
        return self.set_master(self.tap(name, iface), None)

    def cable_plug(self, name: str, iface: str) -> float:
        tap = self.tap(name, iface)
        return self.set_master(tap, self.tap_bridge[tap])

    def status(self) -> list[dict]:
        """One row per VM: running, process group, management address, NICs and their bridges."""
        rows = []
        for name, vm in self.vms.items():
            alive = bool(vm.pgid and state.group_pids(vm.pgid, f"umid={self.lab}-{name}"))
            nics = []
            for iface, (tap, link) in self.taps(name).items():
                master = self.tap_master(tap) if netns.exists(self.netns) else None
                nics.append(f"{iface}={link.address.with_prefixlen if link.address else '-'}@{master or 'UNPLUGGED'}")
            rows.append({"host": name, "running": alive, "pgid": vm.pgid,
                         "mgmt": str(vm.spec.mgmt.address.ip), "memory_mb": vm.spec.memory_mb, "nics": " ".join(nics)})
        return rows

    def cpu_seconds(self, name: str) -> float:
        """User + system time of all the VM's host processes, with the exited ones its kernel
        reaped (see :meth:`hautils.lab.Lab.cpu_seconds`)."""
        vm = self.vms[name]
        if vm.pgid is None:
            raise LabError(f"host {name!r} is powered off: it uses no CPU")
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in state.group_pids(vm.pgid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return total / tick

    # -- network ---------------------------------------------------------------
    @netns.off_loop
    def create_network(self) -> None:
        """Namespace, bridges (STP off, no multicast snooping: VRRP/corosync need it plain) and taps."""
        if netns.exists(self.netns):
            raise LabError(f"namespace {self.netns} already exists: another run of lab {self.lab!r} is up "
                           f"or crashed; remove it with `hautils lab down {self.lab}` (or `--all`)")
        netns.create(self.netns)
        with netns.ipr(self.netns) as ip:
            for net in [*self.topo.networks, MGMT_BRIDGE]:
                ip.link("add", ifname=net, kind="bridge", br_mcast_snooping=0, br_forward_delay=0, br_stp_state=0)
                ip.link("set", index=ip.link_lookup(ifname=net)[0], state="up")
            mgmt = ip.link_lookup(ifname=MGMT_BRIDGE)[0]
            gw = self.topo.mgmt_gateway
            ip.addr("add", index=mgmt, address=str(gw.ip), prefixlen=gw.network.prefixlen)
            for host in self.vms:
                for iface, (tap, link) in self.taps(host).items():
                    ip.link("add", ifname=tap, kind="tuntap", mode="tap")
                    idx = ip.link_lookup(ifname=tap)[0]
                    bridge = self.tap_bridge[tap]
                    ip.link("set", index=idx, master=ip.link_lookup(ifname=bridge)[0], state="up")
                    if bridge == MGMT_BRIDGE:
                        ip.brport("set", index=idx, isolated=1)

    @netns.off_loop
    def set_master(self, tap: str, bridge: str | None) -> float:
        """Attach a tap to a bridge, or detach it (``None``): the cable pull.  Returns when done."""
        with netns.ipr(self.netns) as ip:
            idx = ip.link_lookup(ifname=tap)[0]
            master = ip.link_lookup(ifname=bridge)[0] if bridge else 0
            ip.link("set", index=idx, master=master)
            t = time.time()
            if bridge:
                ip.link("set", index=idx, state="up")
        return t

    @netns.off_loop
    def tap_master(self, tap: str) -> str | None:
        with netns.ipr(self.netns) as ip:
            link = ip.get_links(ip.link_lookup(ifname=tap)[0])[0]
            m = link.get_attr("IFLA_MASTER")
            return ip.get_links(m)[0].get_attr("IFLA_IFNAME") if m else None

    @netns.off_loop
    def partition(self, groups: list[list[str]]) -> float:
        """Split every lab network: group 0 keeps the real bridges, group k gets bridges of its own."""
        self.heal()
        moves: list[tuple[str, str]] = []
        new_bridges: list[str] = []
        for k, group in enumerate(groups[1:], start=1):
            for ni, net in enumerate(self.topo.networks):
                shadow = f"p{k}n{ni}"
                new_bridges.append(shadow)
                for host in group:
                    for iface, (tap, link) in self.taps(host).items():
                        if link.network == net and link is not self.vms[host].spec.mgmt:
                            moves.append((tap, shadow))
        with netns.ipr(self.netns) as ip:
            for b in new_bridges:
                ip.link("add", ifname=b, kind="bridge", br_mcast_snooping=0, br_forward_delay=0, br_stp_state=0)
                ip.link("set", index=ip.link_lookup(ifname=b)[0], state="up")
        self.partition_bridges = new_bridges
        t = time.time()
        for tap, shadow in moves:
            attached = self.tap_master(tap) is not None
            self.tap_bridge[tap] = shadow
            if attached:  # a pulled cable stays pulled
                t = self.set_master(tap, shadow)
        return t

    @netns.off_loop
    def heal(self) -> float:
        t = time.time()
        for host in self.vms:
            for iface, (tap, link) in self.taps(host).items():
                if link is self.vms[host].spec.mgmt:
                    continue
                if self.tap_bridge.get(tap) != link.network:
                    attached = self.tap_master(tap) is not None
                    self.tap_bridge[tap] = link.network
                    if attached:
                        t = self.set_master(tap, link.network)
        if self.partition_bridges:
            with netns.ipr(self.netns) as ip:
                for b in self.partition_bridges:
                    for idx in ip.link_lookup(ifname=b):
                        ip.link("del", index=idx)
            self.partition_bridges = []
        return t

    # -- VMs -------------------------------------------------------------------
    def build_cmdline(self, host: str) -> list[str]:
        """The UML command line: disks, NICs (gro=1, fixed MACs) and the guest's identity."""
        vm = self._vm(host)
        spec = vm.spec
        w = self.workdir
        cmd = [UML_BINARY, f"mem={spec.memory_mb}M", f"umid={self.lab}-{host}", f"uml_dir={w / 'uml'}",
               f"ubd0={w / (host + '.cow')},{self.image}"]
        for i, disk in enumerate(spec.disks, start=1):
            cmd.append(f"ubd{i}={w / f'{host}-{disk.name}.img'}")
        cmd += ["root=/dev/ubda", "rw"]
        ifs: list[str] = []
        for n, (iface, (tap, link)) in enumerate(self.taps(host).items()):
            cmd.append(f"vec{n}:transport=tap,ifname={tap},depth=128,gro=1,mac={link.mac}")
            ifs.append(f"hautils.if={iface},{link.mac},{link.address.with_prefixlen if link.address else '-'}")
        cmd += ["con=null", "con0=null,fd:1", "ssl=null", "quiet", "loglevel=4",
                "systemd.show_status=0", f"systemd.machine_id={machine_id(self.lab, host)}",
                f"hautils.host={host}", *ifs]
        cmd += [f"hautils.route={r.to},{r.via}" for r in spec.routes]
        if spec.forwarding:
            cmd.append("hautils.fwd=1")
        kt, kb = self.public_key.split()[:2]
        cmd.append(f"hautils.key={kt}:{kb}")
        return cmd

    def prepare_disks(self, host: str) -> None:
        """Extra disks, made once per lab (a reboot keeps their content): sparse, or a
        filesystem holding the container's root (``content: container``)."""
        for disk in self._vm(host).spec.disks:
            p = self.workdir / f"{host}-{disk.name}.img"
            if not p.exists() and disk.content == "container":
                container.make_disk(p, disk.size_mb)
            elif not p.exists():
                with open(p, "wb") as f:
                    f.truncate(disk.size_mb * 1024 * 1024)

    def console_log(self, host: str) -> Path:
        return self.workdir / f"{host}.console.log"

    def start(self, host: str) -> float:
        """Power on: start the UML kernel in the lab namespace, in a process group of its own."""
        vm = self._vm(host)
        if vm.running:
            raise LabError(f"host {host!r} is already running (process group {vm.pgid})")
        self.prepare_disks(host)
        vm.cmdline = self.build_cmdline(host)
        (self.workdir / "uml").mkdir(exist_ok=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": "/dev/shm", "LD_PRELOAD": str(xstate_preload())}
        log = open(self.console_log(host), "ab")
        log.write(f"\n=== hautils: power on {time.strftime('%F %T')} ===\n".encode())
        log.flush()
        ns = self.netns
        vm.proc = subprocess.Popen(vm.cmdline, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env, preexec_fn=lambda: netns.setns(ns),
                                   cwd=self.workdir)
        log.close()
        vm.pgid = vm.proc.pid
        vm.started = time.time()
        return vm.started

    def kill(self, host: str) -> float:
        """Power failure: SIGKILL the VM's whole process group (no shutdown, no FIN)."""
        vm = self._vm(host)
        t = state.kill_group(vm.pgid, f"umid={self.lab}-{host}") if vm.pgid is not None else None
        if t is None:
            raise LabError(f"host {host!r} is not running")
        if vm.proc is not None:
            vm.proc.wait(timeout=10)
        vm.proc = None
        return t

    def console_tail(self, host: str, lines: int = 25) -> str:
        try:
            text = self.console_log(host).read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])
