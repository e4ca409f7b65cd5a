"""`dinet`: the command line over the data planes. Every error is one readable line and exit status 1."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import DinetError
from .model import Instance, InstanceState, ServiceKey


def _steer(a: argparse.Namespace) -> Any:
    from .targets.xdp import SteeringNode

    return SteeringNode(a.node)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*map(str, r)) for r in rows]
    )


# ---- xdp -------------------------------------------------------------------------------------------------
def cmd_xdp_attach(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        if a.src4 or a.src6:
            n.configure(src4=a.src4, src6=a.src6)
        n.attach(a.dev, a.netns, a.mode)
        print(f"xdp_steer attached to {a.dev}{' in ' + a.netns if a.netns else ''} (node {a.node})")


def cmd_xdp_detach(a: argparse.Namespace) -> None:
    from .targets.bcc_program import BccProgram

    BccProgram.detach(a.dev, a.netns, a.mode)
    print(f"XDP detached from {a.dev}")


def cmd_xdp_destroy(a: argparse.Namespace) -> None:
    _steer(a).destroy()
    print(f"node {a.node}: pinned steering maps removed")


def cmd_decap_attach(a: argparse.Namespace) -> None:
    from .targets.xdp import DecapNode

    with DecapNode(a.node) as d:
        for ep in a.endpoint:
            d.add_endpoint(ep)
        d.attach(a.dev, a.netns, a.mode)
        print(f"xdp_decap attached to {a.dev}; endpoints {', '.join(map(str, d.endpoints()))}")


# ---- services and instances -------------------------------------------------------------------------------
def cmd_service_add(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        print(f"{a.service}: slot {n.add_service(ServiceKey.parse(a.service))}")


def cmd_service_del(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        n.remove_service(ServiceKey.parse(a.service))
        print(f"{a.service}: removed")


def cmd_service_list(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        svcs = n.services()
        if a.json:
            print(
                json.dumps(
                    [
                        {
                            "service": str(s.key),
                            "slot": s.svc_id,
                            "instances": [
                                {
                                    "instance_id": i.instance_id,
                                    "endpoint": str(i.endpoint),
                                    "weight": i.weight,
                                    "state": i.state.name.lower(),
                                    "site_id": i.site_id,
                                }
                                for i in s.instances.values()
                            ],
                        }
                        for s in svcs
                    ],
                    indent=2,
                )
            )
            return
        rows = [
            [str(s.key), s.svc_id, i.instance_id, i.endpoint, i.weight, i.state.name.lower(), i.site_id]
            for s in svcs
            for i in sorted(s.instances.values(), key=lambda x: x.instance_id)
        ]
        rows += [[str(s.key), s.svc_id, "-", "-", "-", "-", "-"] for s in svcs if not s.instances]
        print(_table(rows, ["service", "slot", "instance", "endpoint", "weight", "state", "site"]))


def cmd_instance_set(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        n.upsert_instance(ServiceKey.parse(a.service), Instance(a.id, a.endpoint, a.weight, site_id=a.site))
        print(f"{a.service}: instance {a.id} -> {a.endpoint} weight {a.weight}")


def cmd_instance_weight(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        n.set_weight(ServiceKey.parse(a.service), a.id, a.weight)
        print(f"{a.service}: instance {a.id} weight {a.weight}")


def cmd_instance_state(a: argparse.Namespace, state: str | None = None) -> None:
    st = InstanceState[(state or a.state).upper()]
    with _steer(a) as n:
        n.set_state(ServiceKey.parse(a.service), a.id, st)
        print(f"{a.service}: instance {a.id} {st.name.lower()}")


def cmd_instance_del(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        n.remove_instance(ServiceKey.parse(a.service), a.id)
        print(f"{a.service}: instance {a.id} removed")


# ---- reading back ----------------------------------------------------------------------------------------
def cmd_stats(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        st = n.stats()
    if a.json:
        print(json.dumps(st, indent=2))
        return
    rows = []
    for s in st["services"]:
        rows.append([s["service"], "*", "", "", s["packets"], s["bytes"], s["new_flows"]])
        for i in s["instances"]:
            rows.append(
                [
                    "",
                    i["instance_id"],
                    i["endpoint"],
                    f"{i['state']}/{i['weight']}",
                    i["packets"],
                    i["bytes"],
                    i["new_flows"],
                ]
            )
    print(_table(rows, ["service", "instance", "endpoint", "state/weight", "packets", "bytes", "new flows"]))
    print()
    print(_table([[k, v] for k, v in st["verdicts"].items()], ["verdict", "packets"]))


def cmd_affinity(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        flows = list(n.affinity(a.limit))
    if a.json:
        print(json.dumps([{**f.__dict__, "src": str(f.src), "dst": str(f.dst)} for f in flows], indent=2))
        return
    print(
        _table(
            [[f"{f.src}:{f.sport}", f"{f.dst}:{f.dport}", f.proto, f.svc_id, f.instance_id] for f in flows],
            ["client", "service", "proto", "slot", "instance"],
        )
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dinet", description="Computing-aware steering and BIER on XDP and BMv2")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def leaf(parent: Any, name: str, fn: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help)
        p.add_argument("--node", default="default", help="the node's bpffs folder name (default: default)")
        p.set_defaults(fn=fn)
        return p

    def iface(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dev", required=True, help="interface")
        p.add_argument("--netns", help="network namespace of the interface")
        p.add_argument("--mode", default="native", choices=["native", "generic", "auto"])

    xdp = sub.add_parser("xdp", help="attach, detach or remove the steering program").add_subparsers(
        dest="sub", required=True
    )
    p = leaf(xdp, "attach", cmd_xdp_attach, "load xdp_steer (maps pinned) and attach it")
    iface(p)
    p.add_argument("--src4", help="IPv4 tunnel source of this node")
    p.add_argument("--src6", help="IPv6 tunnel source of this node")
    iface(leaf(xdp, "detach", cmd_xdp_detach, "detach whatever XDP program the interface has"))
    leaf(xdp, "destroy", cmd_xdp_destroy, "unpin the node's steering maps")

    dec = sub.add_parser("decap", help="the tunnel endpoint's program").add_subparsers(dest="sub", required=True)
    p = leaf(dec, "attach", cmd_decap_attach, "load xdp_decap and attach it")
    iface(p)
    p.add_argument("--endpoint", action="append", required=True, help="a local tunnel endpoint (repeatable)")

    svc = sub.add_parser("service", help="services (VIP:PORT/PROTO)").add_subparsers(dest="sub", required=True)
    leaf(svc, "add", cmd_service_add, "install a service").add_argument("service")
    leaf(svc, "del", cmd_service_del, "remove a service").add_argument("service")
    leaf(svc, "list", cmd_service_list, "services and instances").add_argument("--json", action="store_true")

    inst = sub.add_parser("instance", help="instances of a service").add_subparsers(dest="sub", required=True)
    p = leaf(inst, "set", cmd_instance_set, "add or replace an instance")
    p.add_argument("service")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--weight", type=int, default=1)
    p.add_argument("--site", type=int, default=0)
    p = leaf(inst, "weight", cmd_instance_weight, "change an instance's weight")
    p.add_argument("service")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--weight", type=int, required=True)
    p = leaf(inst, "drain", lambda a: cmd_instance_state(a, "draining"), "no new flows; established flows stay")
    p.add_argument("service")
    p.add_argument("--id", type=int, required=True)
    p = leaf(inst, "state", cmd_instance_state, "set up, draining or down")
    p.add_argument("service")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("state", choices=["up", "draining", "down"])
    p = leaf(inst, "del", cmd_instance_del, "remove an instance")
    p.add_argument("service")
    p.add_argument("--id", type=int, required=True)

    leaf(sub, "stats", cmd_stats, "counters per service, instance and verdict").add_argument(
        "--json", action="store_true"
    )
    p = leaf(sub, "affinity", cmd_affinity, "flows in the affinity table")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        a.fn(a)
    except DinetError as e:
        print(f"dinet: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
