"""frontend (HTTP): the shop's web API. Calls catalog and cart (HTTP) and checkout (gRPC), all
through this instance's sidecar.

    python frontend.py --port 7150 --instance frontend-1 --outbound 127.0.0.1:7153 \
        --otlp http://127.0.0.1:4318/v1/traces

Routes: GET /?user=U (products and the user's cart), GET /products/{id}, POST /cart
{"user", "product_id"}, GET /cart?user=U, POST /checkout {"user"}.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from aiohttp import web

from shop_grpc import GrpcOutbound
from shop_http import HttpOutbound, run, tracing_middleware
from telemetry import start_tracing, stop_tracing

# How checkout's gRPC status reaches the shop's HTTP clients.
CHECKOUT_STATUS = {grpc.StatusCode.FAILED_PRECONDITION: 402, grpc.StatusCode.DEADLINE_EXCEEDED: 504}


def passed_on(status: int, body) -> web.Response:
    """A downstream answer relayed as this service's (errors stay errors)."""
    if isinstance(body, str):
        return web.Response(status=status, text=body)
    return web.json_response(body, status=status)


def build_app(tracer, http: HttpOutbound, rpc: GrpcOutbound) -> web.Application:
    async def home(request: web.Request) -> web.Response:
        user = request.query.get("user", "guest")
        (products_status, products), (cart_status, cart) = await asyncio.gather(
            http.call("GET", "catalog", "/products"), http.call("GET", "cart", f"/carts/{user}")
        )
        if products_status != 200:
            return passed_on(502, {"error": f"catalog answered {products_status}"})
        if cart_status != 200:
            return passed_on(502, {"error": f"cart answered {cart_status}"})
        return web.json_response({"products": products["products"], "cart": cart["items"]})

    async def product(request: web.Request) -> web.Response:
        return passed_on(*await http.call("GET", "catalog", f"/products/{request.match_info['id']}"))

    async def add_to_cart(request: web.Request) -> web.Response:
        body = await request.json()
        user, product_id = body.get("user", "guest"), body.get("product_id", "")
        status, found = await http.call("GET", "catalog", f"/products/{product_id}")
        if status != 200:
            return passed_on(status, found)
        return passed_on(*await http.call("POST", "cart", f"/carts/{user}/items", json={"product_id": product_id}))

    async def view_cart(request: web.Request) -> web.Response:
        return passed_on(*await http.call("GET", "cart", f"/carts/{request.query.get('user', 'guest')}"))

    async def checkout(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            order = await rpc.call("checkout", "shop.Checkout", "PlaceOrder", {"user": body.get("user", "guest")})
        except grpc.aio.AioRpcError as error:
            return web.json_response({"error": error.details()}, status=CHECKOUT_STATUS.get(error.code(), 502))
        return web.json_response(order, status=201)

    async def close(app) -> None:
        await http.close()
        await rpc.close()

    app = web.Application(middlewares=[tracing_middleware(tracer)])
    app.router.add_get("/", home)
    app.router.add_get("/products/{id}", product)
    app.router.add_post("/cart", add_to_cart)
    app.router.add_get("/cart", view_cart)
    app.router.add_post("/checkout", checkout)
    app.on_startup.append(http.start)
    app.on_cleanup.append(close)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", default="frontend")
    parser.add_argument("--outbound", required=True, help="this instance's sidecar outbound address")
    parser.add_argument("--otlp", required=True, help="OTLP/HTTP traces URL of the collector")
    args = parser.parse_args()
    tracer = start_tracing("frontend", args.instance, args.otlp)
    try:
        run(build_app(tracer, HttpOutbound(tracer, args.outbound), GrpcOutbound(tracer, args.outbound)), args.port)
    finally:
        stop_tracing()


if __name__ == "__main__":
    main()
