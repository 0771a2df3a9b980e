"""mesh/_slots.c: clone() copies the slot values of a __slots__-only object, and refuses other layouts."""

import sys

import pytest

from mesh._slots import clone


class Pair:
    __slots__ = ("first", "second")


def test_clone_copies_slot_values_shallowly_and_leaves_unset_slots_unset():
    shared = [1]
    original = Pair()
    original.first = shared
    before = sys.getrefcount(shared)
    copy = clone(original)
    after = sys.getrefcount(shared)
    assert after == before + 1
    assert type(copy) is Pair and copy is not original and copy.first is shared
    with pytest.raises(AttributeError):
        copy.second
    del copy
    after = sys.getrefcount(shared)
    assert after == before and original.first is shared


class WithDict:
    pass


class WithWeakref:
    __slots__ = ("value", "__weakref__")


class Derived(Pair):
    __slots__ = ("third",)


@pytest.mark.parametrize("instance", [WithDict(), WithWeakref(), Derived(), 1, "text", (1, 2), object()])
def test_clone_refuses_objects_that_are_not_only_slots(instance):
    with pytest.raises(TypeError):
        clone(instance)
