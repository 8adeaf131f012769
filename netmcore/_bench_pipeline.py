"""The pipeline part of ``netmcore bench``: small items through 3 stages, against
a chain of ``multiprocessing`` pools (``imap``) doing the same work."""

from __future__ import annotations

import multiprocessing
import time

from ._bench_support import in_first_process
from ._pipeline import Pipeline
from ._process import process

ITEMS = 20_000


def _step(k: int) -> int:
    return k + 1


@process
def _stage(k: int) -> int:
    return _step(k)


@process
def _through_pipeline(count: int) -> float:
    pipeline = Pipeline(_stage).then(_stage).then(_stage)
    t0 = time.perf_counter()
    total = sum(pipeline.run(range(count), progress=False))
    elapsed = time.perf_counter() - t0
    assert total == sum(range(count)) + 3 * count
    return count / elapsed


def pipeline_rate(count: int = ITEMS) -> float:
    return in_first_process(_through_pipeline, count)


def pool_chain_rate(count: int = ITEMS) -> float:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as a, ctx.Pool(1) as b, ctx.Pool(1) as c:
        t0 = time.perf_counter()
        total = sum(c.imap(_step, b.imap(_step, a.imap(_step, range(count)))))
        elapsed = time.perf_counter() - t0
    assert total == sum(range(count)) + 3 * count
    return count / elapsed
