"""BIER vectors: one BFR (BFR-id 3; neighbour on port 2 serving BFR-ids 1 and 4, on port 3 serving 2 and 5)
that is also a BFIR for the model-sync destination. Run on the TC program and on BMv2 alike.

Outcomes: Forward for each copy (port, expected frame), Local for the decapsulated packet the node
delivers to itself (the eBPF node's stack; BMv2's host port 1), Drop with the counter that must move."""

from __future__ import annotations

from dataclasses import dataclass

from scapy.layers.inet import IP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Ether

from dinet.packets import BIER, BIFTId, bift_id, bitstring

from . import Drop, Forward

BSL = 1  # 64 bits
BID = bift_id(BSL, 0)
NODE_MAC = "02:b1:00:00:00:03"
NBR = {2: ("02:b1:00:00:02:00", "02:b1:00:00:00:02", (1, 4)), 3: ("02:b1:00:00:03:00", "02:b1:00:00:00:05", (2, 5))}
OWN = 3
BFIR_ID = 3
SYNC = ("10.200.0.1", 9000)
SYNC6 = ("fd00:200::1", 9000)
OWN_PORT = 9001  # a BFIR entry whose set holds this node's own bit too
TWO_SETS_PORT = 9002  # a BFIR entry sending in two sets (SI 0 and SI 1)
BID1 = bift_id(BSL, 1)  # SI 1: BFR-ids 65..128; the neighbour on port 2 serves 65
INNER = IP(src="10.50.0.2", dst=SYNC[0], tos=0x28) / UDP(sport=4000, dport=SYNC[1]) / b"model-shard-0001"


def bfir_entries() -> list[tuple[str, int, dict[int, int]]]:
    """The BFIR entries both rigs install: (destination, UDP port, BIFT-id -> bit mask)."""
    return [
        (SYNC[0], SYNC[1], {BID: mask((1, 2, 4, 5))}),
        (SYNC6[0], SYNC6[1], {BID: mask((1, 2, 4, 5))}),
        (SYNC[0], OWN_PORT, {BID: mask((1, OWN))}),
        (SYNC[0], TWO_SETS_PORT, {BID: mask((1,)), BID1: mask((1,))}),
    ]


@dataclass(frozen=True)
class Local:
    """The node delivers the inner packet to itself (RFC 8296 Proto 4: IPv4)."""

    inner: bytes


@dataclass(frozen=True)
class Passed:
    """Not the BIER program's business: the frame goes on unchanged (BMv2's host port; a Linux node's stack)."""


@dataclass(frozen=True)
class BierVector:
    name: str
    packet: bytes
    expect: tuple  # of Forward / Local, or a single Drop
    counters: dict[str, int]  # counters that must move by exactly this much (others may not move)
    port: int = 0  # where it comes in


def frame(ids=(1, 2, 3), ttl=64, bid=BID, **bier) -> Ether:
    fields = {"bsl": BSL, "proto": 4, "dscp": 10, "bfir_id": 9, "entropy": 77} | bier
    bs = bitstring(ids, min(fields["bsl"], 3)) if fields["bsl"] <= 3 else bitstring(ids, 1) * 8
    return (
        Ether(src="02:b1:00:00:00:99", dst=NODE_MAC)
        / BIFTId(bift_id=bid, ttl=ttl)
        / BIER(bitstring=bs, **fields)
        / INNER
    )


def copy(port: int, ids, ttl: int, src: Ether | None = None) -> Forward:
    smac, dmac, _ = NBR[port]
    f = (src or frame()).copy()
    f[Ether].src, f[Ether].dst = smac, dmac
    f[BIFTId].ttl = ttl
    f[BIER].bitstring = bitstring(ids, f[BIER].bsl)
    return Forward(Ether(bytes(f)), port)


