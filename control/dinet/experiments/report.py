"""Plots (matplotlib, headless) and the HTML report of an experiment run (a Jinja2 template, escaped).

The report shows the plots, the tables, the scenario and the intent used, the versions and the command that
reproduces the run. It checks its own figures when opened: once the page has loaded it writes, on its body,
how many of its images decoded (`data-images="N/M"`): a browser test reads that back."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import yaml

from ..lab.scenario import ScenarioSpec
from .common import Results

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLOURS = {
    "dinet": "#1b7837",
    "dinet-two-choices": "#5aae61",
    "dinet-ring": "#a6dba0",
    "anycast": "#d6604d",
    "compute-only": "#4393c3",
    "round-robin": "#8c6bb1",
    "random": "#999999",
    "least-queue": "#e08214",
    "oracle": "#000000",
    "central": "#d6604d",
    "distributed": "#1b7837",
    "session": "#1b7837",
    "five-tuple": "#d6604d",
    "l7-prefix": "#4393c3",
}


def _plt() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _saved(fig: Figure, path: Path) -> str:
    """Lays the figure out, writes it as a PNG and closes it; its file name (what the report links)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path.name


def _log_x(ax: Axes) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels overlap


def ttft_cdf(res: Results, groups: list[str], key: str, path: Path, title: str) -> str:
    """CDFs of the delay-sensitive (else any) requests' TTFT, one line per group (policy, mode)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for g in groups:
        rs = [r for r in res.records if r.get(key) == g and r["status"] == "ok" and r["ttft_ms"] is not None]
        sens = [r["ttft_ms"] for r in rs if r["cls"] == "delay-sensitive"] or [r["ttft_ms"] for r in rs]
        if not sens:
            continue
        xs = sorted(sens)
        ys = [(k + 1) / len(xs) for k in range(len(xs))]
        ax.step(xs, ys, where="post", label=g, color=COLOURS.get(g))
    _log_x(ax)
    ax.set_xlabel("time to first token (ms, log)")
    ax.set_ylabel("share of requests")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _saved(fig, path)


def load_per_site(
    res: Results, groups: list[str], key: str, events: list[dict[str, Any]], path: Path, bin_s: float = 1.0
) -> str:
    """Requests started per second at each site over time, one panel per group, the events marked (repeat 0)."""
    plt = _plt()
    sites = sorted({r["site"] for r in res.records if r.get("site")})
    fig, axes = plt.subplots(len(groups), 1, figsize=(7.0, 1.9 * len(groups) + 0.6), sharex=True, squeeze=False)
    for ax, g in zip(axes[:, 0], groups, strict=True):
        rs = [r for r in res.records if r.get(key) == g and r.get("repeat", 0) == 0 and r.get("site")]
        end = max((r["t"] for r in rs), default=0.0)
        nbins = int(end / bin_s) + 1
        for site in sites:
            counts = [0] * nbins
            for r in rs:
                if r["site"] == site:
                    counts[int(r["t"] / bin_s)] += 1
            ax.plot([k * bin_s for k in range(nbins)], [c / bin_s for c in counts], label=site, drawstyle="steps-post")
        for e in events:
            ax.axvline(e["at"], color="k", ls="--", lw=0.8)
            ax.text(e["at"], ax.get_ylim()[1] * 0.95, f" {e['kind']}", fontsize=7, va="top")
        ax.set_ylabel(f"{g}\nreq/s", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=max(1, len(sites)))
    axes[-1, 0].set_xlabel("time from the start (s)")
    return _saved(fig, path)


def bars(rows: dict[str, dict[str, Any] | None], metric: str, path: Path, title: str, ylabel: str) -> str:
    """One bar per group and class with its 95% confidence interval."""
    plt = _plt()
    groups = list(rows)
    classes = sorted({c for r in rows.values() if r for c, v in r.items() if isinstance(v, dict) and metric in v})
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    width = 0.8 / max(1, len(classes))
    for k, cls in enumerate(classes):
        vals, errs = [], []
        for g in groups:
            row = (rows[g] or {}).get(cls) or {}
            vals.append(row.get(metric) or 0.0)
            errs.append((row.get("ci95") or {}).get(metric) or 0.0)
        xs = [i + (k - (len(classes) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, vals, width, yerr=errs, capsize=3, label=cls, color=["#1b7837", "#4393c3"][k % 2], alpha=0.85)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _saved(fig, path)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}"
    return str(v)


def _cell(row: dict[str, Any], metric: str) -> str:
    """`mean ± ci95` of one metric of an aggregated row (the mean alone with one repeat)."""
    ci = (row.get("ci95") or {}).get(metric)
    return _fmt(row.get(metric)) + (f" ± {_fmt(ci)}" if ci is not None else "")


def table(rows: dict[str, dict[str, Any] | None], cls: str, metrics: list[str]) -> dict[str, Any]:
    """A table for the template: header, and per group its metrics as `mean ± ci95`."""
    body = []
    for g, row in rows.items():
        r = (row or {}).get(cls) or {}
        body.append([g, *(_cell(r, m) for m in metrics)])
    return {"title": cls, "header": ["", *metrics], "rows": body}


def write_html(res: Results, context: dict[str, Any]) -> Path:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    page = env.get_template("report.html.j2").render(**context)
    path = res.folder / "report.html"
    path.write_text(page)
    return path


def page(
    res: Results,
    title: str,
    question: str,
    summary: dict[str, Any],
    figures: list[str],
    tables: list[dict[str, Any]],
    scenario: Path,
    intent: dict[str, Any] | str,
    plan: dict[str, Any] | None = None,
) -> Path:
    """An experiment's report.html: its question, figures and tables, the scenario and intent it ran, the
    versions and the command that reproduces it, the plan."""
    return write_html(
        res,
        {
            "title": title,
            "question": question,
            "summary": summary,
            "figures": figures,
            "tables": tables,
            "scenario": scenario.read_text(),
            "intent": intent if isinstance(intent, str) else yaml.safe_dump(intent, sort_keys=False),
            "versions": summary["versions"],
            "command": summary["command"],
            "plan": yaml.safe_dump(plan if plan is not None else summary["plan"], sort_keys=False),
        },
    )


CLASS_NAMES = ("delay-sensitive", "delay-tolerant")


def steering_report(
    res: Results,
    summary: dict[str, Any],
    spec: ScenarioSpec,
    scenario: Path,
    intent: dict[str, Any],
    timelines: dict[str, list[dict[str, Any]]],
) -> Path:
    policies = list(summary["policies"])
    figs = [
        ttft_cdf(res, policies, "policy", res.folder / "ttft_cdf.png", f"TTFT per policy ({spec.name})"),
        load_per_site(res, policies, "policy", summary["plan"]["events"], res.folder / "load_per_site.png"),
        bars(summary["policies"], "slo_attainment", res.folder / "slo_attainment.png", "SLO attainment", "share"),
    ]
    metrics = ["ttft_p50_ms", "ttft_p99_ms", "tpot_p99_ms", "slo_attainment", "goodput_rps"]
    tables = [table(summary["policies"], c, metrics) for c in ("delay-sensitive", "delay-tolerant")]
    tables = [t for t in tables if any(c != "-" for row in t["rows"] for c in row[1:])]
    kinds = [e["kind"] for e in summary["plan"]["events"]]
    extra = {
        "title": "per policy",
        "header": ["", "established flows moved", *(f"{k}: time to the new split (s)" for k in kinds)],
        "rows": [
            [p, str(row["flows_moved"]), *(_fmt(row["reaction_s"].get(k)) for k in kinds)]
            for p, row in summary["policies"].items()
        ],
    }

    def pooled(row: dict[str, Any] | None) -> str:
        if not row or not row.get("ttft_p99_pooled"):
            return "-"
        q = row["ttft_p99_pooled"]
        ci = f" [{_fmt(q['ci95'][0])}, {_fmt(q['ci95'][1])}]" if q["ci95"] else ""
        return f"{_fmt(q['p99'])}{ci} (n={q['n']})"

    p99 = {
        "title": "TTFT p99 of every repeat's requests pooled (ms), bootstrap 95% interval, requests behind it",
        "header": ["", *CLASS_NAMES],
        "rows": [[p, *(pooled(row.get(c)) for c in CLASS_NAMES)] for p, row in summary["policies"].items()],
    }
    return page(
        res,
        f"steering: {spec.name}",
        "Does steering on compute and network metrics pay off, when, and by how much? " + summary.get("hygiene", ""),
        summary,
        figs,
        [*tables, p99, extra],
        scenario,
        intent,
    )


def index(out: Path) -> Path:
    """OUT/index.html: every experiment's report in the results folder, with its figures."""
    import html

    parts = ["<!doctype html><meta charset='utf-8'><title>dinet experiments</title>", "<h1>dinet experiments</h1>"]
    for rep in sorted(out.glob("*/report.html")):
        name = rep.parent.name
        parts.append(f"<h2><a href='{html.escape(name)}/report.html'>{html.escape(name)}</a></h2>")
        parts += [
            f"<img src='{html.escape(name)}/{html.escape(p.name)}' width='480'>"
            for p in sorted(rep.parent.glob("*.png"))
        ]
    path = out / "index.html"
    path.write_text("\n".join(parts) + "\n")
    return path


