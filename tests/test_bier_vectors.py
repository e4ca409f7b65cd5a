"""The shared BIER vectors on both data planes: the TC program on a namespace node, and BMv2."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Ether

from conftest import NS_PREFIX, bmv2_tools_or_skip, needs_bcc, needs_root
from dinet.targets import netns
from tests.vectors import Drop, Forward
from tests.vectors import bier as bv

pytestmark = [needs_root]
PACKET_OUTGOING = 4


def _norm(b: bytes) -> bytes:
    """A BIER frame with its entropy zeroed: each data plane picks its own (RFC 8296 s2.1.2)."""
    if len(b) > 22 and b[12:14] == b"\xab\x37":
        return b[:19] + bytes([b[19] & 0xF0, 0, 0]) + b[22:]
    return b


def outcome_ok(name: str, expect: tuple, frames: dict[int, list[bytes]], local: list[bytes]) -> None:
    """Copies as the vector says, port by port; `local`: what the node delivered to itself, compared as
    far as the target shows it (the inner packet on BMv2's host port; the UDP payload on a Linux node)."""
    want: dict[int, list[bytes]] = {}
    for f in expect:
        if isinstance(f, Forward):
            want.setdefault(f.port, []).append(_norm(bytes(f.packet)))
    want = {p: sorted(fs) for p, fs in want.items()}
    got = {p: sorted(_norm(f) for f in fs) for p, fs in frames.items() if fs}
    assert got == want, f"{name}: copies { ({p: [Ether(f) for f in fs] for p, fs in got.items()})!r}"
    want_local = [f.inner for f in expect if isinstance(f, bv.Local)]
    assert len(local) == len(want_local), f"{name}: delivered locally {local!r}"
    for have, inner in zip(local, want_local, strict=True):
        assert have in (inner, _udp_payload(inner)), f"{name}: delivered {have!r}, not {inner!r} or its UDP payload"


def _udp_payload(inner: bytes) -> bytes:
    """The UDP payload of an inner IPv4/IPv6 packet: what a Linux BFER's socket receives. Never empty in the
    vectors, so a delivery of nothing (or of a part) cannot pass."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6

    pkt = IP(inner) if inner[0] >> 4 == 4 else IPv6(inner)
    payload = bytes(pkt[UDP].payload)
    assert payload, "a local-delivery vector carries a UDP payload"
    return payload


# ---- the TC program ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tc_rig(bpffs_root: Path) -> Iterator:
    if needs_bcc.args[0]:
        pytest.skip(needs_bcc.kwargs["reason"])
    from tests.bier_rig import tc_bier_rig

    # transit vectors go through the XDP fast path (from one copy), the rest through TC
    with tc_bier_rig(f"{NS_PREFIX}bv", bpffs_root, min_fanout=1) as rig:
        yield rig


def _read_out(s: socket.socket, timeout: float) -> list[bytes]:
    out = []
    while select.select([s], [], [], timeout)[0]:
        data, addr = s.recvfrom(65535)
        if addr[2] != PACKET_OUTGOING and not data.startswith(b"\xff\xff\xff\xff\xff\xff"):
            out.append(data)
        timeout = 0
    return out


def _check_on_tc(rig, v: bv.BierVector, fast_path: bool = True) -> None:  # type: ignore[no-untyped-def]
    """One vector through the TC node: counters, copies on the taps, local deliveries. fast_path: whether a
    transit frame is expected on the XDP fast path (it hands frames to TC while a port is marked down)."""
    node, taps, rx = rig
    before = node.counters()
    taps[v.port].send(v.packet)
    moved: dict[str, int] = {}
    for _ in range(300):  # the veth hands the frame over asynchronously: wait for its counters to settle
        after = node.counters()
        moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        if all(moved.get(k, 0) >= n for k, n in v.counters.items()):
            break
        select.select([], [], [], 0.01)
    fast = moved.pop("fast", 0)
    assert moved == v.counters, f"{v.name}: counters {moved}"
    forwards = [f for f in v.expect if isinstance(f, Forward)]
    transit = (
        forwards
        and not any(isinstance(f, (bv.Local, Drop)) for f in v.expect)
        and "rx" in v.counters  # a BIER frame a BFR passes on (not one a BFIR pushed, not a tree's)
        and all(f.port != v.port for f in forwards)  # a copy back out of the ingress port is sent by TC
    )
    assert fast == (1 if transit and fast_path else 0), f"{v.name}: XDP fast path {fast}"
    frames = {
        p: _read_out(s, 1.0 if any(isinstance(f, Forward) and f.port == p for f in v.expect) else 0)
        for p, s in taps.items()
    }
    local = []
    if any(isinstance(f, bv.Local) for f in v.expect):
        select.select(rx, [], [], 2.0)  # the payload is already queued once the counters moved
    for sock in rx:
        while True:
            try:
                local.append(sock.recv(65535))  # the UDP payload of the decapsulated packet
            except BlockingIOError:
                break
    outcome_ok(v.name, v.expect, frames, local)
    assert not any(isinstance(f, Drop) for f in v.expect) or not any(frames.values())


@pytest.mark.parametrize("v", [*bv.vectors(), *bv.tree_vectors()], ids=lambda v: v.name)
def test_bier_vector_on_tc(tc_rig, v: bv.BierVector) -> None:
    _check_on_tc(tc_rig, v)


def test_fast_reroute_vectors_on_tc(tc_rig) -> None:
    """Port 3 marked down as the node's link monitor marks it: BID's backup entry replicates, SI 1's entry is
    untouched, the XDP fast path leaves the frames to TC; then port 2 (no backup planned): counted."""
    node = tc_rig[0]
    p2, p3 = (netns.ifindex(f"p{p}", node.netns) for p in (2, bv.FRR_DOWN))
    try:
        node.mark_port(p3, True)
        for v in bv.frr_vectors():
            _check_on_tc(tc_rig, v, fast_path=False)
        node.mark_port(p3, False)
        node.mark_port(p2, True)
        for v in bv.frr_unprotected_vectors():
            _check_on_tc(tc_rig, v, fast_path=False)
    finally:
        node.mark_port(p2, False)
        node.mark_port(p3, False)


# ---- BMv2 ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def p4_rig() -> Iterator:
    bmv2_tools_or_skip()
    from tests.bier_rig import program_bmv2
    from tests.bmv2_harness import bmv2_rig

    with bmv2_rig(f"{NS_PREFIX}bp") as r:
        program_bmv2(r.node)
        yield r


PROBE = bytes(Ether(src="02:99:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="192.0.2.250"))


def _check_on_bmv2(r, v: bv.BierVector) -> None:  # type: ignore[no-untyped-def]
    """One vector through the switch: counters, copies on its ports, what reached the host port."""
    before = r.node.bier_counters()
    r.inject(v.port, v.packet)
    r.inject(0, PROBE)
    host = []
    while (f := r.read(1, timeout=5)) is not None and f != PROBE:
        host.append(f)
    frames = {p: [] for p in (0, 2, 3)}
    for f in v.expect:
        if isinstance(f, Forward):
            got = r.read(f.port, timeout=5)
            if got is not None:
                frames[f.port].append(got)
    for p, fs in r.drain().items():
        frames.setdefault(p, []).extend(fs)
    after = r.node.bier_counters()
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k] and k != "fast"}
    assert moved == v.counters, f"{v.name}: counters {moved}"
    if any(isinstance(f, bv.Passed) for f in v.expect):  # it went on to the host port unchanged
        assert host == [v.packet], f"{v.name}: on the host port {host!r}"
        host = []
    local = [bytes(Ether(f).payload) for f in host]
    outcome_ok(v.name, v.expect, frames, local)


@pytest.mark.parametrize("v", [*bv.vectors(), *bv.tree_vectors()], ids=lambda v: v.name)
def test_bier_vector_on_bmv2(p4_rig, v: bv.BierVector) -> None:
    _check_on_bmv2(p4_rig, v)


def test_fast_reroute_vectors_on_bmv2(p4_rig) -> None:
    """The TC node's fast-reroute vectors on BMv2: port 3 written down into bier_port_state, as the switch's
    link monitor writes it; then port 2, for which no backup was planned."""
    node = p4_rig.node
    try:
        node.mark_port(bv.FRR_DOWN, True)
        for v in bv.frr_vectors():
            _check_on_bmv2(p4_rig, v)
        node.mark_port(bv.FRR_DOWN, False)
        node.mark_port(2, True)
        for v in bv.frr_unprotected_vectors():
            _check_on_bmv2(p4_rig, v)
    finally:
        node.mark_port(2, False)
        node.mark_port(bv.FRR_DOWN, False)
