"""Differential test of the two steering data planes: the same random frames (valid flows to every service
of the shared scenario, with IPv4 options, IPv6 extension headers, unknown ports, other addresses, and, with
--mutate, fuzzed ones) through ebpf/steer.bpf.c (BPF_PROG_TEST_RUN) and through p4/dinet.p4 on BMv2
(simple_switch_grpc, programmed over P4Runtime with the same tables). Both must give the same outcome: the
same frame out (steered to the same instance, byte for byte), or the same frame passed, or a drop, with the
same verdict counter. A difference is a bug in one of them.

    sudo .venv/bin/python -m bench.differential [--frames 10000] [--mutate] [--seed S]

Then the same for BIER: random valid BIER frames (bitstrings, TTLs, both sets) and BFIR frames (model-sync
UDP to every entry, options, extension headers) into the eBPF BIER node and the BMv2 switch of the shared
vectors: the same copies on every port (entropy aside) and the same counters.

Writes bench/results/differential.json: frames, differences (must be 0), examples, frames per second.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import host, need_root, write


def unpin(bpffs: Path) -> None:
    if bpffs.exists():
        from dinet.targets.bcc_program import remove_pinned_tree

        remove_pinned_tree(bpffs)


def summary(n: int, differences: list[str], seconds: float, outcomes: dict[str, int], mutate: bool) -> dict[str, Any]:
    return {
        "frames": n,
        "differences": len(differences),
        "examples": differences[:10],
        "frames_per_s": round(n / seconds),
        "outcomes": outcomes,
        "mutated": mutate,
    }


def xdp_outcome(node: Any, frame: bytes) -> tuple[str, bytes, dict[str, int]]:
    from dinet.targets.bpfsys import XDP_DROP, XDP_PASS, XDP_TX, test_run

    before = node.verdicts()
    res = test_run(node.prog_fd, frame)
    after = node.verdicts()
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    kind = {XDP_TX: "forward", XDP_PASS: "pass", XDP_DROP: "drop"}.get(res.action, res.action_name)
    return kind, res.data if kind != "drop" else b"", moved


def bmv2_outcome(rig: Any, frame: bytes, probes: tuple[bytes, bytes, bytes]) -> tuple[str, bytes, dict[str, int]]:
    """Injects the frame, then two probes: one the switch passes to port 1 (ARP) and one it steers out of
    port 0 (a fixed flow; `probes[2]` is what comes out for it). Each port's frames leave in order, so what
    a port sends before its probe is the frame's."""
    arp, steered, steered_out = probes
    before = rig.node.verdicts()
    rig.inject(0, frame)
    rig.inject(0, arp)
    rig.inject(0, steered)
    passed, forwarded = [], []
    while (f := rig.read(1, timeout=5)) is not None and f != arp:
        passed.append(f)
    while (f := rig.read(0, timeout=5)) is not None and f != steered_out:
        forwarded.append(f)
    after = rig.node.verdicts()
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    moved["pass_not_service"] = moved.get("pass_not_service", 0) - 1  # the ARP probe's own
    # a new flow BMv2's two-way table could not remember (the rig's table is test-sized: 4,096 entries) is
    # counted there and steered all the same; the eBPF LRU has no such event, so it is not compared
    moved.pop("affinity_collision", None)
    moved = {k: v for k, v in moved.items() if v}
    if forwarded:
        return "forward", forwarded[0], moved
    if passed:
        return "pass", passed[0], moved
    return "drop", b"", moved


