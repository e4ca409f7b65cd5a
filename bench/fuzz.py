"""Fuzzing the steering data plane against invariants: random frames and mutations of every shared vector
(bit flips, truncation, padding, fields at their limits, IPv4 options, IPv6 extension headers, fragments)
through ebpf/steer.bpf.c with BPF_PROG_TEST_RUN, each outcome checked against a reference model of the
steering contract written here from the RFCs and the README, not from the C:

  - the verdict (steer / drop with reason / pass with reason) is the model's, and exactly one verdict
    counter moves for a drop or a pass, none for a steered frame;
  - a passed frame leaves unchanged;
  - a steered frame has a valid outer header (RFC 2003 / RFC 2473: version, length, checksum, TTL 64,
    protocol 4 or 41, the node's tunnel source) toward an endpoint of the service's instances, and the
    inner packet is the input's datagram byte for byte (any Ethernet padding after it);
  - the same 5-tuple always reaches the same instance while that instance lives.

A second phase changes the instance set (an instance leaves, another joins, one drains) while 1,000 flows
arrive on both CPUs: established flows never move while their instance is up or draining, and both CPUs
agree on every flow.

    sudo .venv/bin/python -m bench.fuzz [--quick] [--frames N] [--seed S]

Then as many frames, random and mutated BIER frames (every shared vector, random bitstrings, TTLs, sets) and
BFIR frames (model-sync UDP to every BFIR entry, with options, extension headers, fragments), go into the
BIER program of a node in a namespace (TC, and the XDP fast path from a fan-out of 2), in batches closed
by a marker frame: per batch, the copies on every port (bitstring AND the port's F-BM, TTL one less, the
neighbour's MACs; a BFIR's header and the input packet after it) and every counter must be exactly what a
model of RFC 8279 s6.5 / RFC 8296 and the BFIR contract says.

writes bench/results/fuzz.json: frames, violations (must be 0), frames per second, outcomes.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import host, need_root, write

BPFFS = Path(f"/sys/fs/bpf/dinet-bench-fuzz-{os.getpid()}")
EXT = {0, 43, 60}  # hop-by-hop, routing, destination options
EXT_MAX, EXT_MAX_LEN = 2, 256  # dinet_consts.h: DINET_IPV6_EXT_MAX, DINET_IPV6_EXT_MAX_LEN


# ---- the reference model ---------------------------------------------------------------------------------
def model(frame: bytes, services: dict[tuple[bytes, int, int], set[bytes]], vips: set[bytes]) -> tuple:
    """('steer', datagram_len, flow, endpoints) | ('drop', reason) | ('pass', reason), per the contract."""
    if len(frame) < 14:
        return ("pass", "pass_not_service")
    et = frame[12:14]
    ip = frame[14:]
    if et == b"\x08\x00":
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[0] & 0xF < 5:
            return ("drop", "drop_malformed")
        dst = ip[16:20]
        if dst not in vips:
            return ("pass", "pass_not_service")
        ihl = (ip[0] & 0xF) * 4
        tot = int.from_bytes(ip[2:4], "big")
        if tot < ihl or tot > len(ip):
            return ("drop", "drop_malformed")
        if int.from_bytes(ip[6:8], "big") & 0x3FFF:
            return ("drop", "drop_fragment")
        proto, src, l4, dgram = ip[9], ip[12:16], ihl, tot
    elif et == b"\x86\xdd":
        if len(ip) < 40 or ip[0] >> 4 != 6:
            return ("drop", "drop_malformed")
        dst = ip[24:40]
        if dst not in vips:
            return ("pass", "pass_not_service")
        dgram = 40 + int.from_bytes(ip[4:6], "big")
        if dgram > len(ip):
            return ("drop", "drop_malformed")
        nh, l4, src = ip[6], 40, ip[8:24]
        for _ in range(EXT_MAX):
            if nh not in EXT:
                break
            if l4 + 2 > dgram:  # the program reads the two-byte prefix within the datagram
                return ("drop", "drop_malformed")
            hlen = (ip[l4 + 1] + 1) * 8
            if hlen > EXT_MAX_LEN:
                return ("drop", "drop_ipv6_exthdr")
            nh, l4 = ip[l4], l4 + hlen
        if l4 > dgram:
            return ("drop", "drop_malformed")
        if nh == 44:
            return ("drop", "drop_fragment")
        if nh in EXT:
            return ("drop", "drop_ipv6_exthdr")
        proto = nh
    else:
        return ("pass", "pass_not_service")
    if proto not in (6, 17):
        return ("pass", "pass_unknown_service")
    if l4 + 8 > dgram or l4 + 8 > len(ip):  # the first 8 bytes of L4 (UDP's header) lie in the datagram
        return ("drop", "drop_malformed")
    sport, dport = struct.unpack("!HH", ip[l4 : l4 + 4])
    eps = services.get((dst, proto, dport))
    if eps is None:
        return ("pass", "pass_unknown_service")
    if not eps:
        return ("drop", "drop_no_instance")
    return ("steer", dgram, (src, dst, sport, dport, proto), eps)


def new_session_connection(frame: bytes, dgram: int, sessions: set[tuple[bytes, int, int]]) -> bool:
    """Per the contract (dinet_consts.h, steer.bpf.c): a TCP SYN without ACK to a session-affine service that
    carries a session key (a flow label, or a source port of the session range), its flags within the
    datagram, is a new connection of its session: it may be placed anew. `frame` is one the model steers.
    Read from the bytes as the data plane reads them: a TCP header cut short by the datagram's length is
    still a SYN if its first 14 bytes are there (scapy would not dissect it as TCP at all)."""
    from dinet.policy.session import session_key

    if frame[12:14] == b"\x08\x00":
        l4, proto, dst, label = (frame[14] & 0x0F) * 4, frame[23], frame[30:34], 0
    else:
        l4, proto, dst, label = 40, frame[20], frame[38:54], int.from_bytes(frame[15:18], "big") & 0xFFFFF
    tcp = frame[14 + l4 :]
    if proto != 6 or len(tcp) < 14 or (dst, 6, int.from_bytes(tcp[2:4], "big")) not in sessions:
        return False
    sport = int.from_bytes(tcp[0:2], "big")
    return l4 + 14 <= dgram and (tcp[13] & 0x12) == 0x02 and session_key(sport, label) != 0


def outer_ok(out: bytes, inp: bytes, dgram: int, eps: set[bytes], src4: bytes, src6: bytes) -> str:
    """'' if `out` is the tunnelled `inp` toward one of `eps`, else what is wrong."""
    if out[12:14] == b"\x08\x00":
        o = out[14:34]
        if o[0] != 0x45 or int.from_bytes(o[2:4], "big") != 20 + dgram or o[8] != 64 or o[9] not in (4, 41):
            return "bad outer IPv4 header"
        s = sum(struct.unpack("!10H", o))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        if s != 0xFFFF:
            return "bad outer IPv4 checksum"
        if o[12:16] != src4 or o[16:20] not in eps:
            return "outer addresses"
        olen, inner_v = 20, o[9]
    elif out[12:14] == b"\x86\xdd":
        o = out[14:54]
        if o[0] >> 4 != 6 or int.from_bytes(o[4:6], "big") != dgram or o[7] != 64 or o[6] not in (4, 41):
            return "bad outer IPv6 header"
        if o[8:24] != src6 or o[24:40] not in eps:
            return "outer addresses"
        olen, inner_v = 40, o[6]
    else:
        return "not IP"
    if out[14 + olen :] != inp[14:]:
        return "inner packet differs from the input's datagram"
    if (inner_v == 4) != (inp[12:14] == b"\x08\x00"):
        return "outer protocol does not name the inner version"
    # the DS field rides outside too (RFC 2983's uniform model): IPv4's TOS byte, IPv6's traffic class
    ds_in = inp[15] if inner_v == 4 else (inp[14] & 0x0F) << 4 | inp[15] >> 4
    ds_out = out[15] if olen == 20 else (out[14] & 0x0F) << 4 | out[15] >> 4
    if ds_in != ds_out:
        return "outer DS field differs from the inner one"
    return ""


# ---- frames ------------------------------------------------------------------------------------------------
def mutator(rng: random.Random, seeds: list[bytes]) -> Callable[[], bytes]:
    def flip(b: bytearray) -> None:
        for _ in range(rng.randint(1, 3) if b else 0):
            i = rng.randrange(len(b) * 8)
            b[i // 8] ^= 1 << (i % 8)

    def truncate(b: bytearray) -> None:
        del b[rng.randrange(len(b) + 1) :]

    def pad(b: bytearray) -> None:
        b.extend(rng.randbytes(rng.randint(1, 48)) if rng.random() < 0.5 else bytes(rng.randint(1, 48)))

    def limits(b: bytearray) -> None:
        if len(b) < 54:
            return
        if b[12:14] == b"\x08\x00":
            at, width = rng.choice([(14, 1), (16, 2), (20, 2), (23, 1)])
        else:
            at, width = rng.choice([(14, 1), (18, 2), (20, 1)])
        value = rng.choice([0, 1, 0xFF, 0xFFFF, 5, 6, 17, 44, 43, 60, 0x40, 0x20, 0x4000 >> 8])
        b[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big")

    def garbage(b: bytearray) -> None:
        b[:] = rng.randbytes(rng.randint(0, 128))
        if rng.random() < 0.7 and len(b) >= 14:
            b[12:14] = rng.choice([b"\x08\x00", b"\x86\xdd"])

    ops = [flip, truncate, pad, limits, garbage]

    def next_frame() -> bytes:
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 2)):
            rng.choice(ops)(b)
        return bytes(b.ljust(14, b"\0"))  # BPF_PROG_TEST_RUN (and any NIC) wants an Ethernet header

    return next_frame


def seeds_for(sv: Any, place: Any, rng: random.Random) -> list[bytes]:
    from scapy.layers.inet import IP, TCP, UDP, IPOption_Router_Alert
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    out = [bytes(v.packet) for v in sv.vectors(place)]
    eth = Ether(src=sv.CLIENT_MAC, dst=sv.NODE_MAC)
    for _ in range(200):
        sport = rng.randrange(1, 65536)
        body = Raw(rng.randbytes(rng.randint(0, 64)))
        out.append(
            bytes(eth / IP(src=f"10.0.{rng.randrange(256)}.2", dst="10.99.0.1") / TCP(sport=sport, dport=80) / body)
        )
        out.append(bytes(eth / IP(dst="10.99.0.1", options=[IPOption_Router_Alert()]) / TCP(sport=sport, dport=80)))
        out.append(bytes(eth / IP(dst="10.99.0.1", flags="MF") / UDP(sport=sport, dport=80) / body))
        out.append(bytes(eth / IPv6(src="fd00::2", dst="fd00:99::53") / UDP(sport=sport, dport=53) / body))
        ext = rng.choice([IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(), IPv6ExtHdrFragment()])
        out.append(bytes(eth / IPv6(dst="fd00:99::53") / ext / UDP(sport=sport, dport=53) / body))
        out.append(bytes(eth / IP(dst="10.99.0.2") / TCP(sport=sport, dport=8080) / body))
        pick = sv.PICK4  # two choices: what the data plane placed decides where the next flow goes
        out.append(
            bytes(eth / IP(src=f"10.2.{rng.randrange(256)}.2", dst=str(pick.vip)) / TCP(sport=sport, dport=pick.port))
        )
    return out


# ---- the run -------------------------------------------------------------------------------------------------
def fuzz_steering(n_frames: int, seed: int, progress: bool = True) -> dict[str, Any]:
    from dinet.targets.base import SteerSizes
    from dinet.targets.bpfsys import XDP_DROP, XDP_PASS, XDP_TX, test_run
    from dinet.targets.xdp import SteeringNode
    from tests.vectors import steering as sv

    rng = random.Random(seed)
    node = SteeringNode("fuzz", SteerSizes(16, 16, 251, 65536), bpffs_root=BPFFS)
    violations: list[str] = []  # the first 50, as examples
    n_violations = 0
    outcomes: Counter[str] = Counter()
    try:
        sv.install_scenario(node)

        def raw(a: Any) -> bytes:
            return ipaddress.ip_address(str(a)).packed

        services = {
            (raw(k.vip), k.proto_number, k.port): {raw(i.endpoint) for i in insts} for k, insts in sv.SERVICES.items()
        }
        vips = {raw(k.vip) for k in sv.SERVICES}
        sessions = {(raw(k.vip), k.proto_number, k.port) for k in sv.SESSION}
        src4, src6 = raw(sv.SRC4), raw(sv.SRC6)
        next_frame = mutator(rng, seeds_for(sv, sv.placement(node), rng))
        placed: dict[tuple, bytes] = {}
        before = node.verdicts()
        t0 = time.monotonic()

        def bad(what: str, frame: bytes) -> None:
            nonlocal n_violations
            n_violations += 1
            if len(violations) < 50:
                violations.append(f"{what}: {frame.hex()}")

        for i in range(n_frames):
            frame = next_frame()
            want = model(frame, services, vips)
            res = test_run(node.prog_fd, frame)
            after = node.verdicts()
            moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
            before = after
            outcomes[want[0] if want[0] == "steer" else want[1]] += 1

            if want[0] == "steer":
                _, dgram, flow, eps = want
                if res.action != XDP_TX or moved:
                    bad(f"expected a steered frame, got action {res.action_name}, counters {moved}", frame)
                    continue
                why = outer_ok(res.data, frame, dgram, eps, src4, src6)
                if why:
                    bad(why, frame)
                    continue
                dst = res.data[30:34] if res.data[12:14] == b"\x08\x00" else res.data[38:54]
                if new_session_connection(frame, dgram, sessions):
                    placed[flow] = dst  # a SYN of a session opens a new connection: placed anew, by its session
                elif placed.setdefault(flow, dst) != dst:
                    bad("a flow moved to another instance", frame)
            else:
                verdict, reason = want
                action = XDP_DROP if verdict == "drop" else XDP_PASS
                if res.action != action or moved != {reason: 1}:
                    bad(f"expected {verdict} {reason}, got action {res.action_name}, counters {moved}", frame)
                elif verdict == "pass" and res.data != frame:
                    bad("a passed frame was changed", frame)
            if progress and i and i % 100_000 == 0:
                print(f"  {i:,} frames, {n_violations} violation(s)", flush=True)
        seconds = time.monotonic() - t0
        moved_flows = set_changes(node, rng, sv)
        violations += [f"set changes: {m}" for m in moved_flows]
        n_violations += len(moved_flows)
    finally:
        node.destroy()
        if BPFFS.exists():
            from dinet.targets.bcc_program import remove_pinned_tree

            remove_pinned_tree(BPFFS)
    return {
        "frames": n_frames,
        "violations": n_violations,
        "examples": violations[:10],
        "frames_per_s": round(n_frames / seconds),
        "outcomes": dict(outcomes.most_common()),
    }


def set_changes(node: Any, rng: random.Random, sv: Any, rounds: int = 6, n_flows: int = 1000) -> list[str]:
    """Instance sets change while flows arrive on both CPUs; returns what went wrong (nothing, if correct)."""
    import dataclasses

    from scapy.layers.l2 import Ether

    from dinet.model import Instance, InstanceState, ServiceKey
    from dinet.targets.bpfsys import XDP_TX, test_run

    cpus = sorted(os.sched_getaffinity(0))[:2]
    svc = ServiceKey.parse("10.99.0.9:443/tcp")
    pool = [Instance(60 + i, f"192.0.2.{60 + i}", rng.randint(1, 3), site_id=1) for i in range(8)]
    live = pool[:4]
    node.add_service(svc)
    frames = [
        bytes(sv.client4(dst="10.99.0.9", dport=443, sport=10000 + i, src=f"10.1.{i % 200}.3")) for i in range(n_flows)
    ]
    home = os.sched_getaffinity(0)
    problems: list[str] = []

    def where(cpu: int) -> list[bytes]:
        os.sched_setaffinity(0, {cpu})
        try:
            out = []
            for f in frames:
                res = test_run(node.prog_fd, f)
                out.append(Ether(res.data).payload.dst.encode() if res.action == XDP_TX else b"")
            return out
        finally:
            os.sched_setaffinity(0, home)

    try:
        node.set_instances(svc, live)
        last = where(cpus[0])
        for r in range(rounds):
            gone = rng.choice(live)
            joined = rng.choice([i for i in pool if i not in live])
            drained = rng.choice([i for i in live if i is not gone])
            live = [i for i in live if i is not gone] + [joined]
            node.set_instances(
                svc, [dataclasses.replace(i, state=InstanceState.DRAINING) if i is drained else i for i in live]
            )
            order = cpus if r % 2 else cpus[::-1]
            first, second = where(order[0]), where(order[-1])
            if first != second:
                problems.append(
                    f"round {r}: the CPUs disagree on {sum(a != b for a, b in zip(first, second, strict=True))} flows"
                )
            moved = sum(1 for a, b in zip(last, first, strict=True) if a != str(gone.endpoint).encode() and a != b)
            if moved:
                problems.append(f"round {r}: {moved} established flows moved")
            # the drained instance leaves, a fresh one from the pool joins: the set keeps its size
            spare = [i for i in pool if i not in live]
            live = [i for i in live if i is not drained] + [rng.choice(spare)]
            node.set_instances(svc, live)
            last = where(order[0])
    finally:
        node.remove_service(svc)
    return problems


def show(name: str, res: dict[str, Any]) -> None:
    print(
        f"  {name}: {res['frames']:,} frames, {res['violations']} violation(s), {res['frames_per_s']:,} frames/s; "
        f"outcomes {res['outcomes']}"
    )
    for ex in res["examples"]:
        print(f"    {ex}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100,000 frames (well under a minute)")
    ap.add_argument("--frames", type=int, help="frames through the steering program (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=8200)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fuzz.json")
    a = ap.parse_args()
    if not need_root():
        return 1
    n = a.frames or (100_000 if a.quick else 1_000_000)
    print(f"fuzz: {n:,} frames through ebpf/steer.bpf.c and {n:,} through ebpf/bier.bpf.c (seed {a.seed})", flush=True)
    steering = fuzz_steering(n, a.seed)
    show("steering", steering)
    bier = fuzz_bier(n, a.seed)
    show("BIER", bier)
    violations = steering["violations"] + bier["violations"]
    res = {
        "host": host(),
        "seed": a.seed,
        "steering": steering,
        "bier": bier,
        "frames": 2 * n,
        "violations": violations,
    }
    write(res, a.out)
    return 0 if violations == 0 else 1


# ---- BIER ------------------------------------------------------------------------------------------------------
Bifts = dict[int, tuple[int, dict[int, tuple[int, bytes, bytes]]]]
Bfirs = dict[tuple[bytes, int], tuple[int, dict[int, int]]]


@dataclass(frozen=True)
class Trees:
    """The SR-P2MP state of the rig: replication SID -> ([(node SID, replication SID, port)], leaf); node
    SID -> port toward it (None: the node's own); (destination, UDP port) -> the root's replication SID;
    port -> (source MAC, destination MAC)."""

    segments: dict[int, tuple[list[tuple[int, int, int]], bool]]
    nodes: dict[int, int | None]
    roots: dict[tuple[bytes, int], int]
    macs: dict[int, tuple[bytes, bytes]]

    def replicas(self, rep: int, ttl: int, payload: bytes) -> list[tuple[int, bytes]]:
        out = []
        for node, down, port in self.segments[rep][0]:
            smac, dmac = self.macs[port]
            labels = (node << 12 | ttl).to_bytes(4, "big") + (down << 12 | 1 << 8 | ttl).to_bytes(4, "big")
            out.append((port, dmac + smac + b"\x88\x47" + labels + payload))
        return out


def tree_model(frame: bytes, t: Trees, c: Counter[str], out: list[tuple[int, bytes]]) -> None:
    """A frame with a tree's label stack (bier.bpf.c's tree section): SR unicast, replication, leaf."""
    c["tree_rx"] += 1
    if len(frame) < 22:
        c["drop_truncated"] += 1
        return
    top, bos = int.from_bytes(frame[14:18], "big"), int.from_bytes(frame[18:22], "big")
    if top & 0x100 or not bos & 0x100:
        c["drop_tree_stack"] += 1
        return
    sid, ttl = top >> 12, top & 0xFF
    if sid not in t.nodes:
        c["drop_tree_route"] += 1
        return
    port = t.nodes[sid]
    if port is not None:
        if ttl <= 1:
            c["drop_ttl"] += 1
            return
        smac, dmac = t.macs[port]
        out.append((port, dmac + smac + frame[12:14] + (top - 1).to_bytes(4, "big") + frame[18:]))
        c["tree_unicast"] += 1
        return
    rep = bos >> 12
    if rep not in t.segments:
        c["drop_tree_segment"] += 1
        return
    reps, leaf = t.segments[rep]
    if reps:
        if ttl <= 1:
            c["drop_ttl"] += 1
        else:
            copies = t.replicas(rep, ttl - 1, frame[22:])
            out.extend(copies)
            c["tree_copies"] += len(copies)
    if leaf:
        version = frame[22] >> 4 if len(frame) > 22 else 0
        if version not in (4, 6):
            c["drop_proto"] += 1
        elif len(frame) < 22 + (20 if version == 4 else 40):
            c["drop_truncated"] += 1
        else:
            c["local"] += 1


def bier_model(
    frame: bytes, bifts: Bifts, bfirs: Bfirs, bfir_id: int, trees: Trees | None = None
) -> tuple[Counter[str], list[tuple[int, bytes]]]:
    """What the BIER program must do with `frame` (arriving on a port that is no neighbour's): the counters
    that move and the copies that leave, (port, frame with its entropy zeroed), per RFC 8279 s6.5 and
    RFC 8296. bifts: BIFT-id -> (own bits, {port: (F-BM, source MAC, destination MAC)}); bfirs: (destination,
    UDP port) -> (BSL code, {BIFT-id: bits}); trees: the SR-P2MP baseline's state, forwarded by the same
    program. The same contract the shared vectors hold the program to."""
    c: Counter[str] = Counter()
    out: list[tuple[int, bytes]] = []
    et = frame[12:14]
    if et == b"\x88\x47" and trees is not None:
        tree_model(frame, trees, c, out)
        return c, out
    if et == b"\xab\x37":
        c["rx"] += 1
        if len(frame) < 26:
            c["drop_truncated"] += 1
            return c, out
        w0 = int.from_bytes(frame[14:18], "big")
        bid, ttl = w0 >> 12, w0 & 0xFF
        h = frame[18:26]
        bsl = h[1] >> 4
        if h[0] >> 4 != 5:
            c["drop_nibble"] += 1
        elif h[0] & 0xF != 0:
            c["drop_version"] += 1
        elif bsl not in (1, 2, 3) or (bid >> 16) & 0xF != bsl:
            c["drop_bsl"] += 1
        if sum(c.values()) > 1:
            return c, out
        nbytes = {1: 8, 2: 16, 3: 32}[bsl]
        if len(frame) < 26 + nbytes:
            c["drop_truncated"] += 1
            return c, out
        bs = int.from_bytes(frame[26 : 26 + nbytes], "big")
        if not bs:
            c["drop_zero_bitstring"] += 1
            return c, out
        if bid not in bifts:
            c["drop_bift_miss"] += 1
            return c, out
        local, nbrs = bifts[bid]
        rem = bs & ~local
        if rem:
            if ttl <= 1:
                c["drop_ttl"] += 1
            else:
                for port, (fbm, smac, dmac) in nbrs.items():
                    if rem & fbm:
                        copy = bytearray(frame)
                        copy[0:6], copy[6:12] = dmac, smac
                        copy[17] = ttl - 1
                        copy[26 : 26 + nbytes] = (rem & fbm).to_bytes(nbytes, "big")
                        out.append((port, bier_norm(bytes(copy))))
                        c["copies"] += 1
                        rem &= ~fbm
                if rem:
                    c["drop_no_neighbor"] += 1
        if bs & local:
            proto = h[5] & 0x3F
            if proto not in (4, 6):
                c["drop_proto"] += 1
            elif len(frame) < 26 + nbytes + (20 if proto == 4 else 40):
                c["drop_truncated"] += 1
            else:
                c["local"] += 1
        return c, out
    # BFIR: the classification of bfir_classify, on (destination, UDP port) entries only (the rig has no (S,G))
    ip = frame[14:]
    if et == b"\x08\x00" and len(ip) >= 20:
        l3, dgram = (ip[0] & 0xF) * 4, int.from_bytes(ip[2:4], "big")
        bad = ip[0] >> 4 != 4 or ip[0] & 0xF < 5 or dgram < l3 or dgram > len(ip)
        frag = int.from_bytes(ip[6:8], "big") & 0x3FFF != 0
        l4, dst, dscp, proto = ip[9], ip[16:20], ip[1] >> 2, 4
    elif et == b"\x86\xdd" and len(ip) >= 40:
        l3, dgram = 40, 40 + int.from_bytes(ip[4:6], "big")
        bad = ip[0] >> 4 != 6 or dgram > len(ip)
        l4, dst, dscp, proto = ip[6], ip[24:40], ((ip[0] & 0xF) << 4 | ip[1] >> 4) >> 2, 6
        for _ in range(EXT_MAX):
            if l4 not in EXT:
                break
            if l3 + 2 > dgram or l3 + 2 > len(ip):
                bad = True
                break
            if (ip[l3 + 1] + 1) * 8 > EXT_MAX_LEN:
                l4 = 0
                break
            l4, l3 = ip[l3], l3 + (ip[l3 + 1] + 1) * 8
        if l3 > dgram:
            bad = True
        frag = l4 == 44
    else:
        return c, out  # not IP (or shorter than its header): not the BIER program's business, not counted
    port = 0
    short_udp = False
    if l4 == 17 and not frag and l3 >= 20 and l3 + 4 <= len(ip):
        port = int.from_bytes(ip[l3 + 2 : l3 + 4], "big")
        short_udp = l3 + 8 > dgram
    entry = bfirs.get((dst, port)) if port else None
    root = trees.roots.get((dst, port)) if port and trees is not None and entry is None else None
    if root is not None and trees is not None:
        if bad or short_udp:
            c["drop_malformed"] += 1
        elif root not in trees.segments:
            c["drop_tree_segment"] += 1
        else:
            c["tree_push"] += 1
            copies = trees.replicas(root, 64, ip)
            out.extend(copies)
            c["tree_copies"] += len(copies)
        return c, out
    if entry is None:
        c["pass"] += 1
        return c, out
    if bad or short_udp:
        c["drop_malformed"] += 1
        return c, out
    c["bfir_push"] += 1
    bsl, sets = entry
    nbytes = {1: 8, 2: 16, 3: 32}[bsl]
    any_local = False
    for bid, bits in sets.items():
        if bid not in bifts:
            c["drop_bift_miss"] += 1
            continue
        local, nbrs = bifts[bid]
        rem = bits & ~local
        any_local |= bool(bits & local)
        for p, (fbm, smac, dmac) in nbrs.items():
            if rem & fbm:
                word = (bid << 12 | 1 << 8 | 64).to_bytes(4, "big")
                hdr = bytes([0x50, bsl << 4, 0, 0, (dscp >> 2) & 0xF, (dscp & 3) << 6 | proto]) + bfir_id.to_bytes(
                    2, "big"
                )
                out.append(
                    (p, bier_norm(dmac + smac + b"\xab\x37" + word + hdr + (rem & fbm).to_bytes(nbytes, "big") + ip))
                )
                c["copies"] += 1
                rem &= ~fbm
        if rem:
            c["drop_no_neighbor"] += 1
    if any_local:
        c["local"] += 1
    return c, out


def bier_norm(frame: bytes) -> bytes:
    """A BIER frame with its entropy zeroed (each plane picks its own, RFC 8296 s2.1.2)."""
    if len(frame) > 22 and frame[12:14] == b"\xab\x37":
        return frame[:19] + bytes([frame[19] & 0xF0, 0, 0]) + frame[22:]
    return frame


def first_difference(got: dict[int, list[bytes]], wanted: dict[int, list[bytes]]) -> str:
    """The first port whose copies differ from the model's: one copy it got that the model has not, and one
    the model wants that it did not get (hex)."""
    for p in sorted(set(got) | set(wanted)):
        have, want = sorted(got.get(p, [])), sorted(wanted.get(p, []))
        if have != want:
            extra = next((c.hex() for c in have if c not in want), "-")
            missing = next((c.hex() for c in want if c not in have), "-")
            return f"port {p}: got {extra}, wanted {missing}"
    return "the copies agree"


def fuzz_bier(n_frames: int, seed: int, batch: int = 256, progress: bool = True) -> dict[str, Any]:
    """n_frames random and mutated BIER and BFIR frames into the TC program (and its XDP fast path, taken from
    a fan-out of 2) of a node in a namespace, in batches closed by a marker frame: per batch, the copies on
    every port and the counters must be exactly what bier_model says for the batch's frames."""
    import ipaddress
    import select

    from scapy.layers.l2 import Ether

    from tests.bier_rig import tc_bier_rig
    from tests.vectors import bier as bv

    rng = random.Random(seed)
    violations: list[str] = []
    outcomes: Counter[str] = Counter()
    with tc_bier_rig(f"fz{os.getpid() % 1000}", BPFFS, min_fanout=2) as (node, taps, _):
        mac = {p: bytes.fromhex(bv.NBR[p][0].replace(":", "")) for p in (2, 3)}
        dmac = {p: bytes.fromhex(bv.NBR[p][1].replace(":", "")) for p in (2, 3)}
        bifts: Bifts = {
            bv.BID: (bv.mask((bv.OWN,)), {p: (bv.mask(bv.NBR[p][2]), mac[p], dmac[p]) for p in (2, 3)}),
            bv.BID1: (0, {2: (bv.mask((1,)), mac[2], dmac[2])}),
        }
        bfirs: Bfirs = {
            (ipaddress.ip_address(dst).packed, port): (bv.BSL, sets) for dst, port, sets in bv.bfir_entries()
        }
        trees = Trees(
            {sid: (reps, leaf) for sid, reps, leaf in bv.tree_segments()},
            bv.tree_nodes(),
            {(ipaddress.ip_address(dst).packed, port): sid for dst, port, sid in bv.tree_roots()},
            {p: (mac[p], dmac[p]) for p in (2, 3)},
        )
        seeds = [bytes(v.packet) for v in [*bv.vectors(), *bv.tree_vectors()]]
        seeds += [bytes(Ether(src="02:b1:00:00:00:99", dst=bv.NODE_MAC) / f()) for f in (bv.tree_inner, bv.tree_inner6)]
        for _ in range(100):
            ids = rng.sample([1, 2, 3, 4, 5, 6, 7, 50], rng.randint(0, 5))
            seeds.append(bytes(bv.frame(ids=tuple(ids), ttl=rng.choice([0, 1, 2, 64, 255]))))
            seeds.append(bytes(bv.frame(ids=(1,), bid=bv.BID1)))
        seeds += [
            bytes(Ether(src="02:b1:00:00:00:99", dst=bv.NODE_MAC) / f())
            for f in (bv.opts_inner, bv.inner6, bv.own_inner, bv.two_sets_inner)
        ]
        next_frame = mutator(rng, seeds)
        marker = bytes(bv.frame(ids=(1, 2)) / b"--batch-end--")
        m_counts, m_out = bier_model(marker, bifts, bfirs, bv.BFIR_ID, trees)
        t0 = time.monotonic()
        sent = 0
        while sent < n_frames:
            frames = [next_frame() for _ in range(min(batch, n_frames - sent))]
            want_c: Counter[str] = Counter(m_counts)
            want_out: dict[int, list[bytes]] = {}
            for f in frames:
                c, out = bier_model(f, bifts, bfirs, bv.BFIR_ID, trees)
                want_c += c
                drops = [k for k in c if k.startswith("drop")]
                kinds = ("copies", "tree_copies", "tree_unicast", "local", "pass")
                outcomes[drops[0] if drops else next((k for k in kinds if c[k]), "not ip")] += 1
                for p, b in out:
                    want_out.setdefault(p, []).append(b)
            before = node.counters()
            for f in frames + [marker]:
                taps[0].send(f)
            got: dict[int, list[bytes]] = {}
            for p in (2, 3):  # read until the marker's copy: the port's earlier copies came before it
                marker_copy = dict(m_out)[p]
                while select.select([taps[p]], [], [], 2.0)[0]:
                    data, addr = taps[p].recvfrom(65535)
                    if addr[2] == 4:  # PACKET_OUTGOING
                        continue
                    if bier_norm(data) == marker_copy:
                        break
                    got.setdefault(p, []).append(bier_norm(data))
            for _ in range(200):  # counters settle once every frame has been handled (local deliveries too)
                after = node.counters()
                moved = Counter({k: after[k] - before[k] for k in after if after[k] != before[k]})
                moved.pop("fast", None)
                if moved == want_c:
                    break
                time.sleep(0.005)
            wanted = {p: sorted(v) for p, v in want_out.items()}
            if {p: sorted(v) for p, v in got.items()} != wanted or moved != want_c:
                extra = {k: moved[k] - want_c[k] for k in set(moved) | set(want_c) if moved[k] != want_c[k]}
                have = {p: len(v) for p, v in got.items()}
                need = {p: len(v) for p, v in wanted.items()}
                violations.append(
                    f"batch at frame {sent}: counters off by {extra}; copies {have} vs {need}; "
                    f"{first_difference(got, wanted)}"
                )
            sent += len(frames)
            if progress and sent % 100_000 < batch:
                print(f"  BIER: {sent:,} frames, {len(violations)} violation(s)", flush=True)
        seconds = time.monotonic() - t0
    return {
        "frames": n_frames,
        "violations": len(violations),
        "examples": violations[:10],
        "frames_per_s": round(n_frames / seconds),
        "outcomes": dict(outcomes.most_common()),
    }


if __name__ == "__main__":
    sys.exit(main())
