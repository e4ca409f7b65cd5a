"""The workload: `dinet serve` (a process of its own) answers the OpenAI API with its engine's timing and
vLLM's metrics; `dinet load` measures it; the metrics agent maps recorded vLLM /metrics texts (older and
newer names) to Level 0 reports, and a server that stops answering takes its instance out end to end."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from conftest import dinet_process, free_port
from dinet.model import Instance, ServiceKey
from dinet.policy.decide import TrafficClass
from dinet.workload.engine import PROFILES
from dinet.workload.load import LoadSpec, Slo, azure_trace, poisson, run_load, summary
from dinet.workload.metrics_agent import Mapper, MetricsAgent, parse

TINY = PROFILES["tiny-test"]


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    with dinet_process(
        "serve", "--listen", f"127.0.0.1:{port}", "--profile", "tiny-test", "--name", "inst-a", ready="ready:"
    ):
        yield f"http://127.0.0.1:{port}"


class Sink:
    """A collector's stand-in for MetricsAgent: keeps what each send carried, and takes it all."""

    def __init__(self) -> None:
        self.sent: list[list[tuple[str, int, object]]] = []

    def report(self, service: str, instance: int, m: object, announce: object = None) -> tuple[str, int, object]:
        return (service, instance, m)

    def send(self, reports: list[tuple[str, int, object]]) -> object:
        self.sent.append(reports)
        return type("Ack", (), {"accepted": len(reports)})()


def metrics(url: str, ca: str | None = None) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    ctx = ssl.create_default_context(cafile=ca) if ca and url.startswith("https:") else None
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5, context=ctx).read().decode()
    out = {
        s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels.get("le")
    }
    for fam in text_string_to_metric_families(text):  # and each labelled series by its labels but model_name
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("model_name", "le"))
            if labels and not s.labels.get("le"):
                out[f"{s.name}{{{labels}}}"] = s.value
    return out


def load(url: str, **kw) -> list:  # type: ignore[no-untyped-def]
    return asyncio.run(run_load(LoadSpec(url, **kw), progress=False))


def test_openai_api_answers_and_names_the_instance(server: str) -> None:
    req = urllib.request.Request(
        f"{server}/v1/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        body = json.loads(r.read())
        assert r.headers["x-dinet-instance"] == "inst-a" and r.headers["x-dinet-tier"] == "small"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert body["choices"][0]["message"]["content"].split() == [f"tok{i}" for i in range(5)]
    models = json.loads(urllib.request.urlopen(f"{server}/v1/models", timeout=5).read())
    assert models["data"][0]["id"] == TINY.model
    bad = urllib.request.Request(f"{server}/v1/completions", data=b'{"prompt": "x", "max_tokens": 0}')
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=5)
    assert e.value.code == 400 and "max_tokens" in json.loads(e.value.read())["message"]


