"""The routing experiment, short: real collector and proxy processes on loopback, one of B's three
instances 200 ms slower from t0. Asserts who gets the traffic, not how fast anything is (latencies
on a shared 2-core runner are not for assertions): a balancer that sends under 1 % of its requests
to the slow instance has a p99 that is not the slow instance's, which is the p99 claim in traffic
terms. bench/routing.py runs the same experiment longer and prints the latencies."""

from __future__ import annotations

import json
import urllib.request

from tests.support.routing import Experiment, slow_share


def test_traffic_leaves_the_slow_instance_and_the_mesh_view_helps_new_callers(tmp_path):
    experiment = Experiment(tmp_path, warmup_s=3.0, after_s=9.0, fresh_after_s=4.0, fresh_callers=6, say=lambda _: None)
    seen = {}
    experiment.inspect = lambda collector: seen.update(
        hint=_get(collector.api_url + "/api/v1/hints/b"),
        hints=_get(collector.api_url + "/api/v1/hints"),
        metrics=urllib.request.urlopen(collector.api_url + "/metrics", timeout=10).read().decode(),
    )
    outcomes = experiment.run()
    rr, ewma, mesh = outcomes["round-robin"], outcomes["ewma"], outcomes["mesh"]
    for outcome in outcomes.values():
        assert all(sample.instance >= 0 for sample in outcome.steady + outcome.fresh), "a request failed"

    # Round-robin keeps sending a third to the slow instance; both load-aware balancers move away.
    assert 0.28 < slow_share(rr.steady_after(0)) < 0.39
    for outcome in (ewma, mesh):
        assert slow_share(outcome.steady_after(2)) < 0.01
        assert outcome.time_to_shift_s() is not None and outcome.time_to_shift_s() <= 5

    # Callers that start after t0 and send little: the local view learns by hitting the slow
    # instance, the mesh view knows before the first request.
    assert len(mesh.fresh) == len(ewma.fresh) == experiment.fresh_callers * experiment.fresh_requests
    slow_requests = {outcome.mode: sum(s.instance == 0 for s in outcome.fresh) for outcome in (ewma, mesh)}
    assert slow_requests["mesh"] <= 1, slow_requests  # at most a probe (0.5 % of picks go anywhere)
    assert slow_requests["ewma"] >= 3, slow_requests  # about one per caller

    # The collector's view: the slow endpoint's weight, B's hint over HTTP (KEDA shape) and gauges.
    weights = [line for line in seen["metrics"].splitlines() if line.startswith('tracemesh_route_weight{')]
    assert len(weights) == 3 and sum(float(line.rsplit(" ", 1)[1]) < 0.1 for line in weights) == 1
    hint = seen["hint"]
    assert hint["service"] == "b" and hint["currentReplicas"] == 3 and hint["desiredReplicas"] >= 1
    assert hint["rps"] > 0 and hint["concurrency"] > 0 and hint["reason"]
    assert [h["service"] for h in seen["hints"]["services"]] == ["b"]
    assert 'tracemesh_hint_desired_replicas{service="b"}' in seen["metrics"]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.load(reply)
