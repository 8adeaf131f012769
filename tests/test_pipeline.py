"""Typed pipelines: stages of process types, run over inputs by worker processes."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path
from typing import Any

import msgspec
import pytest

import netmcore


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
def die_once(job: tuple[str, int]) -> int:
    """SIGKILL itself on item 5, the first time only (a flag file remembers)."""
    flag, k = job
    if k == 5 and not os.path.exists(flag):
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
    return list(netmcore.Pipeline(die_once, workers=2).run((flag, k) for k in range(10)))


def test_stage_worker_killed_its_item_is_retried_once(tmp_path: Path) -> None:
    assert value(drive(killed_then_retried, str(tmp_path / "flag"))) == list(range(10))


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
def bad_input(_: int) -> str:
    try:
        list(netmcore.Pipeline(parse).run(["k1=1", 2]))  # type: ignore[list-item]
    except netmcore.ArgumentTypeError as exc:
        return str(exc)
    return ""


def test_an_input_of_the_wrong_type_is_refused_with_its_index() -> None:
    assert value(drive(bad_input, 0)).startswith("pipeline item 1 2 does not match str")


def test_stages_that_do_not_fit_are_refused_at_once() -> None:
    with pytest.raises(TypeError, match="stage label takes int, but the stage before it, parse"):
        netmcore.Pipeline(parse).then(label)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers=0 is not valid"):
        netmcore.Pipeline(parse, workers=0)
    with pytest.raises(ValueError, match="on_error='ignore' is not valid"):
        netmcore.Pipeline(parse).run([], on_error="ignore")  # type: ignore[arg-type]


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
import sys
import netmcore

@netmcore.process
def double(k: int) -> int:
    return 2 * k

@netmcore.process
def first(show: bool) -> int:
    run = netmcore.Pipeline(double, workers=2).then(double).run(range(50), progress=show or None)
    return sum(run)

show = sys.argv[1] == "on"
print(netmcore.run(first_process=lambda: first.start(show),
                   extract_result=lambda c, pid: first.join_nowait(pid)))
"""


@pytest.mark.parametrize("mode", ["on", "off"])
def test_progress_bars_per_stage_only_when_asked_or_on_a_terminal(
    tmp_path: Path, mode: str
) -> None:
    import subprocess
    import sys

    script = tmp_path / "progress.py"
    script.write_text(PROGRESS_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), mode], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(4 * sum(range(50)))
    if mode == "on":  # one bar per stage: its name, workers, items out of in, rate
        assert "double x2" in proc.stderr
        assert "double x1" in proc.stderr
        assert "50/50" in proc.stderr
        assert "item/s" in proc.stderr
    else:  # by default, off when stderr is not a terminal
        assert proc.stderr == ""
