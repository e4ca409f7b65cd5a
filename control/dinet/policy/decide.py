"""Steering decisions: instance weights from compute and network metrics. Pure functions, no I/O.

dinet places a service's new flows on what a new request is predicted to see on each instance
(dinet.policy.predict: time to first token from the path's round trip, the transfer at the path's rate, the
instance's queue and prefill; time per output token from its batch), weighted by the instance's headroom
(the requests per second it can still take before new ones wait), so the best instance is not flooded until
it becomes the worst:

- An instance takes no new flow while unhealthy, overloaded (Level 1 compute >= `overload`), or, for a
  delay-sensitive service, while its predicted TTFT or TPOT misses the service's SLO (with no SLO: while a
  new request would wait) and another instance meets it. Model tiers: the preferred tier that meets it
  takes new flows; a lower one only while none does.
- Delay-sensitive: each instance's cost is its predicted share of the SLO, the larger of TTFT / the TTFT
  objective and TPOT / the TPOT objective (the instance where a request keeps the most margin is the least
  likely to miss); with no SLO, its predicted TTFT. The instances within `slack` of the lowest cost take
  new flows, each in proportion to headroom x exp(-(its cost - the lowest) / slack); slack is `slo_slack`
  (a share of the SLO) or, with no SLO, `sensitive_slack_ms`.
- Delay-tolerant: every instance whose TPOT meets the SLO, in proportion to headroom, near ones given up
  first (x (2 + Level 1 communication) / 3: draft-an-cats-usecase-ai s1).

A two-choices service's instances also carry their load for the data plane (`InstanceLoad`): the predicted
TTFT, and how it grows with each request placed there before the next report (its prefill, then past the
instance's room its wait as well); the data plane puts each new flow on the lower loaded of two ring candidates
(dinet.policy.choices). A delay-sensitive two-choices service's weights only name the candidates: every
instance of the chosen tier that is up and not overloaded, by headroom, also one predicted to miss the TTFT
objective by its wait, so that the loads pick per flow (a weight of 0 for the instance a report shows queueing
herds every new flow onto the others until the next report: measured in the tiers experiment, README); not one
that misses it with no wait at all, nor one that misses the TPOT objective while another meets it (the loads
see neither).

Damping keeps weights still unless the target moved by more than a hysteresis band, and then moves them
part of the way, so two sites of similar load never swap traffic back and forth."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

from ..model import Instance, InstanceLoad, InstanceState, ServiceIntent, SitePath, Slo, Strategy, TrafficClass
from .predict import Prediction, Priors, Rates, predict, seeded
from .scores import Level0, Level1, ScoreModel

__all__ = ["Candidate", "Policy", "Strategy", "TrafficClass", "damp", "decide", "target_weights"]


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
    pred: Prediction | None = None  # what a new request would see there (None: judged from l1 and the priors)


@dataclass(frozen=True)
class Policy:
    max_weight: int = 100
    overload: float = 0.9  # Level 1 compute at or above this takes no new flow
    # delay-sensitive: instances whose predicted TTFT is within the larger of these of the best take flows
    sensitive_slack_ms: float = 10.0
    slo_slack: float = 0.1  # (with an SLO: a share of the objectives)
    headroom_floor: float = 0.05  # req/s: a full instance still ranks by its predicted TTFT
    priors: Priors = field(default_factory=Priors)  # an instance's rates before its reports teach them
    hysteresis: float = 0.15  # a target within this share of max_weight of the current weight changes nothing
    smoothing: float = 0.5  # otherwise move this share of the way (1.0: jump)
    strategy: Strategy = Strategy.DINET
    seed: int | None = None  # Strategy.RANDOM: its draws (None: a new sequence each process)
    scores: ScoreModel = field(default_factory=ScoreModel)  # Level 0 -> Level 1


NO_SLO = Slo()


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] if xs else 0.0


def target_weights(
    cands: Iterable[Candidate],
    cls: TrafficClass,
    policy: Policy = Policy(),
    rng: random.Random | None = None,
    slo: Slo = NO_SLO,
    two_choices: bool = False,
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
    sensitive = cls is TrafficClass.DELAY_SENSITIVE
    pred = {c.instance_id: c.pred or _l1_prediction(c, policy) for c in usable}

    def fits(c: Candidate) -> bool:
        p = pred[c.instance_id]
        if not within_tpot(p, slo):
            return False
        if not sensitive:
            return True
        return p.ttft_ms <= slo.ttft_ms if slo.ttft_ms else p.wait_ms <= 0

    # model tiers: the preferred tier with room takes new flows; a lower one only while it has none
    fitting = [c for c in usable if fits(c)] or usable
    best = min(c.rank for c in fitting)
    if two_choices and sensitive:
        # two choices: every instance of that tier that a request could reach within the TTFT objective
        # stays a candidate, by headroom, and the data plane puts each new flow on the one of its two with the
        # lower predicted TTFT, counting what it placed since the report (a weight of 0 for the one a report
        # shows queueing would herd every flow to the other until the next). One that misses with no wait at
        # all (its path, the transfer and its own prefill) is no candidate: no placement changes that, and by
        # its headroom it could fill both choices (a large idle site behind a slowed path). Nor is one whose
        # running batch makes it miss the TPOT objective while another meets it: the loads compare first
        # tokens only, and its tokens would miss whatever the first one does
        tier = [c for c in usable if c.rank == best]
        near = [c for c in tier if reachable(pred[c.instance_id], slo)] or tier
        usable = [c for c in near if within_tpot(pred[c.instance_id], slo)] or near
    else:
        usable = [c for c in fitting if c.rank == best]
    scores: dict[int, float] = {}
    if two_choices and sensitive:
        for c in usable:
            scores[c.instance_id] = pred[c.instance_id].headroom + policy.headroom_floor
    elif sensitive:
        slack = policy.slo_slack if slo.ttft_ms or slo.tpot_ms else policy.sensitive_slack_ms
        cost = {c.instance_id: _sensitive_cost(pred[c.instance_id], slo) for c in usable}
        first = min(cost.values())
        for c in usable:
            p, k = pred[c.instance_id], cost[c.instance_id]
            if k <= first + slack:
                scores[c.instance_id] = (p.headroom + policy.headroom_floor) * math.exp(-(k - first) / slack)
    else:
        for c in usable:
            p = pred[c.instance_id]
            scores[c.instance_id] = (p.headroom + policy.headroom_floor) * (2 + c.l1.communication) / 3
    top = max(scores.values())
    for iid, s in scores.items():
        out[iid] = max(1, round(policy.max_weight * s / top))
    return out


def reachable(p: Prediction, slo: Slo) -> bool:
    """Within the TTFT objective with no wait at all (the path, the transfer, its own prefill); no objective:
    yes."""
    return not slo.ttft_ms or p.ttft_ms - p.wait_ms <= slo.ttft_ms


def within_tpot(p: Prediction, slo: Slo) -> bool:
    """Within the TPOT objective at the instance's running batch; no objective: yes."""
    return not slo.tpot_ms or p.tpot_ms <= slo.tpot_ms


