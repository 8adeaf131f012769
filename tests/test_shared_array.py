"""SharedArray: numpy arrays in managed shared memory, passed by handle."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np
import pytest
from interrupting import at_every_point
from scenario import joined, outcome_text, own_shm_entries, shm_partly_used, shm_space

import netmcore
from netmcore import (
    SharedArray,
)
from netmcore._shared_array import _LAYOUT, _MAGIC, _data_offset

# Made before run (by the fixture below, just before this module's tests, so that
# no other module's destroy_resources() gets it first): the master's, inherited by
# every worker started afterwards.
_table: list[SharedArray] = []


@pytest.fixture(scope="module", autouse=True)
def table() -> Iterator[SharedArray]:
    _table.append(SharedArray.create((4, 3), "int64"))
    yield _table[0]
    _table.pop().release()


class Job(msgspec.Struct, frozen=True):
    row: int
    table: SharedArray  # a handle is a field like any other


def run(first: Any, arg: Any) -> Any:
    outcome = netmcore.run(
        first_process=lambda: first.start(arg),
        extract_result=lambda _c, pid: first.join_outcome_nowait(pid),
    )
    assert isinstance(outcome, netmcore.Success), outcome
    return outcome.value


@netmcore.process
def fill_row(job: Job) -> int:
    job.table.open()[job.row] = job.row + 1
    return job.row


@netmcore.process
def fill_all(_: int) -> list[list[int]]:
    for row in range(4):
        fill_row.join(fill_row.start(Job(row, _table[0])))
    return [[int(x) for x in r] for r in _table[0].open()]


def test_array_made_before_run_is_shared_by_every_worker(table: SharedArray) -> None:
    assert run(fill_all, 0) == [[1] * 3, [2] * 3, [3] * 3, [4] * 3]
    # The master sees the workers' writes too: it is the same memory.
    assert table.open().sum() == 3 * (1 + 2 + 3 + 4)
    assert table.preallocated


@netmcore.process
def make(n: int) -> SharedArray:
    array = SharedArray.create(n, "float32")
    array.open()[:] = np.arange(n, dtype=np.float32)
    return array  # the handle travels; the data stays where it is


@netmcore.process
def total(array: SharedArray) -> float:
    value = float(array.open().sum())
    array.release()
    return value


@netmcore.process
def share_down(n: int) -> list[Any]:
    # The maker's array lives while someone uses it: the first process keeps it.
    array = SharedArray.create(n, "float32")
    array.open()[:] = 1.5
    got = [total.join(total.start(array)), array.preallocated, array.dtype, array.shape]
    array.release()
    made = make.join(make.start(n))
    assert made is not None
    try:
        made.open()  # its maker ended: nobody used it any more, it is gone
    except netmcore.NoResource as exc:
        got.append(str(exc))
    return got


def test_array_made_in_a_worker_is_opened_by_others_through_its_handle() -> None:
    got = run(share_down, 10)
    assert got[:4] == [15.0, False, "<f4", [10]]
    assert "destroyed when process" in got[4]
    assert "netmcore.hand_over(ResId(" in got[4]


@netmcore.process
def make_and_hand_over(n: int) -> SharedArray:
    array = SharedArray.create(n, "float32")
    array.open()[:] = np.arange(n, dtype=np.float32)
    netmcore.hand_over(array.res_id)  # it outlives this process, for the joiner
    return array


@netmcore.process
def take_over(n: int) -> list[Any]:
    made = make_and_hand_over.join(make_and_hand_over.start(n))
    assert made is not None
    got: list[Any] = [[float(x) for x in made.open()]]
    made.release()  # the joiner took it over: its release is the last
    try:
        made.open()
    except netmcore.NoResource as exc:
        got.append(type(exc).__name__)
    return got


def test_an_array_handed_over_by_its_maker_is_taken_over_by_its_joiner() -> None:
    """A worker's result may carry the handle of an array it made, handed
    over: the joiner opens it after the maker has ended, and its release
    destroys it (the /dev/shm fixture sees nothing left)."""
    assert run(take_over, 3) == [[0.0, 1.0, 2.0], "NoResource"]


@netmcore.process
def mismatch(_: int) -> list[str]:
    array = SharedArray.create((2, 3), "int32")
    out = []
    for handle in (
        SharedArray(array.res_id, "float64", (2, 3)),
        SharedArray(array.res_id, "int32", (3, 2)),
    ):
        try:
            handle.open()
        except ValueError as exc:
            out.append(str(exc))
    array.release()
    try:
        array.open()
    except netmcore.NoResource as exc:
        out.append(type(exc).__name__)
    return out


@netmcore.process
def not_an_array(size: int) -> str:
    """A handle on a shm object that holds no array (too small for the header,
    or without it)."""
    with netmcore.create_shm(size) as segment:
        try:
            SharedArray(segment.res_id, "int64", (1,)).open()
        except ValueError as exc:
            return str(exc)
    return "opened"


@pytest.mark.parametrize("size", [4, 4096])
def test_a_handle_on_a_shm_object_that_is_not_an_array_is_a_clear_error(size: int) -> None:
    message = run(not_an_array, size)
    assert re.fullmatch(
        rf"resource ResId\(\d+\) is not a shared array: it is a shm object of {size} bytes "
        r"with no netmcore object's mark \(a plain segment, of create_shm or "
        r"create_preallocated_shm, say\)",
        message,
    ), message


@netmcore.process
def other_kinds(_: int) -> list[str]:
    """Each class's open on an object another class made, and an array's
    mark on a segment too small for the header: each error says what it found."""
    array = SharedArray.create(4, np.int64)
    texts = [outcome_text(lambda: netmcore.Mailbox.open(array.res_id, int))]
    box = netmcore.Mailbox.create(int)
    texts.append(outcome_text(lambda: SharedArray(box.res_id, "int64", (1,)).open()))
    texts.append(outcome_text(lambda: netmcore.ShmMutex.open(box.res_id)))
    with netmcore.create_shm(10) as segment:
        segment.buffer[:8] = _MAGIC  # the mark alone
        texts.append(outcome_text(lambda: SharedArray(segment.res_id, "int64", (1,)).open()))

    # A program's subclass of ShmMutex leaves netmcore's name for its mark.
    class MyLock(netmcore.ShmMutex):
        pass

    mutex = netmcore.ShmMutex.create()
    texts.append(outcome_text(lambda: netmcore.Mailbox.open(mutex.res_id, int)))
    mutex.release()
    box.release()
    return texts


def test_an_open_on_another_classs_object_says_what_it_is() -> None:
    mailbox_on_array, array_on_box, mutex_on_box, marked_only, mailbox_on_mutex = run(
        other_kinds, 0
    )
    assert mailbox_on_mutex.endswith(
        "is not a mailbox: it is a ShmMutex (ShmMutex.open(res_id) opens it)"
    ), mailbox_on_mutex
    assert re.fullmatch(
        r"ValueError: resource ResId\(\d+\) is not a mailbox: it is a SharedArray "
        r"\(the handle SharedArray.create returned opens it\)",
        mailbox_on_array,
    ), mailbox_on_array
    box = r"it is a Mailbox \(Mailbox.open\(res_id, T\) opens it\)"
    assert re.fullmatch(rf"ValueError: .* is not a shared array: {box}", array_on_box)
    assert re.fullmatch(rf"ValueError: .* is not a ShmMutex: {box}", mutex_on_box)
    assert re.fullmatch(
        r"ValueError: resource ResId\(\d+\) has a shared array's mark, but its header does "
        r"not fit in its 10 bytes: something wrote over it; make the array again",
        marked_only,
    ), marked_only


def test_dtype_or_shape_mismatch_and_a_destroyed_array_give_clear_errors() -> None:
    dtype, shape, gone = run(mismatch, 0)
    assert "this handle says dtype float64 and shape (2, 3)" in dtype
    assert "holds dtype <i4 and shape (2, 3): use its own handle" in dtype
    assert "this handle says dtype int32 and shape (3, 2)" in shape
    assert gone == "NoResource"


def test_bad_shapes_and_dtypes_are_refused_before_anything_is_made() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, -1\) is not valid"):
        SharedArray.create((2, -1))
    with pytest.raises(TypeError) as objects:
        SharedArray.create(3, "object")
    assert str(objects.value) == (
        "SharedArray.create: dtype 'object' holds Python objects or strings outside the "
        "array, which cannot be shared; pass a dtype of numbers, fixed-width strings ('U8', "
        "'S8') or fields of those"
    )
    with pytest.raises(
        TypeError,
        match=r"SharedArray.create: dtype 'float99' is not a numpy dtype \(.*float99.*\); "
        "pass what numpy.zeros takes",
    ):
        SharedArray.create(3, "float99")
    # More dimensions than numpy allows (64): made, it could not be opened.
    with pytest.raises(ValueError, match=r"shape of 65 dimensions is not valid: .*64"):
        SharedArray.create((1,) * 65)
    with pytest.raises(ValueError, match=r"shape of 65 dimensions is not valid"):
        SharedArray.create((1,) * 64, np.dtype(("<i4", (1,))))  # the sub-array adds one
    most = SharedArray.create((1,) * 64)
    try:
        assert most.open().ndim == 64
    finally:
        most.release()


def test_without_numpy_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(ImportError, match=r"pip install 'netmcore\[numpy\]'"):
        SharedArray.create(3)


def test_handle_is_small_and_serializable(table: SharedArray) -> None:
    data = msgspec.msgpack.encode(table)
    assert len(data) < 64
    assert msgspec.msgpack.decode(data, type=SharedArray) == table


# A structured dtype keeps its fields, offsets and sub-arrays (the handle and the
# header record its descr, not just its size); a sub-array dtype adds dimensions,
# as in numpy.zeros. Fields out of order or overlapping, which numpy.zeros takes
# but which have no descr (numpy's bare "dtype.descr is not defined" was raised),
# are recorded as the dict numpy.dtype takes.
OUT_OF_ORDER = np.dtype(
    {"names": ["b", "a"], "formats": ["u1", "<i4"], "offsets": [4, 0], "itemsize": 12}
)
OVERLAPPING = np.dtype({"names": ["a", "b"], "formats": ["<i4", "<i2"], "offsets": [0, 0]})


@pytest.mark.parametrize(
    "kind",
    [
        np.dtype([("a", "<i4"), ("b", "<f8")]),
        np.dtype(
            {"names": ["a", "b"], "formats": ["u1", "<f8"], "offsets": [0, 8], "itemsize": 24}
        ),
        np.dtype([("a", "<i4", (2, 3)), ("b", [("c", "u1")])], align=True),
        np.dtype(("<i4", (2,))),
        OUT_OF_ORDER,
        OVERLAPPING,
        np.dtype(
            {"names": ["x", "y"], "formats": [OUT_OF_ORDER, ("<f8", (2,))], "offsets": [16, 0]}
        ),
    ],
    ids=[
        "plain",
        "offsets",
        "nested",
        "sub-array",
        "out-of-order",
        "overlapping",
        "nested-out-of-order",
    ],
)
def test_structured_and_sub_array_dtypes_are_kept_as_numpy_has_them(kind: np.dtype[Any]) -> None:
    handle = SharedArray.create((3,), kind)
    try:
        expected = np.zeros((3,), kind)
        view = handle.open()
        assert (view.dtype, view.shape) == (expected.dtype, expected.shape)
        assert handle.shape == expected.shape
    finally:
        handle.release()


RECORD = np.dtype([("a", "<i4"), ("b", "<f8", (2,))])


@netmcore.process
def sum_records(array: SharedArray) -> float:
    view = array.open()
    return float(view["a"].sum() + view["b"].sum())


@netmcore.process
def dtype_and_values(array: SharedArray) -> list[str]:
    view = array.open()
    return [view.dtype.str, repr(view.tolist())]


# numpy.zeros makes these dtypes, which have no size, of size 1 (a str or bytes
# one) or keeps them at 0 (a void one). They were recorded as given, "<U0" or
# "|S0": the array was made, and every open() raised numpy's bare "itemsize
# cannot be zero in type"; "|V0" failed so too, in numpy.frombuffer.
SIZELESS = [str, bytes, np.str_, np.bytes_, "U", "S", "U0", "S0", "V0", "V", np.void]


@pytest.mark.parametrize("kind", SIZELESS, ids=[str(k) for k in SIZELESS])
def test_a_dtype_without_a_size_is_made_as_numpy_zeros_makes_it(kind: Any) -> None:
    expected = np.zeros(3, kind)
    handle = SharedArray.create(3, kind)
    try:
        assert handle.dtype == expected.dtype.str
        view = handle.open()
        assert (view.dtype, view.shape) == (expected.dtype, expected.shape)
        if expected.dtype.itemsize:
            expected[:] = view[:] = "z" if expected.dtype.kind == "U" else b"z"
        del view
        # A worker opens it through its handle, and sees the same.
        assert run(dtype_and_values, handle) == [expected.dtype.str, repr(expected.tolist())]
    finally:
        handle.release()


@netmcore.process
def field_sums(array: SharedArray) -> list[int]:
    view = array.open()
    return [int(view[name].sum()) for name in view.dtype.names]


@pytest.mark.parametrize("kind", [OUT_OF_ORDER, OVERLAPPING], ids=["out-of-order", "overlapping"])
def test_a_worker_sees_the_fields_of_an_array_whose_fields_have_no_descr(kind: Any) -> None:
    handle = SharedArray.create(3, kind)
    try:
        assert handle.dtype.startswith("{'names': ")
        view = handle.open()
        view["a"] = 70_000  # over the i2 it overlaps with, if any
        view["b"] = 2
        expected = [int(view[name].sum()) for name in kind.names]
        del view
        assert run(field_sums, handle) == expected
    finally:
        handle.release()


class _NoLiteral:
    """A field title that numpy keeps but whose repr reads back as no value."""

    def __repr__(self) -> str:
        return "_NoLiteral()"


def test_a_dtype_that_cannot_be_read_back_is_refused_before_anything_is_made() -> None:
    kind = np.dtype(
        {
            "names": ["a", "b"],
            "formats": ["<i4", "<i2"],
            "offsets": [0, 0],
            "titles": [_NoLiteral(), None],
        }
    )
    before = ours()
    with pytest.raises(TypeError) as info:
        SharedArray.create(3, kind)
    assert str(info.value).startswith(f"dtype {kind!r} cannot be shared: the text that records")
    assert str(info.value).endswith(
        "does not read back as it (a field title that is not a str, say); pass a dtype whose "
        "field titles, if any, are plain strings, like [('a', '<i4'), ('b', '<f8')]"
    )
    assert ours() == before


def test_a_worker_sees_the_fields_of_a_structured_array() -> None:
    handle = SharedArray.create(3, RECORD)
    try:
        view = handle.open()
        view["a"] = 7
        view["b"] = 0.5
        assert run(sum_records, handle) == 3 * 7 + 3 * 2 * 0.5
    finally:
        handle.release()


# A shape is what numpy.zeros takes: an integer or a sequence of them, numpy's
# integers included. A bool is refused: True is no size.
@pytest.mark.parametrize(
    ("shape", "expected"),
    [(np.int64(4), (4,)), ((np.int64(4),), (4,)), ([2, np.int32(3)], (2, 3))],
    ids=["scalar", "tuple", "list"],
)
def test_numpy_integer_shapes_are_accepted_as_numpy_does(shape: Any, expected: Any) -> None:
    assert np.zeros(shape).shape == expected
    handle = SharedArray.create(shape)
    try:
        assert handle.shape == expected
        assert type(handle.shape[0]) is int  # the handle holds plain ints
        assert handle.open().shape == expected
    finally:
        handle.release()


@pytest.mark.parametrize("shape", [(True,), True, (2, np.True_)])
def test_a_bool_in_a_shape_is_refused_naming_it(shape: Any) -> None:
    with pytest.raises(TypeError, match=r"its dimension (np\.)?True_? is a bool, which is no size"):
        SharedArray.create(shape)


@pytest.mark.parametrize(("shape", "kind"), [("34", "str"), (b"34", "bytes"), (3.0, "float")])
def test_a_shape_that_is_no_sequence_of_dimensions_is_refused_naming_its_type(
    shape: Any, kind: str
) -> None:
    # A str used to be taken for a sequence of dimensions: "34" was ("3", "4").
    message = (
        f"shape {shape!r} is not valid: pass an integer or a tuple of integers, like 4 "
        f"or (3, 4), not {kind}"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        SharedArray.create(shape)


def ours() -> set[str]:
    """The /dev/shm entries an array made here could have: netmcore's named
    for this process or its master; not other processes', which come and go."""
    return own_shm_entries()


