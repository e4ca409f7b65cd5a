"""RFC 8296 and RFC 8279 arithmetic, no packet library: BSL codes, BIFT-ids, a BFR-id's set and bit, and
bitstrings. Values come from ebpf/dinet_consts.h. The policy, the intent and the targets use this; the scapy
layers (dinet.packets) are for tests, benches and the lab's packet tools."""

from __future__ import annotations

from collections.abc import Iterable

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
