"""`tracemesh traces` and `tracemesh trace` reading a real query API over HTTP.

Tests marked ``as_a_user`` run the command as a child process, as a user does; the rest call the
same entry point (``tracemesh.cli.main``) in this process, because each child pays a second or more
of imports for every subcommand.
"""

from __future__ import annotations

import io
import subprocess
import sys
import urllib.parse
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from collector.query_cli import trace_tree
from tests.support.collector import collector_for
from tests.support.processes import REPO_ROOT, ManagedProcess, free_port, tracemesh_command, wait_for_port
from tests.support.query_server import http_get
from tests.support.query_store import api_over_corpus  # noqa: F401  (fixture)
from tracemesh.cli import main

ZIPKIN_TRACES = REPO_ROOT.parent / "shared" / "conformance" / "zipkin-traces"

# The CLI only speaks HTTP, so one backend behind the API is enough here.
on_chdb = pytest.mark.parametrize("api_over_corpus", ["chdb"], indirect=True)


def tracemesh(*args: str, as_a_user: bool = False) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``tracemesh ARGS``."""
    if as_a_user:
        result = subprocess.run(tracemesh_command(*args), capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
        return result.returncode, result.stdout, result.stderr
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(list(args))
    return code, stdout.getvalue(), stderr.getvalue()


def succeeded(*args: str, as_a_user: bool = False) -> str:
    code, stdout, stderr = tracemesh(*args, as_a_user=as_a_user)
    assert (code, stderr) == (0, ""), (code, stdout, stderr)
    return stdout


def failed(*args: str, as_a_user: bool = False) -> str:
    """The one-line message on stderr of a command that must fail cleanly (exit 1, no traceback)."""
    code, stdout, stderr = tracemesh(*args, as_a_user=as_a_user)
    assert code == 1 and stdout == "", (code, stdout, stderr)
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    return stderr


@on_chdb
def test_traces_prints_a_table_newest_first(api_over_corpus):
    corpus = api_over_corpus.corpus
    lines = succeeded(
        "traces", "--collector-url", api_over_corpus.base_url, "--service", "frontend", as_a_user=True
    ).splitlines()
    assert lines[0].split("  ")[0] == "TRACE ID"
    assert [line.split()[0] for line in lines[1:]] == [corpus.health_64bit, corpus.checkout]
    health, checkout = (line.split("  ") for line in lines[1:])
    assert [cell.strip() for cell in checkout if cell.strip()][1:] == [
        "frontend", "GET /checkout", time_text(corpus.base_ns), "120ms", "3", "1"
    ]
    assert [cell.strip() for cell in health if cell.strip()][-3:] == ["250us", "1", "0"]


@on_chdb
def test_traces_passes_every_filter_to_the_api(api_over_corpus):
    corpus = api_over_corpus.corpus
    start_us = str(corpus.base_ns // 1000)
    output = succeeded(
        "traces", "--collector-url", api_over_corpus.base_url,
        "--service", "payments", "--operation", "POST /charge",
        "--tag", "http.status_code=500", "--tag", "deployment.environment=prod",
        "--min-duration", "60ms", "--max-duration", "1s", "--start", start_us, "--end", "2099-01-01T00:00:00Z",
        "--error", "--limit", "5",
    )
    assert [line.split()[0] for line in output.splitlines()[1:]] == [corpus.checkout]
    assert succeeded("traces", "--collector-url", api_over_corpus.base_url, "--service", "payments", "--no-error") == (
        "no traces found\n"
    )
    two_newest = succeeded("traces", "--collector-url", api_over_corpus.base_url, "--limit", "2").splitlines()[1:]
    assert [line.split()[0] for line in two_newest] == corpus.trace_ids_newest_first()[:2]


@on_chdb
def test_traces_json_is_the_api_answer(api_over_corpus):
    url = api_over_corpus.base_url
    printed = orjson.loads(succeeded("traces", "--collector-url", url, "--tag", "messaging.system=kafka", "--json"))
    query = urllib.parse.urlencode([("limit", "20"), ("tag", "messaging.system=kafka")])
    assert printed == http_get(f"{url}/api/v1/traces?{query}")[2]
    assert [trace["traceId"] for trace in printed["traces"]] == [api_over_corpus.corpus.messaging]


@on_chdb
def test_trace_prints_the_span_tree_with_offsets_status_and_attributes(api_over_corpus):
    corpus = api_over_corpus.corpus
    output = succeeded("trace", "--collector-url", api_over_corpus.base_url, corpus.checkout.upper(), as_a_user=True)
    assert output.splitlines() == [
        f"trace {corpus.checkout}  frontend GET /checkout  {time_text(corpus.base_ns)}  120ms  3 spans, 1 errors",
        "└─ frontend  GET /checkout  [SERVER]  120ms  +0ns  OK  http.method=GET http.route=/checkout",
        "   └─ checkout  charge  [CLIENT]  80ms  +5ms  peer.service=payments",
        "      └─ payments  POST /charge  [SERVER]  60ms  +10ms  ERROR: card declined  "
        "http.status_code=500 amount=72.5 retry=true sizes=[1,2]",
    ]


@on_chdb
def test_trace_shows_spans_whose_parent_never_arrived_as_their_own_roots(api_over_corpus):
    corpus = api_over_corpus.corpus
    lines = succeeded("trace", "--collector-url", api_over_corpus.base_url, corpus.orphan).splitlines()
    assert lines[1:] == [
        "├─ batch  worker  [INTERNAL]  3s  +0ns  job=nightly",
        "└─ batch  sibling  [INTERNAL]  1ms  +4ms",
    ]
    wide = succeeded("trace", "--collector-url", api_over_corpus.base_url, corpus.wide).splitlines()
    assert wide[2] == "   └─ notifier  notify  [CLIENT]  20ms  +5m  http.status_code=200"


@on_chdb
def test_trace_accepts_a_64_bit_id_and_prints_json(api_over_corpus):
    url = api_over_corpus.base_url
    short = api_over_corpus.corpus.health_64bit[16:]
    printed = orjson.loads(succeeded("trace", "--collector-url", url, short, "--json"))
    assert printed == http_get(f"{url}/api/v1/traces/{api_over_corpus.corpus.health_64bit}")[2]


@on_chdb
def test_api_refusals_are_shown_as_one_line_and_exit_1(api_over_corpus):
    url = api_over_corpus.base_url
    assert failed("traces", "--collector-url", url, "--min-duration", "fast") == (
        "tracemesh: 400 from the collector: minDuration: 'fast' is not a duration; "
        "use a number with a unit (ns, us, ms, s, m, h), e.g. 250us or 1.5ms\n"
    )
    assert "limit: '5000' is not a whole number from 1 to 1000" in failed("traces", "--collector-url", url, "--limit", "5000")
    assert failed("trace", "--collector-url", url, "f" * 32) == f"tracemesh: 404 from the collector: trace {'f' * 32} not found\n"
    assert "is not 16 or 32 hexadecimal digits" in failed("trace", "--collector-url", url, "../services")


def api_trace(links: list[tuple[str, str]]) -> dict:
    """A trace in the API's shape whose spans (one ms apart) have the given (spanId, parentSpanId)."""
    spans = [
        {"spanId": span_id, "parentSpanId": parent, "service": "s", "name": f"op{index}", "kind": "INTERNAL",
         "startTimeUnixNano": str(index * 1_000_000), "durationNano": "1000", "status": {"code": "UNSET", "message": ""},
         "attributes": {}}
        for index, (span_id, parent) in enumerate(links)
    ]
    return {"traceId": "a" * 32, "rootService": "s", "rootName": "op0", "startTimeUnixNano": "0",
            "durationNano": str(len(links) * 1_000_000), "spanCount": len(links), "errorCount": 0, "spans": spans}


