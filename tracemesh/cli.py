"""The `tracemesh` command: one entry point, one subcommand per job.

Each package registers its own subcommands (``register(subparsers)``) so this file stays a
table of contents and never grows the logic of any one of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute subcommands, in the order `tracemesh --help` lists them.
SUBCOMMAND_MODULES = (
    "collector.cli",
    "collector.query_cli",
    "mesh.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracemesh",
        description="Tracemesh: sidecar proxies that trace every hop, and the collector that stores and graphs them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