def weights_over_time(
    timelines: dict[str, list[dict[str, Any]]], service: str, instance: str, events: list[dict[str, Any]], path: Path
) -> str:
    """The weight of `instance` on each ingress node over time, one panel per mode, the events marked."""
    plt = _plt()
    fig, axes = plt.subplots(len(timelines), 1, figsize=(7.0, 2.2 * len(timelines) + 0.6), sharex=True, squeeze=False)
    for ax, (mode, samples) in zip(axes[:, 0], timelines.items(), strict=True):
        keys = sorted({k for s in samples for k in s["weights"] if k.startswith(f"{service}@")})
        end = max((s["t"] for s in samples), default=0.0)
        for key in keys:
            pts = [(s["t"], s["weights"][key].get(instance, 0)) for s in samples if key in s["weights"]]
            line = ax.plot([t for t, _ in pts], [w for _, w in pts], drawstyle="steps-post", label=key.split("@")[1])
            if pts and pts[-1][0] < end - 0.5:  # nothing decides for it any more: the data plane keeps the weight
                ax.plot([pts[-1][0], end], [pts[-1][1]] * 2, ls=":", color=line[0].get_color())
        for e in events:
            ax.axvline(e["at"], color="k", ls="--", lw=0.8)
            ax.text(e["at"], 1.0, f" {e['kind']}", fontsize=7, va="top", transform=ax.get_xaxis_transform())
        ax.set_ylabel(f"{mode}\nweight of {instance}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=7)
    axes[-1, 0].set_xlabel("time from the start (s)")
    return _saved(fig, path)


def reaction_bars(summary: dict[str, Any], path: Path) -> str:
    """Time from each overload to the new split per mode and ingress node, with 95% intervals; a missing bar
    is a node that never reacted (its decider dead, or the central controller)."""
    plt = _plt()
    modes = list(summary["modes"])
    keys = sorted({k for m in modes for k in summary["modes"][m] if k.startswith("reaction overload")})
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    width = 0.8 / max(1, len(modes))
    for j, mode in enumerate(modes):
        row = summary["modes"][mode]
        vals = [row.get(k) for k in keys]
        errs = [(row.get("ci95") or {}).get(k) or 0.0 for k in keys]
        xs = [i + (j - (len(modes) - 1) / 2) * width for i in range(len(keys))]
        ax.bar(xs, [v or 0.0 for v in vals], width, yerr=errs, capsize=3, label=mode, color=COLOURS.get(mode))
        for x, v in zip(xs, vals, strict=True):
            if v is None:
                ax.text(x, 0.0, "none", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(keys)), [k.removeprefix("reaction ").replace("@", "\n@") for k in keys], fontsize=7)
    ax.set_ylabel("seconds to the new split")
    ax.set_title("reaction per ingress node")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _saved(fig, path)