@netmcore.process
def _nothing(k: int) -> int:
    return k


def test_an_array_is_named_for_the_process_that_made_it_or_its_master(
    master_cleanup: None,
) -> None:
    """As every object netmcore makes (see the README): "/nmc.<pid>." before
    run, "/nmc.<master pid>.<token>." in it. Those made outside a worker
    were named "/nmc-array<hex>", for no process."""
    before = ours()
    outside = SharedArray.create(8)
    inside: list[SharedArray] = []
    try:
        (first,) = ours() - before
        assert first.startswith(f"nmc.{os.getpid()}.") and first.count(".") == 2, first
        netmcore.run(
            init_ctrl=lambda ctrl: inside.append(SharedArray.create(8)),
            first_process=lambda: _nothing.start(1),
            extract_result=lambda ctrl, pid: _nothing.join_nowait(pid),
        )
        (second,) = ours() - before - {first}
        # nmc.<pid>.<the run's token>.<random>
        assert second.startswith(f"nmc.{os.getpid()}.") and second.count(".") == 3, second
    finally:
        for array in (outside, *inside):
            array.release()
    assert ours() == before


# --------------------------------------------------------------------------
# SharedArray.create: the dtype text's limit is checked in characters, but the
# header records its length in bytes (struct "H"): a structured dtype with
# non-ASCII names between the two raises struct.error after the array's shm
# object was made, and the object stays.
# --------------------------------------------------------------------------


