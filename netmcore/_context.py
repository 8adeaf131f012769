"""Which kind of netmcore process this is: none, the master, or a worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ._master import Master
    from ._wire import Link


@dataclass
class Context:
    role: Literal["none", "master", "worker"] = "none"
    master: Master | None = None
    link: Link | None = None
    process_id: int | None = None
    shm_prefix: str = ""


current = Context()
