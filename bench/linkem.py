"""Link emulation without netem, measured: a host A, a link emulator node X running dinet.lab.delayline (and a
TBF where a rate is set), a host B, in network namespaces.

For each configured one-way delay: the RTT ping measures through it (min, mean, p99 of 100 echoes 10 ms
apart; configured RTT = 2 x delay) and the TCP rate iperf3 carries in 3 s, unshaped and at 100 Mbit/s. The
figures that chose the fallback (see dinet.lab.linkem for why a node on the wire, not NFQUEUE at the ends).

    sudo .venv/bin/python -m bench.linkem [--quick] [--json bench/results/linkem.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import host, need_root, write
from dinet.lab.namespaces import Topology


def ping_stats(t: Topology, count: int) -> dict[str, float]:
    t.sh("a", "ping", "-n", "-c", "1", "-W", "2", "10.77.0.2", check=False)  # ARP first: not part of the RTT
    out = t.sh("a", "ping", "-n", "-i", "0.01", "-c", str(count), "10.77.0.2", check=False).stdout
    rtts = sorted(float(x) for x in re.findall(r"time=([\d.]+)", out))
    if not rtts:
        return {"received": 0}
    return {
        "received": len(rtts),
        "min_ms": rtts[0],
        "mean_ms": round(sum(rtts) / len(rtts), 3),
        "p99_ms": rtts[min(len(rtts) - 1, int(0.99 * (len(rtts) - 1)))],
    }


def tcp_mbit(t: Topology, seconds: int) -> float:
    server = subprocess.Popen(
        ["ip", "netns", "exec", t.ns("b"), "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(50):  # until the server listens (its port answers)
            if t.sh("b", "ss", "-ltn", check=False).stdout.count(":5201"):
                break
            time.sleep(0.05)
        out = t.sh("a", "iperf3", "-c", "10.77.0.2", "-t", str(seconds), "-J", check=False).stdout
        return round(json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6, 1)
    finally:
        server.wait(timeout=seconds + 10)


def run(delay_ms: float, rate_mbit: float | None, quick: bool) -> dict[str, object]:
    with Topology(f"le{os.getpid() % 1000}") as t:
        for n in ("a", "x", "b"):
            t.add_ns(n)
        t.link("a", "eth0", "x", "wa")
        t.link("x", "wb", "b", "eth0")
        t.addr("a", "eth0", "10.77.0.1/24")
        t.addr("b", "eth0", "10.77.0.2/24")
        for n, dev in (("a", "eth0"), ("b", "eth0")):
            t.sh(n, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", check=False)
        for dev in ("wa", "wb"):
            t.sh("x", "ethtool", "-K", dev, "gro", "off", check=False)
            if rate_mbit:
                t.sh("x", "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate_mbit}mbit", "burst", "32000",
                     "latency", "100ms")  # fmt: skip
        line = subprocess.Popen(
            ["ip", "netns", "exec", t.ns("x"), sys.executable, "-m", "dinet.lab.delayline", "wa", "wb"]
            + ["--delay-ms", str(delay_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert line.stdout is not None and line.stdout.readline().strip() == "ready"
            res: dict[str, object] = {"delay_ms": delay_ms, "rtt_configured_ms": 2 * delay_ms, "rate_mbit": rate_mbit}
            res["ping"] = ping_stats(t, 30 if quick else 100)
            res["tcp_mbit"] = tcp_mbit(t, 2 if quick else 3)
            return res
        finally:
            line.terminate()
            line.wait(timeout=10)
            if line.stdout:
                line.stdout.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "linkem.json")
    a = ap.parse_args()
    if not need_root():
        return 1
    delays = [0.0, 5.0, 25.0] if a.quick else [0.0, 1.0, 5.0, 10.0, 25.0, 50.0]
    rows = [run(d, None, a.quick) for d in delays] + [run(5.0, 100.0, a.quick)]
    print(f"{'delay':>6}{'rate':>7}{'rtt cfg':>9}{'min':>8}{'mean':>8}{'p99':>8}{'TCP Mb/s':>10}")
    for r in rows:
        p = r["ping"]
        assert isinstance(p, dict)
        print(
            f"{r['delay_ms']:>6}{r['rate_mbit'] or '-':>7}{r['rtt_configured_ms']:>9}{p.get('min_ms', 0):>8.2f}"
            f"{p.get('mean_ms', 0):>8.2f}{p.get('p99_ms', 0):>8.2f}{r['tcp_mbit']:>10}"
        )
    write({"host": host(), "quick": a.quick, "rows": rows}, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
