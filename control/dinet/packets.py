"""Scapy layers for the project's packet formats, with the values of RFC 8296 (not the draft-era values of
scapy.contrib.bier: there BSL 0 means 64 bits and Proto 5 means IPv6; here BSL 1 means 64 bits, Proto 4 is
IPv4 and 6 is IPv6, as IANA registered them). Values come from ebpf/dinet_consts.h.

    Ether(type=0xAB37) / BIFTId(bift_id=..., ttl=64) / BIER(bsl=1, proto=4, bitstring=...) / IP(...)
"""

from __future__ import annotations

from collections.abc import Iterable

from scapy.fields import BitField, ShortField, StrLenField
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, bind_layers

from . import consts
from .errors import ConfigError

C = consts.load()
ETHERTYPE_BIER = C["DINET_ETHERTYPE_BIER"]
BSL_BITS = {C[f"BIER_BSL_{n}"]: n for n in (64, 128, 256, 512, 1024, 2048, 4096)}  # RFC 8296 s2.1.2
BSL_CODE = {bits: code for code, bits in BSL_BITS.items()}


def bitstring_bytes(bsl_code: int) -> int:
    try:
        return BSL_BITS[bsl_code] // 8
    except KeyError:
        raise ConfigError(f"BSL code must be 1-7 (RFC 8296 s2.1.2), not {bsl_code!r}") from None


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


def bift_id(bsl_code: int, si: int, sd: int = 0) -> int:
    """draft-ietf-bier-non-mpls-bift-encoding: BIFT-id = BSL(4) | SD(8) | SI(8)."""
    if not 0 <= si < 256 or not 0 <= sd < 256:
        raise ConfigError(f"SI and SD must be 0-255, not SI {si}, SD {sd}")
    bitstring_bytes(bsl_code)
    return (bsl_code << C["BIER_BIFT_BSL_SHIFT"]) | (sd << C["BIER_BIFT_SD_SHIFT"]) | si


def split_bift_id(value: int) -> tuple[int, int, int]:
    """(BSL code, SD, SI) of a BIFT-id."""
    return value >> 16 & 0xF, value >> 8 & 0xFF, value & 0xFF


def si_bit(bfr_id: int, bsl_bits: int) -> tuple[int, int]:
    """(SI, bit position 1..BSL) of a BFR-id (RFC 8279 s3)."""
    if bfr_id < 1 or bfr_id > 0xFFFF:
        raise ConfigError(f"a BFR-id is 1..65535, not {bfr_id!r}")
    return (bfr_id - 1) // bsl_bits, (bfr_id - 1) % bsl_bits + 1


def bitstring_mask(bfr_ids: Iterable[int], bsl_bits: int, si: int) -> int:
    """The bitstring, as an integer, of the given BFR-ids that fall in set `si`."""
    mask = 0
    for b in bfr_ids:
        s, pos = si_bit(b, bsl_bits)
        if s == si:
            mask |= 1 << (pos - 1)
    return mask


def bitstring(bfr_ids: Iterable[int], bsl_code: int, si: int = 0) -> bytes:
    n = bitstring_bytes(bsl_code)
    return bitstring_mask(bfr_ids, n * 8, si).to_bytes(n, "big")


def bitstring_ids(raw: bytes, si: int = 0) -> list[int]:
    value = int.from_bytes(raw, "big")
    bits = len(raw) * 8
    return [si * bits + i + 1 for i in range(bits) if value >> i & 1]
