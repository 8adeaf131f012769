"""Shared fixtures: every test must leave no child process and no /dev/shm entry."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest

SHM_DIR = "/dev/shm"


def _shm_entries() -> set[str]:
    uid = os.getuid()
    found = set()
    for name in os.listdir(SHM_DIR):
        try:
            if os.stat(os.path.join(SHM_DIR, name)).st_uid == uid:
                found.add(name)
        except FileNotFoundError:
            pass
    return found


def _children() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if c.status() != "zombie"]


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fail a test that leaves a child process or a /dev/shm entry behind."""
    shm_before = _shm_entries()
    yield
    children = _children()
    for child in children:
        child.kill()
    psutil.wait_procs(children, timeout=5)
    # Leaked entries are reported, not unlinked: /dev/shm is machine-wide, and a
    # test run beside this one may own a new entry.
    leaked = _shm_entries() - shm_before
    assert not children, f"test left child processes behind: {children}"
    assert not leaked, f"test left /dev/shm entries behind: {sorted(leaked)}"
