"""`dinet load`: an open-loop load generator on the OpenAI streaming API (any OpenAI-compatible server:
`dinet serve`, vLLM, ...). Arrivals are Poisson at a rate that may change over time (a schedule), or replay
a trace in the Azure LLM inference trace format (TIMESTAMP, ContextTokens, GeneratedTokens), or holds
multi-turn conversations (`turns`): conversations start Poisson, each turn's prompt is the conversation so far
(a system prompt shared by many, every earlier question and answer) and a new question, sent after the last
answer and a think time; each connection may carry the conversation's session key (a source port of its
group, or an IPv6 flow label: dinet.policy.session). Each request has a class: delay-sensitive (with TTFT
and TPOT SLOs) or delay-tolerant. Per request it records class, TTFT, TPOT, end-to-end time, tokens, the
serving instance and tier, the prompt tokens found in the server's prefix cache, and status, as JSON lines;
the summary per class gives p50/p90/p99, SLO attainment, goodput and the prefix-cache hit rate. Bounded in
count and time; Ctrl-C stops it cleanly with what it has."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import csv
import datetime
import errno
import json
import random
import signal
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..model import Slo
from ..netutil import marked_socket


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds from the start
    prompt_tokens: int
    max_tokens: int
    cls: str  # delay-sensitive or delay-tolerant


@dataclass
class Record:
    t: float
    cls: str
    status: str  # ok, http NNN, error: ...
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    instance: str = ""
    tier: str = ""
    offloaded: bool | None = None  # a device's request: sent to the network (True) or answered locally
    decode_instance: str = ""  # prefill-decode: the decode instance the network chose for the session
    kv_bytes: int = 0  # the KV cache handed over to it
    kv_ms: float | None = None  # from the hand-over's start to the decode instance's first token
    rounds: int = 0  # speculative decoding: rounds of drafted tokens verified across the network
    drafted: int = 0  # tokens drafted
    accepted: int = 0  # of which the target accepted
    replaced: int = 0  # speculative decoding: rounds the drafter sent again on a new flow (its verifier swamped)
    verifiers: str = ""  # the verifier instances in the order the rounds met them (one: the session stayed)
    escalated: bool | None = None  # cascade: passed to the large model
    confidence: float | None = None  # cascade: the small model's confidence in its answer
    answered_by: str = ""  # cascade: the instance whose answer the client got
    large_level: bool | None = None  # cascade: an answer as good as the large model's (the quality model)
    split_layers: int | None = None  # split inference: the layers run on premises (all of them: nothing crossed)
    activation_bytes: int = 0  # split inference: activation bytes sent across the network
    tail: str = ""  # split inference: the tail instance the network chose
    fallback: str = ""  # split inference: why a split request was computed on premises after all
    quality: float | None = None  # the answering model's quality (x-dinet-quality; the profile's)
    error: str = ""  # what went wrong, for a request that failed
    failed_ms: float | None = None  # when, from its start
    sent_s: float | None = None  # when it was sent, from the load's start (t is when it was due; a busy client lags)
    conversation: int | None = None  # multi-turn: the conversation and its turn (0 first)
    turn: int = 0
    cached_tokens: int | None = None  # prompt tokens the server found in its prefix cache (usage's details)
    session: str = ""  # the session key the connection carried: port NNNNN, label 0xNNNNN, or none


SESSION_KEYS = ("none", "port", "flow-label")


def conversation_group(seed: int, cid: int) -> int:
    """The session port group of a load's conversation: consecutive conversations on consecutive groups, the
    groups shifted by the seed (another load's conversations start on other groups)."""
    return seed * 97 + cid


@dataclass(frozen=True)
class Conversation:
    cid: int
    at: float  # its first question, seconds from the start
    cls: str
    system: int  # which system prompt
    questions: tuple[int, ...]  # words per question, one per turn
    answers: tuple[int, ...]  # tokens asked for per turn
    think: tuple[float, ...]  # seconds between an answer and the next question


# the session key of the connection being opened (the socket factory reads it): ("port", group, the port of
# the group to try first) or ("flow-label", label, 0); and what it did, for the record
_SESSION: contextvars.ContextVar[tuple[str, int, int] | None] = contextvars.ContextVar("dinet_session", default=None)
_SESSION_USED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("dinet_session_used", default=None)
IPV6_FLOWLABEL_MGR, IPV6_FLOWINFO_SEND = 32, 33  # linux/in6.h
IPV6_FL_A_GET, IPV6_FL_S_ANY, IPV6_FL_F_CREATE = 0, 255, 1


class _LabelledSocket(socket.socket):
    """An IPv6 socket whose connections carry a flow label the kernel was asked for (RFC 6437; Linux's
    flow label manager): connect() names it in the address, as the kernel takes it."""

    label = 0

    def _labelled(self, address: Any) -> tuple[str, int, int, int]:
        return (address[0], address[1], self.label, address[3] if len(address) > 3 else 0)

    def connect(self, address: Any) -> None:
        super().connect(self._labelled(address))

    def connect_ex(self, address: Any) -> int:
        return super().connect_ex(self._labelled(address))


def session_socket(addr_info: Any) -> socket.socket:
    """aiohttp's socket factory: a socket for the connection being opened, bound to a free port of its
    session's group (bind fails on a port in use or in TIME_WAIT: the next is tried; all taken: an ephemeral
    port, no key), or carrying its session's flow label (IPv6 only)."""
    from ..policy.session import session_ports

    family, type_, proto, _, address = addr_info
    key, used = _SESSION.get(), _SESSION_USED.get()
    if key is not None and key[0] == "flow-label" and family == socket.AF_INET6:
        sock: socket.socket = _LabelledSocket(family, type_, proto)
        label = key[1] & 0xFFFFF or 1
        # struct in6_flowlabel_req: the destination, the label, GET (created if new), shared with any socket (a
        # conversation's connections reuse it while the last one's lingers)
        req = socket.inet_pton(socket.AF_INET6, address[0]) + struct.pack("!I", label)
        req += struct.pack("=BBHHHI", IPV6_FL_A_GET, IPV6_FL_S_ANY, IPV6_FL_F_CREATE, 0, 0, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FLOWLABEL_MGR, req)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FLOWINFO_SEND, 1)
        sock.label = label  # type: ignore[attr-defined]
        if used is not None:
            used.append(f"label 0x{label:05x}")
        sock.setblocking(False)
        return sock
    sock = socket.socket(family, type_, proto)
    sock.setblocking(False)
    if key is not None and key[0] == "port":
        group = list(session_ports(key[1]))
        k = key[2] % len(group)  # each turn and each retry on another port first: a new flow, placed anew
        for port in group[k:] + group[:k]:
            try:
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                continue
            if used is not None:
                used.append(f"port {port}")
            break
        else:
            if used is not None:
                used.append("none: its ports were taken")
    return sock


