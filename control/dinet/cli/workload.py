"""`dinet` commands of the workload: a model server, an L7 router, load, and the metrics agent beside a server."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError
from .common import dscp, positive


def cmd_serve(a: argparse.Namespace) -> None:
    from ..workload.serve import Server, profile_of, run

    if bool(a.tls_cert) != bool(a.tls_key):
        raise ConfigError("HTTPS needs both --tls-cert and --tls-key")
    listen = a.listen or ["127.0.0.1:8000"]
    server = Server(
        profile_of(a.profile, a.kv_tokens, a.max_batch), a.name or listen[0], a.model, a.role, a.decode_url or "",
        a.ca, a.verify_url or "", a.acceptance, a.escalate_url or "", a.threshold, a.large_quality,
        a.tail_url or "", a.privacy_layers, a.split_layers, a.replace_after, a.prefix_caching,
    )  # fmt: skip
    server.kv_dscp = a.kv_dscp
    run(server, listen, (a.tls_cert, a.tls_key) if a.tls_cert else None, a.dscp or 0)


def cmd_route(a: argparse.Namespace) -> None:
    from ..workload.prefix_router import Router, run

    run(Router(a.backend, a.guard, a.index_blocks, a.ca), a.listen)


def cmd_load(a: argparse.Namespace) -> None:
    from pathlib import Path

    from ..workload.load import LoadSpec, Slo, main, parse_schedule

    schedule = parse_schedule(a.schedule) if a.schedule else [(0.0, a.rate)]
    spec = LoadSpec(
        a.url.rstrip("/"),
        duration=a.duration,
        schedule=schedule,
        max_requests=a.max_requests,
        prompt_tokens=(a.prompt_min, a.prompt_max),
        max_tokens=(a.output_min, a.output_max),
        sensitive_share=a.sensitive_share,
        slo=Slo(a.ttft_slo_ms, a.tpot_slo_ms),
        model=a.model,
        seed=a.seed,
        trace=Path(a.trace) if a.trace else None,
        local_url=a.local.rstrip("/") if a.local else None,
        offload_view=a.offload_view,
        offload_node=a.offload_node,
        offload_max_rtt_ms=a.offload_max_rtt_ms,
        start_at=a.start_at,
        pick=a.pick or "",
        endpoints=tuple(a.endpoint or ()),
        ca=a.ca,
        turns=_range(a.turns),
        system_tokens=a.system_tokens,
        system_prompts=a.system_prompts,
        think_s=a.think_s,
        session_key=a.session_key,
        dscp=a.dscp,
    )
    if bool(a.local) != bool(a.offload_view):
        raise ConfigError("a device's load gives both --local (its own model) and --offload-view (the controller)")
    res = main(spec, Path(a.out) if a.out else None, progress=not a.quiet)
    print(json.dumps(res, indent=2))


def _range(text: str) -> tuple[int, int]:
    """'3' -> (3, 3); '2-5' -> (2, 5)."""
    lo, _, hi = text.partition("-")
    try:
        out = (int(lo), int(hi or lo))
    except ValueError:
        raise ConfigError(f"expected N or MIN-MAX, not {text!r}") from None
    if not 1 <= out[0] <= out[1]:
        raise ConfigError(f"expected N or MIN-MAX with 1 <= MIN <= MAX, not {text!r}")
    return out


def cmd_metrics_agent(a: argparse.Namespace) -> None:
    import signal
    import threading

    from ..creds import Identity, read_token
    from ..services.collect import Agent, Announce, Fanout
    from ..workload.metrics_agent import MetricsAgent

    identity = Identity.load(a.certs, a.identity) if a.certs else None
    if identity is None and not a.insecure:
        raise ConfigError("the metrics agent has no credentials: --certs DIR (see `dinet certs`), or --insecure")
    announce = Announce(a.announce, a.site) if a.announce else None
    token = read_token(a.token_file)
    agents = []
    for c in a.collector:  # [NAME@]HOST:PORT: NAME is that collector's certificate name (default --server)
        name, _, address = c.rpartition("@")
        agents.append(Agent(address, token, identity, name or a.server))
    agent = agents[0] if len(agents) == 1 else Fanout(agents)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    svcs = ", ".join(a.service)
    print(f"dinet metrics-agent: {a.url} -> {', '.join(a.collector)} for {svcs} instance {a.instance}", flush=True)
    try:
        MetricsAgent(
            a.url, a.service[0], a.instance, agent, a.interval, host_cpu=not a.no_host_cpu, announce=announce, ca=a.ca,
            also=tuple(a.service[1:]),
        ).run(stop, a.count)  # fmt: skip
    finally:
        agent.close()


def register(sub: Any) -> None:
    """Adds this group's commands to `dinet`'s subcommands."""
    p = sub.add_parser("serve", help="an OpenAI-compatible model server with a serving engine's timing")
    p.add_argument(
        "--listen",
        action="append",
        help="HOST:PORT (default 127.0.0.1:8000); again for another service the same engine answers on that port",
    )
    p.add_argument(
        "--dscp",
        type=dscp,
        action="append",
        help="mark answers with this DSCP (0-63 or a class: delay-sensitive, ...); one for all, or one per --listen",
    )
    p.add_argument("--kv-dscp", type=dscp, default=0, help="mark KV hand-overs to the decode stage (e.g. kv)")
    p.add_argument("--profile", default="llama3-8b-a100", help="model/GPU profile (see dinet.workload.engine)")
    p.add_argument("--name", help="the instance's name, sent in x-dinet-instance (default: the listen address)")
    p.add_argument("--model", help="the model name served (default: the profile's)")
    p.add_argument(
        "--role",
        default="both",
        choices=["both", "prefill", "decode", "draft", "cascade", "split"],
        help="prefill/decode: a pipeline split at the KV cache; draft: speculative decoding with --verify-url; "
        "cascade: a small model escalating to --escalate-url; split: the first layers here, the rest on --tail-url",
    )
    p.add_argument(
        "--replace-after",
        type=float,
        default=0.0,
        help="draft role: a round unanswered after this many times the usual answer time is sent again on a new "
        "flow (0: never; the session stays with its verifier)",
    )
    p.add_argument(
        "--prefix-caching",
        action="store_true",
        help="keep prompts' KV blocks for later requests (vLLM's automatic prefix caching; its metrics and "
        "usage.prompt_tokens_details.cached_tokens)",
    )
    p.add_argument("--tail-url", help="split role: the tail that runs the last layers (a VIP dinet steers)")
    p.add_argument(
        "--privacy-layers", type=positive, default=2, help="split role: layers that always stay here (default 2)"
    )
    p.add_argument(
        "--split-layers", type=positive, help="split role: always this many layers here (default: chosen per request)"
    )
    p.add_argument("--escalate-url", help="cascade role: the large model (a VIP dinet steers)")
    p.add_argument("--threshold", type=float, default=0.6, help="cascade role: escalate below this confidence")
    p.add_argument("--large-quality", type=float, default=1.0, help="cascade role: the large model's quality")
    p.add_argument("--verify-url", help="draft role: the target model that verifies each round (a VIP dinet steers)")
    p.add_argument(
        "--acceptance", type=float, default=0.7, help="draft role: the pair's acceptance rate per drafted token"
    )
    p.add_argument("--kv-tokens", type=positive, help="KV-cache capacity in tokens (default: the profile's)")
    p.add_argument("--max-batch", type=positive, help="sequences decoded together (default: the profile's)")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM; `dinet certs issue` makes one)")
    p.add_argument("--tls-key", help="its private key (mode 0600)")
    p.add_argument("--ca", help="the CA of an https --decode-url's certificate (default: the system's)")
    p.add_argument(
        "--decode-url", help="prefill role: the decode stage (a VIP dinet steers), e.g. http://10.99.0.2:8000"
    )
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("route", help="an L7 prefix-aware router in front of model servers (a baseline)")
    p.add_argument("--listen", default="127.0.0.1:8100")
    p.add_argument("--backend", action="append", required=True, help="a model server's URL (once per backend)")
    p.add_argument(
        "--guard", type=int, default=4, help="requests in flight beyond the least loaded before the match yields"
    )
    p.add_argument("--index-blocks", type=positive, default=100_000, help="prompt blocks remembered per backend")
    p.add_argument("--ca", help="the CA that signs https backends' certificates (default: the system's)")
    p.set_defaults(fn=cmd_route)
    p = sub.add_parser("load", help="open-loop load on an OpenAI-compatible server; JSON lines and a summary")
    p.add_argument("--url", required=True, help="the server's base URL, e.g. http://10.99.0.1:8000 or https://...")
    p.add_argument("--ca", help="the CA that signs an https server's certificate (default: the system's)")
    p.add_argument("--rate", type=float, default=5.0, help="requests per second (Poisson)")
    p.add_argument("--schedule", help="TIME:RATE[,TIME:RATE...]: the rate over time (instead of --rate)")
    p.add_argument("--trace", help="an Azure LLM inference trace (CSV) to replay instead")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of arrivals")
    p.add_argument("--max-requests", type=int, default=10_000)
    p.add_argument("--prompt-min", type=int, default=64)
    p.add_argument("--prompt-max", type=int, default=256)
    p.add_argument("--output-min", type=int, default=16)
    p.add_argument("--output-max", type=int, default=64)
    p.add_argument("--sensitive-share", type=float, default=0.5, help="share of delay-sensitive requests")
    p.add_argument("--ttft-slo-ms", type=float, default=500.0)
    p.add_argument("--tpot-slo-ms", type=float, default=100.0)
    p.add_argument("--model")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", help="JSON lines, one record per request")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--local", help="a device's own model server: answer there when the network does not pay off")
    p.add_argument("--offload-view", help="with --local: the controller's metrics URL (dinet run's Prometheus)")
    p.add_argument("--offload-node", default="0", help="with --local: the ingress node (its index in the intent)")
    p.add_argument("--offload-max-rtt-ms", type=float, default=20.0, help="with --local: the delay budget")
    p.add_argument("--start-at", type=float, help="a Unix time to start at (records' t counts from it)")
    p.add_argument(
        "--pick",
        choices=["least-queue", "oracle"],
        help="pick an instance per request at the client (a baseline) instead of sending to --url's VIP",
    )
    p.add_argument("--endpoint", action="append", help="with --pick: an instance's URL (once per instance)")
    p.add_argument(
        "--turns",
        default="1",
        help="N or MIN-MAX: multi-turn conversations of that many turns (the rate: conversations per second); each "
        "turn's prompt is the conversation so far and a question of --prompt-min..max words",
    )
    p.add_argument("--system-tokens", type=int, default=0, help="conversations: a shared system prompt of N words")
    p.add_argument("--system-prompts", type=positive, default=1, help="conversations: distinct system prompts")
    p.add_argument("--think-s", type=float, default=1.0, help="conversations: mean think time between turns")
    p.add_argument(
        "--session-key",
        choices=["none", "port", "flow-label"],
        default="none",
        help="conversations: what names the conversation to the network: a source port of its group (61440-65535), "
        "or an IPv6 flow label (dinet.policy.session)",
    )
    p.add_argument(
        "--dscp", type=dscp, default=0, help="mark the requests with this DSCP (0-63 or a class: delay-sensitive, ...)"
    )
    p.set_defaults(fn=cmd_load)
    p = sub.add_parser("metrics-agent", help="scrape an inference server's metrics and report to the collector")
    p.add_argument("--url", required=True, help="the server's Prometheus endpoint, e.g. http://127.0.0.1:8000/metrics")
    p.add_argument("--ca", help="the CA that signs an https endpoint's certificate (default: the system's)")
    p.add_argument(
        "--service",
        required=True,
        action="append",
        help="VIP:PORT/PROTO; again for each other service the same engine answers (one scrape, a report each)",
    )
    p.add_argument("--instance", type=int, required=True)
    p.add_argument(
        "--collector",
        required=True,
        action="append",
        help="[NAME@]HOST:PORT (repeated: every decider, as in mode distributed; NAME: its certificate name)",
    )
    p.add_argument("--certs")
    # not the node agent's default ("agent"): a metrics host must not pose as a node agent by default
    p.add_argument("--identity", default="metrics-agent", help="this agent's certificate name (NAME.key, NAME.crt)")
    p.add_argument("--server", default="controller", help="the collector's certificate name")
    p.add_argument("--token-file")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--count", type=int, help="stop after this many reports")
    p.add_argument("--insecure", action="store_true")
    p.add_argument(
        "--no-host-cpu", action="store_true", help="report no host CPU (instances that share one machine, as in labs)"
    )
    p.add_argument("--announce", metavar="ENDPOINT", help="a pool instance: join the service with this tunnel endpoint")
    p.add_argument("--site", type=int, default=0, help="with --announce: the instance's site")
    p.set_defaults(fn=cmd_metrics_agent)
