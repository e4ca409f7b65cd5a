"""`dinet route`: an L7 prefix-aware router, the baseline that dinet's session-affine steering is measured
against. It does what the field's routers do in a proxy (llm-d's scheduler with its prefix-cache scorer, the
vLLM production-stack router, SGLang's cache-aware router): it reads every request, names its prompt's blocks
with the engine's own chain of block hashes (dinet.workload.engine.block_hashes: the same words, the same
blocks), and sends it to the backend that holds the longest run of its leading blocks, as far as the router
knows: an index of the blocks it sent where (least recently used first out, `index_blocks` per backend), not
the engines' caches themselves. A load guard keeps it from flooding one backend: when the best match has more
than `guard` requests in flight beyond the least loaded backend, the least loaded takes the request (SGLang's
balance threshold; llm-d weighs a queue scorer in). With no match anywhere: the least loaded. The answer is
streamed back as it comes; a backend that does not answer is counted, left out for `cool_s` and the request
tried on the next. Its hop and its parse are what it costs: it runs in the lab where a gateway would."""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from ..errors import ConfigError
from .engine import block_hashes

log = logging.getLogger(__name__)

PATHS = ("/v1/completions", "/v1/chat/completions")


def prompt_words(body: dict[str, Any], chat: bool) -> list[str]:
    """The prompt's words as `dinet serve` counts them (a chat's contents joined)."""
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list):
            raise ConfigError("messages must be a list")
        return " ".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict)).split()
    p = body.get("prompt", "")
    return (" ".join(map(str, p)) if isinstance(p, list) else str(p)).split()


class PrefixIndex:
    """Which backend holds which blocks, as the router sent them: per backend, the blocks' hashes, least
    recently used first; pure (no I/O), so the choice can be tested on its own."""

    def __init__(self, backends: int, index_blocks: int = 100_000, guard: int = 4):
        if backends < 1:
            raise ConfigError("a router needs at least one backend")
        if guard < 0:
            raise ConfigError(f"the load guard is a number of requests (>= 0), not {guard}")
        self.held: list[OrderedDict[bytes, None]] = [OrderedDict() for _ in range(backends)]
        self.index_blocks, self.guard = index_blocks, guard

    def matched(self, b: int, hashes: tuple[bytes, ...]) -> int:
        n = 0
        for h in hashes:
            if h not in self.held[b]:
                break
            n += 1
        return n

    def choose(self, hashes: tuple[bytes, ...], in_flight: list[int], usable: list[bool]) -> tuple[int, int]:
        """(backend, its matched blocks): the longest match among the usable backends (the less loaded on a
        tie), unless it is `guard` requests busier than the least loaded: then that one."""
        live = [b for b in range(len(self.held)) if usable[b]] or list(range(len(self.held)))
        least = min(live, key=lambda b: (in_flight[b], b))
        best = max(live, key=lambda b: (self.matched(b, hashes), -in_flight[b], -b))
        m = self.matched(best, hashes)
        if m == 0 or in_flight[best] - in_flight[least] > self.guard:
            return least, self.matched(least, hashes)
        return best, m

    def sent(self, b: int, hashes: tuple[bytes, ...]) -> None:
        held = self.held[b]
        for h in hashes:
            held[h] = None
            held.move_to_end(h)
        while len(held) > self.index_blocks:
            held.popitem(last=False)