def poisson(schedule: list[tuple[float, float]], duration: float, rng: random.Random) -> Iterator[float]:
    """Arrival times of a Poisson process whose rate is schedule[i][1] from time schedule[i][0] on."""
    steps = sorted(schedule)
    if not steps or steps[0][0] > 0:
        raise ConfigError("a schedule starts at time 0: [(0, rate), (t, rate), ...]")
    t, k = 0.0, 0
    while True:
        while k + 1 < len(steps) and t >= steps[k + 1][0]:
            k += 1
        rate = steps[k][1]
        if rate <= 0:
            if k + 1 >= len(steps):
                return
            t = steps[k + 1][0]
            continue
        t += rng.expovariate(rate)
        if k + 1 < len(steps) and t >= steps[k + 1][0]:  # the rate changed before this arrival
            t = steps[k + 1][0]
            continue
        if t >= duration:
            return
        yield t


def parse_schedule(text: str) -> list[tuple[float, float]]:
    """'0:5,10:20' -> [(0, 5), (10, 20)]: 5 requests/s from 0 s, 20/s from 10 s."""
    out = []
    for part in text.split(","):
        try:
            at, rate = part.split(":")
            out.append((float(at), float(rate)))
        except ValueError:
            raise ConfigError(f"a schedule is TIME:RATE[,TIME:RATE...] (e.g. 0:5,10:20), not {text!r}") from None
    return out


