"""Errors a learner can act on: each names the host, file or field and the fix."""


class LabError(RuntimeError):
    """Something about the lab (image, VMs, namespace) is wrong; the message says what to do."""


class TopologyError(ValueError):
    """A topology file is invalid; the message names the file, the item and the field."""


class HostUnreachable(ConnectionError):
    """A lab host did not answer over SSH within the timeout (powered off, cable pulled, crashed)."""

    def __init__(self, host: str, detail: str = ""):
        self.host = host
        super().__init__(f"host {host!r} is unreachable over SSH" + (f": {detail}" if detail else ""))


class CommandError(RuntimeError):
    """A command run on a lab host exited non-zero while ``check=True``."""

    def __init__(self, host: str, command: str, exit_status: int, stdout: str, stderr: str):
        self.host, self.command, self.exit_status = host, command, exit_status
        self.stdout, self.stderr = stdout, stderr
        tail = (stderr or stdout).strip().splitlines()[-5:]
        super().__init__(
            f"on {host}: `{command}` exited {exit_status}" + ("\n  " + "\n  ".join(tail) if tail else "")
        )
