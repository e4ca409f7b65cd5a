"""`dinet`: the command line over the data planes. Every error is one readable line and exit status 1."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ConfigError, DinetError
from .model import Instance, InstanceState, ServiceKey


def _steer(a: argparse.Namespace) -> Any:
    from .targets.xdp import SteeringNode

    return SteeringNode(a.node)


def _table(rows: Sequence[Sequence[Any]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*map(str, r)) for r in rows]
    )


# ---- xdp -------------------------------------------------------------------------------------------------
def cmd_xdp_attach(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        if a.src4 or a.src6:
            n.configure(src4=a.src4, src6=a.src6)
        n.attach(a.dev, a.netns, a.mode)
        print(f"xdp_steer attached to {a.dev}{' in ' + a.netns if a.netns else ''} (node {a.node})")


def cmd_xdp_detach(a: argparse.Namespace) -> None:
    from .targets.bcc_program import BccProgram

    BccProgram.detach(a.dev, a.netns, a.mode)
    print(f"XDP detached from {a.dev}")


def cmd_xdp_destroy(a: argparse.Namespace) -> None:
    _steer(a).destroy()
    print(f"node {a.node}: pinned steering maps removed")


def cmd_decap_attach(a: argparse.Namespace) -> None:
    from .targets.xdp import DecapNode

    with DecapNode(a.node) as d:
        for ep in a.endpoint:
            d.add_endpoint(ep)
        d.attach(a.dev, a.netns, a.mode)
        print(f"xdp_decap attached to {a.dev}; endpoints {', '.join(map(str, d.endpoints()))}")


# ---- services and instances -------------------------------------------------------------------------------
def cmd_service_add(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        slot = n.add_service(ServiceKey.parse(a.service), session=a.session)
        print(f"{a.service}: slot {slot}" + (" (session-affine)" if a.session else ""))


def cmd_service_del(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        n.remove_service(ServiceKey.parse(a.service))
        print(f"{a.service}: removed")


def cmd_service_list(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        svcs = n.services()
        if a.json:
            print(
                json.dumps(
                    [
                        {
                            "service": str(s.key),
                            "slot": s.svc_id,
                            "placement": "session" if s.session else "flow",
                            "instances": [i.as_dict() for i in s.instances.values()],
                        }
                        for s in svcs
                    ],
                    indent=2,
                )
            )
            return
        rows = [
            [str(s.key) + (" (session)" if s.session else ""), s.svc_id, i.instance_id, i.endpoint, i.weight,
             i.state.name.lower(), i.site_id]
            for s in svcs
            for i in sorted(s.instances.values(), key=lambda x: x.instance_id)
        ]  # fmt: skip
        rows += [[str(s.key), s.svc_id, "-", "-", "-", "-", "-"] for s in svcs if not s.instances]
        print(_table(rows, ["service", "slot", "instance", "endpoint", "weight", "state", "site"]))


def cmd_instance_set(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        n.upsert_instance(ServiceKey.parse(a.service), Instance(a.id, a.endpoint, a.weight, site_id=a.site))
        print(f"{a.service}: instance {a.id} -> {a.endpoint} weight {a.weight}")


def cmd_instance_weight(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        n.set_weight(ServiceKey.parse(a.service), a.id, a.weight)
        print(f"{a.service}: instance {a.id} weight {a.weight}")


def cmd_instance_state(a: argparse.Namespace, state: str | None = None) -> None:
    st = InstanceState[(state or a.state).upper()]
    with _steer(a) as n:
        n.set_state(ServiceKey.parse(a.service), a.id, st)
        print(f"{a.service}: instance {a.id} {st.name.lower()}")


def cmd_instance_del(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        n.remove_instance(ServiceKey.parse(a.service), a.id)
        print(f"{a.service}: instance {a.id} removed")


# ---- reading back ----------------------------------------------------------------------------------------
def cmd_stats(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        st = n.stats()
    if a.json:
        print(json.dumps(st, indent=2))
        return
    rows = []
    for s in st["services"]:
        rows.append([s["service"], "*", "", "", s["packets"], s["bytes"], s["new_flows"]])
        for i in s["instances"]:
            rows.append(
                [
                    "",
                    i["instance_id"],
                    i["endpoint"],
                    f"{i['state']}/{i['weight']}",
                    i["packets"],
                    i["bytes"],
                    i["new_flows"],
                ]
            )
    print(_table(rows, ["service", "instance", "endpoint", "state/weight", "packets", "bytes", "new flows"]))
    print()
    print(_table([[k, v] for k, v in st["verdicts"].items()], ["verdict", "packets"]))


def cmd_affinity(a: argparse.Namespace) -> None:
    with _steer(a) as n:
        flows = list(n.affinity(a.limit))
    if a.json:
        print(json.dumps([{**f.__dict__, "src": str(f.src), "dst": str(f.dst)} for f in flows], indent=2))
        return
    print(
        _table(
            [[f"{f.src}:{f.sport}", f"{f.dst}:{f.dport}", f.proto, f.svc_id, f.instance_id] for f in flows],
            ["client", "service", "proto", "slot", "instance"],
        )
    )


# ---- bier ------------------------------------------------------------------------------------------------
def _bier(a: argparse.Namespace) -> Any:
    from .targets.tc import BierNode

    return BierNode(a.node)


def _ids(text: str) -> list[int]:
    """BFR-ids: "1,2,5-8"."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        try:
            out += list(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise ConfigError(f"BFR-ids are numbers and ranges (1,2,5-8), not {text!r}") from None
    return out


def _bsl_code(bits: int) -> int:
    from .rfc8296 import BSL_CODE

    if bits not in BSL_CODE:
        raise ConfigError(f"BSL must be one of {sorted(BSL_CODE)} bits, not {bits}")
    return BSL_CODE[bits]


def cmd_bier_attach(a: argparse.Namespace) -> None:
    with _bier(a) as n:
        n.attach(a.dev, a.netns)
        print(f"tc_bier attached to {a.dev} ingress (node {a.node})")


def cmd_bier_detach(a: argparse.Namespace) -> None:
    from .targets.bcc_program import BccProgram

    BccProgram.detach_tc(a.dev, a.netns)
    BccProgram.detach(a.dev, a.netns)
    print(f"BIER programs (TC and XDP) removed from {a.dev}")


def cmd_bier_destroy(a: argparse.Namespace) -> None:
    _bier(a).destroy()
    print(f"node {a.node}: pinned BIER maps removed")


def cmd_bier_bift_set(a: argparse.Namespace) -> None:
    from .rfc8296 import bift_id, bitstring_mask
    from .targets import netns
    from .targets.tc import BiftNeighbor

    code = _bsl_code(a.bsl)
    bits = a.bsl
    bid = bift_id(code, a.si, a.sd)
    nbrs = []
    for spec in a.nbr:
        try:
            ifname, dmac, ids = spec.split(",", 2)
        except ValueError:
            raise ConfigError(f"--nbr is IFNAME,DMAC,BFR-IDS (eth1,02:00:00:00:00:02,1-4), not {spec!r}") from None
        nbrs.append(
            BiftNeighbor(
                netns.ifindex(ifname, a.netns),
                netns.mac_of(ifname, a.netns),
                dmac,
                bitstring_mask(_ids(ids), bits, a.si),
            )
        )
    with _bier(a) as n:
        n.set_bift(bid, bitstring_mask(_ids(a.local or ""), bits, a.si), nbrs, a.netns)
        print(f"BIFT-id {bid:#07x} (BSL {bits}, SD {a.sd}, SI {a.si}): {len(nbrs)} neighbours")


def cmd_bier_bift_show(a: argparse.Namespace) -> None:
    from .rfc8296 import BSL_BITS, bitstring_ids, split_bift_id

    with _bier(a) as n:
        bifts = n.bifts()
    rows, data = [], []
    for bid, e in bifts.items():
        code, sd, si = split_bift_id(bid)
        nbytes = BSL_BITS[code] // 8

        def ids(mask: int, nbytes: int = nbytes, si: int = si) -> list[int]:
            return bitstring_ids(mask.to_bytes(nbytes, "big"), si)

        data.append(
            {
                "bift_id": bid,
                "bsl": BSL_BITS[code],
                "sd": sd,
                "si": si,
                "local": ids(e.local),
                "neighbors": [{"ifindex": x.ifindex, "dmac": x.dmac, "bfr_ids": ids(x.fbm)} for x in e.neighbors],
            }
        )
        rows.append([f"{bid:#07x}", BSL_BITS[code], si, "local", "-", ids(e.local)])
        rows += [["", "", "", x.ifindex, x.dmac, ids(x.fbm)] for x in e.neighbors]
    if a.json:
        print(json.dumps(data, indent=2))
    else:
        print(_table(rows, ["bift-id", "bsl", "si", "ifindex", "neighbour mac", "bfr-ids (F-BM)"]))


def cmd_bier_bift_del(a: argparse.Namespace) -> None:
    from .rfc8296 import bift_id

    with _bier(a) as n:
        n.remove_bift(bift_id(_bsl_code(a.bsl), a.si, a.sd))
        print("removed")


def _match(a: argparse.Namespace) -> Any:
    from .targets.tc import BfirMatch

    return BfirMatch(a.dst, a.src, a.udp_port or 0)


def cmd_bier_group_add(a: argparse.Namespace) -> None:
    from .policy.bift import bfir_sets

    code = _bsl_code(a.bsl)
    sets = bfir_sets(_ids(a.to), code, a.sd)
    with _bier(a) as n:
        n.set_bfir(_match(a), a.bfir_id, code, sets)
        print(f"{_match(a)} -> BFR-ids {a.to} in {len(sets)} set(s)")


def cmd_bier_group_del(a: argparse.Namespace) -> None:
    with _bier(a) as n:
        n.remove_bfir(_match(a))
        print("removed")


def cmd_bier_group_list(a: argparse.Namespace) -> None:
    from .rfc8296 import split_bift_id

    with _bier(a) as n:
        entries = n.bfir_entries()
    out = []
    for m, sets in entries.items():
        for bid, mask in sets.items():
            out.append(
                {
                    "dst": str(m.dst),
                    "src": str(m.src) if m.src else None,
                    "udp_port": m.udp_port,
                    "bift_id": bid,
                    "si": split_bift_id(bid)[2],
                    "bitmask": hex(mask),
                }
            )
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(_table([list(map(str, r.values())) for r in out], ["dst", "src", "udp port", "bift-id", "si", "bits"]))


def cmd_bier_stats(a: argparse.Namespace) -> None:
    with _bier(a) as n:
        c, tx = n.counters(), n.tx_copies()
    if a.json:
        print(json.dumps({"counters": c, "tx_copies_by_ifindex": tx}, indent=2))
    else:
        print(_table([[k, v] for k, v in c.items()], ["counter", "packets"]))
        print()
        print(_table([[k, v] for k, v in sorted(tx.items())], ["egress ifindex", "copies"]))


# ---- control plane ---------------------------------------------------------------------------------------
def cmd_run(a: argparse.Namespace) -> None:
    from pathlib import Path

    from .services.run import check, run

    if a.check:
        print(check(Path(a.file)))
        return
    run(Path(a.file), once=a.once, insecure=a.insecure, node=a.node)


def cmd_p4_compile(a: argparse.Namespace) -> None:
    from .targets.base import SteerSizes
    from .targets.bmv2 import compile_p4

    sizes = SteerSizes(a.max_services, a.max_instances, a.ring_size)
    pipe = compile_p4(sizes.defines())
    print(f"{pipe.json}\n{pipe.p4info}")


def cmd_p4_read(a: argparse.Namespace) -> None:
    from .targets.base import SteerSizes
    from .targets.bmv2 import compile_p4
    from .targets.p4rt import P4RuntimeSwitch

    pipe = compile_p4(SteerSizes(a.max_services, a.max_instances, a.ring_size).defines())
    with P4RuntimeSwitch(a.address, a.device_id, name=a.address, arbitrate=False) as sw:
        sw.use_pipeline(pipe.p4info)
        entries = sw.read_table(a.table)
    if a.json:
        print(
            json.dumps(
                [
                    {"table": e.table, "match": dict(e.match), "action": e.action, "params": dict(e.params)}
                    for e in entries
                ],
                indent=2,
            )
        )
    else:
        print(_table([[dict(e.match), e.action, dict(e.params)] for e in entries], ["match", "action", "params"]))


def cmd_agent(a: argparse.Namespace) -> None:
    import signal
    import threading

    from .services.agent import serve_forever

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from .creds import Identity, read_token

    identity = Identity.load(a.certs, a.identity) if a.certs else None
    if identity is None and not a.insecure:
        raise ConfigError("the node agent has no credentials: --certs DIR (see `dinet certs`), or --insecure")
    controllers = frozenset(x.strip() for x in a.controller.split(",") if x.strip())
    serve_forever(a.node, a.listen, read_token(a.token_file), stop, identity, controllers, a.insecure, a.prometheus)


def cmd_serve(a: argparse.Namespace) -> None:
    from .workload.serve import Server, profile_of, run

    if bool(a.tls_cert) != bool(a.tls_key):
        raise ConfigError("HTTPS needs both --tls-cert and --tls-key")
    server = Server(
        profile_of(a.profile, a.kv_tokens, a.max_batch), a.name or a.listen, a.model, a.role, a.decode_url or "",
        a.ca, a.verify_url or "", a.acceptance, a.escalate_url or "", a.threshold, a.large_quality,
        a.tail_url or "", a.privacy_layers, a.split_layers, a.replace_after, a.prefix_caching,
    )  # fmt: skip
    run(server, a.listen, (a.tls_cert, a.tls_key) if a.tls_cert else None)


def cmd_route(a: argparse.Namespace) -> None:
    from .workload.prefix_router import Router, run

    run(Router(a.backend, a.guard, a.index_blocks, a.ca), a.listen)


def cmd_load(a: argparse.Namespace) -> None:
    from pathlib import Path

    from .workload.load import LoadSpec, Slo, main, parse_schedule

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

    from .creds import Identity, read_token
    from .services.collect import Agent, Announce, Fanout
    from .workload.metrics_agent import MetricsAgent

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
    print(f"dinet metrics-agent: {a.url} -> {', '.join(a.collector)} for {a.service} instance {a.instance}", flush=True)
    try:
        MetricsAgent(
            a.url, a.service, a.instance, agent, a.interval, host_cpu=not a.no_host_cpu, announce=announce, ca=a.ca
        ).run(stop, a.count)
    finally:
        agent.close()


def cmd_sync_receiver(a: argparse.Namespace) -> None:
    from pathlib import Path

    from .creds import read_token, server_tls
    from .sync.receiver import SyncReceiver, run
    from .sync.uftp import UftpOptions, uid

    token = read_token(a.token_file)
    if not token and not a.insecure:
        raise ConfigError("the sync receiver has no token: --token-file or $DINET_TOKEN, or --insecure")
    if bool(a.tls_cert) != bool(a.tls_key):
        raise ConfigError("HTTPS needs both --tls-cert and --tls-key")
    if not a.tls_cert and not a.insecure:
        raise ConfigError(
            "the sync receiver's status carries the token: serve it over HTTPS (--tls-cert, --tls-key: `dinet "
            "certs issue`), or --insecure"
        )
    opts = UftpOptions(port=a.port, pub_group=a.group)
    interfaces = [x.strip() for x in a.interfaces.split(",") if x.strip()]
    receiver = SyncReceiver(
        Path(a.store), interfaces, uid(a.bfr_id), token, opts, not a.allow_clear,
        Path(a.servers) if a.servers else None, a.any_sender,
    )  # fmt: skip
    run(receiver, a.listen, server_tls(a.tls_cert, a.tls_key) if a.tls_cert else None)


def cmd_sync_pin(a: argparse.Namespace) -> None:
    from pathlib import Path

    from .sync.uftp import fingerprint, make_key, server_line

    key = Path(a.key)
    fp = make_key(key) if a.new else fingerprint(key)
    print(server_line(a.address, fp))


def cmd_sync(a: argparse.Namespace) -> None:
    import logging
    from pathlib import Path

    from .creds import read_token
    from .services.bier import BierController
    from .services.intent import load
    from .services.run import bier_targets, credentials
    from .sync.job import Cloud, SyncJob
    from .sync.uftp import UftpOptions

    logging.getLogger("dinet.services.bier").setLevel(logging.ERROR)
    cfg = load(Path(a.intent))
    if cfg.bier is None:
        raise ConfigError(f"{a.intent} has no bier section: model sync needs the BIER domain")
    names = [x.strip() for x in a.to.split(",") if x.strip()]
    missing = [n for n in names if n not in cfg.sync_receivers]
    if missing:
        raise ConfigError(f"no receiver for {', '.join(missing)} in {a.intent} (bier.receivers)")
    opts = UftpOptions(
        port=a.port, pub_group=a.group, rate_mbps=a.rate, cc=a.cc, encrypt=not a.no_encrypt,
        key=Path(a.key) if a.key else None,
    )  # fmt: skip
    remote = any(n["target"] == "agent" for n in cfg.nodes.values())  # TLS only matters toward node agents
    with bier_targets(cfg, credentials(cfg, a.insecure) if remote else None) as targets:
        ctl = BierController(cfg.bier, targets)
        ctl.install()
        job = SyncJob(
            ctl, a.bfir, Path(a.file), [Cloud(n, cfg.sync_receivers[n]) for n in names], a.interface,
            read_token(a.token_file), opts, netns=a.netns, retries=a.retries, progress=not a.quiet,
            tls=not a.insecure, ca=a.ca,
        )  # fmt: skip
        report = job.run()
    print(json.dumps(report.to_json(), indent=2) if a.json else report.table())
    if not report.ok:
        raise SystemExit(1)


EXPERIMENTS = (
    "steering",
    "tiers",
    "prefill-decode",
    "modes",
    "modelsync",
    "cooperative",
    "prefix",
)  # dinet.experiments.EXPERIMENTS


def cmd_experiment(a: argparse.Namespace) -> None:
    """Runs an experiment on a scenario; its results in OUT/NAME/ (summary.json, report.html)."""
    import shlex
    from pathlib import Path

    from .experiments import Options, run

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

    from .lab.scenario import load

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

    from .lab.linkem import PathReport
    from .lab.net import Lab
    from .lab.scenario import load

    spec = load(Path(a.file))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"lab {spec.name}: bringing it up on {a.target} ...", flush=True)
    if spec.model_sync is not None:
        from .lab.bier_lab import BierLab

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
        emulated = sorted({e.engine for e in lab.emulators})
        print(f"lab {spec.name}: up; links emulated by {', '.join(emulated) or 'nothing'}; logs in {lab.workdir}/logs")
        print(PathReport.header())
        for r in lab.measure_paths(a.ping_count):
            print(r.row())
        print(f"intent: {lab.workdir}/intent.yaml; controller metrics: {lab.metrics_url}")
        if a.cli:
            from mininet.cli import CLI

            CLI(lab.net)
        else:
            print("Ctrl-C or `dinet lab down` ends it", flush=True)
            stop.wait()
    print(f"lab {spec.name}: down", flush=True)


