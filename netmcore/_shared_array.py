"""SharedArray: a numpy array in a managed shm object, passed around by a handle.

The handle is a small frozen msgspec Struct (resource id, dtype, shape, order), so it
can be a field of a process's argument or result: the data never travels.
Made before ``run`` or in the master, the array is preallocated memory that
every worker started afterwards inherits; made in a worker, it is a shm object
that others open by resource id. The object starts with a header recording the
dtype, shape and order, so a handle that disagrees with it is refused. A structured
dtype is recorded whole (its fields, offsets and sub-arrays), as the text of
its ``descr``, or, for overlapping or out-of-order fields, which have none, of
the dict of names, formats, offsets and itemsize that numpy.dtype takes.
A read-only open maps the object again, read-only, once per process.

numpy is the optional ``numpy`` extra: without it, a clear error says how to
install it.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import math
import mmap
import operator
import os
import reprlib
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, TypeVar, overload

import msgspec

from . import _context, _ipc, _posix, _resource_api, _resources
from ._errors import NoResource
from ._ids import ResId
from ._wire import ResInfo, failed_of_its_own

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_Scalar = TypeVar("_Scalar", bound="np.generic")

_MAGIC = b"nmcarr03"
_resource_api.MARKS[_MAGIC] = "a SharedArray (the handle SharedArray.create returned opens it)"
# The header: this layout, the shape (one int64 a dimension), the dtype text,
# then padding up to a multiple of _ALIGN, where the data starts.
_LAYOUT = struct.Struct("=8sHBc")  # magic, length of the dtype text, dimensions, order
_ORDERS = ("C", "F")  # row-major (numpy's default), column-major (Fortran's)
_ALIGN = 64  # more than any dtype's alignment
_PREALLOCATED = _resources.ResourceType.POSIX_SHM_PREALLOCATED


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ImportError(
            "SharedArray needs numpy, which is an optional extra of netmcore: "
            "pip install 'netmcore[numpy]'"
        ) from None
    return numpy


class SharedArray(msgspec.Struct, frozen=True):
    """A handle on a numpy array that lives in shared memory.

    ::

        table = netmcore.SharedArray.create((100,), "int64")   # in any process
        worker.start(table)            # the handle travels, not the data
        ...
        table.open()[3] = 42           # a numpy view of the shared memory
        table.open(readonly=True)[3]   # 42, in a view that refuses writes

    Attributes
    ----------
    res_id : ResId
        The managed shm object holding it.
    dtype : str
        The array's numpy dtype, as a string numpy reads, like ``"<f8"``.
    shape : tuple[int, ...]
    preallocated : bool
        True when it was made before ``run`` or in the master: workers then
        inherit the mapping rather than open it.
    order : "C" or "F"
        How the elements lie in memory: row-major ("C", numpy's default) or
        column-major ("F", Fortran's), as numpy's ``order`` says.
    """

    res_id: ResId
    dtype: str
    shape: tuple[int, ...]
    preallocated: bool = False
    order: Literal["C", "F"] = "C"

    @classmethod
    def create(
        cls,
        shape: SupportsIndex | Sequence[SupportsIndex],
        dtype: npt.DTypeLike = "float64",
        order: Literal["C", "F"] = "C",
    ) -> SharedArray:
        """Make a zero-filled shared array (in the master: inherited by every
        worker started afterwards; in a worker: opened by the others).

        ``shape`` and ``dtype`` are what ``numpy.zeros`` takes: an integer or
        a tuple of them (numpy's too), any dtype that holds no Python
        objects; ``order`` is "C" (row-major, numpy's default) or "F"
        (column-major). The array has the dtype ``numpy.zeros`` gives:
        ``str`` or ``"U"`` is ``"<U1"``, ``bytes`` or ``"S"`` is ``"|S1"``.
        The handle's ``dtype`` of a structured dtype is the text of its
        ``descr``, like ``"[('a', '<i4'), ('b', '<f8')]"`` (for overlapping
        or out-of-order fields, that of its dict of names, formats, offsets
        and itemsize).
        """
        np = _numpy()
        caller = "SharedArray.create"
        dims = _dims(shape)
        _check_order(order, caller, _ORDERS)
        kind = _dtype_given(np, dtype, caller, "numpy.zeros")
        if kind.subdtype is not None:  # ("i4", (2,)): as numpy.zeros, more dimensions
            dims, kind = dims + kind.shape, kind.base
        try:  # numpy's own limit on dimensions (64), which open() would meet
            # The dtype numpy.zeros gives, which is not always the one asked
            # for: a str or bytes dtype without a size (str, bytes, "U", "S0")
            # becomes one of size 1 ("<U1", "|S1"). Recorded as asked, its
            # itemsize of 0 would make every open() fail.
            kind = np.empty((0,) * len(dims), kind).dtype
        except ValueError as exc:
            raise ValueError(
                f"shape of {len(dims)} dimensions is not valid: {exc}; pass fewer dimensions"
            ) from None
        text = _dtype_text(kind, dtype)
        size = _size(dims, kind, text)
        # Only its header is written now: the rest is taken as the program writes it.
        written = _data_offset(text, dims)
        _check_free(caller, dims, text, written, "Release shared objects no longer used")
        return cls._made(text, dims, order, size)

    @classmethod
    def from_array(
        cls,
        data: npt.ArrayLike,
        dtype: npt.DTypeLike | None = None,
        order: Literal["C", "F", "A", "K"] = "K",
    ) -> SharedArray:
        """A shared array that holds a copy of ``data``: what
        ``numpy.asarray(data, dtype)`` makes of it (a numpy array, nested
        lists, a scalar), its shape, dtype and values, made as :meth:`create`
        makes one.

        ``order`` is the copy's, as ``numpy.copy`` takes it: "C" (row-major),
        "F" (column-major), "A" ("F" if the data is Fortran-contiguous and
        not C-contiguous, else "C"), or "K", the default: the data's own
        layout, "F" if its strides grow from its first axis to its last,
        else "C" (a shared array is one or the other). Copying writes every
        page of the array at once, so the copy must fit in /dev/shm's free
        space: checked first (beside other programs, what is free may still
        change), as past it the process would be killed by SIGBUS.
        """
        np = _numpy()
        caller = "SharedArray.from_array"
        _check_order(order, caller, ("C", "F", "A", "K"))
        if dtype is not None:
            dtype = _dtype_given(np, dtype, caller, "numpy.asarray")
        try:
            array = np.asarray(data, dtype)
        except (TypeError, ValueError) as exc:  # ragged lists, say
            error = TypeError if isinstance(exc, TypeError) else ValueError
            raise error(
                f"{caller}: numpy cannot make an array of {_clipped(data)} ({exc}); pass "
                "a numpy array, or nested lists of one shape"
                + ("" if dtype is None else f" whose values fit dtype {dtype}")
            ) from exc
        if array.dtype.kind == "T":  # numpy's StringDType (first: it holds objects too)
            raise TypeError(
                f"{caller}: {_clipped(data)} is of numpy's variable-width dtype "
                f"{array.dtype}, whose strings lie outside the array, which cannot be "
                "shared; pass data.astype('U') (strings of one width)"
            )
        if array.dtype.hasobject:
            raise TypeError(
                f"{caller}: {_clipped(data)} makes a numpy array of dtype {array.dtype}, "
                "whose elements are Python objects (mixed types, None, or an integer past 64 "
                "bits, say), which cannot be shared; pass numbers of one type, strings or "
                "bytes, or give a dtype"
            )
        # (An array of one axis, or none, is both C- and F-contiguous: C.)
        column_major = order == "F" or (
            order != "C"
            and not array.flags.c_contiguous
            and (array.flags.f_contiguous or (order == "K" and _strides_grow(array)))
        )
        layout: Literal["C", "F"] = "F" if column_major else "C"
        text = _dtype_text(array.dtype, array.dtype)
        size = _size(array.shape, array.dtype, text, f"{caller}: ", "Pass less data")
        offset = _data_offset(text, array.shape)
        _check_free(caller, array.shape, text, offset + array.nbytes, "Pass less data")

        def fill(buffer: memoryview) -> None:
            _view(buffer, array.dtype, array.shape, layout, offset)[...] = array

        return cls._made(text, array.shape, layout, size, fill)

    @classmethod
    def _made(
        cls,
        text: str,
        dims: tuple[int, ...],
        order: Literal["C", "F"],
        size: int,
        fill: Callable[[memoryview], None] | None = None,
    ) -> SharedArray:
        """The shared array of dtype ``text`` and shape ``dims``, made in an
        object of ``size`` bytes, its header written, then ``fill`` (given
        its memory) run: none is left if anything fails or interrupts."""
        made: _resource_api.ShmSegment | _Use | None = None
        try:
            if _context.current.role == "worker":
                made = segment = _resource_api.create_shm(size)
                buffer, res_id, pre = segment.buffer, segment.res_id, False
                _keep[res_id.n] = segment
            else:
                # Made by the master (inherited by every worker started after),
                # and counted as this process's use, as a segment's would be.
                # Named as the objects this process manages (see the README).
                prefix = _resource_api._object_prefix()
                made = use = _resource_api._counted(
                    lambda: _resource_api._create(_PREALLOCATED, prefix, size),
                    lambda got: _resource_api._itself(_Use(ResId(got.res_id))),
                )
                res_id = use.res_id
                _used[res_id.n] = use
                buffer, pre = _mapping(res_id), True
            _write_header(buffer, text, dims, order)
            if fill is not None:
                fill(buffer)
            return cls(res_id, text, dims, pre, order)
        except BaseException:
            # A signal handler's exception before the caller has the array:
            # nobody could release the use it was made with. Released with a
            # second Ctrl-C held, and through other handlers' exceptions
            # (release is harmless to repeat); the entries go in the same
            # step: a Ctrl-C at their pops, before it, skipped the release.
            if made is not None:
                undone, done = made, []

                def undo() -> None:
                    _keep.pop(undone.res_id.n, None)
                    _used.pop(undone.res_id.n, None)
                    undone.release()
                    done.append(True)

                tries = 0
                while not done:
                    try:
                        _posix.with_signals_blocked(_posix.INTERRUPTS, undo)
                    except BaseException as exc:  # (the one being raised stays the first)
                        tries += 1
                        if not done and failed_of_its_own(exc, tries):
                            raise
            raise

    @overload
    def open(self, dtype: None = None, *, readonly: bool = False) -> npt.NDArray[Any]: ...
    @overload
    def open(
        self, dtype: type[_Scalar] | np.dtype[_Scalar], *, readonly: bool = False
    ) -> npt.NDArray[_Scalar]: ...
    def open(
        self, dtype: type[Any] | np.dtype[Any] | None = None, *, readonly: bool = False
    ) -> npt.NDArray[Any]:
        """The array, as a numpy view of the shared memory (no copy).

        ``dtype``, a numpy scalar type (``numpy.float64``, ``numpy.void`` for
        a structured array) or a ``numpy.dtype``, types the view for mypy, as
        ``NDArray[numpy.float64]``, and is checked: the array's elements must
        be of that type (in either byte order; a class of types, like
        ``numpy.floating``, fits them too).

        ``readonly=True`` gives a read-only view, of memory that this process
        maps read-only (through a descriptor opened read-only): a write
        raises numpy's ``ValueError: assignment destination is read-only``,
        and numpy refuses to make it, or any view made of it, writeable
        (``view.flags.writeable = True`` raises). A write that goes around
        numpy (ctypes, say) kills the process with SIGSEGV, and the mapping
        cannot be made writable (mprotect refuses). It is the view that is
        read-only, not the array: others (other processes, this one's
        writeable views) still write, and the view sees their writes, as it
        is the same memory, not a copy. The use it takes is the one a
        writeable open takes; the process's read-only mapping serves its
        later read-only opens too, and :meth:`release` lets it go (its views
        keep their memory).

        Raises
        ------
        NoResource
            If the array's resource is gone (released by everyone, destroyed),
            or it was not inherited.
        TypeError
            If ``dtype`` is not a numpy scalar type, or not the array's; if
            ``readonly`` is not a bool (before anything is taken).
        ValueError
            If this handle's dtype, shape or order disagree with the array's,
            its dtype is not one numpy reads, or its object is not an array.
            The process is then a user of the object only if it was before.
        OSError
            If a read-only open cannot map the array (too many open files,
            say). The process is then a user of it only if it was before.
        """
        _check_readonly(readonly)
        np = _numpy()
        kind = self._kind()  # before anything is taken: a forged handle takes nothing
        if dtype is not None:
            _check_scalar_type(np, dtype, kind)
        n = self.res_id.n
        read_only: list[tuple[mmap.mmap, memoryview]] = []

        def check(buffer: memoryview, name: str) -> None:
            self._check(buffer, kind)
            if readonly:  # part of the open: if it fails, a use taken here is given back
                mapping = _read_only.get(n)
                if mapping is None or mapping.closed:
                    mapping = _map_read_only(self.res_id, name, len(buffer))
                # Its view, made at once: a release from here on leaves it mapped.
                read_only.append((mapping, memoryview(mapping)))

        buffer = self._buffer(check)
        if readonly:
            mapping, buffer = read_only[-1]
            _read_only[n] = mapping  # for this process's next read-only opens
        # The data starts after the header's own text of the dtype, which may
        # spell it otherwise than this handle does ("<f8", "float64").
        text, shape, order = _read_header(buffer, self.res_id)
        return _view(buffer, kind, shape, order, _data_offset(text, shape))

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """``with handle:`` releases it at the end of the block (see :meth:`release`)."""
        self.release()

    def release(self) -> None:
        """Stop using it in this process; it goes when its last user releases.

        What it gives back is the use this process took through the array
        (its create, or its first open), as a Mailbox's or a segment's
        release does: in a process that never opened it, or released it
        already, it does nothing (harmless to repeat), and never ends a use
        of the object that the process has through another handle. Its
        read-only mapping, if it opened it read-only, goes first: unmapped
        now, or with the last of its views."""
        n = self.res_id.n
        # Let go first: a release cut short after this leaves the use alone,
        # which the next release gives back, and no mapping without a use.
        mapping = _read_only.pop(n, None)
        if mapping is not None:
            with contextlib.suppress(BufferError):  # a view lives: it goes with the last
                mapping.close()
        # Given back first, forgotten after: a release cut short (a signal
        # handler's exception) leaves its entry, and the next release (or
        # open: see _buffer) finishes it; given back twice, a use is given
        # back once (see _resource_api._Counted). Forgotten only while it is
        # still the entry: a signal handler's open that came meanwhile has
        # finished this release and taken a use of its own, which stays.
        segment = _keep.get(n)
        if segment is not None:
            segment.release()
            if _keep.get(n) is segment:
                _keep.pop(n, None)
        use = _used.get(n)
        if use is not None:
            use.release()
            if _used.get(n) is use:
                _used.pop(n, None)

    def _kind(self) -> Any:
        """This handle's dtype, as numpy has it; ValueError, naming the
        handle, for a text that is no dtype or an order that is none (a
        handle made by hand)."""
        if self.order not in _ORDERS:
            raise ValueError(
                f"{self!r} is not a valid handle: its order {self.order!r} is neither 'C' nor "
                "'F'; use the handle SharedArray.create returned"
            )
        try:
            return _dtype_of(self.dtype)
        except (SyntaxError, TypeError, ValueError, LookupError, RecursionError) as exc:
            raise ValueError(
                f"{self!r} is not a valid handle: its dtype {self.dtype[:200]!r} is not one "
                f"numpy reads ({type(exc).__name__}: {exc}); use the handle "
                "SharedArray.create returned"
            ) from None

    def _check(self, buffer: memoryview, kind: Any) -> None:
        """Raise ValueError unless ``buffer`` holds an array of this handle's
        dtype (``kind``) and shape."""
        dtype, shape, order = _read_header(buffer, self.res_id)
        if _dtype_of(dtype) != kind or shape != self.shape or order != self.order:
            said = _described(self.dtype, self.shape, self.order)
            held = _described(dtype, shape, order)
            raise ValueError(
                f"this handle says {said}, but the shared array {self.res_id!r} holds {held}: "
                "use its own handle"
            )

    def _buffer(self, check: Callable[[memoryview, str], None]) -> memoryview:
        """The array's memory, once ``check`` accepts it (given it and the
        name of its shm object): this process's use of it, taken if it had
        none. If ``check`` raises, a use taken here is given back (an
        object's header is known only once it is opened)."""
        n = self.res_id.n
        res_id = self.res_id
        if self.preallocated:
            use = _used.get(n)
            if use is not None and use.let_go:  # a release of it cut short: finished first
                self.release()
                use = None
            if use is not None:
                buffer = _mapping(res_id)
                check(buffer, _resources.table[n].name)
                return buffer

            def checked(got: ResInfo) -> tuple[_Use, _Use]:
                # Through the manager, which knows whether it still exists and
                # was inherited; the memory is the mapping inherited from it.
                check(_mapping(res_id), got.name)
                return _resource_api._itself(_Use(res_id))

            # A failure in checked gives back the use the answer granted,
            # unless the process had it before (see _resource_api._counted).
            _used[n] = _resource_api._counted(
                lambda: _resource_api._get(res_id, (_PREALLOCATED,)), checked, res_id
            )
            return _mapping(res_id)
        segment = _keep.get(n)
        if segment is not None:
            try:
                buffer = segment.buffer
            except ValueError:  # closed: a release of it cut short, finished first
                self.release()
                segment = None
            else:
                check(buffer, segment.name)
                return buffer

        def checked_segment(segment: _resource_api.ShmSegment) -> _resource_api.ShmSegment:
            check(segment.buffer, segment.name)
            return segment

        # No mark of its own (b""): the header's check says what is wrong,
        # naming the object's size. What it raises gives back the use.
        segment = _keep[n] = _resource_api.open_marked(res_id, b"", "shared array", checked_segment)
        return segment.buffer


class _Use(_resource_api._Counted):
    """This process's use of a preallocated array, counted as its handles on
    other objects are (see ``_resource_api._Uses``); its memory is the
    master's mapping, which every worker started after it inherits."""

    def __init__(self, res_id: ResId) -> None:
        self.res_id = res_id
        self.let_go = False  # its release has begun (see SharedArray._buffer)

    def release(self) -> None:
        self.let_go = True
        self._give_back()


# This process's uses of arrays, by resource id: the segments it has open,
# and the preallocated arrays it made or opened. Each open() of a handle
# reuses them, and the process counts as one user however often it opens;
# release() gives back what is here (an entry whose release was cut short
# stays, for the next release() or open() to finish). A forked child starts with none: what
# it inherits is its parent's (a worker's open is its own use, and its
# release ends no use of its parent's).
_keep: dict[int, _resource_api.ShmSegment] = {}
_used: dict[int, _Use] = {}
# Beside a use, the read-only mapping of the array, made by the process's
# first read-only open() and reused by the next ones (one descriptor and
# one mapping however many read-only views it holds); release() lets it go.
_read_only: dict[int, mmap.mmap] = {}
# C calls, not a function of ours: see _buffer's hooks.
os.register_at_fork(after_in_child=_keep.clear)
os.register_at_fork(after_in_child=_used.clear)
os.register_at_fork(after_in_child=_read_only.clear)


def _map_read_only(res_id: ResId, name: str, size: int) -> mmap.mmap:
    """The array's shm object ``name`` (of ``size`` bytes) mapped read-only,
    through a descriptor opened read-only: see :meth:`SharedArray.open`."""
    with _resource_api._gone_underneath(res_id, name), _resources.enomem_said_plainly(name, size):
        return _ipc.map_read_only(name)


def _check_readonly(readonly: object) -> None:
    if not isinstance(readonly, bool):  # 1 or "yes" would read as True, "no" too
        raise TypeError(
            f"SharedArray.open: readonly {_clipped(readonly)} is not valid: it must be a "
            f"bool, not {type(readonly).__name__}; pass readonly=True for a read-only view, "
            "or False (the default) for a writeable one"
        )


def _mapping(res_id: ResId) -> memoryview:
    entry = _resources.table.get(res_id.n)
    if entry is None or entry.mapping is None:
        raise NoResource(res_id, "its mapping is not in this process")
    return memoryview(entry.mapping)


def _dims(shape: object) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints, checked as numpy does (any
    integer, numpy's too), except that a bool is refused: True is no size."""
    if isinstance(shape, bool) or _index(shape) is not None:
        items: tuple[object, ...] = (shape,)
    elif isinstance(shape, Iterable) and not isinstance(shape, (str, bytes)):
        items = tuple(shape)
    else:  # a str is no sequence of dimensions: "34" is not (3, 4)
        raise TypeError(
            f"shape {shape!r} is not valid: pass an integer or a tuple of integers, "
            f"like 4 or (3, 4), not {type(shape).__name__}"
        )
    dims = []
    for d in items:
        size = None if isinstance(d, bool) else _index(d)  # np.bool_ has no __index__
        if size is None:
            # bool, or numpy's (named bool_ before numpy 2)
            is_bool = type(d).__name__ in ("bool", "bool_")
            what = "a bool, which is no size" if is_bool else "not an integer"
            raise TypeError(
                f"shape {shape!r} is not valid: its dimension {d!r} is {what}; pass a "
                "tuple of ints, like (3, 4)"
            )
        if size < 0:
            raise ValueError(
                f"shape {shape!r} is not valid: its dimension {d} is negative; pass "
                "non-negative ints, like (3, 4)"
            )
        dims.append(size)
    return tuple(dims)


def _size(
    dims: tuple[int, ...],
    kind: Any,
    text: str,
    caller: str = "",
    fix: str = "Choose a smaller shape or dtype",
) -> int:
    """The bytes of the shm object for an array, checked against what
    numpy and /dev/shm can hold before anything is made: /dev/shm's total
    size, not its free space (see ``_resources.size_problem``). The array is
    zero-filled sparsely: its pages are taken as they are written."""
    described = f"{caller}{_array_of(dims, text)}"
    recorded = len(text.encode())
    if len(dims) > 255 or recorded > 0xFFFF:  # the header's counts (numpy allows 64 dimensions)
        raise ValueError(
            f"{described} cannot be recorded: its header holds a dtype's text of at most "
            f"65,535 bytes, and this one's is {recorded:,}; pass a dtype with shorter field "
            "names"
        )
    too_long = [d for d in dims if d > _resources.OFF_T_MAX]
    if too_long:  # numpy's "Maximum allowed dimension exceeded"
        raise ValueError(
            f"{described} is too big: its dimension {too_long[0]:,} is over the "
            f"{_resources.OFF_T_MAX:,} (2**63-1) numpy allows; choose a smaller shape"
        )
    # numpy sizes an array as if each dimension of 0 were 1: the product of
    # the others, times the itemsize (unless it is 0), must fit np.intp even
    # when the array holds nothing, or every open() meets its "array is too
    # big". Past that with no dimension of 0, /dev/shm's limit is met below.
    np = _numpy()
    limit = int(np.iinfo(np.intp).max)
    counted = math.prod(d for d in dims if d) * int(kind.itemsize)
    if 0 in dims and counted > limit:
        raise ValueError(
            f"{described} is too big for numpy, though it holds nothing: numpy counts an "
            f"array's bytes as if each dimension of 0 were 1, which makes {counted:,} here "
            f"(its other dimensions times its itemsize, {kind.itemsize}), over the {limit:,} "
            "(np.intp's maximum) it allows; choose smaller dimensions beside the 0"
        )
    data = math.prod(dims) * int(kind.itemsize)
    size = _data_offset(text, dims) + max(1, data)
    problem = _resources.size_problem(size)
    if problem is not None:  # numpy.zeros: "array is too big", or MemoryError
        raise ValueError(
            f"{described} needs {size:,} bytes ({data:,} of data and its header), which is "
            f"too big: {problem}. {fix}{_resources.space_fix(size)}"
        )
    return size


def _index(value: object) -> int | None:
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _dtype_text(kind: Any, given: object) -> str:
    """The text that records ``kind`` (given as ``given``), checked to read
    back as ``kind``, as open() will read it, before anything is made."""
    # kind.str of a structured dtype is only its size ("|V12"): its descr keeps
    # the names, formats, offsets (as padding fields) and sub-array shapes.
    if kind.names is None:
        text = str(kind.str)
    else:
        try:
            text = repr(kind.descr)
        except ValueError:  # numpy has no descr for overlapping or out-of-order fields
            text = repr(_layout(kind))
        else:  # (for 3.12: see test_backedges)
            pass
    try:
        back = _dtype_of(text)
    except (SyntaxError, TypeError, ValueError):  # a title that is no literal, say
        back = None
    else:  # (for 3.12: see test_backedges)
        pass
    if back != kind:
        raise TypeError(
            f"dtype {given!r} cannot be shared: the text that records it, {text[:200]!r}, "
            "does not read back as it (a field title that is not a str, say); pass a dtype "
            "whose field titles, if any, are plain strings, like [('a', '<i4'), ('b', '<f8')]"
        )
    return text


def _layout(kind: Any) -> Any:
    """``kind`` as the literal numpy.dtype takes back: a structured dtype as
    its dict of names, formats, offsets, itemsize (and titles), which holds any
    layout, overlapping or out-of-order fields included."""
    if kind.subdtype is not None:
        base, shape = kind.subdtype
        return (_layout(base), shape)
    if kind.names is None:
        return kind.str
    fields = [kind.fields[name] for name in kind.names]
    layout = {
        "names": list(kind.names),
        "formats": [_layout(field[0]) for field in fields],
        "offsets": [field[1] for field in fields],
        "itemsize": kind.itemsize,
    }
    titles = [field[2] if len(field) > 2 else None for field in fields]
    if any(title is not None for title in titles):
        layout["titles"] = titles
    return layout


def _dtype_of(text: str) -> Any:
    np = _numpy()
    if text.startswith("["):
        return np.lib.format.descr_to_dtype(ast.literal_eval(text))
    if text.startswith("{"):
        return np.dtype(ast.literal_eval(text))
    return np.dtype(text)


def _data_offset(dtype: str, shape: tuple[int, ...]) -> int:
    end = _LAYOUT.size + 8 * len(shape) + len(dtype.encode())
    return -(-end // _ALIGN) * _ALIGN


def _write_header(buffer: memoryview, dtype: str, shape: tuple[int, ...], order: str) -> None:
    text = dtype.encode()
    _LAYOUT.pack_into(buffer, 0, _MAGIC, len(text), len(shape), order.encode())
    struct.pack_into(f"={len(shape)}q{len(text)}s", buffer, _LAYOUT.size, *shape, text)


def _read_header(buffer: memoryview, res_id: ResId) -> tuple[str, tuple[int, ...], str]:
    """The dtype's text, the shape and the order recorded in an array's header."""
    if buffer[: len(_MAGIC)] != _MAGIC:
        raise ValueError(
            f"resource {res_id!r} is not a shared array: it is {_resource_api.found_in(buffer)}"
        )
    fits = len(buffer) >= _LAYOUT.size
    _, length, ndim, order = _LAYOUT.unpack_from(buffer, 0) if fits else (0, 0, 0, b"C")
    body = struct.Struct(f"={ndim}q{length}s")
    # Either is something that wrote over it, by a program's own writes.
    if len(buffer) < _LAYOUT.size + body.size:
        raise ValueError(
            f"resource {res_id!r} has a shared array's mark, but its header does not fit in "
            f"its {len(buffer)} bytes: something wrote over it; make the array again"
        )
    if order not in (b"C", b"F"):
        raise ValueError(
            f"resource {res_id!r} has a shared array's mark, but its header's order, {order!r}, "
            "is neither C nor F: something wrote over it; make the array again"
        )
    *shape, text = body.unpack_from(buffer, _LAYOUT.size)
    return text.decode(), tuple(shape), order.decode()


def _described(dtype: str, shape: tuple[int, ...], order: str) -> str:
    """An array's dtype and shape, and its order when it is not numpy's default."""
    column_major = ", column-major (order 'F')" if order == "F" else ""
    return f"dtype {dtype} and shape {shape}{column_major}"


def _view(
    buffer: memoryview, kind: Any, shape: tuple[int, ...], order: str, offset: int
) -> npt.NDArray[Any]:
    """The numpy array of ``kind``, ``shape`` and ``order`` whose data starts
    at ``offset`` in ``buffer``: a view of it, no copy."""
    np = _numpy()
    if kind.itemsize == 0:
        # numpy.frombuffer refuses an itemsize of 0 ("V0", which numpy.zeros
        # takes); such an array reads no memory, so none can go under it.
        empty: npt.NDArray[Any] = np.ndarray(
            shape, dtype=kind, buffer=buffer, offset=offset, order=order
        )
        return empty
    # numpy.frombuffer holds the memory's buffer, which ndarray(buffer=...)
    # lets go at once: a view kept after release() then read and wrote
    # unmapped memory (a SIGSEGV), or another array mapped there since.
    # Held, the mapping stays until the last view goes (see ShmSegment.close).
    flat = np.frombuffer(buffer, dtype=kind, count=math.prod(shape), offset=offset)
    array: npt.NDArray[Any] = flat.reshape(shape + kind.shape, order=order)
    return array  # (a sub-array dtype adds its own dimensions, last)


def _check_order(order: object, caller: str, orders: tuple[str, ...]) -> None:
    if order not in orders:
        said = ", ".join(repr(o) for o in orders[:-1]) + f" or {orders[-1]!r}"
        raise ValueError(
            f"{caller}: order {order!r} is not valid: pass {said} ('C' is row-major, "
            "numpy's default; 'F' column-major, Fortran's)"
        )


def _dtype_given(np: Any, dtype: object, caller: str, like: str) -> Any:
    """``dtype`` as numpy has it, one that holds no Python objects; a
    TypeError that names the caller otherwise."""
    try:
        kind = np.dtype(dtype)
    except TypeError as exc:  # numpy's words alone did not say whose call it was
        raise TypeError(
            f"{caller}: dtype {dtype!r} is not a numpy dtype ({exc}); pass what {like} "
            "takes, such as 'f8', numpy.float64 or 'i4'"
        ) from None
    if kind.hasobject or kind.kind == "T":
        raise TypeError(
            f"{caller}: dtype {dtype!r} holds Python objects or strings outside the array, "
            "which cannot be shared; pass a dtype of numbers, fixed-width strings ('U8', "
            "'S8') or fields of those"
        )
    return kind


def _strides_grow(array: Any) -> bool:
    """Whether the axes of ``array`` (those of more than one element) lie
    column-major in memory: their strides grow from the first to the last,
    so that numpy's order "K" would copy it column-major."""
    strides = [abs(s) for s, n in zip(array.strides, array.shape, strict=True) if n > 1]
    return len(strides) > 1 and all(a <= b for a, b in itertools.pairwise(strides))


def _check_free(caller: str, dims: tuple[int, ...], text: str, written: int, fix: str) -> None:
    """Raise ValueError, with ``fix``, if the pages of the ``written`` bytes
    an array's making writes at once (its header, or all of it) do not fit
    in /dev/shm's free space: writing them, the process would die of SIGBUS."""
    pages = -(-max(1, written) // mmap.PAGESIZE) * mmap.PAGESIZE
    problem = _resources.free_problem(pages)
    if problem is not None:
        raise ValueError(
            f"{caller}: {_array_of(dims, text)} writes {pages:,} bytes at once (the pages of "
            f"its header{'' if written <= _data_offset(text, dims) else ' and data'}), which "
            f"is too much: {problem}. {fix}{_resources.SHM_ROOM_FIX}"
        )


def _array_of(dims: tuple[int, ...], text: str) -> str:
    return f"a shared array of shape {dims} and dtype {text[:200]}"


def _check_scalar_type(np: Any, dtype: object, kind: Any) -> None:
    """Raise TypeError unless an array of ``kind`` holds elements of
    ``dtype``: a numpy scalar type (or a class of them), or a numpy dtype,
    in either byte order."""
    if isinstance(dtype, np.dtype):
        asked, name = dtype, str(dtype)
    elif isinstance(dtype, type) and issubclass(dtype, np.generic):
        if issubclass(kind.type, dtype):
            return
        name = f"numpy.{dtype.__name__}"
        try:  # (numpy.longlong is no class of numpy.int64's, but its dtype is int64's)
            asked = np.dtype(dtype)
        except TypeError:  # a class of types, like numpy.floating
            asked = None
    else:
        named = dtype.__name__ if isinstance(dtype, type) else repr(dtype)
        raise TypeError(
            f"SharedArray.open: dtype {named} is not a numpy scalar type or dtype; pass one, "
            f"like numpy.{kind.type.__name__} for this array, or nothing"
        )
    if asked is None or asked.newbyteorder("=") != kind.newbyteorder("="):
        raise TypeError(
            f"SharedArray.open: the array holds {kind} (numpy.{kind.type.__name__}), not "
            f"{name}: pass numpy.{kind.type.__name__}, or nothing"
        )


def _clipped(data: object) -> str:
    """``data``'s repr, short enough for an error message, and made at a
    cost that does not grow with it (a list's own repr does)."""
    return reprlib.repr(data)
