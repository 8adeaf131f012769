"""What netmcore's at-fork hooks leave a forked child: none of its parent's
handles, tables, calls in progress or stamps, and free locks that another
thread held at the fork. The hooks are C calls, or registered only once
there is something to forget (so that the forks of a program that imports
netmcore copy fewer pages); these tests hold them to their effect."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest

from netmcore import ShmCondition, _buffer, _client, _pthread, _shared_array, _shm_sync


def in_forked_child(f: Callable[[], object]) -> str:
    """The repr of what ``f`` returns (or raises) in a forked child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            text = repr(f())
        except BaseException as exc:
            text = f"{type(exc).__name__}: {exc}"
        os.write(w, text.encode()[:4000])
        os._exit(0)
    os.close(w)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return os.read(r, 4096).decode()
    finally:
        os.close(r)


@pytest.fixture
def held_by_a_thread() -> Iterator[Callable[[object], None]]:
    """Have a thread take a lock and keep it until the test ends."""
    done = threading.Event()
    threads = []

    def hold(lock: object) -> None:
        taken = threading.Event()

        def run() -> None:
            with lock:  # type: ignore[attr-defined]
                taken.set()
                done.wait()

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        assert taken.wait(10)

    yield hold
    done.set()
    for thread in threads:
        thread.join()


@pytest.mark.parametrize(
    "lock", [lambda: _buffer._here_lock, lambda: _shm_sync._kept_lock], ids=["handles", "kept"]
)
def test_a_lock_another_thread_held_at_the_fork_is_free_in_the_child(
    lock: Callable[[], threading.RLock], held_by_a_thread: Callable[[object], None]
) -> None:
    held_by_a_thread(lock())
    assert in_forked_child(lambda: lock().acquire(timeout=2)) == "True"


def test_a_forked_child_has_none_of_its_parents_handles() -> None:
    mark = object()
    tables: list[dict[int, object]] = [
        _buffer._here,
        _shared_array._keep,
        _shared_array._used,
        _shared_array._read_only,
        _client._interrupted,  # (outcomes its joins got: see there)
    ]
    for table in tables:
        table[-1] = mark
    try:
        assert in_forked_child(lambda: [-1 in table for table in tables]) == str([False] * 5)
        assert all(table[-1] is mark for table in tables)  # the parent's are its own
    finally:
        for table in tables:
            del table[-1]


def test_a_forked_child_draws_stamps_of_its_own() -> None:
    """Two processes must never write the same stamp into a condition (see
    _shm_sync._stamps): a child that went on with its parent's count would."""
    cond = ShmCondition.create()
    try:

        def stamp() -> int:
            cond.broadcast()
            return int(cond._stamp[0])

        before = stamp()
        child = int(in_forked_child(stamp))
        after = stamp()
        assert after == before + 1  # the parent's count goes on
        assert child not in (before, after)
        # and the child's second stamp follows its first
        first, second = (
            int(x) for x in in_forked_child(lambda: (stamp(), stamp()))[1:-1].split(",")
        )
        assert second == first + 1
    finally:
        cond.release()


def test_the_calls_other_threads_had_in_progress_are_forgotten_in_a_child(
    held_by_a_thread: Callable[[object], None],
) -> None:
    use = _pthread.InUse(lambda: None)  # registers the hook, if no InUse did before
    assert use.enter()  # a call in progress, as another thread's at the fork
    held_by_a_thread(use._lock)
    try:
        assert in_forked_child(lambda: (use.calls, use._lock.acquire(timeout=2))) == "([], True)"
    finally:
        use.leave()


class _Kept:
    """Stands for a kept ShmMutex: the count of unlocks its holders owe."""

    _kept_unlocks = 3


def test_a_kept_mutexs_unlocks_of_other_threads_are_forgotten_in_a_child() -> None:
    kept = _Kept()
    with _shm_sync._kept_lock:
        _shm_sync._keep(kept)  # type: ignore[arg-type]  # registers the hook, if none was kept
    try:
        assert in_forked_child(lambda: kept._kept_unlocks) == "0"
        assert kept._kept_unlocks == 3
    finally:
        _shm_sync._kept.discard(kept)  # type: ignore[arg-type]
