"""The scenario runner (dinet lab) on Mininet: every scenario file comes up on XDP and on BMv2, every client
reaches every instance, a short load is served through the steering node, each path reports the RTT it
achieved beside the configured one, and the teardown leaves no namespace, interface, pinned map or process.
Then the use cases' behaviours: security levels, model tiers, and the same decisions on both data planes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, bmv2_tools_or_skip, mininet_or_skip, needs_bcc, needs_root
from dinet.errors import ConfigError
from dinet.lab.reports import Reports
from dinet.lab.scenario import load

SCENARIOS = sorted((ROOT / "topo" / "scenarios").glob("*.yaml"))
QUICK = {"output_min": 4, "output_max": 8, "prompt_min": 32, "prompt_max": 64}


def test_every_scenario_file_is_valid() -> None:
    assert {p.stem for p in SCENARIOS} == {
        "cloud-edge",
        "cloud-edge-mixed",
        "cloud-edge-device",
        "enterprise",
        "elastic",
        "tiers",
        "prefill-decode",
        "model-sync",
        "cooperative",
        "prefix",
        "isolation",
    }
    for p in SCENARIOS:
        spec = load(p)
        assert spec.name == p.stem  # `dinet lab down NAME` finds it by its file's name


def test_a_typo_in_a_scenario_is_one_line_naming_where(tmp_path: Path) -> None:
    text = (ROOT / "topo" / "scenarios" / "enterprise.yaml").read_text().replace("min_security: 2", "min_secrity: 2")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"bad.yaml: services\[0\]\.min_secrity: unknown key"):
        load(bad)
    bad.write_text(text.replace("min_secrity: 2", "min_security: 2").replace("site: hqnet", "site: hqnett"))
    with pytest.raises(ConfigError, match="cnet.site: no site 'hqnett'"):
        load(bad)
    res = subprocess.run(
        [sys.executable, "-m", "dinet.cli", "lab", "check", str(bad)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1 and "hqnett" in res.stderr


def test_an_engine_that_answers_two_services_is_checked_where_the_file_says_it(tmp_path: Path) -> None:
    """cloud-edge-mixed: one engine per instance answers chat and batch (a port each); clients call both. A
    service it does not have, two services on one port, or a pool instance with two services: one line each."""
    mixed = ROOT / "topo" / "scenarios" / "cloud-edge-mixed.yaml"
    spec = load(mixed)
    assert [s.name for s in spec.client_services()] == ["chat", "batch"]
    assert {s.class_ for s in spec.services} == {"delay-sensitive", "delay-tolerant"}
    assert all(i.services == ["chat", "batch"] for i in spec.instances)
    text = mixed.read_text()
    bad = tmp_path / "bad.yaml"
    for change, want in (
        (("also_serves: [batch]", "also_serves: [bach]", 1), "e1: no service 'bach'"),
        (("port: 8100", "port: 8000", 1), "e1: its services share a port"),
        (("also_serves: [batch]", "also_serves: [chat]", 1), "e1 names a service twice"),
        (("also_serves: [batch]", "also_serves: [batch], pool: true", 1), "not a pool's, serves more than one"),
    ):
        bad.write_text(text.replace(*change))
        with pytest.raises(ConfigError, match=want) as err:
            load(bad)
        assert len(str(err.value).splitlines()) == 1, err.value


def test_a_second_lab_up_of_a_running_scenario_is_refused_and_leaves_the_first_alone(tmp_path: Path) -> None:
    """`dinet lab up` of a scenario that is up already says so before it makes anything, and the running lab's
    state (what `dinet lab down` removes it by) stays; the same for a model-sync scenario's lab."""
    from dinet.errors import DinetError
    from dinet.lab.bier_lab import BierLab
    from dinet.lab.net import Lab

    for cls, scenario in ((Lab, "cloud-edge"), (BierLab, "model-sync")):
        spec = load(ROOT / f"topo/scenarios/{scenario}.yaml")
        running = tmp_path / f"{spec.name}.json"
        running.write_text('{"pid": 1, "tag": "other", "netns": ["other-h1"]}')
        with pytest.raises(DinetError, match="is up already"), cls(spec, workdir=tmp_path / "w", state_dir=tmp_path):
            pass
        assert running.read_text() == '{"pid": 1, "tag": "other", "netns": ["other-h1"]}'
        assert not (tmp_path / "w").exists()  # nothing made


