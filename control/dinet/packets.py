"""Scapy layers for the project's packet formats (the arithmetic without scapy: dinet.rfc8296), with the values
of RFC 8296 (not the draft-era values of scapy.contrib.bier: there BSL 0 means 64 bits and Proto 5 means
IPv6; here BSL 1 means 64 bits, Proto 4 is IPv4 and 6 is IPv6, as IANA registered them). Values come from
ebpf/dinet_consts.h.

    Ether(type=0xAB37) / BIFTId(bift_id=..., ttl=64) / BIER(bsl=1, proto=4, bitstring=...) / IP(...)
"""

from __future__ import annotations

from scapy.fields import BitField, ShortField, StrLenField
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, bind_layers

from .rfc8296 import (  # noqa: F401 - the arithmetic, re-exported for the tests' and benches' imports
    BSL_BITS,
    BSL_CODE,
    ETHERTYPE_BIER,
    C,
    bift_id,
    bitstring,
    bitstring_bytes,
    bitstring_ids,
    bitstring_mask,
    si_bit,
    split_bift_id,
)


class BIFTId(Packet):
    """RFC 8296 s2.1.1: the first 32-bit word, shaped like an MPLS label stack entry."""

    name = "BIFT-id"
    fields_desc = [
        BitField("bift_id", 0, 20),
        BitField("tc", 0, 3),
        BitField("s", 1, 1),
        BitField("ttl", C["BIER_DEFAULT_TTL"], 8),
    ]


class BIER(Packet):
    """RFC 8296 s2.1: the BIER header after the BIFT-id word."""

    name = "BIER"
    fields_desc = [
        BitField("nibble", C["BIER_NIBBLE"], 4),
        BitField("version", C["BIER_VERSION"], 4),
        BitField("bsl", C["BIER_BSL_64"], 4),
        BitField("entropy", 0, 20),
        BitField("oam", 0, 2),
        BitField("rsv", 0, 2),
        BitField("dscp", 0, 6),
        BitField("proto", C["BIER_PROTO_IPV4"], 6),
        ShortField("bfir_id", 0),
        StrLenField("bitstring", b"", length_from=lambda p: BSL_BITS.get(p.bsl, 64) // 8),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        want = BSL_BITS.get(self.bsl, 64) // 8
        bs = pkt[8:]
        if len(bs) < want:  # an unset or short bitstring is padded with zeros on the left (high bits)
            pkt = pkt[:8] + bs.rjust(want, b"\0")
        return pkt + pay

    def bfr_ids(self, si: int = 0) -> list[int]:
        """The BFR-ids whose bits are set (RFC 8279 s5: bit 1 is the low-order bit of the last byte)."""
        return bitstring_ids(bytes(self.bitstring), si)


bind_layers(Ether, BIFTId, type=ETHERTYPE_BIER)
bind_layers(BIFTId, BIER)
bind_layers(BIER, IP, proto=C["BIER_PROTO_IPV4"])
bind_layers(BIER, IPv6, proto=C["BIER_PROTO_IPV6"])
