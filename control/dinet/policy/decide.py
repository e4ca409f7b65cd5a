"""Steering decisions: instance weights from compute and network metrics. Pure functions, no I/O.

Delay-sensitive traffic (a live avatar stream) stays on the nearest site that is not overloaded; only when
every instance there is overloaded does it move to the next nearest. Delay-tolerant traffic (a
text-to-image job) is spread by a Level 2 score in which compute counts most, so it leaves a busy near site
first. Damping keeps weights still unless the target moved by more than a hysteresis band, and then moves
them part of the way, so two sites of similar load never swap traffic back and forth."""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .scores import ClassWeights, Level1


class Strategy(enum.Enum):
    """How a service's new flows are placed: dinet's decision, or a baseline to compare it with.

    dinet: compute and network metrics, per traffic class (below). anycast: the nearest site with a live
    instance, compute ignored (what IP anycast gives). compute-only: spread by compute load alone, the
    network ignored (a load balancer's least-loaded). round-robin: every live instance the same weight (in a
    data plane that hashes flows onto a weighted ring, equal weights spread new flows evenly: the flow-level
    round robin). random: every live instance a random weight, drawn anew at each decision."""

    DINET = "dinet"
    ANYCAST = "anycast"
    COMPUTE_ONLY = "compute-only"
    ROUND_ROBIN = "round-robin"
    RANDOM = "random"


class TrafficClass(enum.Enum):
    DELAY_SENSITIVE = "delay-sensitive"
    DELAY_TOLERANT = "delay-tolerant"


CLASS_WEIGHTS = {
    TrafficClass.DELAY_SENSITIVE: ClassWeights(compute=0.2, communication=0.7, service=0.1),
    TrafficClass.DELAY_TOLERANT: ClassWeights(compute=0.7, communication=0.1, service=0.2),
}


@dataclass(frozen=True)
class Candidate:
    instance_id: int
    site: int
    l1: Level1
    up: bool = True  # healthy and reporting
    rank: int = 0  # its model tier's place in the service's preference (0: the preferred tier)
    # the path's delay with the service's transfer at the path's rate (ms): "nearest" among paths whose
    # Level 1 communication is equal (a bulk transfer can saturate it on every path)
    delay_ms: float = 0.0


@dataclass(frozen=True)
class Policy:
    max_weight: int = 100
    overload: float = 0.9  # Level 1 compute at or above this takes no new flow
    # a delay-sensitive flow avoids an instance with this long a waiting queue (Level 1 queue) while a usable
    # one without it exists: its TTFT would include the queue (a busy GPU without a queue is no reason to go)
    sensitive_queue: float = 0.25
    hysteresis: float = 0.15  # a target within this share of max_weight of the current weight changes nothing
    smoothing: float = 0.5  # otherwise move this share of the way (1.0: jump)
    strategy: Strategy = Strategy.DINET
    seed: int | None = None  # Strategy.RANDOM: its draws (None: a new sequence each process)


def target_weights(
    cands: Iterable[Candidate], cls: TrafficClass, policy: Policy = Policy(), rng: random.Random | None = None
) -> dict[int, int]:
    cs = list(cands)
    out = {c.instance_id: 0 for c in cs}
    if policy.strategy is not Strategy.DINET:
        return _baseline(cs, out, policy, rng or random.Random(policy.seed))
    usable = [c for c in cs if c.up and c.l1.compute < policy.overload]
    if not usable:
        # everything overloaded: the least loaded live instance still takes new flows
        live = [c for c in cs if c.up]
        if live:
            out[min(live, key=lambda c: (c.l1.compute, c.instance_id)).instance_id] = 1
        return out
    if cls is TrafficClass.DELAY_SENSITIVE:  # a queue is no room for a delay-sensitive flow, in any tier
        if any(c.l1.queue >= policy.sensitive_queue for c in usable):
            usable = [c for c in usable if c.l1.queue < policy.sensitive_queue] or usable
    # model tiers: the preferred tier with room takes new flows; a lower one only while it has none
    best = min(c.rank for c in usable)
    usable = [c for c in usable if c.rank == best]
    if cls is TrafficClass.DELAY_SENSITIVE:
        near = min(usable, key=lambda c: (c.l1.communication, c.delay_ms))
        usable = [
            c
            for c in usable
            if c.l1.communication <= near.l1.communication + 1e-9 and c.delay_ms <= near.delay_ms + 1e-9
        ]
    model = CLASS_WEIGHTS[cls]
    for c in usable:
        score = model.level2(c.l1)
        out[c.instance_id] = max(1, round(policy.max_weight * (1.0 - score) ** 2))
    return out


def _baseline(cs: list[Candidate], out: dict[int, int], policy: Policy, rng: random.Random) -> dict[int, int]:
    live = [c for c in cs if c.up]
    if not live:
        return out
    s = policy.strategy
    if s is Strategy.ANYCAST:  # the nearest site (the network's part alone), whatever its load
        nearest = min(c.l1.communication for c in live)
        for c in live:
            out[c.instance_id] = policy.max_weight if c.l1.communication <= nearest + 1e-9 else 0
    elif s is Strategy.COMPUTE_ONLY:  # least loaded first, the path ignored
        for c in live:
            out[c.instance_id] = max(1, round(policy.max_weight * (1.0 - c.l1.compute) ** 2))
    elif s is Strategy.ROUND_ROBIN:
        for c in live:
            out[c.instance_id] = policy.max_weight
    else:  # random
        for c in live:
            out[c.instance_id] = rng.randint(1, policy.max_weight)
    return out


def damp(current: Mapping[int, int], target: Mapping[int, int], policy: Policy = Policy()) -> dict[int, int]:
    """The weights to install: `target` through the hysteresis band and smoothing. A weight of 0 (an
    instance that must take no new flow) and a new instance take effect at once."""
    band = policy.hysteresis * policy.max_weight
    out = {}
    for iid, want in target.items():
        have = current.get(iid)
        if have is None or want == 0 or have == 0:
            out[iid] = want
        elif abs(want - have) <= band:
            out[iid] = have
        else:
            out[iid] = max(1, round(have + policy.smoothing * (want - have)))
    return out