def modes_report(
    res: Results,
    summary: dict[str, Any],
    spec: ScenarioSpec,
    scenario: Path,
    intents: dict[str, Any],
    timelines: dict[str, list[dict[str, Any]]],
) -> Path:
    plan = summary["plan"]
    instance = plan["events"][0]["instance"]
    figs = [
        weights_over_time(timelines, plan["service"], instance, plan["events"], res.folder / "weights_over_time.png"),
        reaction_bars(summary, res.folder / "reaction.png"),
        ttft_cdf(res, list(summary["modes"]), "mode", res.folder / "ttft_cdf.png", f"TTFT per mode ({spec.name})"),
    ]
    metrics = [k for k in next(iter(summary["modes"].values())) if k not in ("ci95", "repeats")]
    rows = [[mode, *(_cell(row, m) for m in metrics)] for mode, row in summary["modes"].items()]
    table_ = {"title": "per mode", "header": ["", *metrics], "rows": rows}
    return page(
        res,
        f"modes: {spec.name}",
        "Central or distributed decisions: how fast does each react, what does it cost, and what "
        "happens when a decider dies?",
        summary,
        figs,
        [table_],
        scenario,
        "\n".join(f"# mode {m}\n{yaml.safe_dump(i, sort_keys=False)}" for m, i in intents.items()),
        plan=plan,
    )