def run(n: int, seed: int, mutate: bool, prefix: str, progress: bool = True) -> dict[str, Any]:
    from scapy.layers.l2 import ARP, Ether

    from bench import fuzz
    from dinet.targets.xdp import SteeringNode
    from tests.bmv2_harness import bmv2_rig
    from tests.vectors import steering as sv

    rng = random.Random(seed)
    arp = bytes(Ether(src="02:99:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="192.0.2.250"))
    steered = bytes(sv.client4(sport=1, src="10.255.255.254"))
    bpffs = Path(f"/sys/fs/bpf/dinet-bench-diff-{prefix}")
    from tests.bmv2_harness import SIZES

    node = SteeringNode("diff", SIZES, bpffs_root=bpffs)
    differences: list[str] = []
    outcomes: dict[str, int] = {}
    try:
        sv.install_scenario(node)
        with bmv2_rig(prefix) as rig:
            sv.install_scenario(rig.node)
            probes = (arp, steered, xdp_outcome(node, steered)[1])  # both planes steer it alike (vectors)
            seeds = fuzz.seeds_for(sv, sv.placement(node), rng)
            mutated = fuzz.mutator(rng, seeds)
            t0 = time.monotonic()
            for i in range(n):
                frame = mutated() if mutate and rng.random() < 0.5 else rng.choice(seeds)
                frame = frame.ljust(60, b"\0")  # what a NIC delivers: at least the Ethernet minimum
                x = xdp_outcome(node, frame)
                b = bmv2_outcome(rig, frame, probes)
                outcomes[x[0]] = outcomes.get(x[0], 0) + 1
                if x != b:
                    differences.append(f"xdp {x[0]} {x[2]} vs bmv2 {b[0]} {b[2]}: {frame.hex()}")
                if progress and i and i % 1000 == 0:
                    print(f"  {i:,} frames, {len(differences)} difference(s)", flush=True)
            seconds = time.monotonic() - t0
    finally:
        node.destroy()
        unpin(bpffs)
    return summary(n, differences, seconds, outcomes, mutate)


def bier_frames(rng: random.Random) -> list[bytes]:
    """Valid BIER frames (random bitstrings over the node's BFERs and some nobody serves, TTLs, both sets)
    and BFIR frames (model-sync UDP to every entry, with IPv4 options and IPv6 extension headers)."""
    from scapy.layers.l2 import Ether

    from tests.vectors import bier as bv

    out = []
    for _ in range(200):
        ids = tuple(rng.sample([1, 2, 3, 4, 5, 50], rng.randint(1, 4)))
        out.append(bytes(bv.frame(ids=ids, ttl=rng.choice([1, 2, 17, 64]), entropy=rng.randrange(1 << 20))))
        out.append(bytes(bv.frame(ids=(1,), bid=bv.BID1, ttl=rng.randint(2, 64))))
    for f in (bv.opts_inner, bv.inner6, bv.own_inner, bv.two_sets_inner, lambda: bv.INNER):
        out.append(bytes(Ether(src="02:b1:00:00:00:99", dst=bv.NODE_MAC) / f()))
    return out


def run_bier(n: int, seed: int, mutate: bool, prefix: str, progress: bool = True) -> dict[str, Any]:
    """The same frames into the eBPF BIER node and the BMv2 switch of the shared vectors: per frame, the
    copies on each neighbour port (entropy aside: each plane picks its own), what reached the host (counted
    on eBPF as local deliveries and passes), and every counter but the eBPF fast path's must agree."""
    import select

    from scapy.layers.l2 import ARP, Ether

    from bench import fuzz
    from tests.bier_rig import program_bmv2, tc_bier_rig
    from tests.bmv2_harness import bmv2_rig
    from tests.vectors import bier as bv

    rng = random.Random(seed)
    arp = bytes(Ether(src="02:99:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="192.0.2.250"))
    marker = bytes(bv.frame(ids=(1, 2)) / b"--frame-end--")
    bpffs = Path(f"/sys/fs/bpf/dinet-bench-diff-{prefix}b")
    differences: list[str] = []
    outcomes: dict[str, int] = {}

    def copies_until_marker(read: Any) -> dict[int, list[bytes]]:
        got: dict[int, list[bytes]] = {}
        for port in (2, 3):
            while (f := read(port)) is not None:
                if f.endswith(b"--frame-end--"):
                    break
                got.setdefault(port, []).append(fuzz.bier_norm(f))
        return {p: sorted(v) for p, v in got.items()}

    def moved(before: dict[str, int], after: dict[str, int], less: dict[str, int]) -> dict[str, int]:
        d = {k: after[k] - before[k] - less.get(k, 0) for k in after if k != "fast"}
        return {k: v for k, v in d.items() if v}

    try:
        with tc_bier_rig(f"{prefix}t", bpffs, min_fanout=2) as (node, taps, _), bmv2_rig(f"{prefix}p") as rig:
            program_bmv2(rig.node)

            def tc_read(port: int) -> bytes | None:
                while select.select([taps[port]], [], [], 2.0)[0]:
                    data, addr = taps[port].recvfrom(65535)
                    if addr[2] != 4:  # not our own transmission
                        return data
                return None

            def tc(frame: bytes) -> tuple[dict[int, list[bytes]], dict[str, int]]:
                before = node.counters()
                taps[0].send(frame)
                taps[0].send(marker)
                copies = copies_until_marker(tc_read)
                return copies, moved(before, node.counters(), tc_marker)

            def p4(frame: bytes, hint: int = 0) -> tuple[dict[int, list[bytes]], dict[str, int]]:
                """hint: the copies the other plane sent; waited for (a second) before a difference is called."""
                before = rig.node.bier_counters()
                rig.inject(0, frame)
                rig.inject(0, marker)
                rig.inject(0, arp)
                copies = copies_until_marker(lambda port: rig.read(port, timeout=5))
                while (f := rig.read(1, timeout=5)) is not None and f != arp:
                    pass  # what reached the host: counted (local, pass) on both planes
                # a BFIR's later sets come round through recirculation, possibly after the marker and the probe:
                # wait for copies still on their way (at most a second), then read the counters
                deadline = time.monotonic() + 1
                while sum(map(len, copies.values())) < hint and time.monotonic() < deadline:
                    for port in (2, 3):
                        if (f := rig.read(port, timeout=0.05)) is not None:
                            copies.setdefault(port, []).append(fuzz.bier_norm(f))
                            copies[port].sort()
                return copies, moved(before, rig.node.bier_counters(), p4_marker)

            # the marker's own counters, from the marker alone
            before = node.counters()
            taps[0].send(marker)
            copies_until_marker(tc_read)
            tc_marker = moved(before, node.counters(), {})
            before = rig.node.bier_counters()
            rig.inject(0, marker)
            copies_until_marker(lambda port: rig.read(port, timeout=5))
            p4_marker = moved(before, rig.node.bier_counters(), {})
            seeds = bier_frames(rng)
            mutated = fuzz.mutator(rng, seeds)
            t0 = time.monotonic()
            for i in range(n):
                frame = mutated() if mutate and rng.random() < 0.5 else rng.choice(seeds)
                frame = frame.ljust(60, b"\0")
                x = tc(frame)
                b = p4(frame, sum(map(len, x[0].values())))
                drops = [k for k in x[1] if k.startswith("drop")]
                kind = drops[0] if drops else next((k for k in ("copies", "local", "pass") if x[1].get(k)), "nothing")
                outcomes[kind] = outcomes.get(kind, 0) + 1
                if x != b:
                    differences.append(f"tc {x[1]} {len(x[0])} port(s) vs bmv2 {b[1]} {len(b[0])}: {frame.hex()}")
                if progress and i and i % 1000 == 0:
                    print(f"  BIER: {i:,} frames, {len(differences)} difference(s)", flush=True)
            seconds = time.monotonic() - t0
    finally:
        unpin(bpffs)
    return summary(n, differences, seconds, outcomes, mutate)


def show(name: str, res: dict[str, Any]) -> None:
    print(f"{name}: {res['frames']:,} frames, {res['differences']} difference(s), {res['frames_per_s']} frames/s; "
          f"{res['outcomes']}")  # fmt: skip
    for ex in res["examples"]:
        print(f"  {ex}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--mutate", action="store_true", help="half the frames fuzzed (bench/fuzz.py's mutations)")
    ap.add_argument("--seed", type=int, default=8201)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "differential.json")
    a = ap.parse_args()
    if not need_root():
        return 1
    import os

    steering = run(a.frames, a.seed, a.mutate, f"df{os.getpid() % 1000}")
    show("steering", steering)
    bier = run_bier(a.frames, a.seed, a.mutate, f"db{os.getpid() % 1000}")
    show("BIER", bier)
    total = steering["differences"] + bier["differences"]
    write({"host": host(), "seed": a.seed, "steering": steering, "bier": bier, "differences": total}, a.out)
    return 0 if total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
