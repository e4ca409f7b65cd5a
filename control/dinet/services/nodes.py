"""The intent's nodes opened as data-plane targets: an ingress node's SteeringTarget (xdp, agent or bmv2) and
a BierTarget per BIER node (local TC, agent or bmv2), from the intent's own node specs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..creds import Identity
from ..targets.base import BierTarget, SteeringTarget
from .intent import AgentNodeSpec, BierNodeAgent, BierNodeBmv2, Bmv2NodeSpec, RunConfig, SteerNodeSpec

if TYPE_CHECKING:  # imported where used: each pulls in its data plane's libraries (bcc, gRPC stubs)
    from ..targets.p4node import P4Node
    from ..targets.remote import RemoteNode


def _p4node(node: Bmv2NodeSpec | BierNodeBmv2, name: str) -> P4Node:
    """A connected P4Node: adopted when the switch runs dinet's pipeline already, else programmed."""
    from ..targets.base import SteerSizes
    from ..targets.bmv2 import compile_p4
    from ..targets.p4node import open_p4node
    from ..targets.p4rt import P4RuntimeSwitch

    given = node.sizes.model_dump() if node.sizes else {}
    sizes = SteerSizes(**{k: v for k, v in given.items() if v})  # 0: the default size
    sw = P4RuntimeSwitch(node.address, node.device_id, node.election_id, name)
    sw.connect()
    try:
        pipe = compile_p4(sizes.defines())
        return open_p4node(sw, pipe, sizes, node.set_pipeline)
    except BaseException:
        sw.close()
        raise


def _remote(node: AgentNodeSpec | BierNodeAgent, name: str, identity: Identity | None) -> RemoteNode:
    from ..targets.remote import RemoteNode

    return RemoteNode(node.address, node.token, name=name, identity=identity, server=node.identity or "")


@contextlib.contextmanager
def open_target(node: SteerNodeSpec, identity: Identity | None = None) -> Iterator[SteeringTarget]:
    """The SteeringTarget of an ingress node of the intent (xdp, agent or bmv2), closed on leaving."""
    if node.target == "agent":
        remote = _remote(node, node.name or "", identity)
        try:
            yield remote
        finally:
            remote.close()
    elif node.target == "xdp":
        from ..targets.xdp import SteeringNode

        n = SteeringNode(node.name)
        try:
            n.configure(src4=node.src4, src6=node.src6)
            for a in node.attach:
                n.attach(a.dev, a.netns, a.mode)
            yield n
        finally:
            n.close()  # maps stay pinned and programs attached: forwarding goes on without the controller
    else:
        p4 = _p4node(node, node.name or node.address)
        try:
            hop = node.next_hop
            p4.configure(
                src4=node.src4,
                src6=node.src6,
                static_next_hop=(hop.port, hop.smac, hop.dmac) if hop else None,
                pass_ports=dict(node.pass_ports),
            )
            yield p4
        finally:
            p4.sw.close()


@contextlib.contextmanager
def bier_targets(cfg: RunConfig, identity: Identity | None = None) -> Iterator[dict[str, BierTarget]]:
    """A BierTarget per BIER node: a local TC node (attached where the file says), a node agent, or a
    P4Runtime switch; closed on leaving."""
    from ..targets.tc import BierNode, TcBierTarget

    targets: dict[str, BierTarget] = {}
    opened: list[Any] = []
    try:
        for name, n in cfg.nodes.items():
            if n.target == "agent":
                r = _remote(n, name, identity)
                opened.append(r)
                targets[name] = r
            elif n.target == "bmv2":
                p4 = _p4node(n, name)
                opened.append(p4)
                p4.port_names = dict(n.ports)
                p4.port_netns = n.netns
                p4.monitor_ports()  # fast reroute: where its interfaces are known, the switch's link monitor
                targets[name] = p4
            else:
                b = BierNode(n.name or name)
                opened.append(b)
                for a in n.attach:
                    b.attach(a.dev, a.netns)
                targets[name] = TcBierTarget(b, n.netns)
        yield targets
    finally:
        for o in opened:
            o.close()
