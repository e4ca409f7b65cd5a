"""Differential test of the two steering data planes: the same random frames (valid flows to every service
of the shared scenario, with IPv4 options, IPv6 extension headers, unknown ports, other addresses, and, with
--mutate, fuzzed ones) through ebpf/steer.bpf.c (BPF_PROG_TEST_RUN) and through p4/dinet.p4 on BMv2
(simple_switch_grpc, programmed over P4Runtime with the same tables). Both must give the same outcome: the
same frame out (steered to the same instance, byte for byte), or the same frame passed, or a drop, with the
same verdict counter. A difference is a bug in one of them.

    sudo .venv/bin/python bench/differential.py [--frames 10000] [--mutate] [--seed S]

Writes bench/results/differential.json: frames, differences (must be 0), examples, frames per second.
BIER frames are compared by the shared vectors only (tests/test_bier_vectors.py), not here yet.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import host, need_root, write  # noqa: E402


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
    moved = {k: v for k, v in moved.items() if v}
    if forwarded:
        return "forward", forwarded[0], moved
    if passed:
        return "pass", passed[0], moved
    return "drop", b"", moved


def run(n: int, seed: int, mutate: bool, prefix: str, progress: bool = True) -> dict[str, Any]:
    import fuzz
    from bmv2_harness import bmv2_rig
    from scapy.layers.l2 import ARP, Ether

    from dinet.targets.xdp import SteeringNode
    from vectors import steering as sv

    rng = random.Random(seed)
    arp = bytes(Ether(src="02:99:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="192.0.2.250"))
    steered = bytes(sv.client4(sport=1, src="10.255.255.254"))
    bpffs = Path(f"/sys/fs/bpf/dinet-bench-diff-{prefix}")
    from bmv2_harness import SIZES

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
        if bpffs.exists():
            from dinet.targets.bcc_program import remove_pinned_tree

            remove_pinned_tree(bpffs)
    return {
        "frames": n,
        "differences": len(differences),
        "examples": differences[:10],
        "frames_per_s": round(n / seconds),
        "outcomes": outcomes,
        "mutated": mutate,
    }


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

    res = run(a.frames, a.seed, a.mutate, f"df{os.getpid() % 1000}")
    print(f"differential: {res['frames']:,} frames, {res['differences']} difference(s), {res['frames_per_s']} frames/s")
    for ex in res["examples"]:
        print(f"  {ex}")
    write({"host": host(), "seed": a.seed, **res}, a.out)
    return 0 if res["differences"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
