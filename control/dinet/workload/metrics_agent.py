"""`dinet metrics-agent`: beside an inference server, scrapes its Prometheus endpoint (parsed with
prometheus_client's text parser), the host's CPU and, where `nvidia-smi` answers, GPU utilisation; maps them
to a Level 0 report and streams it to the collector every interval, with the agent's credentials. An
endpoint that stops answering is reported unhealthy; an agent that stops reporting makes the instance expire.

Mapping to Level 0 (names: vLLM; llama.cpp's server and TGI where they differ):

- queue_depth: vllm:num_requests_waiting (llamacpp:requests_deferred; tgi_queue_size)
- active_sessions: vllm:num_requests_running (llamacpp:requests_processing; tgi_batch_current_size)
- gpu_util: the larger of the KV-cache usage (vllm:kv_cache_usage_perc, older vllm:gpu_cache_usage_perc;
  llamacpp:kv_cache_usage_ratio) and nvidia-smi's utilization.gpu where present
- tokens_per_s: the rise of vllm:generation_tokens_total over the interval (llamacpp:tokens_predicted_total;
  tgi_request_generated_tokens_sum)
- token_latency_ms: the mean time per output token over the interval, the rise of the sum over the rise of
  the count of vllm:time_per_output_token_seconds (newer vllm:inter_token_latency_seconds; TGI:
  tgi_request_mean_time_per_token_duration)
- kv_usage: the KV-cache usage alone (the same names as above)
- ttft_ms: the mean time to first token over the interval, the rise of the sum over the rise of the count of
  vllm:time_to_first_token_seconds (llama.cpp and TGI: none; 0)
- prefill_ms: the mean time in the prefill phase over the interval (scheduled to first token, no queue),
  the same of vllm:request_prefill_time_seconds (older vLLM, llama.cpp and TGI: none; 0)
- finished_per_s: the rise of vllm:request_success_total over the interval (TGI: tgi_request_success)
- verify_rounds_per_s, spec_acceptance, activation_bytes_per_s (cooperative inference at a partner instance,
  dinet serve's own counters): the rises of dinet:spec_verify_rounds_total over the interval, of
  dinet:spec_accepted_tokens_total over dinet:spec_draft_tokens_total's, of dinet:split_activation_bytes_total
- cpu_load: the host's busy share of CPU time over the interval (/proc/stat)
- healthy: the scrape succeeded

All values are labelled by model_name in vLLM; samples of every model on the endpoint are summed."""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from ..errors import ConfigError
from ..policy.scores import Level0
from ..promtext import fetch, samples

log = logging.getLogger(__name__)

NAMES = {
    "waiting": ("vllm:num_requests_waiting", "llamacpp:requests_deferred", "tgi_queue_size"),
    "running": ("vllm:num_requests_running", "llamacpp:requests_processing", "tgi_batch_current_size"),
    "kv": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "llamacpp:kv_cache_usage_ratio"),
    "gen_tokens": (
        "vllm:generation_tokens_total",
        "llamacpp:tokens_predicted_total",
        "tgi_request_generated_tokens_sum",
    ),
    "tpot_sum": ("vllm:time_per_output_token_seconds_sum", "vllm:inter_token_latency_seconds_sum"),
    "tpot_count": ("vllm:time_per_output_token_seconds_count", "vllm:inter_token_latency_seconds_count"),
    "ttft_sum": ("vllm:time_to_first_token_seconds_sum",),
    "ttft_count": ("vllm:time_to_first_token_seconds_count",),
    "prefill_sum": ("vllm:request_prefill_time_seconds_sum",),
    "prefill_count": ("vllm:request_prefill_time_seconds_count",),
    "finished": ("vllm:request_success_total", "tgi_request_success_total", "tgi_request_success"),
    "rounds": ("dinet:spec_verify_rounds_total",),
    "drafted": ("dinet:spec_draft_tokens_total",),
    "accepted": ("dinet:spec_accepted_tokens_total",),
    "activations": ("dinet:split_activation_bytes_total",),
}


