"""The BIER node of the shared vectors on the eBPF data plane: the TC program (and its XDP fast path) on ports
p0..p3 of a namespace, their peers in a tap namespace for injecting and capturing frames, the vectors' BIFTs
and BFIR entries installed, UDP sockets where local deliveries land. Used by the vector test and the fuzzer."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from dinet.lab.namespaces import Topology
from dinet.targets import netns
from tests.vectors import bier as bv


@contextlib.contextmanager
def tc_bier_rig(prefix: str, bpffs_root: Path, min_fanout: int) -> Iterator[tuple]:
    """Yields (node, taps by port, local-delivery sockets); removes everything on exit."""
    from dinet.targets.tc import BfirMatch, BierNode, BiftNeighbor

    t = Topology(prefix)
    node = None
    taps: dict[int, socket.socket] = {}
    rx: list[socket.socket] = []
    try:
        t.add_ns("n")
        t.add_ns("tap")
        for ns in ("n", "tap"):
            t.sh(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        for p in range(4):
            t.link("n", f"p{p}", "tap", f"t{p}")
            t.sh("tap", "ethtool", "-K", f"t{p}", "gro", "on")  # takes the node's XDP-forwarded frames
        t.sh("n", "ip", "link", "set", "dev", "p0", "address", bv.NODE_MAC)
        t.addr("n", "lo", f"{bv.SYNC[0]}/32")
        node = BierNode(prefix, bpffs_root=bpffs_root)
        node.set_xdp_min_fanout(min_fanout)  # transit frames with this many copies take the XDP fast path
        ns = t.ns("n")
        for p in range(4):
            node.attach(f"p{p}", ns)
        nbrs = [
            BiftNeighbor(netns.ifindex(f"p{port}", ns), smac, dmac, bv.mask(ids))
            for port, (smac, dmac, ids) in sorted(bv.NBR.items())
        ]
        node.set_bift(bv.BID, bv.mask((bv.OWN,)), nbrs)
        down_slot = sorted(bv.NBR).index(bv.FRR_DOWN)  # fast reroute: BID's entry while that port is down
        backup = [BiftNeighbor(netns.ifindex(f"p{p}", ns), *bv.NBR[p][:2], bv.mask(ids)) for p, ids in bv.frr_backup()]
        node.set_bift(bv.BID, bv.mask((bv.OWN,)), backup, ns, down_slot)
        smac, dmac, _ = bv.NBR[2]
        node.set_bift(bv.BID1, 0, [BiftNeighbor(netns.ifindex("p2", ns), smac, dmac, bv.mask((1,)))])
        for dst, port, sets in bv.bfir_entries():
            node.set_bfir(BfirMatch(dst, udp_port=port), bv.BFIR_ID, bv.BSL, sets)
        install_trees_tc(node, ns)
        with netns.entered(ns):
            for port in (bv.SYNC[1], bv.OWN_PORT):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((bv.SYNC[0], port))
                s.setblocking(False)
                rx.append(s)
        taps = {p: netns.l2_socket(f"t{p}", t.ns("tap")) for p in range(4)}
        yield node, taps, rx
    finally:
        for s in [*taps.values(), *rx]:
            s.close()
        t.close()
        if node:
            node.destroy()


def install_trees_tc(node, ns: str) -> None:  # type: ignore[no-untyped-def]
    """The vectors' replication segments, node SIDs and tree root on the TC node (ports p0..p3 in ns)."""
    from dinet.targets.tc import BfirMatch, TreeHop, TreeReplica

    def port(p: int) -> tuple[int, str, str]:
        smac, dmac, _ = bv.NBR[p]
        return netns.ifindex(f"p{p}", ns), smac, dmac

    for sid, replicas, leaf in bv.tree_segments():
        node.set_tree_segment(sid, [TreeReplica(n, r, *port(p)) for n, r, p in replicas], leaf)
    for sid, p in bv.tree_nodes().items():
        node.set_tree_node(sid, TreeHop(local=True) if p is None else TreeHop(*port(p)))
    for dst, udp, sid in bv.tree_roots():
        node.set_tree_root(BfirMatch(dst, udp_port=udp), sid)


def program_bmv2(node) -> None:  # type: ignore[no-untyped-def]
    """The same BIFTs and BFIR entries on a BMv2 switch (a P4Node; port 1 its host port)."""
    from dinet.targets.p4node import P4Neighbor

    nbrs = [P4Neighbor(port, smac, dmac, bv.mask(ids)) for port, (smac, dmac, ids) in sorted(bv.NBR.items())]
    backup = [P4Neighbor(p, *bv.NBR[p][:2], bv.mask(ids)) for p, ids in bv.frr_backup()]
    node.write_bift(bv.BID, bv.mask((bv.OWN,)), nbrs, local_port=1, backups={bv.FRR_DOWN: backup})
    smac, dmac, _ = bv.NBR[2]
    node.write_bift(bv.BID1, 0, [P4Neighbor(2, smac, dmac, bv.mask((1,)))], local_port=1)
    for dst, port, sets in bv.bfir_entries():
        node.write_bfir(dst, bv.BFIR_ID, bv.BSL, sets, udp_port=port)

    def hop(p: int) -> P4Neighbor:
        smac, dmac, _ = bv.NBR[p]
        return P4Neighbor(p, smac, dmac, 0)

    for sid, replicas, leaf in bv.tree_segments():
        node.write_tree_segment(sid, [(n, r, hop(p)) for n, r, p in replicas], leaf, local_port=1)
    for sid, p in bv.tree_nodes().items():
        node.write_tree_node(sid, None if p is None else hop(p))
    for dst, udp, sid in bv.tree_roots():
        node.write_tree_root(dst, sid, udp_port=udp)
