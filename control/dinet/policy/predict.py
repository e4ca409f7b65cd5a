"""What a new request would see on each instance: predicted time to first token and time per output token,
from compute metrics (the instance's reports) and network metrics (the path). Pure functions, no I/O.

An instance's rates are learned online from its own reports (`learn`), so a real vLLM, TGI or llama.cpp
server needs no profile; until reports arrive an instance's prior (`InstancePrior` in the intent, an engine
profile's figures) and then the policy's `Priors` stand in.

- service time S: how long a request holds its place, by Little's law the running requests over the
  completions per second (R / X), averaged;
- capacity C: how many requests it runs at once before new ones wait. vLLM admits while the KV cache has
  room, so C is the running requests over the KV cache's share in use (R / kv_usage); where requests
  already wait, the running count itself is the limit;
- prefill: the time in the prefill phase the server measured (vLLM's request_prefill_time: scheduled to
  first token, no queue in it), or where it measures none its time to first token in intervals when
  nothing waited (the prompt's prefill and scheduling, no queue);
- TPOT: the time per output token the server measured; tokens per request: generated tokens per second over
  completions per second;
- prefill and TPOT lightly loaded (at most LIGHT running, none waiting): an idle instance is predicted from
  these (or its prior), so one that a burst slowed is not shunned for ever once the burst is over (it would
  get no flow to show that it recovered). On a busy instance a request's own prefill P is the one the server
  measured lightly loaded (the prompts it is really sent; where it measures none, its prior's, then what it
  learned under load); on an idle one the prior's first (a light-load measure may be of another workload's
  prompts, a burst's long ones, and an idle instance predicted from it would get no flow to measure it again).

A new request at an instance then waits for the requests ahead of it beyond the capacity to finish, at the
instance's completion rate C / S, and for the prefill of those waiting ahead of it (chunked prefill admits
them into steps as the step's token budget allows, first come first served: a compute-bound engine queues
for prefill long before its KV cache is full): `wait = max(max(0, R + Q + 1 - C) x S / C, Q x P)`, so

    TTFT = round trips x 2 x path delay + transfer at the path's rate + wait + prefill + loss x loss_ms

(a new flow is a new connection: 2 round trips, TCP's handshake and then the request to its first token)
    TPOT = the instance's TPOT;  e2e = TTFT + tokens per request x TPOT

and its spare rate (`headroom`, requests per second it can still take without queueing) is
(C - R - Q) / S. The weights (dinet.policy.decide) come from these two numbers. For a two-choices service the
data plane also gets the TTFT itself with how it grows as it places more requests there before the next report
(each one's prefill P, and past `free` more S / C each: dinet.model.InstanceLoad)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..model import InstancePrior
from .scores import Level0

MAX_CAPACITY = 4096.0  # requests at once: a bound on what a barely used KV cache extrapolates to
LIGHT = 2  # running requests at most (and none waiting) for a report to show the instance lightly loaded


@dataclass(frozen=True)
class Priors:
    """What is assumed of an instance before its reports say otherwise."""

    service_s: float = 5.0  # a chat answer of a few hundred tokens
    capacity: float = 8.0  # requests at once
    prefill_ms: float = 50.0
    tpot_ms: float = 50.0
    tokens_per_request: float = 128.0
    alpha: float = 0.3  # the weight of a new observation in the running averages
    # a request's first exchange is a few packets; each lost one costs TCP a retransmission timeout (>= 200
    # ms): about 5 x 200 ms per unit of loss
    loss_ms: float = 1000.0
    # a new flow is a new connection: TCP's handshake, then the request and its first token (TLS 1.3 adds one)
    round_trips: float = 2.0


@dataclass(frozen=True)
class Rates:
    """An instance's learned rates (0: not learned yet, the prior applies)."""

    service_s: float = 0.0
    capacity: float = 0.0
    prefill_ms: float = 0.0
    tpot_ms: float = 0.0
    tokens_per_request: float = 0.0
    observations: int = 0
    # what it does lightly loaded (at most LIGHT running, none waiting): an idle instance is predicted from
    # these, not from what it did under a burst (it gets no flow to show it has recovered otherwise)
    prefill_idle_ms: float = 0.0
    tpot_idle_ms: float = 0.0


def seeded(r: Rates, prior: InstancePrior | None) -> Rates:
    """The learned rates, where a rate is not learned yet the instance's prior (an engine profile's)."""
    prior = prior or InstancePrior()
    return replace(
        r,
        service_s=r.service_s or prior.service_s,
        capacity=r.capacity or prior.capacity,
        # a busy instance's request prefill: the server's own measure lightly loaded (learned from nothing else)
        # before the profile's figure, which is for a short prompt, not the ones the instance is really sent;
        # the prefill learned under load last (a report's TTFT carries a burst's queue into quiet intervals)
        prefill_ms=r.prefill_idle_ms or prior.prefill_ms or r.prefill_ms,
        tpot_ms=r.tpot_ms or prior.tpot_ms,
        # an idle one's is the profile's batch-1 figure where there is one: a light-load measure may be of
        # another workload's prompts (a burst's long ones), and an idle instance predicted from it would get no
        # flow to measure it again
        prefill_idle_ms=prior.prefill_ms or r.prefill_idle_ms,
        tpot_idle_ms=prior.tpot_ms or r.tpot_idle_ms,
    )


