"""BIER against tree-based multicast, in the state they hold and write (draft-liu-rtgwg-llmsync-multicast's
argument, counted): a domain of 404 routers and 808 links, 100 of them GPU clouds (BFERs, BSL 256: two
sets), a repository at r0 (a BFER too), and model-sync jobs to random sets of 10 to 100 clouds. For SR-P2MP trees
(replication segments at the root, branching nodes and leaves: dinet.policy.p2mp) and per-node trees (PIM-SM,
mLDP: every node on the tree) against BIER (the BIFTs, per set whatever the jobs, and one BFIR entry per job):

- state: forwarding entries per node (the largest and the total) as concurrent jobs grow from 1 to 1,000;
- setup: entries written and nodes touched to start one more job with a new destination set;
- failure: with 100 (and 1,000) jobs running, a link under at least one tree fails: entries the trees must
  rewrite (and trees touched) against the BIFT entries that change (BiftPlanner, incremental).

Both follow the same shortest paths (the trees are built from the BIFTs' next hops), so they carry the same
bytes over the same links: what differs is state. Computed, not forwarded (the trees are not a data plane
here); the setup time derived from the P4Runtime write rate that bench/p4rt_writes.py measured, if its JSON
is there.

    .venv/bin/python -m bench.bier_vs_tree [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from bench.common import RESULTS, host, write
from dinet.lab.bier_domain import random_domain
from dinet.policy.bift import BiftPlanner
from dinet.policy.p2mp import ReplicationSegment, p2mp_tree

BSL_256 = 3
ROOT = "r0"


def trees(planner: BiftPlanner, jobs: list[set[str]], per_node: bool) -> list[dict[str, ReplicationSegment]]:
    toward: dict[str, dict[str, str]] = {}  # next hops per cloud, shared by every tree of this state
    return [p2mp_tree(planner, k, ROOT, to, per_node, toward) for k, to in enumerate(jobs)]


def per_node_state(ts: list[dict[str, ReplicationSegment]]) -> dict[str, int]:
    count: dict[str, int] = {}
    for t in ts:
        for n in t:
            count[n] = count.get(n, 0) + 1
    return count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="up to 100 jobs, 5 failures (seconds)")
    ap.add_argument("--out", type=Path, default=RESULTS / "bier_vs_tree.json")
    a = ap.parse_args()
    rng = random.Random(8279)
    topo = random_domain(404, 808, seed=8279, bfer_every=4)  # r0 and 100 clouds
    clouds = sorted(n for n, b in topo.bfr_ids.items() if b is not None and n != ROOT)
    planner = BiftPlanner(topo, BSL_256)
    sets = len(planner.tables()[ROOT])
    bift_entries = {n: len(t) for n, t in planner.tables().items()}
    p4rt = RESULTS / "p4rt_writes.json"
    per_s = json.loads(p4rt.read_text()).get("inserts_per_s_single") if p4rt.exists() else None

    def job() -> set[str]:
        return set(rng.sample(clouds, rng.randint(10, 100)))

    res: dict = {"host": host(), "bfrs": 404, "links": 808, "clouds": len(clouds), "sets": sets, "state": []}
    print(f"404 routers, 808 links, {len(clouds)} clouds, BSL 256 ({sets} sets); jobs to 10-100 clouds each")
    print("entries per node: the largest anywhere / the largest beyond the repository's node / the total")
    print("  jobs | BIER                 | SR-P2MP                  | per-node trees")
    all_jobs = [job() for _ in range(1000)]
    for n_jobs in (1, 10, 100) if a.quick else (1, 10, 100, 1000):
        jobs = all_jobs[:n_jobs]
        sr, pn = per_node_state(trees(planner, jobs, False)), per_node_state(trees(planner, jobs, True))
        bier = dict(bift_entries)
        bier[ROOT] += n_jobs  # a BFIR entry per job (up to 4 sets each)
        row = {
            "jobs": n_jobs,
            "bier_max_transit": max(v for n, v in bier.items() if n != ROOT),  # beyond the repository's node
            "sr_p2mp_max_transit": max((v for n, v in sr.items() if n != ROOT), default=0),
            "per_node_max_transit": max((v for n, v in pn.items() if n != ROOT), default=0),
            "bier_max": max(bier.values()),
            "bier_total": sum(bier.values()),
            "sr_p2mp_max": max(sr.values()),
            "sr_p2mp_total": sum(sr.values()),
            "per_node_max": max(pn.values()),
            "per_node_total": sum(pn.values()),
        }
        res["state"].append(row)
        print(
            f"  {n_jobs:4d} | {row['bier_max']:5d} {row['bier_max_transit']:5d} {row['bier_total']:8d} "
            f"| {row['sr_p2mp_max']:5d} {row['sr_p2mp_max_transit']:5d} {row['sr_p2mp_total']:10d} "
            f"| {row['per_node_max']:5d} {row['per_node_max_transit']:5d} {row['per_node_total']:10d}"
        )

    new = [p2mp_tree(planner, 9999, ROOT, job()) for _ in range(50)]
    setup = {
        "bier_entries": 1,
        "bier_nodes": 1,
        "sr_p2mp_entries": statistics.median(len(t) for t in new),
        "sr_p2mp_nodes": statistics.median(len(t) for t in new),
        "p4rt_writes_per_s": per_s,
    }
    if per_s:
        setup["bier_setup_ms"] = round(1000 / per_s, 2)
        setup["sr_p2mp_setup_ms"] = round(setup["sr_p2mp_entries"] * 1000 / per_s, 2)
    res["setup"] = setup
    derived = (
        f" ({setup['sr_p2mp_setup_ms']} ms vs {setup['bier_setup_ms']} ms at {per_s:.0f} P4Runtime writes/s)"
        if per_s
        else ""
    )
    print(
        f"a new job: BIER writes 1 entry at the BFIR; SR-P2MP {setup['sr_p2mp_entries']:.0f} replication segments "
        f"on as many nodes (median of 50)" + derived
    )

    res["failure"] = []
    for n_jobs in (100,) if a.quick else (100, 1000):
        running = all_jobs[:n_jobs]
        before = trees(planner, running, False)
        used = sorted(
            {frozenset(e) for t in before for seg in t.values() for e in _tree_edges(planner, seg)}, key=sorted
        )
        fails = []
        for link in rng.sample(used, 5 if a.quick else 20):
            tables_before = planner.tables()
            changed = planner.set_state({link}, set())
            after = trees(planner, running, False)
            rewritten = sum(
                len({n for n in set(b) | set(af) if b.get(n) != af.get(n)}) for b, af in zip(before, after, strict=True)
            )
            touched = sum(1 for b, af in zip(before, after, strict=True) if b != af)
            tables_after = planner.tables()
            bift_rewritten = sum(
                1 for n in changed for si, e in tables_after[n].items() if tables_before.get(n, {}).get(si) != e
            )
            fails.append({"trees_touched": touched, "tree_entries": rewritten, "bift_entries": bift_rewritten})
            planner.set_state(set(), set())
        m = {k: statistics.median(f[k] for f in fails) for k in fails[0]}
        res["failure"].append({"jobs": n_jobs, "runs": fails, "median": m})
        print(
            f"a link under the trees fails with {n_jobs} jobs running: SR-P2MP rewrites {m['tree_entries']:.0f} "
            f"segments in {m['trees_touched']:.0f} trees; BIER rewrites {m['bift_entries']:.0f} BIFT entries and no "
            f"BFIR entry (medians of {len(fails)})"
        )
    write(res, a.out)
    return 0


def _tree_edges(planner: BiftPlanner, seg: ReplicationSegment) -> list[tuple[str, str]]:
    """The links under one segment: the shortest path to each downstream replication node."""
    out = []
    for d in seg.downstream:
        toward = planner.next_hops_toward(d)
        node = seg.node
        while node != d:
            out.append((node, toward[node]))
            node = toward[node]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