def test_a_labs_intent_names_the_scenarios_instances_and_paths_and_loads_as_dinet_run_loads_it(tmp_path: Path) -> None:
    """Kernel-free (node agents: no network to name): the intent a lab writes has per service the scenario's
    instances that are not a pool's, each with its engine profile's prior, the pool where there is one, per
    ingress node every site at twice its path's one-way delay, and it loads as `dinet run` loads it. A
    policy and placement set at run time are in the file; a placement that does not exist is an error and
    the file stays as it was."""
    from dinet.lab.net import Lab
    from dinet.model import Strategy
    from dinet.services.intent import load as load_intent
    from dinet.workload.engine import PROFILES

    spec = load(ROOT / "topo" / "scenarios" / "elastic.yaml")
    tmp_path.joinpath("w").mkdir()
    lab = Lab(spec, "xdp", tmp_path / "w", state_dir=tmp_path, node_agents=True)
    run = load_intent(lab.intent.checked())
    (svc,) = run.services
    assert str(svc.key) == "10.99.0.1:8000/tcp" and svc.strategy == Strategy.DINET and svc.placement == "flow"
    assert [(i.instance_id, i.name, i.site_id, str(i.endpoint)) for i in svc.instances] == [
        (1, "op1", 1, "10.101.1.2"),
        (2, "op2", 1, "10.101.2.2"),
    ]  # the pool joins later
    l4 = PROFILES["llama3-8b-l4"]
    assert svc.priors[1].tpot_ms == pytest.approx(l4.decode_base_ms + l4.decode_per_seq_ms, abs=1e-3)
    assert svc.priors[1].prefill_ms == pytest.approx(64 / l4.prefill_tps * 1000, abs=1e-3)
    (node,) = lab.intent.spec().ingress
    assert node.target == "agent" and node.name == lab.context.steer_node_name("in1")
    assert {k: v.delay_ms for k, v in node.sites.items()} == {1: 4.0, 2: 24.0}
    assert [p.ids for p in lab.intent.spec().services[0].pools] == [[1000, 1099]]

    lab.intent.policy, lab.intent.placement = "random", "two-choices"
    (svc,) = load_intent(lab.intent.write()).services
    assert svc.strategy == Strategy.RANDOM and svc.placement == "two-choices"
    before = lab.intent.path.read_text()
    with pytest.raises(ConfigError, match="not 'rings'"):
        lab.intent.set_placement("rings")
    assert lab.intent.path.read_text() == before and lab.intent.placement == "two-choices"


def _lab(name: str, target: str, tmp_path: Path, agents: bool = True, **spec: object):  # type: ignore[no-untyped-def]
    mininet_or_skip()
    if target == "bmv2":
        bmv2_tools_or_skip()
    from dinet.lab.net import Lab

    scenario = load(ROOT / "topo" / "scenarios" / f"{name}.yaml").model_copy(update=spec)
    if scenario.kind == "model-sync":
        from dinet.lab.bier_lab import BierLab

        return BierLab(scenario, target, tmp_path / "lab", state_dir=tmp_path)
    return Lab(scenario, target, tmp_path / "lab", state_dir=tmp_path, agents=agents)


