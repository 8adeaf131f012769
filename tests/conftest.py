"""Shared fixtures: every test must leave no child process and no /dev/shm entry."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

import netmcore

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


def _owned_by_another_run(name: str) -> bool:
    """An entry named for a live process outside this test process's tree: a
    netmcore program or test run beside this one made it, not this test."""
    parts = name.removeprefix("sem.").split(".")
    # nmc.<pid>.*, as netmcore names them; the tests' own objects carry
    # their run's pid second or third (nmctest.<pid>.*, nmctest.<what>.<pid>.*).
    pids = [part for part in parts[1:3] if part.isdigit()]
    if not parts[0].startswith("nmc") or not pids:
        return False
    pid = int(pids[0])
    if pid == os.getpid() or not psutil.pid_exists(pid):
        return False  # ours, or its maker is dead: a leak either way
    try:
        return os.getpid() not in (p.pid for p in psutil.Process(pid).parents())
    except psutil.NoSuchProcess:
        return False


def _children() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if c.status() != "zombie"]


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fail a test that leaves a child process or a /dev/shm entry behind."""
    shm_before = _shm_entries()
    # Not the test's: a guard alive for an object of a module-scoped fixture.
    children_before = {c.pid for c in _children()}
    yield
    children = [c for c in _children() if c.pid not in children_before]
    for child in children:
        child.kill()
    psutil.wait_procs(children, timeout=5)
    # Leaked entries are reported, not unlinked: /dev/shm is machine-wide, and a
    # test run beside this one may own a new entry (it is not counted).
    leaked = {n for n in _shm_entries() - shm_before if not _owned_by_another_run(n)}
    assert not children, f"test left child processes behind: {children}"
    assert not leaked, f"test left /dev/shm entries behind: {sorted(leaked)}"


@pytest.fixture
def pipes() -> Iterator[Callable[[], tuple[int, int]]]:
    """Make pipes in the master (every worker inherits both ends); close them after."""
    made: list[int] = []

    def make() -> tuple[int, int]:
        r, w = os.pipe()
        made.extend((r, w))
        return r, w

    yield make
    for fd in made:
        os.close(fd)


@pytest.fixture
def gate(pipes: Callable[[], tuple[int, int]]) -> tuple[int, int]:
    """A pipe made in the master, so that every worker inherits both ends."""
    return pipes()


@pytest.fixture
def master_cleanup() -> Iterator[None]:
    """Whatever the test process (the master) still manages is destroyed after."""
    try:
        yield
    finally:
        netmcore.destroy_resources()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A fresh directory with a short path, so that socket paths in it stay
    well below the limit of a Unix socket's."""
    path = Path(tempfile.mkdtemp(prefix="nmt-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
