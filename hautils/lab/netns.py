"""Network namespaces: the lab's private network, and sockets opened inside it.

Every lab lives in its own namespace so that the paper's addresses
(192.168.103.x, 10.10.x.x) exist only there and no lab packet can leave the
machine.  The notebook still needs to talk to the VMs: a short-lived thread
enters the namespace (``setns`` changes only the calling thread) and opens
the socket there; the socket keeps its namespace for life.  No relay
process, no netcat.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from pyroute2 import IPRoute, config as _pyroute2_config, netns as _netns

# pyroute2 reaches a namespace through a forked child that it stops with SIGTERM; the
# child must not run the parent's SIGTERM handler (the lab's teardown) on the way out.
_pyroute2_config.disable_mp_signal = True

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def setns(name: str) -> None:
    """Move the *calling thread* (or a freshly forked child) into namespace ``name``."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name!r}: {os.strerror(err)}")
    finally:
        os.close(fd)


def off_loop(fn: Callable[..., T]) -> Callable[..., T]:
    """Run ``fn`` in a worker thread when the caller's thread runs an asyncio loop.

    pyroute2 drives netlink with its own asyncio loop; inside Jupyter, cells run while the
    kernel's loop is running, and pyroute2 would fail with "This event loop is already running".
    """
    import asyncio
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = fn(*args, **kwargs)
            except BaseException as e:
                box["error"] = e

        t = threading.Thread(target=target, name=f"netlink-{fn.__name__}", daemon=True)
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box["result"]

    return wrapper


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


@off_loop
def create(name: str) -> None:
    """A namespace whose own links never speak IPv6.  The bridges and taps are the lab's
    switches and cables: a real switch sends nothing into a port by itself, but a Linux link
    with IPv6 on sends router solicitations when it changes, and a cable pull changes two: the
    detached tap, and the bridge, which takes another port's MAC address.  Seen in the lab:
    such a solicitation reached a balance-rr bond's pulled slave 0.45-0.8 s after the pull,
    counted as traffic on it, and kept the ARP monitor from dropping the slave (a loss window
    of 0.5-0.7 s instead of 0.3 s).  The guests' IPv6 is not touched: it is their own."""
    _netns.create(name)
    run_in(name, _ipv6_off, timeout=30)
    with ipr(name) as ip:
        ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")


IPV6_SYSCTLS = ("/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6")


def _ipv6_off() -> None:
    """(in a thread inside the namespace: /proc/sys/net is the opening thread's namespace)"""
    for path in IPV6_SYSCTLS:
        if os.path.exists(path):  # a kernel without IPv6 has nothing to turn off
            with open(path, "w") as f:
                f.write("1\n")


def ipv6_disabled(name: str) -> bool:
    """Whether new links in namespace ``name`` come up without IPv6 (see :func:`create`)."""
    def read() -> bool:
        return all(not os.path.exists(p) or open(p).read().strip() == "1" for p in IPV6_SYSCTLS)
    return run_in(name, read, timeout=30)


@off_loop
def remove(name: str) -> None:
    """Delete a namespace; its bridges and taps go with it."""
    if exists(name):
        _netns.remove(name)


@off_loop
def delete_links(name: str) -> int:
    """Delete every link of namespace ``name`` but ``lo`` (taps, bridges); return how many.

    Removing a namespace frees its devices later, in the kernel's own time; deleting them
    first means they are gone when this returns."""
    n = 0
    with ipr(name) as ip:
        links = list(ip.get_links())
        # taps before bridges: a bridge goes quicker without ports
        links.sort(key=lambda l: l.get_attr("IFLA_LINKINFO") is not None
                   and l.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "bridge")
        for link in links:
            if link.get_attr("IFLA_IFNAME") == "lo":
                continue
            try:
                ip.link("del", index=link["index"])
                n += 1
            except Exception as e:  # already gone with its owner (a tap of a dead VM)
                if getattr(e, "code", None) != 19:  # ENODEV
                    raise
    return n


@off_loop
def listed() -> list[str]:
    return sorted(_netns.listnetns())


def ipr(name: str) -> IPRoute:
    """An rtnetlink handle inside namespace ``name`` (use as a context manager)."""
    return IPRoute(netns=name)


def run_in(name: str, fn: Callable[[], T], timeout: float | None = None) -> T:
    """Run ``fn`` in a thread that has entered namespace ``name`` and return its result."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            setns(name)
            box["result"] = fn()
        except BaseException as e:  # re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"operation inside network namespace {name!r} took longer than {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["result"]


def connect(name: str, address: str, port: int, timeout: float) -> socket.socket:
    """A TCP socket connected from inside namespace ``name``."""

    def open_socket() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((address, port))
        except BaseException:
            s.close()
            raise
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    return run_in(name, open_socket, timeout=timeout + 5)