def _left_behind(tag: str, pids: list[int]) -> list[str]:
    from dinet.paths import BPFFS_ROOT

    left = [
        n
        for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        if n.startswith(tag)
    ]
    left += [d for d in os.listdir("/sys/class/net") if d.startswith(tag)]
    left += [str(p) for p in BPFFS_ROOT.glob(f"{tag}*")] if BPFFS_ROOT.exists() else []
    for pid in pids:
        try:
            os.kill(pid, 0)
            left.append(f"process {pid}")
        except ProcessLookupError:
            pass
    return left


@needs_root
@needs_bcc
@pytest.mark.parametrize("target", ["xdp", "bmv2"])
@pytest.mark.parametrize("name", [p.stem for p in SCENARIOS])
def test_a_scenario_comes_up_serves_through_the_steering_node_and_leaves_nothing(
    name: str, target: str, tmp_path: Path
) -> None:
    with _lab(name, target, tmp_path) as lab:
        if lab.spec.kind == "model-sync":  # every cloud gets the check push whole (see dinet.lab.bier_lab)
            res = lab.check()
            assert res.ok and len(res.clouds) == lab.spec.model_sync.clouds, res
            tag, pids = lab.tag, []
        else:
            tag, pids = _steering_scenario(lab)
    assert _left_behind(tag, pids) == []
    assert not (tmp_path / f"{name}.json").exists()


def _steering_scenario(lab) -> tuple[str, list[int]]:  # type: ignore[no-untyped-def]
    """Reachability, the paths' RTT and loss, a short load on every service from every ingress node's clients,
    served through the steering node (its counters read back); returns the lab's tag and processes."""
    assert lab.reachability() == []
    for r in lab.links.measure_paths(20):
        assert r.rtt_ms is not None and r.rtt_ms >= r.rtt_configured_ms, r  # the delay is really there
        if r.loss_configured == 0:
            assert r.loss == 0, r
    by_ingress = {lab.spec.client_ingress(c): c.name for c in lab.spec.clients}
    for svc in lab.spec.client_services():
        members = {i.spec.name for i in lab.instances.values() if svc.name in i.spec.services}
        for ingress, client in by_ingress.items():
            recs = lab.load(client, svc.name, rate=8, duration=1, seed=3, **QUICK)
            assert recs and all(r["status"] == "ok" for r in recs), recs[:3]
            # a device that drafts answers itself, with every round verified by the service's instances
            served = {v for r in recs for v in (r["verifiers"].split(",") if r.get("verifiers") else [r["instance"]])}
            assert served <= members, served
            steered = lab.view.packets(svc.name, ingress)  # the steering node's counters, read back
            assert sum(steered.values()) > 0 and set(steered) <= members
    assert lab.state_path.exists()
    return str(lab.tag), [p for p in lab.state["pids"] if p != os.getpid()]


@needs_root
@needs_bcc
def test_a_path_slows_at_run_time_on_the_wire_and_new_flows_leave_it(tmp_path: Path) -> None:
    """lab.links.set_path_delay: the path's RTT rises on the wire (pinged), the controller gets the new delay, and
    delay-sensitive flows leave the site that was best (the cloud: its H100s keep the most of the SLO) for
    the edges; back again when the delay is restored."""
    with _lab("cloud-edge", "xdp", tmp_path) as lab:
        cloud, edges = {"c1", "c2"}, {"e1", "e2", "e3"}

        def on(names: set[str]) -> bool:
            w = lab.view.weights("chat")
            return all(w[n] > 0 for n in names) and all(w[n] == 0 for n in w if n not in names)

        lab.wait_until(lambda: on(cloud), "the cloud preferred")
        lab.links.set_path_delay("cloud", "in1", 300.0)
        slow = next(r for r in lab.links.measure_paths(3) if r.site == "cloud")
        assert slow.rtt_configured_ms == 600.0 and slow.rtt_ms is not None and slow.rtt_ms >= 600.0, slow
        lab.wait_until(lambda: on(edges), "the edges now")
        recs = lab.load("dev1", "chat", rate=8, duration=1, seed=5, **QUICK)
        assert recs and {r["instance"] for r in recs} <= edges and all(r["status"] == "ok" for r in recs)
        lab.links.set_path_delay("cloud", "in1", 25.0)
        lab.wait_until(lambda: on(cloud), "the cloud again")
        back = next(r for r in lab.links.measure_paths(3) if r.site == "cloud")
        assert back.rtt_ms is not None and back.rtt_ms < 300.0, back


