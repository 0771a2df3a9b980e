"""catalog (HTTP): the products. One instance of the demo turns slow now and then (--slow-every).

    python catalog.py --port 7100 --instance catalog-1 --otlp http://127.0.0.1:4318/v1/traces
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from aiohttp import web

from shop_http import run, tracing_middleware
from telemetry import start_tracing, stop_tracing

PRODUCTS = {
    product["id"]: product
    for product in [
        {"id": "tea-01", "name": "Sencha tea", "price": 8.5},
        {"id": "tea-02", "name": "Assam tea", "price": 6.0},
        {"id": "mug-01", "name": "Stoneware mug", "price": 14.0},
        {"id": "pot-01", "name": "Cast iron teapot", "price": 49.0},
        {"id": "kettle-01", "name": "Gooseneck kettle", "price": 65.0},
        {"id": "filter-01", "name": "Paper filters", "price": 3.5},
        {"id": "scale-01", "name": "Coffee scale", "price": 29.0},
        {"id": "bean-01", "name": "Ethiopian beans", "price": 12.5},
    ]
}


def build_app(tracer, slow_every_s: float, slow_for_s: float, error_rate: float) -> web.Application:
    started = time.monotonic()

    def slow_now() -> bool:
        """Slow for the last ``slow_for_s`` seconds of every ``slow_every_s``."""
        return slow_every_s > 0 and (time.monotonic() - started) % slow_every_s >= slow_every_s - slow_for_s

    async def work() -> None:
        await asyncio.sleep(random.uniform(0.002, 0.012) + (random.uniform(0.2, 0.6) if slow_now() else 0.0))
        if random.random() < error_rate:
            raise web.HTTPInternalServerError(text="catalog index unavailable")

    async def list_products(request: web.Request) -> web.Response:
        await work()
        return web.json_response({"products": list(PRODUCTS.values())})

    async def get_product(request: web.Request) -> web.Response:
        await work()
        product = PRODUCTS.get(request.match_info["id"])
        if product is None:
            raise web.HTTPNotFound(text=f"no product {request.match_info['id']}")
        return web.json_response(product)

    app = web.Application(middlewares=[tracing_middleware(tracer)])
    app.router.add_get("/products", list_products)
    app.router.add_get("/products/{id}", get_product)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", default="catalog")
    parser.add_argument("--otlp", required=True, help="OTLP/HTTP traces URL of the collector")
    parser.add_argument("--slow-every", type=float, default=0.0, help="seconds between slow phases (0 = never)")
    parser.add_argument("--slow-for", type=float, default=10.0, help="length of a slow phase in seconds")
    parser.add_argument("--error-rate", type=float, default=0.01, help="share of requests answered with 500")
    args = parser.parse_args()
    tracer = start_tracing("catalog", args.instance, args.otlp)
    try:
        run(build_app(tracer, args.slow_every, args.slow_for, args.error_rate), args.port)
    finally:
        stop_tracing()


if __name__ == "__main__":
    main()
