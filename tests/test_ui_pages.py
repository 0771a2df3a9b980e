"""The web UI in headless Chromium against a real collector filled with known traces
(tests/support/ui_traces.py): what a user sees on the service graph, trace search and trace view."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.support.browser import BrowserPage, browser, browser_page  # noqa: F401 - fixtures
from tests.support.collector import RunningCollector, collector_for
from tests.support.ui_traces import XSS_NAME, XSS_VALUE, known_traces, otlp_json, span_count

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def collector(tmp_path_factory) -> Iterator[RunningCollector]:
    running = collector_for(tmp_path_factory.mktemp("ui")).start()
    try:
        traces = known_traces()
        for trace in traces.values():
            status, _, body = running.post(running.otlp_http_url, otlp_json(trace), "application/json")
            assert status == 200, body
        running.wait_inserted(span_count(traces))
        yield running
    finally:
        running.stop()


def test_the_service_graph_shows_callers_above_callees_with_edge_metrics(collector, browser_page: BrowserPage):
    page = browser_page.page
    page.goto(collector.api_url + "/")
    graph = page.locator("#service-graph")
    expect(graph.locator(".node")).to_have_count(7)
    names = {name: graph.locator(f'.node[data-name="{name}"]') for name in
             ("user", "frontend", "catalog", "catalog-db", "checkout", "payments", "geo.example.com")}
    kinds = {name: node.get_attribute("data-kind") for name, node in names.items()}
    assert kinds == {"user": "external", "frontend": "service", "catalog": "service", "catalog-db": "database",
                     "checkout": "service", "payments": "service", "geo.example.com": "external"}
    top = {name: node.bounding_box()["y"] for name, node in names.items()}
    for caller, callee in [("user", "frontend"), ("frontend", "catalog"), ("frontend", "checkout"),
                           ("catalog", "catalog-db"), ("checkout", "payments"), ("checkout", "geo.example.com")]:
        assert top[caller] < top[callee], (caller, callee, top)

    payments_label = graph.locator('.edge-label[data-source="checkout"][data-target="payments"]')
    # 10 requests, 2 failed: 80% success, and the health colour says so.
    expect(payments_label).to_contain_text("80% ok")
    expect(payments_label).to_contain_text(re.compile(r"p99 \d"))
    assert "bad" in payments_label.get_attribute("class")
    catalog_label = graph.locator('.edge-label[data-source="frontend"][data-target="catalog"]')
    expect(catalog_label).to_contain_text("100% ok")
    assert "ok" in catalog_label.get_attribute("class").split()
    browser_page.screenshot("graph")


def test_clicking_an_edge_shows_its_series_endpoints_and_example_traces(collector, browser_page: BrowserPage):
    page = browser_page.page
    page.goto(collector.api_url + "/#/graph")
    page.locator('.edge-label[data-source="frontend"][data-target="catalog"]').click()
    details = page.locator("#graph-details")
    expect(details.locator("h2")).to_have_text("frontend → catalog")
    expect(details.locator("svg.chart")).to_have_count(3)
    expect(details.locator("svg.chart path.line").first).to_be_visible()
    endpoints = details.locator("table.endpoints")
    expect(endpoints).to_contain_text("10.0.0.1:8080")
    expect(endpoints).to_contain_text("10.0.0.2:8080")
    expect(details.locator("table.routes")).to_contain_text("GET /items")
    slowest = details.locator("#slowest-traces a.trace-link")
    expect(slowest).to_have_count(5)
    durations = [float(text.removesuffix(" ms")) for text in slowest.locator(".duration").all_text_contents()]
    assert durations == sorted(durations, reverse=True) and durations[0] == 121  # the longest shop trace first
    expect(details.locator("#failed-traces")).to_contain_text("none in this window")
    browser_page.screenshot("edge")

    page.locator('.edge-label[data-source="checkout"][data-target="payments"]').click()
    failed = details.locator("#failed-traces a.trace-link")
    expect(failed).to_have_count(2)
    failed.first.click()
    expect(page.locator("#waterfall")).to_contain_text("payments")
    assert page.url.split("#")[1].startswith("/trace/a")


def test_search_filters_narrow_the_results_and_points_open_traces(collector, browser_page: BrowserPage):
    page = browser_page.page
    page.goto(collector.api_url + "/#/search")
    expect(page.locator("#result-count")).to_have_text("12 traces")
    expect(page.locator("svg.scatter circle.point")).to_have_count(12)
    expect(page.locator("#search-service option")).to_contain_text(["any service", "catalog", "checkout", "frontend", "payments"])

    page.select_option("#search-service", "payments")
    expect(page.locator("#search-operation option")).to_contain_text(["any operation", "POST /charge"])
    page.select_option("#search-error", "true")
    page.click("#search-submit")
    expect(page.locator("#result-count")).to_have_text("2 traces")
    expect(page.locator("svg.scatter circle.point.error")).to_have_count(2)

    page.select_option("#search-error", "")
    page.fill("#search-minDuration", "75ms")
    page.click("#search-submit")
    # Shop trace i lasts 40 + 9i ms; payments' SERVER span (its proxy's time to first byte) is
    # 77.5 ms in the longest one (i = 9), 70.2 ms in the next.
    expect(page.locator("#result-count")).to_have_text("1 trace")
    page.fill("#search-minDuration", "")
    page.select_option("#search-service", "")
    page.fill("#search-tag", "tracemesh.endpoint=10.0.0.2:8080")
    page.click("#search-submit")
    expect(page.locator("#result-count")).to_have_text("5 traces")
    browser_page.screenshot("search")

    page.fill("#search-minDuration", "soon")
    page.click("#search-submit")
    expect(page.locator("#search-error-message")).to_contain_text("minDuration")

    page.goto(collector.api_url + "/#/search?service=checkout&error=true")
    page.locator("svg.scatter a.point-link").first.click()
    expect(page.locator("#waterfall .span-row").nth(1)).to_contain_text("GET /checkout")


def test_the_waterfall_shows_spans_in_order_with_the_proxy_breakdown(collector, browser_page: BrowserPage):
    page = browser_page.page
    trace_id = known_traces()["shop-3"].trace_id
    page.goto(f"{collector.api_url}/#/trace/{trace_id}")
    rows = page.locator("#waterfall .span-row:not(.ruler)")
    expect(rows).to_have_count(9)
    expected = [
        (0, "frontend", "GET /checkout"), (1, "frontend", "GET /items"), (2, "catalog", "GET /items"),
        (3, "catalog", "SELECT items"), (1, "frontend", "POST /orders"), (2, "checkout", "POST /orders"),
        (3, "checkout", "POST /charge"), (4, "payments", "POST /charge"), (3, "checkout", "GET /distance"),
    ]
    seen = [(int(row.get_attribute("data-depth")), row.locator(".service").text_content(), row.locator(".span-name").text_content())
            for row in rows.all()]
    assert seen == expected

    checkout_call = rows.nth(4)
    segments = checkout_call.locator(".segment")
    expect(segments).to_have_count(5)
    assert [s.get_attribute("data-segment") for s in segments.all()] == ["queue", "connect", "retry wait", "first byte", "body"]
    expect(checkout_call).to_contain_text("↻1")
    assert "error" in checkout_call.get_attribute("class")
    # The critical path runs through the slow checkout branch, not the catalog branch.
    assert "on-critical-path" in checkout_call.get_attribute("class")
    assert "on-critical-path" in rows.nth(7).get_attribute("class")
    assert "on-critical-path" not in (rows.nth(3).get_attribute("class") or "")
    browser_page.screenshot("waterfall")

    rows.nth(7).click()
    details = page.locator("#span-details")
    expect(details.locator("h2")).to_have_text("POST /charge")
    expect(details).to_contain_text("payment declined")
    expect(details).to_contain_text("tracemesh.proxy")
    expect(details).to_contain_text("tracemesh.proxy 0.1")


def test_a_child_outside_its_parent_is_drawn_inside_it_with_a_marker(collector, browser_page: BrowserPage):
    page = browser_page.page
    page.goto(f"{collector.api_url}/#/trace/{'c' * 32}")
    rows = page.locator("#waterfall .span-row:not(.ruler)")
    expect(rows).to_have_count(4)
    server, client = rows.nth(2), rows.nth(1)
    assert "skewed" in server.get_attribute("class")
    expect(server.locator(".skew-marker")).to_have_count(1)
    client_bar, server_bar = client.locator(".bar").bounding_box(), server.locator(".bar").bounding_box()
    assert client_bar["x"] <= server_bar["x"] + 0.5
    assert server_bar["x"] + server_bar["width"] <= client_bar["x"] + client_bar["width"] + 0.5
    lookup_bar = rows.nth(3).locator(".bar").bounding_box()
    assert lookup_bar["x"] >= server_bar["x"] - 0.5
    browser_page.screenshot("skew")


def test_span_data_is_shown_as_text_never_as_markup(collector, browser_page: BrowserPage):
    page = browser_page.page
    page.goto(collector.api_url + "/#/search?service=frontend&limit=50")
    expect(page.locator("#trace-list")).to_contain_text(XSS_NAME)
    page.goto(f"{collector.api_url}/#/trace/{'b' * 32}")
    name = page.locator("#waterfall .span-row:not(.ruler) .span-name").first
    expect(name).to_have_text(XSS_NAME)
    name.click()
    details = page.locator("#span-details")
    expect(details.locator("h2")).to_have_text(XSS_NAME)
    expect(details).to_contain_text(XSS_VALUE)
    assert page.locator("img[src='x'], script:not([src])").count() == 0
    browser_page.screenshot("escaped")
    # browser_page asserts at teardown that no dialog opened and no script error happened.


def test_the_hints_page_lists_services_with_their_replicas(collector, browser_page: BrowserPage):
    page = browser_page.page
    page.goto(collector.api_url + "/#/hints")
    catalog = page.locator('#hints tr[data-service="catalog"]')
    expect(catalog).to_be_visible()
    hint = next(hint for hint in collector.get_json("/api/v1/hints")["services"] if hint["service"] == "catalog")
    expect(catalog.locator("td").nth(1)).to_have_text(str(hint["currentReplicas"]))
    expect(catalog.locator("td.reason")).to_have_text(hint["reason"])
    browser_page.screenshot("hints")
