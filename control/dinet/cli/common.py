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


def dscp(text: str) -> int:
    """A DSCP, 0-63, or a traffic class's name (dinet_consts.h DINET_DSCP_*: delay-sensitive, delay-tolerant,
    kv, sync)."""
    from ..errors import ConfigError
    from ..netutil import dscp_of

    if not text.isdigit():
        try:
            return dscp_of(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if not 0 <= int(text) <= 63:
        raise argparse.ArgumentTypeError(f"a DSCP is 0-63, not {text}")
    return int(text)


def positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {v}")
    return v
