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