@needs_root
@needs_bcc
def test_enterprise_a_confidential_flow_never_takes_a_path_below_its_level(tmp_path: Path) -> None:
    with _lab("enterprise", "xdp", tmp_path) as lab:
        for ingress, client in (("br1", "staff1"), ("br2", "staff2")):
            # the public internet path is the nearest and its instance idle: still never a confidential flow
            w = lab.view.weights("confidential", ingress)
            assert w["cnet"] == 0 and w["cline"] > 0
            recs = lab.load(client, "confidential", rate=10, duration=1.5, seed=5, **QUICK)
            assert recs and all(r["status"] == "ok" for r in recs)
            assert "cnet" not in {r["instance"] for r in recs}
            assert lab.view.packets("confidential", ingress)["cnet"] == 0
            # the general service may use it, and does
            assert lab.view.weights("general", ingress)["gnet"] > 0
        recs = lab.load("staff1", "general", rate=20, duration=1.5, seed=6, **QUICK)
        assert {r["instance"] for r in recs} == {"gline", "gnet"}


@needs_root
@needs_bcc
def test_tiers_degrade_to_a_small_model_when_the_large_saturates_and_come_back(tmp_path: Path) -> None:
    with _lab("tiers", "xdp", tmp_path) as lab:
        w = lab.view.weights("assist")
        assert w["big"] > 0 and w["s1"] == w["s2"] == 0  # the large tier first, though the farthest
        before = lab.load("dev1", "assist", rate=8, duration=1, seed=1, **QUICK)
        assert {r["instance"] for r in before} == {"big"}
        # the cloud's own users fill the large tier (sent inside its host: nothing of it is steered)
        # 80 requests, so its queue outlasts the load below: with 40 the queue emptied ~4 s after the switch and
        # the large tier rightly took new flows again while the burst still ran (a slow run's load met it there)
        with _burst(lab, "big", 8000, rate=160) as burst:
            lab.wait_until(lambda: lab.view.weights("assist")["big"] == 0, "large tier saturated")
            during = lab.load("dev1", "assist", rate=8, duration=1, seed=2, **QUICK)
            assert during and all(r["status"] == "ok" for r in during)  # the service stays up
            assert {r["instance"] for r in during} <= {"s1", "s2"}  # a small tier (both keep the SLO's margin)
            assert burst.wait(timeout=120) == 0  # the burst drains
        lab.wait_until(lambda: lab.view.weights("assist")["big"] > 0, "large tier back", timeout=30)
        after = lab.load("dev1", "assist", rate=8, duration=1, seed=3, **QUICK)
        assert {r["instance"] for r in after} == {"big"}


