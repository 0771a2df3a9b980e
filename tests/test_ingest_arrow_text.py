"""collector/store/_arrow_text.c: text columns to Arrow buffers, checked against pyarrow's own converter."""

from __future__ import annotations

import functools

import pyarrow
import pytest

from collector.store import _arrow_text
from collector.store.chdb_backend import _string_lists, _strings

allocate = functools.partial(pyarrow.allocate_buffer, memory_pool=pyarrow.system_memory_pool())
TEXTS = ["", "a", "ключ=значение", "emoji 🚀", "x" * 10_000, '{"k":[1,2.5,true]}']


def chunked(items: list, sizes: tuple[int, ...]) -> list[list]:
    """``items`` cut into consecutive chunks of these sizes (the last one takes the rest)."""
    chunks, start = [], 0
    for size in sizes:
        chunks.append(items[start : start + size])
        start += size
    return chunks + [items[start:]]


CUTS = ((), (0,), (1, 0, 2), (3, 3, 0))  # one chunk; empty chunks first, between and last


def test_strings_equal_pyarrows_conversion():
    for values in ([], [""], TEXTS, TEXTS * 100):
        for cuts in CUTS:
            array = _strings(chunked(list(values), cuts))
            array.validate(full=True)
            assert array.equals(pyarrow.array(values, type=pyarrow.large_string()))
    assert len(_strings([])) == 0  # no chunks at all


def test_string_lists_equal_pyarrows_conversion():
    for rows in ([], [[]], [[], [""], []], [TEXTS, [], TEXTS[:2]] * 50):
        for cuts in CUTS:
            given = [tuple(row) if index % 2 else list(row) for index, row in enumerate(rows)]
            array = _string_lists(chunked(given, cuts))
            array.validate(full=True)
            assert array.equals(pyarrow.array(rows, type=pyarrow.large_list(pyarrow.large_string())))
    assert len(_string_lists([])) == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: _arrow_text.string_array([["a", 1]], allocate), "item 1 is int"),
        (lambda: _arrow_text.string_array((["a"],), allocate), "string_array.*list of lists"),
        (lambda: _arrow_text.string_array([("a",)], allocate), "string_array.*list of lists"),
        (lambda: _arrow_text.string_array(["a"], allocate), "string_array.*list of lists"),
        (lambda: _arrow_text.string_list_array([[["a"]], [["b"], "ab"]], allocate), "row 2 is str, not a list or tuple"),
        (lambda: _arrow_text.string_list_array([[["a", None]]], allocate), "item 1 is NoneType"),
        (lambda: _arrow_text.string_list_array([("a",)], allocate), "string_list_array.*list of lists"),
        (lambda: _arrow_text.string_array([["\ud800"]], allocate), "surrogate"),
    ],
)
def test_values_that_are_not_text_raise(call, message):
    with pytest.raises((TypeError, UnicodeEncodeError), match=message):
        call()


def test_allocate_must_give_the_bytes_asked_for():
    with pytest.raises(ValueError, match="smaller"):
        _arrow_text.string_array([["abc"]], lambda size: bytearray(size - 1))
    with pytest.raises(BufferError):
        _arrow_text.string_array([["abc"]], lambda size: bytes(size))  # not writable


def test_a_column_changed_by_allocate_raises_instead_of_overflowing():
    values = ["ab", "cd"]
    rows = [["ab"], ["cd"]]

    def growing(target, item):
        def allocate_and_grow(size):
            target.append(item)
            return bytearray(size)
        return allocate_and_grow

    with pytest.raises(RuntimeError, match="changed"):
        _arrow_text.string_array([values], growing(values, "efgh"))
    with pytest.raises(RuntimeError, match="changed"):
        _arrow_text.string_list_array([rows], growing(rows[0], "efgh"))
    outer = [["a"]]
    with pytest.raises(RuntimeError, match="changed"):
        _arrow_text.string_list_array([outer], growing(outer, ["x"]))
    chunks = [["a"]]
    with pytest.raises(RuntimeError, match="changed"):
        _arrow_text.string_array(chunks, growing(chunks, ["b"]))
    row_chunks = [[["a"]]]
    with pytest.raises(RuntimeError, match="changed"):
        _arrow_text.string_list_array(row_chunks, growing(row_chunks, [["x"]]))