def _sensitive_cost(p: Prediction, slo: Slo) -> float:
    """The share of the SLO a request is predicted to use (the tighter objective); no SLO: TTFT in ms."""
    if not (slo.ttft_ms or slo.tpot_ms):
        return p.ttft_ms
    return max(p.ttft_ms / slo.ttft_ms if slo.ttft_ms else 0.0, p.tpot_ms / slo.tpot_ms if slo.tpot_ms else 0.0)


def _l1_prediction(c: Candidate, policy: Policy) -> Prediction:
    """A candidate given by its Level 1 scores alone: its queue, and its load as capacity taken."""
    busy = c.l1.compute if c.l1.compute > c.l1.queue else 0.0
    queue = round(c.l1.queue * policy.scores.queue_ref)
    return predict(Level0(queue_depth=queue), Rates(), c.delay_ms, 0.0, policy.priors, busy)


def _load(p: Prediction, seq: int) -> InstanceLoad:
    """A two-choices instance's load for the data plane: the predicted TTFT (us); what each request it places
    there before the next report adds to the first token of those placed after it (its prefill: prefills
    share the instance's compute, so prompts that arrive together finish their prefill together, later);
    and, once `free` more have come, the wait of one request more (S / C)."""
    cap32 = 0xFFFFFFFF
    return InstanceLoad(
        min(2**64 - 1, round(p.ttft_ms * 1000)),
        min(cap32, round(p.step_ms * 1000)),
        min(cap32, p.free),
        seq,
        min(cap32, round(p.prefill_ms * 1000)),
    )


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


