"""``hautils`` command line: build the image, bring labs up and down, log into hosts.

    hautils image build
    hautils lab up storage          # VMs keep running after the command returns
    hautils lab status
    hautils lab ssh storage iscsi-client 'cat /proc/cmdline'
    hautils lab down storage        # or --all after a crashed run
    hautils lab provision -i my-vms.yml -t storage   # your own machines: install what chapters need
"""

from __future__ import annotations

import os
import sys
import time

import click

from .errors import CommandError, HostUnreachable, LabError, TopologyError


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


@click.group()
def main() -> None:
    """HA Lab Book: labs of real Linux VMs to build, break and measure HA setups."""


@main.group()
def image() -> None:
    """The shared Debian image every lab VM boots."""


@image.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if a cached image matches.")
def image_build(force: bool) -> None:
    """Build the lab image (debootstrap + packages), or reuse the cached one."""
    from .lab import image as img, require_root

    try:
        require_root()
        t = time.monotonic()
        res = img.build(force=force)
    except LabError as e:
        _fail(e)
    how = f"built in {res.built_in_s:.0f} s" if res.built_in_s is not None else "cached"
    click.echo(f"{res.path} ({how}; {time.monotonic() - t:.1f} s)")


@main.group()
def lab() -> None:
    """Bring labs up, inspect them, log in, tear them down."""


@lab.command("up")
@click.argument("topology")
@click.option("--name", help="Lab name (default: the topology's name).")
def lab_up(topology: str, name: str | None) -> None:
    """Boot every host of TOPOLOGY (a name in labs/ or a YAML path) and wait for SSH."""
    from .lab import Lab

    try:
        lab = Lab(topology, name=name, keep=True, backend="uml")  # this command boots UML VMs
        t = time.monotonic()
        lab.up()
        click.echo(f"lab {lab.name} up in {time.monotonic() - t:.1f} s")
        _print_status(lab)
    except (LabError, TopologyError) as e:
        _fail(e)


def _print_status(lab) -> None:
    for row in lab.status():
        state = "running" if row["running"] else "OFF"
        click.echo(f"  {row['host']:<15} {state:<8} mgmt {row['mgmt']:<15} {row['nics']}")


@lab.command("status")
@click.argument("name", required=False)
def lab_status(name: str | None) -> None:
    """Show running labs and their hosts, and what is left of labs half torn down."""
    from .lab import Lab, state

    names = [name] if name else state.labs()
    orphans = [] if name else state.orphans()
    if not names and not orphans:
        click.echo("no lab is up")
    for n in names:
        health = state.health(n)
        if not health["record"] and not health["namespace"] and not health["workdir"]:
            _fail(LabError(f"no lab {n!r} is up; running labs: {', '.join(state.labs()) or 'none'}"))
        verdict = "up" if not health["problems"] and all(v["running"] for v in health["vms"].values()) \
            else "HALF TORN DOWN" if health["problems"] else "up (some VMs powered off)"
        try:
            lab = Lab.attach(n)
        except (LabError, TopologyError, OSError) as e:
            click.echo(f"lab {n}: {verdict}: {e}")
            for host, vm in health["vms"].items():
                click.echo(f"  {host:<15} {'running' if vm['running'] else 'OFF':<8} process group {vm['pgid']}")
        else:
            click.echo(f"lab {n} ({lab.topology.source}): {verdict}; namespace hal-{n}, work dir {lab.workdir}")
            if health["namespace"]:
                _print_status(lab)
        for p in health["problems"]:
            click.echo(f"  ! {p}")
        if health["problems"]:
            click.echo(f"  `hautils lab down {n}` removes what is left")
    for ns in orphans:
        click.echo(f"namespace {ns}: no lab record (a crashed run?); `hautils lab down --all` removes it")


