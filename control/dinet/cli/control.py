"""`dinet` commands of the control plane: the controller on an intent, the node agent, a running controller's status."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError
from .common import leaf, table


def cmd_run(a: argparse.Namespace) -> None:
    from pathlib import Path

    from ..services.run import check, run

    if a.check:
        print(check(Path(a.file)))
        return
    run(Path(a.file), once=a.once, insecure=a.insecure, node=a.node)


def cmd_agent(a: argparse.Namespace) -> None:
    import signal
    import threading

    from ..services.agent import serve_forever

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from ..creds import Identity, read_token

    identity = Identity.load(a.certs, a.identity) if a.certs else None
    if identity is None and not a.insecure:
        raise ConfigError("the node agent has no credentials: --certs DIR (see `dinet certs`), or --insecure")
    controllers = frozenset(x.strip() for x in a.controller.split(",") if x.strip())
    serve_forever(a.node, a.listen, read_token(a.token_file), stop, identity, controllers, a.insecure, a.prometheus)


def cmd_status(a: argparse.Namespace) -> None:
    from ..promtext import fetch, samples

    try:
        text = fetch(a.url, timeout=5)
    except ConfigError as e:
        raise ConfigError(f"no dinet controller answers at {a.url}: {e}") from None
    rows: dict[tuple[str, str, str], dict[str, float]] = {}
    ages: dict[tuple[str, str], float] = {}
    other = {}
    for name, labels, value in samples(text):
        if "service" in labels and "instance" in labels and "node" not in labels:
            ages[(labels["service"], labels["instance"])] = value  # per instance, every node
        elif "service" in labels and "instance" in labels:
            rows.setdefault((labels["node"], labels["service"], labels["instance"]), {})[name] = value
        elif "reason" in labels:
            other[f"rejected {labels['reason']}"] = value
        elif name == "dinet_insecure":
            other["insecure (no TLS)"] = value
        elif name in ("dinet_reports_accepted_total", "dinet_datapath_writes_total", "dinet_decision_seconds_count"):
            other[name] = value
    for (_, s, i), v in rows.items():
        if (s, i) in ages:
            v["dinet_metric_age_seconds"] = ages[(s, i)]
    if a.json:
        print(
            json.dumps(
                {
                    "instances": [
                        {"node": k[0], "service": k[1], "instance": k[2], **v} for k, v in sorted(rows.items())
                    ],
                    "totals": other,
                },
                indent=2,
            )
        )
        return
    lines = [
        [
            n,
            s,
            i,
            int(v.get("dinet_instance_weight", 0)),
            "yes" if v.get("dinet_instance_up") else "no",
            int(v.get("dinet_instance_packets_total", 0)),
            int(v.get("dinet_instance_new_flows_total", 0)),
            f"{v['dinet_metric_age_seconds']:.1f}" if "dinet_metric_age_seconds" in v else "-",
        ]
        for (n, s, i), v in sorted(rows.items())
    ]
    print(
        table(
            lines, ["node", "service", "instance", "weight", "takes new flows", "packets", "new flows", "metric age s"]
        )
    )
    for name, value in sorted(other.items()):
        print(f"{name}: {value:g}")


def register(sub: Any) -> None:
    """Adds this group's commands to `dinet`'s subcommands."""
    p = sub.add_parser("run", help="run the controller on an intent file (YAML)")
    p.add_argument("file")
    p.add_argument("--once", action="store_true", help="install the intent, then exit")
    p.add_argument("--check", action="store_true", help="validate the file and exit; starts nothing")
    p.add_argument("--insecure", action="store_true", help="without the intent's `tls`: run without TLS (a warning)")
    p.add_argument("--node", help="mode distributed: the ingress node (name or index) this process decides for")
    p.set_defaults(fn=cmd_run)
    p = leaf(sub, "agent", cmd_agent, "serve this host's programs and maps to a controller over gRPC")
    p.add_argument("--listen", default="127.0.0.1:50061")
    p.add_argument("--certs", help="the certificate folder holding ca.crt and this agent's key and certificate")
    p.add_argument("--identity", default="agent", help="this agent's certificate name (default: agent)")
    p.add_argument("--controller", default="controller", help="identities allowed to drive this agent, comma-separated")
    p.add_argument("--token-file", help="a second factor the controller must present (default: $DINET_TOKEN, if set)")
    p.add_argument("--insecure", action="store_true", help="serve without TLS (a warning; tests and labs only)")
    p.add_argument("--prometheus", help="HOST:PORT: serve the agent's refusals by reason for Prometheus")
    p = sub.add_parser("status", help="a running controller's view, from its Prometheus endpoint")
    p.add_argument("--url", default="http://127.0.0.1:9464/metrics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_status)
