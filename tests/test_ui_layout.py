"""The UI's pure modules (graph layout, trace model) run in headless Chromium on hand-made inputs:
the layout's promises (callers above callees, long edges bent around nodes, no avoidable crossings,
parallel edges on separate ports, cycles survive) and the trace model's skew and breakdown rules."""

from __future__ import annotations

import pytest

from tests.support.browser import BrowserPage, browser, browser_page  # noqa: F401 - fixtures
from ui import STATIC_DIR

ORIGIN = "http://ui.test"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def modules(browser_page: BrowserPage) -> BrowserPage:
    """A page on a made-up origin whose /ui/ files come straight from ui/static (no server needed)."""
    def serve(route) -> None:
        path = route.request.url.removeprefix(ORIGIN)
        if path.startswith("/ui/"):
            route.fulfill(path=str(STATIC_DIR / path.removeprefix("/ui/")), content_type="text/javascript")
        else:
            route.fulfill(body="<!doctype html><title>modules</title>", content_type="text/html")

    browser_page.page.route(f"{ORIGIN}/**", serve)
    browser_page.page.goto(ORIGIN + "/")
    return browser_page


def layout(page, nodes: list[str], edges: list[tuple[str, str]]) -> dict:
    return page.evaluate(
        """async ([nodes, edges]) => {
            const { layoutGraph, NODE_W } = await import("/ui/layout.js");
            const result = layoutGraph(nodes, edges.map(([source, target]) => ({ id: `${source}>${target}`, source, target })));
            return {
                nodeWidth: NODE_W,
                crossings: result.crossings,
                nodes: Object.fromEntries(result.nodes),
                edges: Object.fromEntries(result.edges),
            };
        }""",
        [nodes, edges],
    )


def test_callers_sit_above_callees_and_a_long_edge_bends_around_the_node_between(modules: BrowserPage):
    result = layout(modules.page, ["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")])
    nodes = result["nodes"]
    assert nodes["a"]["layer"] == 0 and nodes["b"]["layer"] == 1 and nodes["c"]["layer"] == 2
    skip = result["edges"]["a>c"]["points"]
    assert len(skip) == 3  # through one dummy point in b's layer
    bend = skip[1]
    half = result["nodeWidth"] / 2
    assert not (nodes["b"]["x"] - half <= bend["x"] <= nodes["b"]["x"] + half), (bend, nodes["b"])


def test_the_order_within_layers_removes_avoidable_crossings(modules: BrowserPage):
    # Named so that alphabetical order crosses every edge pair.
    edges = [("a", "z"), ("b", "y"), ("c", "x"), ("a", "y")]
    result = layout(modules.page, ["a", "b", "c", "x", "y", "z"], edges)
    assert result["crossings"] == 0
    x = {name: node["x"] for name, node in result["nodes"].items()}
    order_top = sorted("abc", key=x.get)
    order_bottom = sorted("xyz", key=x.get)
    callee_of = {"a": "z", "b": "y", "c": "x"}
    assert [callee_of[name] for name in order_top] == order_bottom


def test_edges_from_one_node_leave_at_separate_ports(modules: BrowserPage):
    result = layout(modules.page, ["hub", "p", "q", "r"], [("hub", "p"), ("hub", "q"), ("hub", "r")])
    left_to_right = sorted("pqr", key=lambda name: result["nodes"][name]["x"])
    starts = [result["edges"][f"hub>{name}"]["points"][0]["x"] for name in left_to_right]
    assert starts == sorted(starts) and len(set(starts)) == 3  # one port each, in the callees' order


def test_a_cycle_is_laid_out_with_one_edge_drawn_upwards(modules: BrowserPage):
    result = layout(modules.page, ["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a"), ("a", "a")])
    layers = sorted(node["layer"] for node in result["nodes"].values())
    assert layers == [0, 1, 2]
    reversed_edges = [edge_id for edge_id, edge in result["edges"].items() if edge["reversed"]]
    assert reversed_edges == ["c>a"]
    upward = result["edges"]["c>a"]["points"]
    assert upward[0]["y"] > upward[-1]["y"]  # drawn from the caller c (below) up to a
    assert result["edges"]["a>a"]["selfLoop"]


def test_trace_model_shifts_skewed_subtrees_and_scales_an_overfull_breakdown(modules: BrowserPage):
    answer = modules.page.evaluate(
        """async () => {
            const { buildTrace, breakdown } = await import("/ui/trace-model.js");
            const span = (spanId, parentSpanId, start, duration, kind = "INTERNAL") => ({
                spanId, parentSpanId, kind, startTimeUnixNano: String(1700000000000000000n + BigInt(start)),
                durationNano: String(duration), attributes: {},
            });
            const model = buildTrace({ spans: [
                span("r", "", 1000, 100), span("late", "r", 1090, 50), span("grandchild", "late", 1100, 10),
                span("early", "r", 900, 20),
            ] });
            const rows = Object.fromEntries(model.rows.map((row) => [row.span.spanId, [row.start, row.end, row.skew, row.clamped]]));
            const overfull = breakdown({ "tracemesh.queue_ns": 60, "tracemesh.first_byte_ns": 60, "tracemesh.body_ns": 80 }, 100);
            return { rows, order: model.rows.map((row) => row.span.spanId), overfull };
        }"""
    )
    rows = answer["rows"]
    assert answer["order"] == ["r", "early", "late", "grandchild"]
    assert rows["r"] == [0, 100, 0, False]
    assert rows["early"] == [0, 20, 100, False]  # started 100 ns before its parent: shifted right
    assert rows["late"] == [50, 100, -40, False]  # ended 40 ns after its parent: shifted left
    assert rows["grandchild"] == [60, 70, 0, False]  # moved with its parent, still inside it
    assert [(part["name"], part["from"], part["to"]) for part in answer["overfull"]] == [
        ("queue", 0, 30), ("first byte", 30, 60), ("body", 60, 100)]