def vectors() -> list[BierVector]:
    base = frame()
    sync = Ether(src="02:b1:00:00:00:99", dst=NODE_MAC) / INNER
    pushed = (
        Ether(dst=NODE_MAC)
        / BIFTId(bift_id=BID, ttl=64)
        / BIER(bsl=BSL, proto=4, dscp=10, bfir_id=BFIR_ID, bitstring=bitstring((1, 2, 4, 5), BSL))
        / INNER
    )
    raw = bytes(base)
    return [
        BierVector(
            "bits for both neighbours and this node",
            bytes(base),
            (copy(2, (1,), 63), copy(3, (2,), 63), Local(bytes(INNER))),
            {"rx": 1, "copies": 2, "local": 1},
        ),
        BierVector(
            "one neighbour's bits only",
            bytes(frame(ids=(4,))),
            (copy(2, (4,), 63, frame(ids=(4,))),),
            {"rx": 1, "copies": 1},
        ),
        BierVector("only this node's bit", bytes(frame(ids=(3,))), (Local(bytes(INNER)),), {"rx": 1, "local": 1}),
        BierVector(
            "bits nobody serves are counted, the rest forwarded",
            bytes(frame(ids=(5, 50))),
            (copy(3, (5,), 63, frame(ids=(5, 50))),),
            {"rx": 1, "copies": 1, "drop_no_neighbor": 1},
        ),
        BierVector(
            "TTL 1 forwards nothing but still delivers locally",
            bytes(frame(ttl=1)),
            (Local(bytes(INNER)),),
            {"rx": 1, "local": 1, "drop_ttl": 1},
        ),
        BierVector(
            "BFIR: model-sync UDP gets a header and goes to both neighbours",
            bytes(sync),
            (copy(2, (1, 4), 64, pushed), copy(3, (2, 5), 64, pushed)),
            {"bfir_push": 1, "copies": 2},
        ),
        BierVector("wrong nibble", bytes(frame(nibble=4)), (Drop("drop_nibble"),), {"rx": 1, "drop_nibble": 1}),
        BierVector("wrong version", bytes(frame(version=1)), (Drop("drop_version"),), {"rx": 1, "drop_version": 1}),
        BierVector(
            "BSL 512 is not forwarded here",
            bytes(frame(bsl=4, bid=bift_id(4, 0))),
            (Drop("drop_bsl"),),
            {"rx": 1, "drop_bsl": 1},
        ),
        BierVector(
            "header BSL differs from the BIFT-id's", bytes(frame(bsl=2)), (Drop("drop_bsl"),), {"rx": 1, "drop_bsl": 1}
        ),
        BierVector(
            "bitstring cut short", raw[: 14 + 12 + 4], (Drop("drop_truncated"),), {"rx": 1, "drop_truncated": 1}
        ),
        BierVector(
            "zero bitstring", bytes(frame(ids=())), (Drop("drop_zero_bitstring"),), {"rx": 1, "drop_zero_bitstring": 1}
        ),
        BierVector(
            "unknown BIFT-id",
            bytes(frame(bid=bift_id(BSL, 7))),
            (Drop("drop_bift_miss"),),
            {"rx": 1, "drop_bift_miss": 1},
        ),
        BierVector(
            "local delivery of an unknown Proto",
            bytes(frame(ids=(3,), proto=5)),
            (Drop("drop_proto"),),
            {"rx": 1, "drop_proto": 1},
        ),
        # ---- adversarial input (issue 14) ----
        BierVector(
            "bits of the neighbour behind the ingress port: its copy goes back out there (RFC 8279 s6.5)",
            bytes(frame(ids=(1, 2))),
            (copy(2, (1,), 63, frame(ids=(1, 2))), copy(3, (2,), 63, frame(ids=(1, 2)))),
            {"rx": 1, "copies": 2},
            port=2,
        ),
        BierVector(
            "a local delivery whose inner packet is shorter than an IPv4 header is one drop",
            bytes(Ether(bytes(frame(ids=(3,)))[: 14 + 4 + 8 + 8]) / b"short-ipv4"),
            (Drop("drop_truncated"),),
            {"rx": 1, "drop_truncated": 1},
        ),
        BierVector(
            "a BIER frame with fewer than 4 bytes after Ethernet is truncated",
            bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC, type=0xAB37) / b"\x00\x01"),
            (Drop("drop_truncated"),),
            {"rx": 1, "drop_truncated": 1},
        ),
        BierVector(
            "BFIR: model-sync UDP with IPv4 options is encapsulated, options and all",
            bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC) / opts_inner()),
            (copy(2, (1, 4), 64, pushed_for(opts_inner())), copy(3, (2, 5), 64, pushed_for(opts_inner()))),
            {"bfir_push": 1, "copies": 2},
        ),
        BierVector(
            "BFIR: model-sync IPv6 behind a hop-by-hop header is encapsulated",
            bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC) / inner6()),
            (copy(2, (1, 4), 64, pushed_for(inner6())), copy(3, (2, 5), 64, pushed_for(inner6()))),
            {"bfir_push": 1, "copies": 2},
        ),
        BierVector(
            "BFIR: a set holding this node's own bit also delivers here (RFC 8279 s6.5)",
            bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC) / own_inner()),
            (copy(2, (1,), 64, pushed_for(own_inner(), (1, OWN))), Local(bytes(own_inner()))),
            {"bfir_push": 1, "copies": 1, "local": 1},
        ),
        BierVector(
            "BFIR: one packet sent in two sets counts one push",
            bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC) / two_sets_inner()),
            two_sets_copies(),
            {"bfir_push": 1, "copies": 2},
        ),
        *[
            BierVector(
                f"BFIR: malformed IPv4 for a BFIR entry is dropped ({why})",
                bad,
                (Drop("drop_malformed"),),
                {"drop_malformed": 1},
            )  # fmt: skip
            for why, bad in malformed_sync()
        ],
        BierVector(
            "BFIR: fragments are not matched by UDP port (all of a datagram's fragments go alike)",
            bytes(
                Ether(src="02:b1:00:00:00:99", dst=NODE_MAC)
                / IP(src="10.50.0.2", dst=SYNC[0], flags="MF")
                / UDP(sport=4000, dport=SYNC[1])
                / b"first-fragment"
            ),
            (Passed(),),
            {"pass": 1},
        ),
    ]


