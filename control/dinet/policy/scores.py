"""Compute and network metrics in the levels of draft-ietf-cats-metric-definition.

Level 0: the raw values an agent reports (`Level0`) and the path metrics of the topology (delay, loss).
Level 1: one normalised score per category, 0 (idle, near) .. 1 (saturated, far):
  compute       = max(cpu_load, gpu_util, queue_depth / queue_ref)
  queue         = queue_depth / queue_ref (kept apart too: a delay-sensitive flow avoids a queue)
  communication = min(1, delay_ms / delay_ref_ms + loss * loss_weight)
  service       = min(1, token_latency_ms / latency_ref_ms)
The placement itself is on predicted latency (dinet.policy.predict), not on a composed Level 2 score. The
draft leaves normalisation open; these are dinet's, in one replaceable dataclass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Level0:
    cpu_load: float = 0.0
    gpu_util: float = 0.0
    queue_depth: int = 0
    active_sessions: int = 0
    tokens_per_s: float = 0.0
    token_latency_ms: float = 0.0
    healthy: bool = True
    kv_usage: float = 0.0  # 0..1 of the KV cache in use (also inside gpu_util, as before)
    ttft_ms: float = 0.0  # mean time to first token over the interval, at the server (0: none finished)
    finished_per_s: float = 0.0  # requests completed per second over the interval
    # cooperative inference at a partner instance (observability: no placement rule reads them)
    verify_rounds_per_s: float = 0.0  # speculative decoding: rounds verified per second
    spec_acceptance: float = 0.0  # the share of drafted tokens accepted over the interval (0..1)
    activation_bytes_per_s: float = 0.0  # split inference: activation bytes taken from heads per second
    prefill_ms: float = 0.0  # mean time in the prefill phase over the interval, at the server (no queue; 0: none)

    def check(self) -> None:
        """Raises ConfigError naming the first value no agent could have measured."""
        for name in (
            "cpu_load",
            "gpu_util",
            "tokens_per_s",
            "token_latency_ms",
            "kv_usage",
            "ttft_ms",
            "finished_per_s",
            "verify_rounds_per_s",
            "spec_acceptance",
            "activation_bytes_per_s",
            "prefill_ms",
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v):
                raise ConfigError(f"{name} is not a number: {v!r}")
            if v < 0:
                raise ConfigError(f"{name} is negative: {v!r}")
        for name in ("cpu_load", "gpu_util", "kv_usage", "spec_acceptance"):
            if getattr(self, name) > 1.0:
                raise ConfigError(f"{name} is a fraction 0..1, not {getattr(self, name)!r}")
        for name in ("token_latency_ms", "ttft_ms", "prefill_ms"):
            if getattr(self, name) > 600_000:
                raise ConfigError(f"{name} out of range: {getattr(self, name)!r}")
        for name, top in (("finished_per_s", 1e6), ("verify_rounds_per_s", 1e6), ("activation_bytes_per_s", 1e12)):
            if getattr(self, name) > top:
                raise ConfigError(f"{name} out of range: {getattr(self, name)!r}")


@dataclass(frozen=True)
class Level1:
    compute: float
    communication: float
    service: float
    queue: float = 0.0  # the waiting queue alone (queue_depth / queue_ref), also inside `compute`


@dataclass(frozen=True)
class ScoreModel:
    """Normalisation references (Level 0 -> Level 1). Replace it to change how raw metrics are judged."""

    queue_ref: float = 32.0
    delay_ref_ms: float = 50.0
    loss_weight: float = 10.0
    latency_ref_ms: float = 200.0

    def level1(self, m: Level0, delay_ms: float = 0.0, loss: float = 0.0) -> Level1:
        queue = round(min(1.0, m.queue_depth / self.queue_ref), 6)
        compute = max(m.cpu_load, m.gpu_util, queue)
        comm = min(1.0, delay_ms / self.delay_ref_ms + loss * self.loss_weight)
        service = min(1.0, m.token_latency_ms / self.latency_ref_ms)
        return Level1(round(compute, 6), round(comm, 6), round(service, 6), queue)
