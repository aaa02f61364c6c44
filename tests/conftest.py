"""Shared test setup: lab tests need root and User-Mode Linux.

Where they cannot run they are skipped, except when HAUTILS_REQUIRE_LAB=1
(set by .ci/run): then a missing prerequisite is a failure, so CI can never
pass by skipping the tests that boot real VMs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def lab_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root"
    if not Path("/usr/bin/linux").exists():
        return "lab tests need user-mode-linux (apt-get install user-mode-linux)"
    if not shutil.which("debootstrap"):
        return "lab tests need debootstrap"
    return None


def pytest_collection_modifyitems(config, items):
    why = lab_prerequisites()
    if why is None:
        return
    required = os.environ.get("HAUTILS_REQUIRE_LAB") == "1"
    for item in items:
        if "lab" in item.keywords:
            if required:
                item.add_marker(pytest.mark.xfail(reason=why, strict=True, run=False))
                raise pytest.UsageError(f"HAUTILS_REQUIRE_LAB=1 but {why}")
            item.add_marker(pytest.mark.skip(reason=why))
