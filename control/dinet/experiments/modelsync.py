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

    script = EBPF_DIR.parent / "bench" / "modelsync.py"
    if not script.is_file():
        raise ConfigError(f"no {script}: the modelsync experiment runs from a source tree (pip install -e .)")
    res = Results(opts.out / "modelsync")
    out = res.folder / "summary.json"
    # quick: 16 MiB to 2 and 4 clouds (the direction shows as well; a model's size is the full run's)
    args = [sys.executable, str(script), "--out", str(out), *(["--quick", "--size-mib", "16"] if opts.quick else [])]
    if subprocess.run(args, check=False).returncode:
        raise DinetError(f"{script} failed (its output is above)")
    summary: dict[str, Any] = json.loads(out.read_text())
    summary |= {"experiment": "modelsync", "command": opts.command, "quick": opts.quick, "versions": versions()}
    out.write_text(json.dumps(summary, indent=2) + "\n")
    (res.folder / "summary.png").unlink(missing_ok=True)  # the benchmark's own plot: the report draws it again
    report(res, summary, scenario)
    return summary


def report(res: Results, summary: dict[str, Any], scenario: Path) -> Path:
    """The report of a model-sync run (its summary.json beside it; the plot drawn by the benchmark's code)."""
    from ..paths import EBPF_DIR

    sys.path.insert(0, str(EBPF_DIR.parent / "bench"))
    try:
        from modelsync import plot  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
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
