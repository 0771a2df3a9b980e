"""Serve the web UI from the collector's HTTP API port, so the pages and the API share one origin
(the UI's fetches need no CORS and no configured API address).

``/`` answers the single page; its modules, styles and icons are under ``/ui/``. Route names start
with ``ui.`` so API-only tooling (the OpenAPI route check) can tell them from the API's routes.
"""

from __future__ import annotations

from aiohttp import web

from ui import STATIC_DIR

INDEX = STATIC_DIR / "index.html"
ROUTE_PREFIX = "ui."


def setup_ui(app: web.Application) -> None:
    """Add ``GET /`` (the page) and ``GET /ui/...`` (its static files) to ``app``."""
    app.router.add_get("/", index, name=ROUTE_PREFIX + "index")
    app.router.add_static("/ui/", STATIC_DIR, name=ROUTE_PREFIX + "static")


# Defence in depth behind the UI's rule of rendering data only as text: no inline or foreign script.
CONTENT_POLICY = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(INDEX, headers={"Cache-Control": "no-cache", "Content-Security-Policy": CONTENT_POLICY})
