"""The lean OCF agent (hautils/services/files/container.ocf) run by sh, with lxc and mount
stubbed on PATH: its exit codes are what pacemaker acts on (7 = stopped, 1 = failed), and its
order (disk before container) is what keeps a container off an unmounted root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[1] / "hautils" / "services" / "files" / "container.ocf"
STUBS = ("lxc-start", "lxc-wait", "lxc-stop", "mount", "umount")


@pytest.fixture
def agent(tmp_path):
    """Run the agent with stubs that log their calls; ``state`` is what lxc-info reports,
    ``fail`` the stubs that exit 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (bin_dir / "lxc-info").write_text('#!/bin/sh\necho "State: $STUB_STATE"\n')
    for name in STUBS:
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n'
                                    f'case " $STUB_FAIL " in *" {name} "*) exit 1 ;; esac\nexit 0\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)

    def run(action: str, state: str = "STOPPED", fail: str = "", **params: str):
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_STATE": state, "STUB_FAIL": fail,
               **{f"OCF_RESKEY_{k}": v for k, v in params.items()}}
        res = subprocess.run(["sh", str(AGENT), action], env=env, capture_output=True, text=True, timeout=30)
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return res.returncode, calls, res.stdout

    run.dir = str(tmp_path / "rootfs")  # never mounted: not in /proc/mounts
    return run


def params(agent) -> dict:
    return {"container": "guest", "config": "/var/lib/lxc/guest/config", "device": "/dev/disk/by-label/guest",
            "directory": agent.dir}


def test_meta_data_and_missing_parameters(agent):
    rc, _, out = agent("meta-data")
    assert rc == 0 and '<resource-agent name="container"' in out
    assert agent("monitor")[0] == 6  # OCF_ERR_CONFIGURED: no container, no config
    assert agent("reload", **params(agent))[0] == 3  # OCF_ERR_UNIMPLEMENTED


def test_start_mounts_the_disk_before_the_container(agent):
    rc, calls, _ = agent("start", **params(agent))
    assert rc == 0
    assert [c.split()[0] for c in calls] == ["mount", "lxc-start", "lxc-wait"]
    assert calls[0] == f"mount -t ext4 /dev/disk/by-label/guest {agent.dir}"
    assert calls[2] == "lxc-wait -n guest -s RUNNING -t 20"


def test_a_failed_mount_starts_no_container(agent):
    rc, calls, _ = agent("start", fail="mount", **params(agent))
    assert rc == 1 and [c.split()[0] for c in calls] == ["mount"]


def test_a_running_container_is_not_started_again(agent):
    rc, calls, _ = agent("start", state="RUNNING", **params(agent))
    assert rc == 0 and calls == []


def test_monitor_tells_stopped_from_running_without_its_disk(agent):
    assert agent("monitor", state="STOPPED", **params(agent))[0] == 7  # OCF_NOT_RUNNING
    assert agent("monitor", state="RUNNING", **params(agent))[0] == 1  # running, disk not mounted: failed
    no_disk = {"container": "guest", "config": "/var/lib/lxc/guest/config"}
    assert agent("monitor", state="RUNNING", **no_disk)[0] == 0


def test_stop_stops_the_container_and_kills_it_if_it_will_not_stop(agent):
    rc, calls, _ = agent("stop", state="RUNNING", **params(agent))
    assert rc == 0 and calls == ["lxc-stop -n guest -t 10"]  # the disk was not mounted: no umount
    rc, calls, _ = agent("stop", state="RUNNING", fail="lxc-stop", **params(agent))
    assert rc == 1 and calls == ["lxc-stop -n guest -t 10", "lxc-stop -n guest -k"]
    assert agent("stop", state="STOPPED", **params(agent))[:2] == (0, [])