def azure_trace(path: Path, limit: int | None = None) -> list[tuple[float, int, int]]:
    """(seconds from the first request, context tokens, generated tokens) from an Azure LLM inference trace
    (CSV: TIMESTAMP, ContextTokens, GeneratedTokens)."""
    rows = []
    try:
        with path.open(newline="") as f:
            for k, row in enumerate(csv.DictReader(f)):
                if limit is not None and k >= limit:
                    break
                ts = row["TIMESTAMP"].strip()
                try:
                    at = datetime.datetime.fromisoformat(ts[:26].rstrip("Z")).timestamp()
                except ValueError:
                    at = float(ts)
                rows.append((at, int(row["ContextTokens"]), int(row["GeneratedTokens"])))
    except OSError as e:
        raise ConfigError(f"cannot read the trace {path}: {e.strerror}") from None
    except (KeyError, ValueError) as e:
        raise ConfigError(
            f"{path}: not an Azure LLM inference trace (TIMESTAMP, ContextTokens, GeneratedTokens): {e}"
        ) from None
    if not rows:
        raise ConfigError(f"{path}: the trace is empty")
    t0 = min(r[0] for r in rows)
    return sorted((r[0] - t0, r[1], r[2]) for r in rows)


@dataclass
class LoadSpec:
    url: str  # the server's base, e.g. http://10.99.0.1:8000
    duration: float = 10.0
    schedule: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 5.0)])
    max_requests: int = 10_000
    prompt_tokens: tuple[int, int] = (64, 256)
    max_tokens: tuple[int, int] = (16, 64)
    sensitive_share: float = 0.5
    slo: Slo = field(default_factory=lambda: Slo(500.0, 100.0))
    model: str | None = None
    seed: int = 1
    timeout: float = 60.0
    trace: Path | None = None
    # a device with a model of its own (cloud-edge-device): it answers locally when the network does not
    # pay off, as the controller's metrics say (dinet.workload.device)
    local_url: str | None = None
    offload_view: str | None = None  # the controller's Prometheus endpoint
    offload_node: str = "0"
    offload_max_rtt_ms: float = 20.0
    start_at: float | None = None  # a wall-clock (Unix) time to start at: loads and events share one clock
    # a per-request picker at the client instead of the VIP (the baselines of dinet.workload.pickers)
    pick: str = ""
    endpoints: tuple[str, ...] = ()  # the instances' URLs it picks from
    ca: str | None = None  # the CA that signs an https server's certificate (default: the system's)
    # multi-turn conversations: turns per conversation (1: single requests as above), a system prompt of
    # `system_tokens` words shared by the conversations that draw the same of `system_prompts`, the mean think
    # time between an answer and the next question, and the session key each connection carries
    turns: tuple[int, int] = (1, 1)
    system_tokens: int = 0
    system_prompts: int = 1
    think_s: float = 1.0
    session_key: str = "none"  # none, port (a source port of the conversation's group), flow-label (IPv6)
    dscp: int = 0  # what its requests are marked with (dinet_consts.h DINET_DSCP_*: the service's class)

    @property
    def chat(self) -> bool:
        return self.turns[1] > 1 or self.system_tokens > 0

    def conversations(self) -> list[Conversation]:
        """Conversation mode: when each starts (Poisson at the schedule's rate), its turns, questions' and
        answers' lengths, system prompt and think times, all from the seed."""
        if self.session_key not in SESSION_KEYS:
            raise ConfigError(f"a session key is one of {', '.join(SESSION_KEYS)}, not {self.session_key!r}")
        if not 1 <= self.turns[0] <= self.turns[1]:
            raise ConfigError(f"turns is MIN-MAX with 1 <= MIN <= MAX, not {self.turns}")
        rng = random.Random(self.seed)
        out: list[Conversation] = []
        for at in poisson(self.schedule, self.duration, rng):
            if len(out) >= self.max_requests:
                break
            n = rng.randint(*self.turns)
            cls = "delay-sensitive" if rng.random() < self.sensitive_share else "delay-tolerant"
            out.append(
                Conversation(
                    len(out),
                    at,
                    cls,
                    rng.randrange(max(1, self.system_prompts)),
                    tuple(rng.randint(*self.prompt_tokens) for _ in range(n)),
                    tuple(rng.randint(*self.max_tokens) for _ in range(n)),
                    tuple(rng.expovariate(1 / self.think_s) if self.think_s > 0 else 0.0 for _ in range(n)),
                )
            )
        return out

    def arrivals(self) -> list[Arrival]:
        rng = random.Random(self.seed)
        cls = lambda: "delay-sensitive" if rng.random() < self.sensitive_share else "delay-tolerant"  # noqa: E731
        if self.trace is not None:
            rows = [r for r in azure_trace(self.trace, self.max_requests) if r[0] < self.duration]
            return [Arrival(at, max(1, p), max(1, g), cls()) for at, p, g in rows]
        out: list[Arrival] = []
        for at in poisson(self.schedule, self.duration, rng):
            if len(out) >= self.max_requests:
                break
            out.append(Arrival(at, rng.randint(*self.prompt_tokens), rng.randint(*self.max_tokens), cls()))
        return out


