"""Static type tests: mypy must accept tests/typing/good.py and reject each bad use in bad.py.

good.py pins the inferred types with ``assert_type``; bad.py marks each use mypy
must reject with ``# type: ignore[<code>]``. The project's mypy config sets
``warn_unused_ignores``, so one clean run over both files fails if an inferred
type changes or if a bad use starts being accepted. A second run, over a copy
of bad.py without its markers, proves each marker covers exactly the errors it
names, so a marker cannot pass by silencing some other error.

netmcore itself is followed with ``--follow-imports=silent``: its own errors are
the business of the project-wide ``mypy`` run (``make test``), and these tests
check only what users of the public API see.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mypy.api
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mypy.ini"
GOOD = ROOT / "tests" / "typing" / "good.py"
BAD = ROOT / "tests" / "typing" / "bad.py"

# The number of lines of bad.py that mypy must reject; update it when adding cases.
EXPECTED_BAD_LINES = 157

MARKER = re.compile(r"\s*# type: ignore\[(?P<codes>[^\]]*)\]\s*$")
ERROR = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: .*?(?:  \[(?P<code>[a-z0-9-]+)\])?$")


def markers(text: str) -> dict[int, list[str]]:
    """The error codes each marked line of ``text`` names, by line number."""
    found = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = MARKER.search(line)
        if match:
            found[number] = [code.strip() for code in match["codes"].split(",")]
    return found


def strip_markers(text: str) -> str:
    return "\n".join(MARKER.sub("", line) for line in text.splitlines()) + "\n"


def run_mypy(
    files: list[Path], cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, int]:
    # From the repository, mypy checks its netmcore (the current directory
    # comes first), as `make test` does.
    monkeypatch.chdir(ROOT)
    stdout, stderr, status = mypy.api.run(
        [
            "--config-file",
            str(CONFIG),
            "--cache-dir",
            str(cache_dir),
            "--follow-imports",
            "silent",
            "--show-error-codes",
            "--no-pretty",
            "--no-color-output",
            "--hide-error-context",
            *map(str, files),
        ]
    )
    assert not stderr, stderr
    return stdout, status


def errors(stdout: str) -> list[tuple[str, int, str | None]]:
    """The (path, line, code) of each error in mypy's output."""
    found = []
    for line in stdout.splitlines():
        match = ERROR.match(line)
        if match:
            found.append((match["path"], int(match["line"]), match["code"]))
    return found


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy_cache")


def test_bad_has_the_expected_markers() -> None:
    found = markers(BAD.read_text())
    assert len(found) == EXPECTED_BAD_LINES, (
        f"bad.py has {len(found)} marked lines, expected {EXPECTED_BAD_LINES}"
    )
    assert all(codes and all(codes) for codes in found.values()), found
    # A bare ignore would hide any error; the config rejects it too (ignore-without-code).
    assert "# type: ignore\n" not in BAD.read_text()


def test_good_has_no_ignores_and_pins_types() -> None:
    text = GOOD.read_text()
    assert "type: ignore" not in text
    assert text.count("assert_type(") >= 50


@pytest.mark.timeout(300)
def test_good_passes_and_bad_is_rejected(mypy_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stdout, status = run_mypy([GOOD, BAD], mypy_cache, monkeypatch)
    assert ": error:" not in stdout, stdout
    assert status == 0, stdout
    assert "Success: no issues found in 2 source files" in stdout, stdout


@pytest.mark.timeout(300)
def test_each_bad_line_gives_exactly_its_errors(
    mypy_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = BAD.read_text()
    expected = markers(text)
    unmarked = tmp_path / "bad_unmarked.py"
    unmarked.write_text(strip_markers(text))
    assert not markers(unmarked.read_text())

    stdout, status = run_mypy([unmarked], mypy_cache, monkeypatch)
    assert status == 1, stdout
    found = errors(stdout)
    assert {Path(path).name for path, _, _ in found} == {unmarked.name}, stdout
    assert len({line for _, line, _ in found}) == len(expected) == EXPECTED_BAD_LINES, stdout
    assert len(found) == sum(len(codes) for codes in expected.values()), stdout
    assert Counter((line, code) for _, line, code in found) == Counter(
        (line, code) for line, codes in expected.items() for code in codes
    ), stdout


@pytest.mark.timeout(300)
def test_mypy_checks_a_users_script_against_the_installed_package(tmp_path: Path) -> None:
    """A script outside the repository is checked against netmcore's types, as
    a user's is: the install is one mypy can follow (``make`` installs it in
    strict editable mode: an import hook, the default, hid the package from
    mypy, which then took ``netmcore`` as an unknown module of type Any)."""
    script = tmp_path / "user.py"
    script.write_text(
        "import netmcore\n\n\n@netmcore.process\ndef square(k: int) -> int:\n"
        '    return k * k\n\n\nsquare.start("7")\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            "user.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.stdout.splitlines()[:1] == [
        'user.py:9: error: Argument 1 to "start" of "ProcessDef" has incompatible type '
        '"str"; expected "int"  [arg-type]'
    ], proc.stdout + proc.stderr
    assert "Found 1 error in 1 file" in proc.stdout
