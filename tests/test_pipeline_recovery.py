"""A pipeline run recovers: its bookkeeping of lost items does not grow for
ever, and its shutdown is not left half-way by a Ctrl-C.

- The driver counted each item lost with a dead worker, marked it to be sent
  alone, and noted each failed item (to pass over in input order), and never
  forgot any of them: on an endless input, these grew by one per worker death
  or item failure, for as long as the run lasted.
- A Ctrl-C (any signal handler's exception) in the driver as the run shut
  down ended the shutdown there: a worker it had not yet told to stop waited
  for work, and the run's mailboxes and shared memory stayed, for as long as
  the driver lived.

Each test here failed before its fix; the docstring of each says how.
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from scenario import outcome_text, own_shm_entries, run_scenario

import netmcore
from netmcore import _pipeline
from netmcore._mailbox import Mailbox

# --- the bookkeeping of lost and failed items -----------------------------------

ITEMS = 240


def crashes_always(k: int) -> bool:
    return k % 60 == 5


def crashes_once(k: int) -> bool:
    return k % 60 == 35


def refused(k: int) -> bool:
    return k % 40 == 13


@netmcore.process
def crash_on_some(job: tuple[str, int]) -> int:
    """End its worker (os._exit) on some items: every time, or the first time
    only (a flag file per item remembers)."""
    flags, k = job
    flag = Path(flags, str(k))
    if crashes_always(k) or (crashes_once(k) and not flag.exists()):
        flag.touch()
        os._exit(7)
    return k


@netmcore.process
def refuse_some(k: int) -> int:
    if refused(k):
        raise ValueError(f"refused {k}")
    return k


def bookkeeping(driver: Any) -> list[str]:
    """What the driver still keeps about items, as text (nothing, once the
    run is over)."""
    return [
        f"tries {sorted(driver._tries)}",
        f"suspects {sorted(driver._suspects)}",
        f"skipped {sorted(driver._skipped)}",
    ]


@netmcore.process
def lost_and_failed(job: tuple[str, bool]) -> list[Any]:
    flags, ordered = job
    pipeline = netmcore.Pipeline(crash_on_some, workers=2).then(refuse_some, workers=2)
    run = pipeline.run(((flags, k) for k in range(ITEMS)), ordered=ordered, on_error="skip")
    driver = run._results.gi_frame.f_locals["self"]  # type: ignore[attr-defined]
    results: list[int] = []
    kept: list[str] = []
    for result in run:
        results.append(result)
        # What it keeps is about items still in flight only: none delivered, none failed.
        done = {*results, *(f.index for f in run.failures)}
        kept.extend(
            f"item {index} of stage {stage}, done, is kept"
            for stage, index in {*driver._tries, *driver._suspects}
            if index in done
        )
        # A failed item is passed over in input order: kept only until the
        # results before it are out (and not at all as they complete).
        kept.extend(
            f"item {index}, done, is kept as skipped"
            for index in driver._skipped
            if not ordered or index < result
        )
    failures = sorted([f.index, f.stage, f.cause.split(" (")[0]] for f in run.failures)
    return [results, failures, kept[:10], bookkeeping(driver)]  # the first are enough


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "as-completed"])
def test_the_driver_keeps_nothing_about_items_it_is_done_with(
    tmp_path: Path, ordered: bool
) -> None:
    """Items end their worker (some every time, failing after their retry;
    some once, going through on their retry), others fail in the second stage.
    Before, every item lost with a worker stayed in the driver's tries and
    suspects, and, as they complete, every failed item in its skipped set:
    they grew for ever on an endless input."""
    results, failures, kept, left = run_scenario(lost_and_failed, (str(tmp_path), ordered))
    ok = [k for k in range(ITEMS) if not crashes_always(k) and not refused(k)]
    assert (results if ordered else sorted(results)) == ok
    assert failures == sorted(
        [[k, "crash_on_some", "its worker died"] for k in range(ITEMS) if crashes_always(k)]
        + [[k, "refuse_some", f"ValueError: refused {k}"] for k in range(ITEMS) if refused(k)]
    )
    # Each item that ends its worker did so (some twice: the bookkeeping was used).
    assert sorted(os.listdir(tmp_path)) == sorted(
        str(k) for k in range(ITEMS) if crashes_always(k) or crashes_once(k)
    )
    assert kept == []
    assert left == ["tries []", "suspects []", "skipped []"]


# --- a Ctrl-C as the run shuts down ----------------------------------------------


@netmcore.process
def ident(k: int) -> int:
    return k


@netmcore.process
def ctrl_c_at_shutdown(job: tuple[str, str]) -> list[Any]:
    """Drive a run whose shutdown gets a Ctrl-C as it sends its first Stop,
    and another at a later step (``second``): a numbered KeyboardInterrupt
    from SIGINT's handler, raised in this process (the driver). The hooks
    are set here, in the driver only."""
    leave, second = job
    count = [0]

    def ctrl_c(_signum: int, _frame: FrameType | None) -> None:
        count[0] += 1
        raise KeyboardInterrupt(f"Ctrl-C {count[0]}")

    signal.signal(signal.SIGINT, ctrl_c)
    started: list[netmcore.ProcessId[int]] = []
    real_start, real_stop = _pipeline.stage_worker.start, _pipeline._stop
    real_join, real_release = _pipeline.stage_worker.join_outcome, Mailbox.release

    def start(job: Any, **kwargs: Any) -> Any:
        pid = real_start(job, **kwargs)
        started.append(pid)
        return pid

    def stop(worker: Any) -> None:
        real_stop(worker)
        if count[0] == 0:
            signal.raise_signal(signal.SIGINT)  # its handler runs as this returns

    def join(pid: Any, **kwargs: Any) -> Any:
        if second == "join" and count[0] == 1:
            signal.raise_signal(signal.SIGINT)  # as the first join starts
        return real_join(pid, **kwargs)

    def release(box: Any) -> None:
        real_release(box)
        if second == "release" and count[0] == 1:
            signal.raise_signal(signal.SIGINT)  # as the first worker's box is released

    _pipeline.stage_worker.start = start  # type: ignore[method-assign,assignment]
    _pipeline._stop = stop
    _pipeline.stage_worker.join_outcome = join  # type: ignore[method-assign]
    Mailbox.release = release  # type: ignore[method-assign,assignment]
    before = own_shm_entries()
    results: list[int] = []
    got = "not interrupted"
    try:
        run = netmcore.Pipeline(ident, workers=2).then(ident, workers=2).run(range(50))
        if leave == "close":
            results.append(next(run))
            run.close()
        else:
            results.extend(run)
    except KeyboardInterrupt as exc:
        got = str(exc)
    return [
        got,
        count[0],
        results,
        len(started),
        # Each worker is stopped and joined by the shutdown: gone.
        [outcome_text(functools.partial(netmcore.kill, pid, 0)) for pid in started],
        sorted(own_shm_entries() - before),
    ]


@pytest.mark.parametrize("second", ["join", "release"])
@pytest.mark.parametrize("leave", ["end", "close"])
def test_a_ctrl_c_in_the_shutdown_stops_every_worker_and_releases_everything(
    leave: str, second: str
) -> None:
    """Before, the first Ctrl-C ended the shutdown: the other workers, never
    told to stop, waited for work while the driver lived, and its mailbox
    and the run's shared memory stayed. Now the shutdown goes on through
    both, and the first is raised once it is done."""
    got, count, results, started, ends, left = run_scenario(ctrl_c_at_shutdown, (leave, second))
    assert got == "Ctrl-C 1"
    assert count == 2  # the second came, and was held
    assert results == (list(range(50)) if leave == "end" else [0])
    assert started == 4
    assert all(end.startswith("UnknownProcess") for end in ends), ends
    assert left == []
