"""Failure accrual: N consecutive failures eject an endpoint; probes every 1, 2, 4 ... 60 s let it back."""

from mesh.breaker import FailureAccrual


def eject(breaker, now=0.0):
    for _ in range(breaker.threshold):
        breaker.failure(now)
    assert breaker.ejected


def test_fewer_than_threshold_consecutive_failures_keep_the_endpoint():
    breaker = FailureAccrual(threshold=3)
    breaker.failure(0.0)
    breaker.failure(0.0)
    breaker.success()
    breaker.failure(0.0)
    breaker.failure(0.0)
    assert not breaker.ejected and breaker.available(0.0)
    breaker.failure(0.0)
    assert breaker.ejected and not breaker.available(0.0)
    assert breaker.ejections == 1


def test_failed_probes_double_the_ejection_up_to_the_cap():
    breaker = FailureAccrual(threshold=5, min_backoff_s=1.0, max_backoff_s=60.0)
    eject(breaker, now=0.0)
    now = 0.0
    observed = []
    for _ in range(8):
        backoff = 0.0
        while not breaker.available(now + backoff):  # scan in 0.25 s steps for the probe
            backoff += 0.25
        observed.append(backoff)
        now += backoff
        assert not breaker.available(now)  # exactly one probe
        breaker.failure(now, sent_at=now)
    assert observed == [1, 2, 4, 8, 16, 32, 60, 60]
    assert breaker.ejections == 9


def test_successful_probe_restores_and_resets_the_backoff():
    breaker = FailureAccrual(threshold=2)
    eject(breaker, now=0.0)
    assert breaker.available(1.0)
    breaker.failure(1.0, sent_at=1.0)
    assert breaker.available(3.0)  # second ejection lasted 2 s
    breaker.success()
    assert not breaker.ejected
    assert all(breaker.available(3.0) for _ in range(10))
    eject(breaker, now=10.0)
    assert not breaker.available(10.9) and breaker.available(11.0)  # back to 1 s


def test_a_probe_that_never_reports_allows_another_one_backoff_later():
    breaker = FailureAccrual(threshold=1)
    eject(breaker, now=0.0)
    assert breaker.available(1.0)
    assert not breaker.available(1.5)
    assert breaker.available(2.0)
    assert breaker.ejections == 1


def test_stragglers_from_before_the_ejection_do_not_extend_it():
    breaker = FailureAccrual(threshold=2)
    eject(breaker, now=0.0)
    breaker.failure(0.5, sent_at=0.0)  # in flight when ejected, before any probe
    assert breaker.available(1.0)
    breaker.failure(1.2, sent_at=0.1)  # sent before the probe
    assert breaker.ejections == 1
    breaker.failure(1.3, sent_at=1.0)  # the probe itself failed
    assert breaker.ejections == 2
    assert not breaker.available(3.2) and breaker.available(3.3)


def test_threshold_zero_never_ejects():
    breaker = FailureAccrual(threshold=0)
    for n in range(1000):
        breaker.failure(float(n))
    assert not breaker.ejected and breaker.available(1000.0) and breaker.ejections == 0