@pytest.fixture
def shm_entries() -> Iterator[set[str]]:
    yield ours()


def test_shared_array_dtype_text_too_long_in_bytes_is_a_value_error_leaving_nothing(
    master_cleanup: None, shm_entries: set[str]
) -> None:
    dtype = np.dtype([("\u00e9" * 40_000, "i4")])  # 40,013 characters, 80,013 bytes
    try:
        with pytest.raises(ValueError):
            SharedArray.create(3, dtype)
        assert ours() - shm_entries == set()
    finally:
        netmcore.destroy_resources()


# --------------------------------------------------------------------------
# Sizes that numpy or /dev/shm cannot hold: an error naming the shape, the
# dtype, the bytes and the limit, before anything is made. (They were an
# OverflowError, "Python int too large to convert to C ssize_t", a bare ENOMEM,
# and a struct.error after the object was made.)
# --------------------------------------------------------------------------

TOTAL = shm_space()[1]  # /dev/shm's size (0: no limit)
TOO_BIG = {
    "past 2**63-1": (
        (2**40, 2**40),
        "float64",
        r"^a shared array of shape \(1099511627776, 1099511627776\) and dtype <f8 needs "
        r"9,671,406,556,917,033,397,649,472 bytes \(9,671,406,556,917,033,397,649,408 of data "
        r"and its header\), which is too big: a shared memory object holds at most "
        r"9,223,372,036,854,775,807 bytes \(2\*\*63-1, a file's size\)\. Choose a smaller "
        r"shape or dtype$",
    ),
    # Past /dev/shm's total size, by its header (within it, past the free
    # space, an array is made: see
    # test_an_array_larger_than_the_free_space_within_the_total_is_made.)
    "just past /dev/shm": (
        (TOTAL,),
        "int8",
        rf"^a shared array of shape \({TOTAL},\) and dtype \|i1 needs "
        rf"{_data_offset('|i1', (TOTAL,)) + TOTAL:,} bytes \({TOTAL:,} of data and its "
        rf"header\), which is too big: /dev/shm, where shared memory lives, is {TOTAL:,} "
        r"bytes in all, so an object larger than that could never be filled \(a process "
        r"that writes past the space there is killed by SIGBUS\)\. Choose a smaller shape "
        r"or dtype, or enlarge /dev/shm \(mount -o remount,size=\.\.\., or docker run "
        r"--shm-size=\.\.\.\)$",
    ),
    "a dimension past 2**63-1": (
        (0, 2**63),
        "int8",
        r"^a shared array of shape \(0, 9223372036854775808\) and dtype \|i1 is too big: its "
        r"dimension 9,223,372,036,854,775,808 is over the 9,223,372,036,854,775,807 "
        r"\(2\*\*63-1\) numpy allows; choose a smaller shape$",
    ),
}


def check_too_big(case: str) -> str:
    shape, dtype, message = TOO_BIG[case]
    before = ours()
    with pytest.raises(ValueError, match=message):
        SharedArray.create(shape, dtype)
    assert ours() == before, "a refused array left its object"
    return case


@netmcore.process
def too_big_in_a_worker(case: str) -> str:
    return check_too_big(case)


def needs_a_shm_size(case: str) -> None:
    if "/dev/shm" in case and not TOTAL:
        pytest.skip("/dev/shm has no size limit (a tmpfs mounted with size=0)")


@pytest.mark.parametrize("case", list(TOO_BIG))
def test_an_array_too_big_is_refused_naming_its_size_outside_run(
    case: str, master_cleanup: None
) -> None:
    needs_a_shm_size(case)
    check_too_big(case)


@pytest.mark.parametrize("case", list(TOO_BIG))
def test_an_array_too_big_is_refused_naming_its_size_in_a_worker(case: str) -> None:
    needs_a_shm_size(case)
    assert run(too_big_in_a_worker, case) == case


def test_an_array_larger_than_the_free_space_within_the_total_is_made(
    master_cleanup: None,
) -> None:
    """Its shm object is sparse, zero-filled as its pages are first written:
    an array larger than /dev/shm's free space is made, and works while what
    is written fits. It was refused, naming the free space."""
    before = ours()
    with shm_partly_used() as (free, total):
        n = total - 4096  # with its header (64 bytes), past the free space, within the total
        assert n > free
        array = SharedArray.create(n, "int8")
        try:
            view = array.open()
            view[0], view[-1] = 1, 2  # a page at each end
            assert (int(view[0]), int(view[1]), int(view[-1])) == (1, 0, 2)
            del view
        finally:
            array.release()
    assert ours() == before, "a released array left its object"


