"""Experiments: the statistics and the report (pure), then each experiment with --quick in Mininet, checked
for direction and sanity (never absolute times), and its report opened in a real browser (headless
Chromium) with every figure decoded."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, mininet_or_skip, needs_bcc, needs_root, wait_for
from dinet.errors import ConfigError
from dinet.experiments.common import Sampler, aggregate, class_figures, flows_moved, mean_ci, pct
from dinet.lab.scenario import SloSpec


def test_the_cli_offers_exactly_the_packages_experiments() -> None:
    """The CLI keeps its own list (its parser must not import the experiments' heavy modules): it must be
    the package's."""
    from dinet.cli import EXPERIMENTS as offered
    from dinet.experiments import EXPERIMENTS

    assert tuple(offered) == tuple(EXPERIMENTS)


def test_pooled_p99_has_a_bootstrap_interval_and_its_count() -> None:
    from dinet.experiments.common import pooled_p99

    vals = [float(v) for v in range(1, 201)]  # 1..200 ms: the p99 is 198 (nearest rank)
    q = pooled_p99(vals)
    assert q["p99"] == 198.0 and q["n"] == 200
    assert q["ci95"] is not None and q["ci95"][0] <= 198.0 <= q["ci95"][1] <= 200.0
    assert pooled_p99([5.0] * 3) == {"p99": 5.0, "n": 3, "ci95": None}  # too few to resample


def test_mean_and_confidence_interval() -> None:
    from scipy import stats

    xs = [10.0, 12.0, 14.0]
    m, h = mean_ci(xs)
    assert m == pytest.approx(12.0)
    # 95% two-sided, 2 degrees of freedom: t = 4.303, standard error 2/sqrt(3)
    assert h == pytest.approx(stats.t.ppf(0.975, 2) * 2.0 / 3**0.5)
    assert mean_ci([5.0]) == (5.0, None)
    assert mean_ci([]) == (None, None)
    assert mean_ci([3.0, 3.0]) == (3.0, 0.0)
    agg = aggregate([{"a": 1.0, "b": None}, {"a": 3.0, "b": 2.0}])
    assert agg["a"] == 2.0 and agg["b"] == 2.0 and agg["ci95"]["b"] is None and agg["repeats"] == 2


def test_percentiles_slo_and_flows_moved() -> None:
    def rec(ttft: float | None, tpot: float | None, status: str = "ok", instance: str = "e1") -> dict:  # type: ignore[type-arg]
        return {"ttft_ms": ttft, "tpot_ms": tpot, "status": status, "instance": instance, "service": "chat"}

    recs = [rec(100, 20), rec(300, 20), rec(900, 20), rec(200, 300), rec(None, None, "error: Timeout")]
    fig = class_figures(recs, {"chat": SloSpec(ttft_ms=500, tpot_ms=100)}, duration=2.0)
    assert fig["requests"] == 5 and fig["errors"] == 1
    assert fig["slo_attainment"] == pytest.approx(2 / 5)  # 100/20 and 300/20 meet both
    assert fig["goodput_rps"] == pytest.approx(1.0)
    assert fig["ttft_p50_ms"] == 250 or fig["ttft_p50_ms"] in (200, 300)
    assert pct([1, 2, 3, 4], 99) == 4 and pct([], 50) is None
    # a stream that broke after its first token, on an instance that did not fail, is a moved flow
    broken = [
        rec(120, None, "error: ClientPayloadError"),
        rec(130, None, "error: x", instance="e2"),
        rec(None, None, "http 503"),
    ]
    assert flows_moved(broken) == 2
    assert flows_moved(broken, failed={"e2"}) == 1


def test_the_sampler_goes_on_when_a_decider_stops_answering() -> None:
    """A decider killed on purpose fails its scrape (a ConfigError from dinet.promtext): the sampler skips
    that sample and keeps sampling the others; it once died there, and the run's later reactions read None."""
    calls: list[int] = []

    class View:  # what the sampler reads: the lab's view of what decides
        def prometheus(self) -> dict:
            calls.append(1)
            if len(calls) == 1:
                raise ConfigError("cannot scrape http://127.0.0.1:1/metrics: Connection refused")
            return {"dinet_reports_accepted_total": [({}, 5.0)]}

    class Lab:
        instances: dict = {}
        service_keys: dict = {}
        spec = SimpleNamespace(ingress=[])
        view = View()

    with Sampler(Lab(), time.time(), interval=0.01) as sampler:  # type: ignore[arg-type]
        assert wait_for(lambda: len(sampler.samples) >= 2), "the sampler stopped after the failed scrape"
    assert sampler.samples[0]["reports"] == 5.0


def test_reaction_is_the_time_to_the_new_split() -> None:
    s = Sampler.__new__(Sampler)
    s.samples = [
        {"t": 0.8, "weights": {"chat@in1": {"e1": 100, "e2": 0}}},
        {"t": 1.2, "weights": {"chat@in1": {"e1": 50, "e2": 0}}},
        {"t": 1.4, "weights": {"chat@in1": {"e1": 0, "e2": 100}}},
    ]
    assert s.reaction(1.0, "chat@in1", "e1") == pytest.approx(0.4)  # e1 takes no new flows from 1.4 s
    assert s.reaction(1.0, "chat@in1") == pytest.approx(0.2)  # any change
    assert s.reaction(1.0, "chat@in1", "e2") is None  # it took none before: no split to change
    assert s.reaction(1.0, "chat@in2", "e1") is None


def test_the_report_shows_every_figure_and_the_run(tmp_path: Path) -> None:
    from dinet.experiments.common import Results
    from dinet.experiments.report import steering_report
    from dinet.lab.scenario import load

    scenario = ROOT / "topo" / "scenarios" / "cloud-edge.yaml"
    res = Results(tmp_path / "steering")
    for k, policy in enumerate(("dinet", "anycast")):
        res.add(
            [
                {"t": t / 2, "cls": "delay-sensitive", "status": "ok", "ttft_ms": 100.0 + 50 * k * t, "tpot_ms": 90.0}
                | {"instance": "e1", "site": "edge1", "service": "chat"}
                for t in range(8)
            ],
            policy=policy,
            repeat=0,
        )
    row = {"delay-sensitive": {"slo_attainment": 0.9, "ci95": {"slo_attainment": 0.05}}, "delay-tolerant": None}
    summary = {
        "plan": {"events": [{"at": 1.0, "kind": "load step", "instance": "e1"}]},
        "policies": {p: row | {"flows_moved": 0, "reaction_s": {"load step": 0.4}} for p in ("dinet", "anycast")},
        "versions": {"python": "3"},
        "command": "dinet experiment steering <tricky & escaped>",
        "repeats": 1,
        "seed": 1,
        "quick": True,
        "target": "xdp",
    }
    page = steering_report(res, summary, load(scenario), scenario, {"mode": "central"}, {}).read_text()
    for png in ("ttft_cdf.png", "load_per_site.png", "slo_attainment.png"):
        assert (res.folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{png}"' in page
    assert "&lt;tricky &amp; escaped&gt;" in page  # escaped, not raw HTML
    assert "cloud-edge" in page and "mode: central" in page


# ---- the experiments, quick, in Mininet -------------------------------------------------------------------
def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI"):
        pytest.fail("chromium is not installed (make test installs it: scripts/install.sh --test)")
    return found


def _opens_in_a_browser(report: Path, tmp_path: Path, figures: int = 3) -> None:
    """The report loads in headless Chromium with every image decoded, and renders a non-blank page."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH")
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path}/chromium",
    ]
    dom = subprocess.run([*args, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    imgs = report.read_text().count("<img ")
    assert imgs == figures and f'data-images="{imgs}/{imgs}"' in dom.stdout, dom.stdout[:300]
    shot = tmp_path / "report.png"
    subprocess.run(
        [*args, f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri()], capture_output=True, timeout=120
    )
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] == 1600 and pixels.std() > 0.05  # something drawn, not a blank page


def _experiment(name: str, out: Path, *args: str) -> dict:  # type: ignore[type-arg]
    mininet_or_skip()
    cmd = [sys.executable, "-m", "dinet.cli", "experiment", name, *args, "--quick", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=840)
    finally:  # a test stopped (its timeout, Ctrl-C): the experiment stops its lab itself on SIGINT
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    folder = out / name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["quick"] is True and summary["command"].startswith("dinet experiment")
    lines = (folder / "requests.jsonl").read_text().splitlines() if name != "modelsync" else []
    if name != "modelsync":  # every request recorded with its outcome, and most of them answered
        status = [json.loads(x)["status"] for x in lines]
        odd = [x for x in status if not re.fullmatch(r"ok|http \d{3}|error: .+", x)]
        assert status and not odd, odd[:5]
        assert status.count("ok") >= len(status) / 2, Counter(status).most_common(5)
    assert (out / "index.html").read_text().count(f"{name}/report.html") == 1
    return summary


@needs_root
@needs_bcc
def test_steering_dinet_wins_where_compute_matters_and_where_the_network_matters(tmp_path: Path) -> None:
    """The nearest edge's own users fill it (compute matters: nearest-site anycast must lose) while the cloud,
    with the most capacity, sits behind a 500 ms path (the network matters: compute-only must lose); dinet
    loses to neither, nor to any other baseline but the oracle. Both classes on the same engines (the draft's
    mixed case, cloud-edge-mixed): dinet leaves the near edges to the delay-sensitive chat and sends the
    delay-tolerant batch on, to the far site with room, and still meets the batch's SLO."""
    s = _experiment("steering", tmp_path / "results", str(ROOT / "topo" / "scenarios" / "cloud-edge-mixed.yaml"))
    pol = s["policies"]
    assert set(pol) == {
        "dinet", "dinet-two-choices", "anycast", "compute-only", "round-robin", "random", "least-queue", "oracle"
    }  # fmt: skip
    sens = {p: v["delay-sensitive"] for p, v in pol.items()}
    for key in ("ttft_p50_ms", "ttft_p99_ms", "tpot_p99_ms", "slo_attainment"):
        assert all(v[key] is not None for v in sens.values()), key
    dinet = sens["dinet"]
    assert dinet["slo_attainment"] > sens["anycast"]["slo_attainment"]
    assert dinet["ttft_p99_ms"] < sens["anycast"]["ttft_p99_ms"]
    assert dinet["slo_attainment"] > sens["compute-only"]["slo_attainment"]
    assert dinet["ttft_p99_ms"] < sens["compute-only"]["ttft_p99_ms"]
    for p in ("round-robin", "random", "least-queue"):
        assert dinet["slo_attainment"] >= sens[p]["slo_attainment"], p
    tol = pol["dinet"]["delay-tolerant"]
    assert tol["far_share"] > dinet["far_share"]  # the batch gives up the near edges first
    # and is not stuck behind the stepped edge as anycast's is (a quick run's 28 batch requests: one request
    # is 0.04 of it, so no closer ordering against the spreading baselines is asked of it here)
    assert tol["slo_attainment"] > pol["anycast"]["delay-tolerant"]["slo_attainment"]
    assert all(p["flows_moved"] == 0 for p in pol.values())  # every policy keeps flow affinity
    assert pol["dinet"]["reaction_s"]["path delay rise"] is not None  # dinet took the slow site out of new flows
    assert pol["compute-only"]["reaction_s"]["path delay rise"] is None  # compute-only never does
    _opens_in_a_browser(tmp_path / "results" / "steering" / "report.html", tmp_path)


@needs_root
@needs_bcc
def test_isolation_a_sync_over_one_fifo_slows_inference_and_classes_keep_it_out(tmp_path: Path) -> None:
    """A model sync sharing the edges' 50 Mbit/s links raises the chat's TTFT over one FIFO per link; with
    traffic classes (DSCP marked where traffic starts, HTB by class) the chat's packets pass the sync's queue
    while the sync still moves data; the classifier put packets of both classes where they belong."""
    s = _experiment("isolation", tmp_path / "results")
    runs = s["runs"]
    assert set(runs) == {"no-sync", "sync", "sync-classes"}
    # the median moves by the queue's delay (a p99 of a quick run's few dozen requests is nearly its maximum)
    assert runs["sync"]["ttft_p50_ms"] > runs["no-sync"]["ttft_p50_ms"]
    assert runs["sync-classes"]["ttft_p50_ms"] < runs["sync"]["ttft_p50_ms"]
    assert runs["sync"]["sync_mbit"] > 0 and runs["sync-classes"]["sync_mbit"] > 0 and runs["no-sync"]["sync_mbit"] == 0
    assert all(r["errors"] == 0 for r in runs.values())
    classified = list(s["class_packets"].values())  # per link: class -> packets
    assert sum(c.get("delay-sensitive", 0) for c in classified) > 0 and sum(c.get("sync", 0) for c in classified) > 0
    # where the CPU went: the delay lines forward the sync's frames (more of their time with it than without)
    assert runs["sync"]["delay_lines_cores"] > runs["no-sync"]["delay_lines_cores"] > 0
    assert all(r["machine_cores"] >= r["delay_lines_cores"] + r["edge_servers_cores"] - 0.1 for r in runs.values())


@needs_root
@needs_bcc
def test_modes_distributed_keeps_deciding_when_a_decider_dies_and_central_freezes(tmp_path: Path) -> None:
    s = _experiment("modes", tmp_path / "results")
    central, distributed = s["modes"]["central"], s["modes"]["distributed"]
    for m in (central, distributed):
        assert m["reaction overload@br1"] is not None and m["reaction overload@br2"] is not None
        assert m["flows_moved"] == 0 and m["errors_after_death"] == 0 and m["requests_after_death"] > 0
        assert m["control_msgs_per_s"] > 0
    # central: nothing decides after the controller dies (the weights stay frozen in the data plane)
    assert central["reaction overload after the death@br1"] is None
    assert central["reaction overload after the death@br2"] is None
    assert central["keeps_deciding_after_death"] is False
    # distributed: the dead decider's node is frozen, the other decides on
    assert distributed["reaction overload after the death@br1"] is None
    assert distributed["reaction overload after the death@br2"] is not None
    assert distributed["keeps_deciding_after_death"] is True
    assert distributed["control_msgs_per_s"] > central["control_msgs_per_s"]  # every decider takes every report
    _opens_in_a_browser(tmp_path / "results" / "modes" / "report.html", tmp_path)


@needs_root
@needs_bcc
def test_tiers_dinet_keeps_the_large_tier_until_it_is_full_and_returns(tmp_path: Path) -> None:
    s = _experiment("tiers", tmp_path / "results")
    pol = s["policies"]
    dinet = pol["dinet"]
    assert dinet["steps"][0]["large_share"] == 1.0  # light load: the large tier serves everything
    assert dinet["degraded_at_s"] is not None and dinet["degraded_at_s"] > 0  # degrades under the top step
    # recovers after the fall: the last request a lower tier served came before the run's end (its queue
    # drained, every later one on the large tier)
    fall = s["plan"]["duration"] - s["plan"]["fall_at"]
    assert dinet["recovered_after_s"] is not None and dinet["recovered_after_s"] < fall
    assert dinet["large_share"] > pol["anycast"]["large_share"]  # anycast serves the nearest, small tier
    assert {"least-queue", "oracle", "round-robin", "random"} <= set(pol)  # every baseline, the pickers too
    assert all(p["flows_moved"] == 0 for p in pol.values())
    _opens_in_a_browser(tmp_path / "results" / "tiers" / "report.html", tmp_path)


@needs_root
@needs_bcc
def test_prefill_decode_dinet_hands_kv_caches_over_faster_than_random(tmp_path: Path) -> None:
    s = _experiment("prefill-decode", tmp_path / "results")
    pol = s["policies"]
    # the mean: random's median may fall on either path by chance; its mean holds its far sessions
    assert pol["dinet"]["kv_ms_mean"] < pol["random"]["kv_ms_mean"]
    share = {p: r["sessions"]["dcnear"] / max(1, sum(r["sessions"].values())) for p, r in pol.items()}
    assert share["dinet"] > share["random"]  # the path that delivers the KV cache first
    for p in pol.values():
        assert p["errors"] == 0 and p["flows_moved"] == 0
        for site, sent in p["kv_bytes"].items():
            assert p["link_rx_bytes"][site] >= sent  # the KV caches really crossed the site's link
    _opens_in_a_browser(tmp_path / "results" / "prefill-decode" / "report.html", tmp_path)


@needs_root
@needs_bcc
def test_modelsync_appears_with_the_other_experiments(tmp_path: Path) -> None:
    s = _experiment("modelsync", tmp_path / "results")
    assert s["rows"] and all(r["bytes_identical"] for r in s["rows"])
    top = max(r["n"] for r in s["rows"])
    up = {r["method"]: r["uplink_bytes"] for r in s["rows"] if r["n"] == top}
    assert up["bier"] < up["unicast"] and up["tree"] < up["unicast"]  # one copy leaves the repository
    state = {r["method"]: r["state_entries"] for r in s["rows"] if r["n"] == top and "state_entries" in r}
    assert state["tree"] > state["bier"] > 0  # a tree's segments on its nodes; BIER: the BFIR's entries alone
    _opens_in_a_browser(tmp_path / "results" / "modelsync" / "report.html", tmp_path, figures=1)


@needs_root
@needs_bcc
@pytest.mark.timeout(900)  # 18 arms of about 15 s
def test_cooperative_dinet_picks_partners_that_pay_off_and_split_inference_follows_the_uplink(tmp_path: Path) -> None:
    """Speculative decoding under a load step at the nearest edge: dinet's sessions verify elsewhere and
    stream more tokens per second than the nearest verifier's, at a quality above the device's own model's.
    Split inference: a drop of the devices' uplink moves the split point towards the device (more requests
    all on premises after it). Every paradigm has every baseline that applies, and what it measures."""
    s = _experiment("cooperative", tmp_path / "results")
    par = s["paradigms"]
    want = {"dinet", "nearest", "least-loaded", "random", "device-alone", "cloud-alone"}
    keys = {"ttft_p50_ms", "tokens_per_s", "e2e_p99_ms", "quality", "uplink_bytes", "slo_attainment"}
    for name in ("speculative", "split", "cascade"):
        assert set(par[name]["policies"]) == want, name
        for pol, row in par[name]["policies"].items():
            assert keys <= set(row) and row["errors"] == 0 and row["tokens_per_s"], (name, pol, row)
    spec = par["speculative"]["policies"]
    assert spec["dinet"]["tokens_per_s"] >= spec["nearest"]["tokens_per_s"]
    assert spec["dinet"]["after_event_on_nearest"] < spec["nearest"]["after_event_on_nearest"] == 1.0
    assert spec["dinet"]["quality"] > spec["device-alone"]["quality"]
    assert spec["device-alone"]["uplink_bytes"] < 1000 < spec["dinet"]["uplink_bytes"]  # a stray ARP at most
    split = par["split"]["policies"]
    assert split["dinet"]["split_before"] > split["dinet"]["split_after"]  # towards the device after the drop
    assert split["dinet"]["activation_bytes"] > 0 and split["device-alone"]["uplink_bytes"] < 1000
    casc = par["cascade"]["policies"]
    assert 0 < casc["dinet"]["escalated"] < 1 and casc["dinet"]["quality"] > casc["device-alone"]["quality"]
    _opens_in_a_browser(tmp_path / "results" / "cooperative" / "report.html", tmp_path)


@needs_root
@needs_bcc
@pytest.mark.timeout(900)
def test_prefix_sessions_keep_conversations_where_their_cache_is_as_an_l7_router_does(tmp_path: Path) -> None:
    """Multi-turn conversations with prefix-caching instances: the session-affine data plane keeps every later
    turn on its conversation's instance and finds more of each prompt cached than per-flow placement, and
    comes near the L7 prefix-aware router (within 10 points in a quick run; the README gives the full run's
    figures against the goal of 5). The summary has the issue's shape; the data plane counted the sessions."""
    s = _experiment("prefix", tmp_path / "results")
    pol = s["policies"]
    assert set(pol) == {"session", "five-tuple", "l7-prefix"}
    for row in pol.values():
        assert {"hit_rate", "ttft_p50_ms", "ttft_p99_ms", "tokens_per_s"} <= set(row) and row["tokens_per_s"] > 0
    sess, flow, l7 = pol["session"], pol["five-tuple"], pol["l7-prefix"]
    assert sess["stayed"] > 0.9 > 0.6 > flow["stayed"]  # later turns on the previous turn's instance
    assert sess["hit_rate"] > flow["hit_rate"] + 0.05 and sess["hit_rate"] > l7["hit_rate"] - 0.10
    assert sess["sessions"] > 0 and sess["session_flows"] > 0 and flow["sessions"] == 0
    _opens_in_a_browser(tmp_path / "results" / "prefix" / "report.html", tmp_path, figures=4)
