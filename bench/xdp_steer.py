"""Benchmark of the XDP steering node. Prints a table and writes bench/results/xdp_steer.json.

1. BPF_PROG_TEST_RUN, 1,000,000 repetitions per run, median of 5 (9 without --quick) runs taken in rounds
   (every case once per round), ns per packet: an empty XDP_PASS program (the floor), an affinity hit, an
   affinity hit of a session-affine service (on its own address: where such a service folds in the VIP
   filter, packets skip the per-CPU flow cache for the shared LRU and a SYN costs a service lookup), a
   new flow, a new flow of a session-affine service (from session ports: one in 8 places a new session,
   the other 7 find theirs in the session table), a new flow and a hit of a two-choices service (two ring
   candidates, a second CRC-32, the lower loaded, an atomic add where it goes; a hit pays nothing for it), and
   pass-through of traffic that is not for a service.
   The hit and new-flow figures come from ebpf/bench_steer.bpf.c, which undoes the encapsulation after
   each repetition (BPF_PROG_TEST_RUN does not reset the buffer): that undo is included, so both figures
   err on the slow side; xdp_undo_probe (push the header room, undo it) measures that undo, and the hit is
   also given without it. Tables are at full size (4,096 services, 256 instances per service, a 4,099-slot
   ring per service, 1,048,576 affinity entries) and the new-flow run fills the affinity table, so the hit
   run looks up a full LRU table.
2. Forwarding through veth in namespaces, generator -> node -> sink, UDP to the service over 1,024 flows:
   packets per second delivered through the XDP steering node, then through the same namespaces steered
   by the kernel (nftables DNAT), in the same run. Two generators: ebpf/xdp_gen.bpf.c run with
   BPF_PROG_RUN in live-frame mode (frames enter the node as XDP frames; the headline figures), and
   trafgen (AF_PACKET: every frame starts as an skb, whose cost both paths then share). The sink counts
   with an XDP program (ebpf/xdp_sink.bpf.c).

    sudo .venv/bin/python -m bench.xdp_steer [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from dinet.errors import InterfaceError
from dinet.lab.namespaces import Topology
from dinet.model import Instance, InstanceLoad, ServiceKey
from dinet.targets import netns
from dinet.targets.base import SteerSizes
from dinet.targets.bcc_program import BccProgram, remove_pinned_tree
from dinet.targets.bpfsys import XDP_PASS, XDP_TX, run_live, test_run
from dinet.targets.xdp import SteeringNode

BPFFS = Path(f"/sys/fs/bpf/dinet-bench-{os.getpid()}")
VIP = "10.99.0.1"
CHAT_VIP = "10.99.0.4"  # the session-affine service's address: another entry of the VIP filter than VIP's
PICK_VIP = "10.99.0.5"  # the two-choices service's address


def median_ns(fd: int, frame: bytes, repeat: int, trials: int, want: int | None = None) -> float:
    out = []
    for _ in range(trials):
        r = test_run(fd, frame, repeat)
        if want is not None and r.action != want:
            raise RuntimeError(f"benchmark frame got action {r.action_name}")
        out.append(r.duration_ns)
    return float(statistics.median(out))


def micro(repeat: int, trials: int, services: int, full_instances: bool) -> dict:
    sizes = SteerSizes()  # the full default sizes
    node = SteeringNode("micro", sizes, bpffs_root=BPFFS, bench=True)
    floor = BccProgram("xdp_pass.bpf.c", BPFFS / "floor" / "pass")
    try:
        node.configure(src4="192.0.2.1", static_next_hop=(0, "02:00:00:00:00:01", "02:00:00:00:00:02"))
        t0 = time.monotonic()
        instances = [
            Instance(i + 1, f"192.0.{2 + i // 250}.{1 + i % 250}", 1 + i % 4) for i in range(sizes.max_instances)
        ]
        bench_svc = ServiceKey.parse(f"{VIP}:80/tcp")
        node.add_service(bench_svc)
        node.set_instances(bench_svc, instances)
        chat = ServiceKey.parse(f"{CHAT_VIP}:8000/tcp")  # session-affine: its flows go through the session rules
        node.add_service(chat, session=True)
        node.set_instances(chat, instances)
        pick = ServiceKey.parse(f"{PICK_VIP}:8100/tcp")  # two choices: two ring candidates, the lower loaded
        node.add_service(pick, two_choices=True)
        node.set_instances(
            pick,
            [replace(i, load=InstanceLoad(10_000 + 37 * n % 5000, 800, n % 3, 1)) for n, i in enumerate(instances)],
        )
        for i in range(3, services):  # the benchmark's two services and 4,094 others: the table full
            svc = ServiceKey(f"10.{100 + i // 250}.{i % 250}.1", 80, "tcp")  # type: ignore[arg-type]
            node.add_service(svc)
            if full_instances:
                node.set_instances(svc, instances)
        install_s = time.monotonic() - t0
        steer_fd = node.prog_fd
        hit_fd = int(node.prog.load("xdp_steer_hit").fd)
        miss_fd = int(node.prog.load("xdp_steer_miss").fd)
        probe_fd = int(node.prog.load("xdp_undo_probe").fd)
        session_fd = int(node.prog.load("xdp_steer_session_miss").fd)
        floor_fd = int(floor.load("xdp_pass").fd)
        svc_frame = bytes(Ether() / IP(src="10.64.0.1", dst=VIP) / TCP(sport=40000, dport=80, flags="A") / (b"x" * 10))
        other = bytes(Ether() / IP(src="10.64.0.1", dst="10.7.7.7") / UDP(sport=40000, dport=53) / (b"x" * 10))
        chat_frame = bytes(
            Ether() / IP(src="10.65.0.1", dst=CHAT_VIP) / TCP(sport=61440, dport=8000, flags="S") / (b"x" * 10)
        )
        chat_ack = bytes(
            Ether() / IP(src="10.65.0.1", dst=CHAT_VIP) / TCP(sport=61440, dport=8000, flags="A") / (b"x" * 10)
        )
        pick_frame = bytes(Ether() / IP(src="10.66.0.1", dst=PICK_VIP) / TCP(sport=40000, dport=8100) / (b"x" * 10))
        # the new-flow run first: it fills the affinity table, which the hit runs then search. Then every case
        # once per round, so that a slow spell of the machine weighs on the floor and the cases alike
        runs: dict[str, list[float]] = {"miss": [median_ns(miss_fd, svc_frame, repeat, 1, XDP_TX)]}
        runs["session"] = [median_ns(session_fd, chat_frame, repeat, 1, XDP_TX)]
        runs["two_choices"] = [median_ns(miss_fd, pick_frame, repeat, 1, XDP_TX)]
        for _ in range(trials):
            for name, fd, frame, want in (
                ("floor", floor_fd, svc_frame, XDP_PASS),
                ("hit", hit_fd, svc_frame, XDP_TX),
                ("session_hit", hit_fd, chat_ack, XDP_TX),
                ("two_choices_hit", hit_fd, pick_frame, XDP_TX),
                ("pass", steer_fd, other, XDP_PASS),
                ("push_undo", probe_fd, svc_frame, XDP_TX),
            ):
                runs.setdefault(name, []).append(median_ns(fd, frame, repeat, 1, want))
        for _ in range(trials - 1):
            runs["miss"].append(median_ns(miss_fd, svc_frame, repeat, 1, XDP_TX))
            runs["session"].append(median_ns(session_fd, chat_frame, repeat, 1, XDP_TX))
            runs["two_choices"].append(median_ns(miss_fd, pick_frame, repeat, 1, XDP_TX))
        res = {f"{k}_ns": float(statistics.median(v)) for k, v in runs.items()}
        res["runs_ns"] = runs
        # the benchmark's own undo of the encapsulation, estimated as half of push + undo above the floor
        res["undo_ns"] = max(0.0, (res["push_undo_ns"] - res["floor_ns"]) / 2)
        res["hit_ns_less_undo"] = res["hit_ns"] - res["undo_ns"]
        mem = node.memory()
        res.update(
            {
                "repeat": repeat,
                "trials": trials,
                "install_s": round(install_s, 2),
                "scale": {
                    "services": len(node._used_ids),
                    "max_services": sizes.max_services,
                    "instances_per_service": sizes.max_instances,
                    "services_with_full_instances": services if full_instances else 1,
                    "ring_size": sizes.ring_size,
                    "affinity_capacity": sizes.affinity_entries,
                    "affinity_entries_after": sum(1 for _ in node.affinity_t.keys()),
                },
                "map_memory_bytes": mem,
                "map_memory_total_mib": round(sum(mem.values()) / 2**20, 1),
            }
        )
        return res
    finally:
        node.destroy()
        floor.unpin()
        floor.close()


def trafgen_conf(dmac: str, smac: str) -> str:
    return (
        "{\n"
        f"  eth(da={dmac}, sa={smac}),\n"
        f"  ipv4(sa=10.0.0.2, da={VIP}, ttl=64),\n"
        "  udp(sp=dinc(1024, 2047, 1), dp=53),\n"
        "  fill(0x41, 18)\n"
        "}\n"
    )


def forwarding(packets: int) -> dict:
    t = Topology(f"db{os.getpid() % 10000}")
    node = sink = gen = None
    conf = None
    try:
        t.add_ns("g")
        t.add_ns("d")
        t.add_ns("s")
        t.link("g", "g0", "d", "i0")
        t.link("d", "i1", "s", "s0", mtu=1600)
        t.addr("g", "g0", "10.0.0.2/24")
        t.addr("d", "i0", "10.0.0.1/24")
        t.addr("d", "i1", "10.1.0.1/24")
        t.addr("s", "s0", "10.1.0.2/24")
        t.forwarding("d")
        # veth has no queue; trafgen through a FIFO (its -q: the qdisc path) waits instead of failing when
        # the receiving side is busy
        t.sh("g", "tc", "qdisc", "replace", "dev", "g0", "root", "pfifo", "limit", "10000")
        t.sh("d", "ping", "-c1", "-W2", "10.1.0.2")
        sink = BccProgram("xdp_sink.bpf.c", BPFFS / "sink" / "sink")
        sink.attach("xdp_sink", "s0", t.ns("s"))
        counter = sink.table("sink_count")

        def delivered() -> int:
            return int(sum(counter.getvalue(counter.Key(0))))

        # the in-kernel generator: frames enter as XDP frames, with no socket or skb on the way in
        gen = BccProgram("xdp_gen.bpf.c", BPFFS / "gen" / "gen")
        gen_fd = int(gen.load("xdp_gen").fd)
        tmpl = bytes(
            Ether(dst=netns.mac_of("i0", t.ns("d")), src=netns.mac_of("g0", t.ns("g")))
            / IP(src="10.0.0.2", dst=VIP)
            / UDP(sport=1024, dport=53, chksum=0)
            / (b"A" * 22)
        )  # 0: no UDP checksum (RFC 768), so rewriting the port keeps the frame valid
        tt = gen.table("gen_template")
        leaf = tt.Leaf()
        ctypes.memmove(ctypes.addressof(leaf.bytes), tmpl, len(tmpl))
        leaf.flows, leaf.sport_offset = 1024, 14 + 20
        tt[tt.Key(0)] = leaf
        g0_index = netns.ifindex("g0", t.ns("g"))
        # without an XDP program on i0 (the nftables run), veth takes XDP frames only with GRO on
        t.sh("d", "ethtool", "-K", "i0", "gro", "on")

        def blast_gen() -> tuple[float, int]:
            before = delivered()
            t0 = time.monotonic()
            with netns.entered(t.ns("g")):
                run_live(gen_fd, tmpl, g0_index, packets)
            dt = time.monotonic() - t0
            return dt, delivered() - before

        fd, conf = tempfile.mkstemp(suffix=".trafgen")
        os.write(fd, trafgen_conf(netns.mac_of("i0", t.ns("d")), netns.mac_of("g0", t.ns("g"))).encode())
        os.close(fd)

        def blast() -> tuple[float, int]:
            # trafgen sometimes gives up flushing its ring when the FIFO in front of the veth stays full
            # ("Flushing TX_RING failed: Resource temporarily unavailable"): the run is taken again, and
            # counted, at most 3 times
            for attempt in range(3):
                before = delivered()
                t0 = time.monotonic()
                try:
                    t.sh("g", "trafgen", "-o", "g0", "-c", conf, "-n", str(packets), "--cpus", "1", "-q")
                except InterfaceError as e:
                    out["trafgen_retries"] = out.get("trafgen_retries", 0) + 1
                    print(f"bench: trafgen run {attempt + 1} of 3 failed: {e}", file=sys.stderr)
                    continue
                dt = time.monotonic() - t0
                return dt, delivered() - before
            raise InterfaceError("trafgen failed 3 times in a row (see above)")

        out: dict = {"packets_sent": packets}
        # 1. the XDP steering node
        node = SteeringNode(
            "fwd", SteerSizes(max_services=16, max_instances=16, affinity_entries=65536), bpffs_root=BPFFS
        )
        node.configure(src4="10.1.0.1")
        svc = ServiceKey.parse(f"{VIP}:53/udp")
        node.add_service(svc)
        node.set_instances(svc, [Instance(1, "10.1.0.2")])
        node.attach("i0", t.ns("d"))
        dt, got = blast_gen()
        out.update(xdp_pps=got / dt, xdp_delivered=got, xdp_seconds=dt)
        dt, got = blast()
        out.update(xdp_pps_trafgen=got / dt, xdp_delivered_trafgen=got, xdp_seconds_trafgen=dt)
        out["xdp_verdicts"] = {k: v for k, v in node.verdicts().items() if v}
        node.detach("i0", t.ns("d"))
        # 1b. the limit of any XDP program on this path: a plain redirect, MACs rewritten, no lookup
        redirect = BccProgram("xdp_redirect.bpf.c", BPFFS / "redirect" / "redirect")
        try:
            rc = redirect.table("redirect_cfg")
            cfg = rc.Leaf()
            cfg.ifindex = netns.ifindex("i1", t.ns("d"))
            cfg.smac[:] = list(bytes.fromhex(netns.mac_of("i1", t.ns("d")).replace(":", "")))
            cfg.dmac[:] = list(bytes.fromhex(netns.mac_of("s0", t.ns("s")).replace(":", "")))
            rc[rc.Key(0)] = cfg
            redirect.attach("xdp_redirect", "i0", t.ns("d"))
            dt, got = blast_gen()
            out.update(redirect_pps=got / dt, redirect_delivered=got, redirect_seconds=dt)
            redirect.detach("i0", t.ns("d"))
        finally:
            redirect.unpin()
            redirect.close()
        out["steer_over_redirect"] = out["xdp_pps"] / out["redirect_pps"] if out["redirect_pps"] else None
        # 2. the kernel: nftables DNAT on the same node, same traffic
        t.sh("d", "nft", "add table ip dinet_bench")
        t.sh("d", "nft", "add chain ip dinet_bench pre { type nat hook prerouting priority -100; }")
        t.sh("d", "nft", f"add rule ip dinet_bench pre ip daddr {VIP} udp dport 53 dnat to 10.1.0.2")
        dt, got = blast_gen()
        out.update(nft_pps=got / dt, nft_delivered=got, nft_seconds=dt)
        dt, got = blast()
        out.update(nft_pps_trafgen=got / dt, nft_delivered_trafgen=got, nft_seconds_trafgen=dt)
        out["xdp_over_nft"] = out["xdp_pps"] / out["nft_pps"] if out["nft_pps"] else None
        out["xdp_over_nft_trafgen"] = (
            out["xdp_pps_trafgen"] / out["nft_pps_trafgen"] if out["nft_pps_trafgen"] else None
        )
        return out
    finally:
        if conf:
            os.unlink(conf)
        t.close()
        if node:
            node.destroy()
        for prog in (sink, gen):
            if prog:
                prog.unpin()
                prog.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="3 trials, 2M packets per forwarding run, one service with 256 instances among 4,096 (under a minute)",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "xdp_steer.json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    res = {"host": {"kernel": platform.release(), "cpus": os.cpu_count()}}
    try:
        res.update(micro(1_000_000, 5 if a.quick else 9, 4096, full_instances=not a.quick))
        res.update(forwarding(2_000_000 if a.quick else 10_000_000))
    finally:
        remove_pinned_tree(BPFFS)
    floor = res["floor_ns"]
    for k in ("hit", "session_hit", "two_choices_hit", "miss", "session", "two_choices", "pass"):
        res[f"{k}_ratio"] = res[f"{k}_ns"] / floor if floor else None
    res["seconds"] = round(time.monotonic() - t0, 1)
    print(f"\nBPF_PROG_TEST_RUN, {res['repeat']:,} repetitions, median of {res['trials']} (ns/packet)")
    print(f"  {'case':<22}{'ns':>8}{'x floor':>9}")
    print(f"  {'empty XDP_PASS (floor)':<22}{floor:>8.1f}{1:>9.2f}")
    for k, label in (
        ("hit", "affinity hit"),
        ("session_hit", "session-affine hit"),
        ("two_choices_hit", "two-choices hit"),
        ("miss", "new flow"),
        ("session", "new session flow"),
        ("two_choices", "new two-choices flow"),
        ("pass", "not a service"),
    ):
        print(f"  {label:<22}{res[k + '_ns']:>8.1f}{res[k + '_ratio']:>9.2f}")
    print(
        f"  (hit and new flow include the benchmark's undo of the encapsulation, about {res['undo_ns']:.1f} ns;"
        f" hit without it: {res['hit_ns_less_undo']:.1f} ns, {res['hit_ns_less_undo'] / floor:.2f}x)"
    )
    print(f"\nforwarding through veth, {res['packets_sent']:,} UDP packets over 1,024 flows, packets/s delivered")
    print(f"  {'generator':<28}{'XDP steering':>14}{'nftables DNAT':>15}{'ratio':>8}")
    print(
        f"  {'XDP live frames (xdp_gen)':<28}{res['xdp_pps']:>14,.0f}{res['nft_pps']:>15,.0f}"
        f"{res['xdp_over_nft']:>8.2f}"
    )
    print(
        f"  {'trafgen (AF_PACKET, skbs)':<28}{res['xdp_pps_trafgen']:>14,.0f}{res['nft_pps_trafgen']:>15,.0f}"
        f"{res['xdp_over_nft_trafgen']:>8.2f}"
    )
    print(
        f"  plain XDP redirect (the path's limit): {res['redirect_pps']:,.0f} pps; "
        f"steering / redirect = {res['steer_over_redirect']:.2f}"
    )
    sc = res["scale"]
    print(
        f"\nscale: {sc['services']} services, {sc['instances_per_service']} instances/service, "
        f"{sc['affinity_entries_after']:,} of {sc['affinity_capacity']:,} affinity entries in use; "
        f"maps hold {res['map_memory_total_mib']} MiB"
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print(f"wrote {a.out} in {res['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
