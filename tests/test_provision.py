"""The provisioning playbook for the user's own machines: its variables are the lab image's lists
(generated, never copied), it parses, and ``hautils lab provision`` builds the right command."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from hautils import cli, topology
from hautils.lab import image, preflight, provision

INVENTORY = """all:
  hosts:
    iscsi-server0: {ansible_host: 10.0.0.11}
    iscsi-server1: {ansible_host: 10.0.0.12}
    iscsi-client: {ansible_host: 10.0.0.13}
  children:
    hypervisors:
      hosts:
        kvm1: {ansible_host: 10.0.0.2}
"""


def test_the_committed_vars_file_is_what_hautils_generates():
    assert provision.VARS_FILE.read_text() == provision.render_vars(), \
        "labs/ansible/hautils-vars.yml is stale: run `hautils lab playbook-vars --write`"


def test_the_vars_are_the_lab_images_packages_and_the_preflights_modules():
    v = yaml.safe_load(provision.VARS_FILE.read_text())
    assert set(v["hautils_packages"]) == set(image.PACKAGES) | set(image.BASE_PACKAGES) - {"systemd-sysv"}
    needed = {p for pkgs, _ in preflight.NEEDS.values() for p in pkgs}
    assert needed <= set(v["hautils_packages"]), needed - set(v["hautils_packages"])  # preflight passes after it
    assert set(v["hautils_kernel_modules"]) == {m for _, mods in preflight.NEEDS.values() for m in mods}
    assert "drbd.service" in v["hautils_services_off"] and "ssh.service" not in v["hautils_services_off"]


def test_the_playbook_reads_the_generated_vars_and_spares_hypervisors():
    play = yaml.safe_load(provision.PLAYBOOK.read_text())[0]
    assert play["vars_files"] == ["ansible/hautils-vars.yml"] and play["hosts"] == "all:!hypervisors"
    text = provision.PLAYBOOK.read_text()
    for var in yaml.safe_load(provision.VARS_FILE.read_text()):
        assert "{{ " + var + " }}" in text, var


def _ansible_playbook() -> str | None:
    return os.environ.get("ANSIBLE_PLAYBOOK") or shutil.which("ansible-playbook")


@pytest.mark.skipif(_ansible_playbook() is None,
                    reason="ansible-playbook not installed (pip install 'hautils[own]', or set ANSIBLE_PLAYBOOK)")
def test_the_playbook_passes_ansibles_syntax_check(tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text(INVENTORY)
    r = subprocess.run([_ansible_playbook(), "--syntax-check", "-i", str(inv), str(provision.PLAYBOOK)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
                            "ANSIBLE_HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stdout + r.stderr


def test_provision_prints_the_command_limited_to_the_chapters_hosts(tmp_path, monkeypatch):
    monkeypatch.delenv("ANSIBLE_PLAYBOOK", raising=False)
    inv = tmp_path / "inv.yml"
    inv.write_text(INVENTORY)
    r = CliRunner().invoke(cli.main, ["lab", "provision", "-i", str(inv), "-t", "storage", "--print", "--check"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == (f"ansible-playbook -i {inv} {provision.PLAYBOOK} "
                                "--limit iscsi-server0,iscsi-server1,iscsi-client --check")
    cmd = provision.command(inv, exe="ap")
    assert cmd == ["ap", "-i", str(inv), str(provision.PLAYBOOK)]
    storage = topology.load("storage", check_memory=False)
    inv.write_text("all: {hosts: {iscsi-client: {ansible_host: 10.0.0.13}}}")
    r = CliRunner().invoke(cli.main, ["lab", "provision", "-i", str(inv), "-t", "storage", "--print"])
    assert r.exit_code == 2 and "needs iscsi-server0, iscsi-server1" in r.output
    assert storage.name == "storage"


def test_playbook_vars_prints_the_file():
    r = CliRunner().invoke(cli.main, ["lab", "playbook-vars"])
    assert r.exit_code == 0 and r.output == provision.render_vars().rstrip() + "\n"


def test_the_example_inventory_is_the_vagrantfiles_storage_lab(tmp_path):
    """labs/inventory.example.yml matches labs/storage.yaml and what labs/Vagrantfile makes
    (Vagrant itself does not run here: its keys are stand-ins)."""
    from hautils.lab import inventory

    labs = provision.REPO / "labs"
    (tmp_path / "inv.yml").write_text((labs / "inventory.example.yml").read_text())
    storage = topology.load("storage", check_memory=False)
    for name in storage.hosts:
        key = tmp_path / ".vagrant" / "machines" / name / "libvirt" / "private_key"
        key.parent.mkdir(parents=True)
        key.write_text("")
    hosts = inventory.load(tmp_path / "inv.yml").for_topology(storage)
    vagrantfile = (labs / "Vagrantfile").read_text()
    assert 'YAML.load_file(File.join(__dir__, "storage.yaml"))' in vagrantfile
    assert 'lv.default_prefix = "hautils_"' in vagrantfile and 'MGMT_NET = "10.203.0"' in vagrantfile
    for i, (name, h) in enumerate(hosts.items()):
        assert h.allow_destructive and h.user == "root"
        assert h.power == {"method": "virsh", "hypervisor": "localhost", "domain": f"hautils_{name}"}
        assert h.address == f"10.203.0.{11 + i}"  # the Vagrantfile's mgmt0 addresses, in the topology's order
        assert h.links["eth0"] == storage.hosts[name].links[0].address