@needs_root
@needs_bcc
def test_one_scenario_gives_the_same_decisions_on_xdp_and_bmv2(tmp_path: Path) -> None:
    """The same file and the same reports, in the same order: the same weights on every ingress node after
    every report, whichever data plane steers."""
    from dinet.policy.scores import Level0

    idle = Level0()
    steps = [  # (instance, report): the internet path's instance busy, the line's overloaded, then recovery
        *[(n, idle) for n in ("cline", "cvpn", "cnet", "gline", "gnet")],
        ("gnet", Level0(queue_depth=12, gpu_util=0.5)),
        ("cline", Level0(gpu_util=0.95, queue_depth=30)),
        ("gline", Level0(gpu_util=0.3, active_sessions=8)),
        ("cline", idle),
        ("gnet", idle),
    ]
    seen = {}
    for target in ("xdp", "bmv2"):
        # nobody reports but the test, and nothing expires while it does (the same history on both planes)
        with _lab("enterprise", target, tmp_path / target, agents=False, collector_timeout=120.0) as lab:
            reporters = {n: lab.deciding.reporter(n) for n in {n for n, _ in steps}}
            history = []
            try:
                for name, m in steps:
                    svc = lab.service_keys[lab.instances[name].spec.service]
                    ack = reporters[name].send([reporters[name].report(svc, lab.instances[name].id, m)])
                    assert ack.accepted == 1, ack.last_error
                    history.append(lab.view.decisions())
            finally:
                for r in reporters.values():
                    r.close()
            seen[target] = history
    assert seen["xdp"] == seen["bmv2"]
    last = seen["xdp"][-1]
    assert last[("confidential", "br1")]["cnet"] == 0 and last[("general", "br1")]["gnet"] > 0


@needs_root
@needs_bcc
def test_elastic_pool_instances_join_and_leave_at_run_time_and_no_established_flow_moves(tmp_path: Path) -> None:
    import threading

    from dinet.workload.load import LoadSpec

    with _lab("elastic", "xdp", tmp_path) as lab:
        assert set(lab.view.weights("chat")) == {"op1", "op2"}
        controller_pid = lab.deciding.controller.pid
        streams: list = []  # long streams opened on the on-premises instances before anything joins
        long = {"output_min": 40, "output_max": 40, "prompt_min": 32, "prompt_max": 32}
        same = {"prompt_tokens": (32, 32), "max_tokens": (40, 40), "sensitive_share": 0.0}  # as lab.load sends
        n_long = len(LoadSpec("http://x", duration=0.5, schedule=[(0.0, 6.0)], seed=1, **same).arrivals())
        placed = sum(lab.view.new_flows("chat").values())
        th = threading.Thread(
            target=lambda: streams.extend(lab.load("user1", "chat", rate=6, duration=0.5, seed=1, **long))
        )
        th.start()
        try:  # every stream placed (on op1/op2) before anything joins
            assert n_long > 0
            lab.wait_until(lambda: sum(lab.view.new_flows("chat").values()) >= placed + n_long, "every stream placed")
            lab.engines.join("cp1")
            lab.wait_until(lambda: lab.view.weights("chat").get("cp1", 0) > 0, "cp1 installed")
            assert (
                lab.deciding.controller.pid == controller_pid and lab.deciding.controller.poll() is None
            )  # no restart
            during: list = []
            for seed in (2, 4, 6):  # each a fresh sample of new flows: cp1, at a weight > 0, takes some of them
                during += lab.load("user1", "chat", rate=10, duration=2, seed=seed, **QUICK)
                if "cp1" in {r["instance"] for r in during}:
                    break
            assert "cp1" in {r["instance"] for r in during}, lab.view.weights("chat")
        finally:
            th.join()
        assert streams and all(r["status"] == "ok" and r["completion_tokens"] == 40 for r in streams)
        assert {r["instance"] for r in streams} <= {"op1", "op2"}  # every one finished where it started
        lab.engines.leave("cp1")
        lab.wait_until(lambda: "cp1" not in lab.view.weights("chat"), "cp1 removed")
        after = lab.load("user1", "chat", rate=10, duration=1, seed=3, **QUICK)
        assert after and all(r["status"] == "ok" for r in after)
        assert "cp1" not in {r["instance"] for r in after}


def _rx_bytes(host, dev: str) -> int:  # type: ignore[no-untyped-def]
    return int(host.cmd(f"cat /sys/class/net/{dev}/statistics/rx_bytes").strip())


