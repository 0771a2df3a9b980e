"""cart (HTTP): shopping carts kept in SQLite. Each query is a CLIENT span with ``db.system=sqlite``,
which the collector's service graph draws as a database node the cart calls.

    python cart.py --port 7110 --instance cart-1 --db carts.db --otlp http://127.0.0.1:4318/v1/traces
"""

from __future__ import annotations

import argparse
import os
import sqlite3

from aiohttp import web
from opentelemetry.trace import SpanKind

from shop_http import run, tracing_middleware
from telemetry import start_tracing, stop_tracing

SCHEMA = "CREATE TABLE IF NOT EXISTS cart_items (user TEXT, product_id TEXT, quantity INTEGER)"


class CartStore:
    """SQLite queries, each traced as a call to the database."""

    def __init__(self, tracer, path: str):
        self.tracer = tracer
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=5)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(SCHEMA)

    def query(self, operation: str, sql: str, parameters: tuple = ()) -> list:
        attributes = {
            "db.system": "sqlite",
            "db.namespace": os.path.basename(self.path),
            "db.operation.name": operation,
            "db.query.text": sql,
        }
        with self.tracer.start_as_current_span(f"{operation} cart_items", kind=SpanKind.CLIENT, attributes=attributes):
            return self.db.execute(sql, parameters).fetchall()

    def items(self, user: str) -> list[dict]:
        sql = "SELECT product_id, SUM(quantity) FROM cart_items WHERE user = ? GROUP BY product_id"
        rows = self.query("SELECT", sql, (user,))
        return [{"product_id": product, "quantity": quantity} for product, quantity in rows]

    def add(self, user: str, product_id: str, quantity: int) -> None:
        self.query("INSERT", "INSERT INTO cart_items VALUES (?, ?, ?)", (user, product_id, quantity))

    def clear(self, user: str) -> None:
        self.query("DELETE", "DELETE FROM cart_items WHERE user = ?", (user,))


def build_app(tracer, store: CartStore) -> web.Application:
    async def get_cart(request: web.Request) -> web.Response:
        return web.json_response({"user": request.match_info["user"], "items": store.items(request.match_info["user"])})

    async def add_item(request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("product_id"), str):
            raise web.HTTPBadRequest(text='expected {"product_id": "...", "quantity": N}')
        store.add(request.match_info["user"], body["product_id"], int(body.get("quantity", 1)))
        return web.json_response({"added": body["product_id"]}, status=201)

    async def clear_cart(request: web.Request) -> web.Response:
        store.clear(request.match_info["user"])
        return web.Response(status=204)

    app = web.Application(middlewares=[tracing_middleware(tracer)])
    app.router.add_get("/carts/{user}", get_cart)
    app.router.add_post("/carts/{user}/items", add_item)
    app.router.add_delete("/carts/{user}", clear_cart)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", default="cart")
    parser.add_argument("--otlp", required=True, help="OTLP/HTTP traces URL of the collector")
    parser.add_argument("--db", default="carts.db", help="SQLite file")
    args = parser.parse_args()
    tracer = start_tracing("cart", args.instance, args.otlp)
    try:
        run(build_app(tracer, CartStore(tracer, args.db)), args.port)
    finally:
        stop_tracing()


if __name__ == "__main__":
    main()
