"""A small service the proxy tests put behind sidecars (aiohttp; the proxy itself is raw asyncio).

    python -m tests.apps.upstream --port 8080 --name b [--next c --outbound 127.0.0.1:4140] [--mode MODE]

--mode fail:CODE answers every request but /stats with CODE; --mode hang never answers them.

Routes:
  /hop            answer {"service", "trace_headers"}; with --next, first call the next service's /hop
                  through the local sidecar's outbound (Host: NEXT), forwarding the trace headers
  /headers        {"headers": [[name, value], ...]} as received, "version": "1.1"
  /echo           echo the request body (streamed back, chunked) and its headers as x-echo-* counts
  /stream?n=&size= a chunked response of n chunks of size bytes, written one by one
  /status/{code}  answer that status (counts calls in /stats)
  /hang           never answer (until the client goes away)
  /stats          {"calls": {path: count}}
"""

from __future__ import annotations

import argparse
import asyncio
import collections

import aiohttp
from aiohttp import web

TRACE_HEADERS = ("traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled")


def build_app(name: str, next_service: str | None, outbound: str | None, mode: str = "ok") -> web.Application:
    calls: collections.Counter = collections.Counter()
    session: dict = {}

    @web.middleware
    async def count(request, handler):
        if request.path == "/stats":
            return await handler(request)
        calls[request.path] += 1
        if mode.startswith("fail:"):
            return web.Response(status=int(mode[5:]), text=f"{name} fails\n")
        if mode == "hang":
            await asyncio.sleep(3600)
        return await handler(request)

    async def hop(request: web.Request) -> web.Response:
        trace = {h: request.headers[h] for h in TRACE_HEADERS if h in request.headers}
        downstream = None
        if next_service:
            async with session["client"].get(
                f"http://{outbound}/hop", headers={"Host": next_service, **trace}
            ) as response:
                downstream = {"status": response.status, "body": await response.json()}
        return web.json_response({"service": name, "trace_headers": trace, "next": downstream})

    async def headers(request: web.Request) -> web.Response:
        return web.json_response(
            {"headers": [[k, v] for k, v in request.headers.items()], "version": "%d.%d" % request.version,
             "path": request.path_qs}
        )

    async def echo(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"x-echo-method": request.method})
        response.enable_chunked_encoding()
        await response.prepare(request)
        async for data in request.content.iter_any():
            await response.write(data)
        await response.write_eof()
        return response

    async def stream(request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "10"))
        size = int(request.query.get("size", "1024"))
        delay = float(request.query.get("delay", "0"))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(n):
            await response.write(bytes([48 + i % 10]) * size)
            if delay:
                await asyncio.sleep(delay)
        await response.write_eof()
        return response

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text=f"{name} says {request.match_info['code']}\n")

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response(text="late\n")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"service": name, "calls": dict(calls)})

    async def on_startup(app):
        session["client"] = aiohttp.ClientSession()

    async def on_cleanup(app):
        await session["client"].close()

    app = web.Application(middlewares=[count])
    app.router.add_route("*", "/hop", hop)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/headers", headers)
    app.router.add_get("/stream", stream)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/hang", hang)
    app.router.add_get("/stats", stats)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="app")
    parser.add_argument("--next", dest="next_service")
    parser.add_argument("--outbound")
    parser.add_argument("--mode", default="ok", help="ok | fail:CODE | hang")
    args = parser.parse_args()
    web.run_app(build_app(args.name, args.next_service, args.outbound, args.mode), host="127.0.0.1", port=args.port,
                print=None, access_log=None, shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