@needs_root
@needs_bcc
def test_prefill_decode_hands_each_session_to_a_decode_instance_the_network_chooses_and_keeps(tmp_path: Path) -> None:
    import threading

    from dinet.policy.scores import Level0
    from dinet.workload.engine import PROFILES
    from dinet.workload.load import LoadSpec

    per_token = PROFILES["llama3-8b-a100"].kv_bytes_per_token
    with _lab("prefill-decode", "xdp", tmp_path, agents=False) as lab:
        idle = Level0()
        with Reports(lab, {"pf1": idle, "dc1": idle, "dc2": idle}) as reports:
            lab.wait_until(
                lambda: lab.view.weights("decode")["dc1"] > 0 == lab.view.weights("decode")["dc2"], "dc1 chosen"
            )
            near = lab.hosts["dcnear"]
            rx0 = _rx_bytes(near, "dcnear-eth0")  # its link from the ingress node
            quick = {"output_min": 8, "output_max": 8, "prompt_min": 16, "prompt_max": 32}
            first = lab.load("user1", "prefill", rate=6, duration=1, seed=1, **quick)
            assert first and all(r["status"] == "ok" and r["completion_tokens"] == 8 for r in first)
            assert {r["decode_instance"] for r in first} == {"dc1"}  # the nearest decode site with room
            assert all(r["kv_bytes"] == r["prompt_tokens"] * per_token for r in first)  # sized from the prompt
            assert _rx_bytes(near, "dcnear-eth0") - rx0 >= sum(r["kv_bytes"] for r in first)  # it crossed the link
            # long sessions open on dc1; then dc1 fills up: new sessions go to dc2, the open ones stay on dc1
            opts = {"output_min": 60, "output_max": 60, "prompt_min": 16, "prompt_max": 16}
            same = {"prompt_tokens": (16, 16), "max_tokens": (60, 60), "sensitive_share": 1.0}  # as lab.load sends
            n_long = len(LoadSpec("http://x", duration=0.5, schedule=[(0.0, 6.0)], seed=4, **same).arrivals())
            assert n_long > 0
            placed = lab.view.new_flows("decode")["dc1"]
            long: list = []

            def sessions() -> None:
                try:
                    long.extend(lab.load("user1", "prefill", rate=6, duration=0.5, seed=4, **opts))
                except Exception as e:  # said in the assertion below
                    long.append({"status": repr(e)})

            th = threading.Thread(target=sessions)
            th.start()
            lab.wait_until(lambda: lab.view.new_flows("decode")["dc1"] >= placed + n_long, "every long session on dc1")
            reports.says["dc1"] = Level0(gpu_util=0.95, queue_depth=30)
            lab.wait_until(lambda: lab.view.weights("decode")["dc1"] == 0, "dc1 out of new sessions")
            later = lab.load(
                "user1", "prefill", rate=6, duration=1, seed=3, output_min=8, output_max=8, prompt_min=16, prompt_max=32
            )
            th.join()
        assert later and {r["decode_instance"] for r in later} == {"dc2"}
        assert long and all(r["status"] == "ok" and r["completion_tokens"] == 60 for r in long), long
        assert {r["decode_instance"] for r in long} == {"dc1"}


