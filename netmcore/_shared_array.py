"""SharedArray: a numpy array in a managed shm object, passed around by a handle.

The handle is a small frozen msgspec Struct (resource id, dtype, shape), so it
can be a field of a process's argument or result: the data never travels.
Made before ``run`` or in the master, the array is preallocated memory that
every worker started afterwards inherits; made in a worker, it is a shm object
that others open by resource id. The object starts with a header recording the
dtype and shape, so a handle that disagrees with it is refused.

numpy is the optional ``numpy`` extra: without it, a clear error says how to
install it.
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Any

import msgspec

from . import _context, _resource_api, _resources
from ._errors import NoResource
from ._ids import ResId

if TYPE_CHECKING:
    import numpy.typing as npt

_MAGIC = b"nmcarr01"
_HEADER = 256  # bytes before the data: magic, dtype, shape; keeps the data aligned
_LAYOUT = struct.Struct("=8s32sB")  # magic, dtype string, number of dimensions


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

    Attributes
    ----------
    res_id : ResId
        The managed shm object holding it.
    dtype : str
        A numpy dtype string, like ``"float64"`` or ``"<i4"``.
    shape : tuple[int, ...]
    preallocated : bool
        True when it was made before ``run`` or in the master: workers then
        inherit the mapping rather than open it.
    """

    res_id: ResId
    dtype: str
    shape: tuple[int, ...]
    preallocated: bool = False

    @classmethod
    def create(cls, shape: tuple[int, ...] | int, dtype: str = "float64") -> SharedArray:
        """Make a zero-filled shared array (in the master: inherited by every
        worker started afterwards; in a worker: opened by the others)."""
        np = _numpy()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not all(isinstance(d, int) and d >= 0 for d in shape):  # type: ignore[redundant-expr]
            raise ValueError(f"shape {shape!r} is not valid: use non-negative ints")
        kind = np.dtype(dtype)
        if kind.hasobject:
            raise TypeError(f"dtype {dtype!r} holds Python objects, which cannot be shared")
        if len(kind.str) > 32 or len(shape) > (_HEADER - _LAYOUT.size) // 8:
            raise ValueError(f"dtype {dtype!r} or shape {shape!r} is too large to record")
        size = _HEADER + max(1, math.prod(shape) * kind.itemsize)
        if _context.current.role == "worker":
            segment = _resource_api.create_shm(size)
            buffer, res_id, pre = segment.buffer, segment.res_id, False
            _keep[res_id.n] = segment
        else:
            res_id, _ = _resource_api.create_preallocated_shm("/nmc-array", size)
            buffer, pre = _mapping(res_id), True
        _write_header(buffer, kind.str, shape)
        return cls(res_id, kind.str, shape, pre)

    def open(self) -> npt.NDArray[Any]:
        """The array, as a numpy view of the shared memory (no copy).

        Raises
        ------
        NoResource
            If the array's resource is gone (released by everyone, destroyed),
            or it was not inherited.
        ValueError
            If this handle's dtype or shape disagree with the array's.
        """
        np = _numpy()
        buffer = self._buffer()
        dtype, shape = _read_header(buffer, self.res_id)
        if np.dtype(dtype) != np.dtype(self.dtype) or shape != self.shape:
            raise ValueError(
                f"this handle says dtype {self.dtype} and shape {self.shape}, but the shared "
                f"array {self.res_id!r} holds dtype {dtype} and shape {shape}: use its own "
                "handle"
            )
        count = math.prod(shape)
        array = np.frombuffer(buffer, dtype=dtype, count=count, offset=_HEADER)
        result: npt.NDArray[Any] = array.reshape(shape)
        return result

    def release(self) -> None:
        """Stop using it in this process; it goes when its last user releases."""
        _got.discard(self.res_id.n)
        segment = _keep.pop(self.res_id.n, None)
        if segment is not None:
            segment.release()
        else:
            _resource_api.release(self.res_id)

    def _buffer(self) -> memoryview:
        if self.preallocated:
            if self.res_id.n not in _got:
                # The manager knows whether it still exists and was inherited.
                _resource_api.get_resource(self.res_id)
                _got.add(self.res_id.n)
            return _mapping(self.res_id)
        segment = _keep.get(self.res_id.n)
        if segment is None:
            segment = _keep[self.res_id.n] = _resource_api.open_shm(self.res_id)
        return segment.buffer


# The segments this process has open, by resource id: each open() of a handle
# reuses its mapping, and the process counts as one user however often it opens.
_keep: dict[int, _resource_api.ShmSegment] = {}
_got: set[int] = set()  # preallocated arrays this process has got


def _mapping(res_id: ResId) -> memoryview:
    entry = _resources.table.get(res_id.n)
    if entry is None or entry.mapping is None:
        raise NoResource(res_id, "its mapping is not in this process")
    return memoryview(entry.mapping)


def _write_header(buffer: memoryview, dtype: str, shape: tuple[int, ...]) -> None:
    _LAYOUT.pack_into(buffer, 0, _MAGIC, dtype.encode(), len(shape))
    struct.pack_into(f"={len(shape)}q", buffer, _LAYOUT.size, *shape)


def _read_header(buffer: memoryview, res_id: ResId) -> tuple[str, tuple[int, ...]]:
    magic, dtype, ndim = _LAYOUT.unpack_from(buffer, 0)
    if magic != _MAGIC:
        raise ValueError(f"resource {res_id!r} is not a shared array")
    shape = struct.unpack_from(f"={ndim}q", buffer, _LAYOUT.size)
    return dtype.rstrip(b"\0").decode(), tuple(shape)
