"""shipping (HTTP), instrumented with py-zipkin instead of OpenTelemetry: its spans go to the
collector as Zipkin v2 JSON (``POST /api/v2/spans``). The carrier API fails now and then (503).

    python shipping.py --port 7140 --zipkin http://127.0.0.1:9411/api/v2/spans

The sidecar hands the app a W3C ``traceparent`` (or B3 headers, when the caller sent B3):
``incoming_trace`` turns either into py-zipkin's ZipkinAttrs so this service's spans join the trace.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import random
import threading
import urllib.request
import uuid

from aiohttp import web
from py_zipkin import Encoding, Kind
from py_zipkin.request_helpers import extract_zipkin_attrs_from_headers
from py_zipkin.storage import Tracer
from py_zipkin.transport import BaseTransportHandler
from py_zipkin.util import ZipkinAttrs, generate_random_64bit_string

from shop_http import run


class BackgroundZipkinTransport(BaseTransportHandler):
    """Posts span batches from a thread, so a request never waits on the collector."""

    def __init__(self, url: str, capacity: int = 1000):
        self.url = url
        self.batches: queue.Queue = queue.Queue(maxsize=capacity)
        self._done = threading.Event()
        threading.Thread(target=self._post_forever, name="zipkin-transport", daemon=True).start()

    def get_max_payload_bytes(self):
        return None

    def send(self, payload) -> None:
        try:
            self.batches.put_nowait(payload)
        except queue.Full:
            pass  # the collector is not keeping up: drop, as tracing must never slow the service

    def flush(self, timeout_s: float = 2.0) -> None:
        try:
            self.batches.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._done.wait(timeout_s)

    def _post_forever(self) -> None:
        while (payload := self.batches.get()) is not None:
            data = payload if isinstance(payload, bytes) else payload.encode()
            request = urllib.request.Request(self.url, data=data, headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=5).close()
            except OSError:
                pass
        self._done.set()


def incoming_trace(headers) -> tuple[ZipkinAttrs | None, bool]:
    """(ZipkinAttrs for this request's SERVER span, whether it shares the caller's span id)."""
    parts = headers.get("traceparent", "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
        sampled = int(parts[3][:2] or "0", 16) & 1 == 1
        return ZipkinAttrs(parts[1], generate_random_64bit_string(), parts[2], "0", sampled), False
    return extract_zipkin_attrs_from_headers(headers, sample_rate=100.0, use_128bit_trace_id=True), True


def build_app(transport: BackgroundZipkinTransport, port: int) -> web.Application:
    @web.middleware
    async def zipkin_middleware(request: web.Request, handler):
        attrs, shared = incoming_trace(request.headers)
        route = request.match_info.route.resource.canonical
        span = Tracer().zipkin_span(
            service_name="shipping",
            span_name=f"{request.method} {route}",
            zipkin_attrs=attrs,
            sample_rate=None if attrs else 100.0,
            use_128bit_trace_id=True,
            transport_handler=transport,
            kind=Kind.SERVER,
            encoding=Encoding.V2_JSON,
            report_root_timestamp=not shared,
            host="127.0.0.1",
            port=port,
        )
        with span:
            try:
                response = await handler(request)
                status = response.status
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                tags = {"http.method": request.method, "http.route": route, "http.status_code": str(status)}
                if status >= 500:
                    tags["error"] = str(status)
                span.update_binary_annotations(tags)
            return response

    async def carrier_api(failure_rate: float) -> None:
        await asyncio.sleep(random.uniform(0.01, 0.04))
        if random.random() < failure_rate:
            raise web.HTTPServiceUnavailable(text="carrier API unavailable")

    async def quote(request: web.Request) -> web.Response:
        items = int(request.query.get("items", "1"))
        await carrier_api(0.01)
        return web.json_response({"price": round(4.9 + 1.5 * items, 2), "eta_days": random.randint(1, 5)})

    async def book_shipment(request: web.Request) -> web.Response:
        await request.json()
        await carrier_api(0.03)
        return web.json_response({"tracking": uuid.uuid4().hex[:10].upper()}, status=201)

    app = web.Application(middlewares=[zipkin_middleware])
    app.router.add_get("/quote", quote)
    app.router.add_post("/shipments", book_shipment)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--zipkin", required=True, help="Zipkin v2 spans URL of the collector")
    args = parser.parse_args()
    transport = BackgroundZipkinTransport(args.zipkin)
    try:
        run(build_app(transport, args.port), args.port)
    finally:
        transport.flush()


if __name__ == "__main__":
    main()
