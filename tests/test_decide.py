"""Decision functions on scenarios: classes, overload, hysteresis. Pure Python."""

from __future__ import annotations

import math
from dataclasses import replace

from dinet.policy.decide import Candidate, Policy, TrafficClass, damp, target_weights
from dinet.policy.scores import Level0, Level1, ScoreModel

NEAR, FAR = 1, 2


def cands(near_load: float, far_load: float = 0.2) -> list[Candidate]:
    m = ScoreModel()
    return [
        Candidate(1, NEAR, m.level1(Level0(cpu_load=near_load, gpu_util=near_load), delay_ms=2)),
        Candidate(2, FAR, m.level1(Level0(cpu_load=far_load, gpu_util=far_load), delay_ms=40)),
    ]


def test_levels() -> None:
    l1 = ScoreModel().level1(
        Level0(cpu_load=0.3, gpu_util=0.8, queue_depth=8, token_latency_ms=50), delay_ms=25, loss=0.01
    )
    assert l1 == Level1(compute=0.8, communication=0.6, service=0.25, queue=0.25)


def test_delay_sensitive_leaves_a_near_site_where_a_queue_forms() -> None:
    """A busy GPU is no reason for a delay-sensitive flow to go far; a waiting queue is (its TTFT would
    include it), while a site without one is usable. Delay-tolerant flows are not moved by the queue alone."""
    m = ScoreModel()
    queued = [
        Candidate(NEAR, NEAR, m.level1(Level0(gpu_util=0.3, queue_depth=12), delay_ms=2)),
        Candidate(FAR, FAR, m.level1(Level0(gpu_util=0.3), delay_ms=10)),
    ]
    w = target_weights(queued, TrafficClass.DELAY_SENSITIVE)
    assert w[NEAR] == 0 and w[FAR] > 0
    short = [replace(queued[0], l1=m.level1(Level0(gpu_util=0.3, queue_depth=2), delay_ms=2)), queued[1]]
    w = target_weights(short, TrafficClass.DELAY_SENSITIVE)
    assert w[NEAR] > 0 and w[FAR] == 0  # a request or two waiting: stays near
    both = [queued[0], replace(queued[1], l1=m.level1(Level0(queue_depth=20), delay_ms=10))]
    w = target_weights(both, TrafficClass.DELAY_SENSITIVE)
    assert w[NEAR] > 0 and w[FAR] == 0  # queues everywhere: the nearest usable one, as before
    assert target_weights(queued, TrafficClass.DELAY_TOLERANT)[NEAR] > 0


def test_delay_sensitive_stays_near_until_overloaded() -> None:
    w = target_weights(cands(0.7), TrafficClass.DELAY_SENSITIVE)
    assert w[1] > 0 and w[2] == 0  # busy but not overloaded: stays local
    w = target_weights(cands(0.95), TrafficClass.DELAY_SENSITIVE)
    assert w[1] == 0 and w[2] > 0  # overloaded: moves


def test_delay_tolerant_leaves_a_busy_near_site_first() -> None:
    tolerant = target_weights(cands(0.7), TrafficClass.DELAY_TOLERANT)
    sensitive = target_weights(cands(0.7), TrafficClass.DELAY_SENSITIVE)
    assert tolerant[2] > tolerant[1] > 0  # the far, idle site takes most of the tolerant jobs
    assert sensitive[1] > 0 and sensitive[2] == 0  # while the avatar stream stays local
    idle = target_weights(cands(0.1), TrafficClass.DELAY_TOLERANT)
    assert idle[1] >= idle[2]  # an idle near site keeps its share


def test_down_instances_and_all_overloaded() -> None:
    cs = cands(0.2)
    cs[0] = Candidate(1, NEAR, cs[0].l1, up=False)
    w = target_weights(cs, TrafficClass.DELAY_SENSITIVE)
    assert w[1] == 0 and w[2] > 0  # the near instance is down: the far one serves
    hot = cands(0.97, 0.99)
    assert target_weights(hot, TrafficClass.DELAY_TOLERANT) == {1: 1, 2: 0}  # least loaded keeps a trickle


def test_hysteresis_holds_two_similar_sites_still() -> None:
    """Loads of two sites wobble around each other: the installed weights do not flip with them."""
    p = Policy()
    installed: dict[int, int] = {}
    history = []
    for step in range(40):
        wobble = 0.05 * math.sin(step)
        w = target_weights(cands(0.5 + wobble, 0.5 - wobble), TrafficClass.DELAY_TOLERANT, p)
        installed = damp(installed, w, p)
        history.append(dict(installed))
    changes = sum(1 for a, b in zip(history, history[1:], strict=False) if a != b)
    assert changes <= 2, history[:6]
    # a real shift still gets through, in steps
    w = target_weights(cands(0.85, 0.1), TrafficClass.DELAY_TOLERANT, p)
    after = damp(installed, w, p)
    assert after[2] > installed[2] and after[1] < installed[1]


def test_zero_weights_and_new_instances_are_immediate() -> None:
    assert damp({1: 50, 2: 50}, {1: 0, 2: 60, 3: 40}) == {1: 0, 2: 50, 3: 40}


def test_the_baselines_place_flows_as_their_names_say() -> None:
    import random

    from dinet.policy.decide import Strategy

    # a near busy site (1), a far idle one (2), a down instance (3)
    near = Candidate(1, 1, Level1(compute=0.8, communication=0.1, service=0.1))
    far = Candidate(2, 2, Level1(compute=0.0, communication=0.8, service=0.1))
    dead = Candidate(3, 2, Level1(compute=0.0, communication=0.8, service=0.1), up=False)
    cands = [near, far, dead]

    def weights(s: Strategy, seed: int = 1) -> dict[int, int]:
        return target_weights(cands, TrafficClass.DELAY_SENSITIVE, Policy(strategy=s), random.Random(seed))

    assert weights(Strategy.ANYCAST) == {1: 100, 2: 0, 3: 0}  # the nearest, busy or not
    compute_only = weights(Strategy.COMPUTE_ONLY)
    assert compute_only[2] > compute_only[1] > 0 and compute_only[3] == 0  # the idle far one first
    assert weights(Strategy.ROUND_ROBIN) == {1: 100, 2: 100, 3: 0}
    draws = {tuple(weights(Strategy.RANDOM, seed).values()) for seed in range(20)}
    assert len(draws) > 1 and all(d[2] == 0 and d[0] > 0 and d[1] > 0 for d in draws)
    assert weights(Strategy.RANDOM, 7) == weights(Strategy.RANDOM, 7)  # a seed repeats a run
    dinet = weights(Strategy.DINET)
    assert dinet[1] > 0 and dinet[2] == 0  # delay-sensitive: the nearest site that is not overloaded
