"""Command-line values that mesh and collector subcommands parse the same way. They live here, in the
one layer both import, so ``tracemesh tap --max`` and ``tracemesh top --rows`` cannot drift apart.

Durations, sizes and addresses are not here on purpose: each subcommand accepts a different syntax
for them today (compound ``1h30m`` vs plain ``250ms``; fractional ``1.5g`` vs whole sizes; port 0 or
not), and unifying them would change what the commands accept."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)
