"""BIER vectors: one BFR (BFR-id 3; neighbour on port 2 serving BFR-ids 1 and 4, on port 3 serving 2 and 5)
that is also a BFIR for the model-sync destination. Run on the TC program and on BMv2 alike.

Outcomes: Forward for each copy (port, expected frame), Local for the decapsulated packet the node
delivers to itself (the eBPF node's stack; BMv2's host port 1), Drop with the counter that must move."""

from __future__ import annotations

from dataclasses import dataclass

from scapy.layers.inet import IP, UDP
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
INNER = IP(src="10.50.0.2", dst=SYNC[0], tos=0x28) / UDP(sport=4000, dport=SYNC[1]) / b"model-shard-0001"


@dataclass(frozen=True)
class Local:
    """The node delivers the inner packet to itself (RFC 8296 Proto 4: IPv4)."""

    inner: bytes


@dataclass(frozen=True)
class BierVector:
    name: str
    packet: bytes
    expect: tuple  # of Forward / Local, or a single Drop
    counters: dict[str, int]  # counters that must move by exactly this much (others may not move)


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
    ]


def mask(ids) -> int:
    return sum(1 << (i - 1) for i in ids)
