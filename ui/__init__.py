"""The service-graph web UI, served by the collector; it talks only to the collector HTTP API.

The UI is static ES modules and hand-written SVG under ``ui/static`` (no build step, nothing fetched
from elsewhere), so the collector can serve it from the installed package and it works offline.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