WANTED = {n for names in NAMES.values() for n in names} | {"tgi_request_mean_time_per_token_duration"}
MAX_SAMPLE = float(2**32 - 1)  # counts and gauges dinet reads fit 32 bits; beyond is a broken exporter


def parse(text: str, bad: list[str] | None = None) -> dict[str, float]:
    """Sample name -> value summed over labels (every model on the endpoint), for the names dinet reads. A
    sample no server could have measured (NaN, infinite, negative, beyond 32 bits) is skipped, and named in
    `bad` where given."""
    out: dict[str, float] = {}
    for name, _, value in samples(text):
        if name not in WANTED:
            continue
        if not math.isfinite(value) or value < 0 or value > MAX_SAMPLE:
            if bad is not None:
                bad.append(f"{name}={value!r}")
            continue
        out[name] = out.get(name, 0.0) + value
    return out


def _first(values: dict[str, float], key: str) -> float | None:
    return next((values[n] for n in NAMES[key] if n in values), None)


@dataclass
class Mapper:
    """Turns successive scrapes into Level 0 reports (rates need the previous scrape)."""

    prev: dict[str, float] | None = None
    prev_at: float = 0.0
    cpu_prev: tuple[int, int] | None = None

    def _rise(self, values: dict[str, float], key: str) -> float | None:
        """How much a counter rose since the previous scrape (None: absent, or reset by a restart)."""
        v, v0 = _first(values, key), _first(self.prev or {}, key)
        return v - v0 if v is not None and v0 is not None and v >= v0 else None

    def _mean(self, values: dict[str, float], key: str) -> float:
        """A histogram's mean over the interval in ms: the sum's rise over the count's (0: nothing observed)."""
        s, c = self._rise(values, f"{key}_sum"), self._rise(values, f"{key}_count")
        return s / c * 1000 if s is not None and c else 0.0

    def level0(self, values: dict[str, float], at: float, cpu: float = 0.0, gpu: float | None = None) -> Level0:
        kv = min(1.0, max(0.0, _first(values, "kv") or 0.0))
        tokens_per_s = latency_ms = ttft_ms = prefill_ms = finished_per_s = rounds = acceptance = activations = 0.0
        if self.prev is not None and at > self.prev_at:
            dt = at - self.prev_at
            tokens_per_s = (self._rise(values, "gen_tokens") or 0.0) / dt
            finished_per_s = (self._rise(values, "finished") or 0.0) / dt
            rounds = (self._rise(values, "rounds") or 0.0) / dt
            drafted = self._rise(values, "drafted") or 0.0
            acceptance = min(1.0, (self._rise(values, "accepted") or 0.0) / drafted) if drafted else 0.0
            activations = (self._rise(values, "activations") or 0.0) / dt
            latency_ms, ttft_ms = self._mean(values, "tpot"), self._mean(values, "ttft")
            prefill_ms = self._mean(values, "prefill")
        if not latency_ms and "tgi_request_mean_time_per_token_duration" in values:
            latency_ms = values["tgi_request_mean_time_per_token_duration"] * 1000
        self.prev, self.prev_at = values, at
        return Level0(
            cpu_load=min(1.0, max(0.0, cpu)),
            gpu_util=min(1.0, max(kv, gpu or 0.0)),
            queue_depth=int(_first(values, "waiting") or 0),
            active_sessions=int(_first(values, "running") or 0),
            tokens_per_s=tokens_per_s,
            token_latency_ms=min(latency_ms, 600_000.0),
            healthy=True,
            kv_usage=kv,
            ttft_ms=min(ttft_ms, 600_000.0),
            prefill_ms=min(prefill_ms, 600_000.0),
            finished_per_s=min(finished_per_s, 1e6),
            verify_rounds_per_s=min(rounds, 1e6),
            spec_acceptance=acceptance,
            activation_bytes_per_s=min(activations, 1e12),
        )


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the host from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def gpu_utilization() -> float | None:
    """The mean utilization.gpu of the host's GPUs (0..1), where nvidia-smi is installed and answers."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    vals = [float(x) for x in out.stdout.split() if x.replace(".", "", 1).isdigit()]
    return sum(vals) / len(vals) / 100 if vals else None


def scrape(url: str, timeout: float = 2.0, ca: str | None = None) -> str:
    """The endpoint's text: one deadline for the whole answer, at most promtext.MAX_BYTES (ConfigError);
    ca: the CA of an https endpoint's certificate."""
    return fetch(url, timeout, ca=ca)


