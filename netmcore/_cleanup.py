"""Crash cleanup: the pmanage record, as upstream keeps it.

Upstream writes every kernel object it manages into ``netplex.pmanage`` in the
socket directory, and unlinks what is still listed at the next start. netmcore
does the same (``netmcore.pmanage``: ``+``/``-`` lines, mode 0600, compacted
as it goes). The watchdog (``_watchdog``) acts on the record at once when a
master dies, without waiting for a next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat

from . import _ipc, _resources
from ._debug import log
from ._errors import SocketDirectoryError
from ._posix import VALID_SIGNALS, with_signals_blocked
from ._resources import ResourceType

PMANAGE_NAME = "netmcore.pmanage"
_PREFIX_KIND = "prefix"  # a payload prefix: every object whose name starts with it


class Record:
    """The record of managed kernel objects (one writer: the master).

    Lines are appended (``+`` when an object is taken in, ``-`` when it goes),
    and the file is compacted, so that it stays in proportion to what is
    live: a long-running master that makes and releases objects all day
    would otherwise fill the disk, and make a crash's cleanup (which reads
    every line, holding the directory's lock) as slow as the day was long.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        # What an earlier, crashed master left and nobody unlinked (no_unlink):
        # it stays listed after this run, for a later start to clean.
        listed, self.lines = _load(path)
        self.inherited = list(listed)
        self.live = listed  # what the record lists now, inherited or ours
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(self.fd, 0o600)
        self.torn = False  # the last write ended part-way through its line

    def write(self, op: str, kind: str, name: str) -> None:
        """Append a line; raise (OSError: a full disk, a file size limit) if
        it is not all written, and the object is then not made (``+``)."""
        line = f"{op} {kind} {json.dumps(name)}\n".encode()
        # After a line cut short, a line break first: else this line would
        # run on from the torn one, and both be skipped as no entry.
        data = memoryview(b"\n" + line if self.torn else line)
        self.torn = True
        while data:
            data = data[os.write(self.fd, data) :]
        self.torn = False
        self.lines += 1
        if op == "+":
            self.live[kind, name] = None
        else:
            self.live.pop((kind, name), None)
        if self.lines - len(self.live) > max(COMPACT_AT, COMPACT_RATIO * len(self.live)):
            self.compact()

    def compact(self) -> None:
        """Rewrite the record as just what it lists now.

        Crash-safe: the live set goes to a new file that then replaces the
        record in one rename, so whenever the master dies, the record's path
        names a complete record, the old one or the new one; and the new one
        is the one written to from then on (it was opened before the rename,
        so nothing can fail after it). A compaction costs O(live) and comes
        after more than COMPACT_RATIO * live lines of churn: O(1) per line,
        amortised.
        """
        self.lines = len(self.live)  # if it fails, it is tried again after as much churn
        # Every signal held back from the new file's open to the switch of
        # descriptors: a handler's exception in between (as the rename
        # returns) left the record's lines going to the old file, no longer
        # at the path, and a handler's TimeoutError (an OSError) passed for
        # a failed rename; one before the rename (as the open returned) left
        # the new file's descriptor open, and the file beside the record.
        with_signals_blocked(VALID_SIGNALS, self._compact)

    def _compact(self) -> None:
        try:
            fd = _write_record(self.path + _TMP_SUFFIX, list(self.live))
        except OSError as exc:
            log.warning("netmcore: could not compact the record %s: %s", self.path, exc)
            return
        error = self._switch_to(fd)
        if error is not None:
            log.warning("netmcore: could not compact the record %s: %s", self.path, error)

    def _switch_to(self, fd: int) -> OSError | None:
        """Rename the compacted record (open at ``fd``) over the record, and
        append to it from then on; the error, if the rename failed."""
        try:
            os.replace(self.path + _TMP_SUFFIX, self.path)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path + _TMP_SUFFIX)
            return exc
        # At the same number: the master gave it to _fds, which every worker
        # closes after its fork.
        os.dup2(fd, self.fd, inheritable=False)
        os.close(fd)
        return None

    def close(self, *, clean: bool) -> None:
        """Close it. After a ``clean`` end, what this run recorded is no longer
        anybody's to clean (what is left belongs to the living program), so only
        the inherited leftovers are to stay listed: that record is made here,
        beside this one, and :func:`finish_record` puts it in place (the
        watchdog does, as it stands down: see :meth:`Watchdog.stand_down`)."""
        os.close(self.fd)
        if not clean:
            return
        try:  # empty if nothing is to stay listed (over a failed compaction's)
            os.close(_write_record(self.path + _TMP_SUFFIX, self.inherited))
        except OSError as exc:
            # No record, rather than one that lists what this living program
            # keeps: the next start in the directory would unlink it.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            log.warning(
                "netmcore: could not write the record %s at the end of run (%s): it is removed%s",
                self.path,
                exc,
                "; these objects a crashed master left are no longer listed in it: "
                + ", ".join(name for _, name in self.inherited)
                if self.inherited
                else "",
            )