# --------------------------------------------------------------------------
# A SharedArray's release gives back the use this process took through it
# (its create, or its first open), counted as every handle is: a release in
# a process that never opened it (or that released it already) ended, with
# upstream's release(res_id), the process's use of the object under its
# other handles; a worker's open of a preallocated array the master had
# opened was the master's use, not the worker's
# --------------------------------------------------------------------------


def shm_path(name: str) -> str:
    return os.path.join("/dev/shm", name[1:])


def uses(res_id: netmcore.ResId) -> str:
    """Whether this process uses ``res_id``, by hand_over: NoResource for a
    process that does not (and, the master using it too, nothing changes)."""
    return outcome_text(lambda: netmcore.hand_over(res_id)).split(":")[0]


@netmcore.process
def releases_an_array_it_never_opened(arg: tuple[SharedArray, int, int]) -> list[str]:
    array, done_w, go_r = arg
    segment = netmcore.open_shm(array.res_id)  # another handle of this process on its object
    try:
        array.release()  # never opened here: it has no use of its own to give back
        os.write(done_w, b"r")
        os.read(go_r, 1)  # its maker has released it
        seen = [str(os.path.exists(shm_path(segment.name)))]
        seen.append(outcome_text(lambda: int(array.open()[0])))
        array.release()
        return seen
    finally:
        segment.release()


@netmcore.process
def unopened_release_scenario(pipes: tuple[int, int, int, int]) -> list[str]:
    done_r, done_w, go_r, go_w = pipes
    array = SharedArray.create(2, "int64")
    array.open()[0] = 7
    pid = releases_an_array_it_never_opened.start((array, done_w, go_r))
    try:
        assert os.read(done_r, 1) == b"r"
        array.release()  # the maker's last handle: the other process's segment keeps it
    finally:
        os.write(go_w, b"g")
    seen: list[str] = joined(releases_an_array_it_never_opened, pid)
    return seen


def test_an_array_released_where_it_was_never_opened_leaves_the_other_handles(
    pipes: Any,
) -> None:
    """Before: ["False", "NoResource: ..."], the array gone with its maker's
    release, though the other process still had a segment on it."""
    assert run(unopened_release_scenario, (*pipes(), *pipes())) == ["True", "returned 7"]


@netmcore.process
def release_twice_beside_a_segment(_: int) -> list[str]:
    array = SharedArray.create(2, "int64")
    segment = netmcore.open_shm(array.res_id)
    path = shm_path(segment.name)
    array.release()
    array.release()  # harmless to repeat: it has nothing left to give back
    seen = [
        str(os.path.exists(path)),
        outcome_text(lambda: netmcore.open_shm(array.res_id).release()),
    ]
    segment.release()  # the last handle of the last user
    seen.append(str(os.path.exists(path)))
    return seen


def test_an_array_released_twice_leaves_the_processs_other_handles() -> None:
    """Before: ["False", "NoResource: ...", "False"]: the second release ended
    the process's use under its segment."""
    assert run(release_twice_beside_a_segment, 0) == ["True", "returned None", "False"]


@netmcore.process
def released_by_its_with_block(_: int) -> list[str]:
    with SharedArray.create(3, "int64") as array:
        array.open()[:] = [1, 2, 3]
        path = shm_path(netmcore.get_resource(array.res_id).repr.name)
        seen = [str(os.path.exists(path)), str(int(array.open().sum()))]
    seen.append(str(os.path.exists(path)))  # its last user released it: gone
    return seen


def test_a_with_block_releases_the_array_at_its_end() -> None:
    assert run(released_by_its_with_block, 0) == ["True", "6", "False"]


_opened_by_the_master: list[SharedArray] = []


@netmcore.process
def opens_a_preallocated_array(_: int) -> list[str]:
    array = _opened_by_the_master[0]
    seen = [uses(array.res_id)]  # the master's, inherited: not this process's
    seen.append(str(int(array.open()[1])))
    seen.append(uses(array.res_id))  # its own now, from its open
    array.release()
    seen.append(uses(array.res_id))
    array.release()  # harmless to repeat
    seen.append(uses(array.res_id))
    return seen


def test_a_worker_uses_a_preallocated_array_from_its_open_to_its_release(
    master_cleanup: None,
) -> None:
    """Before: ["NoResource", "5", "NoResource", ...]: the master had opened
    it, and a worker started after it took the master's use for its own."""
    array = SharedArray.create(2, "int64")
    _opened_by_the_master.append(array)
    try:
        array.open()[1] = 5
        got = run(opens_a_preallocated_array, 0)
        assert got == ["NoResource", "5", "returned None", "NoResource", "NoResource"]
    finally:
        _opened_by_the_master.clear()
        array.release()
    with pytest.raises(netmcore.NoResource):
        array.open()


# --------------------------------------------------------------------------
# A failed open() leaves the process's uses as they were: it took the use
# (opened the segment, or counted the preallocated array) before it read the
# header, and kept it when the header refused the handle (another kind of
# object, a dtype or shape that disagrees) or the handle's dtype was no
# dtype numpy reads: the object outlived its last real user's release.
# --------------------------------------------------------------------------


@netmcore.process
def opens_with_wrong_handles(handles: list[SharedArray]) -> list[list[str]]:
    """For each handle: whether this process uses its object, its open()'s
    error, and whether it uses the object after."""
    seen = []
    for handle in handles:
        before = uses(handle.res_id)
        failed = outcome_text(handle.open).split(":")[0]
        seen.append([before, failed, uses(handle.res_id)])
    return seen


_made_by_the_master: list[SharedArray] = []


@netmcore.process
def failed_opens_scenario(_: int) -> list[Any]:
    array = SharedArray.create((2, 3), "int32")  # a worker's: a segment the others open
    other = netmcore.create_shm(4096)  # no array
    table = _made_by_the_master[0]  # preallocated: inherited
    handles = [
        SharedArray(other.res_id, "int32", (2, 3)),
        SharedArray(array.res_id, "float64", (2, 3)),
        SharedArray(array.res_id, "int32", (3, 2)),
        SharedArray(array.res_id, "[(", (2, 3)),  # no dtype numpy reads
        SharedArray(table.res_id, "int32", (4, 3), True),
        SharedArray(table.res_id, "int64", (3, 4), True),
        SharedArray(table.res_id, "{'names': 1}", (4, 3), True),
    ]
    seen: list[Any] = [joined(opens_with_wrong_handles, opens_with_wrong_handles.start(handles))]
    # In the object's own user, a failed open takes no handle either: its own
    # release is its last, and the object goes.
    path = shm_path(other.name)
    seen.append(outcome_text(handles[0].open).split(":")[0])
    other.release()
    seen.append(os.path.exists(path))
    array.release()
    return seen


def test_a_failed_open_leaves_the_processs_uses_as_they_were(master_cleanup: None) -> None:
    """Before: each last "NoResource" was "returned None" (the failed open
    had made the process a user, which its hand_over showed), and the shm
    object stayed after its creator's release (True)."""
    before = ours()
    _made_by_the_master.append(SharedArray.create((4, 3), "int64"))
    try:
        seen = run(failed_opens_scenario, 0)
    finally:
        _made_by_the_master.pop().release()
    assert seen == [[["NoResource", "ValueError", "NoResource"]] * 7, "ValueError", False], seen
    assert ours() == before


@pytest.mark.parametrize("dtype", ["[(", "{'names': 1}", "[1]", "no-such-dtype"])
def test_a_handle_whose_dtype_numpy_cannot_read_is_a_clear_value_error(
    dtype: str, master_cleanup: None
) -> None:
    """Before: a raw SyntaxError or TypeError from deep inside the parsing."""
    table = SharedArray.create((4, 3), "int64")
    handle = SharedArray(table.res_id, dtype, table.shape, True)
    with pytest.raises(ValueError) as caught:
        handle.open()
    message = str(caught.value)
    assert message.startswith(f"{handle!r} is not a valid handle: its dtype {dtype!r} is not"), (
        message
    )
    assert message.endswith("use the handle SharedArray.create returned"), message
    assert int(table.open().sum()) == 0  # the process's own use is as it was
    table.release()