def cmd_lab_down(a: argparse.Namespace) -> None:
    from .lab.net import down

    for line in down(a.name) or ["nothing to remove"]:
        print(line)


def cmd_certs_init(a: argparse.Namespace) -> None:
    from pathlib import Path

    from .creds import init_ca

    print(f"CA certificate: {init_ca(Path(a.dir), a.days)} (its key, ca.key, is mode 0600: keep it off the hosts)")


def cmd_certs_issue(a: argparse.Namespace) -> None:
    from pathlib import Path

    from .creds import issue

    key, cert = issue(Path(a.dir), a.name, a.days, tuple(a.ip or ()), force=a.force)
    print(f"{a.name}: {cert} and {key} (mode 0600); copy them with {Path(a.dir) / 'ca.crt'} to its host")


def cmd_certs_revoke(a: argparse.Namespace) -> None:
    from pathlib import Path

    from .creds import revoke

    crl = revoke(Path(a.dir), a.name)
    print(f"{a.name}: revoked in {crl}; copy it beside ca.crt on every host (servers re-read it as it changes)")


def cmd_status(a: argparse.Namespace) -> None:
    from .promtext import fetch, samples

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
    table = [
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
        _table(
            table, ["node", "service", "instance", "weight", "takes new flows", "packets", "new flows", "metric age s"]
        )
    )
    for name, value in sorted(other.items()):
        print(f"{name}: {value:g}")


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dinet", description="Computing-aware steering and BIER on XDP and BMv2")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def leaf(parent: Any, name: str, fn: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help)
        p.add_argument("--node", default="default", help="the node's bpffs folder name (default: default)")
        p.set_defaults(fn=fn)
        return p

    def iface(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dev", required=True, help="interface")
        p.add_argument("--netns", help="network namespace of the interface")
        p.add_argument("--mode", default="native", choices=["native", "generic", "auto"])

    xdp = sub.add_parser("xdp", help="attach, detach or remove the steering program").add_subparsers(
        dest="sub", required=True
    )
    p = leaf(xdp, "attach", cmd_xdp_attach, "load xdp_steer (maps pinned) and attach it")
    iface(p)
    p.add_argument("--src4", help="IPv4 tunnel source of this node")
    p.add_argument("--src6", help="IPv6 tunnel source of this node")
    iface(leaf(xdp, "detach", cmd_xdp_detach, "detach whatever XDP program the interface has"))
    leaf(xdp, "destroy", cmd_xdp_destroy, "unpin the node's steering maps")

    dec = sub.add_parser("decap", help="the tunnel endpoint's program").add_subparsers(dest="sub", required=True)
    p = leaf(dec, "attach", cmd_decap_attach, "load xdp_decap and attach it")
    iface(p)
    p.add_argument("--endpoint", action="append", required=True, help="a local tunnel endpoint (repeatable)")

    svc = sub.add_parser("service", help="services (VIP:PORT/PROTO)").add_subparsers(dest="sub", required=True)
    p = leaf(svc, "add", cmd_service_add, "install a service (again: change its placement)")
    p.add_argument("service")
    p.add_argument(
        "--session",
        action="store_true",
        help="session-affine: place new flows by their session key (the IPv6 flow label, or a source port of "
        "61440-65535 by its group of 8), so a conversation's connections reach one instance",
    )
    leaf(svc, "del", cmd_service_del, "remove a service").add_argument("service")
    leaf(svc, "list", cmd_service_list, "services and instances").add_argument("--json", action="store_true")

    inst = sub.add_parser("instance", help="instances of a service").add_subparsers(dest="sub", required=True)
    p = leaf(inst, "set", cmd_instance_set, "add or replace an instance")
    p.add_argument("service")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--weight", type=int, default=1)
    p.add_argument("--site", type=int, default=0)
    p = leaf(inst, "weight", cmd_instance_weight, "change an instance's weight")
    p.add_argument("service")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--weight", type=int, required=True)
    p = leaf(inst, "drain", lambda a: cmd_instance_state(a, "draining"), "no new flows; established flows stay")
    p.add_argument("service")
    p.add_argument("--id", type=int, required=True)
    p = leaf(inst, "state", cmd_instance_state, "set up, draining or down")
    p.add_argument("service")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("state", choices=["up", "draining", "down"])
    p = leaf(inst, "del", cmd_instance_del, "remove an instance")
    p.add_argument("service")
    p.add_argument("--id", type=int, required=True)

    bier = sub.add_parser("bier", help="BIER forwarding (TC)").add_subparsers(dest="sub", required=True)
    p = leaf(bier, "attach", cmd_bier_attach, "load tc_bier (maps pinned) and attach it at ingress")
    p.add_argument("--dev", required=True)
    p.add_argument("--netns")
    p = leaf(bier, "detach", cmd_bier_detach, "remove the interface's clsact qdisc")
    p.add_argument("--dev", required=True)
    p.add_argument("--netns")
    leaf(bier, "destroy", cmd_bier_destroy, "unpin the node's BIER maps")
    bift = bier.add_parser("bift", help="this BFR's BIFT").add_subparsers(dest="sub2", required=True)
    leaf(bift, "show", cmd_bier_bift_show, "entries per BIFT-id").add_argument("--json", action="store_true")
    for name, fn in (("set", cmd_bier_bift_set), ("del", cmd_bier_bift_del)):
        p = leaf(bift, name, fn, f"{name} the entry of one (BSL, SD, SI)")
        p.add_argument("--bsl", type=int, default=64, help="bits: 64, 128 or 256")
        p.add_argument("--si", type=int, default=0)
        p.add_argument("--sd", type=int, default=0)
        if name == "set":
            p.add_argument("--local", help="this BFR's own BFR-id(s)")
            p.add_argument("--nbr", action="append", default=[], help="IFNAME,DMAC,BFR-IDS (repeatable)")
            p.add_argument("--netns", help="namespace of the interfaces")
    grp = bier.add_parser("group", help="BFIR classification").add_subparsers(dest="sub2", required=True)
    for name, fn in (("add", cmd_bier_group_add), ("del", cmd_bier_group_del)):
        p = leaf(grp, name, fn, f"{name} traffic the BFIR encapsulates")
        p.add_argument("dst", help="group or model-sync destination address")
        p.add_argument("--src", help="source, for an (S,G) entry")
        p.add_argument("--udp-port", type=int, help="UDP destination port, for model sync")
        if name == "add":
            p.add_argument("--to", required=True, help="BFR-ids to reach: 1,2,5-8")
            p.add_argument("--bfir-id", type=int, required=True)
            p.add_argument("--bsl", type=int, default=64)
            p.add_argument("--sd", type=int, default=0)
    leaf(grp, "list", cmd_bier_group_list, "BFIR entries").add_argument("--json", action="store_true")
    leaf(bier, "stats", cmd_bier_stats, "BIER counters").add_argument("--json", action="store_true")

    p = sub.add_parser("run", help="run the controller on an intent file (YAML)")
    p.add_argument("file")
    p.add_argument("--once", action="store_true", help="install the intent, then exit")
    p.add_argument("--check", action="store_true", help="validate the file and exit; starts nothing")
    p.add_argument("--insecure", action="store_true", help="without the intent's `tls`: run without TLS (a warning)")
    p.add_argument("--node", help="mode distributed: the ingress node (name or index) this process decides for")
    p.set_defaults(fn=cmd_run)
    p4 = sub.add_parser("p4", help="the P4 program for BMv2").add_subparsers(dest="sub", required=True)
    for name, fn, text in (
        ("compile", cmd_p4_compile, "compile p4/dinet.p4 (p4c-bm2-ss on PATH)"),
        ("read", cmd_p4_read, "read a table back from a switch"),
    ):
        p = p4.add_parser(name, help=text)
        p.set_defaults(fn=fn)
        p.add_argument("--max-services", type=int, default=4096)
        p.add_argument("--max-instances", type=int, default=256)
        p.add_argument("--ring-size", type=int, default=4099)
        if name == "read":
            p.add_argument("--address", required=True, help="P4Runtime address (host:port or unix:/path)")
            p.add_argument("--device-id", type=int, default=0)
            p.add_argument("--table", required=True)
            p.add_argument("--json", action="store_true")
    p = leaf(sub, "agent", cmd_agent, "serve this host's programs and maps to a controller over gRPC")
    p.add_argument("--listen", default="127.0.0.1:50061")
    p.add_argument("--certs", help="the certificate folder holding ca.crt and this agent's key and certificate")
    p.add_argument("--identity", default="agent", help="this agent's certificate name (default: agent)")
    p.add_argument("--controller", default="controller", help="identities allowed to drive this agent, comma-separated")
    p.add_argument("--token-file", help="a second factor the controller must present (default: $DINET_TOKEN, if set)")
    p.add_argument("--insecure", action="store_true", help="serve without TLS (a warning; tests and labs only)")
    p.add_argument("--prometheus", help="HOST:PORT: serve the agent's refusals by reason for Prometheus")
    p = sub.add_parser("serve", help="an OpenAI-compatible model server with a serving engine's timing")
    p.add_argument("--listen", default="127.0.0.1:8000")
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
        "--privacy-layers", type=_positive, default=2, help="split role: layers that always stay here (default 2)"
    )
    p.add_argument(
        "--split-layers", type=_positive, help="split role: always this many layers here (default: chosen per request)"
    )
    p.add_argument("--escalate-url", help="cascade role: the large model (a VIP dinet steers)")
    p.add_argument("--threshold", type=float, default=0.6, help="cascade role: escalate below this confidence")
    p.add_argument("--large-quality", type=float, default=1.0, help="cascade role: the large model's quality")
    p.add_argument("--verify-url", help="draft role: the target model that verifies each round (a VIP dinet steers)")
    p.add_argument(
        "--acceptance", type=float, default=0.7, help="draft role: the pair's acceptance rate per drafted token"
    )
    p.add_argument("--kv-tokens", type=_positive, help="KV-cache capacity in tokens (default: the profile's)")
    p.add_argument("--max-batch", type=_positive, help="sequences decoded together (default: the profile's)")
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
    p.add_argument("--index-blocks", type=_positive, default=100_000, help="prompt blocks remembered per backend")
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
    p.add_argument("--system-prompts", type=_positive, default=1, help="conversations: distinct system prompts")
    p.add_argument("--think-s", type=float, default=1.0, help="conversations: mean think time between turns")
    p.add_argument(
        "--session-key",
        choices=["none", "port", "flow-label"],
        default="none",
        help="conversations: what names the conversation to the network: a source port of its group (61440-65535), "
        "or an IPv6 flow label (dinet.policy.session)",
    )
    p.set_defaults(fn=cmd_load)
    p = sub.add_parser("metrics-agent", help="scrape an inference server's metrics and report to the collector")
    p.add_argument("--url", required=True, help="the server's Prometheus endpoint, e.g. http://127.0.0.1:8000/metrics")
    p.add_argument("--ca", help="the CA that signs an https endpoint's certificate (default: the system's)")
    p.add_argument("--service", required=True, help="VIP:PORT/PROTO")
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
    p = sub.add_parser("sync", help="push a model file to GPU clouds over BIER (UFTP, encrypted, verified)")
    p.add_argument("file")
    p.add_argument("--to", required=True, help="the clouds (BFER names of the intent), comma-separated")
    p.add_argument("--intent", required=True, help="the intent file with the BIER domain and bier.receivers")
    p.add_argument("--bfir", required=True, help="the BFIR this repository sends through")
    p.add_argument("--interface", required=True, help="this host's interface toward the BFIR")
    p.add_argument("--netns", help="the network namespace the repository's interface is in")
    p.add_argument("--rate", type=float, default=200.0, help="Mbit/s (fixed rate)")
    p.add_argument("--cc", action="store_true", help="TFMCC congestion control instead of a fixed rate")
    p.add_argument("--no-encrypt", action="store_true", help="send in clear (receivers refuse it by default)")
    p.add_argument("--key", help="this sender's EC private key (PEM; default: an ephemeral one per job)")
    p.add_argument("--port", type=int, default=1044)
    p.add_argument("--group", default="232.4.4.1", help="UFTP's announce group (the receivers' -M; 232/8)")
    p.add_argument("--ca", help="the CA of the receivers' certificates (default: the system's)")
    p.add_argument("--retries", type=int, default=2, help="UFTP restarts for receivers that dropped out")
    p.add_argument("--token-file", help="the receivers' token (default: $DINET_TOKEN)")
    p.add_argument("--insecure", action="store_true", help="node agents and the receivers' status without TLS")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_sync)
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
    p = sub.add_parser("sync-receiver", help="a GPU cloud's model-sync receiver (uftpd and a status endpoint)")
    p.add_argument("--store", required=True, help="the model store (received files land here)")
    p.add_argument("--interfaces", required=True, help="interfaces BIER delivers on, comma-separated")
    p.add_argument("--bfr-id", type=int, required=True, help="this cloud's BFR-id (its UFTP client ID)")
    p.add_argument("--listen", default="0.0.0.0:9444", help="the status endpoint")
    p.add_argument("--port", type=int, default=1044)
    p.add_argument("--group", default="232.4.4.1", help="UFTP's announce group (232/8: pinned senders need it)")
    p.add_argument("--servers", help="the pinned senders (uftpd's server list; `dinet sync-pin` writes a line)")
    p.add_argument("--any-sender", action="store_true", help="take files from any sender (no --servers)")
    p.add_argument("--tls-cert", help="serve the status over HTTPS with this certificate (`dinet certs issue`)")
    p.add_argument("--tls-key", help="its private key (mode 0600)")
    p.add_argument("--allow-clear", action="store_true", help="also accept sessions without encryption")
    p.add_argument("--token-file", help="the token the repository presents (default: $DINET_TOKEN)")
    p.add_argument("--insecure", action="store_true", help="no token, status in clear (tests and labs only)")
    p.set_defaults(fn=cmd_sync_receiver)
    p = sub.add_parser("sync-pin", help="the line of a receiver's --servers file that pins a sender's UFTP key")
    p.add_argument("key", help="the sender's key (PEM, as `dinet sync --key` takes it)")
    p.add_argument("--address", required=True, help="the IPv4 address the sender sends from")
    p.add_argument("--new", action="store_true", help="make the key first (EC prime256v1, mode 0600)")
    p.set_defaults(fn=cmd_sync_pin)
    certs = sub.add_parser("certs", help="a CA and certificates for controllers and agents").add_subparsers(
        dest="sub", required=True
    )
    p = certs.add_parser("init", help="a new CA in DIR")
    p.add_argument("dir")
    p.add_argument("--days", type=int, default=3650)
    p.set_defaults(fn=cmd_certs_init)
    p = certs.add_parser("issue", help="a key and certificate for NAME, signed by the CA in --dir")
    p.add_argument("name")
    p.add_argument("--dir", required=True)
    p.add_argument("--days", type=int, default=825)
    p.add_argument("--ip", action="append", help="an address it is also reached by (repeatable)")
    p.add_argument("--force", action="store_true", help="replace the identity's key and certificate if it has them")
    p.set_defaults(fn=cmd_certs_issue)
    p = certs.add_parser("revoke", help="add NAME's certificate to the CA's revocation list (--dir/crl.pem)")
    p.add_argument("name")
    p.add_argument("--dir", required=True)
    p.set_defaults(fn=cmd_certs_revoke)
    p = sub.add_parser("status", help="a running controller's view, from its Prometheus endpoint")
    p.add_argument("--url", default="http://127.0.0.1:9464/metrics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_status)

    leaf(sub, "stats", cmd_stats, "counters per service, instance and verdict").add_argument(
        "--json", action="store_true"
    )
    p = leaf(sub, "affinity", cmd_affinity, "flows in the affinity table")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if not a.verbose:  # gRPC's core logs its own copy of errors dinet reports in one line
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        a.fn(a)
    except DinetError as e:
        print(f"dinet: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # a file, socket or device the user named
        print(f"dinet: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: one line, and the traceback on request
        if os.environ.get("DINET_DEBUG"):
            raise
        print(f"dinet: internal error ({type(e).__name__}: {e}); DINET_DEBUG=1 shows the traceback", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
