"""The main demo: computing-aware steering on XDP in network namespaces.

Builds the cloud-edge scenario (a client, an ingress steering node, three sites with two instances each
running a real HTTP service), then:
  1. opens long-lived HTTP connections and sends new requests: they spread over the six instances;
  2. moves the weights toward the cloud site: new requests follow, open connections stay put;
  3. drains the instance holding the most open connections: it gets no new request, its connections
     go on answering;
  4. prints per-instance counts (from the answers and from the data plane's counters) and the proof
     that every established connection survived.
Everything it creates is removed at the end, also on Ctrl-C or error.

    sudo make demo          (or: sudo .venv/bin/python -m topo.steer_demo [--json FILE])
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from dinet.targets import netns
from topo.cloud_edge import VIP4, CloudEdge
from topo.httpclient import KeepAlive, get_once


def table(title: str, rows: list[list[object]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    print(f"\n{title}")
    print("  " + "  ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=False)))
    for r in rows:
        print("  " + "  ".join(f"{str(x):<{w}}" for x, w in zip(r, widths, strict=False)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="new requests per phase")
    ap.add_argument("--connections", type=int, default=24, help="long-lived connections")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--target",
        choices=["xdp", "bmv2"],
        default="xdp",
        help="the ingress steering node: XDP (default) or a BMv2 switch programmed over P4Runtime",
    )
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: run as root (namespaces and XDP need it)", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    prefix = f"dd{os.getpid() % 10000}"
    results: dict[str, object] = {}
    print(f"building the cloud-edge topology (namespaces {prefix}*) ...", flush=True)
    with CloudEdge(prefix, target=a.target) as ce:
        ce.install()
        svc = ce.services()["web4"]
        names = [h.name for h in ce.hosts]
        where = f"XDP steering on {ce.ingress_ns}:eth0" if a.target == "xdp" else "a BMv2 steering switch (P4Runtime)"
        print(
            f"ready in {time.monotonic() - t0:.1f}s: service {svc} on {', '.join(names)}; {where}, "
            "decap on every instance host"
        )

        def phase(label: str) -> Counter[str]:
            with netns.entered(ce.client_ns):
                got = Counter(get_once(str(VIP4)) for _ in range(a.requests))
            results[label] = dict(got)
            return got

        with netns.entered(ce.client_ns):
            conns = [KeepAlive(str(VIP4)) for _ in range(a.connections)]
        try:
            pinned = [c.get() for c in conns]
            p1 = phase("equal weights")
            weights = {"s1a": 1, "s1b": 1, "s2a": 2, "s2b": 2, "s3a": 6, "s3b": 6}
            for h in ce.hosts:
                ce.steer.set_weight(svc, h.instance_id, weights[h.name])
            p2 = phase("weights toward the cloud site")
            drained = Counter(pinned).most_common(1)[0][0]
            ce.steer.drain(svc, ce.host(drained).instance_id)
            p3 = phase(f"{drained} draining")
            after = [c.get() for c in conns]
        finally:
            for c in conns:
                c.close()

        total, per = ce.steer.service_counters(svc)
        by_id = {h.instance_id: h.name for h in ce.hosts}
        rows = [
            [
                n,
                weights[n],
                p1[n],
                p2[n],
                p3[n],
                pinned.count(n),
                per[h.instance_id].new_flows,
                per[h.instance_id].packets,
            ]
            for h in ce.hosts
            for n in [h.name]
        ]
        table(
            f"requests answered per instance ({a.requests} new connections per phase)",
            rows,
            [
                "instance",
                "weight",
                "equal",
                "weighted",
                f"{drained} drained",
                "open conns",
                "new flows",
                "packets",
            ],
        )
        survived = sum(1 for x, y in zip(pinned, after, strict=False) if x == y)
        print(
            f"\nestablished connections: {survived}/{len(conns)} answered by the same instance after the "
            f"weight change and the drain"
        )
        print(f"{drained} took {p3[drained]} new requests while draining (want 0)")
        verdicts = {k: v for k, v in ce.steer.verdicts().items() if v}
        print(f"data-plane verdicts: {verdicts}")
        results.update(
            {
                "survived": survived,
                "connections": len(conns),
                "drained": drained,
                "drained_new_requests": p3[drained],
                "new_flows": {by_id[i]: c.new_flows for i, c in per.items()},
                "service_packets": total.packets,
                "verdicts": verdicts,
            }
        )
    print(f"\ncleaned up; demo took {time.monotonic() - t0:.1f}s")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    ok = survived == len(conns) and p3[drained] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