# --------------------------------------------------------------------------
# numpy refuses an array whose dimensions other than 0, times its itemsize,
# overflow np.intp, even though it holds nothing: create() made it (its size
# is a header), and every open() met numpy's "array is too big".
# --------------------------------------------------------------------------

INTP_MAX = int(np.iinfo(np.intp).max)
EMPTY_SHAPES = [
    ((0, 2**62, 2**62), "int8"),
    ((0, 2**62, 2), "int8"),
    ((0, 2**62, 1), "int8"),
    ((0, INTP_MAX), "int8"),
    ((0, INTP_MAX), "int16"),
    ((0, 2**61), "U1"),
    ((0, 2**61), ("<i4", (2,))),  # its sub-array is two more elements
    ((0, 2**62, 2**62), "V0"),  # itemsize 0: numpy counts nothing
    ((2**62, 0, 3), "float64"),
]


@pytest.mark.parametrize(("shape", "dtype"), EMPTY_SHAPES)
def test_an_empty_array_is_refused_before_anything_is_made_as_numpy_refuses_it(
    shape: tuple[int, ...], dtype: Any, master_cleanup: None
) -> None:
    try:
        np.empty(shape, dtype)  # nothing allocated: a dimension is 0
    except ValueError:
        refused = True
    else:
        refused = False
    before = ours()
    if refused:
        with pytest.raises(ValueError) as caught:
            SharedArray.create(shape, dtype)
        message = str(caught.value)
        # (A sub-array dtype's dimensions follow the shape's, as in numpy.zeros.)
        assert message.startswith(f"a shared array of shape {str(shape)[:-1]}"), message
        assert "too big for numpy, though it holds nothing" in message, message
        assert f"over the {INTP_MAX:,} (np.intp's maximum)" in message, message
        assert message.endswith("choose smaller dimensions beside the 0"), message
        assert ours() == before, "a refused array left its object"
    else:
        array = SharedArray.create(shape, dtype)
        try:
            assert array.open().shape == np.empty(shape, dtype).shape
        finally:
            array.release()


# --------------------------------------------------------------------------
# A release cut short by a signal handler's exception: it forgot the array
# (popped this process's entry) before it gave the use back, and an
# exception as the pop returned lost the use for good: a retried release()
# did nothing, and the array stayed until the process (or the run) ended.
# --------------------------------------------------------------------------


def release_interrupted_anywhere(then: str) -> str | None:
    """Release an array, a SIGINT at each point in turn, then ``then``:
    release it again ("retry"), or open it (if it is still there) and
    release that ("open"). After either, the array must be gone (this
    process was its only user)."""
    made: list[tuple[SharedArray, str]] = []

    def make() -> None:
        array = SharedArray.create(8, "int64")
        made.append((array, shm_path(netmcore.get_shm(array.res_id))))

    def check(_: object) -> list[str]:
        array, path = made[-1]
        if then == "open":
            opened = outcome_text(lambda: int(array.open()[0]))
            if opened != "returned 0" and not opened.startswith("NoResource"):
                return [f"open() after it: {opened}"]
        array.release()
        # In a worker: once the master has served what it was sent (a
        # release that went out as the SIGINT came, whose answer nothing
        # waited for: the master serves a worker's requests in order).
        netmcore.release(netmcore.ResId(10**9))  # an id nothing has: it does nothing
        problems = [f"{then}: the array was left"] if os.path.exists(path) else []
        make()
        return problems

    # Outside run, the guard lives on: not started again for each array.
    keep = netmcore.create_shm(8)
    try:
        make()
        try:
            return at_every_point(lambda: made[-1][0].release(), check)
        finally:
            made[-1][0].release()
    finally:
        keep.release()


@netmcore.process
def release_interrupted_in_a_worker(then: str) -> str | None:
    return release_interrupted_anywhere(then)


@pytest.mark.parametrize("then", ["retry", "open"])
def test_a_release_interrupted_anywhere_is_finished_by_the_next_call(
    then: str, master_cleanup: None
) -> None:
    """Outside run, where an array is preallocated (the master's). Before:
    "SIGINT at point N, c_return of pop ...: the array was left"."""
    before = ours()
    assert release_interrupted_anywhere(then) is None
    assert ours() == before


@pytest.mark.parametrize("then", ["retry", "open"])
def test_a_release_interrupted_anywhere_in_a_worker_is_finished_by_the_next_call(
    then: str,
) -> None:
    """A worker's array is a segment it keeps. Before, as outside run."""
    assert run(release_interrupted_in_a_worker, then) is None


def _mapped_deleted_shm() -> set[str]:
    """The /dev/shm objects this process maps that are unlinked already."""
    with open("/proc/self/maps") as f:
        return {line.split()[-2] for line in f if "/dev/shm/" in line and "(deleted)" in line}


def view_kept_after_release(_: int) -> list[Any]:
    """A view of an array released (and so destroyed: its only user let it
    go), then another array made: the view still reads and writes its own
    memory, which stays mapped until the view goes."""
    released = SharedArray.create(1000, "int64")
    view = released.open()
    view[:] = 7
    mapped_before = _mapped_deleted_shm()
    released.release()
    kept_mapped = len(_mapped_deleted_shm() - mapped_before)
    other = SharedArray.create(1000, "int64")
    try:
        other_view = other.open()
        view[:] += 35  # before the fix: unmapped memory, or the other array's
        seen = [int(view.sum()), int(other_view.sum()), kept_mapped]
        del view
        seen.append(len(_mapped_deleted_shm() - mapped_before))  # gone with the view
        return seen
    finally:
        other.release()


@netmcore.process
def view_kept_after_release_in_a_worker(_: int) -> list[Any]:
    return view_kept_after_release(0)


@pytest.mark.parametrize("where", ["before run", "in a worker"])
def test_a_view_kept_after_release_keeps_its_own_memory(where: str) -> None:
    """A numpy view outlives its handle's release(), as a view of a Buffer's
    peek() does: it wrote into unmapped memory (the process died of SIGSEGV),
    or silently into the next array mapped at its address."""
    if where == "before run":
        seen = view_kept_after_release(0)
    else:
        seen = run(view_kept_after_release_in_a_worker, 0)
    assert seen == [42_000, 0, 1, 0]


# --------------------------------------------------------------------------
# from_array: a shared copy of data; order="F": column-major arrays; a
# dtype-typed open()
# --------------------------------------------------------------------------

