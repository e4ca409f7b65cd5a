"""`dinet` commands of steering on this host: the XDP steering and decapsulation programs, services,
instances, counters and flows."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..model import Instance, InstanceState, ServiceKey
from ..targets.base import ServiceState
from .common import iface, leaf, table


def _steer(a: argparse.Namespace) -> Any:
    from ..targets.xdp import SteeringNode

    return SteeringNode(a.node)


def cmd_xdp_attach(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        if a.src4 or a.src6:
            n.configure(src4=a.src4, src6=a.src6)
        n.attach(a.dev, a.netns, a.mode)
        print(f"xdp_steer attached to {a.dev}{' in ' + a.netns if a.netns else ''} (node {a.node})")


def cmd_xdp_detach(a: argparse.Namespace) -> None:
    from ..targets.bcc_program import BccProgram

    BccProgram.detach(a.dev, a.netns, a.mode)
    print(f"XDP detached from {a.dev}")


def cmd_xdp_destroy(a: argparse.Namespace) -> None:
    _steer(a).destroy()
    print(f"node {a.node}: pinned steering maps removed")


def cmd_decap_attach(a: argparse.Namespace) -> None:
    from ..targets.xdp import DecapNode

    with DecapNode(a.node) as d:
        for ep in a.endpoint:
            d.add_endpoint(ep)
        d.attach(a.dev, a.netns, a.mode)
        print(f"xdp_decap attached to {a.dev}; endpoints {', '.join(map(str, d.endpoints()))}")


def cmd_service_add(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        slot = n.add_service(ServiceKey.parse(a.service), session=a.session, two_choices=a.two_choices)
        how = " (session-affine)" if a.session else " (two choices)" if a.two_choices else ""
        print(f"{a.service}: slot {slot}{how}")


def _placement(s: ServiceState) -> str:
    return "session" if s.session else "two-choices" if s.two_choices else "flow"


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
                            "placement": _placement(s),
                            "instances": [i.as_dict() for i in s.instances.values()],
                        }
                        for s in svcs
                    ],
                    indent=2,
                )
            )
            return
        rows = [
            [str(s.key) + ("" if _placement(s) == "flow" else f" ({_placement(s)})"), s.svc_id, i.instance_id,
             i.endpoint, i.weight, i.state.name.lower(), i.site_id]
            for s in svcs
            for i in sorted(s.instances.values(), key=lambda x: x.instance_id)
        ]  # fmt: skip
        rows += [[str(s.key), s.svc_id, "-", "-", "-", "-", "-"] for s in svcs if not s.instances]
        print(table(rows, ["service", "slot", "instance", "endpoint", "weight", "state", "site"]))


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
    print(table(rows, ["service", "instance", "endpoint", "state/weight", "packets", "bytes", "new flows"]))
    print()
    print(table([[k, v] for k, v in st["verdicts"].items()], ["verdict", "packets"]))


def cmd_affinity(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        flows = list(n.affinity(a.limit))
    if a.json:
        print(json.dumps([{**f.__dict__, "src": str(f.src), "dst": str(f.dst)} for f in flows], indent=2))
        return
    print(
        table(
            [[f"{f.src}:{f.sport}", f"{f.dst}:{f.dport}", f.proto, f.svc_id, f.instance_id] for f in flows],
            ["client", "service", "proto", "slot", "instance"],
        )
    )


def register(sub: Any) -> None:
    """Adds this group's commands to `dinet`'s subcommands."""
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
    p = leaf(svc, "add", cmd_service_add, "install a service (again: change its placement)")
    p.add_argument("service")
    p.add_argument(
        "--session",
        action="store_true",
        help="session-affine: place new flows by their session key (the IPv6 flow label, or a source port of "
        "61440-65535 by its group of 8), so a conversation's connections reach one instance",
    )
    p.add_argument(
        "--two-choices",
        action="store_true",
        help="two choices: a new flow takes two candidates from the ring and goes to the lower loaded (the "
        "controller's load plus the new flows placed there since; without a controller, those flows alone)",
    )
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
