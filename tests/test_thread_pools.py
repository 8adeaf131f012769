"""The native thread pools (BLAS, OpenMP) run one thread in each process of
a run, as in Dask's and Ray's workers, unless the program chose otherwise."""

from __future__ import annotations

import os
from typing import Any

import pytest
from scenario import run_scenario

import netmcore

np = pytest.importorskip("numpy")
threadpoolctl = pytest.importorskip("threadpoolctl")

VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _pools() -> list[tuple[str, int]]:
    return [(pool["internal_api"], pool["num_threads"]) for pool in threadpoolctl.threadpool_info()]


@netmcore.process
def tp_pools(_: int) -> list[Any]:
    """This process's pools, what it reads of the environment, and a
    product computed with them (which a pool left broken by the fork
    would not give)."""
    a = np.arange(40_000, dtype=np.float64).reshape(200, 200) / 40_000
    return [_pools(), [os.environ.get(name) for name in VARIABLES], float((a @ a.T).trace())]


EXPECTED_TRACE = float(
    (lambda a: (a @ a.T).trace())(np.arange(40_000.0).reshape(200, 200) / 40_000)
)


def test_each_process_runs_one_thread_a_pool_and_the_master_gets_its_own_back() -> None:
    before = _pools()
    if not before or all(threads == 1 for _, threads in before):
        pytest.skip("no native pool of more than one thread is loaded here")
    assert not any(name in os.environ for name in VARIABLES)
    pools, environment, trace = run_scenario(tp_pools, 0)
    assert pools == [[api, 1] for api, _ in before]
    assert environment == ["1"] * len(VARIABLES)  # for the libraries a process loads later
    assert trace == pytest.approx(EXPECTED_TRACE)
    assert _pools() == before
    assert not any(name in os.environ for name in VARIABLES)


def test_a_program_that_set_a_pools_variable_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _pools()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    pools, environment, trace = run_scenario(tp_pools, 0)
    assert pools == [list(pool) for pool in before]
    assert environment == ["3", None, None]
    assert trace == pytest.approx(EXPECTED_TRACE)
    assert os.environ["OMP_NUM_THREADS"] == "3" and "OPENBLAS_NUM_THREADS" not in os.environ
