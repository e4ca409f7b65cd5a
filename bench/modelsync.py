"""Model synchronisation to N GPU clouds, three ways, on one three-level BIER domain in namespaces whose
links (and the repository's uplink) are all shaped to the same rate with TBF:

  bier     one UFTP session over dinet's BIER groups: the repository sends every byte once
  tree     the same session over SR-P2MP trees set up for the job (dinet.services.trees: replication
           segments at the root, branching nodes and leaves, forwarded by the same nodes' programs)
  ingress  ingress replication: one UFTP session per cloud, in unicast, all at once (rate shared)
  unicast  each cloud downloads the file over HTTP (curl from a real HTTP server on the repository), as
           models are fetched today

Per method and N: completion time of the slowest cloud, bytes on the repository's uplink, bytes on all links,
and whether every copy is byte-identical (SHA-256). Then ten consecutive BIER jobs to changing destination
sets (the time and entries to set each job's BIER groups up, and each job's trees), the forwarding state read
back from the nodes as 1 to 100 concurrent jobs grow (trees against BIER), and BIER with 1% and 5% loss on one
cloud's access link (loss from ebpf/loss.bpf.c: this kernel has no netem), and BIER to four clouds with a
link failing mid-transfer (repair time, extra bytes). The tree has redundant links (cost 2: unused unless
a link fails).

    sudo .venv/bin/python -m bench.modelsync [--quick] [--size-mib N] [--clouds 2,4,8] [--link-mbit R]
    sudo .venv/bin/dinet experiment modelsync [the same options]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import host, need_root, write
from dinet.experiments.modelsync import plot
from dinet.lab.bier_domain import tree
from dinet.lab.loss import LinkLoss
from dinet.lab.model_sync import SyncLab
from dinet.sync.uftp import UftpOptions, sender_argv, uid

BPFFS = Path(f"/sys/fs/bpf/dinet-bench-modelsync-{os.getpid()}")
HTTP_PORT = 8088


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def spread(lab: SyncLab, n: int) -> list[str]:
    """n clouds spread over the tree (every other leaf first), so that the copies share few links."""
    leaves = lab.clouds
    order = leaves[::2] + leaves[1::2]
    return order[:n]


def clean(lab: SyncLab, names: list[str], model: Path) -> None:
    for c in names:
        (lab.store(c) / model.name).unlink(missing_ok=True)


def measure(lab: SyncLab, names: list[str], model: Path, method: str, send: Any) -> dict[str, Any]:
    clean(lab, names, model)
    before = lab.domain.tx_bytes()
    t0 = time.monotonic()
    extra = send()
    seconds = time.monotonic() - t0
    after = lab.domain.tx_bytes()
    want = digest(model)
    identical = all((lab.store(c) / model.name).is_file() and digest(lab.store(c) / model.name) == want for c in names)
    clean(lab, names, model)
    row = {
        "method": method,
        "n": len(names),
        "size_bytes": model.stat().st_size,
        "completion_s": round(seconds, 3),
        "uplink_bytes": after[("src", "eth0")] - before[("src", "eth0")],
        "total_bytes": sum(after[k] - before.get(k, 0) for k in after),
        "bytes_identical": identical,
        **(extra or {}),
    }
    print(
        f"  {method:8s} N={row['n']:2d}: {row['completion_s']:7.2f} s, uplink {row['uplink_bytes'] / 2**20:8.1f} MiB, "
        f"all links {row['total_bytes'] / 2**20:8.1f} MiB, byte-identical {identical}",
        flush=True,
    )
    return row


def bier(lab: SyncLab, names: list[str], model: Path, rate: float, trees: bool = False) -> dict[str, Any]:
    """One UFTP session over BIER groups, or (trees) over SR-P2MP trees set up for the job on the same nodes.
    state_entries: what the job itself holds in the network (BIER: the BFIR's entries; a tree: its segments
    at the root, branching nodes and leaves, and the root's entries)."""
    job = lab.job(
        model, names, opts=UftpOptions(rate_mbps=rate), progress=False, trees=lab.domain.trees() if trees else None
    )
    report = job.run()
    if not report.ok:
        print(report.table(), file=sys.stderr)
    return {
        "setup_ms": round(report.setup_ms, 2),
        "write_ms": round(report.write_ms, 2),
        "state_entries": report.setup_entries,
        "naks": sum(c.naks for c in report.clouds),
    }


def ingress(lab: SyncLab, names: list[str], model: Path, rate: float) -> dict[str, Any]:
    """One unicast UFTP session per cloud, all at once, each at rate/N (the uplink's share)."""
    work = lab.root / ".ingress"
    procs = []
    for c in names:
        d = work / c
        d.mkdir(parents=True, exist_ok=True)
        # -M unicast, the receivers' pinned key; the private group source-specific, as they require
        opts = UftpOptions(rate_mbps=rate / len(names), pub_group=lab.domain.router_addr(c), key=lab.key)
        argv = sender_argv([model], "eth0", "232.5.5.1", [uid(lab.topo.bfr_ids[c] or 0)], opts, d / "status")
        cmd = ["ip", "netns", "exec", lab.domain.net.ns("src"), *argv]
        procs.append(subprocess.Popen(cmd, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in procs:
        p.wait()
    return {}


def unicast(lab: SyncLab, names: list[str], model: Path) -> dict[str, Any]:
    """Every cloud fetches the file with curl from an HTTP server on the repository, all at once."""
    src = lab.domain.net.ns("src")
    server = subprocess.Popen(
        ["ip", "netns", "exec", src, sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", "10.50.0.2"],
        cwd=model.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://10.50.0.2:{HTTP_PORT}/{model.name}"
        deadline = time.monotonic() + 10
        while subprocess.run(
            ["ip", "netns", "exec", src, "curl", "-s", "-o", "/dev/null", "-I", url], check=False
        ).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.05)
        t0 = time.monotonic()
        procs = [
            subprocess.Popen(
                ["ip", "netns", "exec", lab.domain.net.ns(c), "curl", "-sf", "-o", str(lab.store(c) / model.name), url]
            )
            for c in names
        ]
        for p in procs:
            p.wait()
        return {"transfer_s": round(time.monotonic() - t0, 3)}
    finally:
        server.terminate()
        server.wait()


def failover(lab: SyncLab, model: Path, rate: float, trees: bool = False) -> dict[str, Any]:
    """A job to four clouds, first as it is, then with the link m1-n1 failing once the first cloud holds a
    quarter of the file (its copies and its feedback then go through n2); UFTP's NAKs repair what the failure
    lost. BIER: the BIER controller watches the domain (every 50 ms, and at once on a link event) and rewrites
    the BIFTs. trees: the job's trees are repaired by dinet.services.trees, told of the failure at once (its
    detection costs nothing here: BIER's does). Returns the repair time (the failure to the rewritten entries),
    both runs' completion and uplink bytes, and the extra bytes the failure cost."""
    import threading

    method = "tree" if trees else "bier"
    names = spread(lab, 4)
    base = measure(lab, names, model, method, lambda: bier(lab, names, model, rate, trees))
    ctl = lab.domain.ctl()
    tc = lab.domain.trees()
    stop = threading.Event()
    watcher = threading.Thread(target=ctl.watch, args=(0.05, stop), daemon=True)
    if not trees:
        watcher.start()
    t_fail: list[float] = []
    repaired: list[tuple[float, int]] = []

    kinds: dict[str, int] = {}

    def repair() -> None:
        n = tc.link_down("m1", "n1")
        repaired.append((time.monotonic(), n))
        kinds.update(tc.last_change)

    def send() -> dict[str, Any]:
        out: dict[str, Any] = {}
        job = threading.Thread(target=lambda: out.update(bier(lab, names, model, rate, trees)))
        job.start()
        tmp = lab.store(names[0]) / ".dinet-sync" / "tmp"
        while job.is_alive() and not t_fail:
            got = sum(p.stat().st_blocks * 512 for p in tmp.rglob("*") if p.is_file() and "_group_" not in p.name)
            if got >= model.stat().st_size // 4:
                t_fail.append(time.monotonic())
                if trees:  # a tree controller told at once, while the domain's unicast routes move
                    threading.Thread(target=repair).start()
                lab.domain.fail_link("m1", "n1")
            time.sleep(0.01)
        job.join()
        return out

    try:
        failed = measure(lab, names, model, method, send)
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
        lab.domain.restore_link("m1", "n1")
        if trees:
            tc.link_up("m1", "n1")
        else:
            ctl.link_up("m1", "n1")
    if not trees:
        repaired = [(h.written_at, h.entries_written) for h in ctl.history if t_fail and h.written_at >= t_fail[0]]
    res = {
        "method": method,
        "n": len(names),
        "size_bytes": model.stat().st_size,
        "failed_link": "m1-n1",
        "repair_ms": round((repaired[0][0] - t_fail[0]) * 1000, 1) if repaired else None,
        "entries_rewritten": repaired[0][1] if repaired else 0,
        **({"rewritten_by_kind": kinds} if trees else {}),
        "completion_s": {"no_failure": base["completion_s"], "failure": failed["completion_s"]},
        "uplink_bytes": {"no_failure": base["uplink_bytes"], "failure": failed["uplink_bytes"]},
        "extra_uplink_bytes": failed["uplink_bytes"] - base["uplink_bytes"],
        "naks": failed.get("naks"),
        "bytes_identical": base["bytes_identical"] and failed["bytes_identical"],
    }
    print(
        f"  failover ({method}): link m1-n1 down at a quarter of the file: entries rewritten "
        f"({res['entries_rewritten']}) {res['repair_ms']} ms later, {res['extra_uplink_bytes'] / 2**20:.1f} MiB more "
        f"on the uplink, done in {failed['completion_s']} s (without the failure {base['completion_s']} s), "
        f"byte-identical {res['bytes_identical']}",
        flush=True,
    )
    return res


def state_growth(lab: SyncLab, rng: random.Random, counts: tuple[int, ...] = (1, 10, 50, 100)) -> list[dict[str, Any]]:
    """Forwarding state as concurrent jobs with different destination sets grow, read back from the nodes'
    maps: k jobs (random sets of clouds, each its own UDP port) set up as SR-P2MP trees and as BIER groups
    side by side. Per k: the tree entries per node (segments; the largest and the total; the node-SID routes
    apart: one per node of the domain, whatever the jobs) and BIER's (the BIFT entries and the BFIR's entries,
    one per job); entries written and the time to write them, per job."""
    from dinet.policy.bift import BierGroup
    from dinet.services.trees import TreeJob

    d = lab.domain
    tc, ctl = d.trees(), d.ctl()
    out = []
    for k in counts:
        jobs = [frozenset(rng.sample(lab.clouds, rng.randint(1, len(lab.clouds)))) for _ in range(k)]
        groups = [BierGroup(d.bfir, "232.9.0.1", to, udp_port=20000 + i) for i, to in enumerate(jobs)]
        t0, w0 = time.monotonic(), tc.writes
        ids = []
        for i, to in enumerate(jobs):
            ids.append(tc.free_id())
            tc.start(TreeJob(ids[-1], d.bfir, to, "232.9.0.1", 20000 + i))
        tree_ms, tree_writes = (time.monotonic() - t0) * 1000, tc.writes - w0
        t0, w0 = time.monotonic(), ctl.writes
        for g in groups:
            ctl.open_group(g)
        bier_ms, bier_writes = (time.monotonic() - t0) * 1000, ctl.writes - w0
        segs = {n: len(node.tree_segments()) for n, node in d.nodes.items()}
        bift = {n: len(node.bifts()) + len(node.bfir_entries()) for n, node in d.nodes.items()}
        transit = [n for n in d.nodes if n != d.bfir]  # the repository's node holds one entry per job in both
        routes = max(len(node.tree_nodes()) for node in d.nodes.values())
        for job_id in ids:
            tc.stop(job_id)
        for g in groups:
            ctl.close_group(g)
        row = {
            "jobs": k,
            "tree": {"max_per_node": max(segs.values()), "max_transit": max(segs[n] for n in transit),
                     "total": sum(segs.values()), "routes_per_node": routes,
                     "written": tree_writes, "write_ms_per_job": round(tree_ms / k, 3)},
            "bier": {"max_per_node": max(bift.values()), "max_transit": max(bift[n] for n in transit),
                     "total": sum(bift.values()),
                     "written": bier_writes, "write_ms_per_job": round(bier_ms / k, 3)},
        }  # fmt: skip
        out.append(row)
        print(
            f"  {k:3d} concurrent jobs: tree segments per node max {row['tree']['max_per_node']}, total "
            f"{row['tree']['total']} (+{routes} node-SID routes each), {row['tree']['written']} written, "
            f"{row['tree']['write_ms_per_job']} ms a job; BIER entries per node max {row['bier']['max_per_node']}, "
            f"total {row['bier']['total']}, {row['bier']['written']} written, "
            f"{row['bier']['write_ms_per_job']} ms a job",
            flush=True,
        )
    return out


def calibrate(res: dict[str, Any], holdout: int | None) -> dict[str, Any]:
    """dinet.sync.model fitted on the rows (without those of N = holdout, which it then predicts), and its answer
    to the draft's question (70 GB and 1 TB to 10, 50, 100 clouds at 10, 100, 400 Gbit/s)."""
    from dinet.sync.model import as_json, draft_table, errors, fit, loss_repairs, with_tree

    rows = res["rows"]
    train = [r for r in rows if r["n"] != holdout]
    fits = fit(train, res["link_mbit"])
    setups = tree_setup_s(res)
    if "tree" not in fits:  # runs without tree rows: BIER's fit over the same links
        fits = with_tree(fits)
    clean = [r for r in rows if r["method"] == "bier" and r["size_bytes"] == res["size_bytes"] and r["n"] == 2]
    out: dict[str, Any] = {
        "fits": as_json(fits),
        "fitted_on": sorted({r["n"] for r in train}),
        "held_out": errors(fits, [r for r in rows if r["n"] == holdout], res["link_mbit"]) if holdout else [],
        "in_sample": errors(fits, train, res["link_mbit"]),
        "repair_bytes_per_loss": loss_repairs(res.get("loss", []), clean[0]["uplink_bytes"]) if clean else None,
        "tree_setup_s": setups,
        "draft": draft_table(fits, tree_setup_s=setups),
    }
    for e in out["held_out"]:
        print(f"  model at N={e['n']} ({e['size_bytes'] >> 20} MiB), {e['method']}: predicted {e['predicted_s']} s, "
              f"measured {e['measured_s']} s ({e['error']:+.0%})", flush=True)  # fmt: skip
    return out


def tree_setup_s(res: dict[str, Any]) -> dict[int, float]:
    """A tree's per-job set-up at the draft's scale: its SR-P2MP segments (dinet.policy.p2mp, on the 404-router
    domain of bench/bier_vs_tree.py, jobs to N random clouds, median of 20) written one per request at
    P4Runtime's measured single-insert rate (bench/p4rt_writes.py's JSON where there is one, else 2,400/s)."""
    import json
    import statistics

    from dinet.lab.bier_domain import random_domain
    from dinet.policy.bift import BiftPlanner
    from dinet.policy.p2mp import p2mp_tree

    writes = Path(__file__).parent / "results" / "p4rt_writes.json"
    per_s = json.loads(writes.read_text()).get("inserts_per_s_single", 2400.0) if writes.exists() else 2400.0
    topo = random_domain(404, 808, seed=8279, bfer_every=4)
    planner = BiftPlanner(topo, 3)
    clouds = [n for n, bfr in topo.bfr_ids.items() if bfr is not None and n != "r0"]
    rng = random.Random(8296)
    out = {}
    for n in (10, 50, 100):
        counts = [len(p2mp_tree(planner, k, "r0", rng.sample(clouds, min(n, len(clouds))))) for k in range(20)]
        out[n] = round(statistics.median(counts) / per_s, 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 MiB to 2 and 4 clouds (about a minute)")
    ap.add_argument(
        "--size-mib",
        help="the model's size, or sizes comma-separated (default 64 quick, 1024 full); two sizes "
        "or more: the model (dinet.sync.model) is fitted and answers the draft's question",
    )
    ap.add_argument("--clouds", help="N values, comma-separated (default 2,4 quick; 2,4,8,16 full; up to 32)")
    ap.add_argument("--holdout", type=int, help="fit the model without the rows of this N, then predict them")
    ap.add_argument("--link-mbit", type=float, default=200.0, help="every link's rate, Mbit/s")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "modelsync.json")
    ap.add_argument("--plot", type=Path, help="only draw the plot of an earlier run's JSON (beside it, .png)")
    ap.add_argument("--calibrate", type=Path, help="only fit the model again on an earlier run's JSON (in place)")
    a = ap.parse_args()
    if a.calibrate:
        import json

        earlier = json.loads(a.calibrate.read_text())
        earlier["model"] = calibrate(earlier, a.holdout)
        write(earlier, a.calibrate)
        return 0
    if a.plot:
        import json

        plot(json.loads(a.plot.read_text()), a.plot.with_suffix(".png"))
        return 0
    if not need_root():
        return 1
    sizes = [int(x) for x in (a.size_mib or ("64" if a.quick else "1024")).split(",")]
    size = sizes[0]
    ns = [int(x) for x in (a.clouds or ("2,4" if a.quick else "2,4,8,16")).split(",")]
    leaves = max(8, -(-max(ns) // 4) * 4)  # a tree of a multiple of 4 leaves
    rate = a.link_mbit * 0.9  # UFTP's fixed rate, below the link's (headers: BIER, UDP, UFTP's own)
    rng = random.Random(8296)
    root = Path(f"/tmp/dinet-bench-modelsync-{os.getpid()}")
    res: dict[str, Any] = {
        "host": host(),
        "size_bytes": size << 20,
        "link_mbit": a.link_mbit,
        "uftp_rate_mbit": rate,
        "topology": f"three levels, {leaves} clouds",
        "rows": [],
        "setup_ms": [],
        "loss": [],
    }
    opts = {"link_mbit": a.link_mbit, "xdp": False}  # XDP redirects skip qdiscs: shaped links carry TC
    try:
        with SyncLab(f"bms{os.getpid() % 1000}", tree(leaves=leaves, redundant=True), root / "clouds", bpffs_root=BPFFS,
                     domain_options=opts) as lab:  # fmt: skip
            for mib in sizes[1:] + sizes[:1]:  # the first size last: its file is the model below
                model = root / "model.bin"
                with model.open("wb") as f:
                    for _ in range(mib):
                        f.write(rng.randbytes(1 << 20))
                print(f"modelsync: {mib} MiB, links {a.link_mbit:g} Mbit/s, {leaves} clouds", flush=True)
                for n in ns:
                    names = spread(lab, n)
                    sends = {
                        "bier": lambda names=names, model=model: bier(lab, names, model, rate),
                        "tree": lambda names=names, model=model: bier(lab, names, model, rate, trees=True),
                        "ingress": lambda names=names, model=model: ingress(lab, names, model, rate),
                        "unicast": lambda names=names, model=model: unicast(lab, names, model),
                    }
                    for method, send in sends.items():
                        res["rows"].append(measure(lab, names, model, method, send))
            small = root / "small.bin"
            small.write_bytes(rng.randbytes(256 << 10))
            res["setup"] = {"bier": [], "tree": []}
            for _ in range(10):  # a new destination set every job: a new bitstring (or a new tree)
                names = rng.sample(lab.clouds, rng.randint(1, len(lab.clouds)))
                for method in ("bier", "tree"):
                    report = lab.job(
                        small, names, progress=False, trees=lab.domain.trees() if method == "tree" else None
                    ).run()
                    res["setup"][method].append(
                        {
                            "n": len(names),
                            "setup_ms": round(report.setup_ms, 2),
                            "write_ms": round(report.write_ms, 2),
                            "entries": report.setup_entries,
                        }
                    )
                    clean(lab, names, small)
            res["setup_ms"] = [r["setup_ms"] for r in res["setup"]["bier"]]
            res["state"] = state_growth(lab, rng, (1, 10) if a.quick else (1, 10, 50, 100))
            for method, rows in res["setup"].items():
                print(
                    f"  setup per {method} job (10 destination sets): entries {[r['entries'] for r in rows]} written "
                    f"in {[r['write_ms'] for r in rows]} ms (receivers' checks too: {[r['setup_ms'] for r in rows]})",
                    flush=True,
                )
            lossy = spread(lab, 2)
            leaf_if = next(ifn for (node, _), ifn in lab.domain.ifname.items() if node == lossy[0])
            lossy_size = min(size, 32) if a.quick else size
            part = root / "lossy.bin"
            with model.open("rb") as fin, part.open("wb") as fout:  # streamed: the model may be large
                for _ in range(lossy_size):
                    fout.write(fin.read(1 << 20))
            for rate_loss in (0.01, 0.05):
                with LinkLoss(leaf_if, lab.domain.net.ns(lossy[0]), rate_loss, hook="ingress") as loss:
                    row = measure(lab, lossy, part, "bier", lambda: bier(lab, lossy, part, rate))
                    row["loss"], row["dropped"] = rate_loss, loss.counts()[1]
                res["loss"].append(row)
            res["failover"] = failover(lab, part, rate)
            res["failover_tree"] = failover(lab, part, rate, trees=True)
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    if len(sizes) > 1:
        res["model"] = calibrate(res, a.holdout)
    write(res, a.out)
    plot(res, a.out.with_suffix(".png"))
    rows = res["rows"] + res["loss"] + [res[k] for k in ("failover", "failover_tree") if k in res]
    return 0 if all(r["bytes_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
