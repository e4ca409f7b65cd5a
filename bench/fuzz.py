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

    sudo .venv/bin/python bench/fuzz.py [--quick] [--frames N] [--seed S]

writes bench/results/fuzz.json: frames, violations (must be 0), frames per second, outcomes by verdict.
BIER is not fuzzed here yet (see the README).
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import host, need_root, write  # noqa: E402

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
    return out


# ---- the run -------------------------------------------------------------------------------------------------
def fuzz_steering(n_frames: int, seed: int, progress: bool = True) -> dict[str, Any]:
    from dinet.targets.base import SteerSizes
    from dinet.targets.bpfsys import XDP_DROP, XDP_PASS, XDP_TX, test_run
    from dinet.targets.xdp import SteeringNode
    from vectors import steering as sv

    rng = random.Random(seed)
    node = SteeringNode("fuzz", SteerSizes(16, 16, 251, 65536), bpffs_root=BPFFS)
    violations: list[str] = []
    outcomes: Counter[str] = Counter()
    try:
        sv.install_scenario(node)

        def raw(a: Any) -> bytes:
            return ipaddress.ip_address(str(a)).packed

        services = {
            (raw(k.vip), k.proto_number, k.port): {raw(i.endpoint) for i in insts} for k, insts in sv.SERVICES.items()
        }
        vips = {raw(k.vip) for k in sv.SERVICES}
        src4, src6 = raw(sv.SRC4), raw(sv.SRC6)
        next_frame = mutator(rng, seeds_for(sv, sv.placement(node), rng))
        placed: dict[tuple, bytes] = {}
        before = node.verdicts()
        t0 = time.monotonic()
        for i in range(n_frames):
            frame = next_frame()
            want = model(frame, services, vips)
            res = test_run(node.prog_fd, frame)
            after = node.verdicts()
            moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
            before = after
            outcomes[want[0] if want[0] == "steer" else want[1]] += 1

            def bad(what: str, frame: bytes = frame) -> None:
                if len(violations) < 50:
                    violations.append(f"{what}: {frame.hex()}")
                else:
                    violations.append("")

            if want[0] == "steer":
                _, dgram, flow, eps = want
                if res.action != XDP_TX or moved:
                    bad(f"expected a steered frame, got action {res.action_name}, counters {moved}")
                    continue
                why = outer_ok(res.data, frame, dgram, eps, src4, src6)
                if why:
                    bad(why)
                    continue
                dst = res.data[30:34] if res.data[12:14] == b"\x08\x00" else res.data[38:54]
                if placed.setdefault(flow, dst) != dst:
                    bad("a flow moved to another instance")
            else:
                verdict, reason = want
                action = XDP_DROP if verdict == "drop" else XDP_PASS
                if res.action != action or moved != {reason: 1}:
                    bad(f"expected {verdict} {reason}, got action {res.action_name}, counters {moved}")
                elif verdict == "pass" and res.data != frame:
                    bad("a passed frame was changed")
            if progress and i and i % 100_000 == 0:
                print(f"  {i:,} frames, {len([v for v in violations])} violation(s)", flush=True)
        seconds = time.monotonic() - t0
        moved_flows = set_changes(node, rng, sv)
        violations += [f"set changes: {m}" for m in moved_flows]
    finally:
        node.destroy()
        if BPFFS.exists():
            from dinet.targets.bcc_program import remove_pinned_tree

            remove_pinned_tree(BPFFS)
    return {
        "frames": n_frames,
        "violations": len(violations),
        "examples": [v for v in violations if v][:10],
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
    print(f"fuzz: {n:,} frames through ebpf/steer.bpf.c (seed {a.seed})", flush=True)
    steering = fuzz_steering(n, a.seed)
    print(
        f"  steering: {steering['frames']:,} frames, {steering['violations']} violation(s), "
        f"{steering['frames_per_s']:,} frames/s; outcomes {steering['outcomes']}"
    )
    for ex in steering["examples"]:
        print(f"    {ex}")
    res = {"host": host(), "seed": a.seed, "steering": steering, "frames": n, "violations": steering["violations"]}
    write(res, a.out)
    return 0 if steering["violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