def decide(
    intent: ServiceIntent,
    samples: Mapping[int, Level0],
    expired: AbstractSet[int],
    paths: Mapping[int, SitePath],
    installed: Sequence[Instance],
    policy: Policy = Policy(),
    rng: random.Random | None = None,
    rates: Mapping[int, Rates] | None = None,
) -> list[Instance]:
    """A service's instances as they should be installed, sorted by id: the whole decision, from the
    intent (with any pool instances that joined), each instance's last report (`samples`, by instance id),
    the instances whose agents went silent (`expired`), the network metrics per site (`paths`) and what the
    data plane holds (`installed`, the record); `rates`: each instance's rates learned from its reports
    (dinet.policy.predict.learn; absent: the policy's priors).

    An instance's state, in order of precedence: the operator's `down` or `draining` in the intent; DOWN
    where its path is below the service's security floor (its flows move at once); DRAINING once its agent
    expired (no new flow; its established flows stay: a silent agent is no proof that its server is gone,
    and a TCP flow moved to another instance breaks); until its first
    report, the state and weight it had (installed, where the record holds the intent's instances; else the
    intent's; each instance is adopted on its own: the same id, endpoint and site), never the default "healthy
    and idle"; then the weights of `target_weights`, damped against
    what is installed (baselines are not damped). A data plane refuses all-zero weights: when no instance
    would take new flows, the least loaded live one keeps a trickle (weight 1)."""
    have = {i.instance_id: i for i in installed}

    decided: dict[int, Instance] = {}
    cands = []
    seqs: dict[int, int] = {}  # the report each candidate's load is of (its learned rates' observations)
    known = {
        i.instance_id: seeded((rates or {}).get(i.instance_id) or Rates(), intent.priors.get(i.instance_id))
        for i in intent.instances
    }
    # an instance nothing is known of yet is taken to be like its siblings (the service's median), not like
    # the policy's generic prior: a guess either way, but one that does not favour the unknown
    typical = {
        f: _median([getattr(r, f) for r in known.values() if getattr(r, f)])
        for f in ("prefill_ms", "tpot_ms", "capacity", "service_s")
    }
    for inst in intent.instances:
        iid = inst.instance_id
        m = samples.get(iid)
        path = paths.get(inst.site_id) or SitePath()
        old = have.get(iid)
        if old is not None and (old.endpoint, old.site_id) != (inst.endpoint, inst.site_id):
            old = None  # another instance under that id: nothing of the record is its
        if inst.state != InstanceState.UP:  # the operator's word wins over reports
            decided[iid] = replace(inst, weight=old.weight if old else inst.weight)
        elif path.security < intent.min_security:  # never a flow, not even an established one
            decided[iid] = replace(inst, weight=0, state=InstanceState.DOWN)
        elif iid in expired:  # no new flow; the established ones stay where they are
            decided[iid] = replace(inst, weight=0, state=InstanceState.DRAINING)
        elif m is None:  # not heard from yet: as it was, never "idle and healthy"
            decided[iid] = old or inst
        else:
            transfer = path.transfer_ms(intent.transfer_kb)
            l1 = policy.scores.level1(m, path.delay_ms + transfer, path.loss)
            # utilisation that the report's counts of requests do not show (a report of loads alone)
            busy = 0.0 if (m.active_sessions or m.queue_depth or m.kv_usage) else max(m.cpu_load, m.gpu_util)
            learned = known[iid]  # what is not known of it (a pool instance that just joined) is its siblings'
            learned = replace(
                learned,
                prefill_ms=learned.prefill_ms or typical["prefill_ms"],
                tpot_ms=learned.tpot_ms or typical["tpot_ms"],
                capacity=learned.capacity or typical["capacity"],
                service_s=learned.service_s or typical["service_s"],
            )
            p = predict(m, learned, path.delay_ms, transfer, policy.priors, busy, path.loss)
            cands.append(Candidate(iid, inst.site_id, l1, m.healthy, intent.rank(iid), path.delay_ms + transfer, p))
            seqs[iid] = learned.observations % 0xFFFFFFFF + 1
    if cands:
        placing = replace(policy, strategy=intent.strategy) if intent.strategy else policy
        two = intent.two_choices and placing.strategy is Strategy.DINET
        target = target_weights(cands, intent.cls, placing, rng, intent.slo, two)
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
            load = _load(c.pred, seqs[c.instance_id]) if two and c.pred else None
            if prev is not None and (prev.weight, prev.state, prev.site_id, prev.endpoint, prev.load) == (
                weights[c.instance_id],
                state,
                inst.site_id,
                inst.endpoint,
                load,
            ):
                decided[c.instance_id] = prev  # unchanged: no new object
            else:
                decided[c.instance_id] = replace(inst, weight=weights[c.instance_id], state=state, load=load)
    out = [decided[i.instance_id] for i in intent.instances]
    if all(not i.usable for i in out):
        live = [i for i in out if i.state == InstanceState.UP]
        if live:  # a data plane refuses all-zero weights: keep a trickle on the least loaded live one
            idle = Level0()
            best = min(live, key=lambda i: (samples.get(i.instance_id, idle).cpu_load, i.instance_id))
            out = [replace(i, weight=1) if i is best else i for i in out]
    out.sort(key=lambda i: i.instance_id)
    return out
