"""A 1-D heat equation stepped by long-lived workers that meet at a barrier.

Each worker owns a slice of the rod. The temperatures live in two shared
arrays, read from one and written to the other, which swap roles each step;
a PluginBarrier holds every worker until all have written the step, so that
none reads a neighbour's cells before they are there. A worker that fails
breaks the barrier, and the others stop with a BrokenBarrierError instead of
waiting for it for ever. The first process checks the result against the
same steps computed in one process. (numpy is the ``numpy`` extra.)

    python examples/heat.py [CELLS] [STEPS] [WORKERS]   # 10000 200 2 by default
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import msgspec
import numpy as np

import netmcore

ALPHA = 0.25  # the diffusion number: below 0.5, the explicit scheme is stable


class Slice(msgspec.Struct, frozen=True):
    rods: tuple[netmcore.SharedArray, netmcore.SharedArray]
    start: int
    stop: int
    steps: int
    workers: int


def step(src: np.ndarray, dst: np.ndarray, start: int, stop: int) -> None:
    """One explicit step of cells [start, stop) (the two ends stay fixed)."""
    lo, hi = max(start, 1), min(stop, len(src) - 1)
    dst[lo:hi] = src[lo:hi] + ALPHA * (src[lo - 1 : hi - 1] - 2 * src[lo:hi] + src[lo + 1 : hi + 1])


@netmcore.process
def worker(part: Slice) -> int:
    barrier = netmcore.PluginBarrier("heat.step", part.workers)
    barrier.create()  # a party from here on: its failure breaks the barrier
    rods = [rod.open() for rod in part.rods]
    for k in range(part.steps):
        step(rods[k % 2], rods[(k + 1) % 2], part.start, part.stop)
        barrier.wait()
    for rod in part.rods:
        rod.release()
    return part.stop - part.start


def initial(cells: int) -> np.ndarray:
    rod = np.zeros(cells)
    rod[0], rod[cells // 2] = 100.0, 50.0  # a hot end, and a hot spot
    return rod


@netmcore.process
def first(shape: tuple[int, int, int]) -> float:
    cells, steps, workers = shape
    rods = (netmcore.SharedArray.create(cells, "f8"), netmcore.SharedArray.create(cells, "f8"))
    views = [rod.open() for rod in rods]
    views[0][:] = views[1][:] = initial(cells)
    bounds = np.linspace(0, cells, workers + 1).astype(int)
    parts = [
        Slice(rods, int(bounds[i]), int(bounds[i + 1]), steps, workers) for i in range(workers)
    ]
    done = sum(worker.result(pid) for pid in [worker.start(part) for part in parts])
    assert done == cells
    # The same steps in one process.
    alone = [initial(cells), initial(cells)]
    for k in range(steps):
        step(alone[k % 2], alone[(k + 1) % 2], 0, cells)
    error = float(np.abs(views[steps % 2] - alone[steps % 2]).max())
    for rod in rods:
        rod.release()
    return error


def _count(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not valid: give {low} or more")
        return value

    return parse


def main(cells: int, steps: int, workers: int) -> None:
    if cells < workers:
        raise SystemExit(f"{cells} cells cannot be shared by {workers} workers: give more cells")
    error = netmcore.run(
        first_process=lambda: first.start((cells, steps, workers)),
        extract_result=lambda _ctrl, pid: first.result(pid, timeout=0),
        init_ctrl=netmcore.add_plugins,
    )
    print(f"{cells} cells, {steps} steps, {workers} workers: ", end="")
    print(f"max difference {error:.3g} from one process")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", nargs="?", type=_count(1), default=10_000)
    parser.add_argument("steps", nargs="?", type=_count(0), default=200)
    parser.add_argument("workers", nargs="?", type=_count(1), default=2)
    args = parser.parse_args()
    main(args.cells, args.steps, args.workers)
