"""The README's demo, on both steering targets: every established connection survives the weight change and
the drain, and the drained instance takes no new request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, bmv2_tools_or_skip, needs_bcc, needs_root

pytestmark = [needs_root, needs_bcc]


@pytest.mark.parametrize("target", ["xdp", "bmv2"])
def test_demo(target: str, tmp_path: Path) -> None:
    if target == "bmv2":
        bmv2_tools_or_skip()
    out = tmp_path / "demo.json"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "topo.steer_demo",
            "--target",
            target,
            "--requests",
            "60",
            "--connections",
            "8",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["survived"] == r["connections"] == 8
    assert r["drained_new_requests"] == 0
    assert sum(r["new_flows"].values()) == 8 + 3 * 60
    assert "established connections: 8/8" in res.stdout


@pytest.mark.parametrize("target", ["xdp", "bmv2"])
def test_inference_demo(target: str, tmp_path: Path) -> None:
    """`make demo`: dinet serve instances, metric agents, dinet load: the overloaded edge takes no new
    request while every stream open on it finishes with all its tokens."""
    if target == "bmv2":
        bmv2_tools_or_skip()
    out = tmp_path / "demo.json"
    res = subprocess.run(
        [sys.executable, "-m", "topo.inference_demo", "--target", target, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    r = json.loads(out.read_text())
    edge = {"s1a", "s1b"}
    assert set(r["before"]) <= edge and sum(r["before"].values()) > 0  # delay-sensitive: the nearest site
    assert r["streams_total"] > 0 and r["streams_finished"] == r["streams_total"]
    assert set(r["streams"]) <= edge
    assert r["edge_after"] == 0 and sum(r["after"].values()) > 0
