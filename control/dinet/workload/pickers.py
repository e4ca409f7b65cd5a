"""Per-request endpoint pickers at the client: the baselines dinet's per-flow steering is compared with.

- least-queue: as the Gateway API Inference Extension's endpoint picker and llm-d's scheduler do at L7, each
  request goes to the instance with the fewest waiting requests, then the least KV cache in use, from every
  instance's `/metrics` scraped every 50 ms (their default refresh). Run at the client, so no proxy hop counts
  against it.
- oracle: each request goes to the instance where it would see the lowest time to first token given every
  engine's state (`dinet serve`'s debug endpoint /dinet/v1/ttft, which runs the engine's own schedule
  forward, for two request sizes: the request's own is placed between them) plus the round trip to it, both
  polled back to back from every engine in the background. Near an
  upper bound at arrival: it knows each engine's schedule exactly (as fresh as the path allows), though not
  the arrivals still to come nor what the tokens after the first will take."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .engine import TTFT_LIMIT_S
from .metrics_agent import NAMES, parse

log = logging.getLogger(__name__)

PICKS = ("least-queue", "oracle")


def _first(values: dict[str, float], key: str) -> float:
    return next((values[n] for n in NAMES[key] if n in values), 0.0)


@dataclass
class _Poller:
    """Polls every endpoint in a loop of its own (a far one never holds up a near one), keeping what each
    last answered; an endpoint that fails `drop_after` times in a row is no candidate until it answers."""

    endpoints: list[str]
    interval: float = 0.05
    timeout: float = 5.0
    drop_after: int = 3
    state: dict[str, Any] = field(default_factory=dict)
    failures: int = 0
    _misses: dict[str, int] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, session: Any, first_view_s: float = 1.0) -> None:
        """Starts polling; returns once every endpoint answered once, or after `first_view_s`."""
        self._tasks = [asyncio.create_task(self._loop(session, ep)) for ep in self.endpoints]
        deadline = time.monotonic() + first_view_s
        while len(self.state) < len(self.endpoints) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self, session: Any, ep: str) -> None:
        while True:
            await self._poll(session, ep)
            await asyncio.sleep(self.interval)

    async def _poll(self, session: Any, ep: str) -> None:
        import aiohttp

        try:
            value = await self.query(session, ep, aiohttp.ClientTimeout(total=self.timeout))
        except (TimeoutError, aiohttp.ClientError, ConfigError, KeyError, ValueError):
            self.failures += 1
            self._misses[ep] = self._misses.get(ep, 0) + 1
            if self._misses[ep] >= self.drop_after:
                self.state.pop(ep, None)
            return
        self._misses[ep] = 0
        self.state[ep] = value

    async def query(self, session: Any, ep: str, timeout: Any) -> Any:
        raise NotImplementedError

    def best(self, key: Any, rng: random.Random) -> str:
        live = [ep for ep in self.endpoints if ep in self.state] or self.endpoints
        scores = {ep: key(self.state[ep]) if ep in self.state else float("inf") for ep in live}
        low = min(scores.values())
        return rng.choice([ep for ep in live if scores[ep] == low])


@dataclass
class LeastQueue(_Poller):
    """Fewest waiting requests, then the least KV cache in use, from each endpoint's /metrics."""

    rng: random.Random = field(default_factory=lambda: random.Random(1))

    async def query(self, session: Any, ep: str, timeout: Any) -> tuple[float, float]:
        async with session.get(f"{ep}/metrics", timeout=timeout) as r:
            values = parse(await r.text())
        return _first(values, "waiting"), _first(values, "kv")

    async def pick(self, session: Any, prompt_tokens: int, max_tokens: int) -> str:
        return self.best(lambda s: s, self.rng)


REFERENCE_PROMPTS = (128, 2048)  # the two request sizes the oracle asks each engine about
LIMIT_MS = TTFT_LIMIT_S * 1000  # an engine's answer for a request that would not start there


def ttft_for(points: list[tuple[int, float]], prompt: int) -> float:
    """The TTFT (ms) of a request of `prompt` tokens from an engine's answers for two reference sizes: the
    line through them (the wait before a prefill starts is the same for both, the prefill grows with the
    prompt), never below the smaller one's; the smaller one's alone if the larger could not run there."""
    (p0, t0), (p1, t1) = points
    if t1 >= LIMIT_MS or p1 == p0:
        return t0
    return max(t0, t0 + (t1 - t0) * (prompt - p0) / (p1 - p0))


@dataclass
class Oracle(_Poller):
    """The lowest TTFT each engine's own schedule gives this request now, plus the round trip to it. Every
    20 ms each engine is asked what a request of 128 and one of 2,048 prompt tokens (32 output) would see
    (as fresh as each path allows); a request's own size is placed on the line through the two (ttft_for):
    a small model on a slow GPU close by wins short prompts and loses long ones to a fast one further off."""

    interval: float = 0.02
    rng: random.Random = field(default_factory=lambda: random.Random(1))

    async def query(self, session: Any, ep: str, timeout: Any) -> tuple[list[tuple[int, float]], float]:
        t0 = time.monotonic()
        prompts = ",".join(str(p) for p in REFERENCE_PROMPTS)
        async with session.get(
            f"{ep}/dinet/v1/ttft", params={"prompt": prompts, "max_tokens": "32"}, timeout=timeout
        ) as r:
            by = (await r.json())["by_prompt"]
        points = [(int(p), float(ms)) for p, ms in by]
        return points, (time.monotonic() - t0) * 1000

    async def pick(self, session: Any, prompt_tokens: int, max_tokens: int) -> str:
        return self.best(lambda s: ttft_for(s[0], prompt_tokens) + s[1], self.rng)


def picker(kind: str, endpoints: list[str]) -> LeastQueue | Oracle:
    if kind not in PICKS:
        raise ConfigError(f"a picker is one of {', '.join(PICKS)}, not {kind!r}")
    if not endpoints:
        raise ConfigError(f"--pick {kind} needs the instances' URLs (--endpoint URL, once each)")
    eps = [e.rstrip("/") for e in endpoints]
    return LeastQueue(eps) if kind == "least-queue" else Oracle(eps)