def quality_latency(summary: dict[str, Any], path: Path) -> str:
    """Quality served (the large tier's share) against TTFT p99, one point per load step, joined per policy."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for policy, row in summary["policies"].items():
        pts = [(s.get("ttft_p99_ms"), s.get("large_share"), s["rate"]) for s in row["steps"]]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=policy, color=COLOURS.get(policy))
        for x, y, r in pts:
            ax.annotate(f"{r:g}/s", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    _log_x(ax)
    ax.set_xlabel("TTFT p99 (ms, log)")
    ax.set_ylabel("share served by the large tier")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("quality against latency, per offered load")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _saved(fig, path)


def tier_over_time(res: Results, summary: dict[str, Any], path: Path, bin_s: float = 0.5) -> str:
    """The large tier's share of the requests started in each interval (repeat 0), the offered rate beside."""
    plt = _plt()
    plan = summary["plan"]
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    for policy in summary["policies"]:
        rs = [r for r in res.records if r.get("policy") == policy and r.get("repeat", 0) == 0 and r["status"] == "ok"]
        nbins = int(plan["duration"] / bin_s) + 1
        xs, ys = [], []
        for k in range(nbins):
            b = [r for r in rs if k * bin_s <= r["t"] < (k + 1) * bin_s]
            if b:
                xs.append(k * bin_s)
                ys.append(sum(r["tier"] == "large" for r in b) / len(b))
        ax.plot(xs, ys, drawstyle="steps-post", label=policy, color=COLOURS.get(policy))
    rate = ax.twinx()
    sched = plan["schedule"] + [[plan["duration"], plan["schedule"][-1][1]]]
    rate.plot([t for t, _ in sched], [r for _, r in sched], drawstyle="steps-post", color="k", ls=":", lw=1)
    rate.set_ylabel("offered requests/s (dotted)")
    return _share_over_time(fig, ax, "share on the large tier", path, top=1.05)


def _share_over_time(fig: Figure, ax: Axes, ylabel: str, path: Path, top: float) -> str:
    """Finishes and writes a plot of shares (0..top) against the run's time."""
    ax.set_xlabel("time from the start (s)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.05, top)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path.name


def tiers_report(
    res: Results, summary: dict[str, Any], spec: ScenarioSpec, scenario: Path, intent: dict[str, Any]
) -> Path:
    policies = list(summary["policies"])
    figs = [
        quality_latency(summary, res.folder / "quality_latency.png"),
        tier_over_time(res, summary, res.folder / "tier_over_time.png"),
        ttft_cdf(res, policies, "policy", res.folder / "ttft_cdf.png", f"TTFT per policy ({spec.name})"),
    ]
    overall = {
        "title": "per policy",
        "header": [
            "",
            "large-tier share",
            "degraded at (s)",
            "recovered after the fall (s)",
            "established flows moved",
        ],
        "rows": [
            [p, _fmt(r["large_share"]), _fmt(r["degraded_at_s"]), _fmt(r["recovered_after_s"]), str(r["flows_moved"])]
            for p, r in summary["policies"].items()
        ],
    }
    steps = {
        "title": "per load step (large-tier share / TTFT p99 ms / SLO attainment)",
        "header": ["", *(f"{s['rate']:g}/s" for s in summary["policies"][policies[0]]["steps"])],
        "rows": [
            [
                p,
                *(
                    f"{_fmt(s.get('large_share'))} / {_fmt(s.get('ttft_p99_ms'))} / {_fmt(s.get('slo_attainment'))}"
                    for s in r["steps"]
                ),
            ]
            for p, r in summary["policies"].items()
        ],
    }
    return page(
        res,
        f"tiers: {spec.name}",
        "How much quality does the service keep as load rises, at what latency, and how fast does "
        "it degrade and recover?",
        summary,
        figs,
        [overall, steps],
        scenario,
        intent,
    )


def per_link(summary: dict[str, Any], path: Path) -> str:
    """KV bytes that crossed each decode site's link per policy (mean per run), and the hand-over time."""
    plt = _plt()
    policies = list(summary["policies"])
    sites = summary["plan"]["decode_sites"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.8))
    width = 0.8 / max(1, len(sites))
    for k, site in enumerate(sites):
        xs = [i + (k - (len(sites) - 1) / 2) * width for i in range(len(policies))]
        mib = [summary["policies"][p]["link_rx_bytes"][site] / 2**20 for p in policies]
        ax.bar(xs, mib, width, label=site)
    ax.set_xticks(range(len(policies)), policies, fontsize=8)
    ax.set_ylabel("MiB received on the site's link")
    ax.set_title("bytes per decode link")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    for metric, label in (("kv_ms_p50", "p50"), ("kv_ms_p99", "p99")):
        vals = [summary["policies"][p].get(metric) or 0.0 for p in policies]
        errs = [(summary["policies"][p].get("ci95") or {}).get(metric) or 0.0 for p in policies]
        off = -0.2 if label == "p50" else 0.2
        ax2.bar([i + off for i in range(len(policies))], vals, 0.4, yerr=errs, capsize=3, label=label)
    ax2.set_xticks(range(len(policies)), policies, fontsize=8)
    ax2.set_ylabel("ms")
    ax2.set_title("KV hand-over to the first decode token")
    ax2.legend(fontsize=8)
    ax2.grid(axis="y", alpha=0.3)
    return _saved(fig, path)


