"""`dinet experiment modelsync`: one model to N GPU clouds over BIER, against ingress replication and
unicast HTTP (the benchmark bench/modelsync.py of the source tree, whose figures it takes), in the same
results folder and report shape as the other experiments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DinetError
from .common import Options, Results, versions
from .report import write_html


def run(scenario: Path, opts: Options) -> dict[str, Any]:
    from ..paths import EBPF_DIR

    tree = EBPF_DIR.parent
    script = tree / "bench" / "modelsync.py"
    if not script.is_file():
        raise ConfigError(f"no {script}: the modelsync experiment runs from a source tree (pip install -e .)")
    res = Results(opts.out / "modelsync")
    out = res.folder / "summary.json"
    # quick: 16 MiB to 2 and 4 clouds (the direction shows as well; a model's size is the full run's)
    args = [sys.executable, "-m", "bench.modelsync", "--out", str(out)]
    args += ["--quick", "--size-mib", "16"] if opts.quick else []
    if subprocess.run(args, cwd=tree, check=False).returncode:
        raise DinetError(f"{script} failed (its output is above)")
    summary: dict[str, Any] = json.loads(out.read_text())
    summary |= {"experiment": "modelsync", "command": opts.command, "quick": opts.quick, "versions": versions()}
    out.write_text(json.dumps(summary, indent=2) + "\n")
    (res.folder / "summary.png").unlink(missing_ok=True)  # the benchmark's own plot: the report draws it again
    report(res, summary, scenario)
    return summary


def plot(res: dict[str, Any], out: Path) -> None:
    """Completion time and bytes on the repository's uplink per method and N (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in ("bier", "tree", "ingress", "unicast") if any(r["method"] == m for r in res["rows"])]
    ns = sorted({r["n"] for r in res["rows"]})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        rows = {r["n"]: r for r in res["rows"] if r["method"] == m}
        xs = [i + (k - 1) * width for i in range(len(ns))]
        ax1.bar(xs, [rows[n]["completion_s"] if n in rows else 0 for n in ns], width, label=m)
        ax2.bar(xs, [rows[n]["uplink_bytes"] / 2**20 if n in rows else 0 for n in ns], width, label=m)
    for ax, title in ((ax1, "slowest cloud done (s)"), (ax2, "repository uplink (MiB)")):
        ax.set_xticks(range(len(ns)), [f"N={n}" for n in ns])
        ax.set_title(title, fontsize=10)
    ax1.legend(fontsize=8)
    fig.suptitle(f"{res['size_bytes'] >> 20} MiB to N clouds, links {res['link_mbit']:g} Mbit/s", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def report(res: Results, summary: dict[str, Any], scenario: Path) -> Path:
    """The report of a model-sync run (its summary.json beside it)."""
    plot(summary, res.folder / "modelsync.png")
    rows = [
        [
            r["method"],
            str(r["n"]),
            f"{r['completion_s']:.2f}",
            f"{r['uplink_bytes'] / 2**20:.1f}",
            str(r["bytes_identical"]),
        ]
        for r in summary["rows"]
    ]
    table = {
        "title": "per method and number of clouds",
        "header": ["method", "clouds", "completion (s)", "bytes on the repository's uplink (MiB)", "byte-identical"],
        "rows": rows,
    }
    return write_html(
        res,
        {
            "title": "modelsync",
            "question": "How fast does one model reach N GPU clouds over BIER, against ingress replication and HTTP?",
            "summary": {"repeats": 1, "seed": "-", "quick": summary.get("quick"), "target": "eBPF (TC)"},
            "figures": ["modelsync.png"],
            "tables": [table],
            "scenario": scenario.read_text() if scenario.is_file() else "",
            "intent": "(bench/modelsync.py builds the BIER domain itself)",
            "versions": summary.get("versions", {}),
            "command": summary.get("command", ""),
            "plan": "",
        },
    )
