"""BIFT planning at a provider's scale: every BIFT of a domain of 100 to 2,000 BFRs (twice as many links,
BSL 256, every BFR a BFER: 1,000 BFRs fill 4 sets), planned from scratch, and again after one link fails or
returns (only the rows and BFRs the change touches: dinet.policy.bift.BiftPlanner). One core, no kernel.

Per size: plan_s (all BIFTs from the topology), incremental_ms (median over single link failures and
repairs of randomly drawn links, with the p95 and the largest beside it), the BFRs whose tables changed per
change (median), the same with fast reroute as the controller plans it (DomainPlanner: the BIFTs, the
backups of every BFR next to a moved distance row, the entries: incremental_frr_ms, its p95, and the medians
of failures and returns apart: over half as many links), and, for sizes
up to --reference-upto, the time of the per-source Dijkstra the planner replaced (next_hops once per BFR).

    .venv/bin/python -m bench.bier_scale [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from bench.common import host, write
from dinet.lab.bier_domain import random_domain
from dinet.policy.bift import BierIntent, BierTopology, BiftPlanner, DomainPlanner, Port, next_hops

BSL_256 = 3


def pctl(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(bfrs: int, changes: int, reference: bool, seed: int) -> dict:
    topo = random_domain(bfrs, 2 * bfrs, seed)
    t0 = time.perf_counter()
    planner = BiftPlanner(topo, BSL_256)
    planner.tables()
    plan_s = time.perf_counter() - t0
    rng = random.Random(seed)
    links = [frozenset((k.a, k.b)) for k in topo.links]
    by_kind: dict[str, list[float]] = {"down": [], "up": []}
    touched = []
    for _ in range(changes):
        link = rng.choice(links)
        for kind, down in (("down", {link}), ("up", set())):  # the link fails, then returns
            t0 = time.perf_counter()
            changed = planner.set_state(down, set())
            by_kind[kind].append((time.perf_counter() - t0) * 1000)
            touched.append(len(changed))
    times = by_kind["down"] + by_kind["up"]
    row = {
        "bfrs": bfrs,
        "links": len(topo.links),
        "sets": len(planner.tables()[topo.links[0].a]),
        "plan_s": round(plan_s, 4),
        "incremental_ms": round(statistics.median(times), 2),
        "incremental_p95_ms": round(pctl(times, 0.95), 2),
        "incremental_max_ms": round(max(times), 2),
        "link_down_ms": round(statistics.median(by_kind["down"]), 2),
        "link_up_ms": round(statistics.median(by_kind["up"]), 2),
        "bfrs_changed_median": statistics.median(touched),
        "changes": len(times),
    }
    row |= with_frr(topo, max(3, changes // 2), seed)
    if reference:
        t0 = time.perf_counter()
        for node in topo.bfr_ids:
            next_hops(topo, node)
        row["per_source_dijkstra_s"] = round(time.perf_counter() - t0, 3)
    return row


def with_frr(topo: BierTopology, changes: int, seed: int) -> dict:
    """What the controller's planner (DomainPlanner, fast reroute on) takes per link change: the BIFTs
    incrementally, then the backups of every BFR next to a moved distance row, then the entries."""
    ports = {(x, y): Port(f"to-{y}", "02:00:00:00:00:01") for k in topo.links for x, y in ((k.a, k.b), (k.b, k.a))}
    planner = DomainPlanner(BierIntent(BSL_256, topo, ports))
    rng = random.Random(seed)
    links = [frozenset((k.a, k.b)) for k in topo.links]
    by_kind: dict[str, list[float]] = {"down": [], "up": []}
    for _ in range(changes):
        link = rng.choice(links)
        for kind, down in (("down", {link}), ("up", set())):
            t0 = time.perf_counter()
            planner.plan(down)
            by_kind[kind].append((time.perf_counter() - t0) * 1000)
    times = by_kind["down"] + by_kind["up"]
    return {
        "incremental_frr_ms": round(statistics.median(times), 2),
        "incremental_frr_p95_ms": round(pctl(times, 0.95), 2),
        "frr_link_down_ms": round(statistics.median(by_kind["down"]), 2),
        "frr_link_up_ms": round(statistics.median(by_kind["up"]), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 to 1,000 BFRs, 10 changes each (seconds)")
    ap.add_argument("--reference-upto", type=int, default=1000, help="time the per-source Dijkstra up to here")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bier_scale.json")
    a = ap.parse_args()
    sizes = (100, 250, 500, 1000) if a.quick else (100, 250, 500, 1000, 1500, 2000)
    changes = 10 if a.quick else 50
    rows = []
    for bfrs in sizes:
        row = measure(bfrs, changes, bfrs <= a.reference_upto, seed=bfrs)
        rows.append(row)
        ref = f", per-source Dijkstra {row['per_source_dijkstra_s']:.2f} s" if "per_source_dijkstra_s" in row else ""
        print(
            f"{bfrs:5d} BFRs {row['links']:5d} links {row['sets']} sets: all BIFTs {row['plan_s']:.3f} s{ref}; "
            f"one link down or up {row['incremental_ms']:.1f} ms (down {row['link_down_ms']:.1f}, up "
            f"{row['link_up_ms']:.1f}, p95 {row['incremental_p95_ms']:.1f}, "
            f"max {row['incremental_max_ms']:.1f}), {row['bfrs_changed_median']:.0f} BFRs' tables changed; "
            f"with fast reroute's backups and the entries {row['incremental_frr_ms']:.0f} ms "
            f"(down {row['frr_link_down_ms']:.0f}, up {row['frr_link_up_ms']:.0f}, "
            f"p95 {row['incremental_frr_p95_ms']:.0f})"
        )
    write({"host": host(), "bsl": 256, "rows": rows}, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
