"""Typed pipelines: stages of process types, run over inputs by worker processes."""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
import psutil
import pytest
from scenario import outcome_text

import netmcore
from netmcore import _pipeline


class Record(msgspec.Struct, frozen=True):
    key: str
    value: int


@netmcore.process
def parse(line: str) -> Record:
    key, value = line.split("=")
    return Record(key, int(value))


@netmcore.process
def score(record: Record) -> int:
    if record.value == 13:
        raise ValueError(f"unlucky {record.key}")
    return record.value * record.value


@netmcore.process
def label(n: int) -> str:
    return f"<{n}>"


@netmcore.process
def die_once(job: tuple[str, int, int]) -> int:
    """SIGKILL itself on item ``fatal``, the first time only (a flag file remembers)."""
    flag, k, fatal = job
    if k == fatal and not os.path.exists(flag):
        Path(flag).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return k


@netmcore.process
def die_always(k: int) -> int:
    if k == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return k


def lines(n: int) -> list[str]:
    return [f"k{i}={i}" for i in range(n)]


def drive(scenario: Any, arg: Any) -> Any:
    return netmcore.run(
        first_process=lambda: scenario.start(arg),
        extract_result=lambda _c, pid: scenario.join_outcome_nowait(pid),
    )


def value(outcome: Any) -> Any:
    assert isinstance(outcome, netmcore.Success), outcome
    return outcome.value


@netmcore.process
def three_stages(n: int) -> list[str]:
    pipeline = netmcore.Pipeline(parse, workers=2).then(score, workers=2).then(label)
    return list(pipeline.run(lines(n)))


def test_three_stages_in_input_order() -> None:
    assert value(drive(three_stages, 12)) == [f"<{i * i}>" for i in range(12)]


@netmcore.process
def as_completed(n: int) -> list[int]:
    run = netmcore.Pipeline(parse).then(score, workers=2).run(lines(n), ordered=False)
    return list(run)


def test_results_as_completed_are_all_there() -> None:
    got = value(drive(as_completed, 12))
    assert sorted(got) == [i * i for i in range(12)]


@netmcore.process
def stop_on_error(n: int) -> list[Any]:
    try:
        list(netmcore.Pipeline(parse).then(score, workers=2).run(lines(n)))
    except netmcore.PipelineError as exc:
        return [exc.index, exc.stage, exc.cause, str(exc)]
    return []


def test_stop_policy_raises_with_the_index_and_cause() -> None:
    index, stage, cause, text = value(drive(stop_on_error, 20))
    assert (index, stage, cause) == (13, "score", "ValueError: unlucky k13")
    assert text == "item 13 failed in stage score: ValueError: unlucky k13"


@netmcore.process
def skip_on_error(n: int) -> list[Any]:
    run = netmcore.Pipeline(parse).then(score, workers=2).run(lines(n), on_error="skip")
    return [list(run), [(f.index, f.stage, f.cause) for f in run.failures]]


def test_skip_policy_reports_and_leaves_the_item_out() -> None:
    results, failures = value(drive(skip_on_error, 20))
    assert results == [i * i for i in range(20) if i != 13]
    assert failures == [[13, "score", "ValueError: unlucky k13"]]


@netmcore.process
def early_stop(take: int) -> list[int]:
    # Values from 100 up: none is score's unlucky 13, however far the pipeline
    # reads ahead of the consumer (it may, within its bounded queues).
    endless = (f"k={i}" for i in itertools.count(100))
    run = netmcore.Pipeline(parse, workers=2).then(score).run(endless)
    taken = [x for _, x in zip(range(take), run, strict=False)]
    run.close()
    return taken


def test_consumer_that_stops_early_on_an_endless_input_shuts_down_cleanly() -> None:
    # The autouse fixture checks that no worker and no mailbox is left.
    assert value(drive(early_stop, 7)) == [i * i for i in range(100, 107)]


@netmcore.process
def killed_then_retried(flag: str) -> list[int]:
    return list(netmcore.Pipeline(die_once, workers=2).run((flag, k, 5) for k in range(10)))


def test_stage_worker_killed_its_item_is_retried_once(tmp_path: Path) -> None:
    assert value(drive(killed_then_retried, str(tmp_path / "flag"))) == list(range(10))


def _shm_entries() -> set[str]:
    """The run's entries in /dev/shm, named for its master (the parent of a
    worker that calls this): not those of a program run beside it."""
    run = f"nmc.{os.getppid()}."
    return {name for name in os.listdir("/dev/shm") if name.removeprefix("sem.").startswith(run)}


@netmcore.process
def pipelines_in_a_row(flag: str) -> list[list[str]]:
    """What each run leaves in /dev/shm while the driver (this process) lives on."""
    left = []
    for _ in range(2):
        before = _shm_entries()
        assert list(netmcore.Pipeline(parse, workers=2).then(score).run(lines(3))) == [0, 1, 4]
        left.append(sorted(_shm_entries() - before))
    before = _shm_entries()  # a worker killed and replaced: its box too
    assert list(netmcore.Pipeline(die_once, workers=2).run((flag, k, 5) for k in range(8))) == list(
        range(8)
    )
    left.append(sorted(_shm_entries() - before))
    return left


def test_a_run_releases_every_mailbox_while_its_driver_lives_on(tmp_path: Path) -> None:
    assert value(drive(pipelines_in_a_row, str(tmp_path / "flag"))) == [[], [], []]


@netmcore.process
def killed_every_time(policy: str) -> list[Any]:
    run = netmcore.Pipeline(die_always, workers=2).run(range(6), on_error=policy)  # type: ignore[arg-type]
    try:
        return [list(run), [(f.index, f.cause) for f in run.failures]]
    except netmcore.PipelineError as exc:
        return [exc.index, exc.cause]


def test_item_that_kills_every_worker_is_reported_never_lost() -> None:
    results, failures = value(drive(killed_every_time, "skip"))
    assert results == [0, 1, 2, 4, 5]
    assert len(failures) == 1
    assert failures[0][0] == 3
    assert failures[0][1] == "its worker died (killed by SIGKILL)"
    index, cause = value(drive(killed_every_time, "stop"))
    assert (index, cause) == (3, "its worker died (killed by SIGKILL)")


@netmcore.process
def kill_on_7(k: int) -> int:
    if k == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    return k


@netmcore.process
def died_on_7(policy: str) -> list[Any]:
    run = netmcore.Pipeline(kill_on_7).run(range(8), on_error=policy, retries=0)  # type: ignore[arg-type]
    try:
        return [list(run), [(f.index, f.cause) for f in run.failures]]
    except netmcore.PipelineError as exc:
        return [None, [(exc.index, exc.cause)]]


