"""Experiments over the scenarios (`dinet experiment NAME [SCENARIO]`): each runs a lab, writes results/NAME/
(summary.json, requests.jsonl, PNG plots, report.html) and returns its summary; importable from Python:

    from dinet.experiments import Options, run
    summary = run("steering", Path("topo/scenarios/cloud-edge.yaml"), Options(quick=True))
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .common import Options

# name -> (module, the scenario it runs by default)
EXPERIMENTS = {
    "steering": ("steering", "cloud-edge.yaml"),
    "tiers": ("tiers", "tiers.yaml"),
    "prefill-decode": ("prefill", "prefill-decode.yaml"),
    "modes": ("modes", "enterprise.yaml"),
    "modelsync": ("modelsync", "model-sync.yaml"),
    "cooperative": ("cooperative", "cooperative.yaml"),
    "prefix": ("prefix", "prefix.yaml"),
    "isolation": ("isolation", "isolation.yaml"),
}


def run(name: str, scenario: Path | None, opts: Options) -> dict[str, Any]:
    module, default = EXPERIMENTS[name]
    from ..paths import EBPF_DIR

    path = scenario or EBPF_DIR.parent / "topo" / "scenarios" / default
    mod = importlib.import_module(f"{__name__}.{module}")
    summary: dict[str, Any] = mod.run(path, opts)
    from .report import index

    index(opts.out)
    return summary


__all__ = ["EXPERIMENTS", "Options", "run"]
