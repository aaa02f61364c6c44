"""A minimal web service (Python's http.server under systemd): chapter 1's thing to break.

systemd is the first layer of HA a learner meets: ``Restart=always`` turns a crash into a
short outage whose length is mostly ``RestartSec`` plus the process start time.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import render


@dataclass
class Web:
    """The demo web service on one host."""

    host: object  # hautils.ssh.Host
    address: str
    port: int = 80
    name: str = "web"
    restart: str = "always"
    restart_sec: float = 0.1
    start_limit_burst: int | None = None
    start_limit_interval_sec: float | None = None
    root: str = "/srv/www"

    @property
    def unit_path(self) -> str:
        return f"/etc/systemd/system/{self.name}.service"

    def unit(self) -> str:
        """The rendered systemd unit."""
        return render("web.service.j2", name=self.name, address=self.address, port=self.port,
                      restart=self.restart, restart_sec=f"{self.restart_sec:g}",
                      start_limit_burst=self.start_limit_burst, root=self.root,
                      start_limit_interval_sec=None if self.start_limit_interval_sec is None
                      else f"{self.start_limit_interval_sec:g}")

    def install(self) -> str:
        """Write the page and the unit, check the unit with ``systemd-analyze verify``, enable and start it."""
        h = self.host
        h.put(f"{self.root}/index.html", f"<h1>served by {h.name}</h1>\n")
        h.put(self.unit_path, self.unit())
        h.run(f"systemd-analyze verify {self.unit_path}")  # the real tool's own check
        # restart (not just start): a changed unit takes effect now, and a failed one is reset
        h.run(f"systemctl daemon-reload && systemctl reset-failed {self.name} 2>/dev/null; "
              f"systemctl enable {self.name} && systemctl restart {self.name}")
        h.wait_for(f"python3 -c \"import urllib.request as u; u.urlopen('http://{self.address}:{self.port}/', timeout=1)\"",
                   timeout=30)
        return self.unit()

    def crash(self) -> float:
        """Kill the service's processes with SIGKILL, as a crash would; returns the time of the kill.

        The time is read in the guest right after the kill (bash's $EPOCHREALTIME: no extra
        process); guests share the host's clock, so it lines up with the probes' timestamps."""
        out = self.host.run(f"systemctl kill --signal=SIGKILL {self.name}; echo $EPOCHREALTIME").stdout
        return float(out.split()[-1].replace(",", "."))

    def url(self, path: str = "/") -> str:
        return f"http://{self.address}:{self.port}{path}"