@contextlib.contextmanager
def _burst(lab, instance: str, port: int, rate: int = 80):  # type: ignore[no-untyped-def]
    """A site's own users fill an instance (sent inside its host: nothing of it is steered); stopped on exit
    if it has not drained by then."""
    p = lab.procs.popen(
        instance,
        [sys.executable, "-m", "dinet.cli", "load", "--url", f"{lab.pki.scheme}://127.0.0.1:{port}", "--quiet"]
        + [*lab.pki.args(), "--rate", str(rate), "--duration", "0.5", "--prompt-min", "300", "--prompt-max", "300"]
        + ["--output-min", "120", "--output-max", "120", "--seed", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=10)


@needs_root
@needs_bcc
def test_a_device_answers_locally_while_the_network_does_not_pay_off(tmp_path: Path) -> None:
    with _lab("cloud-edge-device", "xdp", tmp_path) as lab:
        # every instance heard from: the edge keeps the device's objective, the cloud (108 ms to a first token)
        # does not
        lab.wait_until(
            lambda: lab.view.weights("chat")["e1"] > 0 == lab.view.weights("chat")["c1"], "the edge preferred"
        )
        # the edge pays off: every request offloaded, the edge taking them (the policy may spill a new flow to
        # the cloud as the edge's own queue grows under this load: where a flow goes is the network's choice)
        before = lab.load("dev1", "chat", rate=8, duration=1, seed=1, **QUICK)
        where = [(r["offloaded"], r["instance"]) for r in before]
        assert before and all(o for o, _ in where) and 2 * sum(i == "e1" for _, i in where) > len(where), where
        with _burst(lab, "e1", 8000) as burst:
            lab.wait_until(lambda: lab.view.weights("chat")["e1"] == 0, "edge saturated")
            # the network would take new requests to the cloud (50 ms), beyond the device's 20 ms budget
            assert lab.view.weights("chat")["c1"] > 0
            during = lab.load("dev1", "chat", rate=8, duration=1, seed=2, **QUICK)
            assert during and all(r["status"] == "ok" for r in during)
            assert {(r["offloaded"], r["instance"]) for r in during} == {(False, "dev1-local")}
            assert {r["tier"] for r in during} == {"pruned"}
            assert burst.wait(timeout=120) == 0
        lab.wait_until(lambda: lab.view.weights("chat")["e1"] > 0, "edge back", timeout=30)
        after = lab.load("dev1", "chat", rate=8, duration=1, seed=3, **QUICK)
        where = [(r["offloaded"], r["instance"]) for r in after]
        assert after and all(o for o, _ in where) and 2 * sum(i == "e1" for _, i in where) > len(where), where


@needs_root
@needs_bcc
def test_a_speculative_session_keeps_its_verifier_and_new_sessions_move_when_its_edge_fills(tmp_path: Path) -> None:
    """Devices draft, the network picks the verifier: every round of a session reaches one verifier (its
    rounds ride one flow); when that edge fills up, new sessions verify elsewhere while an open one stays."""
    import threading

    with _lab("cooperative", "xdp", tmp_path) as lab:
        spec = {"prompt_min": 64, "prompt_max": 64, "output_min": 40, "output_max": 40}
        first = lab.load("dev1", "target", rate=3, duration=2, seed=1, **spec)
        assert first and all(r["status"] == "ok" and r["completion_tokens"] == 40 for r in first), first
        assert all(r["rounds"] > 1 and "," not in r["verifiers"] for r in first)  # one verifier a session
        assert sum(r["rounds"] for r in first) < sum(r["completion_tokens"] for r in first)
        chosen = max({r["verifiers"] for r in first}, key=[r["verifiers"] for r in first].count)
        assert chosen in ("e1", "e2"), chosen  # an edge: a round trip of 4-10 ms, not the cloud's 50
        port = lab.spec.service("target").port
        long: list[dict] = []  # type: ignore[type-arg]
        with _burst(lab, chosen, port) as burst:
            th = threading.Thread(  # sessions open on `chosen` as its edge fills: they stay
                target=lambda: long.extend(
                    lab.load("dev2", "target", rate=4, duration=0.5, seed=4, prompt_min=64, prompt_max=64,
                             output_min=200, output_max=200)
                )
            )  # fmt: skip
            th.start()
            lab.wait_until(lambda: lab.view.weights("target")[chosen] == 0, f"{chosen} saturated", timeout=60)
            later = lab.load("dev1", "target", rate=4, duration=2, seed=2, **spec)
            th.join()
            assert burst.wait(timeout=120) == 0
        assert later and all(r["status"] == "ok" and chosen not in r["verifiers"].split(",") for r in later), later
        assert long and all(r["status"] == "ok" and "," not in r["verifiers"] for r in long), long


@needs_root
@needs_bcc
def test_dinet_lab_up_then_down_from_another_shell_leaves_nothing(tmp_path: Path) -> None:
    mininet_or_skip()
    from dinet.lab.net import STATE_DIR, lab_tag

    if (STATE_DIR / "tiers.json").exists():
        pytest.skip("a lab named tiers is up on this machine")
    up = subprocess.Popen(
        [sys.executable, "-m", "dinet.cli", "lab", "up", str(ROOT / "topo/scenarios/tiers.yaml")]
        + ["--workdir", str(tmp_path / "w"), "--ping-count", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        assert up.stdout is not None
        for line in up.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C or"):
                break
        assert any(ln.startswith("in1     cloud") for ln in lines), lines  # the path table
        assert (STATE_DIR / "tiers.json").exists()
        down = subprocess.run(
            [sys.executable, "-m", "dinet.cli", "lab", "down", "tiers"], capture_output=True, text=True, check=False
        )
        assert down.returncode == 0 and "stopped" in down.stdout, down
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
            subprocess.run(
                [sys.executable, "-m", "dinet.cli", "lab", "down", "tiers"], capture_output=True, check=False
            )
        for f in (up.stdout, up.stderr):
            if f:
                f.close()
    assert not (STATE_DIR / "tiers.json").exists()
    assert _left_behind(lab_tag("tiers"), []) == []


@needs_root
@needs_bcc
def test_split_inference_sends_its_activations_encrypted_over_the_uplink_and_never_the_prompt(tmp_path: Path) -> None:
    """A split 8B: its first 2 layers on the device's premises, the rest on the tail the network picks behind
    the tail service's VIP. On the device's uplink: every request's activations (hidden x tokens x 2 bytes,
    counted by the link itself), only TLS toward the VIP (not even the WebSocket upgrade in clear), and no
    byte of the prompt."""
    from scapy.all import IP, TCP, rdpcap

    with _lab("cooperative", "xdp", tmp_path) as lab:
        svc = lab.spec.service("tail")
        head = lab.servers.serve_local("dev1", "head", [
            "--profile", "llama3-8b-l4", "--role", "split", "--tail-url", f"https://{svc.vip}:{svc.port}",
            "--split-layers", "2", *lab.pki.args()])  # fmt: skip
        pcap = tmp_path / "uplink.pcap"
        intf = lab.hosts["dev1"].defaultIntf().name
        capture = ["tcpdump", "-i", intf, "-n", "-w", str(pcap), "tcp", "and", "dst", "host", svc.vip]
        cap = lab.procs.popen("dev1", capture, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert cap.stderr is not None and "listening on" in cap.stderr.readline()
            before = lab.links.uplink_bytes("dev1")
            recs = lab.load("dev1", "tail", url=head, rate=2, duration=2, seed=1, prompt_min=100, prompt_max=100,
                            output_min=8, output_max=8)  # fmt: skip
            sent = lab.links.uplink_bytes("dev1") - before
        finally:
            cap.send_signal(signal.SIGINT)
            cap.wait(timeout=10)
    assert recs and all(r["status"] == "ok" and r["completion_tokens"] == 8 for r in recs), recs
    assert {r["split_layers"] for r in recs} == {2} and {r["tail"] for r in recs} <= {"t1", "t3"}
    act = 4096 * 2 * (100 + 7)  # the prompt's activations, then 7 tokens'
    assert {r["activation_bytes"] for r in recs} == {act}
    assert sent >= act * len(recs)  # they crossed the device's own link
    packets = [p for p in rdpcap(str(pcap)) if IP in p and TCP in p]
    payload = b"".join(bytes(p[TCP].payload) for p in packets)
    # one connection per request (the bytes are counted by the link: the capture may stop before its last)
    assert len({p[TCP].sport for p in packets}) == len(recs) and len(payload) > act
    assert b"w w w" not in payload and b"websocket" not in payload.lower() and b"/dinet/v1/split" not in payload
