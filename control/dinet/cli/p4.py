"""`dinet` commands of the P4 program for BMv2: compile it, read a table back from a switch."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import table


def cmd_p4_compile(a: argparse.Namespace) -> None:
    from ..targets.base import SteerSizes
    from ..targets.bmv2 import compile_p4

    sizes = SteerSizes(a.max_services, a.max_instances, a.ring_size)
    pipe = compile_p4(sizes.defines())
    print(f"{pipe.json}\n{pipe.p4info}")


def cmd_p4_read(a: argparse.Namespace) -> None:
    from ..targets.base import SteerSizes
    from ..targets.bmv2 import compile_p4
    from ..targets.p4rt import P4RuntimeSwitch

    pipe = compile_p4(SteerSizes(a.max_services, a.max_instances, a.ring_size).defines())
    with P4RuntimeSwitch(a.address, a.device_id, name=a.address, arbitrate=False) as sw:
        sw.use_pipeline(pipe.p4info)
        entries = sw.read_table(a.table)
    if a.json:
        print(
            json.dumps(
                [
                    {"table": e.table, "match": dict(e.match), "action": e.action, "params": dict(e.params)}
                    for e in entries
                ],
                indent=2,
            )
        )
    else:
        print(table([[dict(e.match), e.action, dict(e.params)] for e in entries], ["match", "action", "params"]))


def register(sub: Any) -> None:
    """Adds this group's commands to `dinet`'s subcommands."""
    p4 = sub.add_parser("p4", help="the P4 program for BMv2").add_subparsers(dest="sub", required=True)
    for name, fn, text in (
        ("compile", cmd_p4_compile, "compile p4/dinet.p4 (p4c-bm2-ss on PATH)"),
        ("read", cmd_p4_read, "read a table back from a switch"),
    ):
        p = p4.add_parser(name, help=text)
        p.set_defaults(fn=fn)
        p.add_argument("--max-services", type=int, default=4096)
        p.add_argument("--max-instances", type=int, default=256)
        p.add_argument("--ring-size", type=int, default=4099)
        if name == "read":
            p.add_argument("--address", required=True, help="P4Runtime address (host:port or unix:/path)")
            p.add_argument("--device-id", type=int, default=0)
            p.add_argument("--table", required=True)
            p.add_argument("--json", action="store_true")
