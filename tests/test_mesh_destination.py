"""Destinations follow discovery, carry per-service policy, and parse the --timeout flags."""

import asyncio

import pytest

from mesh.destination import DestinationPolicy, Destinations, parse_duration, parse_timeouts
from mesh.discovery import EndpointsFile


def with_destinations(tmp_path, text, scenario, **kwargs):
    path = tmp_path / "endpoints.toml"
    path.write_text(text)

    async def main():
        discovery = EndpointsFile(path)
        await discovery.load()
        return await scenario(path, discovery, Destinations(discovery, **kwargs))

    return asyncio.run(main())


def test_known_service_gets_one_destination_with_its_endpoints(tmp_path):
    async def scenario(path, discovery, destinations):
        payments = destinations.get("payments")
        assert [e.address for e in payments.balancer.endpoints] == ["127.0.0.1:4101", "127.0.0.1:4102"]
        assert destinations.get("payments") is payments
        assert destinations.get("Payments:8080") is payments  # Host header spellings
        assert destinations.get("payments:80") is payments
        assert destinations.get("ledger") is None
        assert destinations.get("ledger:80") is None
        assert list(destinations) == [payments]

    with_destinations(tmp_path, 'payments = ["127.0.0.1:4101", "127.0.0.1:4102"]\n', scenario)


def test_endpoint_changes_reach_the_balancer_and_removed_services_stop_resolving(tmp_path):
    async def scenario(path, discovery, destinations):
        payments = destinations.get("payments:80")
        kept = payments.balancer.endpoints[1]
        kept.ewma.start()
        path.write_text('payments = ["127.0.0.1:4102", "127.0.0.1:4103"]\nledger = []\n')
        await discovery.refresh()
        assert [e.address for e in payments.balancer.endpoints] == ["127.0.0.1:4102", "127.0.0.1:4103"]
        assert payments.balancer.endpoints[0] is kept and kept.ewma.pending == 1
        assert destinations.get("ledger").balancer.endpoints == []
        path.write_text('ledger = ["127.0.0.1:4201"]\n')
        await discovery.refresh()
        assert payments.balancer.endpoints == []
        assert destinations.get("payments") is None and destinations.get("payments:80") is None

    with_destinations(tmp_path, 'payments = ["127.0.0.1:4101", "127.0.0.1:4102"]\n', scenario)


def test_policy_reaches_the_layers_and_overrides_apply_per_service(tmp_path):
    default = DestinationPolicy(max_in_flight=7, max_queue=3, max_queue_wait_s=0.5, failure_threshold=2)
    slow = DestinationPolicy(timeout_s=30.0, retry_ratio=0.5, retry_min_per_s=0.0)

    async def scenario(path, discovery, destinations):
        payments = destinations.get("payments")
        assert payments.policy is default
        assert (payments.admission.max_in_flight, payments.admission.max_queue) == (7, 3)
        assert payments.balancer.endpoints[0].breaker.threshold == 2
        reports = destinations.get("reports")
        assert reports.policy.timeout_s == 30.0
        assert reports.retry_budget.ratio == 0.5 and reports.retry_budget.reserve == 0.0

    with_destinations(
        tmp_path,
        'payments = ["127.0.0.1:4101"]\nreports = ["127.0.0.1:4301"]\n',
        scenario,
        default_policy=default,
        overrides={"reports": slow},
    )


@pytest.mark.parametrize("text, seconds", [("250ms", 0.25), ("2s", 2.0), ("1.5s", 1.5), ("1m", 60.0), ("3", 3.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "fast", "-1s", "0s", "2h", "1 s s"])
def test_parse_duration_rejects_nonsense(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_timeout_flags_set_the_default_and_per_service_timeouts():
    default, overrides = parse_timeouts(["payments=2s", "5s", "ledger=250ms"])
    assert default.timeout_s == 5.0
    assert overrides["payments"].timeout_s == 2.0 and overrides["ledger"].timeout_s == 0.25
    assert overrides["payments"].max_in_flight == default.max_in_flight
    with pytest.raises(ValueError, match="--timeout 'payments=soon'"):
        parse_timeouts(["payments=soon"])
    with pytest.raises(ValueError, match="SERVICE=DURATION"):
        parse_timeouts(["=2s"])


def test_remembered_host_spellings_are_bounded(tmp_path):
    async def scenario(path, discovery, destinations):
        payments = destinations.get("payments")
        assert all(destinations.get(f"payments:{port}") is payments for port in range(1, 6000))
        assert len(destinations._by_name) <= 4096

    with_destinations(tmp_path, 'payments = ["127.0.0.1:4101"]\n', scenario)


def test_authorities_as_received_are_remembered_until_discovery_drops_the_service(tmp_path):
    async def scenario(path, discovery, destinations):
        payments = destinations.by_authority(b"Payments:8080")
        assert payments is destinations.get("payments")
        assert destinations.by_authority(b"ledger") is None
        assert destinations.authorities == {b"Payments:8080": payments}  # what the data path reads first
        path.write_text('ledger = ["127.0.0.1:4201"]\n')
        await discovery.refresh()
        assert destinations.authorities == {}
        assert destinations.by_authority(b"Payments:8080") is None
        assert destinations.by_authority(b"ledger:80") is destinations.get("ledger")
        assert all(destinations.by_authority(b"ledger:%d" % port) for port in range(1, 6000))
        assert len(destinations.authorities) <= 4096

    with_destinations(tmp_path, 'payments = ["127.0.0.1:4101"]\n', scenario)
