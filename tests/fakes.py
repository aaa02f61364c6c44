"""Stand-ins for lab hosts in unit tests of the service modules: what a module would write and
run over SSH, recorded, and the tools' answers, given."""

from __future__ import annotations

from hautils.errors import CommandError
from hautils.ssh import Result


class RecordingHost:
    """Records ``put`` and ``run``; ``answers`` maps a command's prefix to ``(status, stdout,
    stderr)`` (the last matching prefix wins), ``outputs`` a substring of a command to the stdout
    it prints (e.g. ``{"ip -o -4 addr show": ...}``).  A service's ``start`` reads the guest's
    clock (``EPOCHREALTIME``): it says 1733300000.5 unless ``outputs`` says otherwise."""

    def __init__(self, name: str = "host", answers: dict | None = None, outputs: dict | None = None):
        self.name = name
        self.answers = dict(answers or {})
        self.outputs = {"EPOCHREALTIME": "1733300000,500000\n", **(outputs or {})}
        self.puts: list[tuple[str, str, int]] = []
        self.runs: list[str] = []

    def put(self, path, data, mode=0o644):
        self.puts.append((path, data, mode))

    def run(self, command, check=True, timeout=60.0):
        self.runs.append(command)
        status, out, err = 0, "", ""
        for prefix, answer in self.answers.items():
            if command.startswith(prefix):
                status, out, err = answer
        for needle, text in self.outputs.items():
            if needle in command:
                out = text
        if check and status:
            raise CommandError(self.name, command, status, out, err)
        return Result(self.name, command, status, out, err, 0.0)
