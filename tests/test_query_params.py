"""The search parameters a user types become exactly the TraceQuery they mean, or a message naming the parameter."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from collector.query_api import BadParameter, parse_duration, parse_time, search_query
from collector.store import TraceQuery


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("800ns", 800),
        ("250us", 250_000),
        ("250µs", 250_000),
        ("250μs", 250_000),
        ("1.5ms", 1_500_000),
        (".5ms", 500_000),
        ("2s", 2_000_000_000),
        ("2.000000001s", 2_000_000_001),
        ("5m", 300_000_000_000),
        ("1h30m", 5_400_000_000_000),
        ("0ns", 0),
        ("0.5ns", 0),
    ],
)
def test_durations_with_units_become_exact_nanoseconds(text, nanoseconds):
    assert parse_duration("minDuration", text) == nanoseconds


@pytest.mark.parametrize("text", ["", "100", "1.5", "-1ms", "1 ms", "ms", "1.2.3ms", "1msx", "1d", "1e3ms", "٣ms", "9" * 30 + "h"])
def test_bad_durations_are_refused_naming_the_parameter(text):
    with pytest.raises(BadParameter, match="^maxDuration: "):
        parse_duration("maxDuration", text)


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2026-11-25T01:34:03Z", 1_795_570_443_000_000_000),
        ("2026-11-25T01:34:03.5Z", 1_795_570_443_500_000_000),
        ("2026-11-25t01:34:03.123456789z", 1_795_570_443_123_456_789),
        ("2026-11-25T03:34:03+02:00", 1_795_570_443_000_000_000),
        ("2026-11-24T20:04:03.000001-05:30", 1_795_570_443_000_001_000),
        ("2026-11-25 01:34:03Z", 1_795_570_443_000_000_000),
        ("1795570443500000", 1_795_570_443_500_000_000),
        ("0", 0),
    ],
)
def test_times_are_rfc3339_or_unix_microseconds(text, nanoseconds):
    assert parse_time("start", text) == nanoseconds


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-25",
        "2026-11-25T01:34:03",  # no offset: ambiguous
        "2026-13-25T01:34:03Z",
        "2026-02-30T01:34:03Z",
        "2026-11-25T25:00:00Z",
        "2026-11-25T01:34:03.1234567891Z",
        "2026-11-25T01:34:03+24:00",
        "1969-12-31T23:59:59Z",
        "-1",
        "1.5",
        "9" * 5000,
        "now",
        "２０２６",
    ],
)
def test_bad_times_are_refused_naming_the_parameter(text):
    with pytest.raises(BadParameter, match="^end: "):
        parse_time("end", text)


def test_every_parameter_lands_in_the_query():
    query = search_query(
        MultiDict(
            [
                ("service", "frontend"),
                ("operation", "GET /checkout"),
                ("tag", "http.status_code=500"),
                ("tag", "db.statement=a=b"),
                ("minDuration", "1ms"),
                ("maxDuration", "2s"),
                ("start", "1000"),
                ("end", "2000"),
                ("limit", "7"),
                ("error", "TRUE"),
            ]
        )
    )
    assert query == TraceQuery(
        service="frontend",
        operation="GET /checkout",
        tags=(("http.status_code", "500"), ("db.statement", "a=b")),
        min_duration_ns=1_000_000,
        max_duration_ns=2_000_000_000,
        start_ns=1_000_000,
        end_ns=2_000_000,
        error=True,
        limit=7,
    )


def test_empty_values_count_as_not_given():
    empty = MultiDict((name, "") for name in ("service", "operation", "tag", "minDuration", "start", "limit", "error"))
    assert search_query(empty) == TraceQuery(limit=20)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([("limit", "0")], "^limit: "),
        ([("limit", "1001")], "^limit: "),
        ([("limit", "99999999999999999999999999999")], "^limit: "),
        ([("limit", "-5")], "^limit: "),
        ([("limit", "ten")], "^limit: "),
        ([("error", "yes")], "^error: "),
        ([("tag", "novalue")], "^tag: "),
        ([("tag", "=value")], "^tag: "),
        ([("service", "a"), ("service", "b")], "^service: given 2 times"),
        ([("minDuration", "2s"), ("maxDuration", "1s")], "minDuration is greater than maxDuration"),
        ([("start", "2026-11-25T01:00:00Z"), ("end", "2026-11-25T00:00:00Z")], "start is after end"),
    ],
)
def test_bad_combinations_are_refused_naming_the_parameter(params, message):
    with pytest.raises(BadParameter, match=message):
        search_query(MultiDict(params))
