"""payments (gRPC ``shop.Payments/Charge``): some cards are declined, and the bank gateway is
briefly unavailable now and then (the caller's sidecar retries UNAVAILABLE).

    python payments.py --port 7120 --instance payments-1 --otlp http://127.0.0.1:4318/v1/traces
"""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid

import grpc

from shop_grpc import RpcFailure, serve, traced_service
from telemetry import start_tracing, stop_tracing


async def charge(request: dict) -> dict:
    await asyncio.sleep(random.uniform(0.015, 0.05))
    roll = random.random()
    if roll < 0.04:
        raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, "card declined")
    if roll < 0.06:
        raise RpcFailure(grpc.StatusCode.UNAVAILABLE, "bank gateway unavailable")
    return {"payment_id": uuid.uuid4().hex[:12], "amount": request.get("amount", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", default="payments")
    parser.add_argument("--otlp", required=True, help="OTLP/HTTP traces URL of the collector")
    args = parser.parse_args()
    tracer = start_tracing("payments", args.instance, args.otlp)
    try:
        asyncio.run(serve(args.port, [traced_service(tracer, "shop.Payments", {"Charge": charge})]))
    finally:
        stop_tracing()


if __name__ == "__main__":
    main()