PAGE = mmap.PAGESIZE
FORTRAN = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
COPIED: dict[str, tuple[Any, str]] = {  # data, and the order its copy has
    "a row-major array": (np.arange(12, dtype=np.int16).reshape(3, 4), "C"),
    "a column-major array": (FORTRAN, "F"),
    "a strided view": (np.arange(20.0).reshape(4, 5)[::2, 1::2], "C"),
    "a column-major view's transpose": (FORTRAN.T, "C"),
    # As numpy.copy(order="K") lays it out: strides that grow with the axes.
    "a strided view of a column-major array": (FORTRAN[:, ::2], "F"),
    "a byte-swapped array": (np.arange(6, dtype=">i8").reshape(2, 3), "C"),
    "nested lists": ([[1, 2, 3], [4, 5, 6]], "C"),
    "a scalar": (2.5, "C"),
    "strings": (np.array(["ab", "c"]), "C"),
    "a structured array": (np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", "<f8")]), "C"),
    "an empty array": (np.zeros((0, 3), np.int8), "C"),
}


@netmcore.process
def read_back(array: SharedArray) -> list[Any]:
    view = array.open()
    column_major = view.flags.f_contiguous and not view.flags.c_contiguous
    seen = [view.tolist(), str(view.dtype), list(view.shape), column_major]
    array.release()
    return seen


@netmcore.process
def copies_and_reads(case: str) -> list[Any]:
    """from_array in a worker: the copy is a segment a second worker opens."""
    array = SharedArray.from_array(COPIED[case][0])
    seen: list[Any] = joined(read_back, read_back.start(array))
    array.release()
    return seen


@pytest.mark.parametrize("case", list(COPIED))
def test_from_array_copies_the_data_with_its_shape_dtype_and_order(case: str) -> None:
    data, order = COPIED[case]
    expected = np.asarray(data)
    # As a worker's result comes back: tuples as lists.
    values = msgspec.msgpack.decode(msgspec.msgpack.encode(expected.tolist()))
    described = [values, str(expected.dtype), list(expected.shape), order == "F"]
    array = SharedArray.from_array(data)
    try:
        assert (array.shape, array.order) == (expected.shape, order)
        view = array.open()
        assert view.dtype == expected.dtype
        assert view.flags.f_contiguous if order == "F" else view.flags.c_contiguous
        assert run(read_back, array) == described  # made before run: every worker has it
        view[...] = 0  # a copy: the data given is not shared
        assert np.asarray(data).tolist() == expected.tolist()
        del view
    finally:
        array.release()
    assert run(copies_and_reads, case) == described


@pytest.mark.parametrize(
    ("data", "order", "column_major"),
    [
        (FORTRAN, "C", False),
        (FORTRAN, "F", True),
        (FORTRAN, "A", True),
        (FORTRAN, "K", True),
        (FORTRAN[:, ::2], "A", False),  # not Fortran-contiguous
        (FORTRAN[:, ::2], "K", True),
        (FORTRAN.T, "F", True),
    ],
)
def test_from_array_makes_the_order_asked_for(data: Any, order: Any, column_major: bool) -> None:
    assert np.copy(data, order=order).flags.f_contiguous == column_major  # numpy's own
    array = SharedArray.from_array(data, order=order)
    try:
        view = array.open(np.float32)
        assert (view == data).all()
        assert array.order == ("F" if column_major else "C")
        assert view.flags.f_contiguous == column_major
        assert view.flags.c_contiguous == (not column_major)
    finally:
        array.release()


@netmcore.process
def writes_the_first_column(array: SharedArray) -> list[float]:
    view = array.open(np.float64)
    view[:, 0] = [1.0, 2.0, 3.0]
    # In memory: column-major, so the first column is the first three elements.
    return [float(x) for x in view.ravel(order="K")[:4]]


def test_a_column_major_array_is_laid_out_so_in_every_process() -> None:
    array = SharedArray.create((3, 2), "float64", order="F")
    try:
        assert array.order == "F"
        assert run(writes_the_first_column, array) == [1.0, 2.0, 3.0, 0.0]
        view = array.open()
        assert view.flags.f_contiguous and not view.flags.c_contiguous
        assert view.tolist() == [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]
        del view
        # A handle that says another order is refused, as one of another shape is.
        row_major = SharedArray(array.res_id, array.dtype, array.shape, array.preallocated)
        with pytest.raises(ValueError) as caught:
            row_major.open()
        assert str(caught.value) == (
            f"this handle says dtype <f8 and shape (3, 2), but the shared array "
            f"{array.res_id!r} holds dtype <f8 and shape (3, 2), column-major (order 'F'): "
            "use its own handle"
        )
        forged = msgspec.structs.replace(array, order="X")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"its order 'X' is neither 'C' nor 'F'"):
            forged.open()
        with pytest.raises(
            msgspec.ValidationError, match=r"Invalid enum value .X. - at `\$\.order`"
        ):
            msgspec.msgpack.decode(msgspec.msgpack.encode(forged), type=SharedArray)
    finally:
        array.release()


def test_from_array_makes_the_dtype_asked_for() -> None:
    array = SharedArray.from_array([[1, 2], [3, 4]], np.float32)
    try:
        assert array.dtype == "<f4"
        assert array.open(np.float32).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    finally:
        array.release()


@pytest.mark.parametrize(
    ("dtype", "asked"),
    [
        ("<i8", np.longlong),  # numpy.longlong is no class of int64's; its dtype is int64's
        (">f8", np.float64),  # either byte order
        ("<f8", np.dtype(">f8")),
        ("<f4", np.dtype("f4")),
        ("<f4", np.floating),
        (np.dtype([("a", "<i4")]), np.void),
    ],
)
def test_a_typed_open_takes_the_arrays_own_type(dtype: Any, asked: Any) -> None:
    array = SharedArray.create(3, dtype)
    try:
        assert array.open(asked).dtype == array.open().dtype
    finally:
        array.release()


def test_a_typed_open_checks_the_element_type_before_taking_anything(
    master_cleanup: None,
) -> None:
    array = SharedArray.create(3, "int32")
    try:
        assert array.open(np.int32).dtype == np.int32
        assert array.open(np.signedinteger).dtype == np.int32  # a class of the type's fits
        array.release()  # the process uses it no more: a refused open must not take it
        with pytest.raises(TypeError) as wrong:
            array.open(np.float64)
        assert str(wrong.value) == (
            "SharedArray.open: the array holds int32 (numpy.int32), not numpy.float64: "
            "pass numpy.int32, or nothing"
        )
        with pytest.raises(TypeError) as builtin:
            array.open(float)  # type: ignore[type-var]
        assert str(builtin.value) == (
            "SharedArray.open: dtype float is not a numpy scalar type or dtype; pass one, like "
            "numpy.int32 for this array, or nothing"
        )
        with pytest.raises(TypeError, match=r"dtype 'i4' is not a numpy scalar type"):
            array.open("i4")  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"holds int32 \(numpy.int32\), not int64: pass"):
            array.open(np.dtype("i8"))
        with pytest.raises(TypeError, match=r"not numpy.floating: pass numpy.int32"):
            array.open(np.floating)
        assert uses(array.res_id) == "NoResource", "a refused open took a use"
    finally:
        array.release()


