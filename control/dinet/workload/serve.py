"""`dinet serve`: an OpenAI-compatible model server whose timing follows a serving engine under load
(dinet.workload.engine), with vLLM's Prometheus metrics. Anything built on it runs unchanged against vLLM.

    POST /v1/completions, /v1/chat/completions   (stream: true -> server-sent events, as OpenAI and vLLM)
    GET  /v1/models, /health, /metrics
    POST /dinet/v1/kv       a decode instance takes a prefilled prompt's KV cache (prefill-decode)
    POST /dinet/v1/verify   a target model verifies a round of drafted tokens (speculative decoding)
    GET  /dinet/v1/split    (WebSocket) a tail computes the last layers of a split model (split inference)

Roles: both (a whole model server, and a verifier); prefill and decode (a pipeline split at the KV cache);
draft (a small model that drafts and has every round verified behind --verify-url: dinet.workload.speculative);
cascade (a small model that answers, or escalates to the large model behind --escalate-url when its
confidence is low: dinet.workload.cascade); split (the head of a model split between the premises and the
network: the first layers here, the rest on the tail behind --tail-url; dinet.workload.split).

Every response names the instance that served it (header `x-dinet-instance`, and `x-dinet-tier`) and reports
its usage (prompt and completion tokens). A prompt's token count is its whitespace-separated words (a
tokenizer-free stand-in; `max_tokens` sets the output length, `ignore_eos` is implied). The text generated is
filler: the timing, the tokens and the metrics are the workload.

aiohttp: a maintained asyncio HTTP server with streaming responses, which the engine's asyncio model needs
(one event loop, no thread per request); it is also the client side of `dinet load`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector as PromCollector

from ..errors import ConfigError
from ..netutil import marked_socket, set_dscp
from . import cascade
from . import speculative as spec
from . import split as sp
from .engine import PROFILES, Engine, Profile, Sequence, block_hashes

if TYPE_CHECKING:
    import ssl

    import aiohttp
    from prometheus_client.metrics_core import Metric

Tokens = AsyncGenerator[float, None]  # a request's tokens: the time each is made

# vLLM's buckets for TTFT and TPOT (seconds)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)


class _EngineGauges(PromCollector):
    def __init__(self, engine: Engine, model: str):
        self.engine, self.model = engine, model

    def collect(self) -> Iterator[Metric]:
        s, p = self.engine.stats, self.engine.p
        for name, doc, value in (
            ("vllm:num_requests_running", "Number of requests in model execution batches.", s.running),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", s.waiting),
            ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", s.kv_used / p.kv_tokens),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", s.kv_used / p.kv_tokens),
        ):
            g = GaugeMetricFamily(name, doc, labels=["model_name"])
            g.add_metric([self.model], value)
            yield g
        for name, doc, value in (
            ("vllm:num_preemptions", "Cumulative number of preemptions.", s.preemptions),
            (
                "vllm:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.",
                s.prefix_queries,
            ),
            ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", s.prefix_hits),
        ):
            c = CounterMetricFamily(name, doc, labels=["model_name"])
            c.add_metric([self.model], value)
            yield c


class Metrics:
    """vLLM's metric names, labelled by model_name as vLLM does."""

    def __init__(self, engine: Engine, model: str):
        self.registry = CollectorRegistry()
        r, lb = self.registry, ["model_name"]
        self.model = model
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", lb, registry=r, buckets=TTFT_BUCKETS
        )
        self.tpot = Histogram(
            "vllm:time_per_output_token_seconds", "Time per output token.", lb, registry=r, buckets=TPOT_BUCKETS
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end request latency.", lb, registry=r, buckets=E2E_BUCKETS
        )
        self.queue = Histogram(
            "vllm:request_queue_time_seconds", "Time spent waiting in the queue.", lb, registry=r, buckets=E2E_BUCKETS
        )
        self.prefill = Histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            lb,
            registry=r,
            buckets=TTFT_BUCKETS,
        )
        self.prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", lb, registry=r)
        self.generation = Counter("vllm:generation_tokens", "Number of generation tokens processed.", lb, registry=r)
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.", lb, registry=r)
        # speculative decoding, as a verifier sees it (vLLM's spec-decode counters are the drafter's own)
        self.spec_rounds = Counter("dinet:spec_verify_rounds", "Rounds of drafted tokens verified.", lb, registry=r)
        self.spec_drafted = Counter("dinet:spec_draft_tokens", "Drafted tokens verified.", lb, registry=r)
        self.spec_accepted = Counter("dinet:spec_accepted_tokens", "Drafted tokens accepted.", lb, registry=r)
        self.spec_hits = Counter(
            "dinet:spec_session_hits", "Rounds of a session whose context this verifier held.", lb, registry=r
        )
        self.spec_replaced = Counter(
            "dinet:spec_replaced", "Rounds a drafter sent again on a new flow, its verifier swamped.", lb, registry=r
        )
        self.spec_misses = Counter(
            "dinet:spec_session_misses", "Rounds that computed the session's whole context again.", lb, registry=r
        )
        self.escalations = Counter(
            "dinet:cascade_escalations", "Requests a cascade's small model passed to the large one.", lb, registry=r
        )
        # split inference: the tail's view (sessions, activation bytes taken) and the head's (bytes sent,
        # requests kept whole on premises, probes of the path)
        self.split_sessions = Counter("dinet:split_sessions", "Split requests a tail completed.", lb, registry=r)
        self.split_bytes = Counter(
            "dinet:split_activation_bytes", "Activation bytes a tail took from heads.", lb, registry=r
        )
        self.split_refused = Counter("dinet:split_refused", "Split requests a tail refused.", lb, registry=r)
        self.split_sent = Counter("dinet:split_sent_bytes", "Activation bytes a head sent to tails.", lb, registry=r)
        self.split_local = Counter(
            "dinet:split_local_requests", "Requests a head kept whole on premises (no split paid off).", lb, registry=r
        )
        self.split_probes = Counter("dinet:split_probes", "Probes of the path a head sent.", lb, registry=r)
        self.split_fallbacks = Counter(
            "dinet:split_fallbacks", "Requests a head answered whole because no tail answered.", lb, registry=r
        )
        for metric in (
            self.ttft,
            self.tpot,
            self.e2e,
            self.queue,
            self.prefill,
            self.prompt,
            self.generation,
            self.success,
        ):
            metric.labels(model)  # every series from the start, at zero, as vLLM shows them
        r.register(_EngineGauges(engine, model))
        engine.observers.append(self.finished)

    def finished(self, s: Sequence) -> None:
        m = self.model
        self.ttft.labels(m).observe(s.first_token - s.arrived)
        self.queue.labels(m).observe(s.admitted - s.arrived)
        self.prefill.labels(m).observe(s.first_token - s.admitted)
        self.e2e.labels(m).observe(time.monotonic() - s.arrived)
        if s.generated > 1:
            self.tpot.labels(m).observe((time.monotonic() - s.first_token) / (s.generated - 1))
        if not s.prefilled:  # a handed-over prompt was prefilled (and counted) by the prefill instance
            self.prompt.labels(m).inc(s.prompt_tokens)
        self.generation.labels(m).inc(s.generated)
        self.success.labels(m).inc()


