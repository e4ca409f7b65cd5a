"""What the `dinet` command groups share: how a node command is declared, and how a table is printed."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any


def leaf(parent: Any, name: str, fn: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
    """A command on one of this host's nodes (its bpffs folder: --node)."""
    p = parent.add_parser(name, help=help)
    p.add_argument("--node", default="default", help="the node's bpffs folder name (default: default)")
    p.set_defaults(fn=fn)
    return p


def iface(p: argparse.ArgumentParser) -> None:
    """The interface a program attaches to."""
    p.add_argument("--dev", required=True, help="interface")
    p.add_argument("--netns", help="network namespace of the interface")
    p.add_argument("--mode", default="native", choices=["native", "generic", "auto"])


def table(rows: Sequence[Sequence[Any]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*map(str, r)) for r in rows]
    )


def positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {v}")
    return v
