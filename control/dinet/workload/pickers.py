"""Per-request endpoint pickers at the client: the baselines dinet's per-flow steering is compared with.

- least-queue: as the Gateway API Inference Extension's endpoint picker and llm-d's scheduler do at L7, each
  request goes to the instance with the fewest waiting requests, then the least KV cache in use, from every
  instance's `/metrics` scraped every 50 ms (their default refresh). Run at the client, so no proxy hop counts
  against it.
- oracle: each request goes to the instance where it would see the lowest time to first token given every
  engine's exact state at that moment (`dinet serve`'s debug endpoint /dinet/v1/ttft, which runs the
  engine's own schedule forward) plus the round trip to it, measured by that very query. An upper bound no
  deployable picker reaches: the query's own time is not counted in the request's TTFT."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .metrics_agent import NAMES, parse

log = logging.getLogger(__name__)

PICKS = ("least-queue", "oracle")


def _first(values: dict[str, float], key: str) -> float:
    return next((values[n] for n in NAMES[key] if n in values), 0.0)


@dataclass
class LeastQueue:
    """Scrapes every endpoint's /metrics every `interval` s (in the background) and picks by (waiting, KV)."""

    endpoints: list[str]
    interval: float = 0.05
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    state: dict[str, tuple[float, float]] = field(default_factory=dict)  # endpoint -> (waiting, kv use)
    failures: int = 0
    _task: asyncio.Task[None] | None = None

    async def start(self, session: Any) -> None:
        await self._scrape_all(session)
        self._task = asyncio.create_task(self._loop(session))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self, session: Any) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._scrape_all(session)

    async def _scrape_all(self, session: Any) -> None:
        await asyncio.gather(*(self._scrape(session, ep) for ep in self.endpoints))

    async def _scrape(self, session: Any, ep: str) -> None:
        import aiohttp

        try:
            async with session.get(f"{ep}/metrics", timeout=aiohttp.ClientTimeout(total=1.0)) as r:
                values = parse(await r.text())
        except (TimeoutError, aiohttp.ClientError, ConfigError):
            self.failures += 1
            self.state.pop(ep, None)  # not answering: not a candidate until it does
            return
        self.state[ep] = (_first(values, "waiting"), _first(values, "kv"))

    async def pick(self, session: Any, prompt_tokens: int, max_tokens: int) -> str:
        live = [ep for ep in self.endpoints if ep in self.state] or self.endpoints
        best = min(self.state.get(ep, (0.0, 0.0)) for ep in live)
        return self.rng.choice([ep for ep in live if self.state.get(ep, (0.0, 0.0)) == best])


@dataclass
class Oracle:
    """Asks every endpoint what TTFT a request would see there now; picks the lowest with the round trip."""

    endpoints: list[str]
    failures: int = 0

    async def start(self, session: Any) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def _ask(self, session: Any, ep: str, prompt_tokens: int, max_tokens: int) -> float:
        import aiohttp

        t0 = time.monotonic()
        try:
            async with session.get(
                f"{ep}/dinet/v1/ttft",
                params={"prompt": str(prompt_tokens), "max_tokens": str(max_tokens)},
                timeout=aiohttp.ClientTimeout(total=2.0),
            ) as r:
                ttft_ms = float((await r.json())["ttft_ms"])
        except (TimeoutError, aiohttp.ClientError, KeyError, ValueError):
            self.failures += 1
            return float("inf")
        return ttft_ms + (time.monotonic() - t0) * 1000

    async def pick(self, session: Any, prompt_tokens: int, max_tokens: int) -> str:
        guesses = await asyncio.gather(*(self._ask(session, ep, prompt_tokens, max_tokens) for ep in self.endpoints))
        return min(zip(guesses, self.endpoints, strict=True))[1]


def picker(kind: str, endpoints: list[str]) -> LeastQueue | Oracle:
    if kind not in PICKS:
        raise ConfigError(f"a picker is one of {', '.join(PICKS)}, not {kind!r}")
    if not endpoints:
        raise ConfigError(f"--pick {kind} needs the instances' URLs (--endpoint URL, once each)")
    eps = [e.rstrip("/") for e in endpoints]
    return LeastQueue(eps) if kind == "least-queue" else Oracle(eps)