# ---- fast reroute: the same node with port 3's neighbour (BFR-ids 2 and 5) marked down ------------------
FRR_DOWN = 3  # the port these vectors mark down (only the mark counts: the link itself still carries frames)


def frr_backup() -> list[tuple[int, tuple[int, ...]]]:
    """BID's entry while port FRR_DOWN is down, as dinet plans it: port 2 (the loop-free alternate) takes its
    own bits and port 3's. BID1's entry has no neighbour on port 3, so no backup."""
    return [(2, (1, 4, 2, 5))]


def frr_vectors() -> list[BierVector]:
    sync = Ether(src="02:b1:00:00:00:99", dst=NODE_MAC) / INNER
    return [
        BierVector(
            "port 3 down: its bits leave on port 2 with the backup F-BM; local delivery as before",
            bytes(frame()),
            (copy(2, (1, 2), 63), Local(bytes(INNER))),
            {"rx": 1, "copies": 1, "local": 1, "frr": 1},
        ),
        BierVector(
            "port 3 down: a frame for port 2's bits alone takes the backup entry too",
            bytes(frame(ids=(4,))),
            (copy(2, (4,), 63, frame(ids=(4,))),),
            {"rx": 1, "copies": 1, "frr": 1},
        ),
        BierVector(
            "port 3 down: an entry without a neighbour there (SI 1) forwards as before",
            bytes(frame(ids=(1,), bid=BID1)),
            (copy(2, (1,), 63, frame(ids=(1,), bid=BID1)),),
            {"rx": 1, "copies": 1},
        ),
        BierVector(
            "port 3 down: a BFIR's push replicates with the backup entry",
            bytes(sync),
            (copy(2, (1, 2, 4, 5), 64, pushed_for(INNER)),),
            {"bfir_push": 1, "copies": 1, "frr": 1},
        ),
        BierVector(
            "port 3 down: a BFIR's two sets take their own entries (the backup in SI 0)",
            bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC) / two_sets_inner()),
            two_sets_copies(),
            {"bfir_push": 1, "copies": 2, "frr": 1},
        ),
    ]


def frr_unprotected_vectors() -> list[BierVector]:
    """With port 2 marked down instead: no backup was planned for it (the entries name none), so frames
    are sent on the entry as before and each counted as having a down port (on a real failure they are lost)."""
    return [
        BierVector(
            "port 2 down, no backup: counted, and sent on the entry",
            bytes(frame(ids=(4,))),
            (copy(2, (4,), 63, frame(ids=(4,))),),
            {"rx": 1, "copies": 1, "drop_port_down": 1},
        ),
    ]


def opts_inner():
    return (
        IP(src="10.50.0.2", dst=SYNC[0], tos=0x28, options=[IPOption_Router_Alert()])
        / UDP(sport=4001, dport=SYNC[1])
        / b"model-shard-0002"
    )


def inner6():
    return (
        IPv6(src="fd00:50::2", dst=SYNC6[0], tc=0x28)
        / IPv6ExtHdrHopByHop()
        / UDP(sport=4002, dport=SYNC6[1])
        / b"model-shard-0003"
    )


def own_inner():
    return IP(src="10.50.0.2", dst=SYNC[0], tos=0x28) / UDP(sport=4003, dport=OWN_PORT) / b"model-shard-0004"


