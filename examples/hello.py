"""Upstream's hello example: add two floats in a worker process."""

from __future__ import annotations

import netmcore


class Add(netmcore.ProcessDef[tuple[float, float], float]):
    def run(self, arg: tuple[float, float]) -> float:
        return arg[0] + arg[1]


def main() -> float:
    result = netmcore.run(
        first_process=lambda: Add.start((3.0, 4.0)),
        extract_result=lambda _ctrl, pid: Add.join_nowait(pid),
    )
    if result is None:
        raise SystemExit("the Add process failed")
    print(f"Sum: {result:f}")
    return result


if __name__ == "__main__":
    main()
