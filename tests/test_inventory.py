"""hautils.lab.inventory: Ansible YAML inventories of the user's own machines, read and checked
against a chapter's topology.  Every bad inventory must fail with a message that names the host
and the key (and so tells the user what to change)."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest
import yaml

from hautils import topology
from hautils.lab import inventory
from hautils.lab.inventory import InventoryError

STORAGE = topology.load("storage", check_memory=False)

GOOD = """
all:
  vars:
    ansible_user: root
  hosts:
    iscsi-client: {ansible_host: 10.0.0.13}
  children:
    servers:
      vars:
        ansible_port: 2222
      hosts:
        iscsi-server0:
          ansible_host: 10.0.0.11
          allow_destructive: true
          power: {method: virsh, hypervisor: kvm1, domain: srv0}
          hautils_links: {eth0: 192.168.103.99/24}
        iscsi-server1:
          ansible_host: 10.0.0.12
          ansible_port: 22
          ansible_ssh_common_args: "-o ProxyJump=admin@bastion:2200"
"""


def parse(text: str, base: Path | None = None) -> inventory.Inventory:
    return inventory.parse(yaml.safe_load(textwrap.dedent(text)), "inv.yml", base=base)


def test_a_good_inventory_maps_onto_the_storage_topology():
    inv = parse(GOOD)
    hosts = inv.for_topology(STORAGE)
    assert list(hosts) == list(STORAGE.hosts)
    s0, s1, c = hosts["iscsi-server0"], hosts["iscsi-server1"], hosts["iscsi-client"]
    assert (s0.address, s0.user, s0.port) == ("10.0.0.11", "root", 2222)  # the group's port
    assert s1.port == 22 and s1.proxy_jump == "admin@bastion:2200"  # the host's own value wins
    assert c.port == 22 and c.groups == ("all",) and s0.groups == ("servers",)
    assert s0.power == {"method": "virsh", "hypervisor": "kvm1", "domain": "srv0"}
    assert s0.links == {"eth0": ipaddress.IPv4Interface("192.168.103.99/24")}
    s0.refuse_fault("power_off")  # allowed
    with pytest.raises(InventoryError, match=r"iscsi-client: refusing power_off: .*allow_destructive: true"):
        c.refuse_fault("power_off")


def test_proxy_command_and_key_file_relative_to_the_inventory(tmp_path):
    (tmp_path / "lab_key").write_text("not really a key")
    inv = parse("""
        all:
          hosts:
            h: {ansible_host: 172.31.255.2, ansible_ssh_private_key_file: lab_key,
                ansible_ssh_common_args: "-o 'ProxyCommand=ip netns exec hal-storage nc %h %p'"}
        """, base=tmp_path)
    h = inv.hosts["h"]
    assert h.key_file == tmp_path / "lab_key" and h.proxy_command == "ip netns exec hal-storage nc %h %p"
    assert parse("all: {hosts: {h: {ansible_host: a, ansible_ssh_common_args: '-J jump:22'}}}").hosts["h"].proxy_jump \
        == "jump:22"


BAD = [
    # (inventory text, what the message must say)
    ("", r"empty file"),
    ("- a\n- b\n", r"mapping of groups"),
    ("all: {hosts: [a, b]}", r"group all: hosts must be a mapping"),
    ("all: {hosts: {h: {ansible_port: 22}}}", r"host h: ansible_host: missing"),
    ("all: {hosts: {h: {ansible_host: a, ansible_port: 70000}}}", r"host h: ansible_port: 70000 is not a TCP port"),
    ("all: {hosts: {h: {ansible_host: a, ansible_user: 'Bad User'}}}", r"host h: ansible_user: 'Bad User'"),
    ("all: {hosts: {h: {ansible_host: a, ansible_ssh_private_key_file: /nonexistent/key}}}",
     r"host h: ansible_ssh_private_key_file: /nonexistent/key does not exist"),
    ("all: {hosts: {h: {ansible_host: a, allow_destructive: 'yes please'}}}",
     r"host h: allow_destructive: 'yes please' is not true or false"),
    ("all: {hosts: {h: {ansible_host: a, allow_destructive: true, power: {method: magic}}}}",
     r"host h: power: method 'magic' is unknown: use one of virsh, ipmi, redfish, sysrq"),
    ("all: {hosts: {h: {ansible_host: a, allow_destructive: true, power: {method: virsh, domain: d}}}}",
     r"host h: power: method virsh needs hypervisor, domain; missing hypervisor"),
    ("all: {hosts: {h: {ansible_host: a, power: {method: sysrq}}}}",
     r"host h: power: a power method without allow_destructive"),
    ("all: {hosts: {h: {ansible_host: a, ansible_ssh_common_args: '-o StrictHostKeyChecking=no'}}}",
     r"host h: ansible_ssh_common_args: -o StrictHostKeyChecking=no: only ProxyJump and ProxyCommand"),
    ("all: {hosts: {h: {ansible_host: a, ansible_ssh_common_args: '-J a -o ProxyCommand=nc'}}}",
     r"host h: ansible_ssh_common_args: both a ProxyJump and a ProxyCommand"),
    ("all: {hosts: {h: {ansible_host: '{{ lookup(\"env\", \"IP\") }}'}}}", r"host h: ansible_host: Jinja2 templates"),
    ("all: {hosts: {h: {ansible_host: a, ansible_hots: b}}}", r"host h: ansible_hots: not a variable this backend"),
    ("all: {hosts: {h: {ansible_host: a, hautils_links: {eth0: 192.168.103.99}}}}",
     r"host h: hautils_links: eth0: '192.168.103.99' has no prefix length"),
    ("all: {hosts: {h: {ansible_host: a, hautils_links: {eth0: 300.1.1.1/24}}}}",
     r"host h: hautils_links: eth0: '300.1.1.1/24' is not an IPv4 address"),
    ("all: {host: {h: {ansible_host: a}}}", r"group all has host: a group holds only hosts:, vars: and children:"),
    ("all: {children: {web: {vars: [1, 2]}}}", r"group all/web: vars must be a mapping"),
    ("all: {vars: {ansible_user: root}}", r"no hosts"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m.split(":")[0][:40] for _, m in BAD])
def test_a_bad_inventory_names_the_host_and_the_key(text, message):
    with pytest.raises(InventoryError, match=message) as e:
        parse(text)
    assert str(e.value).startswith("inv.yml")


def _storage_inventory(**override) -> str:
    hosts = {"iscsi-server0": {"ansible_host": "10.0.0.11"}, "iscsi-server1": {"ansible_host": "10.0.0.12"},
             "iscsi-client": {"ansible_host": "10.0.0.13"}}
    for name, hv in override.items():
        hosts[name.replace("_", "-")] = hv
    return yaml.safe_dump({"all": {"hosts": {k: v for k, v in hosts.items() if v is not None}}})


def test_a_host_the_chapter_needs_is_named_when_missing():
    with pytest.raises(InventoryError, match=r"the storage lab needs iscsi-client, which the inventory does not list"):
        parse(_storage_inventory(iscsi_client=None)).for_topology(STORAGE)


def test_two_hosts_on_one_machine_are_refused():
    with pytest.raises(InventoryError, match=r"iscsi-client and iscsi-server0 have the same ansible_host 10.0.0.11|"
                                             r"iscsi-server0 and iscsi-client have the same"):
        parse(_storage_inventory(iscsi_client={"ansible_host": "10.0.0.11"})).for_topology(STORAGE)


def test_an_address_other_than_the_chapters_is_refused_with_both_addresses():
    inv = parse(_storage_inventory(iscsi_server1={"ansible_host": "10.0.0.12",
                                                  "hautils_links": {"eth0": "192.168.103.50/24"}}))
    with pytest.raises(InventoryError, match=r"iscsi-server1: hautils_links eth0 is 192.168.103.50/24, "
                                             r"the chapter uses 192.168.103.91/24"):
        inv.for_topology(STORAGE)
    inv = parse(_storage_inventory(iscsi_server1={"ansible_host": "10.0.0.12", "hautils_links": {"eth7": "10.1.1.1/24"}}))
    with pytest.raises(InventoryError, match=r"iscsi-server1: hautils_links names eth7, which iscsi-server1 does not"):
        inv.for_topology(STORAGE)


def test_extra_hosts_and_ansibles_own_variables_are_ignored(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(_storage_inventory(monitoring={"ansible_host": "10.0.0.99", "ansible_become": True,
                                                   "ansible_python_interpreter": "/usr/bin/python3"}))
    inv = inventory.load(path)
    assert set(inv.for_topology(STORAGE)) == set(STORAGE.hosts) and "monitoring" in inv.hosts


def test_an_unreadable_or_broken_file_is_named(tmp_path):
    with pytest.raises(InventoryError, match=r"nope.yml: cannot read the inventory"):
        inventory.load(tmp_path / "nope.yml")
    (tmp_path / "broken.yml").write_text("all: {hosts: [\n")
    with pytest.raises(InventoryError, match=r"broken.yml: not valid YAML"):
        inventory.load(tmp_path / "broken.yml")
