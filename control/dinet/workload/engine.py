"""A serving engine's timing under load, modelled as vLLM schedules (continuous batching): requests wait until
the batch has room (at most `max_batch` sequences) and the KV cache can hold their prompt and the tokens they
may generate; admitted prompts are prefilled at `prefill_tps` tokens/s (decoding waits meanwhile, as with
vLLM's default scheduling without chunked prefill); then every decode step emits one token for each running
sequence and takes `decode_base_ms + decode_per_seq_ms x running`. So TTFT grows with the queue and the
prefill in front of a request, TPOT with the batch, and requests queue when the KV cache is full.

Profiles are first-principles estimates from public hardware and model figures, with the arithmetic in each
profile's `source`: a decode step at batch 1 is memory-bound (weights bytes / HBM bandwidth, at 60% of peak),
each extra sequence adds its KV reads and some compute; prefill is compute-bound (2 x parameters FLOPs per
token at 40% of peak dense FP16/BF16 FLOPs). They are a model, not a measurement: anything built on it runs
unchanged against a real vLLM."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class Profile:
    model: str
    tier: str  # large, small, pruned
    quality: float  # 0..1, relative answer quality of the tier (for experiments on model selection)
    prefill_tps: float  # prompt tokens per second, whole batch
    decode_base_ms: float  # one decode step at batch 1
    decode_per_seq_ms: float  # added per running sequence
    max_batch: int  # sequences decoded together
    kv_tokens: int  # KV-cache capacity in tokens
    kv_bytes_per_token: int  # for prefill-decode hand-over: bytes of KV state per token
    source: str = ""

    def __post_init__(self) -> None:
        if self.tier not in ("large", "small", "pruned"):
            raise ConfigError(f"tier is large, small or pruned, not {self.tier!r}")
        for name in ("prefill_tps", "decode_base_ms", "max_batch", "kv_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"profile {self.model}: {name} must be positive")


def _llama(params_b: float, layers: int, kv_heads: int, head_dim: int) -> int:
    return 2 * layers * kv_heads * head_dim * 2  # K and V, FP16: bytes per token


PROFILES: dict[str, Profile] = {
    "llama3-8b-a100": Profile(
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "small",
        0.70,
        prefill_tps=7800.0,
        decode_base_ms=13.0,
        decode_per_seq_ms=0.35,
        max_batch=256,
        kv_tokens=400_000,
        kv_bytes_per_token=_llama(8, 32, 8, 128),
        source="A100-80GB: 2.0 TB/s HBM, 312 TFLOPs BF16; 16 GB of weights: 16/(2.0x0.6) = 13 ms a step; "
        "prefill 312e12x0.4/(2x8e9) = 7,800 tok/s; KV 128 KiB/token (32 layers, 8 KV heads x 128), "
        "~50 GB free: ~400k tokens",
    ),
    "llama3-70b-h100x4": Profile(
        "meta-llama/Meta-Llama-3-70B-Instruct",
        "large",
        0.85,
        prefill_tps=15_300.0,
        decode_base_ms=17.5,
        decode_per_seq_ms=0.5,
        max_batch=256,
        kv_tokens=560_000,
        kv_bytes_per_token=_llama(70, 80, 8, 128),
        source="4 x H100-SXM (tensor parallel): 4 x 3.35 TB/s, 4 x 989 TFLOPs BF16; 140 GB of weights: "
        "140/(13.4x0.6) = 17.5 ms a step; prefill 3,956e12x0.4/(2x70e9) = 11,300 tok/s (+35% for overlap, "
        "as measured runs show); KV 320 KiB/token, ~180 GB free: ~560k tokens",
    ),
    "llama3-8b-l4": Profile(
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "small",
        0.70,
        prefill_tps=1550.0,
        decode_base_ms=89.0,
        decode_per_seq_ms=1.2,
        max_batch=64,
        kv_tokens=50_000,
        kv_bytes_per_token=_llama(8, 32, 8, 128),
        source="L4 (an edge GPU): 300 GB/s, 121 TFLOPs FP16; 16 GB of weights: 16/(0.3x0.6) = 89 ms a step; "
        "prefill 121e12x0.4/(2x8e9) = 3,000 tok/s, halved for its clocks under load; ~6.5 GB free: 50k tokens",
    ),
    "llama3.2-1b-pruned-edge": Profile(
        "meta-llama/Llama-3.2-1B-Instruct",
        "pruned",
        0.45,
        prefill_tps=3000.0,
        decode_base_ms=11.0,
        decode_per_seq_ms=0.3,
        max_batch=32,
        kv_tokens=60_000,
        kv_bytes_per_token=_llama(1, 16, 8, 64),
        source="L4 or a device NPU: 2.5 GB of weights at 300 GB/s x 0.6 (= 14 ms), less for its smaller "
        "activations: 11 ms a step; prefill 121e12x0.4/(2x1.2e9) ~ 20k tok/s, capped at 3,000 for the "
        "device class; KV 32 KiB/token",
    ),
    "bench-fast": Profile(
        "dinet/bench-fast",
        "small",
        0.5,
        prefill_tps=1e7,
        decode_base_ms=20.0,
        decode_per_seq_ms=0.0,
        max_batch=4096,
        kv_tokens=10_000_000,
        kv_bytes_per_token=1024,
        source="for bench/serve.py: engine time fixed (20 ms steps, no prefill), so what grows is dinet serve's",
    ),
    "tiny-test": Profile(
        "dinet/tiny-test",
        "small",
        0.5,
        prefill_tps=20_000.0,
        decode_base_ms=4.0,
        decode_per_seq_ms=1.0,
        max_batch=8,
        kv_tokens=2_000,
        kv_bytes_per_token=1024,
        source="for tests: small, fast, easy to fill",
    ),
}


@dataclass
class Sequence:
    prompt_tokens: int
    max_tokens: int
    arrived: float
    queue: asyncio.Queue[float | None] = field(default_factory=asyncio.Queue)  # a token's time, None: done
    generated: int = 0
    admitted: float = 0.0
    first_token: float = 0.0
    prefilled: bool = False  # its KV cache came from a prefill instance: decode only

    @property
    def kv_need(self) -> int:
        return self.prompt_tokens + self.max_tokens


@dataclass
class Stats:
    """What the engine's /metrics shows (vLLM's names; see dinet.workload.serve)."""

    running: int = 0
    waiting: int = 0
    kv_used: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0


class Engine:
    """One model instance. `generate()` yields one event per token (its time); runs in the caller's loop."""

    def __init__(self, profile: Profile, clock: object = time.monotonic):
        self.p = profile
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.stats = Stats()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.observers: list[object] = []  # called with (seq) when a sequence finishes

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def generate(self, prompt_tokens: int, max_tokens: int, prefilled: bool = False) -> AsyncIterator[float]:
        """Checks and queues a request (ConfigError at once if it can never run); the iterator yields the
        time of each generated token as the engine makes it. prefilled: the prompt's KV cache was handed
        over (a decode instance of a prefill-decode pipeline): no prefill here."""
        if prompt_tokens < 1 or max_tokens < 1:
            raise ConfigError("a request has at least one prompt token and asks for at least one")
        if prompt_tokens + max_tokens > self.p.kv_tokens:
            raise ConfigError(f"{prompt_tokens} + {max_tokens} tokens exceed the KV cache ({self.p.kv_tokens} tokens)")
        return self._stream(prompt_tokens, max_tokens, prefilled)

    async def _stream(self, prompt_tokens: int, max_tokens: int, prefilled: bool) -> AsyncIterator[float]:
        self.start()
        seq = Sequence(prompt_tokens, max_tokens, time.monotonic(), prefilled=prefilled)
        self.waiting.append(seq)
        self.stats.waiting = len(self.waiting)
        self._wake.set()
        while True:
            t = await seq.queue.get()
            if t is None:
                return
            yield t

    def ttft_if_added(self, prompt_tokens: int, max_tokens: int, limit_s: float = 600.0) -> float:
        """The exact time to first token a request would see if it arrived now (seconds): the engine's own
        schedule run forward on a copy of its state, with no further arrival (the oracle baseline's view).
        `limit_s` if it would not start within that (or could never run here)."""
        if prompt_tokens + max_tokens > self.p.kv_tokens:
            return limit_s
        running = [s.max_tokens - s.generated for s in self.running]  # tokens each still makes
        need = [s.kv_need for s in self.running]
        waiting = [(s.prompt_tokens, s.max_tokens, s.kv_need, s.prefilled) for s in self.waiting]
        waiting.append((prompt_tokens, max_tokens, prompt_tokens + max_tokens, False))
        mine = len(waiting) - 1
        kv, t, admitted = self.stats.kv_used, 0.0, 0
        while t < limit_s:
            new = []
            while admitted < len(waiting) and len(running) < self.p.max_batch:
                prompt, out, kv_need, prefilled = waiting[admitted]
                if kv + kv_need > self.p.kv_tokens:
                    break
                kv += kv_need
                running.append(out)
                need.append(kv_need)
                new.append((admitted, prompt, prefilled, len(running) - 1))
                admitted += 1
            prefill = [(k, prompt, pos) for k, prompt, prefilled, pos in new if not prefilled]
            if prefill:
                t += sum(p for _, p, _ in prefill) / self.p.prefill_tps
                if any(k == mine for k, _, _ in prefill):
                    return t
                for _, _, pos in prefill:  # the prefill made their first token
                    running[pos] -= 1
            elif running:
                t += (self.p.decode_base_ms + self.p.decode_per_seq_ms * len(running)) / 1000
                running = [r - 1 for r in running]
            else:
                return limit_s  # nothing runs and the head cannot be admitted: it never will be
            done = [j for j, r in enumerate(running) if r <= 0]
            for j in reversed(done):
                kv -= need[j]
                del running[j], need[j]
        return limit_s

    def _admit(self) -> list[Sequence]:
        new = []
        while self.waiting and len(self.running) < self.p.max_batch:
            seq = self.waiting[0]
            if self.stats.kv_used + seq.kv_need > self.p.kv_tokens:
                break  # first come, first served: the head waits for room
            self.waiting.popleft()
            self.stats.kv_used += seq.kv_need
            seq.admitted = time.monotonic()
            self.running.append(seq)
            new.append(seq)
        self.stats.waiting, self.stats.running = len(self.waiting), len(self.running)
        return new

    async def _loop(self) -> None:
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            new = [s for s in self._admit() if not s.prefilled]
            if new:  # prefill the admitted prompts (decode waits); prefill yields each one's first token
                tokens = sum(s.prompt_tokens for s in new)
                self.stats.prompt_tokens += tokens
                await asyncio.sleep(tokens / self.p.prefill_tps)
                self._emit(new, time.monotonic())
                continue  # admit again before decoding: a free batch slot is taken at once
            if not self.running:
                await asyncio.sleep(0)
                continue
            step = (self.p.decode_base_ms + self.p.decode_per_seq_ms * len(self.running)) / 1000
            await asyncio.sleep(step)
            self._emit(list(self.running), time.monotonic())

    def _emit(self, seqs: list[Sequence], now: float) -> None:
        """One token for each of `seqs`; the finished ones leave the batch and free their KV cache."""
        done = []
        for s in seqs:
            s.generated += 1
            if s.generated == 1:
                s.first_token = now
            s.queue.put_nowait(now)
            if s.generated >= s.max_tokens:
                done.append(s)
        self.stats.generation_tokens += len(seqs)
        for s in done:
            self.running.remove(s)
            self.stats.kv_used -= s.kv_need
            s.queue.put_nowait(None)
            for obs in self.observers:
                obs(s)  # type: ignore[operator]
        self.stats.running = len(self.running)