@lab.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def lab_ssh(name: str, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND on HOST of lab NAME, or open an interactive shell there.

    Exit status: the command's; 2 for a lab or host that does not exist; 255 when the host
    cannot be reached (as ssh does), with the cause."""
    import paramiko

    from .lab import Lab, state

    try:
        lab = Lab.attach(name)
        h = lab[host]
    except (LabError, TopologyError) as e:
        _fail(e)
    if command:
        try:
            res = h.run(" ".join(command), check=False, timeout=None)
        except HostUnreachable as e:
            vm = state.health(name)["vms"].get(h.name, {})
            why = "its VM is not running (powered off? `hautils lab status`)" if not vm.get("running") else \
                "its VM runs but SSH does not answer (still booting, or sshd died: see its console " \
                f"{lab.workdir / (h.name + '.console.log')})"
            click.echo(f"error: {e}; {why}", err=True)
            sys.exit(255)
        except paramiko.BadHostKeyException as e:
            click.echo(f"error: host {h.name} ({h.address}) presented another host key than the one pinned in "
                       f"{lab.workdir / 'known_hosts'} ({e.key.get_name()}): the VM was rebuilt, or this is not it",
                       err=True)
            sys.exit(255)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        sys.exit(res.exit_status)
    # Interactive: the system ssh client, run inside the lab's namespace.
    args = ["ip", "netns", "exec", f"{state.NETNS_PREFIX}{name}", "ssh", "-i", str(lab.workdir / "id_ed25519"),
            "-o", f"UserKnownHostsFile={lab.workdir / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-o", f"HostKeyAlias={h.address}", f"root@{h.address}"]
    os.execvp(args[0], args)


@lab.command("inventory")
@click.argument("name")
def lab_inventory(name: str) -> None:
    """Print an Ansible inventory (YAML) of lab NAME's VMs, reached through the lab's namespace:
    for trying the own-machines backend and its playbook on the lab's own VMs.

    Example: `hautils lab inventory storage > storage.yml`, then
    `ansible -i storage.yml all -m ping` (as root)."""
    import yaml

    from .lab import Lab
    from .lab.inventory import from_lab

    try:
        lab = Lab.attach(name)
    except (LabError, TopologyError) as e:
        _fail(e)
    click.echo(f"# hautils lab inventory {name}: the {lab.topology.name} lab's VMs ({lab.topology.source})")
    click.echo(yaml.safe_dump(from_lab(lab), sort_keys=False, default_flow_style=False).rstrip())


@lab.command("playbook-vars")
@click.option("--write", is_flag=True, help="Write labs/ansible/hautils-vars.yml instead of printing it.")
def lab_playbook_vars(write: bool) -> None:
    """Print the provisioning playbook's variables (packages, kernel modules, services), generated
    from the lab image's lists so that the two never differ."""
    from .lab import provision

    text = provision.render_vars()
    if write:
        provision.VARS_FILE.parent.mkdir(parents=True, exist_ok=True)
        provision.VARS_FILE.write_text(text)
        click.echo(f"wrote {provision.VARS_FILE}")
    else:
        click.echo(text.rstrip())


@lab.command("provision", context_settings={"ignore_unknown_options": True})
@click.option("--inventory", "-i", "inventory", required=True, envvar="HAUTILS_INVENTORY",
              help="Your machines' Ansible inventory (default: $HAUTILS_INVENTORY).")
@click.option("--topology", "-t", help="Only the hosts this chapter's topology needs (checked against the inventory).")
@click.option("--print", "print_", is_flag=True, help="Print the ansible-playbook command instead of running it.")
@click.argument("ansible_args", nargs=-1, type=click.UNPROCESSED)
def lab_provision(inventory: str, topology: str | None, print_: bool, ansible_args: tuple[str, ...]) -> None:
    """Install what the chapters need on your own machines: runs labs/provision.yml with
    ansible-playbook (extra arguments after the options go to it, e.g. --check).

    Example: `hautils lab provision -i my-vms.yml -t storage --print`."""
    import subprocess

    from . import topology as _topology
    from .lab import provision

    try:
        topo = _topology.load(topology, check_memory=False) if topology else None
        exe = "ansible-playbook" if print_ and not os.environ.get("ANSIBLE_PLAYBOOK") else None
        cmd = provision.command(inventory, topo, exe=exe, extra=list(ansible_args))
    except (LabError, TopologyError) as e:
        _fail(e)
    if print_:
        click.echo(provision.shell(cmd))
        return
    click.echo(f"$ {provision.shell(cmd)}", err=True)
    sys.exit(subprocess.run(cmd).returncode)


@lab.command("down")
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Remove every lab, and leftovers of crashed runs.")
def lab_down(name: str | None, all_: bool) -> None:
    """Stop a lab's VMs and remove its namespace, taps, bridges and disks."""
    from .lab import require_root, state

    try:
        require_root()
    except LabError as e:
        _fail(e)
    if not name and not all_:
        _fail(LabError("name a lab or use --all"))
    t = time.monotonic()
    try:
        removed = state.cleanup_all() if all_ else state.cleanup(name)  # type: ignore[arg-type]
    except LabError as e:
        _fail(e)
    took = time.monotonic() - t
    for r in removed:
        click.echo(f"removed {r}")
    if not removed:
        click.echo("nothing to remove")
    else:
        click.echo(f"down in {took:.1f} s: no process, tap, bridge or namespace of it is left")


if __name__ == "__main__":
    main()