class Router:
    def __init__(
        self,
        backends: list[str],
        guard: int = 4,
        index_blocks: int = 100_000,
        ca: str | None = None,
        cool_s: float = 2.0,
    ):
        self.backends = [b.rstrip("/") for b in backends]
        self.index = PrefixIndex(len(self.backends), index_blocks, guard)
        self.in_flight = [0] * len(self.backends)
        self.down_until = [0.0] * len(self.backends)
        self.ca, self.cool_s = ca, cool_s
        self._session: Any = None
        r = self.registry = CollectorRegistry()
        self.requests = Counter("dinet_router_requests", "Requests sent to a backend", ["backend"], registry=r)
        self.matched = Counter("dinet_router_matched_blocks", "Prompt blocks the chosen backend held", registry=r)
        self.blocks = Counter("dinet_router_prompt_blocks", "Prompt blocks routed", registry=r)
        self.guarded = Counter("dinet_router_guarded", "Requests the load guard sent past their best match", registry=r)
        self.failures = Counter(
            "dinet_router_backend_failures", "Backends that did not answer", ["backend"], registry=r
        )
        self.active = Gauge("dinet_router_in_flight", "Requests in flight", ["backend"], registry=r)
        for k, b in enumerate(self.backends):
            self.requests.labels(b)
            self.active.labels(b).set_function(self._in_flight_of(k))
        self.app = web.Application(client_max_size=64 << 20)
        self.app.add_routes([web.post(p, self.route) for p in PATHS])
        self.app.add_routes([web.get("/health", self.health), web.get("/metrics", self.prom)])
        self.app.on_shutdown.append(self._stop)

    def _in_flight_of(self, k: int) -> Any:
        return lambda: self.in_flight[k]

    async def _stop(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> Any:
        import aiohttp

        from ..creds import client_tls

        if self._session is None:
            tls = client_tls(self.ca) if self.ca else True
            # one connection per request, as the clients' own: a backend sees each request on a flow of its own
            conn = aiohttp.TCPConnector(limit=0, force_close=True, ssl=tls)
            self._session = aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600))
        return self._session

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "backends": len(self.backends)})

    async def prom(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"object": "error", "message": message, "code": status}, status=status)

    async def route(self, request: web.Request) -> web.StreamResponse:
        import aiohttp

        raw = await request.read()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ConfigError("the body is not a JSON object")
            hashes = block_hashes(prompt_words(body, request.path.endswith("chat/completions")))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return self._error(400, "the body is not JSON")
        except ConfigError as e:
            return self._error(400, str(e))
        headers = {"Content-Type": "application/json"}
        if "x-request-id" in request.headers:
            headers["x-request-id"] = request.headers["x-request-id"]
        tried: set[int] = set()
        out: web.StreamResponse | None = None
        while len(tried) < len(self.backends):
            now = time.monotonic()
            usable = [b not in tried and self.down_until[b] <= now for b in range(len(self.backends))]
            if not any(usable):
                usable = [b not in tried for b in range(len(self.backends))]
            b, m = self.index.choose(hashes, self.in_flight, usable)
            best = max(self.index.matched(x, hashes) for x in range(len(self.backends)) if usable[x])
            tried.add(b)
            self.in_flight[b] += 1
            try:
                async with self._client().post(self.backends[b] + request.path, data=raw, headers=headers) as r:
                    self.index.sent(b, hashes)
                    self.requests.labels(self.backends[b]).inc()
                    self.blocks.inc(len(hashes))
                    self.matched.inc(m)
                    if m < best:
                        self.guarded.inc()
                    out = web.StreamResponse(status=r.status)
                    for k, v in r.headers.items():
                        if k.lower() in ("content-type", "cache-control") or k.lower().startswith("x-dinet-"):
                            out.headers[k] = v
                    await out.prepare(request)
                    async for chunk in r.content.iter_any():
                        await out.write(chunk)
                    await out.write_eof()
                    return out
            except (TimeoutError, aiohttp.ClientConnectionError) as e:
                if out is not None and out.prepared:
                    raise  # the answer had begun: the client sees it cut, as from the backend itself
                self.failures.labels(self.backends[b]).inc()
                self.down_until[b] = time.monotonic() + self.cool_s
                log.warning("backend %s did not answer (%s): trying another", self.backends[b], e)
            finally:
                self.in_flight[b] -= 1
        return self._error(502, "no backend answered")


def run(router: Router, listen: str) -> None:
    """Serves until SIGINT/SIGTERM; prints `ready` once it listens."""
    from .serve import serve_until_signal

    serve_until_signal(router.app, listen, f"routing to {len(router.backends)} backends on http://{listen}")
