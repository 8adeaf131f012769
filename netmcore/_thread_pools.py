"""One thread for the native thread pools of each process (BLAS, OpenMP).

numpy's and scipy's BLAS (OpenBLAS, MKL, BLIS) and OpenMP start a pool of one
thread per core. With a process per item on every core, each process's pool
competes with the others' for the same cores, and its threads spin as they
wait: a port measured 20 ``eigvalsh(400x400)`` items on 2 workers at 5.5 s
against 0.2 s with one thread each. Dask's and Ray's workers run their pools
at one thread for that reason, and loky's at a share of the cores: the
parallelism comes from the processes. So, for the length of a run, the pools
of the libraries loaded already are set to one thread (the workers, forks of
the master, inherit that), and the environment tells the libraries a process
loads later to start with one. A program that has set any of these variables
chose for itself, and is left alone; a process that wants more threads (one
alone on the machine) asks ``threadpoolctl.threadpool_limits(n)``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import threadpoolctl

# What the pools read as their library loads (OpenMP's covers MKL's and BLIS's
# when they run on it; Accelerate's is veclib's; numexpr has its own).
VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


@contextlib.contextmanager
def one_thread_each() -> Iterator[None]:
    """For a run: one thread for the pools of the libraries loaded already,
    and for those loaded later; as the program had them after (see above)."""
    if any(name in os.environ for name in VARIABLES):
        yield
        return
    try:
        os.environ.update(dict.fromkeys(VARIABLES, "1"))
        with threadpoolctl.threadpool_limits(limits=1):
            yield
    finally:
        for name in VARIABLES:
            os.environ.pop(name, None)