def test_a_parent_cycle_is_shown_once_from_its_earliest_span():
    tree = trace_tree(api_trace([("a", ""), ("b", "c"), ("c", "b"), ("d", "d")])).splitlines()
    assert tree[1:] == [
        "├─ s  op0  [INTERNAL]  1us  +0ns",
        "└─ s  op3  [INTERNAL]  1us  +3ms",  # its own parent: a root
        "└─ s  op1  [INTERNAL]  1us  +1ms",  # b and c are each other's parent
        "   └─ s  op2  [INTERNAL]  1us  +2ms",
    ]


def test_a_chain_deeper_than_the_recursion_limit_prints():
    depth = 1100
    assert depth > sys.getrecursionlimit()
    tree = trace_tree(api_trace([(f"{index:016x}", f"{index - 1:016x}" if index else "") for index in range(depth)]))
    assert tree.count("\n") == depth and tree.endswith(f"└─ s  op{depth - 1}  [INTERNAL]  1us  +1.099s")


@pytest.mark.parametrize("command", [("traces", "--service", "frontend"), ("trace", "a" * 32)])
def test_an_unreachable_collector_is_a_clear_message_not_a_traceback(command):
    url = f"http://127.0.0.1:{free_port()}"
    assert failed(*command, "--collector-url", url, as_a_user=True) == (
        f"tracemesh: cannot reach the collector at {url}: [Errno 111] Connection refused\n"
    )


