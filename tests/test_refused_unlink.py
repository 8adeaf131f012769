"""An object whose unlink is refused when its last user ends (the file of
``manage_file`` in a directory nobody may write to, another user's file in
/tmp) is logged and left for ``destroy_resources()``: the process's end goes
on. Its result reached nobody, and ``run`` never returned, when it ended
normally; ``run`` itself raised the unlink's error, killing every worker,
when it crashed.

The path made a directory stands for the refusal: its unlink fails
(EISDIR) for root too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from scenario import run_scenario

import netmcore


@netmcore.process
def ru_manager(job: tuple[str, bool]) -> int:
    """Manage a file, make its path a directory, then end as asked."""
    path, crash = job
    Path(path).touch()
    netmcore.manage_file(path)
    os.remove(path)
    os.mkdir(path)
    if crash:
        os._exit(3)
    return 5


@netmcore.process
def ru_boss(job: tuple[str, bool]) -> list[Any]:
    outcome = ru_manager.join_outcome(ru_manager.start(job), timeout=30)
    after = ru_manager.result(ru_manager.start((job[0] + ".2", False)))
    return [type(outcome).__name__, getattr(outcome, "value", None), after]


@pytest.mark.parametrize("crash", [False, True], ids=["returns", "crashes"])
def test_a_refused_unlink_at_a_workers_end_is_logged_and_the_run_goes_on(
    tmp_path: Path, crash: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "f")
    try:
        with caplog.at_level(logging.WARNING, logger="netmcore"):
            kind, value, after = run_scenario(ru_boss, (path, crash))
        assert (kind, value) == (("Crashed", None) if crash else ("Success", 5))
        assert after == 5  # the master still serves, and manages files
        refused = [
            r.getMessage() for r in caplog.records if "could not be destroyed" in r.getMessage()
        ]
        assert len(refused) == 2, refused
        assert all("left for destroy_resources()" in text for text in refused)
        # Left in the table: destroy_resources tries again, and says why it cannot.
        with pytest.raises(IsADirectoryError):
            netmcore.destroy_resources()
    finally:
        for p in (path, path + ".2"):
            os.rmdir(p)
        netmcore.destroy_resources()  # now it can: they are gone


def test_destroy_resources_goes_past_an_object_it_cannot_destroy(tmp_path: Path) -> None:
    """The refusal is raised after every other object is destroyed."""
    refused, other = tmp_path / "refused", tmp_path / "other"
    refused.touch()
    other.touch()
    netmcore.manage_file(str(refused))
    netmcore.manage_file(str(other))
    refused.unlink()
    refused.mkdir()
    try:
        with pytest.raises(IsADirectoryError):
            netmcore.destroy_resources()
        assert not other.exists()
    finally:
        refused.rmdir()
        netmcore.destroy_resources()
