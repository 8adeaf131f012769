"""posix_ipc's failures reach netmcore's callers as OSErrors with an errno.

An OSError with none is what a signal handler's TimeoutError is: the loops
that repeat a step through handlers' exceptions held such a failure as an
interrupt and tried the step again, for ever if it failed every time. Before,
a posix_ipc.Error that none of netmcore's cases named became one, and so did
posix_ipc's own OSError for a process out of descriptors (not even the EMFILE
that says what to do).
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator

import posix_ipc
import pytest

from netmcore import _ipc

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def shm_name() -> Iterator[str]:
    """An shm object of the test's own, unlinked after."""
    name = f"/nmctest.{os.getpid()}.ipc-errors"
    posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=8).close_fd()
    try:
        yield name
    finally:
        _ipc.unlink(name)


def test_a_posix_ipc_error_of_no_known_cause_is_an_eio_that_keeps_its_message(
    shm_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(name: str) -> None:
        raise posix_ipc.Error("Unable to initialize object")

    monkeypatch.setattr(posix_ipc, "unlink_shared_memory", fails)
    with pytest.raises(OSError) as raised:
        _ipc.unlink(shm_name)
    assert raised.value.errno == errno.EIO
    assert raised.value.strerror == "Unable to initialize object"
    assert raised.value.filename == shm_name


def test_an_open_with_no_descriptor_left_is_the_emfile_that_says_what_to_do(
    shm_name: str,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # none free below it
    try:
        with pytest.raises(OSError) as raised:
            _ipc.map_writable(shm_name)  # its shm_open fails, before the mapping
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert raised.value.errno == errno.EMFILE
    assert raised.value.filename == shm_name
    assert str(raised.value.strerror).startswith("too many open files")