def test_from_array_refuses_bad_data_before_anything_is_made(master_cleanup: None) -> None:
    before = ours()
    with pytest.raises(ValueError) as ragged:
        SharedArray.from_array([[1], [2, 3]])
    assert str(ragged.value).startswith(
        "SharedArray.from_array: numpy cannot make an array of [[1], [2, 3]] (setting an "
        "array element with a sequence"
    )
    assert str(ragged.value).endswith("); pass a numpy array, or nested lists of one shape")
    with pytest.raises(TypeError) as objects:
        SharedArray.from_array([1, "a", None])
    assert str(objects.value) == (
        "SharedArray.from_array: [1, 'a', None] makes a numpy array of dtype object, whose "
        "elements are Python objects (mixed types, None, or an integer past 64 bits, say), "
        "which cannot be shared; pass numbers of one type, strings or bytes, or give a dtype"
    )
    with pytest.raises(ValueError) as order:
        SharedArray.from_array([1.0], order="X")  # type: ignore[arg-type]
    assert str(order.value) == (
        "SharedArray.from_array: order 'X' is not valid: pass 'C', 'F', 'A' or 'K' ('C' is "
        "row-major, numpy's default; 'F' column-major, Fortran's)"
    )
    with pytest.raises(TypeError) as dtype:
        SharedArray.from_array([1.0], "float99")
    assert str(dtype.value).startswith(
        "SharedArray.from_array: dtype 'float99' is not a numpy dtype ("
    ), dtype.value
    with pytest.raises(ValueError) as unfit:
        SharedArray.from_array(["x"], np.int32)
    assert str(unfit.value).startswith(
        "SharedArray.from_array: numpy cannot make an array of ['x'] (invalid literal"
    ), unfit.value
    assert str(unfit.value).endswith("nested lists of one shape whose values fit dtype int32")
    with pytest.raises(TypeError, match=r"an integer past 64 bits"):
        SharedArray.from_array([2**64])
    with pytest.raises(TypeError, match=r"variable-width dtype .*pass data.astype\('U'\)"):
        SharedArray.from_array(np.array(["a", "bc"], dtype=np.dtypes.StringDType()))

    class Undecodable:
        def __array__(self, *args: Any, **kwargs: Any) -> Any:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "not text")

    with pytest.raises(ValueError) as odd:  # (it cannot be made again with one argument)
        SharedArray.from_array(Undecodable())
    assert "numpy cannot make an array of" in str(odd.value), odd.value
    assert isinstance(odd.value.__cause__, UnicodeDecodeError)
    # The data's repr costs no more than a few of its elements.
    with pytest.raises(ValueError) as ragged_and_long:
        SharedArray.from_array([[1], *([2, 3] for _ in range(10_000))])
    assert len(str(ragged_and_long.value)) < 400, str(ragged_and_long.value)[:400]
    with pytest.raises(ValueError, match=r"^SharedArray.create: order 'f' is not valid"):
        SharedArray.create(3, order="f")  # type: ignore[arg-type]
    assert ours() == before


def seen_free(monkeypatch: pytest.MonkeyPatch, pages: int) -> int:
    """Have /dev/shm seen with ``pages`` pages free (its total as it is): the
    real one is as large as this machine's memory, which a test that makes
    an array up to its free space, should the check fail, would fill. The
    bytes free."""
    real = os.statvfs

    def statvfs(path: Any) -> os.statvfs_result:
        space = real(path)
        if os.fspath(path) != "/dev/shm":
            return space
        blocks = pages * PAGE // space.f_frsize
        return os.statvfs_result((*space[:3], blocks, blocks, *space[5:]))

    monkeypatch.setattr(os, "statvfs", statvfs)
    return pages * PAGE


@pytest.mark.parametrize(("short", "made"), [(0, False), (63, False), (64, True), (65, True)])
def test_from_array_of_more_than_the_free_space_is_refused_before_anything_is_made(
    short: int, made: bool, monkeypatch: pytest.MonkeyPatch, master_cleanup: None
) -> None:
    """Copying writes every page at once: past /dev/shm's free space the
    process would die of SIGBUS. Its pages are counted, with its header's
    (64 bytes, here): data less than a header short of the free space
    fills a page more than there is. (It counted the data alone.)"""
    before = ours()
    free = seen_free(monkeypatch, 16)
    n = free - short
    if made:
        array = SharedArray.from_array(np.ones(n, np.uint8))
        try:
            assert int(array.open(np.uint8).sum()) == n
        finally:
            array.release()
        return
    with pytest.raises(ValueError) as caught:
        SharedArray.from_array(np.ones(n, np.uint8))
    assert str(caught.value) == (
        f"SharedArray.from_array: a shared array of shape ({n},) and dtype |u1 writes "
        f"{free + PAGE:,} bytes at once (the pages of its header and data), which is too "
        f"much: /dev/shm, where shared memory lives, has {free:,} bytes free, and a process "
        "that writes past its free space is killed by SIGBUS. Pass less data, or make room "
        "in /dev/shm (or enlarge it: mount -o remount,size=..., or docker run --shm-size=...)"
    )
    assert ours() == before


def test_from_array_or_create_on_a_full_dev_shm_is_refused_before_anything_is_made(
    monkeypatch: pytest.MonkeyPatch, master_cleanup: None
) -> None:
    """Even an empty array writes its header's page at once."""
    before = ours()
    seen_free(monkeypatch, 0)
    for make in (lambda: SharedArray.from_array(np.zeros(0)), lambda: SharedArray.create(4)):
        with pytest.raises(ValueError) as caught:
            make()
        message = str(caught.value)
        assert f"writes {PAGE:,} bytes at once (the pages of its header), which is too " in (
            message
        ), message
        assert "has 0 bytes free" in message, message
    assert ours() == before


def test_an_order_written_over_in_the_header_is_a_clear_error() -> None:
    array = SharedArray.create(2, "int8")
    try:
        with open(shm_path(netmcore.get_shm(array.res_id)), "r+b") as memory:
            memory.seek(_LAYOUT.size - 1)  # the header's last byte: the order
            memory.write(b"Z")
        with pytest.raises(ValueError) as caught:
            array.open()
        assert str(caught.value) == (
            f"resource {array.res_id!r} has a shared array's mark, but its header's order, "
            "b'Z', is neither C nor F: something wrote over it; make the array again"
        )
    finally:
        array.release()


# --------------------------------------------------------------------------
# open(readonly=True): a view of memory mapped read-only, which no write
# goes through, and which numpy will not make writeable again
# --------------------------------------------------------------------------

WRITE_REFUSED = "ValueError: assignment destination is read-only"
FLIP_REFUSED = "ValueError: cannot set WRITEABLE flag to True of this array"


def flip(view: Any) -> None:
    view.flags.writeable = True


def mapped_as(view: Any) -> str:
    """The permissions ("r--s", "rw-s") of the mapping under ``view``'s
    data, as the kernel has them: whatever numpy's flags say."""
    address = view.ctypes.data
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if start <= address < end:
                return perms
    return "unmapped"


def mappings_of(name: str) -> list[str]:
    """The permissions of each mapping of shm object ``name`` in this
    process, unlinked or not."""
    path = shm_path(name)
    with open("/proc/self/maps") as f:
        lines = [line.rstrip().removesuffix(" (deleted)") for line in f]
    return sorted(line.split()[1] for line in lines if line.endswith(path))


@netmcore.process
def reads_what_is_written(arg: tuple[SharedArray, int, int, int, int]) -> list[Any]:
    """Open ``array`` read-only, try to write it, and read it again once
    its writer has written it (``opened_w``, ``written_r``: the pipes)."""
    array, _opened_r, opened_w, written_r, _written_w = arg
    try:
        view = array.open(np.int64, readonly=True)
        seen: list[Any] = [view.tolist(), view.flags.writeable, mapped_as(view)]
        seen.append(outcome_text(lambda: view.__setitem__(0, 9)))
        seen.append(outcome_text(lambda: flip(view)))
        row = view[1:]  # a view of it is no more writeable than it
        seen.append(outcome_text(lambda: flip(row)))
        seen.append(outcome_text(lambda: np.add(view, 1, out=view)))
    finally:
        os.write(opened_w, b"o")  # (if it failed too: the writer waits for it)
    assert os.read(written_r, 1) == b"w"
    seen.append(view.tolist())  # the writer's writes, in the same memory
    array.release()
    return seen


@netmcore.process
def writes_what_is_read(arg: tuple[SharedArray | None, int, int, int, int]) -> list[Any]:
    """The writer: the master's array, or one it makes (a segment), opened
    read-only by a reader it starts, then written."""
    given, opened_r, opened_w, written_r, written_w = arg
    array = SharedArray.from_array(np.arange(3)) if given is None else given
    try:
        reader = reads_what_is_written.start((array, opened_r, opened_w, written_r, written_w))
        try:
            assert os.read(opened_r, 1) == b"o"
            array.open(np.int64)[:] = [10, 20, 30]
        finally:
            os.write(written_w, b"w")
        seen: list[Any] = joined(reads_what_is_written, reader)
        return seen
    finally:
        if given is None:
            array.release()


