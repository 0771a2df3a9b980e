"""Rendering the store's SQL files: escaping, optional lines, feature-gated statements, versions."""

from __future__ import annotations

import pytest

from collector.store import schema, sql


def test_parameters_are_escaped_literals():
    rendered = sql.render(
        "SELECT %(text)s, %(number)s, %(texts)s, %(ids)s",
        {"text": "a'b\\c\n", "number": 2**64 - 1, "texts": ["x'", "y"], "ids": ("z",)},
    )
    assert rendered == "SELECT 'a\\'b\\\\c\\n', 18446744073709551615, ['x\\'', 'y'], ('z')"


def test_optional_lines_stay_only_when_their_parameter_is_given():
    template = "SELECT 1\nWHERE 1\n  AND a = %(a)s  -- if a\n  AND b = %(b)s  -- if b\n  AND c IN %(c)s  -- if c"
    assert sql.render(template, {"a": "x", "b": None, "c": ()}) == "SELECT 1\nWHERE 1\n  AND a = 'x'"
    assert sql.render(template, {"a": None, "b": 0, "c": ("k",)}) == "SELECT 1\nWHERE 1\n  AND b = 0\n  AND c IN ('k')"


@pytest.mark.parametrize("value", [1.5, {"a": 1}, [1, 2], b"bytes"])
def test_parameter_types_without_trusted_escaping_are_refused(value):
    with pytest.raises(TypeError, match="value"):
        sql.render("SELECT %(value)s", {"value": value})


def test_script_runs_a_statement_only_where_its_feature_exists():
    script = "-- comment\nSET x = 1;\n\n-- requires: ttl\nALTER TABLE t MODIFY TTL d + %(days)s;\nSELECT 2"
    assert sql.script(script, lambda feature: False, {"days": 3}) == ["SET x = 1", "SELECT 2"]
    assert sql.script(script, lambda feature: True, {"days": 3}) == [
        "SET x = 1",
        "ALTER TABLE t MODIFY TTL d + 3",
        "SELECT 2",
    ]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("18.16.1", {"experimental_low_cardinality": True, "skip_indexes": False, "ttl": False, "merge_selector_base": False}),
        ("20.8.3.18", {"experimental_low_cardinality": False, "skip_indexes": True, "ttl": True, "merge_selector_base": False}),
        ("26.9.2.1", {"experimental_low_cardinality": False, "skip_indexes": True, "ttl": True, "merge_selector_base": True}),
    ],
)
def test_features_follow_the_server_version(version, expected):
    features = schema.ServerFeatures.from_version_text(version)
    assert {feature: features.has(feature) for feature in expected} == expected


def test_migrations_are_numbered_from_one_without_gaps():
    versions = [version for version, _ in schema.migrations()]
    assert versions == list(range(1, len(versions) + 1))
