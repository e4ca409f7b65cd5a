"""Plots (matplotlib, headless) and the HTML report of an experiment run (a Jinja2 template, escaped).

The report shows the plots, the tables, the scenario and the intent used, the versions and the command that
reproduces the run. It checks its own figures when opened: once the page has loaded it writes, on its body,
how many of its images decoded (`data-images="N/M"`): a browser test reads that back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..lab.scenario import ScenarioSpec
from .common import Results

COLOURS = {
    "dinet": "#1b7837",
    "anycast": "#d6604d",
    "compute-only": "#4393c3",
    "round-robin": "#8c6bb1",
    "random": "#999999",
    "central": "#d6604d",
    "distributed": "#1b7837",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    ax.set_xscale("log")
    ax.set_xlabel("time to first token (ms, log)")
    ax.set_ylabel("share of requests")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}"
    return str(v)


def table(rows: dict[str, dict[str, Any] | None], cls: str, metrics: list[str]) -> dict[str, Any]:
    """A table for the template: header, and per group its metrics as `mean ± ci95`."""
    body = []
    for g, row in rows.items():
        r = (row or {}).get(cls) or {}
        ci = r.get("ci95") or {}
        cells = [_fmt(r.get(m)) + (f" ± {_fmt(ci[m])}" if ci.get(m) is not None else "") for m in metrics]
        body.append([g, *cells])
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
    return write_html(
        res,
        {
            "title": f"steering: {spec.name}",
            "question": "Does steering on compute and network metrics pay off, when, and by how much?",
            "summary": summary,
            "figures": figs,
            "tables": [*tables, extra],
            "scenario": scenario.read_text(),
            "intent": yaml.safe_dump(intent, sort_keys=False),
            "versions": summary["versions"],
            "command": summary["command"],
            "plan": yaml.safe_dump(summary["plan"], sort_keys=False),
        },
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
