"""checkout (gRPC ``shop.Checkout/PlaceOrder``): reads the cart (HTTP), gets a shipping quote
(HTTP), charges the payment (gRPC), books the shipment (HTTP) and empties the cart — every call
through this instance's sidecar. Failures downstream end the call with ABORTED, never
UNAVAILABLE: sidecars retry UNAVAILABLE, and an order must not be placed twice.

    python checkout.py --port 7130 --instance checkout-1 --outbound 127.0.0.1:7133 \
        --otlp http://127.0.0.1:4318/v1/traces
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from shop_grpc import GrpcOutbound, RpcFailure, serve, traced_service
from shop_http import HttpOutbound
from telemetry import start_tracing, stop_tracing


class Checkout:
    def __init__(self, http: HttpOutbound, grpc_calls: GrpcOutbound):
        self.http = http
        self.grpc = grpc_calls

    async def place_order(self, request: dict) -> dict:
        user = str(request.get("user", ""))
        status, cart = await self.http.call("GET", "cart", f"/carts/{user}")
        if status != 200:
            raise RpcFailure(grpc.StatusCode.ABORTED, f"cart answered {status}")
        if not cart["items"]:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, "the cart is empty")
        count = sum(item["quantity"] for item in cart["items"])
        status, quote = await self.http.call("GET", "shipping", f"/quote?items={count}")
        if status != 200:
            raise RpcFailure(grpc.StatusCode.ABORTED, f"shipping quote answered {status}")
        amount = round(10.0 * count + quote["price"], 2)
        try:
            payment = await self.grpc.call("payments", "shop.Payments", "Charge", {"user": user, "amount": amount})
        except grpc.aio.AioRpcError as error:
            declined = error.code() == grpc.StatusCode.FAILED_PRECONDITION
            code = grpc.StatusCode.FAILED_PRECONDITION if declined else grpc.StatusCode.ABORTED
            raise RpcFailure(code, f"payment: {error.details()}") from None
        status, shipment = await self.http.call("POST", "shipping", "/shipments", json={"user": user, "items": count})
        if status != 201:
            raise RpcFailure(grpc.StatusCode.ABORTED, f"shipping answered {status}")
        await self.http.call("DELETE", "cart", f"/carts/{user}")
        return {"payment_id": payment["payment_id"], "tracking": shipment["tracking"], "amount": amount}

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()
        await self.grpc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", default="checkout")
    parser.add_argument("--outbound", required=True, help="this instance's sidecar outbound address")
    parser.add_argument("--otlp", required=True, help="OTLP/HTTP traces URL of the collector")
    args = parser.parse_args()
    tracer = start_tracing("checkout", args.instance, args.otlp)
    checkout = Checkout(HttpOutbound(tracer, args.outbound), GrpcOutbound(tracer, args.outbound))
    try:
        handlers = [traced_service(tracer, "shop.Checkout", {"PlaceOrder": checkout.place_order})]
        asyncio.run(serve(args.port, handlers, on_start=checkout.start, on_stop=checkout.close))
    finally:
        stop_tracing()


if __name__ == "__main__":
    main()