async def drain(tokens: Tokens) -> None:
    """Runs an engine request to its last token; closed at once if the caller is cancelled (a client that
    hung up), so its place in the batch and its KV cache are freed."""
    async with contextlib.aclosing(tokens):
        async for _ in tokens:
            pass


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


class Server:
    def __init__(
        self,
        profile: Profile,
        name: str,
        model: str | None = None,
        role: str = "both",
        decode_url: str = "",
        ca: str | None = None,
        verify_url: str = "",
        alpha: float = spec.ALPHA,
        escalate_url: str = "",
        threshold: float = cascade.THRESHOLD,
        large_quality: float = 1.0,
        tail_url: str = "",
        floor: int = sp.FLOOR,
        fixed_split: int | None = None,
        replace_after: float = 0.0,
        prefix_caching: bool = False,
    ):
        """role: both (a whole model server); prefill (prefills, then hands the KV cache to the decode
        instance behind `decode_url`, a service VIP the network steers, and relays its tokens; https: over
        TLS, the decode instance's certificate checked against `ca`, default the system's CAs); decode (takes
        handed-over KV caches on /dinet/v1/kv and decodes); draft (drafts tokens and has each round verified
        by the target behind `verify_url`, a service VIP, accepting each with probability `alpha`); cascade
        (answers, or escalates to `escalate_url`); split (the first layers here, at least `floor`, the rest on
        the tail behind `tail_url`; the split point chosen per request, or `fixed_split` layers here).
        prefix_caching: the engine keeps prompts' KV blocks for later requests (vLLM's automatic prefix
        caching); a response's usage says how many prompt tokens were found (prompt_tokens_details)."""
        if role not in ("both", "prefill", "decode", "draft", "cascade", "split"):
            raise ConfigError(f"role is both, prefill, decode, draft, cascade or split, not {role!r}")
        if role == "split":
            if not tail_url:
                raise ConfigError("a split instance needs --tail-url (the tail's address)")
            sp.check_split(profile, floor, fixed_split)
        self.tail_url, self.floor, self.fixed_split = tail_url.rstrip("/"), floor, fixed_split
        self.est = sp.Estimates()
        self._heads: dict[int, Engine] = {}
        self._last_split = time.monotonic()
        self._probe: asyncio.Task[None] | None = None
        self._down_until = 0.0  # a tail that did not answer: every request on premises until then
        # split requests' exchanges in flight: (start, bytes, the seconds of it that are not the transfer)
        self._inflight: dict[str, tuple[float, int, float]] = {}
        if role == "cascade" and not escalate_url:
            raise ConfigError("a cascade instance needs --escalate-url (the large model's address)")
        self.escalate_url, self.threshold = escalate_url.rstrip("/"), cascade.check_threshold(threshold)
        self.large_quality = large_quality
        if role == "prefill" and not decode_url:
            raise ConfigError("a prefill instance needs --decode-url (the decode stage's address)")
        if role == "draft" and not verify_url:
            raise ConfigError("a draft instance needs --verify-url (the target model's address)")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"an acceptance rate is 0..1, not {alpha}")
        self.verify_url, self.alpha = verify_url.rstrip("/"), alpha
        if replace_after < 0:
            raise ConfigError(f"--replace-after is a multiple of the usual answer time (0: never), not {replace_after}")
        self.replace_after = replace_after
        self.cache = spec.SessionCache()
        self.profile, self.name, self.role, self.decode_url = profile, name, role, decode_url.rstrip("/")
        self.kv_dscp = 0  # what a KV hand-over to the decode stage is marked with (0: unmarked)
        self._session: aiohttp.ClientSession | None = None
        self.ca = ca
        self.model = model or profile.model
        self.engine = Engine(profile, prefix_caching=prefix_caching)
        self.metrics = Metrics(self.engine, self.model)
        self.app = web.Application()
        self.app.add_routes(
            [
                web.post("/v1/completions", self.completions),
                web.post("/v1/chat/completions", self.chat),
                web.get("/v1/models", self.models),
                web.get("/health", self.health),
                web.get("/metrics", self.prom),
                web.post("/dinet/v1/kv", self.kv),
                web.post("/dinet/v1/verify", self.verify),
                web.get("/dinet/v1/split", self.split),
                web.get("/dinet/v1/ttft", self.ttft),
                web.post("/reset_prefix_cache", self.reset_prefix_cache),
            ]
        )
        self.app.on_shutdown.append(self._stop)

    async def _stop(self, app: web.Application) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self.engine.stop()
        for head in self._heads.values():
            await head.stop()
        if self._session is not None:
            await self._session.close()

    def _tls(self, url: str) -> ssl.SSLContext | bool:
        """The TLS of a client toward a stage behind `url` (https: its certificate checked against the CA)."""
        from ..creds import client_tls

        tls = client_tls(self.ca) if url.startswith("https:") else None
        return tls if tls is not None else True

    # ---- speculative decoding --------------------------------------------------------------------------------
    async def verify(self, request: web.Request) -> web.Response:
        """One round: the k drafted tokens (and, for a session this instance does not hold, its whole context)
        computed in one pass, and one token more; how many drafts the target accepts."""
        if self.role != "both":
            return self._error(404, "this instance verifies nothing (not a whole model server)")
        try:
            session, context, draft, alpha = spec.verify_request(await self._body(request))
            compute, hit = self.cache.to_compute(session, context, draft)
            tokens = self.engine.generate(compute, 1)
        except ConfigError as e:
            return self._error(400, str(e))
        await drain(tokens)  # a drafter that hung up leaves the batch
        n = spec.accepted(session, context, draft, alpha)
        self.cache.hold(session, context + n + 1)
        self.metrics.spec_rounds.labels(self.model).inc()
        self.metrics.spec_drafted.labels(self.model).inc(draft)
        self.metrics.spec_accepted.labels(self.model).inc(n)
        (self.metrics.spec_hits if hit else self.metrics.spec_misses).labels(self.model).inc()
        return web.json_response({"accepted": n, "cache_hit": hit, "instance": self.name}, headers=self._headers())

    async def _speculate(self, n_prompt: int, n_max: int, info: dict[str, Any]) -> Tokens:
        """The draft role's tokens: rounds of k drafted here, verified behind verify_url on one connection
        (one flow, so the network keeps the session on its verifier); k adapts to the measured round trip.
        With replace_after, a round unanswered after that many times the usual answer time (at least
        spec.REPLACE_MIN_S) is abandoned and sent again on a new connection: a new flow, which the network
        places anew (the network never moves the old one; this end host leaves it), and whose verifier
        computes the session's whole context again. At most spec.MAX_REPLACE times a session."""
        import aiohttp

        session = uuid.uuid4().hex[:16]

        def flow() -> aiohttp.ClientSession:  # one connection, one flow for the session
            conn = aiohttp.TCPConnector(limit=1, ssl=self._tls(self.verify_url))
            return aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=300))

        async def verify(http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(f"{self.verify_url}/dinet/v1/verify", json=body) as r:
                if r.status != 200:
                    raise ConfigError(f"the verifier refused a round: HTTP {r.status} {await r.text()}")
                return dict(await r.json())

        draft_s = spec.Ewma(max(self.profile.decode_base_ms, 1.0) / 1000)
        answer_s: spec.Ewma | None = None
        ctx, made, rounds, drafted, taken, replaced = n_prompt, 0, 0, 0, 0, 0
        verifiers: list[str] = []
        http = flow()
        try:
            while made < n_max:
                k = min(spec.best_k(draft_s.value, answer_s.value if answer_s else 0.05, self.alpha), n_max - made)
                t0 = time.monotonic()
                # the draft model: the prompt's prefill in the first round, then k of its decode steps
                await drain(self.engine.generate(ctx, k, prefilled=rounds > 0))
                t1 = time.monotonic()
                draft_s.add((t1 - t0) / k if rounds else draft_s.value)
                body = {"session": session, "context": ctx, "draft": k, "alpha": self.alpha}
                limit = None
                if self.replace_after and answer_s is not None and replaced < spec.MAX_REPLACE:
                    limit = max(spec.REPLACE_MIN_S, self.replace_after * answer_s.value)
                try:
                    answer = await asyncio.wait_for(verify(http, body), timeout=limit)
                except TimeoutError:  # the verifier is swamped: leave it (its round is cancelled there)
                    await http.close()
                    http, replaced, answer_s = flow(), replaced + 1, None
                    self.metrics.spec_replaced.labels(self.model).inc()
                    t1 = time.monotonic()
                    answer = await verify(http, body)
                now = time.monotonic()
                answer_s = answer_s or spec.Ewma(now - t1)
                answer_s.add(now - t1)
                n = min(int(answer["accepted"]) + 1, n_max - made)
                if not verifiers or verifiers[-1] != answer.get("instance"):
                    verifiers.append(str(answer.get("instance", "")))
                rounds, drafted, taken = rounds + 1, drafted + k, taken + int(answer["accepted"])
                made, ctx = made + n, ctx + n
                info.update(rounds=rounds, drafted=drafted, accepted=taken, verifiers=verifiers, k=k)
                if replaced:
                    info["replaced"] = replaced
                for _ in range(n):
                    yield now
        finally:
            await http.close()

    # ---- cascade ---------------------------------------------------------------------------------------------
    async def _cascade(self, n_prompt: int, n_max: int, info: dict[str, Any], rid: str) -> Tokens:
        """The cascade role's tokens: this small model's, or, when its confidence (read at its first token) is
        below the threshold, the large model's behind escalate_url (a new flow: the network picks it)."""
        import aiohttp

        conf = cascade.confidence(rid)
        gen = self.engine.generate(n_prompt, n_max)
        async with contextlib.aclosing(gen):
            first = await gen.__anext__()
            if conf >= self.threshold:
                level = cascade.at_large_level(rid, self.profile.quality, self.large_quality, False)
                info.update(escalated=False, confidence=conf, answered_by=self.name, large_level=level)
                yield first
                async for t in gen:
                    yield t
                return
        self.metrics.escalations.labels(self.model).inc()  # the small model's answer is dropped here
        info.update(escalated=True, confidence=conf, large_level=True)
        conn = aiohttp.TCPConnector(force_close=True, ssl=self._tls(self.escalate_url))
        body = {"prompt": " ".join(["w"] * n_prompt), "max_tokens": n_max, "stream": True, "ignore_eos": True}
        async with (
            aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=300)) as http,
            http.post(f"{self.escalate_url}/v1/completions", json=body) as r,
        ):
            if r.status != 200:
                raise ConfigError(f"the large model refused the escalation: HTTP {r.status}")
            info["answered_by"] = r.headers.get("x-dinet-instance", "")
            try:  # the answer's level is the quality of the model that gave it (the VIP may pick any tier)
                q = float(r.headers.get("x-dinet-quality", self.large_quality))
            except ValueError:
                q = self.large_quality
            info["large_level"] = cascade.at_large_level(rid, q, self.large_quality, False)
            async for raw in r.content:  # server-sent events: one token a chunk, then the usage and [DONE]
                line = raw.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                if any(c.get("text") for c in json.loads(line[5:]).get("choices", [])):
                    yield time.monotonic()

    # ---- split inference -------------------------------------------------------------------------------------
    async def _split(self, n_prompt: int, n_max: int, info: dict[str, Any]) -> Tokens:
        """The split role's tokens: the first k layers here and the rest on the tail behind tail_url (k chosen
        from the measured path and tail, or fixed); all here when no split pays off or no tail answers."""
        import aiohttp

        p = self.profile
        if self.fixed_split is not None:
            k = self.fixed_split
        elif time.monotonic() < self._down_until:  # the tail did not answer: on premises until a probe does
            k = p.layers
        else:
            est = sp.bounded(self.est, list(self._inflight.values()), time.monotonic())
            k = sp.choose(p, n_prompt, n_max, est, self.floor)
        if k < p.layers:
            try:
                # an adaptive split gives up when the whole request would have been done on premises
                whole = sp.predict(p, p.layers, n_prompt, n_max, self.est) if self.fixed_split is None else None
                async for t in self._exchange(k, n_prompt, n_max, info, deadline=whole):
                    yield t
                return
            except (aiohttp.ClientError, OSError, TimeoutError, ConfigError) as e:
                if "split" in info:  # tokens already went out: the request fails
                    raise ConfigError(f"the tail went away: {e}") from None
                self.metrics.split_fallbacks.labels(self.model).inc()
                if not isinstance(e, TimeoutError):
                    self._down_until = time.monotonic() + sp.PROBE_S
                info["fallback"] = str(e)[:200] or "the first token was later than the whole request here"
        else:
            self._probe_later()
        self.metrics.split_local.labels(self.model).inc()
        info.update(split=p.layers, activation_bytes=0, tail="")
        async with contextlib.aclosing(self.engine.generate(n_prompt, n_max)) as gen:
            async for t in gen:
                yield t

    def _probe_later(self) -> None:
        """While no split pays off: a small split request now and then measures the path and the tail again."""
        if self.fixed_split is None and time.monotonic() - self._last_split >= sp.PROBE_S:
            if self._probe is None or self._probe.done():
                self._last_split = time.monotonic()
                self._probe = asyncio.get_running_loop().create_task(self._send_probe())

    async def _send_probe(self) -> None:
        import aiohttp

        self.metrics.split_probes.labels(self.model).inc()
        try:
            async for _ in self._exchange(self.floor, sp.PROBE_TOKENS, 2, {}):
                pass
            self._down_until = 0.0
        except (aiohttp.ClientError, OSError, TimeoutError, ConfigError):
            self._down_until = time.monotonic() + sp.PROBE_S

    async def _exchange(
        self, k: int, n_prompt: int, n_max: int, info: dict[str, Any], deadline: float | None = None
    ) -> Tokens:
        """One split request on its own WebSocket (one flow: the network picks the tail and keeps it): the
        prompt's activations after this side's k layers, then one token's activations per token; the tail
        answers each with its token and its time, from which the estimates learn. TimeoutError if the first
        token has not come back within `deadline` seconds of the upload's start."""
        import aiohttp

        p = self.profile
        head = self._heads.get(k)
        if head is None:
            head = self._heads[k] = Engine(sp.head_profile(p, k))
        session = uuid.uuid4().hex[:16]
        up, one = sp.activation_bytes(p.hidden, n_prompt), sp.activation_bytes(p.hidden, 1)
        await drain(head.generate(n_prompt, 1))  # this side's layers of the prompt
        payload = sp.activations(session, up)
        timeout = aiohttp.ClientTimeout(total=300, sock_connect=min(deadline or 10.0, 10.0))
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            # no permessage-deflate: the activations' bytes are the workload, on the wire as they are
            http.ws_connect(
                f"{self.tail_url}/dinet/v1/split", ssl=self._tls(self.tail_url), max_msg_size=0, compress=0
            ) as ws,
        ):
            start = {"session": session, "layers": p.layers, "hidden": p.hidden, "split": k}
            await ws.send_json(start | {"prompt": n_prompt, "max_tokens": n_max})
            t0 = time.monotonic()
            work = sp.tail_tokens(n_prompt, k, p.layers)
            self._inflight[session] = (t0, up, self.est.rtt_s + work * self.est.tail_prefill_s)

            async def upload() -> dict[str, Any]:
                for i in range(0, up, sp.CHUNK):
                    await ws.send_bytes(payload[i : i + sp.CHUNK])
                return await self._tail_answer(ws)

            try:  # a request whose upload outlasts the whole request on premises goes back there (_split)
                first = await asyncio.wait_for(upload(), timeout=deadline)
            except TimeoutError:
                self.est.slow_upload(up, time.monotonic() - t0)
                await self._abandon(ws)
                raise
            finally:
                del self._inflight[session]
            prefill_s, tail_prefill = time.monotonic() - t0, first["ms"] / 1000
            sent = up
            self.metrics.split_sent.labels(self.model).inc(up)
            info.update(split=k, tail=str(first.get("instance", "")), activation_bytes=sent)
            yield time.monotonic()
            token_s: list[float] = []
            tail_s: list[float] = []
            for i in range(1, n_max):
                await drain(head.generate(n_prompt + i, 1, prefilled=True))
                t1 = time.monotonic()
                self._inflight[session] = (t1, one, self.est.rtt_s + self.est.tail_step_s)
                try:
                    await ws.send_bytes(sp.activations(f"{session}:{i}", one))
                    answer = await self._tail_answer(ws)
                finally:
                    del self._inflight[session]
                now = time.monotonic()
                token_s.append(now - t1)
                tail_s.append(answer["ms"] / 1000)
                sent += one
                self.metrics.split_sent.labels(self.model).inc(one)
                info["activation_bytes"] = sent
                yield now
        self.est.update(up, one, prefill_s, tail_prefill, work, token_s, tail_s)
        self._last_split = time.monotonic()

    @staticmethod
    async def _abandon(ws: aiohttp.ClientWebSocketResponse) -> None:
        """Drops a split request's connection at once: what its upload left in the socket's buffers is
        discarded (a reset), not sent on over a slow uplink ahead of the other requests' tokens."""
        import socket
        import struct

        sock = ws.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(ws.close(), 0.2)  # cancelled, aiohttp closes the connection itself

    @staticmethod
    async def _tail_answer(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        import aiohttp

        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise aiohttp.ClientError(f"the tail closed the split request ({msg.type.name})")
        answer = json.loads(msg.data)
        if "error" in answer:
            raise ConfigError(f"the tail refused the split request: {answer['error']}")
        return dict(answer)

    async def split(self, request: web.Request) -> web.StreamResponse:
        """The tail of a split request (WebSocket): the prompt's activations at the cut, its layers' share of
        the prefill in this engine's batch, the first token; then per token one token's activations and a
        decode slot. A malformed request gets {"error": ...} and the socket closes."""
        import aiohttp

        if self.role != "both":
            return self._error(404, "this instance runs no tail of a split model (not a whole model server)")
        ws = web.WebSocketResponse(max_msg_size=sp.CHUNK + 1024, compress=False)
        await ws.prepare(request)
        p = self.profile

        async def activations(want: int) -> bool:
            got = 0
            while got < want:
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    return False  # the head hung up
                if msg.type != aiohttp.WSMsgType.BINARY:
                    raise ConfigError(f"activations are binary messages; got {msg.type.name} after {got} bytes")
                got += len(msg.data)
            if got != want:
                raise ConfigError(f"the activations are {want} bytes, not {got}")
            self.metrics.split_bytes.labels(self.model).inc(got)
            return True

        async def compute(tokens: int, prefilled: bool) -> float:
            t = time.monotonic()
            await drain(self.engine.generate(tokens, 1, prefilled=prefilled))
            return (time.monotonic() - t) * 1000

        try:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConfigError("a split request opens with a JSON object")
            try:
                opening = json.loads(msg.data)
            except (json.JSONDecodeError, RecursionError):
                raise ConfigError("a split request opens with a JSON object") from None
            _, k, n_prompt, n_max = sp.split_request(opening, p)
            if not await activations(sp.activation_bytes(p.hidden, n_prompt)):
                return ws
            ms = await compute(sp.tail_tokens(n_prompt, k, p.layers), False)
            await ws.send_json({"token": 0, "ms": ms, "instance": self.name})
            for i in range(1, n_max):
                if not await activations(sp.activation_bytes(p.hidden, 1)):
                    return ws
                ms = await compute(sp.tail_tokens(n_prompt + i, k, p.layers), True)
                await ws.send_json({"token": i, "ms": ms})
            self.metrics.split_sessions.labels(self.model).inc()
        except ConfigError as e:
            self.metrics.split_refused.labels(self.model).inc()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"error": str(e)})
        finally:
            await ws.close()
        return ws

    # ---- prefill-decode ------------------------------------------------------------------------------------
    async def _tokens(
        self, n_prompt: int, n_max: int, info: dict[str, Any], rid: str = "", prefix: tuple[bytes, ...] = ()
    ) -> Tokens:
        """The request's tokens: from this engine, or (prefill role) the first from here and the rest from
        the decode instance the KV cache was handed to, or (draft role) rounds verified by the target."""
        if self.role in ("draft", "cascade", "split"):
            if self.role == "cascade":
                stages = self._cascade(n_prompt, n_max, info, rid)
            else:
                stages = (self._speculate if self.role == "draft" else self._split)(n_prompt, n_max, info)
            async for t in stages:
                yield t
            return
        if self.role != "prefill":
            async with contextlib.aclosing(self.engine.generate(n_prompt, n_max, prefix=prefix, note=info)) as gen:
                async for t in gen:
                    yield t
            return
        async with contextlib.aclosing(self.engine.generate(n_prompt, 1)) as gen:  # prefill: the first token
            async for t in gen:
                yield t
        if n_max == 1:
            return
        import aiohttp

        if self._session is None:
            # a connection per hand-over: the network chooses the decode instance of each session (a pooled
            # connection would carry the next session to wherever the last one went)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=300),
                connector=aiohttp.TCPConnector(
                    force_close=True, ssl=self._tls(self.decode_url), socket_factory=marked_socket(self.kv_dscp)
                ),
            )
        size = n_prompt * self.profile.kv_bytes_per_token
        chunk = bytes(65536)

        async def kv_cache() -> AsyncGenerator[bytes, None]:  # the session's KV state, streamed (never whole)
            left = size
            while left > 0:
                yield chunk[: min(left, len(chunk))]
                left -= min(left, len(chunk))

        t0 = time.monotonic()
        headers = {
            "x-dinet-prompt-tokens": str(n_prompt),
            "x-dinet-max-tokens": str(n_max - 1),
            "x-dinet-kv-bytes": str(size),
            "Content-Type": "application/octet-stream",
        }
        async with self._session.post(f"{self.decode_url}/dinet/v1/kv", data=kv_cache(), headers=headers) as r:
            if r.status != 200:
                raise ConfigError(f"the decode stage refused the hand-over: HTTP {r.status} {await r.text()}")
            info.update(decode_instance=r.headers.get("x-dinet-instance", ""), kv_bytes=size)
            async for _line in r.content:
                info.setdefault("kv_ms", (time.monotonic() - t0) * 1000)  # the transfer and the first step
                yield time.monotonic()

    async def kv(self, request: web.Request) -> web.StreamResponse:
        """The decode role's hand-over: the KV cache of a prefilled prompt (its size must follow the prompt
        length and this model's profile), then one line per generated token."""
        if self.role != "decode":
            return self._error(404, "this instance takes no KV hand-over (not a decode instance)")
        try:
            n_prompt = int(request.headers["x-dinet-prompt-tokens"])
            n_max = int(request.headers["x-dinet-max-tokens"])
        except (KeyError, ValueError):
            return self._error(400, "x-dinet-prompt-tokens and x-dinet-max-tokens are required integers")
        want = n_prompt * self.profile.kv_bytes_per_token
        got = 0
        async for data in request.content.iter_chunked(1 << 16):
            got += len(data)
        if got != want:
            return self._error(400, f"a KV cache of {n_prompt} tokens is {want} bytes here, not {got}")
        try:
            tokens = self.engine.generate(n_prompt, n_max, prefilled=True)
        except ConfigError as e:
            return self._error(400, str(e))
        resp = web.StreamResponse(headers={**self._headers(), "Content-Type": "text/plain"})
        await resp.prepare(request)
        async with contextlib.aclosing(tokens):  # the prefill instance hung up: the session leaves the batch
            async for _ in tokens:
                await resp.write(b"t\n")
        await resp.write_eof()
        return resp

    def _headers(self) -> dict[str, str]:
        return {
            "x-dinet-instance": self.name,
            "x-dinet-tier": self.profile.tier,
            "x-dinet-model": self.model,
            "x-dinet-quality": str(self.profile.quality),
        }

    async def ttft(self, request: web.Request) -> web.Response:
        """The oracle's view (a debug endpoint, not vLLM's): the time to first token a request of
        ?prompt=N&max_tokens=M would see if it arrived now, from the engine's exact state. prompt may list up
        to 4 sizes (N1,N2,...): `by_prompt` holds each one's answer, `ttft_ms` the first's."""
        try:
            prompts = [int(x) for x in request.query.get("prompt", "128").split(",")]
            out = int(request.query.get("max_tokens", "64"))
        except ValueError:
            return self._error(400, "prompt (sizes, comma-separated) and max_tokens are integers")
        if not (1 <= len(prompts) <= 4 and all(1 <= p <= 10_000_000 for p in prompts) and 1 <= out <= 10_000_000):
            return self._error(400, "prompt is 1 to 4 sizes of 1..10,000,000; max_tokens 1..10,000,000")
        by = [[p, self.engine.ttft_if_added(p, out) * 1000] for p in prompts]
        return web.json_response({"ttft_ms": by[0][1], "by_prompt": by, "instance": self.name}, headers=self._headers())

    async def reset_prefix_cache(self, request: web.Request) -> web.Response:
        """vLLM's POST /reset_prefix_cache: the cached blocks no request holds are forgotten (an experiment's
        arms each start cold)."""
        self.engine.sched.reset_prefix_cache()
        return web.Response(text="OK")

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="", headers=self._headers())

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": self.model, "object": "model", "owned_by": "dinet", "root": self.model}]
        return web.json_response({"object": "list", "data": data}, headers=self._headers())

    async def prom(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), content_type="text/plain", charset="utf-8")

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response(
            {"object": "error", "message": message, "type": "BadRequestError", "code": status}, status=status
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError("the body is not JSON") from None
        except RecursionError:
            raise ConfigError("the body's JSON is nested too deeply") from None
        if not isinstance(body, dict):
            raise ConfigError("the body is not a JSON object")
        model = body.get("model", self.model)
        if model != self.model:
            raise ConfigError(f"the model `{model}` does not exist; this server has `{self.model}`")
        mt = body.get("max_tokens", body.get("max_completion_tokens", 16))
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            raise ConfigError(f"max_tokens must be a positive integer, not {mt!r}")
        return body

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = await self._body(request)
            if chat:
                msgs = body.get("messages")
                if not isinstance(msgs, list) or not msgs:
                    raise ConfigError("messages must be a non-empty list")
                prompt = " ".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
            else:
                p = body.get("prompt", "")
                prompt = " ".join(map(str, p)) if isinstance(p, list) else str(p)
            n_prompt, n_max = count_tokens(prompt), int(body.get("max_tokens", body.get("max_completion_tokens", 16)))
            if self.role == "decode":
                raise ConfigError("a decode instance takes requests from prefill instances only (/dinet/v1/kv)")
            if n_prompt + n_max > self.profile.max_model_len:
                raise ConfigError(
                    f"this model's maximum context length is {self.profile.max_model_len} tokens; the request asks"
                    f" for {n_prompt + n_max} ({n_prompt} in the prompt, {n_max} to generate)"
                )
            if n_prompt + n_max > self.profile.kv_tokens:
                raise ConfigError(f"{n_prompt} + {n_max} tokens exceed the KV cache ({self.profile.kv_tokens} tokens)")
            info: dict[str, Any] = {}
            # the request's own id where the client gave one (vLLM's X-Request-Id): seeds the cascade's draws
            rid = request.headers.get("x-request-id", "")[:128] or uuid.uuid4().hex
            prefix = block_hashes(prompt.split()) if self.engine.sched.prefix_caching else ()
            tokens = self._tokens(n_prompt, n_max, info, rid, prefix)
        except ConfigError as e:
            return self._error(400, str(e))
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        obj = "chat.completion" if chat else "text_completion"
        created = int(time.time())

        def envelope(choice: dict[str, Any], obj: str, n: int | None = None) -> dict[str, Any]:
            """An OpenAI response or stream chunk around one choice; with n: the usage (and dinet's notes)."""
            out = {"id": rid, "object": obj, "created": created, "model": self.model, "choices": [choice]}
            if n is not None:
                usage: dict[str, Any] = {
                    "prompt_tokens": n_prompt,
                    "completion_tokens": n,
                    "total_tokens": n_prompt + n,
                }
                notes = dict(info)
                if "cached_tokens" in notes:  # OpenAI's field for prompt tokens served from a cache
                    usage["prompt_tokens_details"] = {"cached_tokens": notes.pop("cached_tokens")}
                out["usage"] = usage
                if notes:
                    out["dinet"] = notes
            return out

        chunk_obj = obj + (".chunk" if chat else "")
        if body.get("stream"):
            resp = web.StreamResponse(
                headers={**self._headers(), "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await resp.prepare(request)
            n = 0
            async with contextlib.aclosing(tokens):  # a client that hangs up frees its place at once
                async for _ in tokens:
                    word = f" tok{n}"
                    choice = (
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": word} if n == 0 else {"content": word},
                            "finish_reason": None,
                        }
                        if chat
                        else {"index": 0, "text": word, "finish_reason": None}
                    )
                    n += 1
                    await resp.write(f"data: {json.dumps(envelope(choice, chunk_obj))}\n\n".encode())
            last: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            if chat:
                last["delta"] = {}
            else:
                last["text"] = ""
            end = envelope(last, chunk_obj, n)
            await resp.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
            return resp
        n = 0
        async with contextlib.aclosing(tokens):
            async for _ in tokens:
                n += 1
        text = "".join(f" tok{i}" for i in range(n))
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "length"}
        )
        return web.json_response(
            envelope(choice, obj, n),
            headers=self._headers(),
        )


