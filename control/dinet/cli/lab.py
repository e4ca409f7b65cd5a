"""`dinet` commands of the lab and the experiments on it (Mininet scenarios of the use cases)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError, DinetError

EXPERIMENTS = (
    "steering",
    "tiers",
    "prefill-decode",
    "modes",
    "modelsync",
    "cooperative",
    "prefix",
    "isolation",
)  # dinet.experiments.EXPERIMENTS


def cmd_experiment(a: argparse.Namespace) -> None:
    """Runs an experiment on a scenario; its results in OUT/NAME/ (summary.json, report.html)."""
    import shlex
    from pathlib import Path

    from ..experiments import Options, run

    if a.repeats is not None and a.repeats < 1:
        raise ConfigError(f"--repeats is at least 1, not {a.repeats}")
    repeats = a.repeats if a.repeats is not None else (1 if a.quick else 3)
    opts = Options(
        repeats=repeats,
        seed=a.seed,
        quick=a.quick,
        target=a.target,
        out=Path(a.out),
        progress=not a.quiet,
        command=shlex.join(["dinet", *sys.argv[1:]]),
    )
    summary = run(a.name, Path(a.scenario) if a.scenario else None, opts)
    print(f"dinet experiment {a.name}: {Path(a.out) / a.name / 'report.html'}")
    if a.quiet:
        return
    print(json.dumps({k: v for k, v in summary.items() if k not in ("versions", "plan")}, indent=2))


def cmd_lab_check(a: argparse.Namespace) -> None:
    from pathlib import Path

    from ..lab.scenario import load

    spec = load(Path(a.file))
    if spec.model_sync is not None:
        ms = spec.model_sync
        print(f"{a.file}: scenario {spec.name}: model sync to {ms.clouds} GPU clouds over BIER: valid")
        return
    pools = sum(i.pool for i in spec.instances)
    print(
        f"{a.file}: scenario {spec.name}: {len(spec.ingress)} ingress node(s), {len(spec.clients)} client(s), "
        f"{len(spec.sites)} site(s), {len(spec.instances)} instance(s) ({pools} in a pool), "
        f"{len(spec.services)} service(s): valid"
    )


def cmd_lab_up(a: argparse.Namespace) -> None:
    import signal
    import threading
    from pathlib import Path

    from ..lab.linkem import PathReport
    from ..lab.net import Lab
    from ..lab.scenario import load

    spec = load(Path(a.file))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"lab {spec.name}: bringing it up on {a.target} ...", flush=True)
    if spec.model_sync is not None:
        from ..lab.bier_lab import BierLab

        with BierLab(spec, a.target, Path(a.workdir) if a.workdir else None) as blab:
            res = blab.check()
            print(f"lab {spec.name}: up; check: {res.detail}")
            for cloud, ok in res.clouds.items():
                print(f"  {cloud:<6} {'ok' if ok else 'MISSING'}")
            print("Ctrl-C or `dinet lab down` ends it", flush=True)
            stop.wait()
        print(f"lab {spec.name}: down", flush=True)
        return
    with Lab(spec, a.target, Path(a.workdir) if a.workdir else None, a.pcap, a.backend) as lab:
        emulated = sorted({e.engine for e in lab.links.emulators})
        print(f"lab {spec.name}: up; links emulated by {', '.join(emulated) or 'nothing'}; logs in {lab.workdir}/logs")
        print(PathReport.header())
        for r in lab.links.measure_paths(a.ping_count):
            print(r.row())
        print(f"intent: {lab.workdir}/intent.yaml; controller metrics: {lab.deciding.metrics_url}")
        if a.cli:
            from mininet.cli import CLI

            CLI(lab.net)
        else:
            print("Ctrl-C or `dinet lab down` ends it", flush=True)
            stop.wait()
    print(f"lab {spec.name}: down", flush=True)


def cmd_lab_down(a: argparse.Namespace) -> None:
    from ..lab.net import down

    for line in down(a.name) or ["nothing to remove"]:
        print(line)


def cmd_lab_sync_demo(a: argparse.Namespace) -> None:
    from ..lab.model_sync import demo

    if not demo():
        raise DinetError("the model did not reach every cloud (see the table)")


def cmd_lab_bier_failover(a: argparse.Namespace) -> None:
    from ..lab.bier_domain import failover_demo

    failover_demo(a.target)


def register(sub: Any) -> None:
    """Adds this group's commands to `dinet`'s subcommands."""
    p = sub.add_parser("experiment", help="run an experiment on a scenario: results, plots and an HTML report")
    p.add_argument("name", choices=EXPERIMENTS)
    p.add_argument("scenario", nargs="?", help="the scenario file (default: the experiment's, in topo/scenarios)")
    p.add_argument("--repeats", type=int, help="runs of each arm (default 3; 1 with --quick): 95%% intervals over them")
    p.add_argument("--seed", type=int, default=1, help="the loads' and the random baseline's draws: a run repeats")
    p.add_argument("--quick", action="store_true", help="short runs (about 90 s; cooperative about 5 min), for CI")
    p.add_argument("--target", choices=["xdp", "bmv2"], default="xdp", help="the steering node's data plane")
    p.add_argument("--out", default="results", help="the results folder (OUT/NAME/ per experiment)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no summary on stdout")
    p.set_defaults(fn=cmd_experiment)
    lab = sub.add_parser("lab", help="Mininet scenarios of the use cases (topo/scenarios/*.yaml)").add_subparsers(
        dest="lab_cmd", required=True
    )
    p = lab.add_parser("up", help="bring a scenario up: Mininet network, model servers, agents, controller")
    p.add_argument("file")
    p.add_argument("--target", choices=["xdp", "bmv2"], default="xdp", help="the steering node's data plane")
    p.add_argument("--cli", action="store_true", help="open the Mininet CLI (the lab goes down when it ends)")
    p.add_argument("--pcap", action="store_true", help="a pcap per host and BMv2 switch (in the work folder)")
    p.add_argument("--backend", choices=["auto", "netem", "delayline"], default="auto", help="link emulation")
    p.add_argument("--workdir", help="logs, the intent and pcaps (default /tmp/dinet-lab-NAME)")
    p.add_argument("--ping-count", type=int, default=50, help="echoes per path for the RTT and loss achieved")
    p.set_defaults(fn=cmd_lab_up)
    p = lab.add_parser("down", help="stop a lab and remove everything it made (also after a crash)")
    p.add_argument("name", nargs="?", help="the scenario's name (default: every lab)")
    p.set_defaults(fn=cmd_lab_down)
    p = lab.add_parser("check", help="validate a scenario file without bringing it up")
    p.add_argument("file")
    p.set_defaults(fn=cmd_lab_check)
    p = lab.add_parser("sync-demo", help="push 64 MiB to four of eight clouds over BIER in namespaces (a demo)")
    p.set_defaults(fn=cmd_lab_sync_demo)
    p = lab.add_parser("bier-failover", help="a BIER stream through a link failure in namespaces (a demo)")
    p.add_argument("--target", choices=["tc", "bmv2"], default="tc", help="the BFRs' data plane")
    p.set_defaults(fn=cmd_lab_bier_failover)