def prefill_report(
    res: Results, summary: dict[str, Any], spec: ScenarioSpec, scenario: Path, intent: dict[str, Any]
) -> Path:
    policies = list(summary["policies"])
    figs = [
        per_link(summary, res.folder / "per_link.png"),
        ttft_cdf(res, policies, "policy", res.folder / "ttft_cdf.png", f"TTFT per policy ({spec.name})"),
        bars(
            {p: {"sessions (prefill, then decode)": r} for p, r in summary["policies"].items()},
            "slo_attainment",
            res.folder / "slo_attainment.png",
            "SLO attainment",
            "share",
        ),
    ]
    metrics = ["ttft_p50_ms", "ttft_p99_ms", "tpot_p99_ms", "kv_ms_p50", "kv_ms_p99", "slo_attainment", "goodput_rps"]
    rows = []
    for p, r in summary["policies"].items():
        cells = [_cell(r, m) for m in metrics]
        sess = ", ".join(f"{s}: {n}" for s, n in r["sessions"].items())
        rows.append([p, *cells, sess, str(r["flows_moved"])])
    table_ = {
        "title": "per decode policy",
        "header": ["", *metrics, "sessions per decode site", "flows moved"],
        "rows": rows,
    }
    return page(
        res,
        f"prefill-decode: {spec.name}",
        "Which decode instance should take a session's KV cache: does the network's choice pay off?",
        summary,
        figs,
        [table_],
        scenario,
        intent,
    )


COOP_COLOURS = {
    "dinet": "#1b7837",
    "nearest": "#d6604d",
    "least-loaded": "#4393c3",
    "random": "#999999",
    "device-alone": "#e08214",
    "cloud-alone": "#8c6bb1",
}
COOP_METRICS = [
    ("tokens_per_s", "tokens/s per request"),
    ("quality", "quality (share at the best model's level)"),
    ("e2e_p99_ms", "end-to-end p99 (ms)"),
    ("uplink_bytes", "device uplink bytes per request"),
]


