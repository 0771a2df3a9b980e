"""Several instances of one service in one process, each on its own port, with injectable latency.

    python -m tests.apps.delayed --ports 8081,8082,8083 --control 8090

Every instance answers any GET with its index (``0``, ``1``, ...) after its current delay. The
control port sets a delay: ``PUT /delay/{index}/{milliseconds}``; ``GET /delay`` lists them. One
process for all instances keeps the routing experiment light on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


def instance_app(index: int, delays: list[float]) -> web.Application:
    body = str(index).encode()

    async def answer(request: web.Request) -> web.Response:
        delay = delays[index]
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    return app


def control_app(delays: list[float]) -> web.Application:
    async def set_delay(request: web.Request) -> web.Response:
        index, ms = int(request.match_info["index"]), float(request.match_info["ms"])
        if not 0 <= index < len(delays) or ms < 0:
            raise web.HTTPBadRequest(text="no such instance or negative delay\n")
        delays[index] = ms / 1000
        return web.json_response({"delays_ms": [d * 1000 for d in delays]})

    async def get_delays(request: web.Request) -> web.Response:
        return web.json_response({"delays_ms": [d * 1000 for d in delays]})

    app = web.Application()
    app.router.add_put(r"/delay/{index:\d+}/{ms:[0-9.]+}", set_delay)
    app.router.add_get("/delay", get_delays)
    return app


async def serve(ports: list[int], control_port: int) -> None:
    delays = [0.0] * len(ports)
    runners = []
    for index, port in enumerate(ports):
        runner = web.AppRunner(instance_app(index, delays), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    runner = web.AppRunner(control_app(delays), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control_port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", required=True, help="comma-separated instance ports")
    parser.add_argument("--control", type=int, required=True, help="port of the delay control API")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve([int(p) for p in args.ports.split(",")], args.control))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
