"""Load the store's SQL files and render them with escaped parameters.

Both backends receive finished SQL text rendered here, so there is exactly one way user input
reaches a statement: ``%(name)s`` placeholders filled with clickhouse-driver's own literal escaping.
(ClickHouse 18.16 has no server-side ``{name:Type}`` parameters.) Two small conventions keep the
queries whole SQL files instead of strings glued together in Python:

* a query line ending in ``-- if NAME`` is kept only when parameter ``NAME`` is given;
* in a script (several statements ending in ``;``), a statement preceded by ``-- requires: FEATURE``
  runs only on servers that have that feature (see ``schema.ServerFeatures``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from clickhouse_driver.util.escape import escape_params

SQL_DIR = Path(__file__).with_name("sql")

_OPTIONAL_LINE = re.compile(r"\s*--\s*if\s+(\w+)\s*$")
_REQUIRES = re.compile(r"^\s*--\s*requires:\s*(\w+)\s*$", re.MULTILINE)
_STATEMENT_END = re.compile(r";\s*$", re.MULTILINE)


@functools.cache
def load(name: str) -> str:
    return (SQL_DIR / name).read_text()


def render(template: str, params: Mapping[str, object] | None = None) -> str:
    params = params or {}
    for name, value in params.items():
        _check_param(name, value)
    lines = []
    for line in template.splitlines():
        optional = _OPTIONAL_LINE.search(line)
        if optional:
            if _absent(params.get(optional.group(1))):
                continue
            line = line[: optional.start()]
        lines.append(line)
    return "\n".join(lines) % escape_params(params, None)


def script(template: str, has_feature: Callable[[str], bool], params: Mapping[str, object] | None = None) -> list[str]:
    """The statements of a ``;``-separated script this server should run, each rendered."""
    statements = []
    for chunk in _STATEMENT_END.split(template):
        required = _REQUIRES.findall(chunk)
        body = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("--")).strip()
        if body and all(has_feature(feature) for feature in required):
            statements.append(render(body, params))
    return statements


def _absent(value: object) -> bool:
    return value is None or (isinstance(value, (list, tuple)) and not value)


def _check_param(name: str, value: object) -> None:
    """Only types whose escaping we rely on: text, integers (bools: flags for ``-- if`` lines), lists/tuples of text."""
    if value is None or isinstance(value, (str, int)):
        return
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return
    raise TypeError(f"SQL parameter {name!r} has unsupported type {type(value).__name__}")