DIED = "its worker died (killed by SIGKILL)"
LOST_ON_7 = f"its result was lost: {DIED} on item 7, after it had run this item"


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_an_item_whose_result_died_with_its_worker_names_the_item_it_died_on(
    monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    """With retries=0 the items that ran before item 7 in its batch (4-7)
    fail with it: their results were not sent. They used to get item 7's
    cause, and "stop" reported item 4 as if it had killed its worker."""
    four_a_message_eight_a_worker(monkeypatch)
    results, failures = value(drive(died_on_7, policy))
    if policy == "skip":
        assert failures == [[4, LOST_ON_7], [5, LOST_ON_7], [6, LOST_ON_7], [7, DIED]]
        assert results == [0, 1, 2, 3]
    else:
        assert (results, failures) == (None, [[4, LOST_ON_7]])


class Cancelled(BaseException):
    """Not an Exception, as asyncio.CancelledError."""


@netmcore.process
def cancel_on_3(k: int) -> int:
    if k == 3:
        raise Cancelled("item 3")
    return k


@netmcore.process
def cancelled_on_3(_: int) -> list[Any]:
    run = netmcore.Pipeline(cancel_on_3, workers=2).run(range(6), on_error="skip", retries=0)
    return [list(run), [(f.index, f.cause) for f in run.failures]]


def test_a_base_exception_out_of_a_stage_function_fails_its_item_only() -> None:
    """Not the worker's failure: it goes on with the next items."""
    results, failures = value(drive(cancelled_on_3, 0))
    assert failures == [[3, f"{__name__}.Cancelled: item 3"]]
    assert results == [0, 1, 2, 4, 5]


@netmcore.process
def post_then_die_on_8(job: tuple[netmcore.ResId, int]) -> int:
    res_id, k = job
    if k == 8:
        netmcore.open_sem(res_id).post()
        os.kill(os.getpid(), signal.SIGKILL)
    return k


@netmcore.process
def away_as_it_dies(_: int) -> list[Any]:
    """The caller takes item 0's result, then is away (it takes no more)
    until the worker has died on item 8, having sent items 1-7's results."""
    with netmcore.create_sem(0) as dying:
        items = ((dying.res_id, k) for k in range(12))
        # item_timeout: one item a message, each answered as it is done
        run = netmcore.Pipeline(post_then_die_on_8).run(
            items, on_error="skip", retries=0, item_timeout=600
        )
        results = iter(run)
        got = [next(results)]
        assert dying.wait(timeout=60)  # a guard against a hang
        got += results
        return [got, [(f.index, f.cause) for f in run.failures]]


def test_results_a_worker_sent_before_it_died_are_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Items 1-7 were answered, their results still unread, as the worker
    was found dead (at once: LOOK_AGAIN 0): they were charged as begun,
    and with retries=0 they failed with it, their results thrown away."""
    monkeypatch.setattr(_pipeline, "LOOK_AGAIN", 0.0)
    got, failures = value(drive(away_as_it_dies, 0))
    assert failures == [[8, DIED]]
    assert got == [k for k in range(12) if k != 8]


@netmcore.process
def die_counted(job: tuple[str, int, int]) -> int:
    """SIGKILL itself on item ``fatal``, every time; a file lists every item run."""
    runs, k, fatal = job
    with open(runs, "a") as f:
        f.write(f"{k} ")
    if k == fatal:
        os.kill(os.getpid(), signal.SIGKILL)
    return k


@netmcore.process
def killed_with_retries(job: tuple[str, int]) -> list[Any]:
    runs, retries = job
    items = ((runs, k, 3) for k in range(6))
    run = netmcore.Pipeline(die_counted).run(items, on_error="skip", retries=retries)
    results = list(run)
    return [results, [f.index for f in run.failures], Path(runs).read_text().split()]


@pytest.mark.parametrize("retries", [0, 1, 2])
def test_retries_is_how_often_an_item_is_given_to_a_fresh_worker_after_its_worker_died(
    tmp_path: Path, retries: int
) -> None:
    """Item 3 kills its worker ``retries + 1`` times, then fails. A worker's
    death charges every item of the batch it was on (which items travel with
    item 3 depends on the batch sizes, which depend on measured times): with
    retries=0 no item runs twice, so they all fail with it; with retries, they
    are each sent alone, and only item 3 fails."""
    results, failed, runs = value(drive(killed_with_retries, (str(tmp_path / "k"), retries)))
    assert runs.count("3") == retries + 1
    if retries == 0:
        assert 3 in failed
        assert sorted(results + failed) == [0, 1, 2, 3, 4, 5]
        assert sorted(runs) == sorted(set(runs)), f"an item ran twice: {runs}"
    else:
        assert (results, failed) == ([0, 1, 2, 4, 5], [3])


@netmcore.process
def hang_on_3(job: tuple[str, int]) -> int:
    """Hang on item 3, every time; a file counts the hangs."""
    hangs, k = job
    if k == 3:
        with open(hangs, "a") as f:
            f.write("x")
        hang()
    return k


@netmcore.process
def timed_out(job: tuple[str, str]) -> list[Any]:
    hangs, policy = job
    items = ((hangs, k) for k in range(6))
    run = netmcore.Pipeline(hang_on_3, workers=2).run(
        items,
        on_error=policy,  # type: ignore[arg-type]
        item_timeout=2.0,  # every other item is done far sooner, however busy the machine
    )
    try:
        return [list(run), [(f.index, f.stage, f.cause) for f in run.failures]]
    except netmcore.PipelineError as exc:
        return [exc.index, exc.cause]


TIMED_OUT = "it ran over item_timeout=2.0 s, and its worker was killed"


def test_item_timeout_kills_the_worker_retries_the_item_then_fails_it(tmp_path: Path) -> None:
    """Item 3 never ends: its worker is killed, the item is given to a fresh
    worker once (retries=1), then fails; the other items all come through."""
    results, failures = value(drive(timed_out, (str(tmp_path / "h"), "skip")))
    assert results == [0, 1, 2, 4, 5]
    assert failures == [[3, "hang_on_3", TIMED_OUT]]
    assert (tmp_path / "h").read_text() == "xx"
    index, cause = value(drive(timed_out, (str(tmp_path / "h2"), "stop")))
    assert (index, cause) == (3, TIMED_OUT)


@netmcore.process
def hundredth_second(k: int) -> int:
    time.sleep(0.01)  # the work an item takes, not a wait for anything
    return k


@netmcore.process
def queued_time_not_counted(_: int) -> list[Any]:
    """One worker runs 150 items (1.5 s of work), each queued in it behind the
    one before (it holds two at a time, as items under LONE_SECONDS): only the
    time spent on each item (a hundredth of the limit) counts against the
    limit (with retries=0, an item whose worker were killed would fail)."""
    items = range(150)
    run = netmcore.Pipeline(hundredth_second).run(items, item_timeout=1.0, retries=0)
    return [list(run), run.failures]


def test_item_timeout_counts_the_time_on_each_item_not_in_the_queue() -> None:
    assert value(drive(queued_time_not_counted, 0)) == [list(range(150)), []]


@pytest.mark.parametrize(
    ("limit", "error", "message"),
    [
        # Each names item_timeout and its own rule (they said "timeout", and -1
        # was told to be "0 or more", which 0 is not).
        (0, ValueError, "item_timeout=0 is not valid: give a number of seconds above 0"),
        (-1.0, ValueError, "item_timeout=-1.0 is not valid: give a number of seconds above 0"),
        (float("nan"), ValueError, "item_timeout=nan is not valid: give a number of seconds"),
        ("1", TypeError, "item_timeout='1' is not valid: give a number of seconds above 0"),
        (True, TypeError, "item_timeout=True is not valid: give a number of seconds above 0"),
    ],
)
def test_item_timeout_is_checked_where_run_is_called(
    limit: Any, error: type[Exception], message: str
) -> None:
    # As every timeout, at once; and above 0 (a limit of 0 would fail every item).
    with pytest.raises(error, match=re.escape(message)):
        netmcore.Pipeline(label).run([], item_timeout=limit)


@netmcore.process
def no_limit(_: int) -> list[str]:
    return list(netmcore.Pipeline(label).run([1, 2], item_timeout=math.inf))


def test_an_item_timeout_of_inf_is_no_limit() -> None:
    assert value(drive(no_limit, 0)) == ["<1>", "<2>"]


@netmcore.process
def left_with_block(_: int) -> list[Any]:
    with netmcore.Pipeline(stuck_on_1, workers=2).run(range(20), queue_size=1) as run:
        first = next(run)
    try:
        next(run)
    except StopIteration:
        return [first, "closed"]
    return [first, "still running"]


def test_leaving_a_with_block_over_a_run_shuts_it_down() -> None:
    # A worker stuck on item 1 is killed (the fixture checks no worker is left).
    assert value(drive(left_with_block, 0)) == [0, "closed"]


@netmcore.process
def bad_input(_: int) -> str:
    try:
        list(netmcore.Pipeline(parse).run(["k1=1", 2]))  # type: ignore[list-item]
    except netmcore.ArgumentTypeError as exc:
        return str(exc)
    return ""


def test_an_input_of_the_wrong_type_is_refused_with_its_index() -> None:
    assert value(drive(bad_input, 0)).startswith("pipeline item 1: the value 2 does not match str")


@pytest.mark.parametrize(
    ("retries", "error"), [(-1, ValueError), ("1", TypeError), (1.5, TypeError)]
)
def test_retries_is_checked_where_run_is_called(retries: Any, error: type[Exception]) -> None:
    # Like queue_size and item_size: at once, not when a worker dies.
    with pytest.raises(error, match=f"retries={retries!r} is not valid: it must be an int"):
        netmcore.Pipeline(label).run([], retries=retries)


def test_stages_that_do_not_fit_are_refused_at_once() -> None:
    with pytest.raises(TypeError, match="stage label takes int, but the stage before it, parse"):
        netmcore.Pipeline(parse).then(label)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers=0 is not valid"):
        netmcore.Pipeline(parse, workers=0)
    with pytest.raises(ValueError, match="on_error='ignore' is not valid"):
        netmcore.Pipeline(parse).run([], on_error="ignore")  # type: ignore[arg-type]


NonNeg = Annotated[int, msgspec.Meta(ge=0)]


@netmcore.process
def distance(k: int) -> NonNeg:
    return abs(k)


@netmcore.process
def needs_non_negative(k: NonNeg) -> int:
    return k


@netmcore.process
def when(at: datetime) -> int:
    return at.year


@netmcore.process
def constraints_between_stages(_: int) -> list[Any]:
    # mypy takes Annotated[int, ...] for int: so does then(), both ways; the
    # next stage validates each item as it decodes it.
    loose = netmcore.Pipeline(distance).then(label)
    strict = netmcore.Pipeline(label_length).then(needs_non_negative)
    try:
        list(strict.run([1, -5]))
    except netmcore.PipelineError as exc:
        refused = [exc.index, exc.stage, exc.cause]
    return [list(loose.run([-3, 4])), refused]


def test_then_takes_stages_that_differ_only_in_annotated_constraints() -> None:
    got = value(drive(constraints_between_stages, 0))
    refused = [
        1,
        needs_non_negative.__qualname__,
        "netmcore.ArgumentTypeError: value does not match Annotated[int, msgspec.Meta(ge=0)]: "
        "Expected `int` >= 0",
    ]
    assert got == [["<3>", "<4>"], refused]


def test_then_refuses_a_str_stage_before_a_datetime_stage() -> None:
    # Both have the JSON Schema {"type": "string"}; they used to pass for one type.
    with pytest.raises(TypeError, match=r"stage when takes datetime\.datetime, but the stage"):
        netmcore.Pipeline(label).then(when)  # type: ignore[arg-type]


@netmcore.process
def nested(_: int) -> list[int]:
    """A stage worker is a netmcore process: it can start processes itself."""
    return list(netmcore.Pipeline(fan_in_stage).run([1, 2, 3]))


@netmcore.process
def fan_in_stage(k: int) -> int:
    return label_length.join(label_length.start(k)) or -1


@netmcore.process
def label_length(k: int) -> int:
    return len(str(k)) + k


def test_stage_workers_are_netmcore_processes() -> None:
    assert value(drive(nested, 0)) == [2, 3, 4]


PROGRESS_SCRIPT = """
import os
import signal
import sys
import netmcore

@netmcore.process
def double(k: int) -> int:
    if k == 5 and sys.argv[1] == "retried" and not os.path.exists(sys.argv[2]):
        open(sys.argv[2], "w").close()  # killed once, on item 5: it is given again
        os.kill(os.getpid(), signal.SIGKILL)
    if k == 5 and sys.argv[1] == "failed":  # killed each time: item 5 fails
        os.kill(os.getpid(), signal.SIGKILL)
    return 2 * k

@netmcore.process
def first(show: bool) -> int:
    pipeline = netmcore.Pipeline(double, workers=2).then(double)
    run = pipeline.run(range(50), progress=show or None, on_error="skip")
    return sum(run)

show = sys.argv[1] != "off"
print(netmcore.run(first_process=lambda: first.start(show),
                   extract_result=lambda c, pid: first.join_nowait(pid)))
"""


@pytest.mark.parametrize("mode", ["on", "off", "retried", "failed"])
def test_progress_bars_per_stage_only_when_asked_or_on_a_terminal(
    tmp_path: Path, mode: str
) -> None:
    """A bar counts each item once, also one given again to another worker
    (a worker killed on item 5: its items came back, and their second
    sending counted again: 50/52), and one that failed with its worker
    (counted out of its stage, and out of the later stages' totals)."""
    script = tmp_path / "progress.py"
    script.write_text(PROGRESS_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), mode, str(tmp_path / "flag")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(4 * (sum(range(50)) - (5 if mode == "failed" else 0)))
    if mode == "off":  # by default, off when stderr is not a terminal
        assert proc.stderr == ""
        return
    # One bar per stage: its name, workers, items out of in, rate.
    assert "double x2" in proc.stderr
    assert "double x1" in proc.stderr
    assert "item/s" in proc.stderr
    totals = {int(total) for total in re.findall(r"\d+/(\d+) \[", proc.stderr)}
    assert max(totals) == 50, proc.stderr
    assert "50/50" in proc.stderr
    # The second stage's total: the input's length, less the item that failed before it.
    last = [f for f in re.split(r"[\r\n]", proc.stderr) if f.startswith("double x1")][-1]
    assert ("49/49" if mode == "failed" else "50/50") in last, last
    assert (mode == "retried") == (tmp_path / "flag").exists()


PACED_BARS_SCRIPT = """
import sys
import time
import netmcore

@netmcore.process
def inc(k: int) -> int:
    return k + 1

@netmcore.process
def first(count: int) -> float:
    t0 = time.monotonic()
    items = range(count) if sys.argv[1] == "sized" else (k for k in range(count))
    assert sum(netmcore.Pipeline(inc).then(inc).run(items, progress=True)) > 0
    return time.monotonic() - t0

print(netmcore.run(first_process=lambda: first.start(int(sys.argv[2])),
                   extract_result=lambda c, pid: first.result(pid, timeout=0)))
"""


@pytest.mark.parametrize("source", ["sized", "generator"])
def test_progress_bars_show_a_sized_inputs_length_and_redraw_at_tqdms_pace(
    tmp_path: Path, source: str
) -> None:
    """With a range, every frame of every bar has the input's length as its
    total (it grew with the items read, showing ~100% and no time left); a
    generator's bars count the items read. Each bar draws at most once per
    tqdm's mininterval (0.1 s) while it runs, besides its first and last
    frames: it drew once per batch, hundreds of times a second."""
    script = tmp_path / "bars.py"
    script.write_text(PACED_BARS_SCRIPT)
    count = 30_000  # ~1 s: some frames in between
    proc = subprocess.run(
        [sys.executable, str(script), source, str(count)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    seconds = float(proc.stdout)
    frames = [f for f in re.split(r"[\r\n]", proc.stderr) if f.startswith("inc x1")]
    assert len(frames) >= 4, proc.stderr  # two bars: a first frame and a last one each
    totals = [int(t) for f in frames for t in re.findall(r"\d+/(\d+) \[", f)]
    if source == "sized":
        assert set(totals) == {count}, set(totals)
        assert all("<" in f for f in frames)  # the time left, after the elapsed time
    else:
        assert max(totals) == count and min(totals, default=count) < count
    assert f"{count}/{count}" in frames[-1]
    assert len(frames) <= 2 * (seconds / 0.1 + 3), (len(frames), seconds)


def run_script(tmp_path: Path, source: str, deadline: float) -> str:
    """Run a Python program, return its output; on a hang, SIGKILL it and its
    workers (its watchdog removes its /dev/shm objects) and fail."""
    script = tmp_path / "scenario.py"
    script.write_text(source)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        out, err = proc.communicate()
        psutil.wait_procs(descendants, timeout=10)
        pytest.fail(f"{script.name} hung for {deadline} s\nstdout: {out}\nstderr: {err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return out.strip()


# --- leaving the loop early stops the pipeline at once ---------------------------


class Watched:
    """An input that records when the pipeline lets go of it: only after its
    shutdown, when every worker has stopped."""

    def __init__(self) -> None:
        self.released = False

    def __iter__(self) -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            self.released = True


@netmcore.process
def leave_by_break(_: int) -> list[Any]:
    items = Watched()
    for first in netmcore.Pipeline(label, workers=2).run(items):  # noqa: B007
        break
    released = items.released
    gc.collect()  # if the run was not closed: its stage workers stop, so the run can end
    return [first, released]


def test_break_out_of_a_pipeline_loop_stops_its_workers_and_run_returns() -> None:
    """``break`` out of ``for x in pipeline.run(...)`` shuts the pipeline down
    then and there: the run object is in no reference cycle."""
    assert value(drive(leave_by_break, 0)) == ["<0>", True]


@netmcore.process
def leave_by_exception(_: int) -> list[Any]:
    items = Watched()
    try:
        for x in netmcore.Pipeline(label, workers=2).run(items):
            raise KeyError(x)
    except KeyError as exc:
        released = items.released
        gc.collect()  # as in leave_by_break
        return [str(exc), released]
    return []


def test_exception_in_the_loop_body_stops_the_pipeline_and_run_returns() -> None:
    """An exception out of the loop body shuts the pipeline down before the
    handler runs."""
    assert value(drive(leave_by_exception, 0)) == ["'<0>'", True]


# --- shutdown does not wait for queued work, nor for a stuck item ----------------


def hang() -> None:
    """Wait for ever: only a kill ends it (a test that waited for it would
    hang, and the per-test timeout would fail it)."""
    threading.Event().wait()


@netmcore.process
def stuck_on_1(k: int) -> int:
    if k == 1:
        hang()
    if k == 10:
        raise ValueError("ten")
    return k


@netmcore.process
def close_while_stuck(_: int) -> list[Any]:
    run = netmcore.Pipeline(stuck_on_1, workers=2).run(range(20), ordered=False, queue_size=1)
    got = [next(run) for _ in range(3)]
    run.close()
    return got


def test_close_does_not_wait_for_a_stage_stuck_on_an_item() -> None:
    """close() stops the workers at once; one stuck on an item is killed
    after a short grace."""
    assert value(drive(close_while_stuck, 0)) == [0, 2, 3]


@netmcore.process
def stop_while_stuck(_: int) -> list[Any]:
    try:
        run = netmcore.Pipeline(stuck_on_1, workers=2)
        list(run.run(range(20), ordered=False, queue_size=1))
    except netmcore.PipelineError as exc:
        return [exc.index, exc.cause]
    return []


def test_stop_policy_raises_while_another_stage_worker_is_stuck() -> None:
    """Item 10 fails: the PipelineError reaches the caller at once, while the
    other worker is stuck on item 1 (it is killed)."""
    assert value(drive(stop_while_stuck, 0)) == [10, "ValueError: ten"]


# --- memory stays flat on an endless input ---------------------------------------


@netmcore.process
def slow_head(k: int) -> int:
    if k == 0:
        time.sleep(0.5)
    return k


@netmcore.process
def slow_stage(k: int) -> int:
    time.sleep(0.02)
    return k


class Counted:
    """An endless input that counts what the pipeline has read of it."""

    def __init__(self) -> None:
        self.read = 0

    def __iter__(self) -> Iterator[int]:
        for i in itertools.count():
            self.read = i + 1
            yield i


@netmcore.process
def read_ahead_ordered(_: int) -> list[int]:
    items = Counted()
    run = netmcore.Pipeline(slow_head, workers=2).run(items, queue_size=4)
    first = next(run)
    read = items.read
    run.close()
    return [first, read]


def test_ordered_results_waiting_for_a_slow_item_do_not_read_the_input_without_bound() -> None:
    """While item 0 runs, the pipeline holds at most as many items as its
    workers may (2 x 4), and as many results held back for the input order;
    once it is done, those results are all handed out, and the workers are
    given as many items again (2 x 4) before the first of them is."""
    first, read = value(drive(read_ahead_ordered, 0))
    assert first == 0
    assert read <= 3 * (2 * 4), f"{read} items read for 1 result"


@netmcore.process
def read_ahead_between_stages(_: int) -> list[int]:
    items = Counted()
    run = netmcore.Pipeline(label_length).then(slow_stage).run(items, ordered=False, queue_size=4)
    got = [x for _, x in zip(range(20), run, strict=False)]
    read = items.read
    run.close()
    return [len(got), read]


def test_a_slow_later_stage_does_not_let_the_input_be_read_without_bound() -> None:
    """Results waiting for a busy later stage count too: 20 results out, at
    most 1 x 4 + 1 x 4 items in the pipeline."""
    got, read = value(drive(read_ahead_between_stages, 0))
    assert got == 20
    assert read <= 20 + 2 * 4, f"{read} items read for {got} results"


# --- errors that name the value, the rule and the fix ----------------------------


@netmcore.process
def long_message(k: int) -> int:
    if k == 3:
        raise ValueError("x" * 200_000)
    return k


@netmcore.process
def stage_error_kept(_: int) -> list[Any]:
    run = netmcore.Pipeline(long_message, workers=2).run(range(6), on_error="skip")
    return [list(run), [(f.index, f.cause[:14], "characters cut" in f.cause) for f in run.failures]]


def test_a_stage_exception_with_a_long_message_is_reported_as_that_exception() -> None:
    """The message is clipped (its head and tail kept), not the worker's death."""
    results, failures = value(drive(stage_error_kept, 0))
    assert results == [0, 1, 2, 4, 5]
    assert failures == [[3, "ValueError: xx", True]]


@netmcore.process
def big_result(k: int) -> bytes:
    return b"y" * 100_000


@netmcore.process
def result_over_item_size(_: int) -> list[Any]:
    run = netmcore.Pipeline(big_result).run(range(2), on_error="skip")
    return [list(run), [(f.index, f.cause) for f in run.failures]]


def test_a_result_over_item_size_is_a_clear_failure_not_a_worker_death() -> None:
    results, failures = value(drive(result_over_item_size, 0))
    cause = (
        "its result is 100005 bytes encoded, more than item_size=4096: "
        "give run() a larger item_size"
    )
    assert results == []
    assert failures == [[0, cause], [1, cause]]


@netmcore.process
def length(data: bytes) -> int:
    return len(data)


@netmcore.process
def item_over_item_size(_: int) -> str:
    try:
        list(netmcore.Pipeline(length).run([b"z" * 10, b"z" * 5000]))
    except ValueError as exc:
        return str(exc)
    return ""


def test_an_input_item_over_item_size_is_refused_naming_item_size() -> None:
    assert value(drive(item_over_item_size, 0)) == (
        "pipeline item 1 is 5003 bytes encoded, more than item_size=4096: "
        "give run() a larger item_size"
    )


MASTER_SCRIPT = """
import netmcore

@netmcore.process
def ident(k: int) -> int:
    return k

def first_process():
    try:
        netmcore.Pipeline(ident).run([1, 2])
    except netmcore.ContextError as exc:
        print(exc)
    return ident.start(0)

netmcore.run(first_process=first_process, extract_result=lambda c, pid: ident.join_nowait(pid))
"""


def test_pipeline_run_in_the_master_raises_context_error_instead_of_hanging(
    tmp_path: Path,
) -> None:
    """The master's loop, which serves the stage workers, does not run while
    first_process does: run() says where to call it instead."""
    assert run_script(tmp_path, MASTER_SCRIPT, deadline=10) == (
        "Pipeline.run() was called in the master: run pipelines in a netmcore worker "
        "process, e.g. in the first process that run() starts (the master serves the "
        "stage workers only once first_process has returned)"
    )


def test_pipeline_run_outside_run_says_where_to_call_it() -> None:
    # It said "was called in none context".
    with pytest.raises(netmcore.ContextError) as info:
        netmcore.Pipeline(label).run([1])
    assert str(info.value).startswith(
        "Pipeline.run() was called outside netmcore.run()/startup(): run pipelines in "
        "a netmcore worker process, e.g. in the first process that run() starts"
    )


# --- a driver that dies in its iteration -------------------------------------


@netmcore.process
def dies_while_driving(n: int) -> int:
    for i, _ in enumerate(netmcore.Pipeline(label_length, workers=2).run(range(n))):
        if i == 10:
            os._exit(3)  # in the middle of the iteration: it never shuts the pipeline down
    return 0


@netmcore.process
def driver_dies(_: int) -> Any:
    outcome = dies_while_driving.join_outcome(dies_while_driving.start(100_000))
    return [type(outcome).__name__, getattr(outcome, "exitcode", None)]


def test_stage_workers_stop_when_their_driver_dies() -> None:
    """The stage workers see that the driver has ended and stop: run() returns
    (they waited for ever, and so did run), and none is left (the fixture)."""
    assert value(drive(driver_dies, 0)) == ["Crashed", 3]


# --- a stage worker that dies right after its Ready --------------------------


def released(flag: Path) -> None:
    """Wait until the worker that wrote ``flag`` has died and the master has
    taken its mailbox back (its /dev/shm object is gone)."""
    deadline = time.monotonic() + 30
    while not flag.exists() or os.path.exists("/dev/shm" + flag.read_text()):
        assert time.monotonic() < deadline, "the stage worker's mailbox was never taken back"
        time.sleep(0.01)  # a poll of the condition, not a wait standing in for it


class Interrupted(Exception):
    pass


@netmcore.process
def died_after_ready(n: int) -> Any:
    try:
        return list(netmcore.Pipeline(label).run(range(n)))
    except Interrupted:
        return "interrupted"


@pytest.mark.parametrize("found_dead", [False, True], ids=["", "found-dead"])
@pytest.mark.parametrize("interrupted", [False, True], ids=["read-in-flow", "read-at-shutdown"])
def test_a_worker_that_dies_right_after_its_ready_is_treated_as_any_dead_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, found_dead: bool, interrupted: bool
) -> None:
    """The only stage worker sends Ready, then SIGKILLs itself; the driver,
    busy elsewhere, reads that Ready only once the master has taken the
    worker's mailbox back: while it runs (then the worker is replaced, and
    every result comes through), or at its shutdown (after an exception, here
    one in the driver: it is the one the caller gets). With ``found_dead``,
    the driver has found the worker dead before it reads the Ready (it then
    reads it, and buries the worker), as after a wait for messages that
    timed out just before it.

    The hooks are set in this process, the master, before the run: every
    process of the run (the driver, the stage workers) is a fork of it."""
    flag = tmp_path / "box"
    next_order, receive = _pipeline._next_order, _pipeline._Driver._receive

    def die_after_ready(inbox: Any, driver: Any) -> Any:
        if not flag.exists():  # the first worker, right after its Ready
            (tmp_path / "tmp").write_text(netmcore.get_shm(inbox.res_id))
            (tmp_path / "tmp").rename(flag)  # whole, for the driver to read
            os.kill(os.getpid(), signal.SIGKILL)
        return next_order(inbox, driver)

    first = [True]  # in the driver: before it reads any message

    def read_late(self: Any) -> Any:
        if first[0]:
            first[0] = False
            released(flag)  # its Ready is in the driver's box, unread
            if found_dead:
                self._check_workers()
                assert self._workers[0].dead is not None, "the dead worker was not found dead"
            if interrupted:
                raise Interrupted
        return receive(self)

    monkeypatch.setattr(_pipeline, "_next_order", die_after_ready)
    monkeypatch.setattr(_pipeline._Driver, "_receive", read_late)
    got = value(drive(died_after_ready, 5))
    assert got == ("interrupted" if interrupted else [f"<{i}>" for i in range(5)])
    assert flag.exists()  # the first worker did die


# --- ordered, "stop": the results before the failing item come first ------------


class Job(msgspec.Struct, frozen=True):
    flag: str
    k: int
    fails: tuple[int, ...]  # the items that fail in the second stage


def wait_for(path: str) -> None:
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never came")
        time.sleep(0.01)  # a poll of the condition, not a wait standing in for it


@netmcore.process
def held_back(job: Job) -> Job:
    """Items 0 and 3 on stay in the first stage until item 2 fails in the second."""
    if job.k == 0 or job.k >= 3:
        wait_for(job.flag)
    return job


@netmcore.process
def fail_some(job: Job) -> int:
    if job.k == 2:
        Path(job.flag).touch()
    if job.k in job.fails:
        raise ValueError(f"bad {job.k}")
    return job.k


class CountedJobs:
    """Endless jobs; counts what the pipeline has read of them."""

    def __init__(self, flag: str, fails: tuple[int, ...]) -> None:
        self.flag, self.fails, self.read = flag, fails, 0

    def __iter__(self) -> Iterator[Job]:
        for k in itertools.count():
            self.read = k + 1
            yield Job(self.flag, k, self.fails)


@netmcore.process
def ordered_stop(job: Job) -> list[Any]:
    items = CountedJobs(job.flag, job.fails)
    run = netmcore.Pipeline(held_back, workers=2).then(fail_some).run(items, queue_size=1)
    got = []
    try:
        for x in run:
            got.append(x)
    except netmcore.PipelineError as exc:
        return [got, exc.index, exc.cause, items.read]
    return [got, None, None, items.read]


@pytest.mark.parametrize(
    ("fails", "results", "index"),
    [((2,), [0, 1], 2), ((0, 2), [], 0)],
)
def test_ordered_stop_yields_the_results_before_the_failing_item_first(
    tmp_path: Path, fails: tuple[int, ...], results: list[int], index: int
) -> None:
    """As Executor.map. With queue_size=1, item 0 holds one worker of the
    first stage until item 2 fails in the second; item 1 has gone through
    by then. The second stage's only worker holds one item at a time, so item
    0 reaches it only once the driver has read item 2's failure: the results
    before item 2 are yielded (1 at once, 0 when it comes), then PipelineError
    for item 2 (or for item 0, which fails too in the second case: the first
    failing item in input order). The pipeline (3 workers of 1 item) read
    item 3 for the first stage's free worker before item 2 reached the
    second (item 1's result, held back, does not count), and holds 3 items
    (0, 2, 3) until item 2 fails; it reads no more after that."""
    job = Job(str(tmp_path / "flag"), 0, fails)
    got = value(drive(ordered_stop, job))
    assert got == [results, index, f"ValueError: bad {index}", 4]


# --- expensive items spread over every worker ------------------------------------


class Collected(logging.Handler):
    """The netmcore warnings logged in this process (the driver's own)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> list[str]:
        logging.getLogger("netmcore").addHandler(self)
        return self.messages

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("netmcore").removeHandler(self)


def wait_until_value(sem: netmcore.PosixSemaphore, least: int, what: str) -> None:
    deadline = time.monotonic() + 10  # a guard against a hang, not an assertion
    while sem.value < least:
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.001)  # a poll of the condition, not a wait standing in for it


@netmcore.process
def meet(job: tuple[netmcore.ResId, int]) -> int:
    """Wait until four items are running at once (each posts once)."""
    res_id, k = job
    running = netmcore.open_sem(res_id)
    running.post()
    wait_until_value(running, 4, "four items never ran at once")
    running.close()
    return k


@netmcore.process
def four_at_once(n: int) -> list[int]:
    with netmcore.create_sem(0) as running:
        items = ((running.res_id, k) for k in range(n))
        return list(netmcore.Pipeline(meet, workers=4).run(items))


@pytest.mark.parametrize("n", [4, 8])
def test_items_are_spread_over_every_worker_not_batched_onto_the_first(n: int) -> None:
    """As Executor.map: four workers run four items at once, even when there
    are only four; the first worker to be ready does not take a whole batch
    (nothing is known of the items' cost yet: they go one a batch)."""
    assert value(drive(four_at_once, n)) == list(range(n))


# --- an item queued behind a long one goes to an idle worker ------------------------


class Runs(msgspec.Struct, frozen=True):
    """Where the items note their runs, and what item 0 waits for."""

    log: str
    finished: netmcore.ResId
    items: int
    pad: bytes = b""  # carried by every item, to make it larger


@netmcore.process
def after_the_rest(job: tuple[Runs, int]) -> int:
    """Item 0 waits until every other item has run (each posts once), as a long
    item; every item notes its run, and the process it ran in."""
    runs, k = job
    with open(runs.log, "a") as f:  # one short O_APPEND write: whole, never mixed
        f.write(f"{k}:{os.getpid()} ")
    finished = netmcore.open_sem(runs.finished)
    try:
        if k == 0:
            for _ in range(runs.items - 1):
                if not finished.wait(timeout=10):  # a guard against a hang
                    raise TimeoutError("an item was left waiting behind item 0")
        else:
            finished.post()
    finally:
        finished.close()
    return k


@netmcore.process
def long_item_first(job: tuple[str, int, bool, int, int]) -> list[Any]:
    log, n, ordered, pad, queue_size = job
    with netmcore.create_sem(0) as finished:
        runs = Runs(log, finished.res_id, n, b"-" * pad)
        pipeline = netmcore.Pipeline(after_the_rest, workers=2)
        items = ((runs, k) for k in range(n))
        return results_and_runs(pipeline.run(items, ordered=ordered, queue_size=queue_size), log)


def results_and_runs(run: Iterable[Any], log: str) -> list[Any]:
    """The results of ``run`` (or the text of its PipelineError), and the
    runs its items noted in ``log``."""
    try:
        results = list(run)
    except netmcore.PipelineError as exc:
        results = [str(exc)]
    return [results, Path(log).read_text().split()]


def ran_once_each_and_beside_item_0(runs: list[str], n: int) -> None:
    """Each item ran once, and each but item 0 in another process than item 0's
    (which was on it until they had all run)."""
    ran = dict(run.split(":") for run in runs)
    assert sorted(map(int, ran)) == list(range(n)), f"not each item once: {runs}"
    assert len(runs) == n, f"an item ran twice: {runs}"
    assert all(ran[str(k)] != ran["0"] for k in range(1, n)), runs


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_an_item_queued_behind_a_long_one_is_taken_back_for_an_idle_worker(
    tmp_path: Path, ordered: bool
) -> None:
    """As Executor.map: no item waits behind a long one while a worker of its
    stage has nothing to do. Each of the two workers holds two items, one
    queued (nothing is known yet of what they cost): item 0's worker has item
    2 or 3 queued behind it (which depends on which worker was ready first).
    The other worker runs the rest, and has nothing left to do; once item 0's
    worker has been on it over LONE_SECONDS, the driver takes the queued item
    back from it (it has not begun it) and gives it to the other. It used to
    wait there, and item 0, waiting for it, never ended."""
    n = 4
    results, runs = value(drive(long_item_first, (str(tmp_path / "runs"), n, ordered, 0, 32)))
    assert (results if ordered else sorted(results)) == list(range(n))
    ran_once_each_and_beside_item_0(runs, n)


def four_a_message_eight_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 4 items, 8 items a worker, whatever the items cost, so that
    which items travel together is known. (Set in this process, the master:
    every process of the run is a fork of it.)"""
    monkeypatch.setattr(_pipeline._Driver, "_sizes", lambda self, stage, ready: (4, 8))


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_items_in_the_batch_of_a_long_item_are_taken_back_for_an_idle_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ordered: bool
) -> None:
    """Items 1-3 travel in one message with item 0, which waits for them: the
    worker that is free takes them from behind item 0 (each item has its
    claim, not each message). They used to wait there, whichever worker had
    items 4-7 (the same, if it was ready first, or the other)."""
    four_a_message_eight_a_worker(monkeypatch)
    n = 8
    results, runs = value(drive(long_item_first, (str(tmp_path / "runs"), n, ordered, 0, 32)))
    assert (results if ordered else sorted(results)) == list(range(n))
    ran_once_each_and_beside_item_0(runs, n)


def test_items_taken_back_go_in_as_many_messages_as_their_size_takes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Items of about 4 KB, 16 a batch: the idle worker takes back the 15
    queued behind item 0, four to a message (all of them were 60 KB)."""
    monkeypatch.setattr(_pipeline._Driver, "_sizes", lambda self, stage, ready: (16, 16))
    n = 16
    results, runs = value(drive(long_item_first, (str(tmp_path / "runs"), n, True, 3900, 32)))
    assert results == list(range(n))
    ran_once_each_and_beside_item_0(runs, n)


@netmcore.process
def passed_on(job: tuple[Runs, int]) -> tuple[Runs, int]:
    time.sleep(0.0005)  # the work an item takes, not a wait for anything
    return job


@netmcore.process
def first_worker_stuck(job: tuple[Runs, int]) -> int:
    """The item run first (the one that makes the flag file) is stuck until
    every other item has run (each posts once); the others take a fifth of a
    millisecond of work."""
    runs, k = job
    try:
        os.close(os.open(runs.log, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        stuck = True
    except FileExistsError:
        stuck = False
    finished = netmcore.open_sem(runs.finished)
    try:
        if stuck:
            for _ in range(runs.items - 1):
                if not finished.wait(timeout=10):  # a guard against a hang
                    raise TimeoutError("the driver stopped sending items")
        else:
            time.sleep(0.0002)  # the work an item takes, not a wait for anything
            finished.post()
    finally:
        finished.close()
    return k


@netmcore.process
def a_worker_stuck_behind_a_stage(log: str) -> list[int]:
    """Unordered (in input order, the results held back behind the stuck item
    would stop the input at workers x queue_size), items coming one by one."""
    with netmcore.create_sem(0) as finished:
        runs = Runs(log, finished.res_id, 200)
        pipeline = netmcore.Pipeline(passed_on).then(first_worker_stuck, workers=2)
        items = ((runs, k) for k in range(runs.items))
        return sorted(pipeline.run(items, ordered=False, queue_size=2))


def test_items_given_to_a_worker_on_a_long_item_never_fill_its_mailbox(
    tmp_path: Path,
) -> None:
    """queue_size=2: the driver takes back what is queued behind the stuck
    item for the idle worker, and, each time both hold one item, gives the
    stuck worker another (the first of two equally busy); the items taken
    back stay in messages it has not read. Its mailbox had queue_size slots:
    the driver's send waited there, for the stuck item, which waited for the
    items the driver no longer sent."""
    assert value(drive(a_worker_stuck_behind_a_stage, str(tmp_path / "flag"))) == list(range(200))


@netmcore.process
def after_2_and_3(job: tuple[Runs, int]) -> int:
    """A twentieth of a second of work an item; item 0 waits until items 2 and
    3 have run (each posts once). Every item notes its start, and its process."""
    runs, k = job
    with open(runs.log, "a") as f:  # one short O_APPEND write: whole, never mixed
        f.write(f"{k}:{os.getpid()} ")
    finished = netmcore.open_sem(runs.finished)
    try:
        if k == 0:
            for _ in range(2):
                if not finished.wait(timeout=10):  # a guard against a hang
                    raise TimeoutError("item 2 or 3 was left waiting behind item 0")
        else:
            time.sleep(0.05)  # the work an item takes, not a wait for anything
            if k in (2, 3):
                finished.post()
    finally:
        finished.close()
    return k


@netmcore.process
def long_item_among_others(log: str) -> list[Any]:
    with netmcore.create_sem(0) as finished:
        runs = Runs(log, finished.res_id, 10)
        pipeline = netmcore.Pipeline(after_2_and_3, workers=2)
        return results_and_runs(pipeline.run((runs, k) for k in range(runs.items)), log)


def test_items_that_take_long_begin_in_input_order_as_with_executor_map(
    tmp_path: Path,
) -> None:
    """Items of a twentieth of a second, and item 0, far longer: each worker
    holds two items while nothing is known of what they cost, so item 0's
    worker has item 2 or 3 queued behind it. Once the items are known to take
    long (over LONE_SECONDS), a worker holds only the item it is on, and the
    free one takes the item queued behind item 0 before any later one: items
    begin in input order from then on, as Executor.map's do. The other worker
    used to run all the later items first, while the queued item waited (and
    item 0 for it, for ever); it still would, were the queued item taken back
    only for a worker with nothing else to do."""
    results, runs = value(drive(long_item_among_others, str(tmp_path / "runs")))
    assert results == list(range(10))
    began = [int(run.split(":")[0]) for run in runs]
    assert sorted(began) == list(range(10)), f"not each item once: {runs}"
    ran_in = dict(run.split(":") for run in runs)
    assert ran_in["2"] != ran_in["0"] and ran_in["3"] != ran_in["0"], runs
    first_later = min(began.index(k) for k in range(4, 10))
    assert max(began.index(2), began.index(3)) < first_later, f"not in input order: {runs}"


@netmcore.process
def died_in_a_batch(log: str) -> list[Any]:
    items = ((log, k, 1) for k in range(8))
    run = netmcore.Pipeline(die_counted).run(items, on_error="skip", retries=0)
    results = list(run)
    return [results, [(f.index, f.cause) for f in run.failures], Path(log).read_text().split()]


def test_with_no_retries_only_the_items_a_dead_worker_had_begun_fail_with_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The worker dies on item 1 of its batch 0-3 (it ran item 0, whose result
    went with it): with retries=0 items 0 and 1 fail, and items 2 and 3, which
    it never began (their claims say so), go to the fresh worker with 4-7.
    The whole batch used to fail with it."""
    four_a_message_eight_a_worker(monkeypatch)
    results, failures, runs = value(drive(died_in_a_batch, str(tmp_path / "runs")))
    died = "its worker died (killed by SIGKILL)"
    # Item 0's result is sent before its worker dies only if the worker had
    # been on item 1 for LONE_SECONDS when its helper thread looked (it kills
    # itself at once: only on a machine so loaded that it stalled meanwhile).
    failed = [index for index, _ in failures]
    assert failed in ([0, 1], [1]), failures
    lost = f"its result was lost: {died} on item 1, after it had run this item"
    assert failures[-1] == [1, died] and all(cause == lost for _, cause in failures[:-1])
    assert results == [k for k in range(8) if k not in failed]
    assert sorted(runs, key=int) == [str(k) for k in range(8)], f"not each item once: {runs}"


# --- results done before a long item of their batch are not held back by it -----


@netmcore.process
def two_waits_for_one(job: tuple[netmcore.ResId, int]) -> int:
    """Items 0 and 3 fail; item 2 waits until the consumer has had item 1's
    result (it posts once then)."""
    res_id, k = job
    if k in (0, 3):
        raise ValueError(f"bad {k}")
    if k == 2:
        had_1 = netmcore.open_sem(res_id)
        try:
            if not had_1.wait(timeout=10):  # a guard against a hang
                raise TimeoutError("item 1's result was held back until item 2 had ended")
        finally:
            had_1.close()
    return k


@netmcore.process
def consumer_lets_two_go(ordered: bool) -> list[Any]:
    with netmcore.create_sem(0) as had_1:
        items = ((had_1.res_id, k) for k in range(8))
        run = netmcore.Pipeline(two_waits_for_one).run(items, ordered=ordered, on_error="skip")
        return taken_posting_after_1(run, had_1)


def taken_posting_after_1(
    run: netmcore.PipelineRun[int], had_1: netmcore.PosixSemaphore
) -> list[Any]:
    """The results of ``run``, posting ``had_1`` once result 1 is taken; and its failures."""
    got = []
    for x in run:
        got.append(x)
        if x == 1:
            had_1.post()
    return [got, [[f.index, f.cause] for f in run.failures]]


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_results_before_a_long_item_of_their_batch_are_not_held_until_it_ends(
    monkeypatch: pytest.MonkeyPatch, ordered: bool
) -> None:
    """Items 0-3 travel in one message to the only worker: item 0 fails (sent
    at once), item 1 is done, and item 2 waits until the consumer has had
    item 1. Once its worker has been on item 2 for LONE_SECONDS, item 1's
    result is sent, without waiting for the batch's end; then item 2's, with
    item 3's failure. Unordered, results come as they complete; ordered, the
    results before a long item are not held back by it. Item 1's result used
    to wait for item 2 (which waited for it, until its guard failed it)."""
    four_a_message_eight_a_worker(monkeypatch)
    got, failures = value(drive(consumer_lets_two_go, ordered))
    assert failures == [[0, "ValueError: bad 0"], [3, "ValueError: bad 3"]]
    assert got == [1, 2, 4, 5, 6, 7]


@netmcore.process
def two_dies_after_one(job: tuple[netmcore.ResId, int]) -> int:
    """Item 2 waits until the consumer has had item 1's result, then SIGKILLs
    its worker."""
    res_id, k = job
    if k == 2:
        had_1 = netmcore.open_sem(res_id)
        if not had_1.wait(timeout=10):  # a guard against a hang
            raise TimeoutError("item 1's result was held back until item 2 had ended")
        os.kill(os.getpid(), signal.SIGKILL)
    return k


@netmcore.process
def died_after_results_went(_: int) -> list[Any]:
    with netmcore.create_sem(0) as had_1:
        items = ((had_1.res_id, k) for k in range(8))
        run = netmcore.Pipeline(two_dies_after_one).run(items, on_error="skip", retries=0)
        return taken_posting_after_1(run, had_1)


def test_a_worker_that_dies_on_a_long_item_has_sent_the_results_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Items 0-3 travel together; the worker dies on item 2, once the consumer
    has had items 0 and 1, sent while it was on item 2: with retries=0 only
    item 2 fails, and item 3, never begun, goes to the fresh worker. Items 0
    and 1 used to wait for item 2's end, and would have died with it."""
    four_a_message_eight_a_worker(monkeypatch)
    got, failures = value(drive(died_after_results_went, 0))
    assert failures == [[2, "its worker died (killed by SIGKILL)"]]
    assert got == [0, 1, 3, 4, 5, 6, 7]


@netmcore.process
def two_is_stuck(k: int) -> int:
    if k == 2:
        # Until its worker is killed. Bounded, lest a worker never killed hang
        # the test: it ends the item (a failure) after 10 s.
        threading.Event().wait(10)
        raise TimeoutError("item 2 ended: its worker was not killed")
    return k


@netmcore.process
def break_before_a_stuck_item(_: int) -> list[Any]:
    with Collected() as warnings:
        got = []
        for x in netmcore.Pipeline(two_is_stuck).run(range(8)):
            got.append(x)
            if x == 1:
                break
        return [got, warnings]


def test_break_after_the_results_before_a_stuck_item_shuts_down_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ordered, items 0-3 in one message: the consumer breaks once it has item
    1, while the worker is stuck on item 2. Items 0 and 1 are sent once the
    worker has been on item 2 for LONE_SECONDS; the break shuts the pipeline
    down, and the stuck worker is killed after GRACE (shortened here, in the
    master, of which every process of the run is a fork). Items 0 and 1 used
    to come only once item 2 had ended: its worker was then not stuck, and
    nothing was killed (nor would be, had item 2 no end)."""
    monkeypatch.setattr(_pipeline, "GRACE", 0.2)
    four_a_message_eight_a_worker(monkeypatch)
    got, warnings = value(drive(break_before_a_stuck_item, 0))
    assert got == [0, 1]
    assert len(warnings) == 1, (
        f"the worker stuck on item 2 was not killed (it had ended): {warnings}"
    )
    assert (
        "did not stop within 0.2 s of the shutdown, stuck on an item: killing it" in (warnings[0])
    )


def wakeups_of_threads_but_main(pid: int) -> int:
    """How many times the threads of process ``pid`` but its main one went to
    sleep: each wait, whatever woke it."""
    count = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        if int(tid) != pid:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            found = re.search(r"^voluntary_ctxt_switches:\s+(\d+)$", status, re.MULTILINE)
            assert found is not None, status
            count += int(found[1])
    return count


def idle_half_a_second() -> Iterator[int]:
    """Items 0 and 1; then, as item 2, how many times the stage worker's helper
    thread woke while the worker had nothing to do for half a second (the
    time watched, not a wait for anything): the driver reads item 2 once item
    0 is answered, and the worker is then done with item 1 within microseconds."""
    yield 0
    yield 1
    siblings = psutil.Process(os.getppid()).children()
    [worker] = [p for p in siblings if p.pid != os.getpid() and p.num_threads() == 2]
    before = wakeups_of_threads_but_main(worker.pid)
    time.sleep(0.5)
    yield wakeups_of_threads_but_main(worker.pid) - before


@netmcore.process
def helper_of_an_idle_worker(_: int) -> list[str]:
    return list(netmcore.Pipeline(label).run(idle_half_a_second()))


def test_the_helper_thread_of_an_idle_worker_sleeps() -> None:
    """It looks every LONE_SECONDS (20 ms) while the worker is on a batch, and
    not at all while the worker waits for one: it woke 25 times in the half
    second, 50 times a second, on every worker of every stage, idle or not."""
    results = value(drive(helper_of_an_idle_worker, 0))
    assert results[:2] == ["<0>", "<1>"]
    assert int(results[2].strip("<>")) <= 3, results


# --- results held back for the input order do not hold the workers back ----------


@netmcore.process
def after_two(job: tuple[netmcore.ResId, int]) -> int:
    """Item 0 waits until two later items have finished (each posts once)."""
    res_id, k = job
    finished = netmcore.open_sem(res_id)
    if k == 0:
        for _ in range(2):
            if not finished.wait(timeout=10):  # a guard against a hang
                raise TimeoutError("the items after item 0 were held back")
    else:
        finished.post()
    finished.close()
    return k


@netmcore.process
def ordered_past_a_slow_item(n: int) -> list[int]:
    with netmcore.create_sem(0) as finished:
        items = ((finished.res_id, k) for k in range(n))
        return list(netmcore.Pipeline(after_two, workers=2).run(items, queue_size=1))


def test_ordered_results_held_back_leave_the_other_workers_going() -> None:
    """Two workers of one item each: while item 0 runs, the other worker goes
    on to items 1 and 2, whose results are held back for the input order;
    they used to count against the workers' items, and item 2 was read only
    once item 0 was out."""
    assert value(drive(ordered_past_a_slow_item, 6)) == list(range(6))


# --- item_timeout counts from the worker's answers, not from when they are read ---


@netmcore.process
def slow_consumer(_: int) -> list[Any]:
    with Collected() as warnings:
        run = netmcore.Pipeline(label_length).run(
            range(4), item_timeout=0.8, retries=0, on_error="skip"
        )
        got = []
        for x in run:
            got.append(x)
            if x == 1:
                time.sleep(0.9)  # a consumer slower than item_timeout, not a wait for anything
        return [got, [(f.index, f.cause) for f in run.failures], warnings]


def test_item_timeout_is_not_charged_for_a_slow_consumer() -> None:
    """The worker answers every item at once, while the caller takes its time
    over the first result: the answers it has not read yet say when each item
    ended, and none was overdue (it used to be killed, and its item failed)."""
    assert value(drive(slow_consumer, 0)) == [[1, 2, 3, 4], [], []]


# --- a dead worker is found while the others keep the driver busy ---------------


@netmcore.process
def found_dead_while_busy(flag: str) -> bool:
    endless = ((flag, k, 0) for k in itertools.count())
    deadline = time.monotonic() + 10  # a guard against a hang, not an assertion
    with netmcore.Pipeline(die_once, workers=2).run(endless, ordered=False) as run:
        for k in run:
            if k == 0:
                return True
            if time.monotonic() > deadline:
                return False
    return False


def test_a_dead_worker_is_replaced_while_the_other_workers_keep_the_driver_busy(
    tmp_path: Path,
) -> None:
    """The other worker answers without a pause: the driver never waits for
    a message as long as LOOK_AGAIN, and used to look for dead workers only
    then. Item 0's worker is found dead all the same, and item 0 retried."""
    assert value(drive(found_dead_while_busy, str(tmp_path / "flag"))) is True
    assert (tmp_path / "flag").exists()


# --- run's arguments: checked at once, naming the argument -----------------------


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        (
            {"queue_size": 10**12},
            "queue_size=1,000,000,000,000 is not valid: a mailbox has fewer than 2**32 "
            "slots, and queue_size sets those of the pipeline's (the driver's: 2 worker(s) "
            "x queue_size, and 8; each worker's: 2 x queue_size, and 1): give run() a "
            "queue_size of at most 2,147,483,643",
        ),
        (
            {"item_size": 10**12},
            "item_size=1,000,000,000,000 is not valid: a mailbox's slot holds an item of "
            "item_size bytes (and 144 more), and is smaller than 2**32 bytes: "
            "give run() an item_size of at most 4,294,967,151",
        ),
        (
            {"queue_size": 2**31 - 8, "item_size": 2**31},
            "queue_size=2,147,483,640 and item_size=2,147,483,648 are too large for 2 "
            "worker(s): the driver's mailbox, 4,294,967,288 slots (2 worker(s) x "
            "queue_size, and 8) of 2,147,483,792 bytes (an item of item_size, or 16,256 "
            "bytes of smaller ones, a message), needs 9,223,373,119,186,532,736 bytes, "
            "which is too large: a shared "
            "memory object holds at most 9,223,372,036,854,775,807 bytes (2**63-1, a "
            "file's size). Give run() a smaller queue_size or item_size, or the pipeline "
            "fewer workers",
        ),
    ],
)
def test_queue_size_and_item_size_too_large_for_a_mailbox_are_refused_at_once(
    sizes: dict[str, int], message: str
) -> None:
    """Before anything is made, naming run()'s arguments: they used to be
    refused once the iteration began, naming a Mailbox's slots."""
    with pytest.raises(ValueError, match=re.escape(message)):
        netmcore.Pipeline(label, workers=2).run([], **sizes)  # type: ignore[arg-type]


def a_64_mib_dev_shm(monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/shm as a container's (Docker's is 64 MiB), for this process and
    the forks of it: every process of a run."""
    real = os.statvfs("/dev/shm")
    blocks = (64 << 20) // real.f_frsize
    small = os.statvfs_result((real.f_bsize, real.f_frsize, blocks, blocks, blocks, *real[5:]))
    monkeypatch.setattr(os, "statvfs", lambda path: small)


@netmcore.process
def sixteen_workers(n: int) -> list[str]:
    return list(netmcore.Pipeline(label, workers=16).run(range(n)))


def test_a_64_mib_dev_shm_takes_a_pipeline_of_16_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slot is sized for what a message carries (an item of item_size, or
    16 KiB of smaller ones), not for 16 items of item_size and a failure's
    text beside them: a worker's mailboxes took 6.3 MB, and 16 workers with
    run()'s defaults were refused in a container."""
    a_64_mib_dev_shm(monkeypatch)
    assert value(drive(sixteen_workers, 40)) == [f"<{n}>" for n in range(40)]


def test_a_pipeline_too_large_for_a_small_dev_shm_names_its_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The error blamed only queue_size and item_size, which the caller had
    # not given.
    a_64_mib_dev_shm(monkeypatch)
    with pytest.raises(ValueError) as info:
        netmcore.Pipeline(label, workers=200).run([1])
    assert "are too large for 200 worker(s): the driver's mailbox" in str(info.value)
    assert "or the pipeline fewer workers" in str(info.value)


def test_a_worker_mailbox_too_large_for_dev_shm_is_refused_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With one worker in all, the worker's own mailbox (2 x queue_size + 1
    slots) is larger than the driver's (queue_size + 8). Only the driver's
    was checked: the run began, and its worker died making its mailbox,
    again and again (see the test below)."""
    a_64_mib_dev_shm(monkeypatch)
    with pytest.raises(ValueError) as info:
        netmcore.Pipeline(label, workers=1).run([1], queue_size=3000)
    assert str(info.value).startswith(
        "queue_size=3,000 and item_size=4,096 are too large for 1 worker(s): each worker's "
        "mailbox, 6,001 slots (2 x queue_size, and 1) of 16,"
    ), str(info.value)


@netmcore.process
def no_stage_worker_starts(workers: int) -> list[Any]:
    try:
        return list(netmcore.Pipeline(label, workers=workers).run(range(4)))
    except netmcore.StageWorkerError as exc:
        return [exc.stage, exc.cause, str(exc)]


def test_a_stage_worker_that_fails_as_it_starts_ends_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stage worker that raised (not on an item: as it started) was
    replaced by another that failed the same way, for ever: the run hung,
    forking workers. Now it ends, saying why."""

    def out_of_descriptors(res_id: netmcore.ResId) -> netmcore.ShmSegment:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(_pipeline, "open_shm", out_of_descriptors)  # in every worker
    stage, cause, text = value(drive(no_stage_worker_starts, 2))
    assert stage == _pipeline.Stage(label, 1).name
    assert cause == "raised OSError: [Errno 24] Too many open files"
    assert text.startswith(
        f"a worker of pipeline stage {stage} failed as it started, not on an item, and so "
        f"did its replacement: {cause}"
    )


def test_a_stage_worker_that_fails_once_as_it_starts_is_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The only worker finds no descriptor left as it starts; the next does."""
    real_open_shm = _pipeline.open_shm
    flag = tmp_path / "failed once"

    def out_of_descriptors_once(res_id: netmcore.ResId) -> netmcore.ShmSegment:
        try:
            flag.touch(exist_ok=False)  # one worker only: the first to get here
        except FileExistsError:
            return real_open_shm(res_id)
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(_pipeline, "open_shm", out_of_descriptors_once)
    assert value(drive(no_stage_worker_starts, 1)) == [f"<{k}>" for k in range(4)]
    assert flag.exists()


@netmcore.process
def narrow(data: bytes) -> int:
    """A tiny result for an item of 4,000 bytes."""
    return data[0]


@netmcore.process
def widen(k: int) -> bytes:
    """A result of 4,000 bytes for a tiny item."""
    return bytes([k]) * 4000


@netmcore.process
def wide_items_and_results(n: int) -> list[tuple[int, int]]:
    # retries=0: a worker that failed to send would fail the run, not be
    # covered for by a retry of its items, one a message.
    pipeline = netmcore.Pipeline(narrow, workers=2).then(widen, workers=2)
    results = pipeline.run((bytes([k % 256]) * 4000 for k in range(n)), retries=0)
    return [(result[0], len(result)) for result in results]


def test_batches_and_their_answers_larger_than_a_message_go_in_several(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Items near item_size (4,096 by default) with tiny results, then tiny
    items with such results: 16 of them are 64 KB, 4 times what a message
    holds. The driver sends as many items as a message holds, and a worker
    answers in as many messages as its results take, in order."""
    monkeypatch.setattr(_pipeline._Driver, "_sizes", lambda self, stage, ready: (16, 16))
    n = 200
    assert value(drive(wide_items_and_results, n)) == [(k % 256, 4000) for k in range(n)]


def test_a_message_takes_no_more_than_its_heads_and_its_entries() -> None:
    """The bytes the driver and the workers count for a message, at the
    largest an index, a worker number and a clock reading can be: none is
    refused by its mailbox for want of room."""
    big, data, text = 2**63 - 1, b"x" * 70_000, "\u00e9" * 40_000
    entries = [(big, data), (big, data)]
    messages: list[tuple[Any, int, int]] = [  # a message, its entries, their bytes
        (_pipeline.Work(entries), 2, 2 * len(data)),
        (_pipeline.Done(big, entries, [], 1e300, 1e300), 2, 2 * len(data)),
        (_pipeline.Done(big, entries, [(big, text)], -1e300, 1e300), 3, 2 * len(data) + 80_000),
    ]
    for message, count, payload in messages:
        most = _pipeline.MESSAGE_HEAD + count * _pipeline.ENTRY_HEAD + payload
        assert len(msgspec.msgpack.encode(message)) <= most, type(message)


@netmcore.process
def raise_long(k: int) -> int:
    if k == 3:
        raise ValueError("\u00e9" * 20_000)  # 40,000 bytes of UTF-8
    return k


@netmcore.process
def long_failure(n: int) -> list[Any]:
    run = netmcore.Pipeline(raise_long, workers=2).run(range(n), on_error="skip")
    return [list(run), [(f.index, f.cause) for f in run.failures]]


def test_a_failure_text_larger_than_a_message_is_clipped_to_fit_it() -> None:
    results, failures = value(drive(long_failure, 8))
    assert results == [0, 1, 2, 4, 5, 6, 7]
    [(index, cause)] = failures
    assert index == 3
    assert cause.startswith("ValueError: \u00e9\u00e9")
    assert cause.endswith("\u00e9\u00e9")
    assert "characters cut ...]" in cause
    assert len(cause.encode()) <= _pipeline.BATCH_BYTES


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"ordered": "yes"}, "ordered='yes' is not valid: give True"),
        ({"ordered": 1}, "ordered=1 is not valid: give True"),
        ({"queue_size": "1"}, "queue_size='1' is not valid: it must be an int"),
        ({"queue_size": 2.0}, "queue_size=2.0 is not valid: it must be an int"),
        ({"item_size": 4096.0}, "item_size=4096.0 is not valid: it must be an int"),
        ({"retries": True}, "retries=True is not valid: it must be an int"),
        ({"progress": "no"}, "progress='no' is not valid: give True, False, or None"),
    ],
)
def test_run_arguments_of_the_wrong_type_are_a_type_error(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        netmcore.Pipeline(label).run([], **arguments)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"queue_size": 0},
            "queue_size=0 is not valid: it must be an int of at least 1; "
            "give run() queue_size=1 or more",
        ),
        (
            {"retries": -1},
            "retries=-1 is not valid: it must be an int of at least 0; "
            "give run() retries=0 or more",
        ),
    ],
)
def test_run_arguments_out_of_range_are_a_value_error(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        netmcore.Pipeline(label).run([], **arguments)


@pytest.mark.parametrize(
    ("workers", "error", "message"),
    [
        (2.0, TypeError, "workers=2.0 is not valid: it must be an int"),
        (True, TypeError, "workers=True is not valid: it must be an int"),
        ("2", TypeError, "workers='2' is not valid: it must be an int"),
        (0, ValueError, "workers=0 is not valid: at least 1 worker per stage; give workers=1"),
    ],
)
def test_workers_is_an_int_of_at_least_1(
    workers: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        netmcore.Pipeline(label, workers=workers)
    with pytest.raises(error, match=re.escape(message)):
        netmcore.Pipeline(label).then(label_length, workers=workers)  # type: ignore[arg-type]


@netmcore.process
def anything(x: Any) -> Any:
    return x


@netmcore.process
def through_any(_: int) -> list[str]:
    # int -> Any -> int: mypy takes Any for any type and any type for Any.
    return list(netmcore.Pipeline(label_length).then(anything).then(label).run([1, 20]))


def test_then_takes_any_on_either_side_as_mypy_does() -> None:
    assert value(drive(through_any, 0)) == ["<2>", "<22>"]


@netmcore.process
def int_or_anys(x: int) -> int | list[Any]:
    return x


@netmcore.process
def ints_or_int(x: list[int] | int) -> str:
    return str(x)


@netmcore.process
def str_or_none(x: str | None) -> str:
    return str(x)


def test_then_reads_a_union_with_any_in_any_order_as_mypy_does() -> None:
    # mypy takes `int | list[Any]` for `list[int] | int`; they were compared
    # position by position, and refused. A union that does not fit still is.
    netmcore.Pipeline(int_or_anys).then(ints_or_int)
    with pytest.raises(TypeError, match=r"takes str \| None, but the stage before it, "):
        netmcore.Pipeline(int_or_anys).then(str_or_none)  # type: ignore[arg-type]


# --- a worker kept alive by a non-daemon thread ----------------------------------


@netmcore.process
def leave_a_thread(k: int) -> int:
    if k == 0:
        threading.Thread(target=hang).start()  # not a daemon: its process cannot end
    return k


@netmcore.process
def thread_left_running(_: int) -> list[Any]:
    with Collected() as warnings:
        results = list(netmcore.Pipeline(leave_a_thread).run(range(3)))
        return [results, warnings]


def test_a_worker_that_a_non_daemon_thread_keeps_alive_is_killed_at_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stage function starts a thread that never ends: the worker finishes,
    but its process waits for the thread, and the run used to wait for it for
    ever. It is killed GRACE seconds after it finished, with a warning that
    says why. (GRACE is shortened in this process, the master: every process
    of the run is a fork of it.)"""
    monkeypatch.setattr(_pipeline, "GRACE", 0.2)
    results, warnings = value(drive(thread_left_running, 0))
    assert results == [0, 1, 2]
    assert len(warnings) == 1
    assert "had finished, but its process had not ended 0.2 s later: killing it" in warnings[0]
    assert "non-daemon threads" in warnings[0]


@netmcore.process
def shutdown_with_a_ready_in_the_backlog(_: int) -> list[int]:
    run = netmcore.Pipeline(label, workers=2).run(range(1), ordered=False)
    first = next(run)  # both workers have started, and said so; both are idle
    driver = run._results.gi_frame.f_locals["self"]  # type: ignore[union-attr]
    # As _check_workers leaves it when it finds a worker dead: every message
    # waiting moved into the backlog, another worker's Ready among them, not
    # yet handled (its mailbox not opened: no Stop can reach it).
    worker = next(w for w in driver._workers.values() if w.box is not None)
    box = worker.box.res_id
    worker.box.release()
    worker.box, worker.ready = None, False
    driver._backlog.append(_pipeline.Ready(worker.number, box))
    run.close()  # it waited for ever for that worker, which waited for a Stop
    return [len(first), worker.number]


def test_a_ready_left_in_the_backlog_is_stopped_at_shutdown() -> None:
    first_len, _number = value(drive(shutdown_with_a_ready_in_the_backlog, 0))
    assert first_len >= 3  # a label, like "<0>"


@netmcore.process
def pipeline_without_stderr(progress: bool | None) -> list[str]:
    sys.stderr = None  # type: ignore[assignment]  # a daemon's, pythonw's
    return sorted(netmcore.Pipeline(label).run(range(3), ordered=False, progress=progress))


@pytest.mark.parametrize("progress", [None, True])
def test_a_pipeline_runs_without_stderr_and_draws_no_bar(progress: bool | None) -> None:
    # It failed at its first result: tqdm wrote to None (AttributeError).
    assert value(drive(pipeline_without_stderr, progress)) == ["<0>", "<1>", "<2>"]


@netmcore.process
def stuck_on_five(k: int) -> int:
    if k == 5:
        os.read(os.pipe()[0], 1)  # stuck for ever: nobody writes to it
    return k


@netmcore.process
def overdue_while_the_inbox_is_busy(_: int) -> str:
    # The driver's inbox always has a message waiting: a look that finds it
    # empty waits for the next one instead of saying so at once (as a busy
    # inbox, which the other workers' results keep full, does).
    real = netmcore.Mailbox.receive

    def busy(box: Any, timeout: float | None = None) -> Any:
        return real(box, timeout=0.05 if timeout == 0 else timeout)

    netmcore.Mailbox.receive = busy  # type: ignore[method-assign]  # this driver's process only
    run = netmcore.Pipeline(stuck_on_five, workers=2).run(
        itertools.count(), ordered=False, item_timeout=0.5, retries=0
    )
    try:
        for _result in run:
            pass
    except netmcore.PipelineError as exc:
        return str(exc)
    return "the input ended"


def test_an_overdue_worker_is_judged_while_the_others_keep_the_inbox_busy() -> None:
    # It was judged only once a look found the inbox empty: never, here.
    message = value(drive(overdue_while_the_inbox_is_busy, 0))
    assert message.startswith("item 5 failed in stage stuck_on_five: it ran over item_timeout")


def _interrupt_as_the_second_worker_starts(taken_elsewhere: bool = False) -> list[str]:
    """``taken_elsewhere``: another thread takes the SIGINT (the main one
    blocks it), and its C handler has run (it wrote to the wakeup fd) by the
    time the start returns."""
    real, started = _pipeline.stage_worker.start, []

    def start(job: Any, **kwargs: Any) -> Any:
        pid = real(job, **kwargs)
        started.append(pid)
        if len(started) == 2:
            if taken_elsewhere:
                r, w = os.pipe()
                os.set_blocking(w, False)
                signal.set_wakeup_fd(w)
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs as this returns
            if taken_elsewhere:
                os.read(r, 1)
                signal.set_wakeup_fd(-1)
                os.close(r)
                os.close(w)
        return pid

    _pipeline.stage_worker.start = start  # type: ignore[method-assign]
    try:
        list(netmcore.Pipeline(label, workers=2).run(range(3)))
        return ["not interrupted"]
    except KeyboardInterrupt:
        pass
    # Each worker started was stopped and joined by the run's shutdown.
    return [outcome_text(lambda pid=pid: netmcore.kill(pid, 0)) for pid in started]


@netmcore.process
def interrupted_as_a_worker_starts(_: int) -> list[str]:
    """A SIGINT as the start of the second stage worker returns, once the
    master has started it: it was never recorded, so never stopped, and
    waited for work for as long as the driver lived."""
    return _interrupt_as_the_second_worker_starts()


@netmcore.process
def interrupted_as_a_worker_starts_beside_a_thread(_: int) -> list[str]:
    """The same, with a second thread in the driver, as a progress bar's
    monitor is: the SIGINT went to that thread (the main one blocked it),
    and its Python handler ran in the main thread all the same, as the
    start returned."""
    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    try:
        return _interrupt_as_the_second_worker_starts(taken_elsewhere=True)
    finally:
        done.set()
        thread.join()


def test_a_worker_started_as_a_ctrl_c_comes_is_stopped_with_the_run() -> None:
    got = value(drive(interrupted_as_a_worker_starts, 0))
    assert len(got) == 2
    assert all(g.startswith("UnknownProcess") for g in got), got  # joined: gone


def test_a_worker_started_as_a_ctrl_c_comes_is_stopped_beside_another_thread() -> None:
    # The test above failed 1 time in 6 full runs of this file: a tqdm
    # monitor thread, there some of the time, took the SIGINT, and when its
    # handler ran before the start had returned, it raised in the main
    # thread's block. Here that happens every time.
    got = value(drive(interrupted_as_a_worker_starts_beside_a_thread, 0))
    assert len(got) == 2
    assert all(g.startswith("UnknownProcess") for g in got), got
