"""Missing prerequisites stop at once with the command that fixes them."""

from __future__ import annotations

import pytest

from hautils.errors import LabError
from hautils.lab import image, require_root, require_tools, uml


def test_missing_uml_names_the_install_command(monkeypatch):
    monkeypatch.setattr(uml, "UML_BINARY", "/nonexistent/linux")
    with pytest.raises(LabError, match=r"apt-get install user-mode-linux"):
        require_tools()


def test_missing_debootstrap_names_the_install_command(monkeypatch):
    monkeypatch.setattr(image.shutil, "which", lambda tool: None if tool == "debootstrap" else "/usr/bin/x")
    with pytest.raises(LabError, match=r"`debootstrap` not found: install it with `apt-get install debootstrap"):
        image.build(progress=False)


def test_non_root_is_refused(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        require_root()


def test_mirror_comes_from_apt_sources_or_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HAUTILS_APT_MIRROR", "http://mirror.invalid/debian/")
    assert image.apt_mirror() == "http://mirror.invalid/debian"
    monkeypatch.delenv("HAUTILS_APT_MIRROR")
    m = image.apt_mirror()  # from this machine's /etc/apt
    assert m.startswith("http") and not m.endswith("/")


def test_image_hash_changes_with_the_package_list(monkeypatch):
    h1 = image.image_hash()
    monkeypatch.setattr(image, "PACKAGES", [*image.PACKAGES, "cowsay"])
    assert image.image_hash() != h1


def test_uml_xstate_wrapper_builds_once_and_exports_ptrace(monkeypatch, tmp_path):
    """The ptrace wrapper bookworm's UML needs on AMX hosts is compiled once per source version."""
    import ctypes
    import subprocess

    monkeypatch.setenv("HAUTILS_CACHE", str(tmp_path))
    so = uml.xstate_preload()
    assert so.parent == tmp_path and so.name.startswith("uml-xstate-")
    mtime = so.stat().st_mtime_ns
    assert uml.xstate_preload() == so and so.stat().st_mtime_ns == mtime  # cached, not rebuilt
    syms = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout
    assert " T ptrace" in syms
    ctypes.CDLL(str(so))  # loads


def test_missing_gcc_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("HAUTILS_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcc on it
    with pytest.raises(LabError, match=r"apt-get install gcc libc6-dev"):
        uml.xstate_preload()
