"""The proxy's request path runs compiled: every module with a ``.pxd`` beside it is loaded from the
extension Cython built (setup.py), not from its ``.py`` source, whose classes would then be plain
Python classes. A build that skipped Cython would still pass every functional test, only slower."""

import importlib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DECLARED = sorted(".".join(pxd.relative_to(REPO_ROOT).with_suffix("").parts) for pxd in (REPO_ROOT / "mesh").glob("*.pxd"))


def test_the_request_path_is_declared():
    assert {"mesh.http1", "mesh.relay", "mesh.stack", "mesh.balance", "mesh.ewma"} <= set(DECLARED)


@pytest.mark.parametrize("name", DECLARED)
def test_module_with_declarations_is_compiled(name):
    module = importlib.import_module(name)
    assert Path(module.__file__).suffix == ".so", f"{name} was imported from {module.__file__}"


def test_exchange_fields_are_typed():
    from mesh.relay import Exchange

    exchange = Exchange()
    with pytest.raises(TypeError):
        exchange.status = "200"  # an int field: a str is refused by the extension type
    with pytest.raises(AttributeError):
        exchange.not_a_field = 1  # no __dict__: only the declared fields exist