def test_one_engine_answers_on_each_service_port_and_its_agent_reports_for_each() -> None:
    """`dinet serve --listen A --listen B` (the mixed classes: a delay-tolerant service on the engine of a
    delay-sensitive one): a request on either port is served by the one engine (its metrics count both,
    whichever port is scraped), and `dinet metrics-agent --service X --service Y` reports the one scrape for
    both services. A DSCP count that fits neither is refused in one line."""
    a, b = free_port(), free_port()
    with dinet_process(
        "serve", "--listen", f"127.0.0.1:{a}", "--listen", f"127.0.0.1:{b}", "--dscp", "delay-sensitive",
        "--dscp", "delay-tolerant", "--profile", "tiny-test", "--name", "inst-ab", ready="ready:",
    ):  # fmt: skip
        for port in (a, b):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions",
                data=json.dumps({"prompt": "one two", "max_tokens": 3}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                assert (
                    r.headers["x-dinet-instance"] == "inst-ab"
                    and json.loads(r.read())["usage"]["completion_tokens"] == 3
                )
        for port in (a, b):
            assert metrics(f"http://127.0.0.1:{port}")["vllm:generation_tokens_total"] == 6

        sink = Sink()
        agent = MetricsAgent(f"http://127.0.0.1:{a}/metrics", "10.99.0.1:8000/tcp", 7, sink, host_cpu=False,
                             also=("10.99.0.1:8100/tcp",))  # fmt: skip
        m = agent.once()
        assert m.healthy and agent.reports == 2
        assert sink.sent == [[("10.99.0.1:8000/tcp", 7, m), ("10.99.0.1:8100/tcp", 7, m)]]  # one send, one scrape
    res = subprocess.run(
        [sys.executable, "-m", "dinet.cli", "serve", "--listen", "127.0.0.1:1", "--listen", "127.0.0.1:2",
         "--listen", "127.0.0.1:3", "--dscp", "10", "--dscp", "12"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1 and "2 DSCPs" in res.stderr, res.stderr


def test_at_low_load_ttft_and_tpot_follow_the_model(server: str) -> None:
    """One request at a time: TTFT = prefill of the prompt; TPOT = one decode step at batch 1 (the model's
    4 ms + 1 ms); within 5 ms plus 30% (an HTTP stream on a shared 2-core machine)."""
    recs = load(
        server, duration=2.0, schedule=[(0.0, 3.0)], prompt_tokens=(200, 200), max_tokens=(20, 20), sensitive_share=1.0
    )
    ok = [r for r in recs if r.status == "ok"]
    assert len(ok) >= 3 and all(r.completion_tokens == 20 and r.instance == "inst-a" for r in ok)
    ttft = sorted(r.ttft_ms for r in ok)[len(ok) // 2]
    tpot = sorted(r.tpot_ms for r in ok)[len(ok) // 2]
    want_ttft = 200 / TINY.prefill_tps * 1000  # 10 ms
    want_tpot = TINY.decode_base_ms + TINY.decode_per_seq_ms
    assert abs(ttft - want_ttft) <= 5 + 0.3 * want_ttft, (ttft, want_ttft)
    assert abs(tpot - want_tpot) <= 5 + 0.3 * want_tpot, (tpot, want_tpot)


def test_ttft_grows_with_load_and_the_queue_fills_when_the_kv_cache_is_full(server: str) -> None:
    low = load(server, duration=2.0, schedule=[(0.0, 2.0)], prompt_tokens=(100, 100), max_tokens=(30, 30), seed=3)
    # 600 KV tokens each on a 2,000-token cache: at most three run, the rest wait
    high = load(server, duration=1.0, schedule=[(0.0, 40.0)], prompt_tokens=(300, 300), max_tokens=(300, 300), seed=4)
    p50 = lambda rs: sorted(r.ttft_ms for r in rs if r.ttft_ms is not None)[len(rs) // 2]  # noqa: E731
    assert p50(high) > 3 * p50(low), (p50(high), p50(low))
    m = metrics(server)
    assert m["vllm:request_queue_time_seconds_sum"] > 0
    done = [r for r in low + high if r.status == "ok"]
    assert m["vllm:prompt_tokens_total"] == sum(r.prompt_tokens for r in done)
    assert m["vllm:generation_tokens_total"] == sum(r.completion_tokens for r in done)
    assert m["vllm:time_to_first_token_seconds_count"] == len(done)
    assert m["vllm:num_requests_running"] == 0 and m["vllm:kv_cache_usage_perc"] == 0


def test_the_queue_and_kv_gauges_follow_a_burst(server: str) -> None:
    """Ten requests of 300 prompt and 300 output tokens into a KV cache of 2,000 tokens (125 blocks of 16):
    six prompts fit (19 blocks each), the rest wait; as the six generate, the cache fills and the newest
    running ones are preempted (recomputed later). Every request finishes with all its tokens."""

    async def burst() -> tuple[dict[str, float], list]:
        task = asyncio.create_task(
            run_load(
                LoadSpec(
                    server,
                    duration=0.2,
                    schedule=[(0.0, 200.0)],
                    max_requests=10,
                    prompt_tokens=(300, 300),
                    max_tokens=(300, 300),
                    seed=5,
                ),
                progress=False,
            )
        )
        # wait for the condition (the burst has filled the engine), not for a time
        snap: dict[str, float] = {}
        for _ in range(500):
            snap = await asyncio.to_thread(metrics, server)
            if snap["vllm:num_requests_waiting"] >= 1 and snap["vllm:kv_cache_usage_perc"] >= 0.9:
                break
            await asyncio.sleep(0.02)
        return snap, await task

    m, recs = asyncio.run(burst())
    assert m["vllm:num_requests_waiting"] >= 1 and m["vllm:kv_cache_usage_perc"] >= 0.9
    assert m["vllm:num_requests_running"] <= 6  # what the blocks hold
    assert len(recs) == 10 and all(r.status == "ok" and r.completion_tokens == 300 for r in recs)
    after = metrics(server)
    assert after["vllm:num_preemptions_total"] >= 1  # 6 x 600 tokens do not fit 2,000
    assert after["vllm:kv_cache_usage_perc"] == 0 and after["vllm:num_requests_running"] == 0


def test_load_summary_and_schedules() -> None:
    import random

    arrivals = list(poisson([(0.0, 50.0), (1.0, 0.0), (2.0, 200.0)], 3.0, random.Random(1)))
    assert not any(1.0 <= t < 2.0 for t in arrivals)  # rate 0 from 1 s to 2 s
    assert 20 < sum(t < 1.0 for t in arrivals) < 90 and 120 < sum(t >= 2.0 for t in arrivals) < 290
    from dinet.workload.load import Record

    recs = [
        Record(0, "delay-sensitive", "ok", 10, 5, ttft_ms=100, tpot_ms=20, e2e_ms=180, instance="a"),
        Record(0, "delay-sensitive", "ok", 10, 5, ttft_ms=900, tpot_ms=20, e2e_ms=980, instance="b"),
        Record(0, "delay-tolerant", "http 503"),
    ]
    s = summary(recs, Slo(ttft_ms=500, tpot_ms=50), duration=2.0)
    assert s["delay-sensitive"]["slo_attainment"] == 0.5 and s["delay-sensitive"]["goodput_rps"] == 0.5
    assert s["delay-tolerant"]["errors"] == 1 and s["delay-tolerant"]["slo_attainment"] == 0.0


def test_an_azure_trace_is_replayed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "trace.csv"
    f.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"
    )
    assert azure_trace(f) == [(0.0, 374, 44), (pytest.approx(4.3145790), 396, 109)]


# ---- the metrics agent ------------------------------------------------------------------------------------
VLLM_OLD = """# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Meta-Llama-3-8B-Instruct"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Meta-Llama-3-8B-Instruct"} 3.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="meta-llama/Meta-Llama-3-8B-Instruct"} 0.62
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="meta-llama/Meta-Llama-3-8B-Instruct"} %(gen)s
# HELP vllm:time_per_output_token_seconds Histogram of time per output token in seconds.
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{le="0.05",model_name="meta-llama/Meta-Llama-3-8B-Instruct"} %(cnt)s
vllm:time_per_output_token_seconds_bucket{le="+Inf",model_name="meta-llama/Meta-Llama-3-8B-Instruct"} %(cnt)s
vllm:time_per_output_token_seconds_count{model_name="meta-llama/Meta-Llama-3-8B-Instruct"} %(cnt)s
vllm:time_per_output_token_seconds_sum{model_name="meta-llama/Meta-Llama-3-8B-Instruct"} %(sum)s
"""
VLLM_NEW = VLLM_OLD.replace("gpu_cache_usage_perc", "kv_cache_usage_perc").replace(
    "time_per_output_token_seconds", "inter_token_latency_seconds"
)


@pytest.mark.parametrize("text", [VLLM_OLD, VLLM_NEW], ids=["gpu_cache_usage_perc", "kv_cache_usage_perc"])
def test_recorded_vllm_metrics_map_to_level0(text: str) -> None:
    m = Mapper()
    first = m.level0(parse(text % {"gen": 1000, "cnt": 1000, "sum": 20.0}), at=10.0, cpu=0.25)
    assert (first.queue_depth, first.active_sessions, first.gpu_util) == (3, 7, 0.62)
    assert first.tokens_per_s == 0 and first.cpu_load == 0.25 and first.healthy  # no rate from one scrape
    second = m.level0(parse(text % {"gen": 1500, "cnt": 1500, "sum": 32.5}), at=12.0, gpu=0.9)
    assert second.tokens_per_s == 250.0  # 500 tokens in 2 s
    assert second.token_latency_ms == pytest.approx(25.0)  # 12.5 s over 500 tokens
    assert second.gpu_util == 0.9  # nvidia-smi's figure, the larger
    second.check()


def test_vllms_prefill_time_maps_to_level0_and_dinet_serve_exports_it() -> None:
    """vllm:request_prefill_time_seconds (scheduled to first token) becomes the interval's mean prefill in ms;
    dinet serve exports it as vLLM does, one observation per finished request, no longer than its TTFT."""
    text = (
        'vllm:request_prefill_time_seconds_sum{model_name="m"} %(s)s\n'
        'vllm:request_prefill_time_seconds_count{model_name="m"} %(c)s\n'
    )
    m = Mapper()
    assert m.level0(parse(text % {"s": 1.0, "c": 10}), at=10.0).prefill_ms == 0  # no rate from one scrape
    second = m.level0(parse(text % {"s": 1.6, "c": 14}), at=12.0)
    assert second.prefill_ms == pytest.approx(150.0)  # 0.6 s over 4 requests
    second.check()

    port = free_port()
    with dinet_process("serve", "--listen", f"127.0.0.1:{port}", "--profile", "tiny-test", ready="ready:"):
        url = f"http://127.0.0.1:{port}"
        for words in (30, 200):
            body = {"prompt": " ".join(["w"] * words), "max_tokens": 3}
            req = urllib.request.Request(
                f"{url}/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                assert json.loads(r.read())["usage"]["completion_tokens"] == 3
        m = metrics(url)
    assert m["vllm:request_prefill_time_seconds_count"] == 2
    assert 0 < m["vllm:request_prefill_time_seconds_sum"] <= m["vllm:time_to_first_token_seconds_sum"]


def test_a_partners_cooperative_counters_map_to_level0() -> None:
    """A verifier's and a tail's own counters (dinet serve's) become rates over the interval: verify rounds
    per second, the share of drafted tokens accepted, activation bytes per second."""
    text = (
        "dinet:spec_verify_rounds_total %(r)s\ndinet:spec_draft_tokens_total %(d)s\n"
        "dinet:spec_accepted_tokens_total %(a)s\ndinet:split_activation_bytes_total %(b)s\n"
    )
    m = Mapper()
    first = m.level0(parse(text % {"r": 10, "d": 40, "a": 20, "b": 1000}), at=10.0)
    assert (first.verify_rounds_per_s, first.spec_acceptance, first.activation_bytes_per_s) == (0, 0, 0)
    second = m.level0(parse(text % {"r": 30, "d": 120, "a": 76, "b": 5000}), at=12.0)
    assert second.verify_rounds_per_s == 10.0 and second.spec_acceptance == pytest.approx(0.7)
    assert second.activation_bytes_per_s == 2000.0
    second.check()


def test_garbage_metrics_are_one_clear_error() -> None:
    from dinet.errors import ConfigError

    with pytest.raises(ConfigError, match="not Prometheus text"):
        parse("vllm:num_requests_running{model_name= 7\n")


def test_a_dead_endpoint_takes_its_instance_out_through_collector_and_controller(server: str) -> None:
    from test_controller_record import CountingTarget

    from dinet.services.collect import Agent, Collector, CollectorServer
    from dinet.services.controller import Controller, ServiceIntent, SitePath

    svc = ServiceKey.parse("10.96.0.1:8000/tcp")
    target = CountingTarget()
    ctl = Controller(
        target,
        [
            ServiceIntent(
                svc,
                TrafficClass.DELAY_TOLERANT,
                (Instance(1, "192.0.2.1", 1, site_id=1), Instance(2, "192.0.2.2", 1, site_id=2)),
            )
        ],
        {1: SitePath(2), 2: SitePath(2)},
    )
    ctl.start()
    col = Collector.with_tokens({"t1": ("a", {(svc, 1)}), "t2": ("b", {(svc, 2)})})
    ctl.attach(col)
    with CollectorServer(col, insecure=True) as srv:
        a1, a2 = Agent(srv.address, "t1"), Agent(srv.address, "t2")
        live = MetricsAgent(f"{server}/metrics", str(svc), 1, a1)
        dead = MetricsAgent(f"http://127.0.0.1:{free_port()}/metrics", str(svc), 2, a2)
        assert live.once().healthy and not dead.once().healthy
        assert live.reports == 1 and dead.reports == 1 and dead.failures == 1
        assert target.installed(svc)[2][1] == "down" and target.installed(svc)[1][1] == "up"
        a1.close()
        a2.close()


def test_prefill_hands_the_kv_cache_to_a_decode_instance() -> None:
    """A prefill instance prefills, answers the first token, hands the KV cache (prompt tokens x the
    profile's bytes per token, really sent) to the decode instance, and relays its tokens."""
    dp, pp = free_port(), free_port()
    with (
        dinet_process(
            "serve",
            "--listen",
            f"127.0.0.1:{dp}",
            "--profile",
            "tiny-test",
            "--name",
            "dec-1",
            "--role",
            "decode",
            ready="ready:",
        ),
        dinet_process(
            "serve",
            "--listen",
            f"127.0.0.1:{pp}",
            "--profile",
            "tiny-test",
            "--name",
            "pre-1",
            "--role",
            "prefill",
            "--decode-url",
            f"http://127.0.0.1:{dp}",
            ready="ready:",
        ),
    ):
        req = urllib.request.Request(
            f"http://127.0.0.1:{pp}/v1/completions",
            data=json.dumps({"prompt": " ".join(["w"] * 300), "max_tokens": 12}).encode(),
            headers={"Content-Type": "application/json"},
        )
        body = json.loads(urllib.request.urlopen(req, timeout=10).read())
        assert body["usage"]["completion_tokens"] == 12 and body["usage"]["prompt_tokens"] == 300
        assert body["dinet"]["decode_instance"] == "dec-1"
        assert body["dinet"]["kv_bytes"] == 300 * TINY.kv_bytes_per_token
        recs = load(
            f"http://127.0.0.1:{pp}", duration=1.0, schedule=[(0.0, 5.0)], prompt_tokens=(50, 50), max_tokens=(8, 8)
        )
        assert recs and all(r.status == "ok" and r.completion_tokens == 8 for r in recs)
        dec, pre = metrics(f"http://127.0.0.1:{dp}"), metrics(f"http://127.0.0.1:{pp}")
        assert dec["vllm:generation_tokens_total"] == 11 + 7 * len(recs)  # the decode stage made the rest
        assert pre["vllm:prompt_tokens_total"] == 300 + 50 * len(recs) and dec["vllm:prompt_tokens_total"] == 0
        bad = urllib.request.Request(
            f"http://127.0.0.1:{dp}/dinet/v1/kv",
            data=b"x" * 10,
            headers={"x-dinet-prompt-tokens": "5", "x-dinet-max-tokens": "2"},
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=5)
        assert e.value.code == 400 and "KV cache of 5 tokens" in json.loads(e.value.read())["message"]


def test_the_engines_what_if_ttft_matches_what_a_request_then_sees() -> None:
    """The oracle's view: the TTFT the engine predicts for a request arriving now, from its exact state, is
    what the request then measures when nothing else arrives (the engine's own schedule, run forward)."""
    import time

    from dinet.workload.engine import PROFILES, Engine

    async def scenario() -> tuple[float, float, float]:
        e = Engine(PROFILES["tiny-test"])  # 8 at once, 2,000 KV tokens
        busy = [e.generate(150, 60) for _ in range(12)]  # more than the KV cache holds: some wait
        drains = [asyncio.create_task(_drain(g)) for g in busy]
        await asyncio.sleep(0.05)
        idle_guess = Engine(PROFILES["tiny-test"]).ttft_if_added(150, 60)
        guess = e.ttft_if_added(150, 60)
        t0 = time.monotonic()
        first = await anext(aiter(e.generate(150, 60)))  # the time of its first token
        seen = first - t0
        await asyncio.gather(*drains)
        await e.stop()
        return idle_guess, guess, seen

    async def _drain(g) -> None:
        async for _ in g:
            pass

    idle_guess, guess, seen = asyncio.run(scenario())
    # idle: one step of the prompt's prefill: max(4 ms, 149 tokens at 20,000/s) + 1 ms for the sequence
    assert idle_guess == pytest.approx(149 / 20_000 + 0.001)
    assert guess > 10 * idle_guess  # behind 12 requests that fill the cache
    assert seen == pytest.approx(guess, rel=0.25)


def test_the_client_side_pickers_send_each_request_where_it_would_wait_least() -> None:
    """The baselines of the steering experiment: least-queue (every /metrics scraped each 50 ms, fewest
    waiting first) and the oracle (every engine asked what TTFT the request would see) send requests past an
    instance whose queue is full to the idle one; the oracle's debug endpoint refuses nonsense."""
    import threading
    import time

    ports = free_port(), free_port()
    serve = [
        ("serve", "--listen", f"127.0.0.1:{p}", "--profile", "tiny-test", "--name", n)
        for p, n in zip(ports, "ab", strict=True)
    ]
    a, b = (f"http://127.0.0.1:{p}" for p in ports)
    with dinet_process(*serve[0], ready="ready:"), dinet_process(*serve[1], ready="ready:"):
        # 20 requests of 400 KV tokens each into a's 2,000: five run, the rest wait for seconds
        fill = threading.Thread(
            target=load,
            args=(a,),
            kwargs={"duration": 0.5, "schedule": [(0.0, 40.0)], "prompt_tokens": (200, 200), "max_tokens": (200, 200)},
        )
        fill.start()
        try:
            deadline = time.monotonic() + 10
            while metrics(a).get("vllm:num_requests_waiting", 0) < 5:
                assert time.monotonic() < deadline, "the fill never queued"
                time.sleep(0.02)
            for pick in ("least-queue", "oracle"):
                recs = load(
                    a,
                    duration=1.0,
                    schedule=[(0.0, 8.0)],
                    prompt_tokens=(50, 50),
                    max_tokens=(5, 5),
                    pick=pick,
                    endpoints=(a, b),
                )
                ok = [r for r in recs if r.status == "ok"]
                assert len(ok) >= 3 and {r.instance for r in ok} == {"b"}, (pick, [r.instance for r in recs])
            assert metrics(a)["vllm:num_requests_waiting"] > 0  # a was full all along
        finally:
            fill.join(timeout=60)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{a}/dinet/v1/ttft?prompt=x", timeout=5)
        assert e.value.code == 400
        idle = json.loads(urllib.request.urlopen(f"{b}/dinet/v1/ttft?prompt=200&max_tokens=10", timeout=5).read())
        assert idle["instance"] == "b" and idle["ttft_ms"] == pytest.approx(199 / TINY.prefill_tps * 1000 + 1)
        # the oracle's form: several sizes at once, each its own answer
        two = json.loads(urllib.request.urlopen(f"{b}/dinet/v1/ttft?prompt=200,600&max_tokens=10", timeout=5).read())
        (p0, t0), (p1, t1) = two["by_prompt"]
        assert (p0, p1) == (200, 600) and t0 == pytest.approx(idle["ttft_ms"]) and t1 > t0
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{a}/dinet/v1/ttft?prompt=1,2,3,4,5", timeout=5)
        assert e.value.code == 400


def test_the_oracle_places_a_request_by_its_own_size_between_the_reference_answers() -> None:
    """Hand-worked: an engine that answers 40 ms for 128 tokens and 420 ms for 2,048 (a slow prefill close
    by) against one that answers 30 and 110 ms (a fast one), plus 50 ms more round trip to the second: a
    128-token request goes to the first (40 < 80), a 1,000-token one to the second (212.6 > 116.3). Below the
    smaller size the smaller's answer holds; an engine that could not run the larger size answers the smaller's."""
    from dinet.workload.pickers import LIMIT_MS, ttft_for

    slow, fast = [(128, 40.0), (2048, 420.0)], [(128, 30.0), (2048, 110.0)]
    assert ttft_for(slow, 128) == 40.0 and ttft_for(fast, 128) + 50 == 80.0
    assert ttft_for(slow, 1000) == pytest.approx(40 + 380 * 872 / 1920)  # 212.6
    assert ttft_for(fast, 1000) + 50 == pytest.approx(30 + 80 * 872 / 1920 + 50)  # 116.3
    assert ttft_for(slow, 16) == 40.0
    assert ttft_for([(128, 40.0), (2048, LIMIT_MS)], 1000) == 40.0


def test_chunked_prefill_shares_each_steps_budget_with_the_decodes() -> None:
    """vLLM's scheduler, hand-worked: a budget of 100 tokens a step. A decoding sequence takes 1 token of it
    each step and makes a token every step; a 250-token prompt that arrives is prefilled in chunks of 99, 99
    and 52 tokens over three steps (the decode never waits for the whole prefill) and makes its first token at
    the end of the third. Each step takes max(4 ms, prefill / 20,000 tokens/s) + 1 ms per sequence."""
    from dataclasses import replace as with_

    from dinet.workload.engine import Scheduler, Sequence

    sched = Scheduler(with_(TINY, max_batched_tokens=100))
    talker = Sequence(10, 50, 0.0, queue=None)
    sched.add(talker)
    first = sched.step()
    assert first is not None and first.tokens == [talker] and first.seconds == pytest.approx(0.004 + 0.001)
    newcomer = Sequence(250, 5, 0.0, queue=None)
    sched.add(newcomer)
    seconds, got = [], []
    for _ in range(3):
        step = sched.step()
        assert step is not None
        seconds.append(step.seconds)
        got.append(list(step.tokens))
    assert [t == [talker] for t in got[:2]] == [True, True]  # the decode goes on every step
    assert got[2] == [talker, newcomer]  # the prompt's last chunk makes its first token
    # 98 tokens of prefill (the chunk of 99 less 1 counted with its sequence), 98, then 51 (below the 4 ms floor)
    assert seconds == pytest.approx([98 / 20_000 + 0.002, 98 / 20_000 + 0.002, 0.004 + 0.002])


def test_a_full_kv_cache_preempts_the_newest_sequence_and_recomputes_it() -> None:
    """Blocks of 16 tokens, 8 blocks: two sequences of 40-token prompts (3 blocks each) run; as they grow to
    need a 4th block each, 2 blocks are left and then none: the newer one is preempted, its blocks freed, and
    it waits at the head of the queue; it comes back, recomputing its prompt and the tokens it had made."""
    from dataclasses import replace as with_

    from dinet.workload.engine import Scheduler, Sequence

    sched = Scheduler(with_(TINY, kv_tokens=128, max_batched_tokens=512))
    older, newer = Sequence(40, 40, 0.0, queue=None), Sequence(40, 40, 0.0, queue=None)
    sched.add(older)
    sched.add(newer)
    preempted_at = None
    for k in range(200):
        step = sched.step()
        assert step is not None
        if newer.preemptions and preempted_at is None:
            preempted_at = k
            assert sched.waiting[0] is newer and newer.blocks == 0 and newer.computed == 0
            made = newer.generated
            assert made > 0  # what it made stays made: its recompute covers prompt + those tokens
        if older in step.finished:
            break
    assert preempted_at is not None and older.preemptions == 0 and sched.stats.preemptions >= 1
    while newer.generated < newer.max_tokens:
        step = sched.step()
        assert step is not None
    assert sched.idle and sched.free == 8


def test_the_metrics_agent_skips_bad_samples_and_bounds_every_scrape() -> None:
    """A sample no server could have measured is skipped and counted (the rest of the page still counts); a
    body larger than the cap and a server that drips its answer are failed scrapes (the instance is reported
    unhealthy) within the scrape's one deadline, and the agent goes on."""
    import http.server
    import threading
    import time

    from dinet.promtext import MAX_BYTES

    bad: list[str] = []
    page = (
        'vllm:num_requests_waiting{model_name="m"} NaN\n'
        'vllm:num_requests_running{model_name="m"} 3\n'
        'vllm:kv_cache_usage_perc{model_name="m"} -0.5\n'
        'vllm:generation_tokens_total{model_name="m"} 1e30\n'
        'vllm:num_requests_waiting{model_name="other"} +Inf\n'
    )
    assert parse(page, bad) == {"vllm:num_requests_running": 3.0}
    assert [b.split("=")[0] for b in bad] == [
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:generation_tokens_total",
        "vllm:num_requests_waiting",
    ]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            try:
                if self.path == "/huge":
                    chunk = b"# " + b"x" * 65534 + b"\n"
                    for _ in range(MAX_BYTES // len(chunk) + 2):
                        self.wfile.write(chunk)
                elif self.path == "/drip":
                    for _ in range(20):
                        self.wfile.write(b"#")
                        self.wfile.flush()
                        time.sleep(0.25)  # the drip's pace (what the agent's deadline is tested against)
                else:
                    self.wfile.write(page.encode())
            except (BrokenPipeError, ConnectionResetError):
                pass  # the agent hung up on a page too big or too slow: what the test wants of it

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"

    try:
        good = MetricsAgent(f"{base}/metrics", "10.96.0.1:8000/tcp", 1, Sink(), host_cpu=False)
        m = good.once()
        assert m.healthy and m.active_sessions == 3 and good.bad_samples == 4 and good.failures == 0
        for path in ("/huge", "/drip"):
            agent = MetricsAgent(f"{base}{path}", "10.96.0.1:8000/tcp", 1, Sink(), host_cpu=False)
            # the drip's answer is valid text (comments) that completes after 5 s, each byte well within a
            # read's timeout: only the scrape's one deadline (2 s) fails it
            assert not agent.once().healthy and agent.failures == 1 and agent.reports == 1
    finally:
        srv.shutdown()


def _read_until(s, marker: bytes, limit: int = 1 << 20) -> bytes:  # type: ignore[no-untyped-def]
    """What a socket gives until `marker` is in it (or it closes, or `limit` bytes came)."""
    got = b""
    while marker not in got and len(got) < limit:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _wait_metric(url: str, name: str, want: float, timeout: float = 10.0) -> dict[str, float]:
    """Polls /metrics until `name` reads `want` (the condition, not a time); the last reading."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        m = metrics(url)
        if m.get(name) == want or time.monotonic() > deadline:
            return m
        time.sleep(0.02)


def test_a_client_that_hangs_up_frees_its_place_and_the_server_refuses_what_cannot_run(server: str) -> None:
    """A stream whose client goes after two tokens, and a plain request whose client goes before its answer,
    leave the batch and free their KV cache at once (not after 1,500 more tokens); max_tokens beyond the
    model's context and JSON nested too deeply are a 400 with a reason, never a traceback."""
    import socket
    import urllib.parse

    u = urllib.parse.urlsplit(server)
    for stream in (True, False):
        body = json.dumps({"prompt": "a b c", "max_tokens": 1500, "stream": stream}).encode()
        s = socket.create_connection((u.hostname, u.port))
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        running = _wait_metric(server, "vllm:num_requests_running", 1.0)
        assert running["vllm:num_requests_running"] == 1 and running["vllm:kv_cache_usage_perc"] > 0
        if stream:
            assert b"tok0" in _read_until(s, b"tok0")  # it streams
        s.close()
        gone = _wait_metric(server, "vllm:num_requests_running", 0.0)
        assert gone["vllm:num_requests_running"] == 0 and gone["vllm:kv_cache_usage_perc"] == 0, stream
    for payload, reason in (
        (json.dumps({"prompt": "a", "max_tokens": 9000}).encode(), "maximum context length is 8192 tokens"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ):
        req = urllib.request.Request(f"{server}/v1/completions", data=payload)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 400 and reason in json.loads(e.value.read())["message"]


def test_a_stopped_server_does_not_wait_for_its_long_requests() -> None:
    """SIGTERM with a request of 1,500 tokens under way (7.5 s of decoding here): the server is gone within its
    2 s grace, with status 0."""
    import socket
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dinet.cli", "serve", "--listen", f"127.0.0.1:{port}", "--profile", "tiny-test"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("ready:")
        body = json.dumps({"prompt": "a", "max_tokens": 1500, "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        assert b"tok0" in _read_until(s, b"tok0")
        proc.terminate()
        assert proc.wait(timeout=5) == 0  # not after the request's 7.5 s
        s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


class Relay:
    """A TCP relay on loopback that keeps every byte it carries (what a tap on the wire would see)."""

    def __init__(self, target: int):
        import socket
        import threading

        self.target, self.seen, self.lock = target, bytearray(), threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst) -> None:  # type: ignore[no-untyped-def]
        try:
            while data := src.recv(65536):
                with self.lock:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(2)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("tls", [True, False], ids=["https", "clear"])
def test_requests_answers_and_kv_hand_overs_cross_the_wire_encrypted(tmp_path, tls: bool) -> None:  # type: ignore[no-untyped-def]
    """`dinet serve` over HTTPS (a certificate of the project CA) and `dinet load --ca`: through a tap on
    the wire between client and prefill instance, and between prefill and decode instance (the KV cache
    hand-over), no prompt, no answer token, no header and no KV byte in clear; in clear (the control) they
    are all there. A client without the CA is refused the connection."""
    from dinet.creds import init_ca, issue

    d = tmp_path / "tls"
    init_ca(d)
    for name in ("pre-1", "dec-1"):
        issue(d, name, addresses=("127.0.0.1",))
    dp, pp = free_port(), free_port()
    scheme = "https" if tls else "http"
    dec_tap = Relay(dp)
    args = lambda n: ["--tls-cert", str(d / f"{n}.crt"), "--tls-key", str(d / f"{n}.key")] if tls else []  # noqa: E731
    with (
        dinet_process(
            "serve", "--listen", f"127.0.0.1:{dp}", "--profile", "tiny-test", "--name", "dec-1", "--role", "decode",
            *args("dec-1"), ready="ready:",
        ),
        dinet_process(
            "serve", "--listen", f"127.0.0.1:{pp}", "--profile", "tiny-test", "--name", "pre-1", "--role", "prefill",
            "--decode-url", f"{scheme}://127.0.0.1:{dec_tap.port}", "--ca", str(d / "ca.crt"), *args("pre-1"),
            ready="ready:",
        ),
    ):  # fmt: skip
        client_tap = Relay(pp)
        spec = dict(duration=1.0, schedule=[(0.0, 4.0)], prompt_tokens=(40, 40), max_tokens=(6, 6), seed=3)
        url = f"{scheme}://127.0.0.1:{client_tap.port}"
        recs = load(url, ca=str(d / "ca.crt"), **spec)
        assert recs and all(r.status == "ok" and r.completion_tokens == 6 for r in recs), recs
        assert {r.decode_instance for r in recs} == {"dec-1"}
        if tls:
            refused = load(url, **spec)  # no --ca: the system's CAs do not know the project's
            assert refused and all(r.status.startswith("error") for r in refused)
        client_tap.close()
    dec_tap.close()
    clear = {
        "the prompt": b"w w w w" in client_tap.seen,
        "the answer's tokens": b"tok1" in client_tap.seen,
        "the request's JSON": b'"max_tokens"' in client_tap.seen,
        "the hand-over's headers": b"x-dinet-kv-bytes" in dec_tap.seen,
        "the KV cache": bytes(512) in dec_tap.seen,
    }
    assert len(client_tap.seen) > 1000 and len(dec_tap.seen) > 40 * TINY.kv_bytes_per_token
    assert clear == dict.fromkeys(clear, not tls), clear


def test_speculative_acceptance_follows_the_pair_and_k_grows_with_the_round_trip() -> None:
    from dinet.workload.speculative import accepted, best_k, expected_tokens

    for k, alpha in ((4, 0.7), (8, 0.5), (2, 0.9)):
        draws = [accepted(f"s{i}", 100, k, alpha) for i in range(4000)]
        assert all(0 <= d <= k for d in draws)
        mean = sum(d + 1 for d in draws) / len(draws)
        assert abs(mean - expected_tokens(k, alpha)) < 0.05 * expected_tokens(k, alpha), (k, alpha, mean)
    assert accepted("s", 1, 5, 0.0) == 0 and accepted("s", 1, 5, 1.0) == 5
    assert accepted("s", 7, 5, 0.7) == accepted("s", 7, 5, 0.7)  # seeded: the same session, the same draws
    ks = [best_k(0.01, rtt, 0.7) for rtt in (0.001, 0.01, 0.05, 0.2)]
    assert ks == sorted(ks) and ks[0] < ks[-1]  # a longer round trip pays for more drafted tokens a round
    assert best_k(0.01, 0.2, 0.0) == 1  # nothing is ever accepted: draft the least


def test_a_draft_instance_has_every_round_verified_by_one_target_on_one_connection() -> None:
    """`dinet serve --role draft --verify-url` answers the OpenAI API with the target's help: every request
    gets its max_tokens; its rounds all reach the one verifier over one connection, so only a session's first
    round computes the context (a miss) and the others hit; the verifier counts rounds, drafts and
    acceptances; a malformed round is a 400."""
    vp, dp = free_port(), free_port()
    with (
        dinet_process(
            "serve", "--listen", f"127.0.0.1:{vp}", "--profile", "tiny-test", "--name", "verif-1", ready="ready:"
        ),
        dinet_process(
            "serve", "--listen", f"127.0.0.1:{dp}", "--profile", "tiny-test", "--name", "draft-1", "--role", "draft",
            "--verify-url", f"http://127.0.0.1:{vp}", "--acceptance", "0.7", ready="ready:",
        ),
    ):  # fmt: skip
        recs = load(
            f"http://127.0.0.1:{dp}", duration=1.0, schedule=[(0.0, 6.0)], prompt_tokens=(30, 30), max_tokens=(40, 40)
        )
        assert recs and all(r.status == "ok" and r.completion_tokens == 40 for r in recs), recs
        assert all(r.verifiers == "verif-1" and r.rounds >= 1 and r.accepted <= r.drafted for r in recs)
        assert sum(r.rounds for r in recs) < sum(r.completion_tokens for r in recs)  # more than a token a round
        m = metrics(f"http://127.0.0.1:{vp}")
        assert m["dinet:spec_verify_rounds_total"] == sum(r.rounds for r in recs)
        assert m["dinet:spec_accepted_tokens_total"] == sum(r.accepted for r in recs)
        assert m["dinet:spec_draft_tokens_total"] == sum(r.drafted for r in recs)
        assert m["dinet:spec_session_misses_total"] == len(recs)  # each session's first round only
        assert m["dinet:spec_session_hits_total"] == sum(r.rounds - 1 for r in recs)
        bad = urllib.request.Request(
            f"http://127.0.0.1:{vp}/dinet/v1/verify", data=json.dumps({"session": "x", "context": 0}).encode()
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=5)
        assert e.value.code == 400 and "context is an integer" in json.loads(e.value.read())["message"]


def test_a_cascade_escalates_exactly_the_requests_below_its_threshold() -> None:
    """`dinet serve --role cascade`: the small model answers a request whose confidence reaches the
    threshold, and passes the others to the large model behind --escalate-url, whose answer the client gets
    whole; the quality model says which answers are at the large model's level (all escalated ones: the
    large instance here is of the reference quality, 0.5)."""
    from dinet.workload.cascade import at_large_level, confidence

    lp, sp = free_port(), free_port()
    with (
        dinet_process("serve", "--listen", f"127.0.0.1:{lp}", "--profile", "tiny-test", "--name", "large-1",
                      ready="ready:"),
        dinet_process(
            "serve", "--listen", f"127.0.0.1:{sp}", "--profile", "tiny-test", "--name", "small-1", "--role",
            "cascade", "--escalate-url", f"http://127.0.0.1:{lp}", "--threshold", "0.6", "--large-quality", "0.5",
            ready="ready:",
        ),
    ):  # fmt: skip
        recs = load(
            f"http://127.0.0.1:{sp}", duration=2.0, schedule=[(0.0, 15.0)], prompt_tokens=(20, 20), max_tokens=(6, 6)
        )
        assert len(recs) > 10 and all(r.status == "ok" and r.completion_tokens == 6 for r in recs), recs
        up = [r for r in recs if r.escalated]
        assert 0 < len(up) < len(recs)  # both branches taken
        assert {r.answered_by for r in up} == {"large-1"} and {r.answered_by for r in recs if not r.escalated} == {
            "small-1"
        }
        assert all(r.large_level for r in up)
        assert metrics(f"http://127.0.0.1:{sp}")["dinet:cascade_escalations_total"] == len(up)
        assert metrics(f"http://127.0.0.1:{lp}")["vllm:request_success_total"] == len(up)
        assert all(r.escalated == (r.confidence < 0.6) for r in recs)  # below the threshold, and only then
    assert 0.0 <= min(confidence(f"r{i}") for i in range(100)) <= max(confidence(f"r{i}") for i in range(100)) <= 1.0
    share = sum(at_large_level(f"r{i}", 0.5, 1.0, False) for i in range(4000)) / 4000
    assert abs(share - 0.5) < 0.03


def test_split_inference_picks_the_floor_or_all_on_premises_from_the_path_and_the_tail() -> None:
    """The split point follows the path and the tail: a fast path and an idle fast tail take the privacy floor,
    a slow uplink, a long round trip or a loaded tail keep every layer on premises; the estimates recover
    an uplink's rate and round trip from the exchanges' timings."""
    from dinet.workload.engine import PROFILES
    from dinet.workload.split import Estimates, activation_bytes, bounded, choose, predict, tail_tokens

    head = PROFILES["llama3-8b-l4"]  # the premises' GPU: 89 ms a step for the whole model
    fast = Estimates(rate_bps=200e6, rtt_s=0.004, tail_prefill_s=1 / 7800, tail_step_s=0.0135)
    assert choose(head, 500, 128, fast, floor=2) == 2
    for slow in (
        Estimates(rate_bps=2e6, rtt_s=0.004, tail_step_s=0.0135),  # the uplink drops
        Estimates(rate_bps=200e6, rtt_s=0.120, tail_step_s=0.0135),  # the round trip grows
        Estimates(rate_bps=200e6, rtt_s=0.004, tail_step_s=0.120),
    ):  # the tail is loaded
        assert choose(head, 500, 128, slow, floor=2) == head.layers, slow  # fmt: skip
    assert choose(head, 500, 128, fast, floor=head.layers) == head.layers  # the floor binds
    # linear in k: the time grows with every layer kept on the slower premises GPU, by the same step
    t = [predict(head, k, 500, 128, fast) for k in range(2, head.layers)]
    assert all(b > a for a, b in zip(t, t[1:], strict=False))
    assert activation_bytes(4096, 500) == 4096 * 500 * 2 and tail_tokens(500, 8, 32) == 375
    est = Estimates()
    up, one, rate, rtt = activation_bytes(4096, 500), activation_bytes(4096, 1), 50e6, 0.02
    prefill = up * 8 / rate + rtt + 0.05  # the tail reported 50 ms of prefill
    est.update(up, one, prefill, 0.05, 375, [one * 8 / rate + rtt + 0.01] * 5, [0.01] * 5)
    assert est.rate_bps == pytest.approx(rate, rel=1e-6) and est.rtt_s == pytest.approx(rtt, rel=1e-6)
    assert est.tail_step_s == pytest.approx(0.01) and est.tail_prefill_s == pytest.approx(0.05 / 375)
    # an exchange in flight that outlasts twice the estimate bounds the rate before its request ends
    assert bounded(est, [(100.0, up, 0.05)], now=100.1) is est  # still within what 50 Mbit/s takes
    slow = bounded(est, [(100.0, up, 0.05)], now=110.05)
    assert slow.rate_bps == pytest.approx(up * 8 / 10.0) and choose(head, 500, 128, slow, floor=2) == head.layers
    # one token's exchange: the tail's step and the round trip are not the link's
    assert bounded(est, [(100.0, one, 0.03)], now=100.05) is est
    assert bounded(est, [(100.0, one, 0.03)], now=100.5).rate_bps == pytest.approx(one * 8 / 0.47)


@pytest.mark.parametrize("tls", [True, False], ids=["https", "clear"])
def test_split_inference_sends_activations_of_the_right_size_and_never_the_prompt(tmp_path, tls: bool) -> None:  # type: ignore[no-untyped-def]
    """`dinet serve --role split --tail-url`: each request's prompt activations and one token's per decode
    token reach the tail (hidden x tokens x 2 bytes; the head and the tail count the same bytes); through a
    tap between head and tail the prompt's text never passes, and over HTTPS nothing of the exchange is in
    clear; a tail of another model refuses the request with a one-line reason."""
    import asyncio

    import aiohttp

    from dinet.creds import init_ca, issue

    d = tmp_path / "tls"
    init_ca(d)
    issue(d, "tail-1", addresses=("127.0.0.1",))
    tp, hp = free_port(), free_port()
    scheme = "https" if tls else "http"
    tap = Relay(tp)
    cert = ["--tls-cert", str(d / "tail-1.crt"), "--tls-key", str(d / "tail-1.key")] if tls else []
    with (
        dinet_process("serve", "--listen", f"127.0.0.1:{tp}", "--profile", "tiny-test", "--name", "tail-1", *cert,
                      ready="ready:"),
        dinet_process(
            "serve", "--listen", f"127.0.0.1:{hp}", "--profile", "tiny-test", "--name", "head-1", "--role", "split",
            "--tail-url", f"{scheme}://127.0.0.1:{tap.port}", "--ca", str(d / "ca.crt"), "--split-layers", "3",
            ready="ready:",
        ),
    ):  # fmt: skip
        recs = load(
            f"http://127.0.0.1:{hp}", duration=1.0, schedule=[(0.0, 5.0)], prompt_tokens=(40, 40), max_tokens=(6, 6)
        )
        assert recs and all(r.status == "ok" and r.completion_tokens == 6 for r in recs), recs
        assert {(r.split_layers, r.tail) for r in recs} == {(3, "tail-1")}
        assert {r.activation_bytes for r in recs} == {256 * 2 * (40 + 5)}  # the prompt's, then 5 tokens'
        sent = sum(r.activation_bytes for r in recs)
        assert metrics(f"http://127.0.0.1:{hp}")["dinet:split_sent_bytes_total"] == sent
        m = metrics(f"{scheme}://127.0.0.1:{tp}", ca=str(d / "ca.crt"))
        assert m["dinet:split_activation_bytes_total"] == sent and m["dinet:split_sessions_total"] == len(recs)

        async def refused() -> dict:  # type: ignore[type-arg]
            ctx = ssl.create_default_context(cafile=str(d / "ca.crt")) if tls else False
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(f"{scheme}://127.0.0.1:{tp}/dinet/v1/split", ssl=ctx) as ws,
            ):
                await ws.send_json({"session": "s", "layers": 32, "hidden": 4096, "split": 2, "prompt": 4,
                                    "max_tokens": 2})  # fmt: skip
                return dict(await ws.receive_json())

        assert "this tail runs dinet/tiny-test (8 layers, hidden 256), not 32/4096" in asyncio.run(refused())["error"]
        assert metrics(f"{scheme}://127.0.0.1:{tp}", ca=str(d / "ca.crt"))["dinet:split_refused_total"] == 1
    tap.close()
    assert len(tap.seen) > sent
    assert b"w w w w" not in tap.seen  # the prompt never leaves the premises
    assert (b'{"token": 0' in tap.seen) == (not tls)  # the tail's answers: in clear only without TLS


def test_a_split_head_whose_tail_does_not_answer_answers_whole_on_premises() -> None:
    """An adaptive split head (an 8B on an L4: a split pays off by its estimates) whose tail refuses the
    connection answers every request whole on premises, counted as a fallback, none failed."""
    hp, dead = free_port(), free_port()
    with dinet_process(
        "serve", "--listen", f"127.0.0.1:{hp}", "--profile", "llama3-8b-l4", "--name", "head-1", "--role", "split",
        "--tail-url", f"http://127.0.0.1:{dead}", ready="ready:",
    ):  # fmt: skip
        recs = load(
            f"http://127.0.0.1:{hp}", duration=1.0, schedule=[(0.0, 3.0)], prompt_tokens=(40, 40), max_tokens=(6, 6)
        )
        assert recs and all(r.status == "ok" and r.completion_tokens == 6 for r in recs), recs
        assert {(r.split_layers, r.activation_bytes) for r in recs} == {(32, 0)}
        m = metrics(f"http://127.0.0.1:{hp}")
        assert m["dinet:split_fallbacks_total"] >= 1 and m["dinet:split_local_requests_total"] == len(recs)


def test_split_estimates_read_a_path_that_slowed_during_a_request_as_a_dearer_split() -> None:
    """The prompt's upload went at 200 Mbit/s, then the uplink dropped: the last token exchanges outlast the
    prompt's. The estimates take the round trip as it was and lower the rate, so the next request stays on
    premises; a probe on the recovered path (prompt and token exchanges consistent) restores both."""
    from dinet.workload.engine import PROFILES
    from dinet.workload.split import Estimates, activation_bytes, choose

    head = PROFILES["llama3-8b-l4"]
    up, one = activation_bytes(4096, 200), activation_bytes(4096, 1)
    est = Estimates(rate_bps=200e6, rtt_s=0.008, tail_step_s=0.0135, samples=3)
    assert choose(head, 200, 64, est, floor=2) == 2
    fast, slow = one * 8 / 200e6 + 0.008, one * 8 / 2e6 + 0.008
    est.update(up, one, up * 8 / 200e6 + 0.008 + 0.03, 0.03, 188, [fast] * 30 + [slow] * 33, [0.0] * 63)
    assert est.rtt_s == 0.008 and est.rate_bps < 10e6
    assert choose(head, 200, 64, est, floor=2) == head.layers


def test_a_split_head_whose_tail_runs_another_model_answers_whole_and_says_why() -> None:
    """A tail of another model refuses the split request; the head answers it whole on premises and the
    record carries the tail's one-line reason."""
    tp, hp = free_port(), free_port()
    with (
        dinet_process("serve", "--listen", f"127.0.0.1:{tp}", "--profile", "tiny-test", "--name", "tail-1",
                      ready="ready:"),
        dinet_process(
            "serve", "--listen", f"127.0.0.1:{hp}", "--profile", "llama3-8b-l4", "--name", "head-1", "--role", "split",
            "--tail-url", f"http://127.0.0.1:{tp}", "--split-layers", "2", ready="ready:",
        ),
    ):  # fmt: skip
        recs = load(
            f"http://127.0.0.1:{hp}", duration=0.5, schedule=[(0.0, 4.0)], prompt_tokens=(20, 20), max_tokens=(3, 3)
        )
        assert recs and all(r.status == "ok" and r.completion_tokens == 3 and r.split_layers == 32 for r in recs)
        assert all("this tail runs dinet/tiny-test (8 layers, hidden 256), not 32/4096" in r.fallback for r in recs)
        assert metrics(f"http://127.0.0.1:{tp}")["dinet:split_refused_total"] == len(recs)


def test_a_drafter_leaves_a_swamped_verifier_on_a_new_flow() -> None:
    """`--replace-after 4`: the verifier answers a connection's first 3 rounds at once and then leaves the
    next unanswered; the drafter abandons that round after 4x its usual answer time (at least 0.25 s) and
    sends it again on a new connection (a new flow, which the network would place anew), which is answered:
    every token arrives, the session counts one replacement, the verifier saw two connections."""
    import threading

    from aiohttp import web

    peers: list[object] = []
    rounds: dict[object, int] = {}
    stall = asyncio.Event()  # never set: the first connection's 4th round waits until the drafter leaves

    async def verify(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer not in peers:
            peers.append(peer)
        rounds[peer] = rounds.get(peer, 0) + 1
        await request.json()
        if peers.index(peer) == 0 and rounds[peer] > 3:
            await stall.wait()
        return web.json_response({"accepted": 1, "cache_hit": rounds[peer] > 1, "instance": f"v{peers.index(peer)}"})

    app = web.Application()
    app.router.add_post("/dinet/v1/verify", verify)
    vp = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", vp).start())
    th = threading.Thread(target=loop.run_forever, daemon=True)
    th.start()
    dp = free_port()
    try:
        with dinet_process(
            "serve", "--listen", f"127.0.0.1:{dp}", "--profile", "tiny-test", "--name", "draft-1", "--role", "draft",
            "--verify-url", f"http://127.0.0.1:{vp}", "--replace-after", "4", ready="ready:",
        ):  # fmt: skip
            recs = load(f"http://127.0.0.1:{dp}", duration=0.2, schedule=[(0.0, 50.0)], prompt_tokens=(10, 10),
                        max_tokens=(20, 20), max_requests=1)  # fmt: skip
            assert len(recs) == 1 and recs[0].status == "ok" and recs[0].completion_tokens == 20, recs
            assert recs[0].verifiers == "v0,v1" and recs[0].replaced == 1
            assert metrics(f"http://127.0.0.1:{dp}")["dinet:spec_replaced_total"] == 1
    finally:
        loop.call_soon_threadsafe(loop.stop)
        th.join(timeout=5)
        loop.run_until_complete(runner.cleanup())
        loop.close()
    assert len(peers) == 2


def _first_token_after(sched, seq) -> float:  # type: ignore[no-untyped-def]
    """Runs the schedule until `seq` makes its first token; the seconds that took."""
    sched.add(seq)
    t = 0.0
    while not seq.generated:
        step = sched.step()
        assert step is not None
        t += step.seconds
    while not sched.idle:
        assert sched.step() is not None
    return t


def test_prefix_caching_skips_the_prompt_blocks_held_and_only_a_prefix() -> None:
    """vLLM's automatic prefix caching: a second prompt sharing the first's first 100 tokens finds their 6
    full blocks (96 tokens) and prefills only the rest; a prompt that differs in its first token finds
    nothing (the hash chain: a hit is always a prefix); a repeated prompt still computes its last token; the
    counters are vLLM's (queried and hit prompt tokens). Without caching nothing is found."""
    from dataclasses import replace as with_

    from dinet.workload.engine import Scheduler, Sequence, block_hashes

    p = with_(TINY, prefill_tps=1000.0, max_batched_tokens=4096)
    words = [f"w{i}" for i in range(300)]
    sched = Scheduler(p, prefix_caching=True)
    cold = _first_token_after(sched, Sequence(300, 2, 0.0, queue=None, prefix=block_hashes(words)))
    warm_seq = Sequence(320, 2, 0.0, queue=None, prefix=block_hashes(words + ["x"] * 20))
    warm = _first_token_after(sched, warm_seq)
    assert warm_seq.cached == 288 and warm < cold / 3  # 18 blocks of 16 found; 32 tokens prefilled
    other = Sequence(300, 2, 0.0, queue=None, prefix=block_hashes(["y"] + words[1:]))
    _first_token_after(sched, other)
    assert other.cached == 0
    again = Sequence(300, 2, 0.0, queue=None, prefix=block_hashes(words))
    _first_token_after(sched, again)
    assert again.cached == 288  # 299 tokens could be found; whole blocks of them: 18
    assert sched.stats.prefix_queries == 300 + 320 + 300 + 300 and sched.stats.prefix_hits == 288 * 2
    plain = Scheduler(p)
    same = Sequence(300, 2, 0.0, queue=None, prefix=block_hashes(words))
    _first_token_after(plain, Sequence(300, 2, 0.0, queue=None, prefix=block_hashes(words)))
    _first_token_after(plain, same)
    assert same.cached == 0 and plain.stats.prefix_queries == 0


def test_cached_blocks_live_in_free_blocks_and_the_least_recently_used_go_first() -> None:
    """8 blocks of KV: two finished 48-token prompts leave 6 blocks cached; a third prompt of 5 blocks
    takes free blocks, evicting the least recently used (the first prompt's, unless it was hit since)."""
    from dataclasses import replace as with_

    from dinet.workload.engine import Scheduler, Sequence, block_hashes

    sched = Scheduler(with_(TINY, kv_tokens=128, max_batched_tokens=512), prefix_caching=True)
    a, b, c = ([f"{k}{i}" for i in range(49)] for k in "abc")
    for words in (a, b):
        _first_token_after(sched, Sequence(49, 1, 0.0, queue=None, prefix=block_hashes(words)))
    assert len(sched.cached) == 6 and sched.free == 8
    hit_a = Sequence(49, 1, 0.0, queue=None, prefix=block_hashes(a))  # a is now the most recently used
    _first_token_after(sched, hit_a)
    assert hit_a.cached == 48
    big = Sequence(80, 1, 0.0, queue=None, prefix=block_hashes(c + ["z"] * 31))  # 5 blocks, 5 full
    _first_token_after(sched, big)
    got_a = Sequence(49, 1, 0.0, queue=None, prefix=block_hashes(a))
    got_b = Sequence(49, 1, 0.0, queue=None, prefix=block_hashes(b))
    sched2 = sched.copy()
    _first_token_after(sched2, got_b)
    _first_token_after(sched, got_a)
    assert got_b.cached == 0  # b's blocks were the least recently used: taken by the big prompt
    assert got_a.cached > 0  # some of a's survive (8 free blocks: 5 of the big prompt's and 3 others)


def test_a_prefix_caching_server_reports_cached_tokens_per_request_and_vllms_counters() -> None:
    """`dinet serve --prefix-caching`: a second turn of a conversation finds the first turn's prompt
    (usage.prompt_tokens_details.cached_tokens, OpenAI's field) and /metrics counts queries and hits by
    vLLM's names; a server without the flag reports no cached tokens."""
    port, plain = free_port(), free_port()
    with (
        dinet_process("serve", "--listen", f"127.0.0.1:{port}", "--profile", "tiny-test", "--prefix-caching",
                      ready="ready:"),
        dinet_process("serve", "--listen", f"127.0.0.1:{plain}", "--profile", "tiny-test", ready="ready:"),
    ):  # fmt: skip

        def ask(url: str, text: str) -> dict:  # type: ignore[type-arg]
            req = urllib.request.Request(
                f"{url}/v1/chat/completions",
                data=json.dumps({"messages": [{"role": "user", "content": text}], "max_tokens": 3}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())["usage"]  # type: ignore[no-any-return]

        first = " ".join(f"t{i}" for i in range(70))
        url = f"http://127.0.0.1:{port}"
        u1 = ask(url, first)
        u2 = ask(url, first + " and then some more words")
        assert u1["prompt_tokens_details"] == {"cached_tokens": 0}
        assert u2["prompt_tokens_details"] == {"cached_tokens": 64}
        m = metrics(url)
        assert m["vllm:prefix_cache_queries_total"] == 70 + 75 and m["vllm:prefix_cache_hits_total"] == 64
        assert "prompt_tokens_details" not in ask(f"http://127.0.0.1:{plain}", first)


def test_conversations_grow_their_prompts_find_their_prefixes_and_carry_their_session_key() -> None:
    """`dinet load --turns`: each turn's prompt is the system prompt, every earlier question and answer, and a
    new question; against a prefix-caching server a later turn finds the earlier turns' blocks, and the
    first turns find the shared system prompt; each connection of a conversation is bound to a port of its
    session group (dinet.policy.session), one group per conversation."""
    from dinet.policy.session import session_ports
    from dinet.workload.load import conversation_group

    port = free_port()
    with dinet_process(
        "serve", "--listen", f"127.0.0.1:{port}", "--profile", "tiny-test", "--prefix-caching", ready="ready:"
    ):
        recs = load(
            f"http://127.0.0.1:{port}", duration=2.0, schedule=[(0.0, 3.0)], turns=(3, 3), system_tokens=64,
            prompt_tokens=(20, 30), max_tokens=(4, 4), think_s=0.05, session_key="port",
        )  # fmt: skip
    convs: dict[int, list] = {}  # type: ignore[type-arg]
    for r in recs:
        assert r.status == "ok", r
        convs.setdefault(r.conversation, []).append(r)
    assert len(convs) >= 3
    for cid, turns in convs.items():
        turns.sort(key=lambda r: r.turn)
        assert [r.turn for r in turns] == list(range(len(turns)))
        prompts = [r.prompt_tokens for r in turns]
        assert prompts == sorted(prompts) and len(set(prompts)) == len(prompts)  # each turn adds to the last
        for before, r in zip(turns, turns[1:], strict=False):  # the earlier turn's prompt, in whole blocks, is found
            assert r.cached_tokens >= before.prompt_tokens // 16 * 16
        ports = {int(r.session.split()[1]) for r in turns}
        assert ports <= set(session_ports(conversation_group(1, cid)))
    firsts = sorted((r for r in recs if r.turn == 0), key=lambda r: r.t)
    assert all(r.cached_tokens >= 64 for r in firsts[1:])  # the shared system prompt (4 blocks)
    table = summary(recs, Slo(1000, 1000), 2.0)
    assert 0.5 < table["delay-sensitive"]["prefix_hit_rate"] < 1.0


def test_a_conversation_over_ipv6_carries_its_flow_label_on_the_wire() -> None:
    """--session-key flow-label: every connection of a conversation carries the conversation's IPv6 flow label
    (RFC 6437; the kernel's flow label manager), seen on the wire; different conversations, different labels."""
    import subprocess
    import tempfile
    import time

    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import rdpcap

    port = free_port()
    with (
        tempfile.TemporaryDirectory() as tmp,
        dinet_process("serve", "--listen", f"[::1]:{port}", "--profile", "tiny-test", ready="ready:"),
    ):
        pcap = f"{tmp}/lo.pcap"
        dump = ["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-w", pcap, f"ip6 and tcp dst port {port}"]
        cap = subprocess.Popen(dump, stderr=subprocess.PIPE)
        try:
            assert cap.stderr is not None and b"listening" in cap.stderr.readline()
            recs = load(
                f"http://[::1]:{port}", duration=1.5, schedule=[(0.0, 3.0)], turns=(2, 2), prompt_tokens=(5, 5),
                max_tokens=(2, 2), think_s=0.05, session_key="flow-label",
            )  # fmt: skip
            # immediate mode, -U: each packet is written as it comes; wait until the last conversation's is there
            last = max(int(r.session.split()[1], 16) for r in recs)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(IPv6 in p and p[IPv6].fl == last for p in rdpcap(pcap)):
                time.sleep(0.05)
        finally:
            cap.terminate()
            cap.wait(timeout=10)
        # each connection's SYN (what places a flow) and its data; a reset the kernel sends for a closed socket
        # carries a label of its own
        pkts = [p for p in rdpcap(pcap) if IPv6 in p and "R" not in str(p[TCP].flags)]
        labels = {p[IPv6].fl for p in pkts}
        syns = sum("S" in str(p[TCP].flags) for p in pkts)
    want = {int(r.session.split()[1], 16) for r in recs}
    assert all(r.status == "ok" for r in recs) and len(want) == len({r.conversation for r in recs}) >= 2
    assert labels == want and syns >= len(want)


def test_the_prefix_index_sends_a_prompt_where_its_longest_prefix_went_unless_that_backend_is_swamped() -> None:
    """The L7 router's choice (dinet.workload.prefix_router.PrefixIndex), hand-worked: a prompt goes to the
    backend that was sent the longest run of its leading blocks; no match: the least loaded; a best match
    with more than `guard` requests beyond the least loaded yields to it; a backend left out is not chosen;
    the index forgets the least recently sent blocks first."""
    from dinet.workload.engine import block_hashes
    from dinet.workload.prefix_router import PrefixIndex

    idx = PrefixIndex(3, index_blocks=4, guard=2)
    a = block_hashes([f"a{i}" for i in range(64)])  # 4 blocks
    b = block_hashes([f"a{i}" for i in range(32)] + [f"b{i}" for i in range(32)])  # shares a's first 2
    assert idx.choose(a, [1, 0, 2], [True] * 3) == (1, 0)  # nothing known: the least loaded
    idx.sent(1, a)
    assert idx.choose(b, [0, 0, 0], [True] * 3) == (1, 2)
    assert idx.choose(a, [0, 2, 0], [True] * 3) == (1, 4)  # 2 beyond the least: within the guard
    assert idx.choose(a, [0, 3, 0], [True] * 3) == (0, 0)  # 3 beyond: the least loaded
    assert idx.choose(a, [0, 0, 0], [True, False, True]) == (0, 0)  # left out
    idx.sent(2, b)
    assert idx.choose(b, [0, 1, 0], [True] * 3) == (2, 4)
    idx.sent(1, b)  # backend 1 holds at most 4 blocks: a's last two go
    assert idx.matched(1, a) == 2 and idx.matched(1, b) == 4


def test_the_l7_router_keeps_a_conversation_on_the_backend_that_holds_it_and_streams_its_answers() -> None:
    """`dinet route` in front of two prefix-caching servers: a conversation's turns (new connections each,
    no session key) reach the backend that served its first turn, so each later turn finds the earlier
    turns' prefix; answers stream through with the backend's name; a backend that is down is counted and the
    request answered by the other; bad JSON is a 400 in one line."""
    p1, p2, pr = free_port(), free_port(), free_port()
    with (
        dinet_process("serve", "--listen", f"127.0.0.1:{p1}", "--profile", "tiny-test", "--name", "b1",
                      "--prefix-caching", ready="ready:"),
        dinet_process("serve", "--listen", f"127.0.0.1:{p2}", "--profile", "tiny-test", "--name", "b2",
                      "--prefix-caching", ready="ready:"),
        dinet_process("route", "--listen", f"127.0.0.1:{pr}", "--backend", f"http://127.0.0.1:{p1}",
                      "--backend", f"http://127.0.0.1:{p2}", ready="ready:"),
    ):  # fmt: skip
        router = f"http://127.0.0.1:{pr}"
        recs = load(router, duration=2.0, schedule=[(0.0, 4.0)], turns=(3, 3), prompt_tokens=(40, 60),
                    max_tokens=(4, 4), think_s=0.05)  # fmt: skip
        assert recs and all(r.status == "ok" and r.completion_tokens == 4 for r in recs)
        by_conv: dict[int, set[str]] = {}
        for r in recs:
            by_conv.setdefault(r.conversation, set()).add(r.instance)
            if r.turn:
                assert r.cached_tokens >= 32, r  # the earlier turns' blocks, found where they were left
        assert all(len(v) == 1 for v in by_conv.values()) and {i for v in by_conv.values() for i in v} == {"b1", "b2"}
        m = metrics(router)
        assert sum(v for k, v in m.items() if k.startswith("dinet_router_requests_total{")) == len(recs)
        assert m["dinet_router_matched_blocks_total"] > 0
        bad = urllib.request.Request(f"{router}/v1/completions", data=b"{nope")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=5)
        assert e.value.code == 400 and json.loads(e.value.read())["message"] == "the body is not JSON"
    with (
        dinet_process("serve", "--listen", f"127.0.0.1:{p2}", "--profile", "tiny-test", "--name", "b2", ready="ready:"),
        dinet_process(
            "route",
            "--listen",
            f"127.0.0.1:{pr}",
            "--backend",
            f"http://127.0.0.1:{p1}",
            "--backend",
            f"http://127.0.0.1:{p2}",
            ready="ready:",
        ),
    ):  # fmt: skip  (b1 is down now)
        recs = load(f"http://127.0.0.1:{pr}", duration=1.0, schedule=[(0.0, 4.0)], prompt_tokens=(8, 8),
                    max_tokens=(2, 2))  # fmt: skip
        assert recs and all(r.status == "ok" and r.instance == "b2" for r in recs)
        failed = metrics(f"http://127.0.0.1:{pr}")
        assert failed[f"dinet_router_backend_failures_total{{backend=http://127.0.0.1:{p1}}}"] >= 1


def test_traffic_is_marked_with_its_class_where_it_starts() -> None:
    """dinet load's sockets carry the class's DSCP (IPv4 TOS, IPv6 traffic class), and a server's listening
    socket does, which the connections it accepts inherit (read back from the accepted socket itself)."""
    import socket

    from aiohttp import web

    from dinet.errors import ConfigError
    from dinet.netutil import dscp_of, marked_socket
    from dinet.workload.serve import open_site

    sensitive = dscp_of("delay-sensitive")
    make = marked_socket(sensitive)
    for family, level, opt in (
        (socket.AF_INET, socket.IPPROTO_IP, socket.IP_TOS),
        (socket.AF_INET6, socket.IPPROTO_IPV6, socket.IPV6_TCLASS),
    ):
        with make((family, socket.SOCK_STREAM, 6, "", ("::1", 1))) as s:
            assert s.getsockopt(level, opt) == sensitive << 2
    assert marked_socket(0) is None  # unmarked: aiohttp's own sockets
    with pytest.raises(ConfigError, match="DSCP for traffic class 'bulk'"):
        dscp_of("bulk")

    accepted: list[int] = []

    async def hello(request: web.Request) -> web.Response:
        sock = request.transport.get_extra_info("socket")  # type: ignore[union-attr]
        accepted.append(sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS))
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", hello)
        port = free_port()
        runner = await open_site(app, f"127.0.0.1:{port}", dscp=dscp_of("kv"))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            assert b"200 OK" in await reader.read()
            writer.close()
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert accepted == [dscp_of("kv") << 2]


@pytest.mark.parametrize(
    "name,fig",
    [(n, f) for n, p in PROFILES.items() for f in p.published],
    ids=[f"{n}-c{f.concurrency}-{f.metric}" for n, p in PROFILES.items() for f in p.published],
)
def test_a_profile_reproduces_the_published_figures_it_is_calibrated_against(name: str, fig) -> None:  # type: ignore[no-untyped-def]
    """Each published figure beside a profile (dinet.workload.engine.Published: a closed-loop sweep's figure at
    a concurrency, or a dataset's sample sent at once), run through the engine's own scheduler in engine time:
    within the stated tolerance."""
    from dinet.workload.engine import at_once, closed_loop

    if fig.lengths:
        got = at_once(PROFILES[name], fig.lengths)
    else:
        got = closed_loop(PROFILES[name], fig.concurrency, fig.prompt_tokens, fig.output_tokens, 20 * fig.concurrency)
    assert got[fig.metric] == pytest.approx(fig.value, rel=fig.tolerance), (got, fig.source)


def test_at_least_one_profile_is_calibrated() -> None:
    assert any(p.published for p in PROFILES.values())
