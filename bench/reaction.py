"""How fast the control plane reacts, and how many reports it takes. Prints a table and writes
bench/results/reaction.json.

1. Reaction: an agent's report over gRPC -> collector -> decision -> the XDP data plane's weights changed.
   The collector acknowledges a stream only after its reports were handled, so the time from sending the
   report to the Ack includes the map writes; each trial then reads the weights back from the maps to
   confirm them. Trials alternate between overload (weight 0) and recovery, so every one changes the plane.
2. Throughput: reports per second the collector takes from an agent in another process on one stream
   (authentication once per stream, every report checked and stored): one report per message, 64 per
   message (ReportBatch, an agent for a host's many instances), and with a decision on every report.

    sudo .venv/bin/python -m bench.reaction [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

from bench.common import host, need_root, write
from dinet.model import Instance, ServiceKey
from dinet.policy.decide import Policy, TrafficClass
from dinet.policy.scores import Level0
from dinet.services.collect import Agent, Collector, CollectorServer
from dinet.services.controller import Controller, ServiceIntent, SitePath
from dinet.targets.base import SteerSizes
from dinet.targets.xdp import SteeringNode

SVC = ServiceKey.parse("10.99.0.1:80/tcp")
BPFFS = Path(f"/sys/fs/bpf/dinet-bench-reaction-{os.getpid()}")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


AGENT = """
import sys, time
from dinet.services.collect import Agent
from dinet.policy.scores import Level0
addr, token = sys.argv[1], sys.argv[2]
n, seq, per = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
a = Agent(addr, token)
a.seq = seq
batch = [a.report("10.99.0.1:80/tcp", 1, Level0(cpu_load=0.5)) for _ in range(n)]
t0 = time.perf_counter()
if per == 1:
    ack = a.send(batch, timeout=600)
else:
    ack = a.send_batches([batch[i:i + per] for i in range(0, n, per)], timeout=600)
print(ack.accepted, ack.rejected, time.perf_counter() - t0)
"""


def remote_agent(address: str, token: str, n: int, seq: int, per: int = 1) -> float:
    """Reports per second accepted from an agent in another process streaming n reports, `per` a message."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", AGENT, address, token, str(n), str(seq), str(per)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the agent failed: {proc.stderr[-2000:]}")
    out = proc.stdout.split()
    accepted, rejected, seconds = int(out[0]), int(out[1]), float(out[2])
    if rejected:
        raise RuntimeError(f"{rejected} reports refused")
    return accepted / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 trials, 50,000 reports (well under a minute)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "reaction.json")
    a = ap.parse_args()
    if not need_root():
        return 1
    trials, reports = (200, 50_000) if a.quick else (1000, 200_000)
    res: dict = {"host": host()}
    node = SteeringNode("reaction", SteerSizes(max_services=16, max_instances=16), bpffs_root=BPFFS)
    try:
        node.configure(src4="192.0.2.100")
        insts = (Instance(1, "192.0.2.1", 1, site_id=1), Instance(2, "192.0.2.2", 1, site_id=2))
        ctl = Controller(
            node,
            [ServiceIntent(SVC, TrafficClass.DELAY_TOLERANT, insts)],
            {1: SitePath(2), 2: SitePath(20)},
            policy=Policy(smoothing=1.0),
        )
        ctl.start()
        gc.freeze()  # as `dinet run` does once it has started
        col = Collector.with_tokens({"t1": ("edge", {(SVC, 1)}), "t2": ("cloud", {(SVC, 2)})}, max_rate=1e9)
        ctl.attach(col)
        with CollectorServer(col, insecure=True) as srv:
            edge, cloud = Agent(srv.address, "t1"), Agent(srv.address, "t2")
            cloud.send([cloud.report(str(SVC), 2, Level0(cpu_load=0.1))])
            edge.send([edge.report(str(SVC), 1, Level0(cpu_load=0.1))])
            lat = []
            for i in range(trials):
                hot = i % 2 == 0
                r = edge.report(str(SVC), 1, Level0(cpu_load=0.97 if hot else 0.1))
                t0 = time.perf_counter()
                edge.send([r])
                lat.append((time.perf_counter() - t0) * 1000)
                w = node.service(SVC).instances[0].weight
                if (w == 0) != hot:
                    raise RuntimeError(f"trial {i}: weight {w} after a {'hot' if hot else 'cool'} report")
            res.update(
                reaction_p50_ms=statistics.median(lat),
                reaction_p99_ms=pct(lat, 99),
                reaction_max_ms=max(lat),
                trials=trials,
                writes=ctl.writes,
            )
            # throughput: the agent is another process (its own core), as beside a real instance; the
            # collector checks and stores every report, then also decides on every report
            col.listeners.clear()
            res["reports_per_s"] = remote_agent(srv.address, "t1", reports, edge.seq + 1)
            res["reports_per_s_batched"] = remote_agent(srv.address, "t1", reports, edge.seq + reports + 2, per=64)
            ctl.attach(col)
            d0 = ctl.decisions
            # with a decision on every report: in messages of 64 (an agent for a host's instances, as
            # StreamBatches is meant), and one report a message (gRPC's per-message cost in Python bounds it)
            res["reports_per_s_decided"] = remote_agent(srv.address, "t1", reports, edge.seq + 2 * reports + 4, per=64)
            res["reports_per_s_decided_single"] = remote_agent(srv.address, "t1", reports, edge.seq + 3 * reports + 6)
            res["decisions"] = ctl.decisions - d0
            if res["decisions"] != 2 * reports:
                raise RuntimeError(f"{res['decisions']} decisions for {2 * reports} reports")
            res["datapath_reads_after_start"] = ctl.reads - len(ctl.services)
            res["reports"] = reports
            edge.close()
            cloud.close()
    finally:
        node.destroy()
        if BPFFS.exists():
            BPFFS.rmdir()
    print(f"\nreaction: agent report -> XDP weights changed, {trials} trials")
    print(
        f"  p50 {res['reaction_p50_ms']:.2f} ms   p99 {res['reaction_p99_ms']:.2f} ms"
        f"   max {res['reaction_max_ms']:.2f} ms"
    )
    print(
        f"collector: {res['reports_per_s']:,.0f} reports/s on one stream, one report a message; "
        f"{res['reports_per_s_batched']:,.0f}/s in messages of 64; "
        f"deciding on every report: {res['reports_per_s_decided']:,.0f}/s in messages of 64, "
        f"{res['reports_per_s_decided_single']:,.0f}/s one a message "
        f"({res['datapath_reads_after_start']} data-plane reads after start)"
    )
    write(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
