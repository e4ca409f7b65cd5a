"""Steering decisions: instance weights from compute and network metrics. Pure functions, no I/O.

Delay-sensitive traffic (a live avatar stream) stays on the nearest site that is not overloaded; only when
every instance there is overloaded does it move to the next nearest. Delay-tolerant traffic (a
text-to-image job) is spread by a Level 2 score in which compute counts most, so it leaves a busy near site
first. Damping keeps weights still unless the target moved by more than a hysteresis band, and then moves
them part of the way, so two sites of similar load never swap traffic back and forth."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

from ..model import Instance, InstanceState, ServiceIntent, SitePath, Strategy, TrafficClass
from .scores import ClassWeights, Level0, Level1, ScoreModel

__all__ = ["Candidate", "Policy", "Strategy", "TrafficClass", "damp", "decide", "target_weights"]


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
    scores: ScoreModel = field(default_factory=ScoreModel)  # Level 0 -> Level 1


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


def _members(instances: Iterable[Instance]) -> set[tuple[int, object, int]]:
    return {(i.instance_id, i.endpoint, i.site_id) for i in instances}


def decide(
    intent: ServiceIntent,
    samples: Mapping[int, Level0],
    expired: AbstractSet[int],
    paths: Mapping[int, SitePath],
    installed: Sequence[Instance],
    policy: Policy = Policy(),
    rng: random.Random | None = None,
) -> list[Instance]:
    """A service's instances as they should be installed, sorted by id: the whole decision, from the
    intent (with any pool instances that joined), each instance's last report (`samples`, by instance id),
    the instances whose agents went silent (`expired`), the network metrics per site (`paths`) and what the
    data plane holds (`installed`, the record).

    An instance's state, in order of precedence: the operator's `down` or `draining` in the intent; DOWN
    where its path is below the service's security floor, or once its agent expired; until its first
    report, the state and weight it had (installed, where the record holds the intent's instances; else the
    intent's), never the default "healthy and idle"; then the weights of `target_weights`, damped against
    what is installed (baselines are not damped). A data plane refuses all-zero weights: when no instance
    would take new flows, the least loaded live one keeps a trickle (weight 1)."""
    have = {i.instance_id: i for i in installed}
    adopt = _members(installed) == _members(intent.instances)

    decided: dict[int, Instance] = {}
    cands = []
    for inst in intent.instances:
        iid = inst.instance_id
        m = samples.get(iid)
        path = paths.get(inst.site_id) or SitePath()
        old = have.get(iid) if adopt else None
        if inst.state != InstanceState.UP:  # the operator's word wins over reports
            decided[iid] = replace(inst, weight=old.weight if old else inst.weight)
        elif path.security < intent.min_security or iid in expired:  # never a flow
            decided[iid] = replace(inst, weight=0, state=InstanceState.DOWN)
        elif m is None:  # not heard from yet: as it was, never "idle and healthy"
            decided[iid] = old or inst
        else:
            delay = path.delay_ms + path.transfer_ms(intent.transfer_kb)
            l1 = policy.scores.level1(m, delay, path.loss)
            cands.append(Candidate(iid, inst.site_id, l1, m.healthy, intent.rank(iid), delay))
    if cands:
        placing = replace(policy, strategy=intent.strategy) if intent.strategy else policy
        target = target_weights(cands, intent.cls, placing, rng)
        current = {
            c.instance_id: have[c.instance_id].weight
            for c in cands
            if c.instance_id in have and have[c.instance_id].state != InstanceState.DOWN
        }
        # a baseline (anycast, round-robin, ...) is compared as it is: only dinet's decision is damped
        weights = damp(current, target, policy) if placing.strategy is Strategy.DINET else target
        by_id = {i.instance_id: i for i in intent.instances}
        for c in cands:
            state = InstanceState.UP if c.up else InstanceState.DOWN
            prev, inst = have.get(c.instance_id), by_id[c.instance_id]
            if prev is not None and (prev.weight, prev.state, prev.site_id, prev.endpoint) == (
                weights[c.instance_id],
                state,
                inst.site_id,
                inst.endpoint,
            ):
                decided[c.instance_id] = prev  # unchanged: no new object
            else:
                decided[c.instance_id] = replace(inst, weight=weights[c.instance_id], state=state)
    out = [decided[i.instance_id] for i in intent.instances]
    if all(not i.usable for i in out):
        live = [i for i in out if i.state == InstanceState.UP]
        if live:  # a data plane refuses all-zero weights: keep a trickle on the least loaded live one
            idle = Level0()
            best = min(live, key=lambda i: (samples.get(i.instance_id, idle).cpu_load, i.instance_id))
            out = [replace(i, weight=1) if i is best else i for i in out]
    out.sort(key=lambda i: i.instance_id)
    return out
