"""What :class:`~hautils.lab.Lab` needs from whatever runs its hosts: the backend interface.

The course runs the same chapters on two kinds of machines.  The ``uml`` backend
(:class:`~hautils.lab.uml.UMLBackend`) makes them: User-Mode Linux VMs in a private network
namespace, broken from outside (a SIGKILL, a tap detached from its bridge).  The ``inventory``
backend (:class:`~hautils.lab.own.InventoryBackend`) borrows them: the user's own VMs from an
Ansible inventory, broken from inside over SSH with faults that undo themselves
(:mod:`hautils.lab.remote`).  ``Lab`` keeps what is the same for both (host names, events, the
``with`` block, waiting for SSH) and asks the backend for the rest, through these methods.

Probes and services run *on* the lab's hosts, over SSH (``lab[host].run(...)``), so where a
probe runs is a host name of the topology on both backends: a backend only has to say how to
reach each host (:meth:`Backend.host`).

Every fault returns the epoch time at which it took effect, for the analysis toolkit.
"""

from __future__ import annotations

import abc
import os
from typing import ClassVar

from ..errors import LabError
from ..ssh import Host

__all__ = ["Backend", "BACKENDS", "DEFAULT_BACKEND", "choose"]

#: The backends ``Lab(..., backend=NAME)`` knows.
BACKENDS = ("uml", "inventory")
DEFAULT_BACKEND = "uml"


def choose(backend: str | None) -> str:
    """The backend's name: ``backend`` if given, else ``$HAUTILS_BACKEND``, else ``uml``.

    A notebook's papermill parameter ``backend`` ends up here, so a chapter runs on the
    user's machines with ``-p backend inventory`` and nothing else changed."""
    name = backend if backend is not None else os.environ.get("HAUTILS_BACKEND") or DEFAULT_BACKEND
    name = str(name).strip().lower()
    if name not in BACKENDS:
        src = "backend=" if backend is not None else "HAUTILS_BACKEND="
        raise LabError(f"unknown lab backend {src}{name!r}: use one of {', '.join(BACKENDS)} "
                       "(uml: the course's own VMs; inventory: your machines, from an Ansible inventory "
                       "given as inventory= or HAUTILS_INVENTORY)")
    return name


class Backend(abc.ABC):
    """The machines behind one lab, addressed by the topology's host names."""

    #: ``uml`` or ``inventory``: what ``Lab`` and error messages call it
    kind: ClassVar[str]

    # -- lifecycle ---------------------------------------------------------
    @abc.abstractmethod
    def boot(self) -> float:
        """Make every host run (UML: network and VMs; own machines: nothing to start).
        Returns the epoch time the hosts were started; ``Lab`` then waits for SSH."""

    @abc.abstractmethod
    def host(self, name: str) -> Host:
        """An SSH handle on host ``name`` (connected lazily): how the lab reaches it."""

    @abc.abstractmethod
    def boot_problem(self, name: str) -> str | None:
        """While waiting for SSH: why ``name`` will never answer (its VM exited), or None."""

    def no_answer(self, name: str, timeout: float) -> str:
        """The error when ``name`` did not answer SSH within ``timeout`` s (with what helps: a
        console tail, the address tried)."""
        return f"host {name} did not answer SSH within {timeout:.0f} s"

    @abc.abstractmethod
    def teardown(self) -> list[str]:
        """Undo what the backend did to the machines; returns what was removed or restored."""

    # -- faults ------------------------------------------------------------
    @abc.abstractmethod
    def power_off(self, name: str) -> float:
        """Cut the host's power (no shutdown); returns when it took effect."""

    @abc.abstractmethod
    def power_on(self, name: str) -> float:
        """Power the host on again (it boots on the same disks); returns when it was started."""

    @abc.abstractmethod
    def is_on(self, name: str) -> bool:
        """Whether the host's power is on (see each backend for what that is measured by)."""

    @abc.abstractmethod
    def cable_pull(self, name: str, iface: str) -> float:
        """Disconnect one NIC of the host from its network."""

    @abc.abstractmethod
    def cable_plug(self, name: str, iface: str) -> float:
        """Connect it again."""

    @abc.abstractmethod
    def partition(self, groups: list[list[str]]) -> float:
        """Split the lab's networks between ``groups`` of host names (management kept)."""

    @abc.abstractmethod
    def heal(self) -> float:
        """Undo a partition."""

    # -- information -------------------------------------------------------
    @abc.abstractmethod
    def status(self) -> list[dict]:
        """One row per host: at least ``host``, ``running``, ``mgmt`` (how it is reached), ``nics``."""

    def cpu_seconds(self, name: str) -> float:
        """CPU seconds the host has used on the machine running the lab."""
        raise LabError(f"host {name!r}: the {self.kind} backend cannot measure a host's CPU time from outside")
