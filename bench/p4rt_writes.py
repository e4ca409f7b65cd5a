"""P4Runtime write and read rates against BMv2 simple_switch_grpc, through dinet's P4Runtime target.
Prints a table and writes bench/results/p4rt_writes.json.

Table entries of dinet.p4's `ring` table (three exact keys, one action parameter): inserted one per
WriteRequest (each waits for its answer), then in batched WriteRequests of 512, then read back in one
ReadRequest. The switch runs in a namespace of its own with no port traffic.

    sudo .venv/bin/python -m bench.p4rt_writes [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.common import host, write
from dinet.lab.namespaces import Topology
from dinet.targets.base import SteerSizes
from dinet.targets.bmv2 import Bmv2Switch, compile_p4, missing_tools
from dinet.targets.p4rt import P4RuntimeSwitch, TableEntry


def ring_entries(svc: int, n: int) -> list[TableEntry]:
    return [
        TableEntry(
            "ring",
            (("meta.svc_id", svc + i // 4099), ("meta.ring_sel", 0), ("meta.ring_idx", i % 4099)),
            "set_slot",
            (("slot", i % 256),),
        )
        for i in range(n)
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 single and 20,000 batched inserts")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "p4rt_writes.json")
    a = ap.parse_args()
    if os.geteuid() != 0 or missing_tools():
        print(f"bench: needs root and {', '.join(missing_tools()) or 'nothing else'}", file=sys.stderr)
        return 1
    n_single, n_batch = (2_000, 20_000) if a.quick else (10_000, 60_000)
    pipe = compile_p4(SteerSizes().defines())
    topo = Topology(f"bp{os.getpid() % 10000}")
    res: dict = {"host": host()}
    try:
        topo.add_ns("sw")
        with Bmv2Switch("bench", {}, topo.ns("sw")) as sw, P4RuntimeSwitch(sw.address, name="bench") as p4rt:
            p4rt.set_pipeline(pipe.p4info, pipe.json)
            single = ring_entries(0, n_single)
            t0 = time.monotonic()
            for e in single:
                p4rt.write([e])
            res["inserts_per_s_single"] = n_single / (time.monotonic() - t0)
            batched = ring_entries(10, n_batch)
            t0 = time.monotonic()
            p4rt.write(batched, batch=512)
            res["inserts_per_s_batched"] = n_batch / (time.monotonic() - t0)
            t0 = time.monotonic()
            got = p4rt.read_table("ring")
            res["reads_per_s"] = len(got) / (time.monotonic() - t0)
            res["entries_read"] = len(got)
            assert len(got) == n_single + n_batch, f"read {len(got)} entries, wrote {n_single + n_batch}"
    finally:
        topo.close()
    res.update(single_inserts=n_single, batched_inserts=n_batch, batch_size=512)
    print(f"\nP4Runtime to BMv2 simple_switch_grpc ({res['entries_read']:,} entries of the ring table)")
    print(f"  inserts/s, one per WriteRequest   {res['inserts_per_s_single']:>10,.0f}")
    print(f"  inserts/s, batches of 512         {res['inserts_per_s_batched']:>10,.0f}")
    print(f"  entries/s read back               {res['reads_per_s']:>10,.0f}")
    write(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
