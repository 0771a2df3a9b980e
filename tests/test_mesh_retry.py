"""Retries only where safe, paid from a budget of 20% of requests plus a reserve, with jittered backoff."""

import random

import pytest

from mesh.retry import (
    CONNECT_FAILED,
    CONNECTION_LOST,
    RetryBudget,
    backoff,
    grpc_retryable,
    http_retryable,
)


def withdraw_all(budget, now):
    taken = 0
    while budget.withdraw(now=now):
        taken += 1
        assert taken < 100_000
    return taken


def test_budget_allows_exactly_the_configured_share_of_requests():
    budget = RetryBudget(ratio=0.2, min_per_s=0.0, ttl_s=10.0, now=0.0)
    for _ in range(100):
        budget.deposit(now=0.0)
    assert withdraw_all(budget, now=0.0) == 20
    for _ in range(10):
        budget.deposit(now=0.1)
    assert withdraw_all(budget, now=0.1) == 2


def test_reserve_allows_min_per_second_over_the_window_without_traffic():
    budget = RetryBudget(ratio=0.2, min_per_s=10.0, ttl_s=10.0, now=0.0)
    assert withdraw_all(budget, now=0.0) == 100
    for _ in range(50):
        budget.deposit(now=0.0)
    assert withdraw_all(budget, now=0.0) == 10


def test_spent_budget_refills_as_the_window_slides():
    budget = RetryBudget(ratio=0.5, min_per_s=0.0, ttl_s=10.0, now=0.0)
    for _ in range(10):
        budget.deposit(now=0.0)
    assert withdraw_all(budget, now=0.0) == 5
    assert not budget.withdraw(now=9.5)  # still inside the window
    for _ in range(10):
        budget.deposit(now=10.5)  # the first deposits and withdrawals have expired
    assert withdraw_all(budget, now=10.5) == 5
    assert withdraw_all(budget, now=100.0) == 0  # a long pause empties everything


def test_refused_withdrawal_takes_nothing():
    budget = RetryBudget(ratio=0.1, min_per_s=0.0, now=0.0)
    for _ in range(10):
        budget.deposit(now=0.0)
    assert budget.withdraw(now=0.0)
    assert not budget.withdraw(now=0.0)
    for _ in range(10):
        budget.deposit(now=0.0)
    assert budget.withdraw(now=0.0)


def test_backoff_grows_exponentially_to_the_cap_with_jitter():
    low = [backoff(attempt, random=lambda: 0.0) for attempt in range(1, 7)]
    high = [backoff(attempt, random=lambda: 0.999999) for attempt in range(1, 7)]
    assert low == pytest.approx([0.0125, 0.025, 0.05, 0.1, 0.125, 0.125])
    assert high == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.25, 0.25], rel=1e-5)
    rng = random.Random(5)
    samples = {backoff(3, random=rng.random) for _ in range(50)}
    assert len(samples) == 50 and all(0.05 <= s <= 0.1 for s in samples)
    assert backoff(1000) <= 0.25


@pytest.mark.parametrize(
    "method, status, error, expected",
    [
        (b"GET", 503, None, True),
        (b"GET", 502, None, True),
        (b"HEAD", 504, None, True),
        (b"PUT", 503, None, True),
        (b"DELETE", None, CONNECTION_LOST, True),
        (b"GET", 500, None, False),
        (b"GET", 200, None, False),
        (b"GET", 429, None, False),
        (b"POST", 503, None, False),
        (b"PATCH", None, CONNECTION_LOST, False),
        (b"POST", None, CONNECT_FAILED, True),
        (b"GET", None, "timeout", False),
    ],
)
def test_http_retryable_only_when_safe(method, status, error, expected):
    assert http_retryable(method, status, error) is expected


def test_grpc_retryable_statuses_are_configurable():
    assert grpc_retryable(14)
    assert not grpc_retryable(4)  # DEADLINE_EXCEEDED: the caller's time is up
    assert not grpc_retryable(2)
    assert grpc_retryable(8, retryable={8, 14})
