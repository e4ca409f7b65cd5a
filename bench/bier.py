"""Benchmark of BIER replication on the eBPF data plane. Prints tables and writes bench/results/bier.json.

0. Transit replication with live frames from the same in-kernel generator: bier.bpf.c's XDP fast path
   (devmap broadcast, per-port program) against its TC path alone (a clone per copy): input frames per
   second fully replicated, per fan-out.
1. Cost of replication: BPF_PROG_TEST_RUN of the BFR path (ebpf/bench_bier.bpf.c around bier.bpf.c's bfr())
   for fan-out 1, 2, 4 and 8, beside a plain forward (one copy with new MAC addresses, no BIER processing)
   measured in the same run. The copies really leave (bpf_clone_redirect to veths whose peers drop them in
   XDP), so each figure includes the transmit of its copies.
2. The mission's bandwidth case: a 100 MB stream from the model repository (the source behind the BFIR of
   a three-level tree of 15 BFRs and 8 BFERs) to N = 2, 4, 8 BFERs, once by BIER and once as N unicast
   copies from the source (each copy a one-bit BIER packet, so both take the same shortest paths with the
   same header), in the same run. Bytes are the interfaces' own tx counters: the source's uplink, and the
   sum over every link of the domain.

    sudo .venv/bin/python -m bench.bier [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from dinet.lab.bier_domain import SYNC_ADDR, BierDomain, tree
from dinet.lab.namespaces import Topology
from dinet.packets import BIER, BIFTId, bift_id, bitstring
from dinet.targets import netns
from dinet.targets.bcc_program import BccProgram, remove_pinned_tree
from dinet.targets.bpfsys import test_run
from dinet.targets.tc import BfirMatch, BierNode, BiftNeighbor

BPFFS = Path(f"/sys/fs/bpf/dinet-bench-bier-{os.getpid()}")
FANOUTS = (1, 2, 4, 8)


def replication_cost(repeat: int, trials: int) -> dict:
    t = Topology(f"bb{os.getpid() % 10000}")
    node = sink = None
    try:
        t.add_ns("r")
        t.add_ns("s")
        for i in range(8):
            t.link("r", f"p{i}", "s", f"q{i}")
        sink = BccProgram("xdp_sink.bpf.c", BPFFS / "sink" / "sink")
        for i in range(8):
            sink.attach("xdp_sink", f"q{i}", t.ns("s"))
        node = BierNode("bench", bpffs_root=BPFFS, bench=True)
        ns = t.ns("r")
        nbrs = [
            BiftNeighbor(
                netns.ifindex(f"p{i}", ns), netns.mac_of(f"p{i}", ns), netns.mac_of(f"q{i}", t.ns("s")), 1 << i
            )
            for i in range(8)
        ]
        node.set_bift(bift_id(1, 0), 0, nbrs, ns)
        fwd = node.prog.table("bench_fwd")
        fwd[fwd.Key(0)] = fwd.Leaf(nbrs[0].ifindex)
        bfr_fd = int(node.prog.load("tc_bfr_bench", "sched_cls").fd)
        fwd_fd = int(node.prog.load("tc_fwd_bench", "sched_cls").fd)
        inner = IP(src="10.50.0.2", dst=str(SYNC_ADDR)) / UDP(dport=9000) / (b"m" * 64)

        def frame(k: int) -> bytes:
            return bytes(
                Ether(dst="02:00:00:00:00:01")
                / BIFTId(bift_id=bift_id(1, 0), ttl=64)
                / BIER(bsl=1, proto=4, bitstring=bitstring(range(1, k + 1), 1))
                / inner
            )

        def ns_per_packet(fd: int, data: bytes) -> float:
            with netns.entered(ns):
                return float(statistics.median(test_run(fd, data, repeat).duration_ns for _ in range(trials)))

        before = node.counters()["copies"]
        out = {"forward_ns": ns_per_packet(fwd_fd, frame(1))}
        out["replicate_ns"] = {str(k): ns_per_packet(bfr_fd, frame(k)) for k in FANOUTS}
        copies = node.counters()["copies"] - before
        want = repeat * trials * (1 + sum(FANOUTS))
        out["copies_sent"] = copies
        out["copies_expected"] = want
        out["per_extra_copy_ns"] = (out["replicate_ns"]["8"] - out["replicate_ns"]["1"]) / 7
        return out
    finally:
        t.close()
        for p in (node.prog if node else None, sink):
            if p:
                p.unpin()
                p.close()


def xdp_vs_tc(packets: int) -> dict:
    """Replication with live frames: the same generator (xdp_gen, BPF_PROG_RUN live mode), the same node
    with 8 ports whose peers count and drop in XDP; the node's BIER program with its XDP fast path (transit
    frames broadcast to the ports, a per-port program keeping its copy) or in TC alone (a clone per copy).
    Input frames per second that came out fully replicated, per fan-out."""
    import ctypes

    from dinet.targets.bcc_program import BccProgram
    from dinet.targets.bpfsys import run_live
    from dinet.targets.tc import BierNode, BiftNeighbor

    t = Topology(f"bx{os.getpid() % 10000}")
    progs: list = []
    node = None
    out: dict = {"xdp_pps": {}, "tc_pps": {}, "dinet_pps": {}, "packets": packets}
    try:
        for n in ("g", "n", "s"):
            t.add_ns(n)
        t.link("g", "g0", "n", "i0")
        for k in range(8):
            t.link("n", f"p{k}", "s", f"q{k}")
        sink = BccProgram("xdp_sink.bpf.c", BPFFS / "xsink" / "sink")
        progs.append(sink)
        for k in range(8):
            sink.attach("xdp_sink", f"q{k}", t.ns("s"))
        count = sink.table("sink_count")
        gen = BccProgram("xdp_gen.bpf.c", BPFFS / "xgen" / "gen")
        progs.append(gen)
        gen_fd = int(gen.load("xdp_gen").fd)
        ns = t.ns("n")
        g0 = netns.ifindex("g0", t.ns("g"))
        dst = netns.mac_of("i0", ns)
        t.sh("n", "ethtool", "-K", "i0", "gro", "on")  # the TC-only run: veth takes XDP frames only with GRO on
        node = BierNode("xtc", bpffs_root=BPFFS)
        nbrs = [
            BiftNeighbor(
                netns.ifindex(f"p{k}", ns), netns.mac_of(f"p{k}", ns), netns.mac_of(f"q{k}", t.ns("s")), 1 << k
            )
            for k in range(8)
        ]

        def template(k: int) -> bytes:
            inner = IP(src="10.50.0.2", dst=str(SYNC_ADDR)) / UDP(sport=1024, dport=9000, chksum=0) / (b"m" * 18)
            return bytes(
                Ether(dst=dst)
                / BIFTId(bift_id=bift_id(1, 0), ttl=64)
                / BIER(bsl=1, proto=4, bitstring=bitstring(range(1, k + 1), 1))
                / inner
            )

        def blast(k: int) -> float:
            frame = template(k)
            tt = gen.table("gen_template")
            leaf = tt.Leaf()
            ctypes.memmove(ctypes.addressof(leaf.bytes), frame, 64)
            leaf.flows, leaf.sport_offset = 1024, 14 + 12 + 8 + 20
            tt[tt.Key(0)] = leaf
            before = int(sum(count.getvalue(count.Key(0))))
            t0 = time.monotonic()
            with netns.entered(t.ns("g")):
                run_live(gen_fd, frame, g0, packets)
            dt = time.monotonic() - t0
            return (int(sum(count.getvalue(count.Key(0)))) - before) / k / dt

        node.attach("i0", ns)  # TC and the XDP fast path
        node.set_bift(bift_id(1, 0), 0, nbrs)
        node.set_xdp_min_fanout(1)  # XDP for every transit frame
        for k in FANOUTS:
            out["xdp_pps"][str(k)] = blast(k)
        node.set_xdp_min_fanout(0)  # the default: XDP from BIER_XDP_MIN_FANOUT copies up
        for k in FANOUTS:
            out["dinet_pps"][str(k)] = blast(k)
        node.prog.detach("i0", ns)  # TC alone
        for k in FANOUTS:
            out["tc_pps"][str(k)] = blast(k)
        return out
    finally:
        t.close()
        if node:
            node.destroy()
        for p in progs:
            p.unpin()
            p.close()


def link_bytes(d: BierDomain) -> dict[str, int]:
    """tx bytes of every interface of every namespace of the domain: 'ns/ifname' -> bytes."""
    out = {}
    for ns in [d.net.ns(n) for n in d.topo.bfr_ids] + [d.net.ns("src")]:
        for link in json.loads(netns.run(["ip", "-s", "-j", "link", "show"], ns).stdout):
            if link["ifname"] != "lo":
                out[f"{ns}/{link['ifname']}"] = int(link["stats64"]["tx"]["bytes"])
    return out


def stream(d: BierDomain, total: int, port: int, payload: int = 1400) -> int:
    """Sends `total` bytes of UDP payload to the model-sync address; returns datagrams sent. A small send
    buffer paces the sender to what the domain forwards (no queue in the path overflows)."""
    n = total // payload
    data = b"w" * payload
    with netns.entered(d.net.ns("src")), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        for _ in range(n):
            s.sendto(data, (str(SYNC_ADDR), port))
    return n


def bandwidth(total: int) -> dict:
    out: dict = {"stream_bytes": total, "by_n": {}}
    with BierDomain(f"bw{os.getpid() % 1000}", tree(), 1, bfir="r", bpffs_root=BPFFS) as d:
        uplink = f"{d.net.ns('src')}/eth0"
        r = d.nodes["r"]
        for n in (2, 4, 8):
            targets = [f"e{i}" for i in range(1, n + 1)]
            # BIER: one stream, one entry naming the N BFERs
            d.install_bfir(set(targets))
            b0 = link_bytes(d)
            sent = stream(d, total, 9000)
            b1 = link_bytes(d)
            bier = {k: b1[k] - b0[k] for k in b1}
            # unicast: N streams from the source, port 9000+i carrying only e_i's bit
            for i, name in enumerate(targets, 1):
                bfr = d.topo.bfr_ids[name]
                assert bfr is not None
                r.set_bfir(BfirMatch(SYNC_ADDR, udp_port=9000 + i), 100, 1, {bift_id(1, 0): 1 << (bfr - 1)})
            u0 = link_bytes(d)
            for i in range(1, n + 1):
                stream(d, total, 9000 + i)
            u1 = link_bytes(d)
            uni = {k: u1[k] - u0[k] for k in u1}
            for i in range(1, n + 1):
                r.remove_bfir(BfirMatch(SYNC_ADDR, udp_port=9000 + i))
            out["by_n"][str(n)] = {
                "datagrams": sent,
                "uplink_bytes_bier": bier[uplink],
                "uplink_bytes_unicast": uni[uplink],
                "domain_bytes_bier": sum(v for k, v in bier.items() if k != uplink),
                "domain_bytes_unicast": sum(v for k, v in uni.items() if k != uplink),
                "busiest_link_bier": max(v for k, v in bier.items() if k != uplink),
                "busiest_link_unicast": max(v for k, v in uni.items() if k != uplink),
            }
        out["bier_counters_at_bfir"] = r.counters()
    eight = out["by_n"]["8"]
    out["uplink_bytes_bier"] = eight["uplink_bytes_bier"]
    out["uplink_bytes_unicast"] = eight["uplink_bytes_unicast"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100,000 repetitions x 3 for the costs (under a minute)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bier.json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    res: dict = {"host": {"kernel": platform.release(), "cpus": os.cpu_count()}}
    try:
        res.update(replication_cost(100_000 if a.quick else 1_000_000, 3 if a.quick else 5))
        res["live"] = xdp_vs_tc(500_000 if a.quick else 2_000_000)
        res.update(bandwidth(100 * 10**6))
    finally:
        remove_pinned_tree(BPFFS)
    res["seconds"] = round(time.monotonic() - t0, 1)
    print("\nBFR cost per packet, BPF_PROG_TEST_RUN (ns; copies really sent)")
    print(f"  {'plain forward (1 copy)':<24}{res['forward_ns']:>8.0f}")
    for k in FANOUTS:
        v = res["replicate_ns"][str(k)]
        print(f"  {'BIER fan-out ' + str(k):<24}{v:>8.0f}   {v / res['forward_ns']:.2f}x forward")
    print(f"  each extra copy: {res['per_extra_copy_ns']:.0f} ns")
    live = res["live"]
    print(f"\nreplication with live frames, {live['packets']:,} frames per fan-out (input frames/s fully replicated)")
    print(f"  {'fan-out':>7} {'XDP always':>11} {'TC alone':>10} {'dinet (XDP from 3)':>19}")
    for k in FANOUTS:
        print(
            f"  {k:>7} {live['xdp_pps'][str(k)]:>11,.0f} {live['tc_pps'][str(k)]:>10,.0f}"
            f" {live['dinet_pps'][str(k)]:>19,.0f}"
        )
    print(f"\n{res['stream_bytes'] / 1e6:.0f} MB stream: bytes on the source's uplink and on all links of the domain")
    print(
        f"  {'N':>2}  {'uplink BIER':>13} {'uplink unicast':>15} {'ratio':>6}"
        f"  {'domain BIER':>13} {'domain unicast':>15}"
    )
    for n, v in res["by_n"].items():
        print(
            f"  {n:>2}  {v['uplink_bytes_bier']:>13,} {v['uplink_bytes_unicast']:>15,} "
            f"{v['uplink_bytes_unicast'] / v['uplink_bytes_bier']:>6.2f}  {v['domain_bytes_bier']:>13,} "
            f"{v['domain_bytes_unicast']:>15,}"
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print(f"wrote {a.out} in {res['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