def two_sets_copies() -> tuple[Forward, Forward]:
    """What the BFIR sends for two_sets_inner: one copy per set, both on port 2."""
    return (
        copy(2, (1,), 64, pushed_for(two_sets_inner(), (1,))),
        copy(2, (1,), 64, pushed_for(two_sets_inner(), (1,), BID1)),
    )


def two_sets_inner():
    return IP(src="10.50.0.2", dst=SYNC[0], tos=0x28) / UDP(sport=4004, dport=TWO_SETS_PORT) / b"model-shard-0005"


def pushed_for(inner, ids=(1, 2, 4, 5), bid=BID) -> Ether:
    """The frame the BFIR builds for `inner` before replication (copy() sets each neighbour's part)."""
    six = inner.version == 6
    return (
        Ether(dst=NODE_MAC)
        / BIFTId(bift_id=bid, ttl=64)
        / BIER(bsl=BSL, proto=6 if six else 4, dscp=10, bfir_id=BFIR_ID, bitstring=bitstring(ids, BSL))
        / inner
    )


def malformed_sync() -> list[tuple[str, bytes]]:
    eth = bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC, type=0x0800))
    good = bytes(INNER)

    def with_bytes(at: int, value: bytes) -> bytes:
        return eth + good[:at] + value + good[at + len(value) :]

    return [
        ("version 5", with_bytes(0, b"\x55")),
        ("total length 0", with_bytes(2, b"\x00\x00")),
        ("total length beyond the frame", with_bytes(2, (len(good) + 40).to_bytes(2, "big"))),
        ("UDP header beyond the total length", with_bytes(2, (20 + 6).to_bytes(2, "big"))),
    ]


def mask(ids) -> int:
    return sum(1 << (i - 1) for i in ids)


# ---- SR-P2MP trees (the baseline BIER is compared with), forwarded by the same node ----------------------
# Node SIDs TREE_NODE_SID_BASE + n (this node is n = OWN); replication SIDs from TREE_REP_SID_BASE. The node
# is a leaf and branching node of tree 1, a leaf of tree 2, a pass-through of node 7's segments, and the root
# of tree 4 (the model-sync destination on TREE_PORT).
NODE_SID0 = 16000
REP_SID0 = 100000
TREE_PORT = 9003


def node_sid(n: int) -> int:
    return NODE_SID0 + n


def rep_sid(tree: int, n: int) -> int:
    return REP_SID0 + 10 * tree + n


def tree_segments() -> list[tuple[int, list[tuple[int, int, int]], bool]]:
    """(replication SID, replicas as (node SID, replication SID, out port), leaf) at this node."""
    return [
        (rep_sid(1, OWN), [(node_sid(2), rep_sid(1, 2), 2), (node_sid(5), rep_sid(1, 5), 3)], True),
        (rep_sid(2, OWN), [], True),
        (rep_sid(4, OWN), [(node_sid(2), rep_sid(4, 2), 2), (node_sid(5), rep_sid(4, 5), 3)], False),
    ]


def tree_nodes() -> dict[int, int | None]:
    """Node SID -> the port toward that node (None: this node's own SID)."""
    return {node_sid(OWN): None, node_sid(2): 2, node_sid(5): 3, node_sid(7): 3}


def tree_roots() -> list[tuple[str, int, int]]:
    """(destination, UDP port, the root's replication SID)."""
    return [(SYNC[0], TREE_PORT, rep_sid(4, OWN)), (SYNC6[0], TREE_PORT, rep_sid(4, OWN))]


def tree_frame(top: int, bottom: int, ttl: int = 64, bottom_ttl: int | None = None, inner=INNER, tc: int = 0) -> Ether:
    from scapy.contrib.mpls import MPLS

    return (
        Ether(src="02:b1:00:00:00:99", dst=NODE_MAC, type=0x8847)
        / MPLS(label=top, cos=tc, s=0, ttl=ttl)
        / MPLS(label=bottom, s=1, ttl=ttl if bottom_ttl is None else bottom_ttl)
        / inner
    )


def tree_copy(
    port: int, top: int, bottom: int, ttl: int, inner=INNER, bottom_ttl: int | None = None, tc: int = 0
) -> Forward:
    smac, dmac, _ = NBR[port]
    f = tree_frame(top, bottom, ttl, bottom_ttl, inner, tc)
    f[Ether].src, f[Ether].dst = smac, dmac
    return Forward(Ether(bytes(f)), port)


def tree_inner():
    return IP(src="10.50.0.2", dst=SYNC[0], tos=0x08) / UDP(sport=4005, dport=TREE_PORT) / b"model-shard-tree"