def finish_record(path: str) -> None:
    """After a clean end: replace the record ``path`` with what ``Record.close``
    made beside it, and remove it if that lists nothing. Harmless to repeat
    (the master does, if its watchdog may have died before it answered)."""
    try:
        os.replace(path + _TMP_SUFFIX, path)
    except FileNotFoundError:
        return  # done already
    if os.stat(path).st_size == 0:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# The record is compacted once its lines for objects that are gone outnumber
# the live entries COMPACT_RATIO to 1, and COMPACT_AT (~110 kB) at least.
COMPACT_RATIO = 4
COMPACT_AT = 1000
_TMP_SUFFIX = ".tmp"  # a record being made, to be renamed over the record when complete


def _write_record(path: str, entries: list[tuple[str, str]]) -> int:
    """Write a record that lists ``entries`` to a new file ``path``; return
    its descriptor, open for appending. Nothing is left if it fails."""
    data = memoryview("".join(f"+ {kind} {json.dumps(name)}\n" for kind, name in entries).encode())
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        while data:
            data = data[os.write(fd, data) :]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return fd


def pending(path: str) -> list[tuple[str, str]]:
    """The (kind, name) pairs a record still lists, in the order they were added.

    Raises
    ------
    SocketDirectoryError
        If the record is not a regular file of the user's that only the user
        can write: its entries name what is to be removed, so anyone who can
        write it could have the user remove any of the user's files.
    """
    return list(_load(path)[0])


def _load(path: str) -> tuple[dict[tuple[str, str], None], int]:
    """What a record lists (see :func:`pending`), and how many lines it has."""
    listed: dict[tuple[str, str], None] = {}
    lines = _read_record(path).splitlines()
    for line in lines:
        if not line:  # before a line that followed a torn one (see Record.write)
            continue
        entry = _parse(line)
        if entry is None:
            log.warning("netmcore: skipped a line of %s that is no record entry: %r", path, line)
            continue
        op, kind, name = entry
        if op == "+":
            listed[kind, name] = None
        else:
            listed.pop((kind, name), None)
    return listed, len(lines)


def _read_record(path: str) -> bytes:
    """The record's bytes (none if there is no record); see :func:`pending`."""
    try:
        # Not through a symlink, and never blocking on a FIFO planted there.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise SocketDirectoryError(
            f"cannot read the record {path!r} ({exc.strerror or exc}): nothing it lists "
            "was removed; look at it, and remove it"
        ) from exc
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise SocketDirectoryError(
                f"the record {path!r} is not a regular file of yours that only you can "
                f"write (mode {stat.S_IMODE(st.st_mode):o}, uid {st.st_uid}): nothing it "
                "lists was removed; look at it, and remove it"
            )
        return f.read()


def _parse(line: bytes) -> tuple[str, str, str] | None:
    """A record line's op, kind and name; None for a line that is none (torn
    by a crash, or not written by netmcore)."""
    try:
        op, kind, raw = line.decode().split(" ", 2)
        name = json.loads(raw)
    except ValueError:  # also not UTF-8, or not JSON
        return None
    if op not in ("+", "-") or not isinstance(name, str):
        return None
    return op, kind, name


def unlink_pending(path: str) -> list[str]:
    """Unlink whatever a record still lists, remove the record, and say what went.

    An entry that cannot be unlinked (a kind of another version of netmcore,
    a file that is now a directory, one the user may not remove) is logged and
    left: it must not keep the entries after it, or the next start, from going
    ahead. The record goes anyway, so it is reported once.
    """
    removed = []
    for kind, name in pending(path):
        try:
            if kind == _PREFIX_KIND:
                removed += _ipc.unlink_prefix(name)
            elif _resources.unlink_object(ResourceType(kind), name):
                removed.append(name)
        except (OSError, ValueError) as exc:  # ValueError: a kind this version does not know
            log.warning(
                "netmcore: could not unlink %s %r, listed in %s: %s; remove it yourself "
                "if it is a leftover",
                kind,
                name,
                path,
                exc,
            )
    for done in (path, path + _TMP_SUFFIX):  # and what a compaction cut short left
        with contextlib.suppress(FileNotFoundError):
            os.unlink(done)
    return removed


def record_prefix(record: Record, prefix: str) -> None:
    record.write("+", _PREFIX_KIND, prefix)
