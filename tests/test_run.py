"""`dinet run FILE` end to end: the controller process takes reports from an agent over gRPC and installs
weights on an XDP node; `dinet status` reads them back from its Prometheus endpoint."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RUN_ID, dinet_process, forget_node, free_port, needs_bcc, needs_root
from dinet.errors import ConfigError
from dinet.model import ServiceKey
from dinet.policy.scores import Level0
from dinet.services.collect import Agent
from dinet.services.intent import load

pytestmark = [needs_root, needs_bcc]


def intent(tmp_path: Path, node: str, col: int, prom: int) -> Path:
    text = (Path(__file__).parents[1] / "topo" / "intent-example.yaml").read_text()
    text = text.replace("name: default", f"name: {node}").replace("127.0.0.1:50051", f"127.0.0.1:{col}")
    text = text.replace("127.0.0.1:9464", f"127.0.0.1:{prom}")
    p = tmp_path / "intent.yaml"
    p.write_text(text)
    return p


SVC_HEAD = "node: {target: xdp}\nservices:\n  - service: 10.0.0.1:80/tcp\n    instances:\n"
BAD_INTENTS = [
    # (the file, the one line it must give: the path in the file and what was expected)
    ("node: {target: dpdk}\nservices: []", r"bad.yaml: node: .*'dpdk'.* expected tags: 'xdp', 'agent', 'bmv2'"),
    ("node: {target: bmv2}\nservices: []", r"node.address: missing"),
    ("colector: {listen: 1.2.3.4:5}\nnode: {target: xdp}", r"colector: unknown key \(a typo\?\)"),
    (
        SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1, wieght: 3}",
        r"services\[0\]\.instances\[0\]\.wieght: unknown key",
    ),
    (SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1, weight: 1.7}", r"instances\[0\]\.weight: .*integer, got 1\.7"),
    (SVC_HEAD + "      - {id: abc, endpoint: 10.1.1.1}", r"instances\[0\]\.id: .*integer, got 'abc'"),
    (
        SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1, state: sleepy}",
        r"\.state: .*'up', 'draining' or 'down', got 'sleepy'",
    ),
    (SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1, weight: -1}", r"\.weight: .*greater than or equal to 0"),
    (SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.300}", r"instances\[0\]\.endpoint: expected an IPv4 or IPv6 address"),
    ("node: {target: xdp}\nservices: [null]", r"services\[0\]: Input should be a valid dictionary, got None"),
    ("node: {target: xdp}\nservices: [{service: 'x:1/tcp', instances: []}]", r"services\[0\]\.service: not an IPv4"),
    (
        "node: {target: xdp}\nservices: [{service: '10.0.0.1:80/tcp', class: fast,"
        " instances: [{id: 1, endpoint: 10.0.0.2}]}]",
        r"services\[0\]\.class: .*'delay-sensitive' or 'delay-tolerant'",
    ),
    (
        SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1}\n      - {id: 1, endpoint: 10.1.1.2}",
        r"instance ids must be unique",
    ),
    (
        SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1, token: t, name: a}\n"
        "      - {id: 2, endpoint: 10.1.1.2, token: t, name: b}",
        r"its token is also a's",
    ),
    ("node: {target: xdp}\ncollector: {timeout: 0}", r"collector\.timeout: .*greater than 0"),
    ("node: {target: xdp}\nprometheus: {listen: nowhere}", r"prometheus\.listen: expected HOST:PORT"),
    ("node: [", r"line \d+: not valid YAML"),
    # a second `services:` would silently replace the first (and a hot reload then remove every service)
    (
        SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1}\nservices: []",
        r"line 6: not valid YAML: duplicate key 'services'",
    ),
    ("node: {target: xdp}\ncollector: {timeout: .inf}", r"collector\.timeout: .*finite number"),
    (
        SVC_HEAD
        + "      - {id: 1, endpoint: 10.1.1.1}\n    pools: [{agent: p, token: t, ids: [100, 399], sites: [1]}]",
        r"301 instances and pool ids do not fit the instance table \(256 per service\)",
    ),
    (
        SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1}\n    pools: [{agent: p, token: t, ids: [100, 109], sites: [1],"
        " prefixes: [10.1.0.0/33]}]",
        r"prefixes: '10.1.0.0/33' is not a network",
    ),
    (SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1}\n    slo: {ttft_ms: .nan}", r"slo\.ttft_ms: .*finite number"),
    (
        SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1}\n    placement: sticky",
        r"placement: .*'flow', 'session' or 'two-choices'",
    ),
    ("- just\n- a list", r"not a mapping"),
    ("nodes: {a: {target: local}}\nbier: {bfrs: {a: 1, b: 2}}", r"bier.bfrs: b is not in nodes"),
]


@pytest.mark.parametrize("text,msg", BAD_INTENTS, ids=[f"bad{i}" for i in range(len(BAD_INTENTS))])
def test_bad_intent_files_are_refused_with_one_line(tmp_path: Path, text: str, msg: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=msg) as e:
        load(p)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(p))


def test_an_instance_named_only_is_reported_for_by_its_name(tmp_path: Path) -> None:
    """An instance with a `name:` and no `agent:` or token has an agent all the same: the identity of its name
    (its reports are taken, and it expires when they stop); one with neither reports for nothing."""
    p = tmp_path / "i.yaml"
    p.write_text(SVC_HEAD + "      - {id: 1, endpoint: 10.1.1.1, name: edge-a}\n      - {id: 2, endpoint: 10.1.1.2}")
    cfg = load(p)
    assert set(cfg.agents) == {"edge-a"}
    assert cfg.agents["edge-a"].refs == {(ServiceKey.parse("10.0.0.1:80/tcp"), 1)}


@pytest.mark.parametrize(
    "lines,placement",
    [
        ("", "flow"),  # no tiers: the ring
        ("    tiers: [large, small]\n", "two-choices"),  # tiered: two choices (dinet.policy.choices)
        ("    tiers: [large, small]\n    placement: flow\n", "flow"),  # what the file says wins
        ("    tiers: [large, small]\n    policy: random\n", "flow"),  # a baseline is compared as it is
        ("    placement: session\n", "session"),
    ],
    ids=["untiered", "tiered", "tiered-ring", "tiered-baseline", "session"],
)
def test_a_service_without_a_placement_gets_dinets_default(tmp_path: Path, lines: str, placement: str) -> None:
    p = tmp_path / "i.yaml"
    tier = ", tier: large" if "tiers" in lines else ""
    p.write_text(
        SVC_HEAD.replace("    instances:\n", lines + "    instances:\n")
        + f"      - {{id: 1, endpoint: 10.1.1.1{tier}}}"
    )
    assert load(p).services[0].placement == placement


def test_run_check_validates_without_starting_anything(tmp_path: Path) -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "dinet.cli",
            "run",
            "--check",
            str(Path(__file__).parents[1] / "topo" / "intent-example.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "valid: 1 service(s), 2 instance(s)" in ok.stdout, ok.stderr
    p = tmp_path / "bad.yaml"
    p.write_text(BAD_INTENTS[3][0])
    bad = subprocess.run([sys.executable, "-m", "dinet.cli", "run", "--check", str(p)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "services[0].instances[0].wieght: unknown key" in bad.stderr


def test_run_and_status(tmp_path: Path, certs) -> None:
    """`dinet run` over mutual TLS: metric agents with their certificates (and tokens) report; a report for
    another agent's instance is refused and counted; `dinet status` shows weights, refusals and TLS on."""
    node = f"runtest{RUN_ID}"
    col, prom = free_port(), free_port()
    path = intent(tmp_path, node, col, prom)
    text = path.read_text().replace("token: edge-a-secret", "token: edge-a-secret, agent: edge")
    text = text.replace("token: cloud-a-secret", "token: cloud-a-secret, agent: cloud")
    path.write_text(f"tls: {{dir: {certs.dir}, name: collector}}\n" + text)
    try:
        with dinet_process("run", str(path), ready="dinet: collector on") as run:
            assert "mutual TLS as collector" in run.head[-1]
            address = f"127.0.0.1:{col}"
            edge = Agent(address, "edge-a-secret", certs.identity("edge"))
            cloud = Agent(address, "cloud-a-secret", certs.identity("cloud"))
            ack = edge.send([edge.report("10.99.0.1:80/tcp", 11, Level0(cpu_load=0.95))])
            assert ack.accepted == 1
            cloud.send([cloud.report("10.99.0.1:80/tcp", 21, Level0(cpu_load=0.1))])
            bad = Agent(address, "edge-a-secret", certs.identity("edge"))
            bad.seq = 100
            assert bad.send([bad.report("10.99.0.1:80/tcp", 21, Level0())]).rejected == 1  # not edge-a's instance
            for a in (edge, cloud, bad):
                a.close()
            res = subprocess.run(
                [sys.executable, "-m", "dinet.cli", "status", "--url", f"http://127.0.0.1:{prom}/metrics", "--json"],
                capture_output=True,
                text=True,
                check=True,
            )
            st = json.loads(res.stdout)
            by_id = {row["instance"]: row for row in st["instances"]}
            assert by_id["11"]["dinet_instance_weight"] == 0 and by_id["21"]["dinet_instance_weight"] > 0
            assert st["totals"]["rejected unknown_instance"] == 1 and st["totals"]["insecure (no TLS)"] == 0
            table = subprocess.run(
                [sys.executable, "-m", "dinet.cli", "status", "--url", f"http://127.0.0.1:{prom}/metrics"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "10.99.0.1:80/tcp" in table and "weight" in table
    finally:
        forget_node(node)
    bad = subprocess.run(
        [sys.executable, "-m", "dinet.cli", "status", "--url", f"http://127.0.0.1:{prom}/metrics"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "no dinet controller answers" in bad.stderr


def test_run_installs_a_bier_domain(tmp_path: Path) -> None:
    """A `bier:` section: BIFTs computed from the links and written to every node, BFIR entries for groups."""
    from dinet.packets import bift_id
    from dinet.targets.tc import BierNode

    names = {k: f"bierrun{RUN_ID}{k}" for k in "abc"}
    path = tmp_path / "bier.yaml"
    path.write_text(f"""
node: {{target: xdp, name: steerrun{RUN_ID}}}
services: []
prometheus: {{listen: null}}
nodes:
  a: {{target: local, name: {names["a"]}}}
  b: {{target: local, name: {names["b"]}}}
  c: {{target: local, name: {names["c"]}}}
bier:
  bsl: 64
  bfrs: {{a: 10, b: 1, c: 2}}
  links:
    - {{a: a, b: b, a_port: [lo, "02:00:00:00:0a:0b"], b_port: [lo, "02:00:00:00:0b:0a"]}}
    - {{a: b, b: c, a_port: [lo, "02:00:00:00:0b:0c"], b_port: [lo, "02:00:00:00:0c:0b"]}}
  groups:
    - {{bfir: a, dst: 10.200.0.1, udp_port: 9000, to: [b, c]}}
""")
    try:
        res = subprocess.run(
            [sys.executable, "-m", "dinet.cli", "run", "--once", "--insecure", str(path)],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stderr
        assert "BIER: 4 BIFT and BFIR entries written to 3 node(s)" in res.stdout
        with BierNode(names["a"]) as a, BierNode(names["b"]) as b:
            ea, eb = a.bifts()[bift_id(1, 0)], b.bifts()[bift_id(1, 0)]
            assert [(n.dmac, n.fbm) for n in ea.neighbors] == [("02:00:00:00:0b:0a", 0b11)]  # b and c via b
            assert eb.local == 0b01 and [(n.dmac, n.fbm) for n in eb.neighbors] == [
                ("02:00:00:00:0a:0b", 1 << 9),
                ("02:00:00:00:0c:0b", 0b10),
            ]
            assert list(a.bfir_entries().values()) == [{bift_id(1, 0): 0b11}]
    finally:
        for n in (*names.values(), f"steerrun{RUN_ID}"):
            forget_node(n)
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("to: [b, c]", "to: [b, z]"))
    with pytest.raises(ConfigError, match="no BFR 'z'"):
        load(bad)
    off = tmp_path / "nofrr.yaml"
    off.write_text(path.read_text().replace("  bsl: 64\n", "  bsl: 64\n  frr: false\n"))
    loaded, loaded_off = load(path).bier, load(off).bier
    assert loaded is not None and loaded_off is not None and loaded.frr and not loaded_off.frr


def test_each_ingress_node_decides_with_its_own_paths(tmp_path: Path) -> None:
    """Two ingress nodes, each nearer to another site: a delay-sensitive service stays on each node's
    nearest site, from the same reports."""
    from dinet.targets.xdp import SteeringNode

    names = [f"ingA{RUN_ID}", f"ingB{RUN_ID}"]
    col, prom = free_port(), free_port()
    path = tmp_path / "two.yaml"
    path.write_text(f"""
ingress:
  - {{target: xdp, name: {names[0]}, src4: 10.0.0.1, sites: {{1: {{delay_ms: 2}}, 2: {{delay_ms: 40}}}}}}
  - {{target: xdp, name: {names[1]}, src4: 10.0.1.1, sites: {{1: {{delay_ms: 40}}, 2: {{delay_ms: 2}}}}}}
collector: {{listen: "127.0.0.1:{col}", timeout: 600}}   # the test's own map reads take seconds (bcc)
prometheus: {{listen: "127.0.0.1:{prom}"}}
services:
  - service: 10.99.0.7:443/tcp
    class: delay-sensitive
    instances:
      - {{id: 1, endpoint: 10.11.1.2, site: 1, token: one}}
      - {{id: 2, endpoint: 10.12.1.2, site: 2, token: two}}
""")
    try:
        with dinet_process("run", "--insecure", str(path), ready="dinet: collector on"):
            for token, iid in (("one", 1), ("two", 2)):
                a = Agent(f"127.0.0.1:{col}", token)
                assert a.send([a.report("10.99.0.7:443/tcp", iid, Level0(cpu_load=0.3))]).accepted == 1
                a.close()
            svc = ServiceKey.parse("10.99.0.7:443/tcp")
            got = []
            for n in names:
                with SteeringNode(n) as node:
                    got.append({i.instance_id: i.weight for i in node.service(svc).instances.values()})
            assert got[0][1] > 0 and got[0][2] == 0 and got[1][2] > 0 and got[1][1] == 0, got
            st = json.loads(
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "dinet.cli",
                        "status",
                        "--url",
                        f"http://127.0.0.1:{prom}/metrics",
                        "--json",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            assert {(r["node"], r["instance"]) for r in st["instances"] if r.get("dinet_instance_weight")} == {
                ("0", "1"),
                ("1", "2"),
            }
    finally:
        for n in names:
            forget_node(n)


def _weights(names: list[str], svc: ServiceKey) -> list[dict[int, int]]:
    from dinet.targets.xdp import SteeringNode

    out = []
    for n in names:
        with SteeringNode(n) as node:
            out.append({i.instance_id: i.weight for i in node.service(svc).instances.values()})
    return out


def _until(cond, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.1)


TWO_NODES = """
{mode}ingress:
  - {{target: xdp, name: {a}, src4: 10.0.0.1, sites: {{1: {{delay_ms: {d1}}}, 2: {{delay_ms: 40}}}}{dec_a}}}
  - {{target: xdp, name: {b}, src4: 10.0.1.1, sites: {{1: {{delay_ms: 40}}, 2: {{delay_ms: 2}}}}{dec_b}}}
collector: {{listen: "127.0.0.1:{col}", timeout: 600}}
prometheus: {{listen: null}}
services:
  - service: 10.99.0.8:443/tcp
    class: delay-sensitive
    instances:
      - {{id: 1, endpoint: 10.11.1.2, site: 1, token: one}}
      - {{id: 2, endpoint: 10.12.1.2, site: 2, token: two}}
"""


@needs_root
@needs_bcc
def test_a_changed_path_delay_in_the_intent_is_decided_on_without_a_restart(tmp_path: Path) -> None:
    names = [f"pdA{RUN_ID}", f"pdB{RUN_ID}"]
    col = free_port()
    path = tmp_path / "paths.yaml"
    fill = {"mode": "", "a": names[0], "b": names[1], "col": col, "dec_a": "", "dec_b": ""}
    path.write_text(TWO_NODES.format(d1=2, **fill))
    svc = ServiceKey.parse("10.99.0.8:443/tcp")
    try:
        with dinet_process("run", "--insecure", str(path), ready="dinet: collector on"):
            for token, iid in (("one", 1), ("two", 2)):
                a = Agent(f"127.0.0.1:{col}", token)
                assert a.send([a.report(str(svc), iid, Level0(cpu_load=0.3))]).accepted == 1
                a.close()
            _until(lambda: _weights(names, svc)[0][1] > 0 == _weights(names, svc)[0][2], "site 1 nearest on A")
            path.write_text(TWO_NODES.format(d1=80, **fill))  # A's path to site 1 slowed down
            _until(lambda: _weights(names, svc)[0][1] == 0 < _weights(names, svc)[0][2], "site 2 nearest on A")
            assert _weights(names, svc)[1][2] > 0  # B's own paths did not change
    finally:
        for n in names:
            forget_node(n)


@needs_root
@needs_bcc
def test_distributed_mode_each_node_decides_from_the_agents_reports_and_goes_on_alone(tmp_path: Path) -> None:
    """mode distributed: a decider per ingress node (`dinet run --node`), each taking the agents' reports
    itself (one agent fans out to both); one decider stopped, the other still decides; `dinet run` without
    --node is refused in one line."""
    from dinet.services.collect import Fanout

    names = [f"dmA{RUN_ID}", f"dmB{RUN_ID}"]
    ca, cb = free_port(), free_port()
    path = tmp_path / "dist.yaml"
    dec = ', decider: {{collector: {{listen: "127.0.0.1:{}", timeout: 600}}}}'
    fill = {"mode": "mode: distributed\n", "a": names[0], "b": names[1], "col": free_port()}
    path.write_text(TWO_NODES.format(d1=2, dec_a=dec.format(ca), dec_b=dec.format(cb), **fill))
    svc = ServiceKey.parse("10.99.0.8:443/tcp")
    res = subprocess.run(
        [sys.executable, "-m", "dinet.cli", "run", "--insecure", str(path)], capture_output=True, text=True
    )
    assert res.returncode == 1 and "--node NAME" in res.stderr and len(res.stderr.strip().splitlines()) <= 2
    agents = {iid: Fanout([Agent(f"127.0.0.1:{c}", tok) for c in (ca, cb)]) for tok, iid in (("one", 1), ("two", 2))}
    try:
        with dinet_process("run", "--insecure", str(path), "--node", "1", ready="dinet: collector on"):
            with dinet_process("run", "--insecure", str(path), "--node", names[0], ready="dinet: collector on"):
                for iid, a in agents.items():
                    assert a.send([a.report(str(svc), iid, Level0(cpu_load=0.3))]).accepted == 1
                _until(
                    lambda: (w := _weights(names, svc))[0][1] > 0 == w[0][2] and w[1][2] > 0 == w[1][1], "each nearest"
                )
            # A's decider is gone: B still decides on the reports (the fan-out goes on without A)
            a = agents[2]
            assert a.send([a.report(str(svc), 2, Level0(gpu_util=0.95, queue_depth=32))]).accepted == 1
            _until(lambda: _weights(names, svc)[1][2] == 0 < _weights(names, svc)[1][1], "B leaves site 2")
            assert _weights(names, svc)[0] == {1: _weights(names, svc)[0][1], 2: 0}  # A keeps what it had
    finally:
        for a in agents.values():
            a.close()
        for n in names:
            forget_node(n)


def test_run_measures_sites_with_probes(tmp_path: Path, ns_prefix: str) -> None:
    """Site 2's probe gets no answer (loss 1): a delay-sensitive service leaves it, though both sites are
    configured as equally near."""
    from dinet.lab.namespaces import Topology
    from dinet.targets.xdp import SteeringNode

    node, col = f"probe{RUN_ID}", free_port()
    with Topology(ns_prefix) as t:
        ns = t.add_ns("p")  # a namespace with only loopback: 127.0.0.1 answers, 10.77.9.9 cannot be reached
        path = tmp_path / "probe.yaml"
        path.write_text(f"""
node: {{target: xdp, name: {node}, src4: 10.0.0.1}}
collector: {{listen: "127.0.0.1:{col}", timeout: 600}}
prometheus: {{listen: null}}
probe_interval: 0.5
sites:
  1: {{probe: 127.0.0.1, probe_netns: {ns}}}
  2: {{probe: 10.77.9.9, probe_netns: {ns}}}
services:
  - service: 10.99.0.8:80/tcp
    class: delay-sensitive
    instances:
      - {{id: 1, endpoint: 10.11.1.2, site: 1, token: one}}
      - {{id: 2, endpoint: 10.12.1.2, site: 2, token: two}}
""")
        try:
            with dinet_process("run", "--insecure", str(path), ready="dinet: collector on"):
                for token, iid in (("one", 1), ("two", 2)):
                    a = Agent(f"127.0.0.1:{col}", token)
                    a.send([a.report("10.99.0.8:80/tcp", iid, Level0(cpu_load=0.2))])
                    a.close()
                svc = ServiceKey.parse("10.99.0.8:80/tcp")
                weights = {}
                with SteeringNode(node) as n:
                    for _ in range(100):  # the probes run every half second: wait for their verdict
                        weights = {i.instance_id: i.weight for i in n.service(svc).instances.values()}
                        if weights.get(2) == 0:
                            break
                        select.select([], [], [], 0.1)
                assert weights[1] > 0 and weights[2] == 0, weights
        finally:
            forget_node(node)
