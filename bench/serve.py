"""How much load one `dinet serve` process takes on one core, and how much `dinet load` sends from one core.
The server runs the bench-fast profile (20 ms decode steps, no batch limit): the engine's own time is fixed,
so what grows with the rate is the server's (HTTP, SSE, the event loop). For each rate the time to first
token seen by the client is compared with the engine's own (vLLM's TTFT histogram on /metrics): the server
keeps up while the difference stays within 5 ms. The server is pinned to CPU 0, the load generator to CPU 1.

    .venv/bin/python -m bench.serve [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import free_port, host, write
from dinet.workload.load import LoadSpec, run_load


def engine_ttft(url: str) -> tuple[float, float]:
    """(sum, count) of the server's own TTFT histogram."""
    from dinet.promtext import fetch, samples

    vals = {name: value for name, _, value in samples(fetch(f"{url}/metrics", timeout=5))}
    return vals.get("vllm:time_to_first_token_seconds_sum", 0.0), vals.get(
        "vllm:time_to_first_token_seconds_count", 0.0
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s per rate, rates up to 400/s")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    a = ap.parse_args()
    rates = [25, 50, 100, 200, 400] if a.quick else [25, 50, 100, 200, 300, 400, 600, 800]
    seconds, out_tokens = (3.0, 32) if a.quick else (8.0, 32)
    port = free_port()
    cmd = [sys.executable, "-m", "dinet.cli", "serve", "--listen", f"127.0.0.1:{port}", "--profile", "bench-fast"]
    if os.cpu_count() and os.cpu_count() > 1:
        cmd = ["taskset", "-c", "0", *cmd]
        os.sched_setaffinity(0, {1})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        assert proc.stdout and proc.stdout.readline().startswith("ready")
        for rate in rates:
            s0, c0 = engine_ttft(url)
            t0 = time.monotonic()
            recs = asyncio.run(
                run_load(
                    LoadSpec(
                        url,
                        duration=seconds,
                        schedule=[(0.0, float(rate))],
                        prompt_tokens=(16, 16),
                        max_tokens=(out_tokens, out_tokens),
                        seed=rate,
                    ),
                    progress=False,
                )
            )
            wall = time.monotonic() - t0
            s1, c1 = engine_ttft(url)
            ok = [r for r in recs if r.status == "ok" and r.ttft_ms is not None]
            client = sorted(r.ttft_ms for r in ok)[len(ok) // 2] if ok else float("nan")
            engine = (s1 - s0) / (c1 - c0) * 1000 if c1 > c0 else float("nan")
            row = {
                "rate": rate,
                "sent": len(recs),
                "ok": len(ok),
                "client_ttft_p50_ms": client,
                "engine_ttft_mean_ms": engine,
                "overhead_ms": client - engine,
                "tokens_per_s": sum(r.completion_tokens for r in ok) / wall,
                "requests_per_s": len(ok) / wall,
                "load_sent_per_s": len(recs) / seconds,
            }
            rows.append(row)
            print(
                f"rate {rate:>4}/s: {row['requests_per_s']:7.1f} req/s, {row['tokens_per_s']:8.0f} tok/s, "
                f"TTFT client p50 {client:6.1f} ms vs engine {engine:6.1f} ms (overhead {client - engine:5.1f} ms)"
            )
            if len(ok) < len(recs) or client - engine > 50:
                break
    finally:
        proc.terminate()
        proc.wait()
    within = [r for r in rows if r["overhead_ms"] <= 5 and r["ok"] == r["sent"]]
    best = max(within, key=lambda r: r["requests_per_s"]) if within else None
    res = {
        "host": host(),
        "profile": "bench-fast",
        "output_tokens": out_tokens,
        "rows": rows,
        "max_requests_per_s_within_5ms": best["requests_per_s"] if best else None,
        "max_tokens_per_s_within_5ms": best["tokens_per_s"] if best else None,
        "load_max_sent_per_s": max(r["load_sent_per_s"] for r in rows),
    }
    print(
        f"one core: dinet serve keeps TTFT within 5 ms of its engine up to {res['max_requests_per_s_within_5ms']} "
        f"req/s ({res['max_tokens_per_s_within_5ms']} tok/s); dinet load sent up to {res['load_max_sent_per_s']:.0f}/s"
    )
    write(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