def _avg(old: float, new: float, alpha: float) -> float:
    return new if old <= 0 else old + alpha * (new - old)


def learn(r: Rates, m: Level0, priors: Priors = Priors()) -> Rates:
    """The rates after one more report."""
    a = priors.alpha
    running, waiting, done = m.active_sessions, m.queue_depth, m.finished_per_s
    out = replace(r, observations=r.observations + 1)
    if running > 0 and done > 0:
        out = replace(out, service_s=_avg(r.service_s, running / done, a))
        if m.tokens_per_s > 0:
            out = replace(out, tokens_per_request=_avg(r.tokens_per_request, m.tokens_per_s / done, a))
    if waiting > 0 and running > 0:  # it queues: what runs is all it holds
        out = replace(out, capacity=_avg(r.capacity, float(running), a))
    elif running > 0 and m.kv_usage > 0:  # admitted while the KV cache has room
        out = replace(out, capacity=_avg(r.capacity, min(MAX_CAPACITY, running / m.kv_usage), a))
    light = running <= LIGHT and waiting == 0
    # the prefill: the server's own measure of it where it has one (vLLM's request_prefill_time, no queue in
    # it: learned also while requests wait), else its TTFT in an interval with no queue; lightly loaded, only
    # the server's own (a TTFT observed as a burst ends carries the burst's queue into a quiet interval)
    prefill = m.prefill_ms or (m.ttft_ms if waiting == 0 else 0.0)
    if prefill > 0:
        out = replace(out, prefill_ms=_avg(r.prefill_ms, prefill, a))
        if light and m.prefill_ms > 0:
            out = replace(out, prefill_idle_ms=_avg(r.prefill_idle_ms, m.prefill_ms, a))
    if m.token_latency_ms > 0:
        out = replace(out, tpot_ms=_avg(r.tpot_ms, m.token_latency_ms, a))
        if light:
            out = replace(out, tpot_idle_ms=_avg(r.tpot_idle_ms, m.token_latency_ms, a))
    return out


@dataclass(frozen=True)
class Prediction:
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float  # a request of the instance's mean length
    headroom: float  # requests per second it can still take before new ones wait (0: full)
    wait_ms: float  # the queueing part of ttft_ms
    step_ms: float = 0.0  # what each further request adds to the wait once the instance is full: S / C
    free: int = 0  # further requests it takes before the next one waits
    prefill_ms: float = 0.0  # a request's own prefill P: what each one placed there adds to the next one's wait


def predict(
    m: Level0,
    r: Rates,
    delay_ms: float,
    transfer_ms: float = 0.0,
    priors: Priors = Priors(),
    busy: float = 0.0,
    loss: float = 0.0,
) -> Prediction:
    """A new request's prediction at an instance that last reported `m`, with learned rates `r`, over a
    path of one-way `delay_ms` that takes `transfer_ms` to carry what the request moves first. `busy`: a
    share 0..1 of the instance already taken by what the report's counts do not show (CPU or GPU load of
    other users): its capacity is that much smaller."""
    service_s = r.service_s or priors.service_s
    capacity = max(1.0, (r.capacity or priors.capacity) * (1.0 - min(busy, 0.99)))
    idle = m.active_sessions == 0 and m.queue_depth == 0
    # a request's own prefill while it is busy: lightly loaded, as the server measured it (seeded())
    prefill = r.prefill_ms or r.prefill_idle_ms or priors.prefill_ms
    if idle:  # what it does lightly loaded, not what it did under the last burst
        tpot = r.tpot_idle_ms or r.tpot_ms or priors.tpot_ms
        first = r.prefill_idle_ms or prefill
    else:
        tpot = m.token_latency_ms or r.tpot_ms or priors.tpot_ms
        first = prefill
    ahead = m.active_sessions + m.queue_depth + 1 - capacity
    # a place (the requests beyond its capacity finish first), and the prefill of each one waiting ahead
    wait_ms = max(max(0.0, ahead) * service_s / capacity * 1000, m.queue_depth * prefill)
    ttft = priors.round_trips * 2 * delay_ms + transfer_ms + wait_ms + first + loss * priors.loss_ms
    tokens = r.tokens_per_request or priors.tokens_per_request
    free = capacity - m.active_sessions - m.queue_depth
    headroom = max(0.0, free) / service_s
    step_ms = service_s / capacity * 1000
    return Prediction(ttft, tpot, ttft + tokens * tpot, headroom, wait_ms, step_ms, max(0, math.floor(-ahead)), prefill)
