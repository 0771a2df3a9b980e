"""The `tracemesh` command: one entry point, one subcommand per job.

Each package registers its own subcommands (``register(subparsers)``) so this file stays a
table of contents. Only the module of the subcommand being run is imported: a sidecar proxy
must not carry the collector's ClickHouse and aiohttp code in its memory.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand -> the module that registers it, in the order `tracemesh --help` lists them.
SUBCOMMANDS = {
    "collector": "collector.cli",
    "traces": "collector.query_cli",
    "trace": "collector.query_cli",
    "stat": "collector.graph_cli",
    "edges": "collector.graph_cli",
    "top": "collector.graph_cli",
    "proxy": "mesh.cli",
    "tap": "mesh.tap_cli",
    "demo": "tracemesh.demo",
    "inject": "tracemesh.inject",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for one subcommand when it is known, else for all of them (for --help)."""
    parser = argparse.ArgumentParser(
        prog="tracemesh",
        description="Tracemesh: sidecar proxies that trace every hop, and the collector that stores and graphs them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [SUBCOMMANDS[command]] if command in SUBCOMMANDS else SUBCOMMANDS.values()
    for module_name in dict.fromkeys(modules):
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
