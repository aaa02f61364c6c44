"""``python3 -m hautils.lab.nsproxy NETNS HOST PORT``: a TCP connection opened inside a lab's
network namespace, carried on stdin and stdout.

A lab's addresses exist only inside its namespace, which is what keeps its traffic off the
machine's network.  The notebook reaches its VMs with sockets opened in there (see
:mod:`hautils.lab.netns`); this is the same for tools that only know how to run a command as
their connection: ``ssh -o ProxyCommand=...``, Ansible (through ``ansible_ssh_common_args``) and
paramiko's ``ProxyCommand``.  ``hautils lab inventory NAME`` writes an inventory that uses it,
so that the own-machines backend and its playbook can be tried on a running UML lab.

Standard library only (it starts on every SSH connection); needs root (``setns``).
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print("usage: python3 -m hautils.lab.nsproxy NETNS HOST PORT", file=sys.stderr)
        return 2
    ns, host, port = argv[0], argv[1], int(argv[2])
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    except OSError as e:
        print(f"nsproxy: no network namespace {ns!r} ({e.strerror}): is the lab up?", file=sys.stderr)
        return 1
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:  # one thread so far: the whole process moves
            print(f"nsproxy: setns {ns}: {os.strerror(ctypes.get_errno())} (root needed)", file=sys.stderr)
            return 1
    finally:
        os.close(fd)
    try:
        s = socket.create_connection((host, port), timeout=15)
    except OSError as e:
        print(f"nsproxy: {host}:{port} in {ns}: {e}", file=sys.stderr)
        return 1
    s.settimeout(None)

    def upstream() -> None:
        try:
            while data := os.read(0, 65536):
                s.sendall(data)
        except OSError:
            pass
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=upstream, daemon=True).start()
    try:
        while data := s.recv(65536):
            os.write(1, data)
    except OSError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