def tree_inner6():
    return IPv6(src="fd00:50::2", dst=SYNC6[0]) / UDP(sport=4006, dport=TREE_PORT) / b"model-shard-tree6"


def tree_vectors() -> list[BierVector]:
    from scapy.contrib.mpls import MPLS

    me = node_sid(OWN)
    two = bytes(tree_frame(me, rep_sid(1, OWN)))
    return [
        BierVector(
            "tree: a branching leaf sends a replica to each downstream node and delivers",
            two,
            (
                tree_copy(2, node_sid(2), rep_sid(1, 2), 63),
                tree_copy(3, node_sid(5), rep_sid(1, 5), 63),
                Local(bytes(INNER)),
            ),
            {"tree_rx": 1, "tree_copies": 2, "local": 1},
        ),
        BierVector(
            "tree: a leaf only delivers",
            bytes(tree_frame(me, rep_sid(2, OWN))),
            (Local(bytes(INNER)),),
            {"tree_rx": 1, "local": 1},
        ),
        BierVector(
            "tree: another node's SID on top goes on toward it (SR unicast), the top TTL minus one, its traffic"
            " class kept",
            bytes(tree_frame(node_sid(7), rep_sid(1, 7), tc=5)),
            (tree_copy(3, node_sid(7), rep_sid(1, 7), 63, bottom_ttl=64, tc=5),),
            {"tree_rx": 1, "tree_unicast": 1},
        ),
        BierVector(
            "tree: the root puts model-sync UDP on the tree, one replica per downstream node",
            bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC) / tree_inner()),
            (
                tree_copy(2, node_sid(2), rep_sid(4, 2), 64, tree_inner()),
                tree_copy(3, node_sid(5), rep_sid(4, 5), 64, tree_inner()),
            ),
            {"tree_push": 1, "tree_copies": 2},
        ),
        BierVector(
            "tree: the root puts IPv6 model-sync UDP on the tree too",
            bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC) / tree_inner6()),
            (
                tree_copy(2, node_sid(2), rep_sid(4, 2), 64, tree_inner6()),
                tree_copy(3, node_sid(5), rep_sid(4, 5), 64, tree_inner6()),
            ),
            {"tree_push": 1, "tree_copies": 2},
        ),
        BierVector(
            "tree: a malformed datagram for a root entry is dropped, not put on the tree",
            bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC, type=0x0800))
            + bytes(tree_inner())[:2]
            + (len(bytes(tree_inner())) + 40).to_bytes(2, "big")
            + bytes(tree_inner())[4:],
            (Drop("drop_malformed"),),
            {"drop_malformed": 1},
        ),
        BierVector(
            "tree: TTL 1 replicates nothing but still delivers locally",
            bytes(tree_frame(me, rep_sid(1, OWN), ttl=1)),
            (Local(bytes(INNER)),),
            {"tree_rx": 1, "local": 1, "drop_ttl": 1},
        ),
        BierVector(
            "tree: TTL 1 is not passed on",
            bytes(tree_frame(node_sid(7), rep_sid(1, 7), ttl=1)),
            (Drop("drop_ttl"),),
            {"tree_rx": 1, "drop_ttl": 1},
        ),
        BierVector(
            "tree: an unknown replication SID is dropped",
            bytes(tree_frame(me, rep_sid(9, OWN))),
            (Drop("drop_tree_segment"),),
            {"tree_rx": 1, "drop_tree_segment": 1},
        ),
        BierVector(
            "tree: a node SID with no route is dropped",
            bytes(tree_frame(node_sid(99), rep_sid(1, 99))),
            (Drop("drop_tree_route"),),
            {"tree_rx": 1, "drop_tree_route": 1},
        ),
        BierVector(
            "tree: one label alone is not a tree's stack",
            bytes(Ether(src="02:b1:00:00:00:99", dst=NODE_MAC, type=0x8847) / MPLS(label=me, s=1) / INNER),
            (Drop("drop_tree_stack"),),
            {"tree_rx": 1, "drop_tree_stack": 1},
        ),
        BierVector(
            "tree: a stack cut short is truncated",
            two[:18],
            (Drop("drop_truncated"),),
            {"tree_rx": 1, "drop_truncated": 1},
        ),
        BierVector(
            "tree: a leaf's payload that is not IP is not delivered",
            bytes(tree_frame(me, rep_sid(2, OWN), inner=b"\x50" + bytes(39))),
            (Drop("drop_proto"),),
            {"tree_rx": 1, "drop_proto": 1},
        ),
    ]