def profile_of(name: str, kv_tokens: int | None = None, max_batch: int | None = None) -> Profile:
    """A shipped profile, with the capacity of the share of its GPUs this instance has where given."""
    try:
        p = PROFILES[name]
    except KeyError:
        raise ConfigError(f"no profile {name!r}; profiles: {', '.join(sorted(PROFILES))}") from None
    return replace(p, kv_tokens=kv_tokens or p.kv_tokens, max_batch=max_batch or p.max_batch)


async def open_site(
    app: web.Application, listen: str | list[str], tls: ssl.SSLContext | None = None, dscp: int | list[int] = 0
) -> web.AppRunner:
    """Serves `app` on HOST:PORT ("::" or nothing: every address of both families, which asyncio's "::" socket
    alone is not), over HTTPS with `tls` (an ssl context, creds.server_tls); ConfigError, with the runner
    cleaned up, if an address cannot be had. Several addresses: one app (one engine) answers on each.
    dscp: what its answers are marked with (the listening sockets are; the connections they accept inherit
    it), one for all addresses or one each."""
    listens = [listen] if isinstance(listen, str) else list(listen)
    dscps = [dscp] if isinstance(dscp, int) else list(dscp)
    if len(dscps) == 1:
        dscps *= len(listens)
    if not listens or len(dscps) != len(listens):
        raise ConfigError(f"{len(listens)} listening address(es) and {len(dscps)} DSCPs: give one DSCP, or one each")
    parsed = []
    for addr in listens:
        host, sep, port = addr.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--listen is HOST:PORT, not {addr!r}")
        parsed.append((addr, host.strip("[]"), int(port)))
    # a handler is cancelled when its client disconnects (its request then leaves the engine), and a stop
    # waits at most 2 s for what is still answering
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    for (addr, bind, number), mark in zip(parsed, dscps, strict=True):
        site = web.TCPSite(runner, None if bind in ("", "::") else bind, number, ssl_context=tls)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {addr}: {e.strerror}") from None
        if mark:
            server = getattr(site, "_server", None)  # aiohttp keeps the asyncio server private
            for sock in server.sockets if server else ():
                set_dscp(sock, mark)  # type: ignore[arg-type]
    return runner


def run(server: Server, listen: str | list[str], tls: tuple[str, str] | None = None, dscp: int | list[int] = 0) -> None:
    """Serves `server` until SIGINT/SIGTERM; prints `ready` once it listens. tls: (certificate, key) to serve
    HTTPS. Several addresses: one engine answers on each (one service per port), its answers marked with the
    DSCP given for that address (or the one given for all)."""
    from ..creds import server_tls

    ctx = server_tls(*tls) if tls else None
    scheme = "https" if ctx else "http"
    where = ", ".join(f"{scheme}://{x}" for x in ([listen] if isinstance(listen, str) else listen))
    serve_until_signal(
        server.app, listen, f"{server.name} serving {server.model} ({server.profile.tier}) on {where}", ctx, dscp
    )


def serve_until_signal(
    app: web.Application,
    listen: str | list[str],
    what: str,
    tls: ssl.SSLContext | None = None,
    dscp: int | list[int] = 0,
) -> None:
    """Serves `app` on each address until SIGINT/SIGTERM; prints `ready: WHAT` once it listens on all (what
    the lab waits for)."""

    async def main() -> None:
        runner = await open_site(app, listen, tls, dscp)
        print(f"ready: {what}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