@pytest.mark.parametrize("made", ["by the master", "by a worker"])
def test_a_worker_opens_an_array_read_only_and_sees_its_writers_writes(
    made: str, pipes: Any, master_cleanup: None
) -> None:
    """A read-only view refuses writes, and numpy will not make it (or a
    view of it) writeable: its memory is mapped read-only ("r--s"). It is
    the writer's memory, not a copy: the writer's later writes show in it."""
    given = SharedArray.from_array(np.arange(3)) if made == "by the master" else None
    try:
        seen = run(writes_what_is_read, (given, *pipes(), *pipes()))
    finally:
        if given is not None:
            given.release()
    assert seen == [
        [0, 1, 2],
        False,
        "r--s",
        WRITE_REFUSED,
        FLIP_REFUSED,
        FLIP_REFUSED,
        "ValueError: output array is read-only",
        [10, 20, 30],
    ]


READ_ONLY_CASES: dict[str, tuple[Any, Any]] = {  # shape, dtype
    "int64": ((4, 3), "int64"),
    "column-major": ((2, 3), "float32"),
    "structured": (2, [("a", "<i4"), ("b", "<f8")]),
    "sub-array": (2, ("<i2", (3,))),
    "empty": ((0, 3), "float64"),
    "itemsize 0": (3, "V0"),
}


@pytest.mark.parametrize("case", list(READ_ONLY_CASES))
def test_a_read_only_view_is_the_writeable_ones_values_of_any_dtype(
    case: str, master_cleanup: None
) -> None:
    shape, dtype = READ_ONLY_CASES[case]
    order = "F" if case == "column-major" else "C"
    array = SharedArray.create(shape, dtype, order=order)
    try:
        view = array.open()
        if view.size and view.dtype.itemsize:
            view.ravel(order="A").view(np.uint8)[:] = np.arange(view.nbytes) % 251
        read_only = array.open(readonly=True)
        assert read_only.dtype == view.dtype
        assert read_only.shape == view.shape
        assert read_only.strides == view.strides
        assert read_only.tobytes(order="A") == view.tobytes(order="A")
        assert not read_only.flags.writeable
        assert outcome_text(lambda: read_only.__setitem__(..., 0)) == WRITE_REFUSED
        assert outcome_text(lambda: flip(read_only)) == FLIP_REFUSED
    finally:
        array.release()


@netmcore.process
def uses_an_array_read_only(arg: tuple[SharedArray, str, int, int, int, int]) -> list[Any]:
    """Open the maker's array read-only (twice), and writeable; once its
    maker has released it, release it in a with block (after one more
    read-only open): the last user's release."""
    array, name, _opened_r, opened_w, released_r, _released_w = arg
    seen: list[Any] = [mappings_of(name)]
    try:
        views = [array.open(readonly=True), array.open(np.float64, readonly=True)]
        writeable = array.open()
        seen.append(mappings_of(name))  # one read-only mapping for both views
    finally:
        os.write(opened_w, b"o")  # (if it failed too: the maker waits for it)
    assert os.read(released_r, 1) == b"r"
    seen.append(os.path.exists(shm_path(name)))  # this process's use keeps it
    with array:
        views.append(array.open(readonly=True))
        seen.append(mappings_of(name))  # the same one
    seen.append(os.path.exists(shm_path(name)))  # the last use ended with the block
    writeable[:] = 5.0  # its memory, as the views' of it, is kept until they go
    del writeable
    seen.append([float(view.sum()) for view in views])
    seen.append(mappings_of(name))
    del views
    seen.append(mappings_of(name))  # gone with the last view
    seen.append(outcome_text(lambda: array.open(readonly=True)).split(":")[0])
    return seen


@netmcore.process
def makes_an_array_read(pipes: tuple[int, int, int, int]) -> list[Any]:
    opened_r, _opened_w, _released_r, released_w = pipes
    array = SharedArray.create(4, "float64")
    name = netmcore.get_shm(array.res_id)
    reader = uses_an_array_read_only.start((array, name, *pipes))
    try:
        assert os.read(opened_r, 1) == b"o"
        array.release()  # the maker's use: the reader's keeps it
    finally:
        os.write(released_w, b"r")
    seen: list[Any] = joined(uses_an_array_read_only, reader)
    return seen


def test_a_read_only_open_takes_and_gives_back_a_use_as_a_writeable_one(pipes: Any) -> None:
    """In a worker, of a segment another worker made: the open makes the
    process a user, which keeps the array after its maker's release, once
    however many views it opens (and with one read-only mapping for them
    all); the release (here, a with block's end) of the last user destroys
    it, and the views keep their memory until they go."""
    assert run(makes_an_array_read, (*pipes(), *pipes())) == [
        [],
        ["r--s", "rw-s"],
        True,
        ["r--s", "rw-s"],
        False,
        [20.0, 20.0, 20.0],
        ["r--s"],
        [],
        "NoResource",
    ]


def test_a_read_only_open_of_a_preallocated_array_is_released_as_a_writeable_one(
    master_cleanup: None,
) -> None:
    """Before run, where the array is the master's mapping, inherited: the
    read-only mapping is this process's own, and goes with its release."""
    before = ours()
    array = SharedArray.from_array(np.arange(4.0))
    name = netmcore.get_shm(array.res_id)
    view = array.open(readonly=True)
    assert mappings_of(name) == ["r--s", "rw-s"]
    array.open()[0] = 7.0
    assert view.tolist() == [7.0, 1.0, 2.0, 3.0]
    array.release()
    assert os.path.exists(shm_path(name)) is False  # its only user released it
    assert view.tolist() == [7.0, 1.0, 2.0, 3.0]  # its memory kept, unlinked
    del view
    assert "r--s" not in mappings_of(name)
    assert ours() == before


def test_a_read_only_views_mapping_cannot_be_made_writable(master_cleanup: None) -> None:
    """Around numpy too: its descriptor was opened read-only, so the kernel
    refuses to make the mapping writable (mprotect: EACCES), as a program
    that went around numpy's flags could try."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with SharedArray.create(4, "int64") as array:
        view = array.open(readonly=True)
        page = view.ctypes.data - view.ctypes.data % PAGE
        done = libc.mprotect(page, PAGE, mmap.PROT_READ | mmap.PROT_WRITE)
        assert (done, ctypes.get_errno()) == (-1, errno.EACCES)
        assert mapped_as(view) == "r--s"


@pytest.mark.parametrize("bad", ["yes", 1, 0, None, np.True_])
def test_a_readonly_that_is_no_bool_is_refused_before_anything_is_taken(
    bad: Any, master_cleanup: None
) -> None:
    array = SharedArray.create(3, "int32")
    try:
        array.release()  # the process uses it no more: a refused open must not take it
        with pytest.raises(TypeError) as caught:
            array.open(readonly=bad)
        assert str(caught.value) == (
            f"SharedArray.open: readonly {bad!r} is not valid: it must be a bool, not "
            f"{type(bad).__name__}; pass readonly=True for a read-only view, or False (the "
            "default) for a writeable one"
        )
        with pytest.raises(TypeError, match=r"^SharedArray.open: readonly 'yes' is not valid"):
            array.open(np.int32, readonly="yes")  # type: ignore[call-overload]
        assert uses(array.res_id) == "NoResource", "a refused open took a use"
        assert array.res_id.n not in netmcore._shared_array._read_only
    finally:
        array.release()