async def _one(
    session: Any,
    spec: LoadSpec,
    a: Arrival,
    messages: list[dict[str, str]] | None = None,
    text: list[str] | None = None,
) -> Record:
    """One request: a completion of a.prompt_tokens words, or (messages) a chat turn whose answer's text is
    appended to `text`."""
    import aiohttp

    body: dict[str, Any] = {
        "max_tokens": a.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    if messages is None:
        body["prompt"] = " ".join(["w"] * a.prompt_tokens)
    else:
        body["messages"] = messages
    if spec.model:
        body["model"] = spec.model
    rec = Record(round(a.at, 4), a.cls, "ok", a.prompt_tokens)
    start = time.monotonic()
    first = last = None
    n = 0
    try:
        # a request id from the seed and the arrival (vLLM's X-Request-Id): a server's per-request draws (a
        # cascade's confidence) are then the same in every run of the same load
        rid = {"x-request-id": f"load-{spec.seed}-{a.at:.6f}"}
        path = "/v1/completions" if messages is None else "/v1/chat/completions"
        async with session.post(f"{spec.url}{path}", json=body, headers=rid) as resp:
            rec.instance = resp.headers.get("x-dinet-instance", "")
            rec.tier = resp.headers.get("x-dinet-tier", "")
            with contextlib.suppress(TypeError, ValueError):
                rec.quality = float(resp.headers.get("x-dinet-quality"))  # type: ignore[arg-type]
            if resp.status != 200:
                rec.status = f"http {resp.status}"
                return rec
            async for raw in resp.content:  # server-sent events, one per line
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                msg = json.loads(data)
                if msg.get("usage"):
                    rec.prompt_tokens = msg["usage"].get("prompt_tokens", rec.prompt_tokens)
                    details = msg["usage"].get("prompt_tokens_details") or {}
                    if isinstance(details.get("cached_tokens"), int):
                        rec.cached_tokens = details["cached_tokens"]
                    handed = msg.get("dinet") or {}  # a prefill instance's notes on the hand-over
                    rec.decode_instance = str(handed.get("decode_instance", ""))
                    rec.kv_bytes = int(handed.get("kv_bytes", 0))
                    rec.kv_ms = round(float(handed["kv_ms"]), 3) if "kv_ms" in handed else None
                    rec.rounds, rec.drafted = int(handed.get("rounds", 0)), int(handed.get("drafted", 0))
                    rec.accepted = int(handed.get("accepted", 0))
                    rec.verifiers = ",".join(map(str, handed.get("verifiers", [])))
                    rec.replaced = int(handed.get("replaced", 0))
                    if "escalated" in handed:
                        rec.escalated, rec.large_level = bool(handed["escalated"]), bool(handed["large_level"])
                        rec.answered_by = str(handed.get("answered_by", ""))
                        rec.confidence = float(handed.get("confidence", 0.0))
                    if "split" in handed:
                        rec.split_layers, rec.tail = int(handed["split"]), str(handed.get("tail", ""))
                        rec.activation_bytes = int(handed.get("activation_bytes", 0))
                        rec.fallback = str(handed.get("fallback", ""))
                for ch in msg.get("choices", []):
                    if ch.get("text") or (ch.get("delta") or {}).get("content"):
                        if text is not None:
                            text.append(ch.get("text") or ch["delta"]["content"])
                        now = time.monotonic()
                        first = first or now
                        last = now
                        n += 1
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as e:
        rec.status = f"error: {type(e).__name__}"
        rec.error = str(e)[:200]
        rec.failed_ms = round((time.monotonic() - start) * 1000, 3)
        return rec
    end = time.monotonic()
    rec.completion_tokens = n
    rec.e2e_ms = (end - start) * 1000
    if first is not None:
        rec.ttft_ms = (first - start) * 1000
        if n > 1 and last is not None:
            rec.tpot_ms = (last - first) * 1000 / (n - 1)
    return rec


async def run_load(spec: LoadSpec, out: Path | None = None, progress: bool = True) -> list[Record]:
    """Sends the spec's arrivals open-loop (each at its time, whatever the earlier ones are doing)."""
    import aiohttp
    from tqdm import tqdm

    convs = spec.conversations() if spec.chat else []
    arrivals = [] if spec.chat else spec.arrivals()
    records: list[Record] = []
    total = sum(len(c.questions) for c in convs) if spec.chat else len(arrivals)
    bar = tqdm(total=total, unit="req", disable=not progress, desc="dinet load")
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    from ..creds import client_tls

    tls = client_tls(spec.ca) if spec.ca else True  # https: the server's certificate and name are checked
    # a connection per request: a new flow each; a conversation's connections carry its session key
    factory = marked_socket(spec.dscp, session_socket if spec.session_key != "none" else None)
    conn = aiohttp.TCPConnector(limit=0, force_close=True, ssl=tls, socket_factory=factory)
    async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
        chooser = None
        if spec.pick:  # its first view of every endpoint before the clock starts, then polled meanwhile
            from .pickers import picker

            chooser = picker(spec.pick, list(spec.endpoints))
            await chooser.start(session)
        if spec.start_at is not None and spec.start_at > time.time():
            await asyncio.sleep(spec.start_at - time.time())
        t0 = time.monotonic()
        lag0 = max(0.0, time.time() - spec.start_at) if spec.start_at is not None else 0.0  # started late

        view = None
        if spec.local_url and spec.offload_view:
            from .device import OffloadView

            svc = f"{spec.url.split('//', 1)[-1]}/tcp"
            view = OffloadView(spec.offload_view, svc, spec.offload_node, spec.offload_max_rtt_ms)

        async def fire(a: Arrival) -> None:
            delay = t0 + a.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = round(time.monotonic() - t0 + lag0, 4)
            if chooser is not None:
                url = await chooser.pick(session, a.prompt_tokens, a.max_tokens)
                rec = await _one(session, replace(spec, url=url), a)
            elif view is None:
                rec = await _one(session, spec, a)
            else:
                offload = await view.pays_off(session)
                rec = await _one(session, spec if offload else replace(spec, url=str(spec.local_url)), a)
                rec.offloaded = offload
            rec.sent_s = sent
            records.append(rec)
            bar.update(1)

        async def converse(c: Conversation) -> None:
            """Its turns one after another: each question after the last answer and a think time; each turn's
            prompt the whole conversation so far."""
            delay = t0 + c.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            system = " ".join(f"s{c.system}w{i}" for i in range(spec.system_tokens))
            messages = [{"role": "system", "content": system}] if system else []
            # the conversation's group of session ports (conversations spread over the groups) or its label
            label = (spec.seed * 7919 + c.cid) % 0xFFFFF + 1
            tries = 0  # connections the conversation opened: the next one starts on the group's next port
            for turn, (words, answer) in enumerate(zip(c.questions, c.answers, strict=True)):
                question = " ".join(f"c{c.cid}t{turn}w{i}" for i in range(words))
                messages.append({"role": "user", "content": question})
                # a turn whose answer did not come is asked again, as a user or a client library would: after
                # the think time, then twice that, then give up
                for attempt in range(3):
                    at = time.monotonic() - t0
                    if (turn or attempt) and at >= spec.duration:  # no question after the load's end
                        return
                    prompt = sum(len(m["content"].split()) for m in messages)
                    text: list[str] = []
                    used: list[str] = []
                    group = conversation_group(spec.seed, c.cid)
                    key = ("port", group, tries) if spec.session_key == "port" else ("flow-label", label, 0)
                    tries += 1
                    token_key = _SESSION.set(key if spec.session_key != "none" else None)
                    token_used = _SESSION_USED.set(used)
                    try:
                        rec = await _one(session, spec, Arrival(at, prompt, answer, c.cls), messages, text)
                    finally:
                        _SESSION.reset(token_key)
                        _SESSION_USED.reset(token_used)
                    rec.conversation, rec.turn, rec.session = c.cid, turn, used[0] if used else "none"
                    records.append(rec)
                    bar.update(1)
                    if rec.status == "ok":
                        break
                    await asyncio.sleep(c.think[turn] * 2**attempt)
                else:
                    return  # three times without an answer: the conversation ends there
                messages.append({"role": "assistant", "content": "".join(text).strip()})
                await asyncio.sleep(c.think[turn])

        tasks = [asyncio.create_task(converse(c)) for c in convs]
        tasks += [asyncio.create_task(fire(a)) for a in arrivals]
        loop = asyncio.get_running_loop()
        try:  # Ctrl-C: stop sending, keep what came back
            loop.add_signal_handler(signal.SIGINT, lambda: [t.cancel() for t in tasks])
        except (RuntimeError, ValueError):  # not the main thread
            pass
        await asyncio.gather(*tasks, return_exceptions=True)
        if chooser is not None:
            await chooser.stop()
    bar.close()
    records.sort(key=lambda r: r.t)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
    return records


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(records: list[Record], slo: Slo, duration: float) -> dict[str, Any]:
    """Per class: requests, errors, TTFT/TPOT/e2e p50/p90/p99 (ms), SLO attainment (the share of requests
    meeting both TTFT and TPOT SLOs; delay-tolerant: all that finished), goodput (such requests per s)."""
    out: dict[str, Any] = {}
    for cls in sorted({r.cls for r in records}):
        rs = [r for r in records if r.cls == cls]
        ok = [r for r in rs if r.status == "ok"]
        row: dict[str, Any] = {"requests": len(rs), "errors": len(rs) - len(ok)}
        for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
            vals = [getattr(r, key) for r in ok if getattr(r, key) is not None]
            for p in (50, 90, 99):
                row[f"{key.removesuffix('_ms')}_p{p}_ms"] = _pct(vals, p)
        if cls == "delay-sensitive":
            good = [
                r
                for r in ok
                if r.ttft_ms is not None
                and r.ttft_ms <= slo.ttft_ms
                and (r.tpot_ms is None or r.tpot_ms <= slo.tpot_ms)
            ]
        else:
            good = ok
        row["slo_attainment"] = len(good) / len(rs) if rs else None
        row["goodput_rps"] = len(good) / duration if duration > 0 else None
        row["tokens_per_s"] = sum(r.completion_tokens for r in ok) / duration if duration > 0 else None
        looked = [r for r in ok if r.cached_tokens is not None]
        if looked:  # the share of prompt tokens the servers found in their prefix caches
            row["prefix_hit_rate"] = sum(r.cached_tokens or 0 for r in looked) / max(
                1, sum(r.prompt_tokens for r in looked)
            )
        row["instances"] = dict(
            sorted({i: sum(1 for r in ok if r.instance == i) for i in {r.instance for r in ok}}.items())
        )
        out[cls] = row
    return out


def main(spec: LoadSpec, out: Path | None, progress: bool = True) -> dict[str, Any]:
    records = asyncio.run(run_load(spec, out, progress))
    return {
        "spec": {
            "url": spec.url,
            "duration": spec.duration,
            "schedule": spec.schedule,
            "seed": spec.seed,
            "slo": asdict(spec.slo),
        }
        | (
            {"turns": spec.turns, "system_tokens": spec.system_tokens, "session_key": spec.session_key}
            if spec.chat
            else {}
        ),
        "classes": summary(records, spec.slo, spec.duration),
    }