def cooperative_bars(summary: dict[str, Any], path: Path) -> str:
    """Per paradigm (rows) and figure (columns): one bar per policy with its 95% interval."""
    plt = _plt()
    paradigms = list(summary["paradigms"])
    fig, axes = plt.subplots(len(paradigms), len(COOP_METRICS), figsize=(13.0, 3.0 * len(paradigms)), squeeze=False)
    for i, paradigm in enumerate(paradigms):
        rows = summary["paradigms"][paradigm]["policies"]
        for j, (metric, label) in enumerate(COOP_METRICS):
            ax = axes[i][j]
            names = list(rows)
            vals = [rows[p].get(metric) or 0.0 for p in names]
            errs = [(rows[p].get("ci95") or {}).get(metric) or 0.0 for p in names]
            ax.bar(range(len(names)), vals, yerr=errs, capsize=3, color=[COOP_COLOURS.get(p, "#555") for p in names])
            ax.set_xticks(range(len(names)), names, fontsize=7, rotation=30)
            ax.set_title(f"{paradigm}: {label}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if metric == "uplink_bytes" and max(vals, default=0) > 0:
                ax.set_yscale("symlog", linthresh=1000)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def over_time(res: Results, summary: dict[str, Any], paradigm: str, share: Any, ylabel: str, path: Path,
              bin_s: float = 1.0) -> str:  # fmt: skip
    """A per-request share (share(record) in 0..1) over the requests started in each interval (repeat 0), per
    steered policy, the paradigm's event marked."""
    plt = _plt()
    plan = summary["plan"]
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for policy in ("dinet", "nearest", "least-loaded", "random"):
        rs = [
            r
            for r in res.records
            if r.get("paradigm") == paradigm and r.get("policy") == policy and r.get("repeat", 0) == 0
            and r["status"] == "ok"
        ]  # fmt: skip
        xs, ys = [], []
        for k in range(int(plan["duration"] / bin_s) + 1):
            b = [share(r) for r in rs if k * bin_s <= r["t"] < (k + 1) * bin_s]
            if b:
                xs.append(k * bin_s)
                ys.append(sum(b) / len(b))
        ax.plot(xs, ys, drawstyle="steps-post", label=policy, color=COOP_COLOURS.get(policy))
    ev = plan["events"][paradigm]
    ax.axvline(ev["at"], color="k", ls=":", lw=1)
    ax.text(ev["at"], 1.02, ev["what"], fontsize=7)
    return _share_over_time(fig, ax, ylabel, path, top=1.1)


def cooperative_report(
    res: Results, summary: dict[str, Any], spec: ScenarioSpec, scenario: Path, intent: dict[str, Any]
) -> Path:
    plan = summary["plan"]
    near = plan["nearest"]["speculative"]
    from ..workload.engine import PROFILES

    layers = PROFILES[plan["models"]["head"]].layers
    figs = [
        cooperative_bars(summary, res.folder / "paradigms.png"),
        over_time(
            res,
            summary,
            "speculative",
            lambda r: (r.get("verifiers") or "").split(",")[0] == near,
            f"share of sessions verified at {near}",
            res.folder / "verifier_over_time.png",
        ),  # fmt: skip
        over_time(
            res,
            summary,
            "split",
            lambda r: (r.get("split_layers") or layers) < layers,
            "share of requests split (not all on premises)",
            res.folder / "split_over_time.png",
        ),  # fmt: skip
    ]
    metrics = ["ttft_p50_ms", "tokens_per_s", "e2e_p99_ms", "quality", "uplink_bytes", "slo_attainment", "errors"]
    extra = {
        "speculative": ["acceptance", "rounds_per_request", "after_event_on_nearest", "sessions_moved"],
        "cascade": ["escalated"],
        "split": ["split_before", "split_after", "activation_bytes"],
    }
    tables = []
    for paradigm, body in summary["paradigms"].items():
        cols = metrics + extra.get(paradigm, [])
        rows = [[p, *(_cell(r, m) for m in cols)] for p, r in body["policies"].items()]
        title = f"{paradigm} (event at {body['event']['at']:g} s: {body['event']['what']})"
        tables.append({"title": title, "header": ["", *cols], "rows": rows})
    return page(
        res,
        f"cooperative: {spec.name}",
        "Cooperative inference across device, edge and cloud: does the network's choice of partner "
        "pay off, and against no cooperation at all?",
        summary,
        figs,
        tables,
        scenario,
        intent,
    )


def hit_rate_over_time(res: Results, summary: dict[str, Any], path: Path, bin_s: float = 1.0) -> str:
    """The prefix-cache hit rate of the requests started in each second, one line per policy (repeat 0), the
    events marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for policy in summary["policies"]:
        rs = [r for r in res.records if r["policy"] == policy and r.get("repeat", 0) == 0]
        rs = [r for r in rs if r["status"] == "ok" and r.get("cached_tokens") is not None]
        if not rs:
            continue
        n = int(max(r["t"] for r in rs) / bin_s) + 1
        hit, sent = [0] * n, [0] * n
        for r in rs:
            k = int(r["t"] / bin_s)
            hit[k] += r["cached_tokens"]
            sent[k] += r["prompt_tokens"]
        xs = [k * bin_s for k in range(n) if sent[k]]
        ax.plot(xs, [hit[k] / sent[k] for k in range(n) if sent[k]], label=policy, color=COLOURS.get(policy))
    for e in summary["plan"]["events"]:
        ax.axvline(e["at"], color="k", ls="--", lw=0.8)
        ax.text(e["at"], 1.02, f" {e['kind']}", fontsize=7, va="bottom")
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("time from the start (s)")
    ax.set_ylabel("prefix-cache hit rate")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _saved(fig, path)


def prefix_report(
    res: Results, summary: dict[str, Any], spec: ScenarioSpec, scenario: Path, intent: dict[str, Any]
) -> Path:
    policies = list(summary["policies"])
    rows: dict[str, dict[str, Any] | None] = {p: {"all": summary["policies"][p]} for p in policies}
    figs = [
        bars(rows, "hit_rate", res.folder / "hit_rate.png", "prefix-cache hit rate", "prompt tokens found cached"),
        bars(rows, "ttft_p99_ms", res.folder / "ttft_p99.png", "TTFT p99", "ms"),
        ttft_cdf(res, policies, "policy", res.folder / "ttft_cdf.png", "time to first token, every turn"),
        hit_rate_over_time(res, summary, res.folder / "hit_rate_over_time.png"),
    ]
    metrics = ["hit_rate", "ttft_p50_ms", "ttft_p99_ms", "tokens_per_s", "slo_attainment", "stayed", "errors"]
    phases = [f"{ph}_{m}" for ph in ("steady", "load step", "failure") for m in ("hit_rate", "ttft_p99_ms")]
    counts = ["sessions", "sessions_replaced", "session_flows"]
    tables = [
        {
            "title": title,
            "header": ["", *cols],
            "rows": [[p, *(_cell(summary["policies"][p], m) for m in cols)] for p in policies],
        }
        for title, cols in (("every turn", metrics), ("per phase", phases), ("the data plane's sessions", counts))
    ]
    return page(
        res,
        f"prefix: {spec.name}",
        "Does placing a conversation by a session key in the data plane keep its KV cache as well as "
        "an L7 prefix-aware router, without parsing a request?",
        summary,
        figs,
        tables,
        scenario,
        intent,
    )


def isolation_bars(summary: dict[str, Any], path: Path) -> str:
    """TTFT p99 and the sync's throughput per arm, with their 95% intervals."""
    plt = _plt()
    runs = summary["runs"]
    arms = list(runs)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for ax, metric, label in ((a1, "ttft_p99_ms", "TTFT p99 (ms)"), (a2, "sync_mbit", "sync (Mbit/s)")):
        vals = [runs[a].get(metric) or 0.0 for a in arms]
        errs = [(runs[a].get("ci95") or {}).get(metric) or 0.0 for a in arms]
        ax.bar(arms, vals, yerr=errs, capsize=3, color=["#999999", "#d6604d", "#1b7837"][: len(arms)])
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("interactive inference beside a model sync")
    return _saved(fig, path)


def isolation_report(
    res: Results, summary: dict[str, Any], spec: ScenarioSpec, scenario: Path, intent: dict[str, Any]
) -> Path:
    figs = [
        isolation_bars(summary, res.folder / "isolation.png"),
        ttft_cdf(res, list(summary["runs"]), "arm", res.folder / "ttft_cdf.png", f"TTFT per arm ({spec.name})"),
    ]
    metrics = ["ttft_p50_ms", "ttft_p99_ms", "jitter_ms", "slo_attainment", "sync_mbit", "requests", "errors"]
    rows = [[arm, *(_cell(row, m) for m in metrics)] for arm, row in summary["runs"].items()]
    cpu = ["machine_cores", "delay_lines_cores", "edge_servers_cores"]
    cpu_rows = [[arm, *(_cell(row, m) for m in cpu)] for arm, row in summary["runs"].items()]
    return page(
        res,
        f"isolation: {spec.name}",
        "Does a model sync sharing the links hurt interactive inference, and do traffic classes (DSCP marked where "
        "traffic starts, HTB by class on the links) keep it out while the sync still gets the capacity left?",
        summary,
        figs,
        [
            {"title": "per arm", "header": ["", *metrics], "rows": rows},
            {"title": "CPU while the chat ran (cores in use)", "header": ["", *cpu], "rows": cpu_rows},
        ],
        scenario,
        intent,
    )