def test_a_url_that_is_not_a_collector_is_named(tmp_path: Path):
    traces = tmp_path / "site" / "api" / "v1" / "traces"
    traces.mkdir(parents=True)
    (traces / ("a" * 32)).write_text("<html>not json</html>")
    (traces / ("b" * 32)).write_text('{"id": "not a trace"}')
    port = free_port()
    server = ManagedProcess(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path / "site")],
        tmp_path / "http.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, process=server.popen)
        assert "did not answer with JSON" in failed("trace", "a" * 32, "--collector-url", url)
        assert "answered JSON that is not the query API's" in failed("trace", "b" * 32, "--collector-url", url)
    finally:
        server.stop()


def test_a_collector_url_that_is_not_http_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["traces", "--collector-url", "localhost:9411"])
    assert exit_info.value.code == 2
    assert "argument --collector-url: 'localhost:9411' is not an http:// URL" in capsys.readouterr().err


@pytest.mark.skipif(not ZIPKIN_TRACES.exists(), reason="../shared is absent (a user's own clone)")
def test_a_zipkin_trace_sent_to_the_real_collector_reads_back_through_the_cli(tmp_path):
    spans = orjson.loads((ZIPKIN_TRACES / "yelp.json").read_bytes())
    collector = collector_for(tmp_path).start()
    try:
        status, _, body = collector.post(
            f"{collector.api_url}/api/v2/spans", orjson.dumps(spans), "application/json"
        )
        assert status == 202, body
        collector.wait_inserted(len(spans))
        table = succeeded("traces", "--collector-url", collector.api_url, "--service", "routing", as_a_user=True).splitlines()
        assert [line.split()[0] for line in table[1:]] == ["0000000000000000a03ee8fff1dcd9b9"]
        tree = succeeded("trace", "--collector-url", collector.api_url, "a03ee8fff1dcd9b9", as_a_user=True).splitlines()
        assert tree[0].startswith("trace 0000000000000000a03ee8fff1dcd9b9 ") and "16 spans" in tree[0]
        assert len(tree) == 1 + len(spans)
        # The server half of an RPC shares its client half's span id and sits under it, as in Zipkin's UI.
        assert tree[2].startswith("   ├─ unknown  post  [CLIENT]  125ms  +1.646ms  ")
        assert tree[3].startswith("   │  └─ yelp_main/api_proxy  post api proxy proxy  [SERVER]  88.935ms  +27.641ms  ")
        assert tree[4].startswith("   │     ├─ yelp-main  get my_cache_name_v2  [CLIENT]  993us  ")
    finally:
        collector.stop()


def time_text(whole_second_ns: int) -> str:
    return datetime.fromtimestamp(whole_second_ns // 1_000_000_000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.000")
