"""Where a new flow lands: the hash both data planes compute for it, and a session-affine service's session key
(dinet_consts.h; ebpf/steer.bpf.c session_key() and flow_hash(), p4/steering.p4). Pure: tests build expected
packets from it, and clients choose source ports with it.

A session key names a conversation without the network parsing the application: the IPv6 flow label (RFC 6437:
the source sets it, 20 bits, unchanged end to end) where it is nonzero, else, for either family, the group of
2^DINET_SESSION_PORT_BITS source ports at or above DINET_SESSION_PORT_MIN that the client bound the connection
to. Its limits: a NAT that rewrites source ports or a middlebox that clears the flow label breaks it (the flow
is then placed by its 5-tuple, as without a key); a client address holds (65536 - PORT_MIN) >> PORT_BITS port
groups (512 at the defaults), so conversations beyond that share groups (and instances); a group holds 2^BITS
ports, so a conversation opens at most that many connections at once, and a port in TIME_WAIT is skipped."""

from __future__ import annotations

import zlib

from .. import consts
from ..model import IPAddress

C = consts.load()
PORT_MIN = C["DINET_SESSION_PORT_MIN"]
PORT_BITS = C["DINET_SESSION_PORT_BITS"]
GROUPS = (65536 - PORT_MIN) >> PORT_BITS  # session port groups per client address


def session_key(sport: int, flow_label: int = 0) -> int:
    """A packet's session key (tag << 24 | value), or 0 when it carries none."""
    if flow_label & 0xFFFFF:
        return C["DINET_SESSION_TAG_LABEL"] << 24 | (flow_label & 0xFFFFF)
    if sport >= PORT_MIN:
        return C["DINET_SESSION_TAG_PORT"] << 24 | sport >> PORT_BITS
    return 0


def flow_hash(src: IPAddress, dst: IPAddress, sport: int, dport: int, proto: int, session: int = 0) -> int:
    """The data planes' hash of a new flow: CRC-32 over the 5-tuple in wire order, or with a session key over
    source, destination, the key, destination port and protocol (ring index: the hash mod the ring's size)."""
    mid = session.to_bytes(4, "big") if session else sport.to_bytes(2, "big")
    return zlib.crc32(src.packed + dst.packed + mid + dport.to_bytes(2, "big") + bytes([proto]))


def session_ports(session: int) -> range:
    """The source ports of a session's group (`session`: any integer, folded onto the groups)."""
    base = PORT_MIN + (session % GROUPS << PORT_BITS)
    return range(base, base + (1 << PORT_BITS))