@dataclass
class MetricsAgent:
    """Scrapes `url` every `interval` s and reports for (service, instance) through `agent` (a collect.Agent);
    `also`: the other services the same engine answers (one scrape, one report for each, sent together)."""

    url: str
    service: str
    instance_id: int
    agent: object
    interval: float = 1.0
    retry: float = 0.25  # after a report the collector did not take, the next one this soon (at most interval)
    host_cpu: bool = True  # False where instances share one host (emulation): its CPU says nothing of one
    announce: Any = None  # a pool instance's collect.Announce (endpoint, site): it joins with its reports
    ca: str | None = None  # the CA of an https endpoint's certificate (default: the system's)
    mapper: Mapper = field(default_factory=Mapper)
    reports: int = 0
    failures: int = 0  # scrapes that failed
    bad_samples: int = 0  # samples skipped as no server could have measured them
    send_failures: int = 0  # reports the collector did not take, in a row
    also: tuple[str, ...] = ()

    def once(self) -> Level0:
        cpu = 0.0
        now_cpu = cpu_times()
        if self.host_cpu and self.mapper.cpu_prev is not None:
            busy, total = now_cpu[0] - self.mapper.cpu_prev[0], now_cpu[1] - self.mapper.cpu_prev[1]
            cpu = busy / total if total > 0 else 0.0
        self.mapper.cpu_prev = now_cpu
        try:
            bad: list[str] = []
            values = parse(scrape(self.url, ca=self.ca), bad)
            if bad:
                if not self.bad_samples:
                    log.warning("%s: skipping samples no server could have measured: %s", self.url, ", ".join(bad[:3]))
                self.bad_samples += len(bad)
            m = self.mapper.level0(values, time.monotonic(), cpu, gpu_utilization())
        except ConfigError:
            self.failures += 1
            m = Level0(cpu_load=min(1.0, cpu), healthy=False)  # the server does not answer: not healthy
        try:
            reports = [
                self.agent.report(svc, self.instance_id, m, self.announce)  # type: ignore[attr-defined]
                for svc in (self.service, *self.also)
            ]
            ack = self.agent.send(reports)  # type: ignore[attr-defined]
        except grpc.RpcError as e:  # the collector is down or unreachable: say so once, go on trying
            if not self.send_failures:
                log.warning(
                    "cannot report to the collector (%s): retrying every %.1f s",
                    e.code().name,
                    min(self.interval, self.retry),
                )
            self.send_failures += 1
            return m
        if self.send_failures:
            log.warning("reporting to the collector again after %d failed attempt(s)", self.send_failures)
            self.send_failures = 0
        self.reports += ack.accepted
        return m

    def run(self, stop: threading.Event, count: int | None = None) -> None:
        n = 0
        while not stop.is_set() and (count is None or n < count):
            self.once()
            n += 1
            # a collector that did not take the last report (not up yet, restarting) is tried again sooner
            stop.wait(min(self.interval, self.retry) if self.send_failures else self.interval)
        if self.announce is not None and stop.is_set():  # a pool instance leaves: no new flow from now on
            self.announce = replace(self.announce, leaving=True)
            self.once()
